//! Randomness from the operating system: keys, ids, request ids.
//!
//! Everything here comes from `getrandom` (the OS CSPRNG); there is no seeded generator.

/// `len` random bytes.
pub(crate) fn bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    buf
}

/// `len` random bytes as `2 * len` lowercase hex characters.
pub(crate) fn hex(len: usize) -> String {
    to_hex(&bytes(len))
}

/// A random UUID version 4 in its canonical 36-character form.
pub(crate) fn uuid_v4() -> String {
    let mut b = bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = to_hex(&b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A new API key: 32 random bytes as 64 lowercase hex characters (the 1.0.21 format).
pub(crate) fn api_key() -> String {
    hex(32)
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold back into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_uuids_have_the_wire_format() {
        let key = api_key();
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
