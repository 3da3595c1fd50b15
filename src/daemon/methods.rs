//! Request methods the HTTP parser does not know (`QUERY`, `FOO`) still get an answer.
//!
//! async-h1 refuses a method http-types has no variant for by failing the whole decode, so the
//! connection would close without a word. [`MethodGate`] sits between the connection and the
//! decoder: at the start of each request head it reads the method token, and when the token is
//! a well-formed method that http-types does not know, it hands the decoder `PRI` instead (a
//! method no route is ever mounted for) and remembers the real one. The listener puts that on
//! the request as [`UnknownMethod`], so the request runs through the ordinary middleware (audit
//! log, guard, error rendering) and the routes' fallbacks answer 405 (the path exists) or 501,
//! with the body read as usual, so the connection stays usable.

use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_lite::io::{self, AsyncRead, AsyncWrite};

/// The method a client sent that http-types does not know; on the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownMethod(pub String);

/// The stand-in method the decoder sees for an unknown one.
pub(crate) const STAND_IN: &str = "PRI";

/// The longest method token looked at; a longer first word passes through (and fails to parse).
const MAX_TOKEN: usize = 32;

/// Wraps a connection's IO; cloned for the decoder like the IO itself.
#[derive(Clone)]
pub(crate) struct MethodGate<IO> {
    io: IO,
    state: Arc<Mutex<Gate>>,
}

#[derive(Default)]
struct Gate {
    /// The next read starts a request head.
    armed: bool,
    /// Bytes read from the connection while looking for the method token.
    lookahead: Vec<u8>,
    /// Bytes to hand out before reading the connection again.
    pending: Vec<u8>,
    unknown: Option<String>,
}

impl<IO> MethodGate<IO> {
    pub(crate) fn new(io: IO) -> MethodGate<IO> {
        MethodGate { io, state: Arc::default() }
    }

    /// A request head starts with the next byte read.
    pub(crate) fn arm(&self) {
        let mut gate = self.state.lock().expect("method gate lock");
        gate.armed = true;
        gate.unknown = None;
    }

    /// The method the last head really had, if the decoder was handed the stand-in.
    pub(crate) fn take_unknown(&self) -> Option<UnknownMethod> {
        self.state.lock().expect("method gate lock").unknown.take().map(UnknownMethod)
    }
}

/// What to do with the bytes seen so far at the start of a head.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// More bytes are needed to see the whole token.
    NeedMore,
    /// Hand the bytes on as they are.
    Pass,
    /// Hand on the stand-in and the rest; the token was this.
    Replace { token: String, at: usize, len: usize },
}

/// Judges the start of a request head: a `token SP` whose token is a method http-types does
/// not know is replaced. Empty lines before the request line are skipped, as HTTP allows.
fn judge(head: &[u8], at_end: bool) -> Verdict {
    let start = head.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(head.len());
    let rest = &head[start..];
    let Some(space) = rest.iter().position(|b| *b == b' ') else {
        return if at_end || rest.len() > MAX_TOKEN || rest.iter().any(|b| !is_tchar(*b)) {
            Verdict::Pass
        } else {
            Verdict::NeedMore
        };
    };
    let token = &rest[..space];
    if token.is_empty() || token.len() > MAX_TOKEN || !token.iter().all(|b| is_tchar(*b)) {
        return Verdict::Pass;
    }
    let token = String::from_utf8_lossy(token).into_owned();
    if tide::http::Method::from_str(&token).is_ok() {
        return Verdict::Pass;
    }
    Verdict::Replace { len: token.len(), token, at: start }
}

