//! `loopsy term new|attach|list|kill`: interactive terminals on any peer.
//!
//! `new` creates a terminal and attaches; `attach` puts this terminal in raw mode and joins a
//! terminal's WebSocket: keys go there, its output comes here, window-size changes follow.
//! The detach prefix (`terminals.detachPrefix`, default Ctrl-A) then `d` detaches; the prefix
//! twice sends it once. The local terminal is restored on every way out (detach, the program's
//! exit, a lost connection, SIGTERM/SIGHUP, an error), and the exit code is the remote program's.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use argh::FromArgs;
use futures_lite::{AsyncReadExt, StreamExt};
use serde_json::json;

use crate::paths::Paths;
use crate::peer::websocket::Incoming;
use crate::peer::Method;
use crate::percent;
use crate::resolve::{self, Target};
use crate::terminal::api::{CreateRequest, TerminalInfo, TerminalList};

/// interactive terminals on a peer: new, attach, list, kill
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "term")]
pub struct Args {
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Sub {
    New(NewArgs),
    Attach(AttachArgs),
    List(ListArgs),
    Kill(KillArgs),
}

/// start a terminal (your shell there, or a command after --) and attach to it
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "new")]
struct NewArgs {
    /// a name to attach by later (unique among running terminals)
    #[argh(option)]
    name: Option<String>,
    /// working directory on the peer
    #[argh(option)]
    cwd: Option<String>,
    /// detach prefix key, like C-a or C-b (default: terminals.detachPrefix)
    #[argh(option)]
    detach_key: Option<String>,
    /// create the terminal and print its id without attaching
    #[argh(switch, short = 'd')]
    detached: bool,
    /// the daemon (default: local), then `--` and the command and its arguments
    #[argh(positional, greedy)]
    rest: Vec<String>,
}

/// attach to a terminal (detach with the prefix key, then d)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "attach")]
struct AttachArgs {
    /// watch without typing
    #[argh(switch)]
    read_only: bool,
    /// detach prefix key, like C-a or C-b (default: terminals.detachPrefix)
    #[argh(option)]
    detach_key: Option<String>,
    /// the daemon: `local`, a peer name or address[:port]
    #[argh(positional)]
    peer: String,
    /// the terminal's id (or a prefix of it) or name
    #[argh(positional)]
    terminal: String,
}

/// list the terminals of a daemon
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct ListArgs {
    /// print JSON: {"terminals": [...]}
    #[argh(switch)]
    json: bool,
    /// the daemon (default: local)
    #[argh(positional)]
    peer: Option<String>,
}

