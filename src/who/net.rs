//! IP addresses as `doveadm who` 2.3 reads, prints and filters them (all verified against
//! stock 2.3.19.1 on Debian 12):
//!
//! - [`parse_ip`]: text with a `:` is IPv6 (`inet_pton` rules, optionally in `[…]`); anything
//!   else is IPv4 in the classic `inet_aton` forms (`a`, `a.b`, `a.b.c`, `a.b.c.d`, each part
//!   decimal or `0x` hex — leading zeros are decimal, not octal — and parsing stops at the
//!   first whitespace).
//! - [`format_ip`]: glibc `inet_ntop` output (IPv6 lower-case, longest zero run of two or more
//!   groups compressed, `::a.b.c.d` / `::ffff:a.b.c.d` for compatible/mapped addresses).
//! - [`Network`]: an `ip[/bits]` filter. `/0` matches every session, even one without an IP;
//!   an IPv4-mapped IPv6 session address is compared as IPv4 (so it matches IPv4 networks
//!   and never IPv6 ones); otherwise the families must be equal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses an IP address the way `doveadm who` parses the IP part of an ident.
pub fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    if text.contains(&b':') {
        let inner = match text {
            [b'[', inner @ .., b']'] => inner,
            _ => text,
        };
        let s = std::str::from_utf8(inner).ok()?;
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        parse_ipv4_classic(text).map(IpAddr::V4)
    }
}

/// `inet_aton`-style IPv4: up to four parts; the last part fills the remaining bytes.
fn parse_ipv4_classic(text: &[u8]) -> Option<Ipv4Addr> {
    let mut parts: [u64; 4] = [0; 4];
    let mut count = 0;
    let mut rest = text;
    loop {
        let (value, after) = parse_part(rest)?;
        if count == 4 {
            return None;
        }
        parts[count] = value;
        count += 1;
        match after.first() {
            Some(b'.') => rest = &after[1..],
            None => break,
            Some(c) if is_c_space(*c) => break,
            Some(_) => return None,
        }
    }
    let leading = &parts[..count - 1];
    if leading.iter().any(|&p| p > 0xff) {
        return None;
    }
    let last = parts[count - 1];
    let last_bits = 8 * (5 - count as u32);
    if last_bits < 64 && last >> last_bits != 0 {
        return None;
    }
    let mut value = last;
    for (i, &p) in leading.iter().enumerate() {
        value |= p << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(value as u32))
}

/// One number: `0x`/`0X` + hex digits, or decimal digits. Saturates far above u32.
fn parse_part(text: &[u8]) -> Option<(u64, &[u8])> {
    let (radix, digits) = match text {
        [b'0', b'x' | b'X', rest @ ..] => (16, rest),
        _ => (10, text),
    };
    let len = digits
        .iter()
        .take_while(|&&c| (c as char).is_digit(radix))
        .count();
    if len == 0 {
        return None;
    }
    let mut value: u64 = 0;
    for &c in &digits[..len] {
        let d = (c as char).to_digit(radix)? as u64;
        value = value
            .saturating_mul(radix as u64)
            .saturating_add(d)
            .min(1 << 40);
    }
    Some((value, &digits[len..]))
}

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Formats an address like glibc's `inet_ntop`.
pub fn format_ip(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format_ipv6(v6),
    }
}

fn format_ipv6(ip: &Ipv6Addr) -> String {
    use std::fmt::Write as _;
    let words = ip.segments();
    // Longest run of zero words (first one on ties), only if at least two long.
    let (mut best_start, mut best_len) = (0usize, 0usize);
    let mut i = 0;
    while i < 8 {
        if words[i] == 0 {
            let start = i;
            while i < 8 && words[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best_start = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_len = 0;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if best_len > 0 && i == best_start {
            out.push(':');
            i += best_len;
            if i == 8 {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        // Embedded IPv4: ::a.b.c.d (first six words zero) or ::ffff:a.b.c.d.
        if i == 6 && best_start == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)) {
            let o = ip.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return out;
        }
        let _ = write!(out, "{:x}", words[i]);
        i += 1;
    }
    out
}

/// An `ip[/bits]` network filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub bits: u8,
}

impl Network {
    /// Parses `ip/bits` or a bare `ip` (a single host). `None` when it is not a network
    /// (the argument is then a username mask).
    pub fn parse(text: &str) -> Option<Network> {
        let (ip_text, bits_text) = match text.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text, None),
        };
        let addr = parse_ip(ip_text.as_bytes())?;
        let max_bits = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits_text {
            None => max_bits,
            Some(b) => {
                if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let bits: u32 = b.parse().ok()?;
                if bits > max_bits {
                    return None;
                }
                bits
            }
        };
        Some(Network {
            addr,
            bits: bits as u8,
        })
    }

    /// Whether a session address is inside this network.
    pub fn contains(&self, ip: Option<IpAddr>) -> bool {
        if self.bits == 0 {
            return true;
        }
        let Some(ip) = ip else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_equal(&net.octets(), &ip.octets(), self.bits)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_equal(&net.octets(), &ip.octets(), self.bits)
            }
            _ => false,
        }
    }
}

