//! The cover payload: what a loop or drop packet carries to its final hop.
//!
//! ```text
//! kind (1) = 0x00 ‖ id (16)
//! ```
//!
//! The kind byte is one no fragment starts with (fragments start with their
//! version, 1), so a final hop tells cover from a client message by its first
//! byte. A drop's id is random and remembered by nobody; the final hop (an
//! exit) discards it. Inside the network it is a packet like any other — the
//! payload is visible only to the final hop. Nodes and clients (Loopix's λ_D
//! stream) send drops in this format. Loops (λ_L) no longer use it: nodes and
//! clients both send their loops as echo requests with one SURB, so that an
//! exit cannot tell a loop from a request (a payload with a remembered id,
//! [`loop_payload`], is still what [`cover_id`] reads).

use rand::RngCore;

/// First payload byte of every cover packet.
pub const COVER_KIND: u8 = 0x00;
/// Length of a cover id.
pub const COVER_ID_LEN: usize = 16;
/// Length of a cover payload.
pub const COVER_PAYLOAD_LEN: usize = 1 + COVER_ID_LEN;

/// A cover payload carrying `id` (a loop the sender will recognise).
pub fn loop_payload(id: [u8; COVER_ID_LEN]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(COVER_PAYLOAD_LEN);
    payload.push(COVER_KIND);
    payload.extend_from_slice(&id);
    payload
}

/// A cover payload with a random id nobody remembers (a drop).
pub fn drop_payload(rng: &mut impl RngCore) -> Vec<u8> {
    let mut id = [0u8; COVER_ID_LEN];
    rng.fill_bytes(&mut id);
    loop_payload(id)
}

/// Whether a final payload is cover.
pub fn is_cover(payload: &[u8]) -> bool {
    payload.first() == Some(&COVER_KIND)
}

/// The id of a cover payload; `None` if it is not cover or too short.
pub fn cover_id(payload: &[u8]) -> Option<[u8; COVER_ID_LEN]> {
    if !is_cover(payload) {
        return None;
    }
    payload.get(1..COVER_PAYLOAD_LEN)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_is_recognised_and_carries_its_id() {
        let p = loop_payload([7; COVER_ID_LEN]);
        assert!(is_cover(&p));
        assert_eq!(cover_id(&p), Some([7; COVER_ID_LEN]));
        assert_eq!(cover_id(&p[..5]), None);
        assert_eq!(drop_payload(&mut rand::rngs::OsRng).len(), COVER_PAYLOAD_LEN);
        let fragment_first_byte = crate::fragment::FRAGMENT_VERSION;
        assert!(!is_cover(&[fragment_first_byte, 0, 0]));
    }
}
