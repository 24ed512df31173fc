//! The gas payment an `EthRequest` carries: a Groth16 spend proof and the
//! spend's public inputs, exactly as `NoxPool.relay` takes them.
//!
//! ```text
//! proof (256) = A.x ‖ A.y ‖ B.x.c1 ‖ B.x.c0 ‖ B.y.c1 ‖ B.y.c0 ‖ C.x ‖ C.y   (32-byte big-endian words)
//! inputs (224) = root ‖ nullifier ‖ change commitment ‖ asset ‖ public value ‖ recipient ‖ execution hash
//! ```
//!
//! The decoder refuses what the pool would refuse without looking at the
//! proof: a proof word that is not a BN254 base-field element, a public input
//! that is not a scalar-field element, an asset or recipient wider than an
//! address (160 bits), a public value of 128 bits or more. Whether the proof's
//! points lie on the curve, and whether it verifies, is the exit's check
//! (`nox-circuits`), not the envelope's.

/// Bytes of an encoded proof (the pool's `uint256[8]`).
pub const PROOF_LEN: usize = 256;
/// Public inputs of a spend.
pub const SPEND_INPUTS: usize = 7;
/// Bytes of an encoded payment.
pub const PAYMENT_LEN: usize = PROOF_LEN + SPEND_INPUTS * 32;

/// BN254's base-field modulus p, big-endian: every proof coordinate is below it.
pub const BASE_MODULUS: [u8; 32] = hex32("30644e72e131a029b85045b68181585d97816a916871ca8d3c208c16d87cfd47");
/// BN254's scalar-field modulus r, big-endian: every public input is below it.
pub const SCALAR_MODULUS: [u8; 32] = hex32("30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001");

const fn hex32(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0,
    }
}

/// Why a payment is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// A proof word is not below the base-field modulus.
    #[error("proof word {0} is not a BN254 base-field element")]
    ProofWordOutOfField(usize),
    /// A public input is not below the scalar-field modulus.
    #[error("public input {0} ({name}) is not a BN254 scalar-field element", name = input_name(*.0))]
    InputOutOfField(usize),
    /// The asset or the recipient is wider than an address.
    #[error("public input {0} ({name}) is wider than an address", name = input_name(*.0))]
    NotAnAddress(usize),
    /// The public value is 2^128 or more.
    #[error("the public value is 2^128 or more")]
    ValueTooLarge,
}

fn input_name(i: usize) -> &'static str {
    ["root", "nullifier", "change commitment", "asset", "public value", "recipient", "execution hash"]
        .get(i)
        .copied()
        .unwrap_or("?")
}

/// A spend's public inputs, each a 32-byte big-endian word, in the circuit's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpendInputs {
    /// A root the pool knows.
    pub root: [u8; 32],
    /// The spent note's nullifier.
    pub nullifier: [u8; 32],
    /// The change note's commitment.
    pub change_commitment: [u8; 32],
    /// The asset: a token address, 0 for ETH.
    pub asset: [u8; 32],
    /// The value paid out (below 2^128).
    pub public_value: [u8; 32],
    /// Who is paid: the relaying exit's wallet.
    pub recipient: [u8; 32],
    /// The call the payment is bound to.
    pub execution_hash: [u8; 32],
}

impl SpendInputs {
    /// The inputs in the circuit's order.
    pub fn words(&self) -> [[u8; 32]; SPEND_INPUTS] {
        [
            self.root,
            self.nullifier,
            self.change_commitment,
            self.asset,
            self.public_value,
            self.recipient,
            self.execution_hash,
        ]
    }

    fn from_words(w: [[u8; 32]; SPEND_INPUTS]) -> Self {
        let [root, nullifier, change_commitment, asset, public_value, recipient, execution_hash] = w;
        SpendInputs { root, nullifier, change_commitment, asset, public_value, recipient, execution_hash }
    }

    /// The asset as an address (`None` if wider than 160 bits).
    pub fn asset_address(&self) -> Option<[u8; 20]> {
        address_of(&self.asset)
    }

    /// The recipient as an address (`None` if wider than 160 bits).
    pub fn recipient_address(&self) -> Option<[u8; 20]> {
        address_of(&self.recipient)
    }

    /// The public value (`None` if 2^128 or more).
    pub fn public_value(&self) -> Option<u128> {
        let (high, low) = self.public_value.split_at(16);
        if high.iter().any(|b| *b != 0) {
            return None;
        }
        low.try_into().ok().map(u128::from_be_bytes)
    }
}

fn address_of(word: &[u8; 32]) -> Option<[u8; 20]> {
    let (high, low) = word.split_at(12);
    if high.iter().any(|b| *b != 0) {
        return None;
    }
    low.try_into().ok()
}

