//! Finding the daemon the MCP server works for (PROTOCOL.md §7.2).
//!
//! `LOOPSY_API_KEY` (+ `LOOPSY_PORT`) name a daemon on this machine directly; otherwise the data
//! directory (`LOOPSY_DATA_DIR`, `--home`, `LOOPSY_HOME`, `~/.loopsy`) gives the key and the URL,
//! with the certificate pinned when TLS is on.
//!
//! The daemon may start, stop, restart or change its key while the server runs, so every call
//! looks again, but cheaply: what was found is kept with the metadata of the files it came from
//! (`config.yaml`, `daemon.json`, the certificate) and the lock holder's pid, and is read again
//! only when one of them changed. That look is blocking file-system work, so it runs off the
//! executor (`smol::unblock`). The client to the local daemon keeps its connections alive, and
//! stays the same client (its kept connections with it) while the daemon's address, key and
//! certificate stay the same.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::paths::{file_stamp, FileStamp, Paths};
use crate::peer::Client;

/// Where the MCP server's daemon is.
#[derive(Debug, Clone)]
pub(crate) struct DaemonLocator {
    pub paths: Paths,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    paths: Paths,
    /// `LOOPSY_API_KEY`, read once.
    env_key: Option<String>,
    /// The client of `LOOPSY_API_KEY` + `LOOPSY_PORT`, which no file changes.
    fixed: Option<Client>,
    found: Mutex<Found>,
}

/// What the files said when last looked at.
#[derive(Debug, Default)]
struct Found {
    stamps: Option<Stamps>,
    config: Option<Result<Arc<Config>, String>>,
    client: Option<Result<Client, String>>,
}

/// The metadata of the files the daemon is found from, and the pid holding the daemon's lock:
/// when none changed, neither did what they say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps {
    config: Option<FileStamp>,
    runtime: Option<FileStamp>,
    cert: Option<FileStamp>,
    daemon: Option<u32>,
}

impl DaemonLocator {
    /// `LOOPSY_DATA_DIR` (1.0.21's variable) wins over the CLI's data directory.
    pub(crate) fn new(paths: Paths) -> DaemonLocator {
        let paths = match std::env::var_os("LOOPSY_DATA_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => Paths::from_dir(std::path::Path::new(&dir)).unwrap_or(paths),
            None => paths,
        };
        let env_key = std::env::var("LOOPSY_API_KEY").ok().filter(|k| !k.is_empty());
        let env_port = std::env::var("LOOPSY_PORT").ok().and_then(|p| p.parse::<u16>().ok());
        // An explicit key and port: a daemon on this machine at that port, whatever the files say.
        let fixed = env_key.as_ref().zip(env_port).map(|(key, port)| {
            Client::new(&format!("http://127.0.0.1:{port}"), Some(key.clone())).keeping_alive(KEEP_ALIVE)
        });
        let shared = Shared { paths: paths.clone(), env_key, fixed, found: Mutex::default() };
        DaemonLocator { paths, shared: Arc::new(shared) }
    }

    /// The configuration of the data directory, for peer resolution.
    pub(crate) async fn config(&self) -> Result<Arc<Config>, String> {
        let shared = self.shared.clone();
        smol::unblock(move || shared.current().0).await
    }

    /// A client for the local daemon, or a message an agent can act on.
    pub(crate) async fn client(&self) -> Result<Client, String> {
        if let Some(fixed) = &self.shared.fixed {
            return Ok(fixed.clone().with_timeout(TIMEOUT));
        }
        let shared = self.shared.clone();
        let client = smol::unblock(move || shared.current().1).await?;
        Ok(client.with_timeout(TIMEOUT))
    }
}

impl Shared {
    /// The config and the client as the files say now: kept ones while no file changed.
    /// Blocking (file metadata, and reading the files when they changed).
    fn current(&self) -> (Result<Arc<Config>, String>, Result<Client, String>) {
        let stamps = Stamps {
            config: file_stamp(&self.paths.config_file()),
            runtime: file_stamp(&self.paths.runtime_file()),
            cert: file_stamp(&self.paths.tls_dir().join("cert.pem")),
            daemon: crate::instance::lock_holder(&self.paths.lock_file()).ok().flatten(),
        };
        let mut found = self.found.lock().expect("daemon locator lock");
        if found.stamps.as_ref() != Some(&stamps) {
            let config = Config::load(&self.paths).map(Arc::new).map_err(|e| e.to_string());
            let key = match (&self.env_key, &config) {
                (Some(key), _) => Ok(key.clone()),
                (None, Ok(config)) => Ok(config.auth.api_key.clone()),
                (None, Err(e)) => Err(e.clone()),
            };
            let client = key.and_then(|key| {
                let fresh = Client::local(&self.paths, &key).map_err(|_| self.not_running())?;
                // The same daemon reached the same way: the kept connections stay useful.
                Ok(match &found.client {
                    Some(Ok(kept)) if kept.same_target(&fresh) => kept.clone(),
                    _ => fresh.keeping_alive(KEEP_ALIVE),
                })
            });
            *found = Found { stamps: Some(stamps), config: Some(config), client: Some(client) };
        }
        let config = found.config.clone().expect("loaded with the stamps");
        let client = found.client.clone().expect("loaded with the stamps");
        (config, client)
    }

    fn not_running(&self) -> String {
        format!(
            "The loopsy daemon is not running (data directory {}). Start it with `loopsy start`, then try again.",
            self.paths.home().display()
        )
    }
}

/// Tool calls wait at most this long for the local daemon.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to the local daemon is kept this long between calls: well inside the daemon's
/// 75 s wait for the next request on a kept connection (`daemon/listener.rs`).
const KEEP_ALIVE: Duration = Duration::from_secs(30);
