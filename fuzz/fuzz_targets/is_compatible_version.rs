//! The handshake check against a model written with `str` methods (rules R3–R9).
#![no_main]

use foreman::wire::anvil::is_compatible_version;
use libfuzzer_sys::fuzz_target;

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn model(line: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(line) else { return false };
    let parts: Vec<&str> = s.split('\t').collect();
    parts.len() == 4
        && parts[0] == "VERSION"
        && parts[1] == "anvil"
        && digits(parts[2])
        && parts[2].parse::<u64>() == Ok(1)
        && digits(parts[3])
        && parts[3].parse::<u32>().is_ok()
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(is_compatible_version(data), model(data), "{data:?}");
});
