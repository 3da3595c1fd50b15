//! SPAKE2 (RFC 9382) on P-256 with SHA-256, HKDF and HMAC: the `SPAKE2-P256-SHA256-HKDF-HMAC`
//! ciphersuite, with key confirmation in both directions.
//!
//! Both sides know a low-entropy password (the invite code). Each sends one point; each derives
//! the same key only if the passwords match, and an eavesdropper learns nothing that allows an
//! offline guess. A man in the middle gets one online guess per run, which the daemon limits.
//! The confirmation MACs cover the whole transcript, so a tampered message fails confirmation.
//!
//! This module does no I/O and keeps no state beyond one run.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use p256::elliptic_curve::group::ff::PrimeField;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::sec1::{FromSec1Point, ToSec1Point};
use p256::elliptic_curve::Group;
use p256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar};
use sha2::{Digest, Sha256};

/// RFC 9382 §6: the P-256 point M (party A's blinding point), SEC1 compressed.
const M: &str = "02886e2f97ace46e55ba9dd7242579f2993b64e16ef3dcab95afd497333d8fa12f";
/// RFC 9382 §6: the P-256 point N (party B's blinding point), SEC1 compressed.
const N: &str = "03d8bbd6c639c62937b04d997f38c3770719c629d7014d49a24b4f98baa1292b49";

/// Which side of the exchange this is. A blinds with M, B with N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    A,
    B,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Spake2Error {
    #[error("the peer's message is not a valid P-256 point")]
    InvalidPoint,
    #[error("the key confirmation failed: the codes differ or a message was altered")]
    ConfirmationFailed,
}

/// One side of a run, after it has made its message.
pub struct Spake2 {
    role: Role,
    w: Scalar,
    secret: Scalar,
    share: [u8; 65],
    id_a: Vec<u8>,
    id_b: Vec<u8>,
}

/// The keys of a completed run.
pub struct Keys {
    /// The shared secret key `Ke` (16 bytes), from which session keys are derived.
    pub ke: [u8; 16],
    /// The SHA-256 of the transcript, binding everything both sides saw.
    pub transcript_hash: [u8; 32],
    mine: [u8; 32],
    theirs: [u8; 32],
}

impl Spake2 {
    /// Starts a run with a fresh random secret scalar.
    pub fn start(role: Role, w: Scalar, id_a: &[u8], id_b: &[u8]) -> Spake2 {
        Spake2::with_secret(role, w, random_scalar(), id_a, id_b)
    }

    /// Starts a run with a given secret scalar (for test vectors).
    pub fn with_secret(role: Role, w: Scalar, secret: Scalar, id_a: &[u8], id_b: &[u8]) -> Spake2 {
        let blind = match role {
            Role::A => point(M),
            Role::B => point(N),
        };
        let share_point = ProjectivePoint::generator() * secret + blind * w;
        Spake2 { role, w, secret, share: encode(&share_point), id_a: id_a.to_vec(), id_b: id_b.to_vec() }
    }

    /// This side's message: an uncompressed SEC1 point (65 bytes).
    pub fn share(&self) -> &[u8; 65] {
        &self.share
    }

    /// Finishes the run with the peer's message.
    pub fn finish(self, peer_share: &[u8]) -> Result<Keys, Spake2Error> {
        let peer = AffinePoint::from_sec1_bytes(peer_share).map_err(|_| Spake2Error::InvalidPoint)?;
        let peer = ProjectivePoint::from(peer);
        if bool::from(peer.is_identity()) {
            return Err(Spake2Error::InvalidPoint);
        }
        let peer_blind = match self.role {
            Role::A => point(N),
            Role::B => point(M),
        };
        // The cofactor of P-256 is 1.
        let k = (peer - peer_blind * self.w) * self.secret;
        if bool::from(k.is_identity()) {
            return Err(Spake2Error::InvalidPoint);
        }
        let peer_encoded = encode(&peer);
        let (share_a, share_b) = match self.role {
            Role::A => (&self.share, &peer_encoded),
            Role::B => (&peer_encoded, &self.share),
        };
        let transcript = transcript(&self.id_a, &self.id_b, share_a, share_b, &encode(&k), &self.w.to_repr());
        let transcript_hash: [u8; 32] = Sha256::digest(&transcript).into();
        let (ke, ka) = transcript_hash.split_at(16);
        let mut confirmation_keys = [0u8; 32];
        Hkdf::<Sha256>::new(None, ka)
            .expand(b"ConfirmationKeys", &mut confirmation_keys)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        let (kc_a, kc_b) = confirmation_keys.split_at(16);
        let mac_a = hmac(kc_a, &transcript);
        let mac_b = hmac(kc_b, &transcript);
        let (mine, theirs) = match self.role {
            Role::A => (mac_a, mac_b),
            Role::B => (mac_b, mac_a),
        };
        Ok(Keys { ke: ke.try_into().expect("16 bytes"), transcript_hash, mine, theirs })
    }
}

