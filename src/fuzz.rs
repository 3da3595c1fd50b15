//! Test inputs for the parsers of peer-supplied strings (unit tests only).
//!
//! Every parser that sees text from the network is run over many generated inputs: a fixed set
//! of awkward strings, mutations of a valid example at every byte position (non-ASCII characters
//! that straddle the positions a parser might slice at, NUL, separators, truncation) and random
//! strings and bytes. A panic fails the test; each test also checks what the parser accepted.
//! The generator is seeded, so a failure is reproducible; no fuzzing crate is needed for this.

/// Multi-byte and otherwise awkward characters, one of each UTF-8 length and a few specials.
const ODD: &[&str] = &[
    "é",
    "ß",
    "€",
    "ह",
    "🙂",
    "\u{0}",
    "\u{7f}",
    "\u{85}",
    "\u{200b}",
    "\u{202e}",
    "\u{feff}",
    "\u{fffd}",
    "\u{10ffff}",
    "\r\n",
    "\t",
    " ",
    "%",
    "%2F",
    "%00",
    "/",
    "\\",
    "..",
    ":",
    "-",
    "_",
    ".",
    "\"",
    "'",
    "{",
    "}",
    "[",
    "]",
    "$(",
    "`",
    "\n",
    "#",
    ";",
    "&",
    "|",
    "<",
    ">",
    "*",
    "?",
    "=",
    "+",
    "@",
    "0",
    "9",
    "a",
    "f",
    "g",
    "A",
    "F",
    "Z",
];

/// A small deterministic generator (xorshift64*): reproducible inputs, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Awkward strings for any parser: empty, blank, control characters, non-ASCII, lengths around
/// common limits, and very long ones.
pub(crate) fn awkward() -> Vec<String> {
    let mut out: Vec<String> = ["", " ", "\0", "-", "--", ":", "::", "/", "..", "%", "%zz", "\u{fffd}", "é", "🙂🙂🙂"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for odd in ODD {
        out.push(odd.repeat(3));
    }
    for len in [1, 4, 5, 6, 7, 8, 9, 31, 32, 33, 35, 36, 37, 63, 64, 65, 100, 101, 253, 254, 1024, 1025, 70_000] {
        out.push("a".repeat(len));
        out.push("é".repeat(len / 2 + 1));
        out.push(format!("{}é", "a".repeat(len.saturating_sub(1))));
    }
    out.push("x".repeat(2 * 1024 * 1024));
    out
}

/// `valid` and strings near it: every truncation, and at every byte position a replaced or
/// inserted awkward character, so a parser that slices by bytes meets a character boundary
/// problem wherever it slices.
pub(crate) fn around(valid: &str) -> Vec<String> {
    let mut out = vec![valid.to_string(), valid.repeat(2), format!("{valid}\0"), format!(" {valid} ")];
    let bytes = valid.as_bytes();
    for at in 0..=bytes.len() {
        out.push(String::from_utf8_lossy(&bytes[..at]).into_owned());
        out.push(String::from_utf8_lossy(&bytes[at..]).into_owned());
        for odd in ODD {
            let (head, tail) = (String::from_utf8_lossy(&bytes[..at]), String::from_utf8_lossy(&bytes[at..]));
            out.push(format!("{head}{odd}{tail}"));
            let rest = bytes.get(at + 1..).map(String::from_utf8_lossy).unwrap_or_default();
            out.push(format!("{head}{odd}{rest}"));
        }
    }
    out
}

/// `count` random strings: awkward pieces and characters of `alphabet` mixed, up to a few
/// hundred bytes, plus random bytes read as (lossy) UTF-8.
pub(crate) fn random(seed: u64, count: usize, alphabet: &str) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let letters: Vec<String> = alphabet.chars().map(String::from).collect();
    let letters: Vec<&str> = letters.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let len = match rng.below(10) {
            0 => rng.below(2000),
            _ => rng.below(60),
        };
        let text = if i % 5 == 0 {
            let raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            String::from_utf8_lossy(&raw).into_owned()
        } else {
            let mut text = String::new();
            for _ in 0..len {
                let piece = if letters.is_empty() || rng.below(4) == 0 { rng.pick(ODD) } else { rng.pick(&letters) };
                text.push_str(piece);
            }
            text
        };
        out.push(text);
    }
    out
}

