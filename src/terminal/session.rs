//! One terminal session: a program on a PTY, its screen model and the clients attached to it.
//!
//! The pump task reads the PTY and, under the session's lock, feeds the screen and appends the
//! bytes to every client's queue (in the same order for all, resizes included), then rings
//! each client's doorbell. Clients' writers take their queues at their own pace; input from any
//! writing client goes straight to the PTY. The size is the smallest attached client's (tmux's
//! policy), so every client can show the whole screen.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::json;
use smol::channel::{Receiver, Sender};

use super::api::TerminalInfo;
use super::fanout::{Frame, Queue, Take};
use super::screen::Screen;
use crate::process::{Interactive, PtyIo};

/// What a session was started as; never changes.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub id: String,
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub started_by: String,
    pub created_at: u64,
    pub pid: u32,
}

/// Limits of one session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub client_buffer: usize,
    pub max_clients: usize,
}

/// A terminal session; cheap to clone.
#[derive(Clone)]
pub(crate) struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    spec: Spec,
    limits: Limits,
    master: Arc<async_io::Async<PtyIo>>,
    /// Writers take turns, so two clients' keystrokes never interleave inside one write.
    input: smol::lock::Mutex<()>,
    core: Mutex<Core>,
    /// Rung when a client takes its frames or leaves: the pump may read again.
    resume: (Sender<()>, Receiver<()>),
}

/// How long typed input may wait for the program to read it.
const INPUT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the pump waits for a backlogged client before it makes every client skip ahead.
const STALL_LIMIT: Duration = Duration::from_secs(1);
/// How long a full client that takes nothing may hold up clients ready for more.
const STALL_OTHERS: Duration = Duration::from_millis(250);
/// How often the paused pump looks for stalled clients.
const STALL_CHECK: Duration = Duration::from_millis(50);

struct Core {
    screen: Screen,
    clients: Vec<Client>,
    next_client: u64,
    /// Doorbells of `wait_screen` callers.
    watchers: Vec<Sender<()>>,
    exit: Option<i32>,
    exited_at: Option<u64>,
    last_active: u64,
}

struct Client {
    id: u64,
    size: (u16, u16),
    queue: Queue,
    doorbell: Sender<()>,
    /// When this client last took its frames.
    last_take: Instant,
    /// Attached while the alternate screen was in use: the normal screen under it was never
    /// sent, so it is repainted when the program leaves the alternate screen.
    repaint_normal: bool,
}

/// Why a session refused something.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("terminal '{0}' has exited")]
    Exited(String),
    #[error("terminal '{0}' already has {1} clients attached")]
    TooManyClients(String, usize),
    #[error("this client attached read-only")]
    ReadOnly,
    #[error("writing to terminal '{0}': {1}")]
    Io(String, std::io::Error),
    #[error("terminal '{0}' is not reading its input")]
    InputBlocked(String),
}

/// How a client attaches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttachOptions {
    pub cols: u16,
    pub rows: u16,
    pub read_only: bool,
}

impl Session {
    /// Wraps a started program and returns the session and its pump, which the owner keeps
    /// running until it ends (at the program's exit).
    pub(crate) fn start(
        spec: Spec,
        process: Interactive,
        size: (u16, u16),
        history_bytes: usize,
        limits: Limits,
    ) -> (Session, impl std::future::Future<Output = ()> + Send + 'static) {
        let (rows, cols) = size;
        let core = Core {
            screen: Screen::new(rows, cols, history_bytes),
            clients: Vec::new(),
            next_client: 1,
            watchers: Vec::new(),
            exit: None,
            exited_at: None,
            last_active: spec.created_at,
        };
        let inner = Arc::new(Inner {
            spec,
            limits,
            master: process.master,
            input: Default::default(),
            core: Mutex::new(core),
            resume: smol::channel::bounded(1),
        });
        let session = Session { inner: inner.clone() };
        (session.clone(), session.pump(process.exit))
    }

    pub(crate) fn id(&self) -> &str {
        &self.inner.spec.id
    }

    pub(crate) fn name(&self) -> &str {
        &self.inner.spec.name
    }

    pub(crate) fn pid(&self) -> u32 {
        self.inner.spec.pid
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        self.inner.core.lock().expect("terminal lock")
    }

