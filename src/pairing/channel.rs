//! The secure channel of a pairing run: keys derived from SPAKE2, sealing, tags and the SAS.
//!
//! Each direction has its own ChaCha20-Poly1305 key and its own HMAC key, derived with HKDF from
//! SPAKE2's `Ke` and salted with the transcript hash, so nothing from one run or direction can
//! be replayed in another. Each key seals exactly one message, so a fixed nonce is safe.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use sha2::Sha256;

use super::spake2::{Keys, Role};
use crate::random::{constant_time_eq, to_hex};

/// Why a sealed message or tag was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a pairing message failed authentication")]
pub struct Tampered;

/// Keys for one direction.
struct Direction {
    seal: [u8; 32],
    tag: [u8; 32],
}

/// The channel both sides derive after key confirmation.
pub struct Channel {
    from_a: Direction,
    from_b: Direction,
    /// The short authentication string both humans compare: 6 digits.
    pub sas: String,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never appear in debug output.
        f.debug_struct("Channel").field("sas", &self.sas).finish_non_exhaustive()
    }
}

impl Channel {
    pub fn new(keys: &Keys) -> Channel {
        let hkdf = Hkdf::<Sha256>::new(Some(&keys.transcript_hash), &keys.ke);
        let derive = |label: &str| {
            let mut out = [0u8; 32];
            hkdf.expand(label.as_bytes(), &mut out).expect("32 bytes is a valid HKDF-SHA256 length");
            out
        };
        let sas_bytes = derive("loopsy pairing sas");
        let number = u32::from_be_bytes(sas_bytes[..4].try_into().expect("4 bytes")) % 1_000_000;
        Channel {
            from_a: Direction { seal: derive("loopsy pairing seal a->b"), tag: derive("loopsy pairing tag a->b") },
            from_b: Direction { seal: derive("loopsy pairing seal b->a"), tag: derive("loopsy pairing tag b->a") },
            sas: format!("{number:06}"),
        }
    }

    fn direction(&self, from: Role) -> &Direction {
        match from {
            Role::A => &self.from_a,
            Role::B => &self.from_b,
        }
    }

    /// Encrypts and authenticates the one message `from` sends; hex on the wire.
    pub fn seal(&self, from: Role, plaintext: &[u8]) -> String {
        let key = aead_key(&self.direction(from).seal);
        let mut buffer = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut buffer)
            .expect("sealing a short message cannot fail");
        to_hex(&buffer)
    }

    /// Opens a message sealed by `from`.
    pub fn open(&self, from: Role, sealed: &str) -> Result<Vec<u8>, Tampered> {
        let mut buffer = from_hex(sealed).ok_or(Tampered)?;
        let key = aead_key(&self.direction(from).seal);
        let plaintext = key
            .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut buffer)
            .map_err(|_| Tampered)?;
        Ok(plaintext.to_vec())
    }

    /// An authentication tag over a short statement (`"confirm"`, `"cancel"`, `"done"`).
    pub fn tag(&self, from: Role, statement: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.direction(from).tag).expect("any key length");
        mac.update(statement.as_bytes());
        to_hex(&mac.finalize().into_bytes())
    }

    pub fn check_tag(&self, from: Role, statement: &str, tag: &str) -> Result<(), Tampered> {
        if constant_time_eq(self.tag(from, statement).as_bytes(), tag.as_bytes()) {
            Ok(())
        } else {
            Err(Tampered)
        }
    }
}

fn aead_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte ChaCha20 key"))
}

/// Decodes lowercase or uppercase hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would take a sign ("+f"), so every byte is checked first.
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairing::spake2::{password_scalar, Spake2};

    fn channels() -> (Channel, Channel) {
        let w = password_scalar("000111");
        let a = Spake2::start(Role::A, w, b"a", b"b");
        let b = Spake2::start(Role::B, w, b"a", b"b");
        let (share_a, share_b) = (*a.share(), *b.share());
        (Channel::new(&a.finish(&share_b).unwrap()), Channel::new(&b.finish(&share_a).unwrap()))
    }

    #[test]
    fn both_sides_derive_the_same_channel() {
        let (a, b) = channels();
        assert_eq!(a.sas, b.sas);
        assert_eq!(a.sas.len(), 6);
        let sealed = a.seal(Role::A, b"secret key material");
        assert!(!sealed.contains(&to_hex(b"secret key material")), "sealed text hides the plaintext");
        assert_eq!(b.open(Role::A, &sealed).unwrap(), b"secret key material");
        b.check_tag(Role::A, "confirm", &a.tag(Role::A, "confirm")).unwrap();
    }

    #[test]
    fn tampering_and_reflection_are_detected() {
        let (a, b) = channels();
        let sealed = a.seal(Role::A, b"payload");
        let mut flipped = from_hex(&sealed).unwrap();
        flipped[0] ^= 1;
        assert_eq!(b.open(Role::A, &to_hex(&flipped)), Err(Tampered));
        assert_eq!(b.open(Role::B, &sealed), Err(Tampered), "a message cannot be reflected back");
        assert_eq!(b.check_tag(Role::A, "cancel", &a.tag(Role::A, "confirm")), Err(Tampered));
        assert_eq!(b.check_tag(Role::B, "confirm", &a.tag(Role::A, "confirm")), Err(Tampered));
        let (other, _) = channels();
        assert_eq!(other.open(Role::A, &sealed), Err(Tampered), "another run cannot open it");
    }
}