/// Everything above for one parser: awkward strings, strings around each valid example, and
/// `count` random strings over `alphabet` (the characters the format is made of).
pub(crate) fn inputs(valid: &[&str], alphabet: &str, seed: u64, count: usize) -> Vec<String> {
    let mut out = awkward();
    for example in valid {
        out.extend(around(example));
    }
    out.extend(random(seed, count, alphabet));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node ids, addresses, host names, display texts and capabilities: handshakes, mDNS TXT
    /// records, `POST /peers` bodies, pairing offers.
    #[test]
    fn peer_fields_are_judged_without_panicking() {
        use crate::peers::{check_address, check_capabilities, check_name, check_node_id, check_text, Announced};
        let valid = ["9d48d4d4-a2c2-4b34-8b2a-14ec07805e65", "10.0.0.2", "[fe80::1]", "box.lan", "linux", "ai-tasks"];
        for text in inputs(&valid, "0123456789abcdef-.:[]ABCz", 21, 20_000) {
            if check_node_id("f", &text).is_ok() {
                assert!(text.is_ascii() && text.len() == 36, "{text:?}");
            }
            if let Ok(address) = check_address("f", &text) {
                assert!(
                    address.parse::<std::net::IpAddr>().is_ok() || crate::peers::is_host_name(&address),
                    "{text:?}"
                );
            }
            if check_text("f", &text, 253).is_ok() {
                assert!(!text.chars().any(char::is_control) && text.chars().count() <= 253, "{text:?}");
            }
            if check_name("f", &text).is_ok() {
                assert!(text.is_ascii() && !text.contains('/'), "{text:?}");
            }
            let _ = check_capabilities("f", std::slice::from_ref(&text));
            let announced = Announced {
                node_id: text.clone(),
                hostname: text.clone(),
                address: text.clone(),
                port: 1,
                platform: text.clone(),
                version: text.clone(),
                capabilities: vec![text.clone()],
            };
            let _ = announced.validate();
            // `to` of a message, `peer` of a status query: how a caller names a registry peer.
            let mut peer = crate::peers::Peer::manual("10.0.0.2", 19532);
            peer.name = Some("bob".into());
            if let crate::resolve::Found::One(found) = crate::resolve::find(&[peer.clone()], &text) {
                assert_eq!(found, peer);
            }
            let _ = crate::resolve::parse(&text);
        }
    }

    /// Context keys (path segments, percent-decoded), TTLs, `X-Loopsy-Node-Id`.
    #[test]
    fn context_keys_and_ttls_are_judged_without_panicking() {
        let valid = ["inbox%3Abob%3A1-a-00ff", "%E2%9C%93", "ack:bob", "3600", "0.5", "1e10"];
        for text in inputs(&valid, "%0123456789abcdefABCDEF:/.-e+", 22, 20_000) {
            if let Some(decoded) = crate::percent::decode(&text) {
                if !text.contains('%') {
                    assert_eq!(decoded, text);
                }
                let checked = crate::store::check_key(&decoded);
                assert_eq!(checked.is_ok(), (1..=crate::store::MAX_KEY_BYTES).contains(&decoded.len()));
            }
            if let Ok(number) = serde_json::from_str::<serde_json::Number>(&text) {
                if let Ok(Some(ttl)) = crate::store::Ttl::parse(Some(&number)) {
                    assert!(ttl.millis >= 1 && ttl.millis <= (crate::store::MAX_TTL_SECS * 1000.0) as u64 + 1);
                }
            }
        }
    }

    /// Upload ids, modes, declared checksums, `Range` headers and requested paths.
    #[test]
    fn transfer_fields_are_judged_without_panicking() {
        use crate::transfer::{parse_sha256, part_path, policy::PathPolicy, pull::parse_range, push};
        let policy = PathPolicy::new(&[], &["/etc".into()]);
        let valid = ["abcd-1234_XY", "0644", &"ab".repeat(32), "bytes=0-9", "bytes=-5", "/tmp/a b/c.txt"];
        for text in inputs(&valid, "/.abc-_=0123456789bytes,", 23, 20_000) {
            if let Ok(id) = push::parse_upload_id(&text) {
                let part = part_path(std::path::Path::new("/dir/file"), &id);
                assert_eq!(part.parent(), Some(std::path::Path::new("/dir")), "{text:?}");
            }
            if let Ok(mode) = push::parse_mode(&text) {
                assert!(mode <= 0o777);
            }
            if let Ok(sum) = parse_sha256(&text) {
                assert_eq!(sum.len(), 64);
            }
            for size in [0, 1, 10, u64::MAX] {
                if let Ok(Some((first, last))) = parse_range(&text, size) {
                    assert!(first <= last && last < size, "{text:?} of {size}");
                }
            }
            if text.len() < 5000 {
                if let Ok(path) = policy.check(&text) {
                    assert!(path.is_absolute() && !path.starts_with("/etc"), "{text:?}");
                }
                let _ = part_path(std::path::Path::new(&text), "abcdefgh");
            }
        }
    }

    /// Dashboard targets and proxied paths, `Host`, `Origin` and `Cookie` headers, bearer keys,
    /// session names.
    #[test]
    fn dashboard_and_header_fields_are_judged_without_panicking() {
        use crate::dashboard::{origin, targets};
        let names = origin::HostNames::new(&["box".into()]);
        let valid = ["peer:9d48d4d4-a2c2-4b34-8b2a-14ec07805e65", "session:w1", "/api/v1/context/k", "[::1]:19532"];
        for text in inputs(&valid, "/:%.[]abc19-", 24, 20_000) {
            if let Ok(targets::TargetId::Session(name)) = targets::TargetId::parse(&text) {
                assert!(!name.as_str().contains('/') && name.as_str() != "..");
            }
            for method in ["GET", "PUT", "POST", "DELETE"] {
                if targets::forwardable(method, &text) {
                    assert!(text.starts_with("/api/v1/") && !text.contains("/../"), "{text:?}");
                }
                let _ = targets::is_event_stream(method, &text);
            }
            let _ = names.allows(&text, || vec!["192.168.1.2".parse().unwrap()]);
            let _ = origin::origin_matches(&text, false, &text);
            let _ = origin::find_cookie(&text, "loopsy_dashboard_1");
            let _ = crate::daemon::guard::bearer_key(Some(&text));
            if let Ok(name) = crate::sessions::SessionName::parse(&text) {
                assert!(!name.as_str().contains('/') && name.as_str() != "..");
            }
        }
    }

    #[test]
    fn the_inputs_reach_every_byte_position_with_multi_byte_characters() {
        let around = around("1-a-00ff");
        for at in 0..=8 {
            assert!(around.iter().any(|s| s.get(at..).is_some_and(|rest| rest.starts_with('🙂'))), "at {at}");
        }
        assert_eq!(random(7, 50, "ab"), random(7, 50, "ab"), "seeded: reproducible");
        assert!(awkward().iter().any(|s| s.len() > 1024 * 1024));
    }
}
