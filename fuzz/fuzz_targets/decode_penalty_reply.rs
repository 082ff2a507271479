//! PENALTY-GET replies: no panic; a decoded pair re-encodes and reads back the same.
#![no_main]

use foreman::wire::anvil::{decode_penalty_reply, encode_reply, Reply};
use foreman::wire::DecodeError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_penalty_reply(data) {
        Ok((n, (penalty, last_penalty))) => {
            assert!(n <= data.len() && data[n - 1] == b'\n');
            let mut out = Vec::new();
            encode_reply(&Reply::Penalty { penalty, last_penalty }, &mut out);
            assert_eq!(decode_penalty_reply(&out), Ok((out.len(), (penalty, last_penalty))));
        }
        Err(DecodeError::Incomplete) => assert!(!data.contains(&b'\n')),
        Err(DecodeError::Invalid(_)) => assert!(data.contains(&b'\n')),
    }
});
