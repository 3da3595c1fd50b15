//! A response body that is a range of an open file, sent from the page cache straight to a plain
//! TCP socket with `sendfile(2)` (Linux): one copy in the kernel instead of a read into our
//! memory and a write out of it.
//!
//! A route attaches a [`FileBody`] to a response that also has an ordinary reader body of the
//! same bytes; the listener sends the head and then the file with `sendfile` on a plain
//! connection, and uses the reader body everywhere else (TLS, which must encrypt in user space;
//! other platforms).

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;

/// `length` bytes of `file` from `offset`. Cheap to clone (responses' extensions must be).
#[derive(Debug, Clone)]
pub(crate) struct FileBody {
    file: Arc<File>,
    offset: u64,
    length: u64,
}

impl FileBody {
    pub(crate) fn new(file: File, offset: u64, length: u64) -> FileBody {
        FileBody { file: Arc::new(file), offset, length }
    }

    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    /// Whether this platform sends it with `sendfile` (else the reader body is used).
    pub(crate) const SUPPORTED: bool = cfg!(target_os = "linux");

    /// Sends the whole range to `socket`, waiting for room in its send buffer at most `idle`
    /// at a time. A file that got shorter meanwhile is an error: the head promised its length,
    /// so the connection must close.
    #[cfg(target_os = "linux")]
    pub(crate) async fn send(&self, socket: &Async<std::net::TcpStream>, idle: Duration) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        /// At most this much per call, so the offset stays exact in `off_t` arithmetic.
        const MOST: u64 = 1 << 30;
        let (mut offset, end) = (self.offset, self.offset + self.length);
        while offset < end {
            let mut at = offset as libc::off_t;
            let count = (end - offset).min(MOST) as usize;
            // SAFETY: sendfile(2) on two open descriptors we hold, with a valid offset pointer;
            // it reads no memory of ours but `at`.
            let sent = unsafe { libc::sendfile(socket.as_raw_fd(), self.file.as_raw_fd(), &mut at, count) };
            match sent {
                n if n > 0 => offset += n as u64,
                0 => {
                    let message = format!("the file ended {} bytes early", end - offset);
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
                }
                _ => {
                    let error = io::Error::last_os_error();
                    match error.kind() {
                        io::ErrorKind::Interrupted => {}
                        io::ErrorKind::WouldBlock => match crate::clock::timeout(idle, socket.writable()).await {
                            Some(ready) => ready?,
                            None => return Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")),
                        },
                        _ => return Err(error),
                    }
                }
            }
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) async fn send(&self, _socket: &Async<std::net::TcpStream>, _idle: Duration) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "sendfile is used on Linux only"))
    }
}