    pub(crate) fn info(&self) -> TerminalInfo {
        let spec = &self.inner.spec;
        let core = self.core();
        let (rows, cols) = core.screen.size();
        TerminalInfo {
            id: spec.id.clone(),
            name: spec.name.clone(),
            command: spec.command.clone(),
            args: spec.args.clone(),
            cwd: spec.cwd.clone(),
            started_by: spec.started_by.clone(),
            created_at: spec.created_at,
            last_active_at: core.last_active,
            state: if core.exit.is_some() { "exited" } else { "running" }.into(),
            exit_code: core.exit,
            pid: spec.pid,
            cols,
            rows,
            clients: core.clients.len(),
            title: core.screen.title().map(String::from),
        }
    }

    /// When it exited and nobody is attached: since when it has been idle.
    pub(crate) fn idle_exited_since(&self) -> Option<u64> {
        let core = self.core();
        if core.clients.is_empty() {
            core.exited_at
        } else {
            None
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.core().exit.is_none()
    }

    /// Attaches a client: the size is recomputed with it, then it is sent a hello, the screen
    /// at the size in force and from then on the live output.
    pub(crate) fn attach(&self, options: AttachOptions) -> Result<Attachment, SessionError> {
        let mut core = self.core();
        if core.clients.len() >= self.inner.limits.max_clients {
            return Err(SessionError::TooManyClients(self.inner.spec.name.clone(), core.clients.len()));
        }
        let (doorbell, ring) = smol::channel::bounded(1);
        let id = core.next_client;
        core.next_client += 1;
        let repaint_normal = core.screen.alternate();
        core.clients.push(Client {
            id,
            size: (options.rows, options.cols),
            queue: Queue::new(self.inner.limits.client_buffer),
            doorbell,
            last_take: Instant::now(),
            repaint_normal,
        });
        // Resize first (the others are told), then serialise at the new size.
        self.apply_size(&mut core);
        let (rows, cols) = core.screen.size();
        let hello = json!({
            "type": "attached", "id": self.inner.spec.id, "name": self.inner.spec.name,
            "cols": cols, "rows": rows, "readOnly": options.read_only, "title": core.screen.title(),
        });
        let snapshot = core.screen.snapshot(true);
        let exit = core.exit;
        let client = core.clients.last_mut().expect("just pushed");
        client.queue.push(Frame::Control(hello));
        client.queue.push(Frame::Output(snapshot));
        if let Some(code) = exit {
            client.queue.push(Frame::End(exit_frame(code)));
        }
        let _ = client.doorbell.try_send(());
        Ok(Attachment { session: self.clone(), client: id, ring, read_only: options.read_only })
    }

    /// Writes bytes typed by someone to the program.
    pub(crate) async fn write(&self, bytes: &[u8]) -> Result<(), SessionError> {
        if !self.is_running() {
            return Err(SessionError::Exited(self.inner.spec.name.clone()));
        }
        let name = || self.inner.spec.name.clone();
        let writing = async {
            let _turn = self.inner.input.lock().await;
            let mut master = &*self.inner.master;
            master.write_all(bytes).await
        };
        // A program that does not read its input fills the terminal's buffer: give up instead of
        // hanging the caller.
        match crate::clock::timeout(INPUT_TIMEOUT, writing).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(SessionError::Io(name(), e)),
            None => return Err(SessionError::InputBlocked(name())),
        }
        self.core().last_active = crate::clock::now_ms();
        Ok(())
    }

