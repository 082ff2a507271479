//! Typed setting values: parse what the operator wrote, check it the way doveconf does (same
//! error text), and give back the canonical form doveconf prints (`90 secs`, `256 M`, `0600`).
//!
//! The printed form is what the rest of the loader stores, so `-n`/`-a` output and default
//! comparison work on one representation; [`parse_time_secs`] and friends turn it back into
//! numbers for the typed model.

/// The value type of a setting, as probed from doveconf (see `data/settings.tsv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Free text (lists such as `protocols` are strings too).
    String,
    /// `yes`/`y`/`1`/`no`, case-insensitive words.
    Bool,
    /// Unsigned 32-bit decimal.
    Uint,
    /// File mode: leading `0` = octal, otherwise decimal.
    Octal,
    /// Seconds with a unit.
    Time,
    /// Milliseconds with a unit (`ms` allowed).
    TimeMsecs,
    /// Bytes with an optional unit.
    Size,
    /// 0..=65535.
    Port,
    /// One of the listed words (the first is the default).
    Enum(Vec<String>),
}

impl Kind {
    /// Parses the type column of `settings.tsv`.
    pub fn from_table(s: &str) -> Option<Kind> {
        Some(match s {
            "string" => Kind::String,
            "bool" => Kind::Bool,
            "uint" => Kind::Uint,
            "octal" => Kind::Octal,
            "time" => Kind::Time,
            "time_msecs" => Kind::TimeMsecs,
            "size" => Kind::Size,
            "port" => Kind::Port,
            _ => Kind::Enum(
                s.strip_prefix("enum:")?
                    .split(':')
                    .map(str::to_owned)
                    .collect(),
            ),
        })
    }
}

/// Checks `raw` against `kind`; returns the canonical printed form or doveconf's error text.
pub fn normalize(kind: &Kind, raw: &str) -> Result<String, String> {
    match kind {
        Kind::String => Ok(raw.to_owned()),
        Kind::Bool => parse_bool(raw).map(|b| if b { "yes" } else { "no" }.to_owned()),
        Kind::Uint => parse_uint(raw).map(|n| n.to_string()),
        Kind::Octal => parse_octal(raw).map(format_octal),
        Kind::Time => parse_time(raw, false).map(|ms| format_time(ms, false)),
        Kind::TimeMsecs => parse_time(raw, true).map(|ms| format_time(ms, true)),
        Kind::Size => parse_size(raw).map(format_size),
        Kind::Port => match raw.parse::<u16>() {
            Ok(p) if raw.bytes().all(|b| b.is_ascii_digit()) => Ok(p.to_string()),
            _ => Err(format!("Invalid port number {raw}")),
        },
        Kind::Enum(words) => {
            if words.iter().any(|w| w == raw) {
                Ok(raw.to_owned())
            } else {
                Err(format!("Invalid value: {raw}"))
            }
        }
    }
}

/// `yes`, `y`, `1` and `no` (words case-insensitive).
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    if raw.eq_ignore_ascii_case("yes") || raw.eq_ignore_ascii_case("y") || raw == "1" {
        Ok(true)
    } else if raw.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(format!("Invalid boolean value: {raw} (use yes or no)"))
    }
}

/// A decimal unsigned 32-bit number.
pub fn parse_uint(raw: &str) -> Result<u32, String> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("Invalid number {raw}: Not a valid number"));
    }
    if raw.starts_with('-') {
        return Err(format!("Invalid number {raw}: Number too small"));
    }
    digits
        .parse::<u32>()
        .map_err(|_| format!("Invalid number {raw}: Number too large"))
}

/// A mode: octal with a leading `0`, decimal otherwise.
pub fn parse_octal(raw: &str) -> Result<u32, String> {
    if !raw.starts_with('0') {
        return parse_uint(raw);
    }
    if !raw.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("Invalid number: {raw}"));
    }
    u32::from_str_radix(raw, 8).map_err(|_| format!("Invalid number: {raw}"))
}

