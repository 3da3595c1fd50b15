//! Percent-encoding (RFC 3986 §2.1) and decoding: the one implementation for path segments
//! (context keys, node ids, names), query values and header parameters.

/// Percent-encodes everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`), so `:`,
/// `/` and `%` travel inside one path segment or query value, as 1.0.21 expects.
pub(crate) fn encode(text: &str) -> String {
    encode_keeping(text, b"-._~")
}

/// Percent-encodes everything but ASCII letters, digits and the bytes of `keep` (for example
/// RFC 8187's `attr-char` for a header parameter).
pub(crate) fn encode_keeping(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays as it is); `None` if the
/// result is not UTF-8.
pub(crate) fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(high * 16 + low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_query_values_are_encoded() {
        assert_eq!(encode("inbox:bob:1"), "inbox%3Abob%3A1");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
        assert_eq!(encode("ok-._~9"), "ok-._~9");
        assert_eq!(encode("✓"), "%E2%9C%93");
        assert_eq!(encode("/a b/c&d=é"), "%2Fa%20b%2Fc%26d%3D%C3%A9");
        assert_eq!(encode_keeping("a b&c", b"&"), "a%20b&c");
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(decode("inbox%3Abob%3A1").unwrap(), "inbox:bob:1");
        assert_eq!(decode("a%2Fb").unwrap(), "a/b");
        assert_eq!(decode("100%").unwrap(), "100%");
        assert_eq!(decode("%zz").unwrap(), "%zz");
        assert_eq!(decode("%E2%9C%93").unwrap(), "✓");
        assert_eq!(decode("%FF"), None);
        for text in ["inbox:bob:1", "a/b c", "✓", "100%"] {
            assert_eq!(decode(&encode(text)).as_deref(), Some(text));
        }
    }
}