fn prefix_equal(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = bits as usize / 8;
    let rem = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    a[full] & mask == b[full] & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<String> {
        parse_ip(text.as_bytes()).map(|ip| format_ip(&ip))
    }

    #[test]
    fn ipv4_parses_like_stock_doveadm() {
        // Every pair observed from stock `doveadm who -1` 2.3.19.1.
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("127.0.0.1")),
            ("10", Some("0.0.0.10")),
            ("0x7f.1", Some("127.0.0.1")),
            ("1.2.3", Some("1.2.0.3")),
            ("001.002.003.004", Some("1.2.3.4")),
            ("010.0.0.1", Some("10.0.0.1")),
            ("099", Some("0.0.0.99")),
            ("08", Some("0.0.0.8")),
            ("0X1F", Some("0.0.0.31")),
            ("1.2.3.4 ", Some("1.2.3.4")),
            ("1.2.3.4 x", Some("1.2.3.4")),
            ("1 .2", Some("0.0.0.1")),
            ("1.2.3.4\tx", Some("1.2.3.4")),
            ("1.2.3.4\x0b", Some("1.2.3.4")),
            ("4294967295", Some("255.255.255.255")),
            ("0xffffffff", Some("255.255.255.255")),
            ("1.0x10000", Some("1.1.0.0")),
            ("1.2.65535", Some("1.2.255.255")),
            ("1.16777215", Some("1.255.255.255")),
            ("1.2.3.0x4", Some("1.2.3.4")),
            ("1.0xff.2", Some("1.255.0.2")),
            ("00000000000000000000001", Some("0.0.0.1")),
            ("0", Some("0.0.0.0")),
            ("0x", None),
            ("1e", None),
            ("0x100.1", None),
            ("1.2.3.256", None),
            ("1.2.65536", None),
            ("1.16777216", None),
            ("4294967296", None),
            ("0x100000000", None),
            ("-1", None),
            ("+1", None),
            ("1.2.3.4.", None),
            ("1.", None),
            (".1", None),
            ("1..2", None),
            ("1.2.3.4.5", None),
            ("00x1", None),
            ("0xg", None),
            ("", None),
            (" 1.2.3.4", None),
            ("[1.2.3.4]", None),
            ("ip", None),
            ("e", None),
        ];
        for (text, want) in cases {
            assert_eq!(ip(text).as_deref(), *want, "{text:?}");
        }
    }

    #[test]
    fn ipv6_parses_and_prints_like_stock_doveadm() {
        let cases: &[(&str, Option<&str>)] = &[
            ("::1", Some("::1")),
            ("[::1]", Some("::1")),
            ("[::1", None),
            ("::1]", None),
            ("FE80::A", Some("fe80::a")),
            ("1:0:0:0:0:0:0:1", Some("1::1")),
            ("1:0:0:1:0:0:0:1", Some("1:0:0:1::1")),
            ("1:0:0:2:0:0:3:4", Some("1::2:0:0:3:4")),
            ("::ffff:1.2.3.4", Some("::ffff:1.2.3.4")),
            ("::1.2.3.4", Some("::1.2.3.4")),
            ("::ffff:0:1.2.3.4", Some("::ffff:0:102:304")),
            ("::0.1.0.0", Some("::0.1.0.0")),
            ("0:0:0:0:0:0:1:0", Some("::0.1.0.0")),
            ("0::", Some("::")),
            ("::", Some("::")),
            ("fe80::1%lo", None),
            ("a:b", None),
            (
                "1111:2222:3333:4444:5555:6666:7777:8888",
                Some("1111:2222:3333:4444:5555:6666:7777:8888"),
            ),
            ("1:2:3:4:5:6:7:0", Some("1:2:3:4:5:6:7:0")),
        ];
        for (text, want) in cases {
            assert_eq!(ip(text).as_deref(), *want, "{text:?}");
        }
    }

    fn net(text: &str) -> Network {
        Network::parse(text).unwrap_or_else(|| panic!("{text} is a network"))
    }

    fn some_ip(text: &str) -> Option<IpAddr> {
        Some(parse_ip(text.as_bytes()).unwrap())
    }

    #[test]
    fn network_syntax() {
        assert_eq!(net("127.0.0.1").bits, 32);
        assert_eq!(net("::1").bits, 128);
        assert_eq!(net("127.0.0.1/08").bits, 8);
        assert_eq!(net("[::1]/128").bits, 128);
        assert_eq!(net("127.0.0.1 /8").bits, 8);
        assert_eq!(net("0/0").bits, 0);
        for not_a_net in [
            "127.0.0.1/33",
            "::1/129",
            "127.0.0.1/",
            "/8",
            "127.0.0.1/-1",
            "127.0.0.1/0x8",
            "alice",
            "a*",
        ] {
            assert_eq!(Network::parse(not_a_net), None, "{not_a_net}");
        }
    }

    #[test]
    fn network_matching_like_stock_doveadm() {
        let v4 = some_ip("127.0.0.1");
        let v6 = some_ip("::1");
        let mapped = some_ip("::ffff:127.0.0.1");
        let cases: &[(&str, [bool; 4])] = &[
            // network: [127.0.0.1, ::1, ::ffff:127.0.0.1, no ip]
            ("127.0.0.1", [true, false, true, false]),
            ("127.0.0.0/8", [true, false, true, false]),
            ("0.0.0.0/1", [true, false, true, false]),
            ("128.0.0.0/1", [false, false, false, false]),
            ("0.0.0.0/0", [true, true, true, true]),
            ("::/0", [true, true, true, true]),
            ("::ffff:1.2.3.4/0", [true, true, true, true]),
            ("::/1", [false, true, false, false]),
            ("8000::/1", [false, false, false, false]),
            ("::/96", [false, true, false, false]),
            ("::ffff:127.0.0.1", [false, false, false, false]),
            ("::ffff:127.0.0.1/32", [false, true, false, false]),
            ("::ffff:0:0/96", [false, false, false, false]),
            ("0.0.0.0/32", [false, false, false, false]),
            ("::/128", [false, false, false, false]),
        ];
        for (text, want) in cases {
            let n = net(text);
            let got = [
                n.contains(v4),
                n.contains(v6),
                n.contains(mapped),
                n.contains(None),
            ];
            assert_eq!(&got, want, "{text}");
        }
    }
}
