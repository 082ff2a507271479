//! Decodes a buffer line after line as a session would. No input may panic; the one-pass
//! hot path agrees with framing then parsing; every decoded request re-encodes canonically
//! and reads back the same; framing obeys the 1024-byte limit.
#![no_main]

use foreman::wire::anvil::{decode_request, encode_request, parse_request};
use foreman::wire::line::{next_line, MAX_LINE};
use foreman::wire::DecodeError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let decoded = decode_request(rest);
        let reference = match next_line(rest) {
            Ok(Some((n, line))) => match parse_request(line) {
                Ok(r) => Ok((n, r)),
                Err(e) => Err(DecodeError::Invalid(Ok(e))),
            },
            Ok(None) => Err(DecodeError::Incomplete),
            Err(e) => Err(DecodeError::Invalid(Err(e))),
        };
        assert_eq!(decoded, reference);
        match decoded {
            Ok((n, req)) => {
                assert!(n >= 1 && n <= MAX_LINE && n <= rest.len() && rest[n - 1] == b'\n');
                if let Some(req) = req {
                    let mut out = Vec::new();
                    encode_request(&req, &mut out);
                    assert_eq!(out.last(), Some(&b'\n'));
                    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
                    // The canonical form may outgrow the line limit (a raw CR becomes two
                    // bytes), so read it back without framing.
                    let again = parse_request(&out[..out.len() - 1]).expect("canonical form parses");
                    assert_eq!(again.as_ref(), Some(&req));
                    let mut out2 = Vec::new();
                    encode_request(again.as_ref().unwrap(), &mut out2);
                    assert_eq!(out2, out);
                }
                rest = &rest[n..];
            }
            Err(DecodeError::Incomplete) => {
                assert!(rest.len() < MAX_LINE && !rest.contains(&b'\n'));
                break;
            }
            Err(DecodeError::Invalid(Err(_too_long))) => {
                assert!(!rest[..MAX_LINE].contains(&b'\n'));
                break;
            }
            Err(DecodeError::Invalid(Ok(reason))) => {
                let _ = reason.to_string();
                break;
            }
        }
    }
});
