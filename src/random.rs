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
    uuid_from(bytes(16).try_into().expect("16 bytes"))
}

/// Like [`uuid_v4`], from a per-thread buffer of OS random bytes refilled with one `getrandom`
/// every [`BUFFERED_IDS`] ids: for the request id every request gets (a system call per
/// request otherwise). Just as random; only for ids that are not secrets.
pub(crate) fn request_uuid() -> String {
    use std::cell::RefCell;
    thread_local! {
        static BUFFER: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }
    let b = BUFFER.with_borrow_mut(|(buf, used)| {
        if *used + 16 > buf.len() {
            *buf = bytes(16 * BUFFERED_IDS);
            *used = 0;
        }
        let id: [u8; 16] = buf[*used..*used + 16].try_into().expect("16 bytes");
        // Each id's bytes are handed out once.
        buf[*used..*used + 16].fill(0);
        *used += 16;
        id
    });
    uuid_from(b)
}

/// Ids drawn from one refill of the buffer of [`request_uuid`].
const BUFFERED_IDS: usize = 256;

fn uuid_from(mut b: [u8; 16]) -> String {
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
    fn request_uuids_have_the_wire_format_and_do_not_repeat_across_refills() {
        let ids: Vec<String> = (0..3 * BUFFERED_IDS + 5).map(|_| request_uuid()).collect();
        for id in &ids {
            assert_eq!(id.len(), 36);
            assert_eq!((&id[14..15], id.matches('-').count()), ("4", 4));
            assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
