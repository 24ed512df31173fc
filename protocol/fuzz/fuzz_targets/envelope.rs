//! Decodes arbitrary bytes as a request envelope and as a reply; anything that decodes must
//! re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nox_protocol::payload::{Envelope, Reply};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        let again = env.encode().expect("a decoded envelope re-encodes");
        assert_eq!(again, data);
    }
    if let Ok(reply) = Reply::decode(data) {
        assert_eq!(reply.encode().expect("a decoded reply re-encodes"), data);
    }
});