/// RFC 9110's `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl<IO: AsyncRead + Unpin> AsyncRead for MethodGate<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut gate = this.state.lock().expect("method gate lock");
        loop {
            if !gate.pending.is_empty() {
                let n = gate.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&gate.pending[..n]);
                gate.pending.drain(..n);
                return Poll::Ready(Ok(n));
            }
            if !gate.armed {
                drop(gate);
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            // Straight into the reader's buffer: a head that passes (nearly all) costs one read,
            // not a small one for the token and another for the rest.
            let n = match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let seen = if gate.lookahead.is_empty() {
                &buf[..n]
            } else {
                gate.lookahead.extend_from_slice(&buf[..n]);
                &gate.lookahead[..]
            };
            match judge(seen, n == 0) {
                Verdict::NeedMore => {
                    if gate.lookahead.is_empty() {
                        gate.lookahead.extend_from_slice(&buf[..n]);
                    }
                }
                Verdict::Pass if gate.lookahead.is_empty() => {
                    gate.armed = false;
                    return Poll::Ready(Ok(n));
                }
                Verdict::Pass => {
                    gate.armed = false;
                    gate.pending = std::mem::take(&mut gate.lookahead);
                    if gate.pending.is_empty() {
                        return Poll::Ready(Ok(0));
                    }
                }
                Verdict::Replace { token, at, len } => {
                    gate.armed = false;
                    let seen = match std::mem::take(&mut gate.lookahead) {
                        lookahead if lookahead.is_empty() => buf[..n].to_vec(),
                        lookahead => lookahead,
                    };
                    let mut replaced = Vec::with_capacity(seen.len());
                    replaced.extend_from_slice(&seen[..at]);
                    replaced.extend_from_slice(STAND_IN.as_bytes());
                    replaced.extend_from_slice(&seen[at + len..]);
                    gate.pending = replaced;
                    gate.unknown = Some(token);
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for MethodGate<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::io::AsyncReadExt;

    #[test]
    fn unknown_method_tokens_are_replaced_and_everything_else_passes() {
        assert_eq!(judge(b"GET / HTTP/1.1\r\n", false), Verdict::Pass);
        assert_eq!(judge(b"TRACE / HTTP/1.1\r\n", false), Verdict::Pass);
        assert_eq!(judge(b"PROPFIND / HTTP/1.1\r\n", false), Verdict::Pass);
        assert_eq!(judge(b"QUERY / HTTP/1.1\r\n", false), Verdict::Replace { token: "QUERY".into(), at: 0, len: 5 });
        assert_eq!(judge(b"\r\nFOO-BAR /x", false), Verdict::Replace { token: "FOO-BAR".into(), at: 2, len: 7 });
        assert_eq!(judge(b"QUE", false), Verdict::NeedMore);
        assert_eq!(judge(b"QUE", true), Verdict::Pass);
        assert_eq!(judge(b"", true), Verdict::Pass);
        assert_eq!(judge(b"\x16\x03\x01", false), Verdict::Pass, "not a token: the decoder says so");
        assert_eq!(judge(b"QU(RY / HTTP/1.1", false), Verdict::Pass);
        assert_eq!(judge(&[b'A'; 40], false), Verdict::Pass, "too long to be a method we would name");
        assert_eq!(judge(b" / HTTP/1.1", false), Verdict::Pass);
    }

    #[test]
    fn the_gate_rewrites_only_armed_heads_and_loses_no_byte() {
        smol::block_on(async {
            let input = b"QUERY /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcQUERY /b HTTP/1.1\r\n\r\n".to_vec();
            let gate = MethodGate::new(futures_lite::io::Cursor::new(input));
            gate.arm();
            let mut reader = gate.clone();
            let mut head = vec![0u8; 42];
            reader.read_exact(&mut head).await.unwrap();
            assert_eq!(&head, b"PRI /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcQ");
            assert_eq!(gate.take_unknown(), Some(UnknownMethod("QUERY".into())));
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).await.unwrap();
            assert_eq!(&rest, b"UERY /b HTTP/1.1\r\n\r\n", "not armed: passed through");
            assert_eq!(gate.take_unknown(), None);
        });
    }

    /// Hands out at most `step` bytes per read, like a socket that delivers a head in pieces (only the
    /// reading clone is read; the gate's own copy is never).
    #[derive(Clone)]
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn a_head_read_whole_or_in_pieces_is_judged_alike() {
        let input = b"\r\nQUERY /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        let expected = b"\r\nPRI /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        for (step, reader_buf) in [(1, 1), (1, 8192), (3, 2), (4096, 1), (4096, 5), (4096, 8192)] {
            smol::block_on(async {
                let gate = MethodGate::new(Trickle { bytes: input.clone(), at: 0, step });
                gate.arm();
                let (mut reader, mut out, mut chunk) = (gate.clone(), Vec::new(), vec![0u8; reader_buf]);
                loop {
                    let n = reader.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&chunk[..n]);
                }
                assert_eq!(out, expected, "socket step {step}, reader buffer {reader_buf}");
                assert_eq!(gate.take_unknown(), Some(UnknownMethod("QUERY".into())));
            });
        }
        // A known method read in one piece is handed on untouched, in that same read.
        smol::block_on(async {
            let head = b"PUT /a HTTP/1.1\r\n\r\n".to_vec();
            let gate = MethodGate::new(Trickle { bytes: head.clone(), at: 0, step: 4096 });
            gate.arm();
            let mut chunk = vec![0u8; 8192];
            let n = gate.clone().read(&mut chunk).await.unwrap();
            assert_eq!(&chunk[..n], &head[..]);
            assert_eq!(gate.take_unknown(), None);
        });
    }

    #[test]
    fn the_gate_survives_hostile_first_bytes() {
        let valid = ["QUERY / HTTP/1.1\r\n\r\n", "GET /api/v1/health HTTP/1.1\r\n\r\n"];
        for input in crate::fuzz::inputs(&valid, "QUERYGETPOS /\r\n-", 0x6d65_7468, 3_000) {
            let input = input.into_bytes();
            smol::block_on(async {
                let gate = MethodGate::new(futures_lite::io::Cursor::new(input.clone()));
                gate.arm();
                let mut out = Vec::new();
                gate.clone().read_to_end(&mut out).await.unwrap();
                match gate.take_unknown() {
                    None => assert_eq!(out, input),
                    Some(UnknownMethod(token)) => {
                        assert!(out.len() + token.len() == input.len() + STAND_IN.len());
                    }
                }
            });
        }
    }
}
