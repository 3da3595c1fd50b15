//! Finding the daemon the MCP server works for (PROTOCOL.md §7.2), on every call.
//!
//! `LOOPSY_API_KEY` (+ `LOOPSY_PORT`) name a daemon on this machine directly; otherwise the data
//! directory (`LOOPSY_DATA_DIR`, `--home`, `LOOPSY_HOME`, `~/.loopsy`) gives the key and the URL,
//! with the certificate pinned when TLS is on. Looked up per call: the daemon may start later.

use std::time::Duration;

use crate::config::Config;
use crate::paths::Paths;
use crate::peer::Client;

/// Where the MCP server's daemon is.
#[derive(Debug, Clone)]
pub(crate) struct DaemonLocator {
    pub paths: Paths,
}

impl DaemonLocator {
    /// `LOOPSY_DATA_DIR` (1.0.21's variable) wins over the CLI's data directory.
    pub(crate) fn new(paths: Paths) -> DaemonLocator {
        let paths = match std::env::var_os("LOOPSY_DATA_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => Paths::from_dir(std::path::Path::new(&dir)).unwrap_or(paths),
            None => paths,
        };
        DaemonLocator { paths }
    }

    /// The configuration of the data directory, for peer resolution.
    pub(crate) fn config(&self) -> Result<Config, String> {
        Config::load(&self.paths).map_err(|e| e.to_string())
    }

    /// A client for the local daemon, or a message an agent can act on.
    pub(crate) fn client(&self) -> Result<Client, String> {
        if let Some(key) = std::env::var("LOOPSY_API_KEY").ok().filter(|k| !k.is_empty()) {
            // An explicit key: a daemon on this machine at LOOPSY_PORT, or the one of the data dir.
            if let Some(port) = std::env::var("LOOPSY_PORT").ok().and_then(|p| p.parse::<u16>().ok()) {
                return Ok(Client::new(&format!("http://127.0.0.1:{port}"), Some(key)).with_timeout(TIMEOUT));
            }
            return Client::local(&self.paths, &key).map(|c| c.with_timeout(TIMEOUT)).map_err(|_| self.not_running());
        }
        let config = self.config()?;
        Client::local(&self.paths, &config.auth.api_key)
            .map(|c| c.with_timeout(TIMEOUT))
            .map_err(|_| self.not_running())
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
