//! The login hand-off request (src/wire/master_auth.rs): no input may panic; a decoded
//! request re-encodes to bytes that decode to the same request and data.
#![no_main]

use foreman::wire::master_auth::{decode_request, encode_request, AuthReply, REQUEST_SIZE};
use foreman::wire::DecodeError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok((n, req, login)) => {
            assert_eq!(n, REQUEST_SIZE + req.data_size as usize);
            let mut out = Vec::new();
            encode_request(&req, &login, &mut out);
            let (m, req2, login2) = decode_request(&out).expect("re-encoded request decodes");
            assert_eq!(m, out.len());
            assert_eq!(login2, login);
            assert_eq!(req2.ino, req.ino);
            assert_eq!((req2.local_ip, req2.remote_ip), (req.local_ip, req.remote_ip));
        }
        Err(DecodeError::Incomplete) => {}
        Err(DecodeError::Invalid(_)) => assert!(data.len() >= REQUEST_SIZE),
    }
    if let Some(r) = AuthReply::decode(data) {
        assert_eq!(AuthReply::decode(&r.encode()), Some(r));
    }
});
