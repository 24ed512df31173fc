//! Payload envelopes: round trips for every kind and typed errors for garbage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::payload::{ETH_ALLOW_FAILURE, Envelope, EnvelopeError, MailTransport, Reply, ReplyStatus, Request};
use nox_protocol::payment::{BASE_MODULUS, GasPayment, PROOF_LEN, PaymentError, SCALAR_MODULUS, SpendInputs};
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

/// A payment whose words are all in range: small values in the top bytes' place.
fn payment(seed: [u8; 8]) -> GasPayment {
    let mut inputs = SpendInputs::default();
    for (i, w) in [&mut inputs.root, &mut inputs.nullifier, &mut inputs.change_commitment, &mut inputs.execution_hash]
        .into_iter()
        .enumerate()
    {
        w[24..].copy_from_slice(&seed);
        w[1] = i as u8;
    }
    inputs.asset[24..].copy_from_slice(&seed);
    inputs.recipient[12..20].copy_from_slice(&seed);
    inputs.public_value[20..28].copy_from_slice(&seed);
    let mut proof = [0u8; PROOF_LEN];
    for (i, word) in proof.chunks_exact_mut(32).enumerate() {
        word[24..].copy_from_slice(&seed);
        word[2] = i as u8;
    }
    GasPayment { proof, inputs }
}

fn statuses() -> impl Strategy<Value = ReplyStatus> {
    prop_oneof![
        Just(ReplyStatus::Ok),
        Just(ReplyStatus::Unsupported),
        Just(ReplyStatus::BadRequest),
        Just(ReplyStatus::Refused),
        Just(ReplyStatus::Failed),
        Just(ReplyStatus::Timeout),
        Just(ReplyStatus::Busy),
        Just(ReplyStatus::MoreSurbs),
    ]
}

fn any_request() -> impl Strategy<Value = Request> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..200);
    prop_oneof![
        bytes().prop_map(|data| Request::Echo { data }),
        (any::<u64>(), any::<[u8; 20]>(), any::<(u64, u64)>(), any::<bool>(), bytes(), any::<[u8; 8]>()).prop_map(
            |(chain_id, target, (call_gas, deadline), allow_failure, calldata, seed)| Request::EthRequest {
                chain_id,
                target,
                call_gas,
                deadline,
                allow_failure,
                calldata,
                payment: Box::new(payment(seed))
            }
        ),
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
        Just(Request::SurbTopUp),
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
        let _ = Reply::decode(&bytes);
    }

    #[test]
    fn replies_round_trip(id in any::<[u8; 16]>(), status in statuses(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let reply = Reply { request_id: id, status, data };
        let bytes = reply.encode().unwrap();
        prop_assert_eq!(bytes.len(), reply.encoded_len());
        prop_assert_eq!(Reply::decode(&bytes).unwrap(), reply.clone());
        prop_assert_eq!(Envelope::decode(&bytes), Err(EnvelopeError::WrongDirection(0x10)));
        for cut in 0..bytes.len() {
            prop_assert!(Reply::decode(&bytes[..cut]).is_err());
        }
    }
}

#[test]
fn a_request_is_not_a_reply_and_unknown_statuses_are_refused() {
    let env = Envelope { request_id: [0; 16], surbs: vec![], request: Request::Echo { data: vec![1] } };
    assert_eq!(Reply::decode(&env.encode().unwrap()), Err(EnvelopeError::WrongDirection(0x01)));
    let mut b = Reply { request_id: [0; 16], status: ReplyStatus::Ok, data: vec![] }.encode().unwrap();
    b[18] = 8;
    assert_eq!(Reply::decode(&b), Err(EnvelopeError::UnknownStatus(8)));
}

#[test]
fn a_more_surbs_reply_names_its_count_and_nothing_else_does() {
    let more = Reply::more_surbs([3; 16], 300);
    let back = Reply::decode(&more.encode().unwrap()).unwrap();
    assert_eq!((back.status, back.surbs_needed()), (ReplyStatus::MoreSurbs, Some(300)));
    let ok = Reply { request_id: [3; 16], status: ReplyStatus::Ok, data: vec![1, 44] };
    assert_eq!(ok.surbs_needed(), None);
    let odd = Reply { request_id: [3; 16], status: ReplyStatus::MoreSurbs, data: vec![1] };
    assert_eq!(odd.surbs_needed(), None);
}

#[test]
fn malformed_payments_are_refused_by_the_decoder_and_the_encoder() {
    let eth = |payment: GasPayment| Envelope {
        request_id: [0; 16],
        surbs: vec![],
        request: Request::EthRequest {
            chain_id: 31337,
            target: [9; 20],
            call_gas: 100_000,
            deadline: 2_000_000_000,
            allow_failure: false,
            calldata: vec![1, 2, 3],
            payment: Box::new(payment),
        },
    };
    let good = eth(payment([5; 8])).encode().unwrap();
    // Reserved flag bits are refused (the flags byte follows chain id, target, gas and deadline).
    let flags_at = 2 + 16 + 1 + 8 + 20 + 8 + 8;
    let mut flagged = good.clone();
    flagged[flags_at] = 0x02;
    assert_eq!(Envelope::decode(&flagged), Err(EnvelopeError::UnknownFlags(0x02)));
    flagged[flags_at] = ETH_ALLOW_FAILURE;
    assert!(matches!(Envelope::decode(&flagged).unwrap().request, Request::EthRequest { allow_failure: true, .. }));
    let payment_at = good.len() - (PROOF_LEN + 7 * 32);
    // Each word out of range, written into a valid encoding.
    let cases: [(usize, [u8; 32], EnvelopeError); 5] = [
        (0, BASE_MODULUS, EnvelopeError::Payment(PaymentError::ProofWordOutOfField(0))),
        (PROOF_LEN + 32, SCALAR_MODULUS, EnvelopeError::Payment(PaymentError::InputOutOfField(1))),
        (PROOF_LEN + 5 * 32, [1; 32], EnvelopeError::Payment(PaymentError::NotAnAddress(5))),
        (PROOF_LEN + 6 * 32, [0xff; 32], EnvelopeError::Payment(PaymentError::InputOutOfField(6))),
        (
            PROOF_LEN + 4 * 32,
            {
                let mut w = [0u8; 32];
                w[15] = 1;
                w
            },
            EnvelopeError::Payment(PaymentError::ValueTooLarge),
        ),
    ];
    for (offset, word, expected) in cases {
        let mut b = good.clone();
        b[payment_at + offset..payment_at + offset + 32].copy_from_slice(&word);
        assert_eq!(Envelope::decode(&b), Err(expected));
    }
    let mut wide = payment([5; 8]);
    wide.inputs.recipient[0] = 0x01;
    assert_eq!(eth(wide).encode(), Err(EnvelopeError::Payment(PaymentError::NotAnAddress(5))));
    // A payment cut short is a truncation.
    assert!(matches!(Envelope::decode(&good[..good.len() - 1]), Err(EnvelopeError::Truncated(_))));
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
    b[0] = nox_protocol::payload::ENVELOPE_VERSION;
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
