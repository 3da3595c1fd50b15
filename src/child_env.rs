//! What a process the daemon starts for a caller (a remote command, an agent) inherits from the
//! daemon's own environment: everything but the daemon's secrets.
//!
//! The daemon may run with `LOOPSY_*` variables (its home, a key an MCP registration exported)
//! and with its keys in other variables a user set; a caller who may run commands must not be
//! able to read them back with `env` (weakness C3). So `LOOPSY_*` variables are dropped, and so
//! is any variable whose value contains one of the daemon's keys as they are *now*: the keys are
//! re-read from `config.yaml` at each start, because pairing and `loopsy key generate` change
//! them while the daemon runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::paths::{FileStamp, Paths};

/// The daemon's keys, read when asked. A cheap-clone handle.
#[derive(Clone)]
pub(crate) struct Secrets {
    paths: Option<Arc<Paths>>,
    /// The keys at start: still secret after a rotation, and the answer when `config.yaml`
    /// cannot be read.
    at_start: Arc<Vec<String>>,
    /// The keys of `config.yaml` as last read, with the file's identity then (inode, size,
    /// modification time): parsed again only when that changes, so a spawn costs a `stat`, not a
    /// YAML parse. Every config writer replaces the file, which gives it a new inode.
    read: Arc<Mutex<Option<LastRead>>>,
}

impl Secrets {
    pub(crate) fn new(paths: Arc<Paths>, config: &Config) -> Secrets {
        Secrets { paths: Some(paths), at_start: Arc::new(keys_of(config)), read: Arc::default() }
    }

    /// Every key this daemon holds now, and every key it held at start.
    pub(crate) fn current(&self) -> Vec<String> {
        let mut keys = self.at_start.as_ref().clone();
        if let Some(paths) = &self.paths {
            keys.extend(self.keys_in_config(paths));
        }
        keys.retain(|key| !key.trim().is_empty());
        keys.sort();
        keys.dedup();
        keys
    }

    fn keys_in_config(&self, paths: &Paths) -> Vec<String> {
        let stamp = crate::paths::file_stamp(&paths.config_file());
        let mut read = self.read.lock().expect("secrets lock");
        match (&*read, stamp) {
            (Some((seen, keys)), Some(now)) if *seen == now => keys.clone(),
            (_, stamp) => {
                let keys = Config::load(paths).map(|config| keys_of(&config)).unwrap_or_default();
                *read = stamp.map(|stamp| (stamp, keys.clone()));
                keys
            }
        }
    }
}

/// The keys found in `config.yaml` when it had this stamp.
type LastRead = (FileStamp, Vec<String>);

/// The own key, the keys peers present (`allowedKeys`) and the keys we present (`peerKeys`).
fn keys_of(config: &Config) -> Vec<String> {
    let auth = &config.auth;
    std::iter::once(&auth.api_key).chain(auth.allowed_keys.values()).chain(auth.peer_keys.values()).cloned().collect()
}

/// Set beside `SMOL_THREADS` when loopsy chose the count, so a loopsy process started by
/// another (the CLI starting its daemon, a session manager its workers) tells its parent's
/// tuning from a user's choice. A `LOOPSY_` variable: jobs and agents never see it.
const OWN_MARK: &str = "LOOPSY_SMOL_THREADS";

/// Whether this process set `SMOL_THREADS` itself: then it is loopsy's tuning, not something
/// a job or agent asked for, and they do not inherit it.
static OWN_SMOL_THREADS: AtomicBool = AtomicBool::new(false);

/// Sets `SMOL_THREADS` to `threads` unless the user set it (their choice stands, and is
/// inherited like any variable of theirs). Call before any thread exists.
pub(crate) fn set_executor_threads(threads: usize) {
    let inherited = std::env::var("SMOL_THREADS").ok();
    let mark = std::env::var(OWN_MARK).ok();
    if loopsy_chooses(inherited.as_deref(), mark.as_deref()) {
        OWN_SMOL_THREADS.store(true, Ordering::Relaxed);
        std::env::set_var("SMOL_THREADS", threads.to_string());
        std::env::set_var(OWN_MARK, threads.to_string());
    }
}

/// The variables of loopsy's own tuning, which a program it starts for the user (the command
/// under `loopsy lock`, a browser) does not inherit.
pub(crate) fn own_tuning() -> &'static [&'static str] {
    if OWN_SMOL_THREADS.load(Ordering::Relaxed) {
        &["SMOL_THREADS", OWN_MARK]
    } else {
        &[OWN_MARK]
    }
}

/// Whether the thread count is loopsy's to choose: nobody set it, or a loopsy process did
/// (the mark still names the value).
fn loopsy_chooses(smol_threads: Option<&str>, mark: Option<&str>) -> bool {
    smol_threads.is_none() || smol_threads == mark
}

/// Whether the daemon keeps variable `name` = `value` to itself.
pub(crate) fn is_daemons_own(name: &str, value: &str, secrets: &[String]) -> bool {
    name.starts_with("LOOPSY_")
        || (name == "SMOL_THREADS" && OWN_SMOL_THREADS.load(Ordering::Relaxed))
        || secrets.iter().any(|secret| !secret.is_empty() && value.contains(secret.as_str()))
}

/// `vars` (the daemon's environment) without what [`is_daemons_own`] keeps back.
pub(crate) fn inherited(
    vars: impl IntoIterator<Item = (String, String)>,
    secrets: &[String],
) -> BTreeMap<String, String> {
    vars.into_iter().filter(|(name, value)| !is_daemons_own(name, value, secrets)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_variables_and_anything_holding_a_key_stay_with_the_daemon() {
        let secrets = vec!["k".repeat(32), "p".repeat(32)];
        let vars = [
            ("PATH", "/usr/bin".to_string()),
            ("HOME", "/home/u".into()),
            ("LOOPSY_HOME", "/home/u/.loopsy".into()),
            ("LOOPSY_API_KEY", "whatever".into()),
            ("MY_TOKEN", "k".repeat(32)),
            ("CURL_HEADER", format!("Authorization: Bearer {}", "p".repeat(32))),
            ("OTHER", "p".repeat(31)),
        ];
        let kept = inherited(vars.into_iter().map(|(n, v)| (n.to_string(), v)), &secrets);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["HOME", "OTHER", "PATH"]);
    }

    #[test]
    fn the_thread_count_is_loopsys_unless_a_user_set_it() {
        assert!(loopsy_chooses(None, None), "nobody set it");
        assert!(loopsy_chooses(Some("2"), Some("2")), "the CLI set it for itself; its daemon chooses again");
        assert!(!loopsy_chooses(Some("3"), None), "the user's");
        assert!(!loopsy_chooses(Some("3"), Some("2")), "the user changed what a loopsy process had set");
    }

    #[test]
    fn the_keys_are_read_again_so_new_ones_count() {
        let dir = std::env::temp_dir().join(format!("loopsy-secrets-{}", crate::random::hex(6)));
        let paths = Arc::new(Paths::from_dir(&dir).unwrap());
        let mut config = Config::new_with_key("a".repeat(32));
        let secrets = Secrets::new(paths.clone(), &config);
        assert_eq!(secrets.current(), ["a".repeat(32)], "no file yet: the keys at start");
        config.auth.api_key = "b".repeat(32);
        config.auth.peer_keys.insert("bob".into(), "c".repeat(32));
        crate::config::replace(&paths, &config).unwrap();
        assert_eq!(secrets.current(), ["a".repeat(32), "b".repeat(32), "c".repeat(32)]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
