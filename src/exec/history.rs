//! Recent jobs: each job's output log from its start until it is evicted, who started it, and
//! the idempotency keys that name jobs. Pure bookkeeping: time comes in as `now`.
//!
//! Running jobs are always kept. Finished ones are evicted oldest first once more than
//! `keepFinished` are kept, once older than `finishedTtl`, or while all kept logs together hold
//! more than `keepOutputTotal` bytes. The key of an evicted job is remembered without its output
//! (for a day, at most [`MAX_FORGOTTEN`] of them), so a late retry is answered "it ran, its
//! output is gone" instead of starting the command a second time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::log::JobLog;

/// Evicted jobs whose keys are still remembered, at most.
pub(super) const MAX_FORGOTTEN: usize = 10_000;
/// How long the key of an evicted job is remembered.
pub(super) const FORGET_AFTER_MS: u64 = 24 * 3600 * 1000;

/// An idempotency key, in the namespace of the caller that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct KeyId {
    pub caller: String,
    pub key: String,
}

/// How long and how much history is kept.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub keep_finished: usize,
    pub finished_ttl_ms: u64,
    pub total_bytes: usize,
}

/// A job the history keeps.
#[derive(Debug)]
pub(super) struct Kept {
    /// The caller that started it (`Origin::caller`).
    pub owner: String,
    pub key: Option<KeyId>,
    /// SHA-256 of the request, to tell a retry from a different request with the same key.
    pub digest: [u8; 32],
    pub log: Arc<JobLog>,
    pub finished_at: Option<u64>,
    /// The exit code a shell would show, once finished.
    pub exit_code: Option<i32>,
}

/// A job whose output was evicted, remembered by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Forgotten {
    pub job_id: String,
    pub digest: [u8; 32],
    /// The exit code a shell would show.
    pub exit_code: Option<i32>,
    pub forgotten_at: u64,
}

/// What a key names.
#[derive(Debug)]
pub(super) enum Lookup {
    /// A kept job with the same request.
    Kept {
        job_id: String,
        log: Arc<JobLog>,
    },
    /// The key was used for a different request.
    Mismatch {
        job_id: String,
    },
    /// The same request ran, and its output is gone.
    Forgotten(Forgotten),
    Unknown,
}

#[derive(Debug)]
pub(super) struct History {
    limits: Limits,
    jobs: HashMap<String, Kept>,
    /// Finished job ids, oldest first.
    finished: VecDeque<String>,
    keys: HashMap<KeyId, String>,
    forgotten: HashMap<KeyId, Forgotten>,
    /// Forgotten keys with the time they were forgotten, oldest first (an entry whose key was
    /// used again since is skipped when its turn comes).
    forgotten_order: VecDeque<(KeyId, u64)>,
}

impl History {
    pub(super) fn new(limits: Limits) -> History {
        History {
            limits,
            jobs: HashMap::new(),
            finished: VecDeque::new(),
            keys: HashMap::new(),
            forgotten: HashMap::new(),
            forgotten_order: VecDeque::new(),
        }
    }

    /// What `key` names, for a request with `digest`.
    pub(super) fn lookup(&self, key: &KeyId, digest: &[u8; 32]) -> Lookup {
        if let Some(job_id) = self.keys.get(key) {
            let kept = &self.jobs[job_id];
            return match &kept.digest == digest {
                true => Lookup::Kept { job_id: job_id.clone(), log: kept.log.clone() },
                false => Lookup::Mismatch { job_id: job_id.clone() },
            };
        }
        match self.forgotten.get(key) {
            Some(forgotten) if &forgotten.digest == digest => Lookup::Forgotten(forgotten.clone()),
            Some(forgotten) => Lookup::Mismatch { job_id: forgotten.job_id.clone() },
            None => Lookup::Unknown,
        }
    }

    /// Records a job that has just started.
    pub(super) fn insert(&mut self, job_id: &str, kept: Kept) {
        if let Some(key) = &kept.key {
            // A key reused after it was forgotten names the new job from now on.
            self.forgotten.remove(key);
            self.keys.insert(key.clone(), job_id.to_string());
        }
        self.jobs.insert(job_id.to_string(), kept);
    }

    pub(super) fn get(&self, job_id: &str) -> Option<&Kept> {
        self.jobs.get(job_id)
    }

    /// Marks a job finished and evicts what the limits say.
    pub(super) fn finish(&mut self, job_id: &str, exit_code: Option<i32>, now: u64) {
        if let Some(kept) = self.jobs.get_mut(job_id) {
            kept.finished_at = Some(now);
            kept.exit_code = exit_code;
            self.finished.push_back(job_id.to_string());
        }
        self.evict(now);
    }

