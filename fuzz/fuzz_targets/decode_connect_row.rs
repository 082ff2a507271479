//! CONNECT-DUMP rows: no panic; a decoded row re-encodes and reads back the same.
#![no_main]

use foreman::wire::anvil::{decode_connect_row, encode_reply, Reply};
use foreman::wire::DecodeError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_connect_row(data) {
        Ok((n, row)) => {
            assert!(n <= data.len() && data[n - 1] == b'\n');
            let reply = row.clone().map_or(Reply::DumpEnd, Reply::ConnectRow);
            let mut out = Vec::new();
            encode_reply(&reply, &mut out);
            assert_eq!(decode_connect_row(&out), Ok((out.len(), row)));
        }
        Err(DecodeError::Incomplete) => assert!(!data.contains(&b'\n')),
        Err(DecodeError::Invalid(_)) => assert!(data.contains(&b'\n')),
    }
});
