//! Cryptographic building blocks of the packet format.
//!
//! * [`x25519`] — Diffie–Hellman on Curve25519, through AWS-LC's
//!   X25519 (the fastest sound implementation measured on our reference machine;
//!   see `docs/protocol.md`, "X25519 implementation").
//! * [`kdf`] — the BLAKE3 key schedule: one extendable-output call per hop turns
//!   the shared secret into every per-hop key.
//! * [`body`] — the wide-block strong pseudorandom permutation that encrypts the
//!   packet body, so that a modified ("tagged") body decrypts to noise.
//! * [`padding`] — ISO/IEC 7816-4 padding with a constant-time unpad.

pub mod body;
pub mod kdf;
pub mod padding;
pub mod x25519;
