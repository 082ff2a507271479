//! The 12-byte status record: decodes exactly when 12 bytes are there, and bytes -> record
//! -> bytes is the identity.
#![no_main]

use foreman::wire::status::{StatusRecord, STATUS_RECORD_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match StatusRecord::decode(data) {
        Some(rec) => {
            assert!(data.len() >= STATUS_RECORD_LEN);
            assert_eq!(&rec.encode()[..], &data[..STATUS_RECORD_LEN]);
        }
        None => assert!(data.len() < STATUS_RECORD_LEN),
    }
});
