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
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;

#[cfg(target_os = "linux")]
use crate::transfer::chunks::CHUNK;

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

    /// Sends the whole range to `socket`; a client that takes nothing for `idle` is given up on.
    /// A file that got shorter meanwhile is an error: the head promised its length, so the
    /// connection must close.
    ///
    /// The sending runs on the blocking pool, one task for the whole range (waiting for room in
    /// the socket's buffer with poll(2) there): `sendfile` reads the file, which may be on a slow
    /// or hung disk, and the daemon's one executor thread must not wait for that. A file system
    /// that cannot send files this way gets the rest through `writer`, read in chunks.
    pub(crate) async fn send(
        &self,
        socket: &Arc<Async<std::net::TcpStream>>,
        writer: &mut (impl futures_lite::AsyncWrite + Unpin),
        idle: Duration,
    ) -> io::Result<()> {
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (socket, writer, idle);
            Err(io::Error::new(io::ErrorKind::Unsupported, "sendfile is used on Linux only"))
        }
        #[cfg(target_os = "linux")]
        {
            // The task holds the socket and the file, so neither descriptor can be closed (and
            // its number reused) while it runs; it stops soon after this future is dropped.
            let abandoned = Arc::new(AtomicBool::new(false));
            let _abandon = Abandon(abandoned.clone());
            let (socket_held, file) = (socket.clone(), self.file.clone());
            let range = (self.offset, self.offset + self.length);
            let sent = blocking::unblock(move || send_range(&socket_held, &file, range, idle, &abandoned)).await;
            match sent {
                Ok(()) => Ok(()),
                Err(Stop::Refused { at, error }) => {
                    log::debug!("sendfile refused ({error}); sending the rest of the file by reading it");
                    self.copy(at, range.1, writer).await
                }
                Err(Stop::Failed(error)) => Err(error),
            }
        }
    }

    /// Bytes `from..end` of the file through `writer`, read as the pull route's reader body
    /// reads it (on the blocking pool, in chunks).
    #[cfg(target_os = "linux")]
    async fn copy(&self, from: u64, end: u64, writer: &mut (impl futures_lite::AsyncWrite + Unpin)) -> io::Result<()> {
        use futures_lite::AsyncWriteExt;
        use std::io::{Seek, SeekFrom};
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(from))?;
        let left = end - from;
        let reader = futures_lite::AsyncReadExt::take(blocking::Unblock::with_capacity(CHUNK, file), left);
        let copied = futures_lite::io::copy(reader, &mut *writer).await?;
        if copied < left {
            let message = format!("the file ended {} bytes early", left - copied);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
        }
        writer.flush().await
    }
}

/// At most this much per call, so the offset stays exact in `off_t` arithmetic.
#[cfg(target_os = "linux")]
const MOST_PER_CALL: u64 = 1 << 30;

/// How long one wait for room in the socket's buffer lasts before the sender looks again
/// whether it was abandoned or the client has been idle too long.
#[cfg(target_os = "linux")]
const POLL_SLICE_MS: libc::c_int = 100;

/// Tells a sending task that nobody waits for it any more.
#[cfg(target_os = "linux")]
struct Abandon(Arc<AtomicBool>);

#[cfg(target_os = "linux")]
impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Why [`send_range`] stopped early.
#[cfg(target_os = "linux")]
enum Stop {
    /// The file system does not do `sendfile`: bytes from `at` on are still to send.
    Refused {
        at: u64,
        error: io::Error,
    },
    Failed(io::Error),
}

