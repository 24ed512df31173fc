//! Decodes arbitrary bytes as a payload envelope; anything that decodes must
//! re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nox_protocol::payload::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        let again = env.encode().expect("a decoded envelope re-encodes");
        assert_eq!(again, data);
    }
});
