//! Payload envelopes: round trips for every kind and typed errors for garbage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::payload::{Envelope, EnvelopeError, MailTransport, Request};
use nox_protocol::sphinx::surb::Surb;
use nox_protocol::sphinx::{Hop, NodeId, PacketBuilder};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn surbs(n: usize) -> Vec<Surb> {
    let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
    let key = MixSecretKey::generate(&mut rng);
    let hop = Hop { id: NodeId([1; 32]), key: key.public_key(), delay_us: 5 };
    (0..n).map(|i| PacketBuilder::new(9).surb(&[hop, hop], [i as u8; 32], &mut rng).unwrap().0).collect()
}

fn any_request() -> impl Strategy<Value = Request> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..200);
    prop_oneof![
        bytes().prop_map(|data| Request::Echo { data }),
        (any::<u64>(), any::<[u8; 20]>(), bytes(), bytes()).prop_map(|(chain_id, target, calldata, payment)| {
            Request::EthRequest { chain_id, target, calldata, payment }
        }),
        (any::<u64>(), bytes()).prop_map(|(chain_id, raw_tx)| Request::RawBroadcast { chain_id, raw_tx }),
        (any::<u64>(), ".*").prop_map(|(chain_id, json)| Request::RpcCall { chain_id, json }),
        (".*", ".*", proptest::collection::vec((".*", ".*"), 0..4), bytes())
            .prop_map(|(method, url, headers, body)| Request::Http { method, url, headers, body }),
        (any::<bool>(), proptest::collection::vec(".*", 0..4), bytes()).prop_map(|(nntp, recipients, message)| {
            Request::Mail {
                transport: if nntp { MailTransport::Nntp } else { MailTransport::Smtp },
                recipients,
                message,
            }
        }),
        (any::<u8>(), bytes()).prop_map(|(status, data)| Request::Reply { status, data }),
    ]
}

proptest! {
    #[test]
    fn round_trip(request in any_request(), id in any::<[u8; 16]>(), n in 0usize..3) {
        let env = Envelope { request_id: id, surbs: surbs(n), request };
        let bytes = env.encode().unwrap();
        prop_assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn truncations_are_typed_errors(request in any_request(), cut in any::<prop::sample::Index>()) {
        let env = Envelope { request_id: [0; 16], surbs: vec![], request };
        let bytes = env.encode().unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(Envelope::decode(&bytes[..cut]).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Envelope::decode(&bytes);
    }
}

#[test]
fn specific_errors() {
    let env = Envelope { request_id: [0; 16], surbs: vec![], request: Request::Echo { data: vec![1, 2] } };
    let mut b = env.encode().unwrap();
    b.push(0);
    assert_eq!(Envelope::decode(&b), Err(EnvelopeError::TrailingBytes(1)));
    b.pop();
    b[0] = 9;
    assert_eq!(Envelope::decode(&b), Err(EnvelopeError::UnsupportedVersion(9)));
    b[0] = 1;
    b[1] = 0x7f;
    assert_eq!(Envelope::decode(&b), Err(EnvelopeError::UnknownKind(0x7f)));
    let rpc =
        Envelope { request_id: [0; 16], surbs: vec![], request: Request::RpcCall { chain_id: 1, json: "ab".into() } };
    let mut b = rpc.encode().unwrap();
    let n = b.len();
    b[n - 1] = 0xff;
    assert_eq!(Envelope::decode(&b), Err(EnvelopeError::InvalidUtf8));
    // A SURB count that claims more SURBs than there are bytes.
    let mut b = env.encode().unwrap();
    b[18] = 200;
    assert!(matches!(Envelope::decode(&b), Err(EnvelopeError::Truncated(_))));
    let too_many = Envelope { request_id: [0; 16], surbs: surbs(256), request: Request::Echo { data: vec![] } };
    assert_eq!(too_many.encode(), Err(EnvelopeError::TooManySurbs(256)));
}
