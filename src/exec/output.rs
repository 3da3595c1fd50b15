//! What happens to a job's output bytes on their way to the client: a byte cap per stream and
//! UTF-8 decoding that never splits a character across two chunks.
//!
//! Pure and synchronous; the pipes are read in `exec::run`.

/// Decodes a byte stream chunk by chunk. A character whose bytes straddle two chunks is held
/// back until it is complete; invalid bytes become U+FFFD, as `String::from_utf8_lossy` does.
#[derive(Debug, Default)]
pub(super) struct Utf8Decoder {
    /// The start of a character whose remaining bytes have not arrived (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// The text of `chunk`, plus any character completed by it.
    pub(super) fn push(&mut self, chunk: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(chunk);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked by from_utf8"));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            // An incomplete character at the end: wait for the next chunk.
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// The end of the stream: an incomplete character left over becomes U+FFFD.
    pub(super) fn finish(&mut self) -> String {
        let pending = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&pending).into_owned()
    }
}

/// Counts the bytes of one stream and lets through at most `limit` of them.
#[derive(Debug)]
pub(super) struct Cap {
    limit: u64,
    seen: u64,
}

impl Cap {
    pub(super) fn new(limit: u64) -> Cap {
        Cap { limit, seen: 0 }
    }

    /// The part of `chunk` that is within the cap.
    pub(super) fn admit<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let room = self.limit.saturating_sub(self.seen);
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        &chunk[..chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX))]
    }

    /// Whether bytes beyond the cap were dropped.
    pub(super) fn truncated(&self) -> bool {
        self.seen > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_chunks_stay_whole() {
        let text = "añ€😀z";
        let bytes = text.as_bytes();
        // Every way of cutting the bytes in two, and one byte at a time.
        for cut in 0..=bytes.len() {
            let mut decoder = Utf8Decoder::default();
            let out = decoder.push(&bytes[..cut]) + &decoder.push(&bytes[cut..]) + &decoder.finish();
            assert_eq!(out, text, "cut at {cut}");
        }
        let mut decoder = Utf8Decoder::default();
        let out: String = bytes.iter().map(|b| decoder.push(&[*b])).collect();
        assert_eq!(out + &decoder.finish(), text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut decoder = Utf8Decoder::default();
        assert_eq!(decoder.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(decoder.push(b"\xe2\x82"), "");
        assert_eq!(decoder.push(b"x"), "\u{fffd}x");
        assert_eq!(decoder.push(b"\xf0\x9f"), "");
        assert_eq!(decoder.finish(), "\u{fffd}");
    }

    #[test]
    fn the_cap_admits_up_to_the_limit_and_reports_truncation() {
        let mut cap = Cap::new(5);
        assert_eq!(cap.admit(b"abc"), b"abc");
        assert!(!cap.truncated());
        assert_eq!(cap.admit(b"de"), b"de");
        assert!(!cap.truncated(), "exactly the limit is not truncated");
        assert_eq!(cap.admit(b"fgh"), b"");
        assert!(cap.truncated());
        let mut cap = Cap::new(2);
        assert_eq!(cap.admit(b"xyz"), b"xy");
        assert!(cap.truncated());
    }
}
