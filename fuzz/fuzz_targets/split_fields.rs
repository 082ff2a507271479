//! Field splitting and unescaping: no panic, fields are NUL-free and never longer than their
//! source, the field count follows the TABs, and escaping is a right inverse of unescaping.
#![no_main]

use foreman::wire::escape::{escape, split_fields, unescape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields = split_fields(data);
    if data.is_empty() {
        assert!(fields.is_empty());
    } else {
        assert_eq!(fields.len(), data.iter().filter(|&&b| b == b'\t').count() + 1);
    }
    for (raw, field) in data.split(|&b| b == b'\t').zip(&fields) {
        assert_eq!(field, &unescape(raw));
        assert!(field.len() <= raw.len());
        assert!(!field.contains(&0));
        // Canonical re-escaping reads back the same bytes.
        let e = escape(field);
        assert!(!e.contains(&b'\t') && !e.contains(&b'\n') && !e.contains(&b'\r'));
        assert_eq!(&*unescape(&e), &**field);
    }
    // escape -> unescape is the identity on NUL-free bytes.
    let nul_free: Vec<u8> = data.iter().copied().filter(|&b| b != 0).collect();
    assert_eq!(&*unescape(&escape(&nul_free)), &nul_free[..]);
});