/// Sends bytes `from..end` of `file` to the non-blocking `socket` with `sendfile(2)`, waiting
/// for room with poll(2). Blocking: runs on the blocking pool.
#[cfg(target_os = "linux")]
fn send_range(
    socket: &Async<std::net::TcpStream>,
    file: &File,
    (from, end): (u64, u64),
    idle: Duration,
    abandoned: &AtomicBool,
) -> Result<(), Stop> {
    use std::os::fd::AsRawFd;
    let mut offset = from;
    let mut progressed = std::time::Instant::now();
    while offset < end {
        if abandoned.load(Ordering::Relaxed) {
            return Err(Stop::Failed(io::Error::new(io::ErrorKind::Interrupted, "the connection was dropped")));
        }
        let mut at = offset as libc::off_t;
        let count = (end - offset).min(MOST_PER_CALL) as usize;
        // SAFETY: sendfile(2) on two open descriptors we hold, with a valid offset pointer; it
        // reads no memory of ours but `at`.
        let sent = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut at, count) };
        if sent > 0 {
            offset += sent as u64;
            progressed = std::time::Instant::now();
            continue;
        }
        if sent == 0 {
            let message = format!("the file ended {} bytes early", end - offset);
            return Err(Stop::Failed(io::Error::new(io::ErrorKind::UnexpectedEof, message)));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock if progressed.elapsed() >= idle => {
                return Err(Stop::Failed(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")));
            }
            io::ErrorKind::WouldBlock => {
                let mut room = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: poll(2) on one valid pollfd; an error or a timeout just means another
                // round of the loop, which checks everything again.
                unsafe { libc::poll(&mut room, 1, POLL_SLICE_MS) };
            }
            _ if matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) => {
                return Err(Stop::Refused { at: offset, error });
            }
            _ => return Err(Stop::Failed(error)),
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A temporary file holding `len` bytes of a known pattern.
    fn file_of(len: usize) -> (File, Vec<u8>, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("loopsy-sendfile-{}", crate::random::hex(6)));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
        (File::open(&path).unwrap(), data, path)
    }

    /// A connected pair on loopback: the client's end, and the server's end as the listener has it.
    fn loopback_pair() -> (std::net::TcpStream, Arc<Async<std::net::TcpStream>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, Arc::new(Async::new(server).unwrap()))
    }

    #[test]
    fn a_range_arrives_exactly_through_a_full_socket_buffer() {
        let (file, data, path) = file_of(8 << 20);
        let (client, socket) = loopback_pair();
        // A slow reader: the sender meets a full buffer (EAGAIN) many times.
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut client = client;
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = client.read(&mut buf).unwrap();
                if n == 0 {
                    return received;
                }
                received.extend_from_slice(&buf[..n]);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let body = FileBody::new(file, 12_345, (7 << 20) + 3);
        let mut writer = Vec::new();
        smol::block_on(body.send(&socket, &mut writer, Duration::from_secs(10))).unwrap();
        drop(socket);
        let received = reader.join().unwrap();
        assert!(writer.is_empty(), "nothing went the fallback way");
        assert!(received == data[12_345..12_345 + (7 << 20) + 3], "{} bytes arrived", received.len());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_client_that_stops_reading_is_given_up_on_after_the_idle_time() {
        let (file, _, path) = file_of(32 << 20);
        let (client, socket) = loopback_pair();
        let started = std::time::Instant::now();
        let body = FileBody::new(file, 0, 32 << 20);
        let error = smol::block_on(body.send(&socket, &mut Vec::new(), Duration::from_millis(300))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(started.elapsed() < Duration::from_secs(5), "gave up after {:?}", started.elapsed());
        drop(client);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_fallback_copies_the_rest_and_a_file_that_ended_early_is_an_error() {
        let (file, data, path) = file_of(600_000);
        let body = FileBody::new(file, 0, 600_000);
        let mut writer = Vec::new();
        smol::block_on(body.copy(1000, 600_000, &mut writer)).unwrap();
        assert!(writer == data[1000..], "{} bytes", writer.len());
        let short = FileBody::new(File::open(&path).unwrap(), 0, 700_000);
        let error = smol::block_on(short.copy(0, 700_000, &mut Vec::new())).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        std::fs::remove_file(path).unwrap();
    }
}