/// A gas payment: the proof and its public inputs. `Debug` shows neither
/// (the nullifier identifies the spend).
#[derive(Clone, PartialEq, Eq)]
pub struct GasPayment {
    /// The proof, in the pool's word order.
    pub proof: [u8; PROOF_LEN],
    /// The public inputs.
    pub inputs: SpendInputs,
}

impl std::fmt::Debug for GasPayment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GasPayment(<redacted>)")
    }
}

impl GasPayment {
    /// Checks the ranges the pool enforces (see the module docs).
    pub fn check(&self) -> Result<(), PaymentError> {
        for (i, word) in self.proof.chunks_exact(32).enumerate() {
            if word >= BASE_MODULUS.as_slice() {
                return Err(PaymentError::ProofWordOutOfField(i));
            }
        }
        for (i, word) in self.inputs.words().iter().enumerate() {
            if word >= &SCALAR_MODULUS {
                return Err(PaymentError::InputOutOfField(i));
            }
        }
        if self.inputs.asset_address().is_none() {
            return Err(PaymentError::NotAnAddress(3));
        }
        if self.inputs.recipient_address().is_none() {
            return Err(PaymentError::NotAnAddress(5));
        }
        if self.inputs.public_value().is_none() {
            return Err(PaymentError::ValueTooLarge);
        }
        Ok(())
    }

    /// The payment's [`PAYMENT_LEN`] bytes.
    pub fn encode(&self) -> [u8; PAYMENT_LEN] {
        let mut out = [0u8; PAYMENT_LEN];
        out[..PROOF_LEN].copy_from_slice(&self.proof);
        for (i, word) in self.inputs.words().iter().enumerate() {
            out[PROOF_LEN + 32 * i..PROOF_LEN + 32 * (i + 1)].copy_from_slice(word);
        }
        out
    }

    /// Decodes the [`PAYMENT_LEN`] bytes of a payment and checks its ranges.
    pub fn decode(bytes: &[u8; PAYMENT_LEN]) -> Result<Self, PaymentError> {
        let mut proof = [0u8; PROOF_LEN];
        proof.copy_from_slice(&bytes[..PROOF_LEN]);
        let mut words = [[0u8; 32]; SPEND_INPUTS];
        for (i, w) in words.iter_mut().enumerate() {
            w.copy_from_slice(&bytes[PROOF_LEN + 32 * i..PROOF_LEN + 32 * (i + 1)]);
        }
        let payment = GasPayment { proof, inputs: SpendInputs::from_words(words) };
        payment.check()?;
        Ok(payment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> GasPayment {
        let mut inputs = SpendInputs::default();
        inputs.asset[31] = 1;
        inputs.recipient[12..].copy_from_slice(&[0xaa; 20]);
        inputs.public_value[16..].copy_from_slice(&u128::MAX.to_be_bytes());
        inputs.execution_hash = SCALAR_MODULUS;
        inputs.execution_hash[31] -= 1;
        GasPayment { proof: [1; PROOF_LEN], inputs }
    }

    #[test]
    fn ranges_are_the_pools() {
        let ok = valid();
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.inputs.public_value(), Some(u128::MAX));
        assert_eq!(ok.inputs.recipient_address(), Some([0xaa; 20]));

        let mut p = valid();
        p.proof[64..96].copy_from_slice(&BASE_MODULUS);
        assert_eq!(p.check(), Err(PaymentError::ProofWordOutOfField(2)));
        let mut p = valid();
        p.inputs.nullifier = SCALAR_MODULUS;
        assert_eq!(p.check(), Err(PaymentError::InputOutOfField(1)));
        let mut p = valid();
        p.inputs.recipient[11] = 1;
        assert_eq!(p.check(), Err(PaymentError::NotAnAddress(5)));
        let mut p = valid();
        p.inputs.asset[0] = 1;
        assert_eq!(p.check(), Err(PaymentError::NotAnAddress(3)));
        let mut p = valid();
        p.inputs.public_value[15] = 1;
        assert_eq!(p.check(), Err(PaymentError::ValueTooLarge));
    }

    #[test]
    fn a_payment_round_trips_through_its_bytes() {
        let p = valid();
        assert_eq!(GasPayment::decode(&p.encode()), Ok(p));
        let mut bytes = valid().encode();
        bytes[PROOF_LEN..PROOF_LEN + 32].copy_from_slice(&SCALAR_MODULUS);
        assert_eq!(GasPayment::decode(&bytes), Err(PaymentError::InputOutOfField(0)));
    }

    #[test]
    fn moduli_are_bn254s() {
        // r and p differ from the 17th byte on, and r < p.
        assert!(SCALAR_MODULUS < BASE_MODULUS);
        assert_eq!(SCALAR_MODULUS[..16], BASE_MODULUS[..16]);
        assert_eq!(SCALAR_MODULUS[31], 0x01);
        assert_eq!(BASE_MODULUS[31], 0x47);
    }
}