/// `0600`-style output (`00` for zero, as doveconf prints it).
pub fn format_octal(mode: u32) -> String {
    format!("0{mode:o}")
}

const UNITS_TIME: &[(&[&str], u64)] = &[
    (&["milliseconds", "msecs"], 1),
    (&["seconds", "secs"], 1000),
    (&["minutes", "mins"], 60_000),
    (&["hours"], 3_600_000),
    (&["days"], 86_400_000),
    (&["weeks"], 604_800_000),
];

/// Splits `123 unit` / `123unit` into the number and the unit text.
fn split_number(raw: &str) -> Option<(u64, &str)> {
    let end = raw
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(raw.len());
    if end == 0 {
        return None;
    }
    let n = raw[..end].parse::<u64>().ok()?;
    Some((n, raw[end..].trim_start_matches([' ', '\t'])))
}

/// A time interval in milliseconds. `msecs` = the setting is stored in milliseconds.
pub fn parse_time(raw: &str, msecs: bool) -> Result<u64, String> {
    let invalid = || format!("Invalid time interval: {raw}");
    let (n, unit) = split_number(raw).ok_or_else(invalid)?;
    let mult = if unit.is_empty() {
        if n != 0 {
            return Err(format!(
                "Time interval '{raw}' is missing units (add e.g. 's' for seconds)"
            ));
        }
        1000
    } else {
        let lower = unit.to_ascii_lowercase();
        // "m" alone means minutes, so milliseconds need at least "ms"/"mi..."-free prefixes.
        let found = UNITS_TIME.iter().find(|(names, mult)| {
            names.iter().any(|name| name.starts_with(&lower)) && !(*mult == 1 && lower == "m")
        });
        found.map(|(_, m)| *m).ok_or_else(invalid)?
    };
    let ms = n
        .checked_mul(mult)
        .ok_or_else(|| format!("Time interval is too large: {raw}"))?;
    if msecs {
        if ms > u64::from(u32::MAX) {
            return Err(format!("Time interval is too large: {raw}"));
        }
    } else {
        if ms % 1000 != 0 {
            return Err(format!(
                "Milliseconds not supported for this setting: {raw}"
            ));
        }
        if ms / 1000 > u64::from(u32::MAX) {
            return Err(format!("Time interval is too large: {raw}"));
        }
    }
    Ok(ms)
}

/// `90 secs`, `2 mins`, `1 weeks`, `250 ms`, `0`.
pub fn format_time(ms: u64, msecs: bool) -> String {
    if ms == 0 {
        return "0".to_owned();
    }
    if !ms.is_multiple_of(1000) {
        debug_assert!(msecs);
        return format!("{ms} ms");
    }
    let secs = ms / 1000;
    for (div, name) in [
        (604_800, "weeks"),
        (86_400, "days"),
        (3_600, "hours"),
        (60, "mins"),
    ] {
        if secs.is_multiple_of(div) {
            return format!("{} {name}", secs / div);
        }
    }
    format!("{secs} secs")
}

/// Seconds of a canonical time string (as stored); `None` if it is not one.
pub fn parse_time_secs(display: &str) -> Option<u64> {
    parse_time(display, true).ok().map(|ms| ms / 1000)
}

/// A size in bytes.
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let invalid = || format!("Invalid size: {raw}");
    let (n, unit) = split_number(raw).ok_or_else(invalid)?;
    let mut rest = unit.as_bytes();
    let mult: u64 = match rest.first().map(u8::to_ascii_lowercase) {
        None => 1,
        Some(b'b') => 1,
        Some(b'k') => 1 << 10,
        Some(b'm') => 1 << 20,
        Some(b'g') => 1 << 30,
        Some(b't') => 1 << 40,
        Some(_) => return Err(invalid()),
    };
    if !rest.is_empty() {
        let first_is_b = rest[0].eq_ignore_ascii_case(&b'b');
        rest = &rest[1..];
        if !first_is_b {
            if rest.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'i')) {
                rest = &rest[1..];
            }
            if rest.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'b')) {
                rest = &rest[1..];
            }
        }
    }
    if !rest.is_empty() {
        return Err(invalid());
    }
    n.checked_mul(mult)
        .ok_or_else(|| format!("Size is too large: {raw}"))
}