    /// Applies the limits at `now`.
    pub(super) fn evict(&mut self, now: u64) {
        let mut total: usize = self.jobs.values().map(|kept| kept.log.bytes()).sum();
        while let Some(oldest) = self.finished.front() {
            let kept = &self.jobs[oldest];
            let too_old = kept.finished_at.is_some_and(|at| at.saturating_add(self.limits.finished_ttl_ms) <= now);
            if !(self.finished.len() > self.limits.keep_finished || too_old || total > self.limits.total_bytes) {
                break;
            }
            let job_id = self.finished.pop_front().expect("not empty");
            let kept = self.jobs.remove(&job_id).expect("finished jobs are kept");
            total -= kept.log.bytes();
            if let Some(key) = kept.key {
                self.keys.remove(&key);
                let forgotten = Forgotten { job_id, digest: kept.digest, exit_code: kept.exit_code, forgotten_at: now };
                self.forgotten.insert(key.clone(), forgotten);
                self.forgotten_order.push_back((key, now));
            }
        }
        while let Some((_, at)) = self.forgotten_order.front() {
            let expired = at.saturating_add(FORGET_AFTER_MS) <= now;
            if !expired && self.forgotten_order.len() <= MAX_FORGOTTEN {
                break;
            }
            let (key, at) = self.forgotten_order.pop_front().expect("not empty");
            if self.forgotten.get(&key).is_some_and(|forgotten| forgotten.forgotten_at == at) {
                self.forgotten.remove(&key);
            }
        }
    }

    /// Kept jobs, running and finished.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { keep_finished: 2, finished_ttl_ms: 1000, total_bytes: 1 << 20 };

    fn key(name: &str) -> KeyId {
        KeyId { caller: "own".into(), key: name.into() }
    }

    fn kept(key_name: Option<&str>, digest: u8) -> Kept {
        Kept {
            owner: "own".into(),
            key: key_name.map(key),
            digest: [digest; 32],
            log: Arc::new(JobLog::new(None)),
            finished_at: None,
            exit_code: None,
        }
    }

    fn name(lookup: Lookup) -> String {
        match lookup {
            Lookup::Kept { job_id, .. } => format!("kept {job_id}"),
            Lookup::Mismatch { job_id } => format!("mismatch {job_id}"),
            Lookup::Forgotten(forgotten) => format!("forgotten {} {:?}", forgotten.job_id, forgotten.exit_code),
            Lookup::Unknown => "unknown".into(),
        }
    }

    #[test]
    fn a_key_names_its_job_for_the_same_request_only() {
        let mut history = History::new(LIMITS);
        history.insert("j1", kept(Some("k"), 1));
        assert_eq!(name(history.lookup(&key("k"), &[1; 32])), "kept j1");
        assert_eq!(name(history.lookup(&key("k"), &[2; 32])), "mismatch j1");
        assert_eq!(name(history.lookup(&key("other"), &[1; 32])), "unknown");
        let someone_else = KeyId { caller: "peer:bob".into(), key: "k".into() };
        assert_eq!(name(history.lookup(&someone_else, &[1; 32])), "unknown", "keys are per caller");
    }

    #[test]
    fn finished_jobs_are_evicted_by_count_and_age_and_their_keys_remembered() {
        let mut history = History::new(LIMITS);
        for (i, job) in ["j1", "j2", "j3"].iter().enumerate() {
            history.insert(job, kept(Some(job), i as u8));
        }
        history.insert("running", kept(None, 9));
        history.finish("j1", Some(3), 10);
        history.finish("j2", Some(0), 20);
        history.finish("j3", Some(0), 30);
        assert!(history.get("j1").is_none(), "only two finished jobs are kept");
        assert_eq!(name(history.lookup(&key("j1"), &[0; 32])), "forgotten j1 Some(3)");
        assert_eq!(name(history.lookup(&key("j1"), &[7; 32])), "mismatch j1");
        history.evict(1025);
        assert!(history.get("j2").is_none() && history.get("j3").is_some(), "j2 finished more than 1 s ago");
        history.evict(10_000);
        assert_eq!(history.len(), 1, "running jobs are never evicted");
        history.evict(30 + FORGET_AFTER_MS);
        assert_eq!(name(history.lookup(&key("j1"), &[0; 32])), "unknown", "forgotten keys expire");
    }

    #[test]
    fn the_total_output_kept_is_bounded() {
        let mut history = History::new(Limits { keep_finished: 100, finished_ttl_ms: 1 << 40, total_bytes: 1000 });
        for job in ["j1", "j2"] {
            let entry = kept(None, 0);
            smol::block_on(entry.log.push(super::super::Pipe::Stdout, "x".repeat(600), 0));
            history.insert(job, entry);
        }
        history.finish("j1", Some(0), 1);
        history.finish("j2", Some(0), 2);
        assert!(history.get("j1").is_none() && history.get("j2").is_some());
    }
}