/// kill a terminal's programs and forget it
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "kill")]
struct KillArgs {
    /// the daemon
    #[argh(positional)]
    peer: String,
    /// the terminal's id (or a prefix of it) or name
    #[argh(positional)]
    terminal: String,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let target = |peer: &str| smol::block_on(resolve::resolve(paths, &config, peer, None));
    let prefix = |flag: Option<String>| -> anyhow::Result<u8> {
        let name = flag.unwrap_or_else(|| config.terminals.detach_prefix.clone());
        crate::terminal::keys::prefix_byte(&name)
            .with_context(|| format!("detach key '{name}' is not a control key like C-a or C-b"))
    };
    match args.command {
        Sub::New(args) => {
            let mut words = split_new(&args.rest)?;
            if dashes_before_peer(std::env::args()) {
                // `term new -- cmd`: argh took the `--`, so the first word is the command.
                words.command = args.rest.clone();
                words.peer = None;
            }
            let detached = args.detached || words.detached;
            if !detached {
                need_terminal()?;
            }
            let target = target(words.peer.as_deref().unwrap_or("local"))?;
            let request = CreateRequest {
                command: words.command.first().cloned(),
                args: words.command.iter().skip(1).cloned().collect(),
                cwd: args.cwd.or(words.cwd),
                name: args.name.or(words.name),
                ..new_size()
            };
            let info: TerminalInfo =
                smol::block_on(target.client.call(Method::Post, "/api/v1/terminals", Some(&request)))?;
            if detached {
                println!("{}", info.id);
                return Ok(ExitCode::SUCCESS);
            }
            attach(&target, &info.id, false, prefix(args.detach_key.or(words.detach_key))?)
        }
        Sub::Attach(args) => attach(&target(&args.peer)?, &args.terminal, args.read_only, prefix(args.detach_key)?),
        Sub::List(args) => list(&target(args.peer.as_deref().unwrap_or("local"))?, args.json),
        Sub::Kill(args) => {
            let target = target(&args.peer)?;
            let path = format!("/api/v1/terminals/{}", percent::encode(&args.terminal));
            let info: TerminalInfo = smol::block_on(target.client.call(Method::Delete, &path, None::<&()>))?;
            println!("killed {} ({}) on {}: exit code {}", info.name, info.id, target.label, exit_text(&info));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `term new` was given after its first positional word (argh's greedy positional
/// swallows options written after the peer, as the usage line shows them, so they are read here).
#[derive(Debug, Default, PartialEq, Eq)]
struct NewWords {
    peer: Option<String>,
    command: Vec<String>,
    name: Option<String>,
    cwd: Option<String>,
    detach_key: Option<String>,
    detached: bool,
}

/// `[<peer>] [--name N] [--cwd D] [--detach-key K] [-d] [-- <cmd>...]`; without `--`, the
/// words after the peer are the command.
fn split_new(rest: &[String]) -> anyhow::Result<NewWords> {
    let mut words = NewWords::default();
    let mut iter = rest.iter();
    while let Some(word) = iter.next() {
        let mut value = |flag: &str| iter.next().cloned().with_context(|| format!("{flag} needs a value"));
        match word.as_str() {
            "--" => {
                words.command = iter.cloned().collect();
                break;
            }
            "--name" => words.name = Some(value("--name")?),
            "--cwd" => words.cwd = Some(value("--cwd")?),
            "--detach-key" => words.detach_key = Some(value("--detach-key")?),
            "-d" | "--detached" => words.detached = true,
            _ if words.peer.is_none() => words.peer = Some(word.clone()),
            _ => {
                words.command = std::iter::once(word).chain(iter).cloned().collect();
                break;
            }
        }
    }
    Ok(words)
}

/// Whether the command line was `term new [options] -- <cmd>` (no peer): argh drops the `--`,
/// so the raw arguments tell.
fn dashes_before_peer(raw: impl Iterator<Item = String>) -> bool {
    let words: Vec<String> = raw.collect();
    let Some(start) = words.windows(2).position(|w| w[0] == "term" && w[1] == "new") else { return false };
    let mut rest = words[start + 2..].iter();
    while let Some(word) = rest.next() {
        match word.as_str() {
            "--" => return true,
            "--name" | "--cwd" | "--detach-key" => {
                rest.next();
            }
            "-d" | "--detached" => {}
            _ => return false,
        }
    }
    false
}

/// The size to create a terminal with: this terminal's, if it is one.
fn new_size() -> CreateRequest {
    match window_size() {
        Some((rows, cols)) => CreateRequest { cols: Some(cols), rows: Some(rows), ..Default::default() },
        None => CreateRequest::default(),
    }
}

fn exit_text(info: &TerminalInfo) -> String {
    info.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "none (still running)".into())
}

fn list(target: &Target, json: bool) -> anyhow::Result<ExitCode> {
    let list: TerminalList = smol::block_on(target.client.get("/api/v1/terminals"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.terminals.is_empty() {
        println!("no terminals on {}", target.label);
    }
    for t in &list.terminals {
        let state = match t.exit_code {
            Some(code) => format!("exited ({code})"),
            None => "running".into(),
        };
        let command = std::iter::once(&t.command).chain(&t.args).cloned().collect::<Vec<_>>().join(" ");
        println!(
            "{}  {:<16} {:<12} {}x{}  {} client(s)  {}",
            &t.id[..8.min(t.id.len())],
            t.name,
            state,
            t.cols,
            t.rows,
            t.clients,
            command
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How an attachment ended.
enum End {
    Detached,
    Exited(i32),
    Signal(&'static str),
}

fn need_terminal() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("attaching needs a terminal on stdin (scripts can use `term new -d`, the REST API or the MCP tools)");
    }
    Ok(())
}

fn attach(target: &Target, terminal: &str, read_only: bool, prefix: u8) -> anyhow::Result<ExitCode> {
    need_terminal()?;
    let (rows, cols) = window_size().unwrap_or((24, 80));
    let path = format!(
        "/api/v1/terminals/{}/attach?cols={cols}&rows={rows}{}",
        percent::encode(terminal),
        if read_only { "&readOnly=1" } else { "" }
    );
    let (sender, receiver) =
        smol::block_on(target.client.clone().with_timeout(std::time::Duration::from_secs(15)).websocket(&path))?;
    let raw = RawMode::enter().context("putting the terminal in raw mode")?;
    let mut screen = vt100::Parser::new(non_zero(rows), non_zero(cols), 0);
    let ended = smol::block_on(session(sender, receiver, &mut screen, prefix));
    // Undo what the remote program switched on, then the raw mode (also on errors).
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(&restore_sequence(screen.screen()));
    let _ = stdout.flush();
    drop(raw);
    match ended? {
        End::Detached => {
            eprintln!("[detached from {terminal} on {}]", target.label);
            Ok(ExitCode::SUCCESS)
        }
        End::Exited(code) => {
            eprintln!("[{terminal} exited with {code}]");
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        End::Signal(name) => {
            eprintln!("[{name}: detached from {terminal}]");
            Ok(ExitCode::from(2))
        }
    }
}

/// Moves bytes both ways until detach, exit, a signal or a lost connection.
async fn session(
    mut sender: crate::peer::websocket::Sender,
    mut receiver: crate::peer::websocket::Receiver,
    screen: &mut vt100::Parser,
    prefix: u8,
) -> anyhow::Result<End> {
    use async_signal::{Signal, Signals};
    let mut signals = Signals::new([Signal::Winch, Signal::Term, Signal::Hup, Signal::Int])?;
    let (keys, typed) = smol::channel::bounded::<Vec<u8>>(16);
    // One stdin handle for the process; the thread blocks on reads and ends with the process.
    let _reader = smol::spawn(async move {
        let mut stdin = blocking::Unblock::new(std::io::stdin());
        let mut buffer = vec![0u8; 4096];
        while let Ok(n) = stdin.read(&mut buffer).await {
            if n == 0 || keys.send(buffer[..n].to_vec()).await.is_err() {
                return;
            }
        }
    });
    let mut stdout = std::io::stdout();
    let mut detach = Detach { prefix, pending: false };
    let mut exit = None;
    loop {
        let event = futures_lite::future::or(
            async { Event::Remote(receiver.next().await) },
            futures_lite::future::or(async { Event::Typed(typed.recv().await.ok()) }, async {
                Event::Signal(signals.next().await.and_then(Result::ok))
            }),
        )
        .await;
        match event {
            Event::Remote(None) => {
                return match exit {
                    Some(code) => Ok(End::Exited(code)),
                    None => bail!("the connection to the terminal was lost"),
                }
            }
            Event::Remote(Some(Err(e))) => bail!("the terminal connection failed: {e}"),
            Event::Remote(Some(Ok(Incoming::Output(bytes)))) => {
                screen.process(&bytes);
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Event::Remote(Some(Ok(Incoming::Control(control)))) => match control["type"].as_str() {
                Some("attached" | "size") => {
                    let (rows, cols) = (control["rows"].as_u64(), control["cols"].as_u64());
                    if let (Some(rows), Some(cols)) = (rows, cols) {
                        screen.screen_mut().set_size(non_zero(rows as u16), non_zero(cols as u16));
                    }
                }
                Some("exit") => exit = control["code"].as_i64().map(|c| c as i32),
                _ => {}
            },
            Event::Typed(None) => return Ok(End::Detached),
            Event::Typed(Some(bytes)) => {
                let (forward, detached) = detach.filter(&bytes);
                if !forward.is_empty() {
                    sender.send_bytes(&forward).await?;
                }
                if detached {
                    sender.close().await;
                    return Ok(End::Detached);
                }
            }
            Event::Signal(Some(Signal::Winch)) => {
                if let Some((rows, cols)) = window_size() {
                    sender.send_control(&json!({"type": "resize", "cols": cols, "rows": rows})).await?;
                }
            }
            Event::Signal(Some(Signal::Int)) => sender.send_bytes(&[0x03]).await?,
            Event::Signal(Some(signal)) => {
                sender.close().await;
                return Ok(End::Signal(if signal == Signal::Hup { "SIGHUP" } else { "SIGTERM" }));
            }
            Event::Signal(None) => {}
        }
    }
}

enum Event {
    Remote(Option<Result<Incoming, crate::peer::ClientError>>),
    Typed(Option<Vec<u8>>),
    Signal(Option<async_signal::Signal>),
}

/// The detach key sequence: prefix then `d` detaches, prefix twice sends the prefix once.
struct Detach {
    prefix: u8,
    /// The prefix was the last byte typed.
    pending: bool,
}

impl Detach {
    /// The bytes to send for `typed`, and whether the user detached.
    fn filter(&mut self, typed: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(typed.len());
        for &byte in typed {
            if self.pending {
                self.pending = false;
                match byte {
                    b'd' | b'D' | 0x04 => return (out, true),
                    b if b == self.prefix => out.push(b),
                    b => out.extend([self.prefix, b]),
                }
            } else if byte == self.prefix {
                self.pending = true;
            } else {
                out.push(byte);
            }
        }
        (out, false)
    }
}

/// Escape codes that turn off what the remote program may have switched on: the alternate
/// screen, a hidden cursor, application keys, bracketed paste, mouse reporting, colours.
fn restore_sequence(screen: &vt100::Screen) -> Vec<u8> {
    let mut out = String::new();
    if screen.alternate_screen() {
        out.push_str("\x1b[?1049l");
    }
    out.push_str("\x1b[m\x1b[?25h\x1b[?1l\x1b>\x1b[?2004l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\r\n");
    out.into_bytes()
}

fn non_zero(n: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN)
}

/// (rows, cols) of the terminal on stdout (else stdin).
fn window_size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: TIOCGWINSZ fills the winsize we pass; no other memory is touched.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 && size.ws_row > 0 && size.ws_col > 0 {
            return Some((size.ws_row, size.ws_col));
        }
    }
    None
}

/// The terminal in raw mode until this is dropped (which restores the saved settings, also
/// when unwinding from a panic).
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> std::io::Result<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on stdin with termios values we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_then_d_detaches_and_the_prefix_twice_sends_it() {
        let mut detach = Detach { prefix: 1, pending: false };
        assert_eq!(detach.filter(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(detach.filter(b"a\x01\x01b"), (b"a\x01b".to_vec(), false));
        assert_eq!(detach.filter(b"\x01x"), (b"\x01x".to_vec(), false));
        assert_eq!(detach.filter(b"\x01"), (Vec::new(), false));
        assert_eq!(detach.filter(b"d"), (Vec::new(), true));
    }

    #[test]
    fn new_takes_an_optional_peer_options_and_a_command_after_dashes() {
        let split = |words: &[&str]| split_new(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>()).unwrap();
        assert_eq!(split(&[]), NewWords::default());
        assert_eq!(split(&["bob"]).peer.as_deref(), Some("bob"));
        let full = split(&["bob", "--name", "py", "-d", "--", "python3", "-q"]);
        assert_eq!(full.peer.as_deref(), Some("bob"));
        assert_eq!((full.name.as_deref(), full.detached), (Some("py"), true));
        assert_eq!(full.command, ["python3", "-q"]);
        assert_eq!(split(&["bob", "vim", "x"]).command, ["vim", "x"]);
        assert!(split_new(&["bob".into(), "--name".into()]).is_err());
        let raw = |words: &[&str]| dashes_before_peer(words.iter().map(|w| w.to_string()));
        assert!(raw(&["loopsy", "term", "new", "--name", "x", "--", "vim"]));
        assert!(!raw(&["loopsy", "term", "new", "bob", "--", "vim"]));
        assert!(!raw(&["loopsy", "term", "new"]));
    }
}