/// `1 G`, `64 k`, `1025 B`, `0`.
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    for (shift, name) in [(40, "T"), (30, "G"), (20, "M"), (10, "k")] {
        if bytes.is_multiple_of(1u64 << shift) {
            return format!("{} {name}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_like_doveconf() {
        let t = |s| normalize(&Kind::Time, s);
        assert_eq!(t("90s").unwrap(), "90 secs");
        assert_eq!(t("5 seco").unwrap(), "5 secs");
        assert_eq!(t("120 minutes").unwrap(), "2 hours");
        assert_eq!(t("2000ms").unwrap(), "2 secs");
        assert_eq!(t("5 m").unwrap(), "5 mins");
        assert_eq!(t("1209600s").unwrap(), "2 weeks");
        assert_eq!(t("0s").unwrap(), "0");
        assert_eq!(
            t("5").unwrap_err(),
            "Time interval '5' is missing units (add e.g. 's' for seconds)"
        );
        assert_eq!(t("5 hr").unwrap_err(), "Invalid time interval: 5 hr");
        assert_eq!(
            t("1500 ms").unwrap_err(),
            "Milliseconds not supported for this setting: 1500 ms"
        );
        assert_eq!(
            t("99999999999 s").unwrap_err(),
            "Time interval is too large: 99999999999 s"
        );
        assert_eq!(normalize(&Kind::TimeMsecs, "1500 ms").unwrap(), "1500 ms");
    }

    #[test]
    fn sizes_print_like_doveconf() {
        let s = |v| normalize(&Kind::Size, v);
        assert_eq!(s("1024").unwrap(), "1 k");
        assert_eq!(s("1025").unwrap(), "1025 B");
        assert_eq!(s("2048 kiB").unwrap(), "2 M");
        assert_eq!(s("5kb").unwrap(), "5 k");
        assert_eq!(s("3 g").unwrap(), "3 G");
        assert_eq!(s("1 MiBx").unwrap_err(), "Invalid size: 1 MiBx");
        assert_eq!(
            s("99999999999 T").unwrap_err(),
            "Size is too large: 99999999999 T"
        );
        assert_eq!(
            s("18446744073709551615 B").unwrap(),
            "18446744073709551615 B"
        );
    }

    #[test]
    fn numbers_bools_modes() {
        assert_eq!(normalize(&Kind::Uint, "010").unwrap(), "10");
        assert_eq!(
            normalize(&Kind::Uint, "-1").unwrap_err(),
            "Invalid number -1: Number too small"
        );
        assert_eq!(
            normalize(&Kind::Uint, "4294967296").unwrap_err(),
            "Invalid number 4294967296: Number too large"
        );
        assert_eq!(normalize(&Kind::Bool, "Y").unwrap(), "yes");
        assert_eq!(
            normalize(&Kind::Bool, "0").unwrap_err(),
            "Invalid boolean value: 0 (use yes or no)"
        );
        assert_eq!(normalize(&Kind::Octal, "666").unwrap(), "01232");
        assert_eq!(normalize(&Kind::Octal, "0600").unwrap(), "0600");
        assert_eq!(
            normalize(&Kind::Octal, "09").unwrap_err(),
            "Invalid number: 09"
        );
        assert_eq!(
            normalize(&Kind::Octal, "q").unwrap_err(),
            "Invalid number q: Not a valid number"
        );
        assert_eq!(
            normalize(&Kind::Port, "99999").unwrap_err(),
            "Invalid port number 99999"
        );
    }
}
