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
            let mut chunk = [0u8; MAX_TOKEN + 8];
            let n = match Pin::new(&mut this.io).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            gate.lookahead.extend_from_slice(&chunk[..n]);
            match judge(&gate.lookahead, n == 0) {
                Verdict::NeedMore => continue,
                Verdict::Pass => {
                    gate.armed = false;
                    gate.pending = std::mem::take(&mut gate.lookahead);
                    if gate.pending.is_empty() {
                        return Poll::Ready(Ok(0));
                    }
                }
                Verdict::Replace { token, at, len } => {
                    gate.armed = false;
                    let seen = std::mem::take(&mut gate.lookahead);
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