    /// The screen as text, after waiting (at most `timeout`) until it contains `wait_for`, or
    /// until no output came for `quiet`. Returns the answer and whether `wait_for` was seen.
    pub(crate) async fn wait_screen(
        &self,
        wait_for: Option<&str>,
        quiet: Option<Duration>,
        timeout: Duration,
    ) -> (super::api::ScreenAnswer, bool) {
        let deadline = std::time::Instant::now() + timeout;
        let (doorbell, ring) = smol::channel::bounded(1);
        self.core().watchers.push(doorbell);
        let mut timed_out = false;
        loop {
            let (done, exited) = {
                let core = self.core();
                (wait_for.is_some_and(|text| core.screen.text().contains(text)), core.exit.is_some())
            };
            if done || exited || (wait_for.is_none() && quiet.is_none()) {
                break;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            // Wait for output; with `quiet`, a wait that ends without any means quiet enough.
            let limit = match quiet {
                Some(quiet) => quiet.min(deadline - now),
                None => deadline - now,
            };
            let rang = crate::clock::timeout(limit, ring.recv()).await.is_some_and(|r| r.is_ok());
            if !rang && quiet.is_some() && std::time::Instant::now() < deadline {
                break;
            }
        }
        let core = self.core();
        let matched = wait_for.is_none_or(|text| core.screen.text().contains(text));
        let (rows, cols) = core.screen.size();
        let (row, col) = core.screen.cursor();
        let answer = super::api::ScreenAnswer {
            id: self.inner.spec.id.clone(),
            screen: core.screen.text(),
            cols,
            rows,
            cursor: super::api::Cursor { row, col },
            state: if core.exit.is_some() { "exited" } else { "running" }.into(),
            exit_code: core.exit,
            title: core.screen.title().map(String::from),
            matched,
            timed_out,
        };
        (answer, matched)
    }

    /// Sets the size to the smallest attached client's, telling every client when it changes.
    fn apply_size(&self, core: &mut Core) {
        let Some(rows) = core.clients.iter().map(|c| c.size.0).min() else { return };
        let cols = core.clients.iter().map(|c| c.size.1).min().expect("clients is not empty");
        if core.screen.size() == (rows, cols) || core.exit.is_some() {
            return;
        }
        if let Err(e) = self.inner.master.get_ref().resize(rows, cols) {
            log::warn!("resizing terminal {}: {e}", self.inner.spec.id);
            return;
        }
        core.screen.resize(rows, cols);
        broadcast(core, &Frame::Control(json!({"type": "size", "cols": cols, "rows": rows})));
    }

    fn resize_client(&self, client: u64, rows: u16, cols: u16) {
        let mut core = self.core();
        if let Some(slot) = core.clients.iter_mut().find(|c| c.id == client) {
            slot.size = (rows, cols);
        }
        self.apply_size(&mut core);
    }

    fn detach(&self, client: u64) {
        let mut core = self.core();
        core.clients.retain(|c| c.id != client);
        self.apply_size(&mut core);
        let _ = self.inner.resume.0.try_send(());
    }

    fn take(&self, client: u64) -> Vec<Frame> {
        let _ = self.inner.resume.0.try_send(());
        let mut core = self.core();
        let Some(slot) = core.clients.iter_mut().position(|c| c.id == client) else { return Vec::new() };
        core.clients[slot].last_take = Instant::now();
        match core.clients[slot].queue.take() {
            Take::Frames(frames) => frames,
            Take::Skipped(bytes) => {
                let snapshot = core.screen.snapshot(false);
                vec![Frame::Control(json!({"type": "skipped", "bytes": bytes})), Frame::Output(snapshot)]
            }
        }
    }

    /// Reads the PTY until the program has exited and its output ended, then records the exit.
    async fn pump(
        self,
        mut exit: std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<std::process::ExitStatus>> + Send>,
        >,
    ) {
        let reading = self.read_output();
        futures_lite::pin!(reading);
        let status = match futures_lite::future::or(
            async {
                (&mut reading).await;
                None
            },
            async { Some((&mut exit).await) },
        )
        .await
        {
            Some(status) => {
                // Output written just before the exit is still in the PTY: read it, but a
                // background job holding the terminal open must not keep us waiting.
                crate::clock::timeout(Duration::from_millis(500), reading).await;
                status
            }
            None => exit.await,
        };
        let code = match status {
            Ok(status) => exit_code(status),
            Err(e) => {
                log::warn!("waiting for terminal {}: {e}", self.inner.spec.id);
                -1
            }
        };
        // Like closing a terminal window: what the program left behind gets a hangup (found by
        // a walk through /proc, on the blocking pool).
        let pid = self.inner.spec.pid;
        smol::unblock(move || crate::process::signal_session(pid, libc::SIGHUP)).await;
        let mut core = self.core();
        core.exit = Some(code);
        core.exited_at = Some(crate::clock::now_ms());
        broadcast(&mut core, &Frame::End(exit_frame(code)));
        core.watchers.retain(|w| w.try_send(()).is_ok() || !w.is_closed());
        log::info!("terminal {} ({}) exited with {code}", self.inner.spec.id, self.inner.spec.name);
    }

    /// Reads the PTY at the pace of the clients: while an attached client has half its buffer
    /// or more waiting, the pump stops reading (the program blocks on its writes, as on a real
    /// terminal). A full client that takes nothing meanwhile skips ahead and is no longer waited
    /// for: after `STALL_OTHERS` when other clients are ready for more, after `STALL_LIMIT` when
    /// it is alone; so a stalled client holds up neither the program nor the others for long.
    async fn read_output(&self) {
        let budget = self.inner.limits.client_buffer;
        // A chunk on top of the high-water mark stays within the budget of a reading client.
        let (high_water, chunk) = (budget / 2, (budget / 4).clamp(1024, 64 * 1024));
        let mut buffer = vec![0u8; chunk];
        let mut master = &*self.inner.master;
        loop {
            while self.backlogged(high_water) {
                let _ = crate::clock::timeout(STALL_CHECK, self.inner.resume.1.recv()).await;
                self.skip_stalled(high_water);
            }
            let n = match master.read(&mut buffer).await {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            self.output(&buffer[..n]);
        }
    }

    /// Makes the clients that are full and took nothing for a while skip ahead: after
    /// `STALL_OTHERS` when others are ready for more (they must not wait), else `STALL_LIMIT`.
    fn skip_stalled(&self, high_water: usize) {
        let now = Instant::now();
        let mut core = self.core();
        let others_ready = core.clients.iter().any(|c| !c.queue.is_full(high_water));
        let patience = if others_ready { STALL_OTHERS } else { STALL_LIMIT };
        for client in core.clients.iter_mut() {
            if client.queue.is_full(high_water) && now.duration_since(client.last_take) >= patience {
                client.queue.skip();
            }
        }
    }

    /// Whether a client served in order has `high_water` bytes or more waiting.
    fn backlogged(&self, high_water: usize) -> bool {
        self.core().clients.iter().any(|c| c.queue.is_full(high_water))
    }

    fn output(&self, bytes: &[u8]) {
        let mut core = self.core();
        let was_alternate = core.screen.alternate();
        core.screen.process(bytes);
        core.last_active = crate::clock::now_ms();
        broadcast(&mut core, &Frame::Output(bytes.to_vec()));
        if let Some(title) = core.screen.take_title_change() {
            broadcast(&mut core, &Frame::Control(json!({"type": "title", "title": title})));
        }
        if was_alternate && !core.screen.alternate() && core.clients.iter().any(|c| c.repaint_normal) {
            let repaint = core.screen.repaint();
            for client in core.clients.iter_mut().filter(|c| c.repaint_normal) {
                client.repaint_normal = false;
                client.queue.push(Frame::Output(repaint.clone()));
            }
        }
        core.watchers.retain(|w| w.try_send(()).is_ok() || !w.is_closed());
    }
}

/// Queues `frame` for every client and rings their doorbells.
fn broadcast(core: &mut Core, frame: &Frame) {
    for client in &mut core.clients {
        client.queue.push(frame.clone());
        let _ = client.doorbell.try_send(());
    }
}

fn exit_frame(code: i32) -> serde_json::Value {
    json!({"type": "exit", "code": code})
}

/// The shell's convention: the exit code, or 128 + the signal that ended the program.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// One attached client; dropping it detaches (the size may grow back).
pub(crate) struct Attachment {
    session: Session,
    client: u64,
    ring: Receiver<()>,
    read_only: bool,
}

impl Attachment {
    /// Waits until something is queued for this client and takes it. An `End` frame is last.
    pub(crate) async fn next_frames(&self) -> Vec<Frame> {
        loop {
            let frames = self.session.take(self.client);
            if !frames.is_empty() {
                return frames;
            }
            if self.ring.recv().await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Input typed by this client.
    pub(crate) async fn input(&self, bytes: &[u8]) -> Result<(), SessionError> {
        if self.read_only {
            return Err(SessionError::ReadOnly);
        }
        self.session.write(bytes).await
    }

    pub(crate) fn resize(&self, cols: u16, rows: u16) {
        self.session.resize_client(self.client, rows, cols);
    }

    /// Queues a control message for this client alone (e.g. why its input was refused).
    pub(crate) fn notify(&self, message: serde_json::Value) {
        let mut core = self.session.core();
        if let Some(slot) = core.clients.iter_mut().find(|c| c.id == self.client) {
            slot.queue.push(Frame::Control(message));
            let _ = slot.doorbell.try_send(());
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.session.detach(self.client);
    }
}
