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
    ///
    /// Each `sendfile` call runs on the blocking pool: it reads the file, which may be on a slow
    /// or hung disk, and the daemon's one executor thread must not wait for that. A file system
    /// that cannot send files this way gets the rest through `writer`, read in chunks.
    #[cfg(target_os = "linux")]
    pub(crate) async fn send(
        &self,
        socket: &Arc<Async<std::net::TcpStream>>,
        writer: &mut (impl futures_lite::AsyncWrite + Unpin),
        idle: Duration,
    ) -> io::Result<()> {
        let (mut offset, end) = (self.offset, self.offset + self.length);
        while offset < end {
            // The closure holds the socket and the file, so neither descriptor can be closed
            // (and its number reused) while a call runs, even if this future is dropped.
            let (socket_held, file) = (socket.clone(), self.file.clone());
            let count = (end - offset).min(MOST_PER_CALL) as usize;
            let sent = blocking::unblock(move || sendfile_once(&socket_held, &file, offset, count)).await;
            match sent {
                Ok(0) => {
                    let message = format!("the file ended {} bytes early", end - offset);
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
                }
                Ok(n) => {
                    offset += n as u64;
                    if n < count {
                        // The send buffer is full: wait for room rather than ask again.
                        writable(socket, idle).await?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(socket, idle).await?,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) => {
                    log::debug!("sendfile refused ({e}); sending the rest of the file by reading it");
                    return self.copy(offset, end, writer).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Bytes `offset..end` of the file through `writer`, read on the blocking pool in chunks.
    #[cfg(target_os = "linux")]
    async fn copy(
        &self,
        mut offset: u64,
        end: u64,
        writer: &mut (impl futures_lite::AsyncWrite + Unpin),
    ) -> io::Result<()> {
        use futures_lite::AsyncWriteExt;
        use std::os::unix::fs::FileExt;
        const CHUNK: u64 = 256 * 1024;
        while offset < end {
            let file = self.file.clone();
            let want = (end - offset).min(CHUNK) as usize;
            let chunk = blocking::unblock(move || {
                let mut chunk = vec![0u8; want];
                let n = file.read_at(&mut chunk, offset)?;
                chunk.truncate(n);
                Ok::<_, io::Error>(chunk)
            })
            .await?;
            if chunk.is_empty() {
                let message = format!("the file ended {} bytes early", end - offset);
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
            }
            writer.write_all(&chunk).await?;
            offset += chunk.len() as u64;
        }
        writer.flush().await
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) async fn send(
        &self,
        _socket: &Arc<Async<std::net::TcpStream>>,
        _writer: &mut (impl futures_lite::AsyncWrite + Unpin),
        _idle: Duration,
    ) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "sendfile is used on Linux only"))
    }
}

/// At most this much per call, so the offset stays exact in `off_t` arithmetic.
#[cfg(target_os = "linux")]
const MOST_PER_CALL: u64 = 1 << 30;

/// One `sendfile(2)` of up to `count` bytes of `file` from `offset` to `socket` (non-blocking:
/// it sends what fits in the socket's buffer).
#[cfg(target_os = "linux")]
fn sendfile_once(socket: &Async<std::net::TcpStream>, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut at = offset as libc::off_t;
    // SAFETY: sendfile(2) on two open descriptors the caller holds, with a valid offset pointer;
    // it reads no memory of ours but `at`.
    let sent = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut at, count) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Waits until `socket` has room to write, at most `idle`.
#[cfg(target_os = "linux")]
async fn writable(socket: &Async<std::net::TcpStream>, idle: Duration) -> io::Result<()> {
    match crate::clock::timeout(idle, socket.writable()).await {
        Some(ready) => ready,
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")),
    }
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

    #[test]
    fn a_range_arrives_exactly_through_a_full_socket_buffer() {
        let (file, data, path) = file_of(8 << 20);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
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
        let socket = Arc::new(Async::new(server).unwrap());
        let mut writer = Vec::new();
        smol::block_on(body.send(&socket, &mut writer, Duration::from_secs(10))).unwrap();
        drop(socket);
        let received = reader.join().unwrap();
        assert!(writer.is_empty(), "nothing went the fallback way");
        assert!(received == data[12_345..12_345 + (7 << 20) + 3], "{} bytes arrived", received.len());
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
