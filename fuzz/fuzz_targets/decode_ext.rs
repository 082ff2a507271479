//! Foreman's anvil extension codec (src/wire/anvil_ext.rs): no input may panic; every decoded
//! request re-encodes canonically and reads back the same; reply decoders never panic and
//! what they decode re-encodes to bytes that decode the same.
#![no_main]

use foreman::wire::anvil_ext::{
    decode_claim_reply, decode_evict_reply, decode_ext_request, decode_proc_row,
    encode_ext_reply, encode_ext_request, parse_ext_request,
};
use foreman::wire::DecodeError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((n, req)) = decode_ext_request(rest) {
        assert!(n >= 1 && n <= rest.len() && rest[n - 1] == b'\n');
        if let Some(req) = req {
            let mut out = Vec::new();
            encode_ext_request(&req, &mut out);
            let again = parse_ext_request(&out[..out.len() - 1]).expect("an extension command");
            assert_eq!(again.expect("canonical form parses"), req);
        }
        rest = &rest[n..];
    }
    for decode in [decode_claim_reply, decode_evict_reply, decode_proc_row] {
        match decode(data) {
            Ok((_, reply)) => {
                let mut out = Vec::new();
                encode_ext_reply(&reply, &mut out);
                assert_eq!(decode(&out).map(|(_, r)| r), Ok(reply));
            }
            Err(DecodeError::Incomplete) => assert!(!data.contains(&b'\n')),
            Err(DecodeError::Invalid(_)) => {}
        }
    }
});