impl Keys {
    /// The confirmation MAC this side sends.
    pub fn confirmation(&self) -> [u8; 32] {
        self.mine
    }

    /// Checks the peer's confirmation MAC, in constant time.
    pub fn verify_peer(&self, mac: &[u8]) -> Result<(), Spake2Error> {
        if crate::random::constant_time_eq(&self.theirs, mac) {
            Ok(())
        } else {
            Err(Spake2Error::ConfirmationFailed)
        }
    }
}

/// The password scalar `w` for an invite code, domain-separated for loopsy pairing.
///
/// RFC 9382 suggests a memory-hard function; with a 6-digit code the real defence is the
/// daemon's limit of three wrong attempts per session, since SPAKE2 itself gives an attacker no
/// offline test of a guess.
pub fn password_scalar(code: &str) -> Scalar {
    let mut bytes = FieldBytes::default();
    Hkdf::<Sha256>::new(Some(b"loopsy-pairing-v1"), code.as_bytes())
        .expand(b"spake2 password scalar", &mut bytes)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    <Scalar as Reduce<FieldBytes>>::reduce(&bytes)
}

fn random_scalar() -> Scalar {
    loop {
        let bytes = FieldBytes::try_from(crate::random::bytes(32).as_slice()).expect("32 bytes");
        let scalar = <Scalar as Reduce<FieldBytes>>::reduce(&bytes);
        if scalar != Scalar::ZERO {
            return scalar;
        }
    }
}

fn point(hex: &str) -> ProjectivePoint {
    let bytes = decode_hex(hex);
    ProjectivePoint::from(AffinePoint::from_sec1_bytes(&bytes).expect("M and N are valid points"))
}

fn encode(point: &ProjectivePoint) -> [u8; 65] {
    point.to_affine().to_sec1_point(false).as_bytes().try_into().expect("uncompressed P-256 points have 65 bytes")
}

