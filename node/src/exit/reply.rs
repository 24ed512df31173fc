//! Replies: a [`Reply`] encoded, fragmented (Reed–Solomon parity when it
//! needs more than one packet) and sent back through the request's SURBs, one
//! SURB per fragment.

use nox_protocol::fragment::Fragmenter;
use nox_protocol::payload::Reply;
use nox_protocol::sphinx::surb::Surb;
use rand::RngCore;

use crate::pipeline::Action;

/// Why a reply could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The request carried no SURB: nothing can go back.
    #[error("the request carried no SURB")]
    NoSurbs,
    /// More fragments than SURBs (`exit/short_of_surbs`).
    #[error("{fragments} fragments for {surbs} SURBs")]
    ShortOfSurbs {
        /// Fragments the reply needs.
        fragments: usize,
        /// SURBs the request carried.
        surbs: usize,
    },
    /// The reply does not encode or split, or a SURB cannot carry its
    /// fragment (`exit/reply_unbuildable`).
    #[error("the reply cannot be built")]
    Unbuildable,
}

/// Bytes of answer `surbs` SURBs can carry: the longest reply envelope the
/// fragmenter fits into that many packets, less the envelope's own fields.
pub fn reply_budget(surbs: usize) -> usize {
    Reply::max_data_for(Fragmenter::default().max_message_len_for(surbs))
}

/// The packets that carry `reply` back, one per SURB used (in SURB order).
pub fn reply_packets(reply: &Reply, surbs: Vec<Surb>) -> Result<Vec<Action>, ReplyError> {
    if surbs.is_empty() {
        return Err(ReplyError::NoSurbs);
    }
    let encoded = reply.encode().map_err(|_| ReplyError::Unbuildable)?;
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let fragments = Fragmenter::default().split(&encoded, id).map_err(|_| ReplyError::Unbuildable)?;
    if fragments.len() > surbs.len() {
        // Without a SURB per fragment the client could not reassemble (the
        // fragmenter's count already includes the parity that covers losses).
        return Err(ReplyError::ShortOfSurbs { fragments: fragments.len(), surbs: surbs.len() });
    }
    surbs
        .into_iter()
        .zip(fragments)
        .map(|(surb, fragment)| {
            let (next, packet) = surb.into_packet(&fragment).map_err(|_| ReplyError::Unbuildable)?;
            Ok(Action::Forward { next, packet })
        })
        .collect()
}

/// `n` SURBs over a one-hop route to a throwaway key (the exit's tests).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_surbs(n: usize) -> Vec<Surb> {
    use nox_protocol::crypto::x25519::MixSecretKey;
    use nox_protocol::sphinx::{Hop, NodeId, PacketBuilder};
    let mut rng = rand::rngs::OsRng;
    let key = MixSecretKey::generate(&mut rng);
    let hop = Hop { id: NodeId([1; 32]), key: key.public_key(), delay_us: 0 };
    (0..n).map(|i| PacketBuilder::new(1).surb(&[hop], [i as u8; 32], &mut rng).unwrap().0).collect()
}

#[cfg(test)]
mod tests {
    use super::test_surbs as surbs;
    use super::*;
    use nox_protocol::payload::ReplyStatus;

    #[test]
    fn a_reply_within_the_budget_fits_its_surbs_and_one_beyond_does_not() {
        for n in [1usize, 2, 4] {
            let budget = reply_budget(n);
            let fits = Reply { request_id: [0; 16], status: ReplyStatus::Ok, data: vec![7; budget] };
            assert!(reply_packets(&fits, surbs(n)).unwrap().len() <= n);
            let over = Reply { request_id: [0; 16], status: ReplyStatus::Ok, data: vec![7; budget + 1] };
            assert!(matches!(reply_packets(&over, surbs(n)), Err(ReplyError::ShortOfSurbs { .. })));
        }
        let r = Reply { request_id: [0; 16], status: ReplyStatus::Ok, data: vec![] };
        assert_eq!(reply_packets(&r, vec![]).unwrap_err(), ReplyError::NoSurbs);
    }
}