/// RFC 9382 §4: each field prefixed with its length as 8 little-endian bytes.
fn transcript(id_a: &[u8], id_b: &[u8], share_a: &[u8], share_b: &[u8], k: &[u8], w: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in [id_a, id_b, share_a, share_b, k, w] {
        out.extend_from_slice(&(field.len() as u64).to_le_bytes());
        out.extend_from_slice(field);
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("valid hex")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::to_hex;

    fn scalar(hex: &str) -> Scalar {
        let bytes = decode_hex(hex);
        Scalar::from_repr(FieldBytes::try_from(bytes.as_slice()).unwrap()).expect("a canonical scalar")
    }

    struct Vector {
        id_a: &'static str,
        id_b: &'static str,
        w: &'static str,
        x: &'static str,
        y: &'static str,
        p_a: &'static str,
        p_b: &'static str,
        hash_tt: &'static str,
        mac_a: &'static str,
        mac_b: &'static str,
    }

    /// RFC 9382 Appendix B, SPAKE2-P256-SHA256-HKDF-HMAC.
    const VECTORS: [Vector; 4] = [
        Vector {
            id_a: "server",
            id_b: "client",
            w: "2ee57912099d31560b3a44b1184b9b4866e904c49d12ac5042c97dca461b1a5f",
            x: "43dd0fd7215bdcb482879fca3220c6a968e66d70b1356cac18bb26c84a78d729",
            y: "dcb60106f276b02606d8ef0a328c02e4b629f84f89786af5befb0bc75b6e66be",
            p_a: "04a56fa807caaa53a4d28dbb9853b9815c61a411118a6fe516a8798434751470f9010153ac33d0d5f2047ffdb1a3e42c9b4e6be662766e1eeb4116988ede5f912c",
            p_b: "0406557e482bd03097ad0cbaa5df82115460d951e3451962f1eaf4367a420676d09857ccbc522686c83d1852abfa8ed6e4a1155cf8f1543ceca528afb591a1e0b7",
            hash_tt: "0e0672dc86f8e45565d338b0540abe6915bdf72e2b35b5c9e5663168e960a91b",
            mac_a: "58ad4aa88e0b60d5061eb6b5dd93e80d9c4f00d127c65b3b35b1b5281fee38f0",
            mac_b: "d3e2e547f1ae04f2dbdbf0fc4b79f8ecff2dff314b5d32fe9fcef2fb26dc459b",
        },
        Vector {
            id_a: "",
            id_b: "client",
            w: "0548d8729f730589e579b0475a582c1608138ddf7054b73b5381c7e883e2efae",
            x: "403abbe3b1b4b9ba17e3032849759d723939a27a27b9d921c500edde18ed654b",
            y: "903023b6598908936ea7c929bd761af6039577a9c3f9581064187c3049d87065",
            p_a: "04a897b769e681c62ac1c2357319a3d363f610839c4477720d24cbe32f5fd85f44fb92ba966578c1b712be6962498834078262caa5b441ecfa9d4a9485720e918a",
            p_b: "04e0f816fd1c35e22065d5556215c097e799390d16661c386e0ecc84593974a61b881a8c82327687d0501862970c64565560cb5671f696048050ca66ca5f8cc7fc",
            hash_tt: "642f05c473c2cd79909f9a841e2f30a70bf89b18180af97353ba198789c2b963",
            mac_a: "47d29e6666af1b7dd450d571233085d7a9866e4d49d2645e2df975489521232b",
            mac_b: "3313c5cefc361d27fb16847a91c2a73b766ffa90a4839122a9b70a2f6bd1d6df",
        },
        Vector {
            id_a: "server",
            id_b: "",
            w: "626e0cdc7b14c9db3e52a0b1b3a768c98e37852d5db30febe0497b14eae8c254",
            x: "07adb3db6bc623d3399726bfdbfd3d15a58ea776ab8a308b00392621291f9633",
            y: "b6a4fc8dbb629d4ba51d6f91ed1532cf87adec98f25dd153a75accafafedec16",
            p_a: "04f88fb71c99bfffaea370966b7eb99cd4be0ff1a7d335caac4211c4afd855e2e15a873b298503ad8ba1d9cbb9a392d2ba309b48bfd7879aefd0f2cea6009763b0",
            p_b: "040c269d6be017dccb15182ac6bfcd9e2a14de019dd587eaf4bdfd353f031101e7cca177f8eb362a6e83e7d5e729c0732e1b528879c086f39ba0f31a9661bd34db",
            hash_tt: "005184ff460da2ce59062c87733c299c3521297d736598fc0a1127600efa1afb",
            mac_a: "bc9f9bbe99f26d0b2260e6456e05a86196a3307ec6663a18bf6ac825736533b2",
            mac_b: "c2370e1bf813b086dff0d834e74425a06e6390f48f5411900276dcccc5a297ec",
        },
        Vector {
            id_a: "",
            id_b: "",
            w: "7bf46c454b4c1b25799527d896508afd5fc62ef4ec59db1efb49113063d70cca",
            x: "8cef65df64bb2d0f83540c53632de911b5b24b3eab6cc74a97609fd659e95473",
            y: "d7a66f64074a84652d8d623a92e20c9675c61cb5b4f6a0063e4648a2fdc02d53",
            p_a: "04a65b367a3f613cf9f0654b1b28a1e3a8a40387956c8ba6063e8658563890f46ca1ef6a676598889fc28de2950ab8120b79a5ef1ea4c9f44bc98f585634b46d66",
            p_b: "04589f13218822710d98d8b2123a079041052d9941b9cf88c6617ddb2fcc0494662eea8ba6b64692dc318250030c6af045cb738bc81ba35b043c3dcb46adf6f58d",
            hash_tt: "fc6374762ba5cf11f4b2caa08b2cd1b9907ae0e26e8d6234318d91583cd74c86",
            mac_a: "dfb4db8d48ae5a675963ea5e6c19d98d4ea028d8e898dad96ea19a80ade95dca",
            mac_b: "d0f0609d1613138d354f7e95f19fb556bf52d751947241e8c7118df5ef0ae175",
        },
    ];

    #[test]
    fn reproduces_the_rfc_9382_p256_test_vectors() {
        for v in &VECTORS {
            let a = Spake2::with_secret(Role::A, scalar(v.w), scalar(v.x), v.id_a.as_bytes(), v.id_b.as_bytes());
            let b = Spake2::with_secret(Role::B, scalar(v.w), scalar(v.y), v.id_a.as_bytes(), v.id_b.as_bytes());
            assert_eq!(to_hex(a.share()), v.p_a);
            assert_eq!(to_hex(b.share()), v.p_b);
            let (share_a, share_b) = (*a.share(), *b.share());
            let keys_a = a.finish(&share_b).unwrap();
            let keys_b = b.finish(&share_a).unwrap();
            assert_eq!(to_hex(&keys_a.transcript_hash), v.hash_tt);
            assert_eq!(to_hex(&keys_a.ke), &v.hash_tt[..32]);
            assert_eq!(to_hex(&keys_a.confirmation()), v.mac_a);
            assert_eq!(to_hex(&keys_b.confirmation()), v.mac_b);
            keys_a.verify_peer(&keys_b.confirmation()).unwrap();
            keys_b.verify_peer(&keys_a.confirmation()).unwrap();
        }
    }

    fn run(code_a: &str, code_b: &str) -> (Keys, Keys) {
        let a = Spake2::start(Role::A, password_scalar(code_a), b"alice", b"bob");
        let b = Spake2::start(Role::B, password_scalar(code_b), b"alice", b"bob");
        let (share_a, share_b) = (*a.share(), *b.share());
        (a.finish(&share_b).unwrap(), b.finish(&share_a).unwrap())
    }

    #[test]
    fn the_same_code_gives_the_same_key_and_confirms() {
        let (a, b) = run("123456", "123456");
        assert_eq!(a.ke, b.ke);
        a.verify_peer(&b.confirmation()).unwrap();
        b.verify_peer(&a.confirmation()).unwrap();
    }

    #[test]
    fn a_wrong_code_fails_confirmation() {
        let (a, b) = run("123456", "123457");
        assert_ne!(a.ke, b.ke);
        assert_eq!(a.verify_peer(&b.confirmation()), Err(Spake2Error::ConfirmationFailed));
        assert_eq!(b.verify_peer(&a.confirmation()), Err(Spake2Error::ConfirmationFailed));
    }

    #[test]
    fn a_tampered_transcript_fails_confirmation() {
        let w = password_scalar("424242");
        // The identities are part of the transcript: B believing it talks to someone else fails.
        let a = Spake2::start(Role::A, w, b"alice", b"bob");
        let b = Spake2::start(Role::B, w, b"mallory", b"bob");
        let (share_a, share_b) = (*a.share(), *b.share());
        let (keys_a, keys_b) = (a.finish(&share_b).unwrap(), b.finish(&share_a).unwrap());
        assert!(keys_a.verify_peer(&keys_b.confirmation()).is_err());
        // A replaced message (a fresh run's share) fails as well.
        let a = Spake2::start(Role::A, w, b"alice", b"bob");
        let b = Spake2::start(Role::B, w, b"alice", b"bob");
        let other = Spake2::start(Role::A, w, b"alice", b"bob");
        let share_b = *b.share();
        let keys_a = a.finish(&share_b).unwrap();
        let keys_b = b.finish(other.share()).unwrap();
        assert!(keys_a.verify_peer(&keys_b.confirmation()).is_err());
    }

    #[test]
    fn invalid_points_are_refused() {
        let a = Spake2::start(Role::A, password_scalar("1"), b"", b"");
        let mut garbage = [0xffu8; 65];
        garbage[0] = 4;
        assert!(matches!(a.finish(&garbage), Err(Spake2Error::InvalidPoint)));
        let a = Spake2::start(Role::A, password_scalar("1"), b"", b"");
        assert!(matches!(a.finish(&[0u8]), Err(Spake2Error::InvalidPoint)));
        // pB = w·N makes K the identity: refused.
        let w = password_scalar("1");
        let a = Spake2::start(Role::A, w, b"", b"");
        assert!(matches!(a.finish(&encode(&(point(N) * w))), Err(Spake2Error::InvalidPoint)));
    }
}
