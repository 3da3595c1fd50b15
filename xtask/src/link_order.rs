//! `cargo xtask link-order [--idle SECS]`: regenerates `src/build/link-order.txt`, the functions the
//! release binary links first (see `build.rs` and ARCHITECTURE.md "Code layout of the release
//! binary").
//!
//! How: a release build with symbols (`RUSTFLAGS=-C strip=none` in `target/link-order`: cargo
//! keeps RUSTFLAGS out of the symbols' hashes, while the profile's `strip = true` is in them, so
//! the names are those of the stripped build), then two daemons of it under valgrind's callgrind
//! in a temporary home: a session daemon of a fleet of three, from start through `--idle`
//! seconds of idling (health probes of its siblings, timers), and the main daemon through the
//! same idle time and the common requests (health, status, context PUT and GET, execute `echo`,
//! peers), one at a time and from 32 connections at once. Every function of the binary either ran is kept, those the
//! idle session ran first, each group hottest first; names the symbol table does not hold
//! (callgrind's placeholders) are dropped. Needs valgrind and `nm` (binutils); takes ~5 minutes,
//! most of it the build. Run it after a rustc or dependency upgrade (`cargo xtask tidy` says
//! when the list was made for another lock file) or when the daemon's idle work changes.

// `wanted` and `link_args` are build.rs's, unit-tested here.
#[allow(dead_code)]
#[path = "../../src/build/link_order.rs"]
mod shared;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::http::Conn;
use crate::node::{prepare_home, remove_home, user_home, Node};

pub use shared::{parse, LIST};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut idle = 45u64;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--idle" => idle = words.next().context("--idle needs seconds")?.parse().context("--idle")?,
            other => anyhow::bail!("unknown argument '{other}' (link-order [--idle SECS])"),
        }
    }
    for tool in ["valgrind", "nm"] {
        let found = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        anyhow::ensure!(found, "`{tool}` is needed (Debian: apt-get install valgrind binutils)");
    }
    let root = crate::repo_root();
    let target_dir = root.join("target/link-order");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--package", "loopsy", "--bin", "loopsy"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C strip=none")
        .current_dir(&root)
        .status()?;
    anyhow::ensure!(status.success(), "the release build with symbols failed");
    let bin = target_dir.join("release/loopsy");
    let symbols = symbol_table(&bin)?;
    let work = std::env::temp_dir().join(format!("loopsy-link-order-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let profiles = profile(&bin, &work, Duration::from_secs(idle))
        .and_then(|(session, main)| Ok((std::fs::read_to_string(session)?, std::fs::read_to_string(main)?)));
    let _ = std::fs::remove_dir_all(&work);
    let (session, main) = profiles?;
    let bin_name = bin.to_string_lossy().into_owned();
    let (session, main) = (self_costs(&session, &bin_name), self_costs(&main, &bin_name));
    let names = order(&session, &main, &symbols);
    anyhow::ensure!(names.len() > 100, "only {} functions profiled: did the daemons run?", names.len());
    let size: u64 = names.iter().map(|n| symbols[*n]).sum();
    let text = header()? + &names.join("\n") + "\n";
    std::fs::write(root.join(LIST), text)?;
    println!(
        "{}: {} functions, {} KiB of code ({} of {} KiB in the binary's function symbols)",
        LIST,
        names.len(),
        size / 1024,
        size / 1024,
        symbols.values().sum::<u64>() / 1024
    );
    Ok(())
}

/// The list's header: what the names were made for.
fn header() -> anyhow::Result<String> {
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())).arg("-vV").output()?;
    let rustc = String::from_utf8_lossy(&rustc.stdout).into_owned();
    let field = |key: &str| {
        rustc.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).map(str::to_string).unwrap_or_default()
    };
    let lock = std::fs::read(crate::repo_root().join("Cargo.lock"))?;
    Ok(format!(
        "# Functions linked first in release builds (build.rs); regenerate with `cargo xtask link-order`.\n\
         # target {}\n# rustc {}\n# lock {}\n",
        field("host:"),
        field("release:"),
        fingerprint(&lock)
    ))
}

/// The defined function symbols of `bin` and their sizes (`nm`).
fn symbol_table(bin: &Path) -> anyhow::Result<HashMap<String, u64>> {
    let output = Command::new("nm").args(["--defined-only", "-S"]).arg(bin).output()?;
    anyhow::ensure!(output.status.success(), "nm {} failed", bin.display());
    Ok(parse_nm(&String::from_utf8_lossy(&output.stdout)))
}

/// `nm -S` lines (`address size type name`) of code symbols: name → size.
fn parse_nm(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                [_, size, "t" | "T", name] => Some((name.to_string(), u64::from_str_radix(size, 16).ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// Runs the two daemons under callgrind; returns their profiles (session, main).
fn profile(bin: &Path, work: &Path, idle: Duration) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (home, key) = prepare_home(bin, "link-order")?;
    let result = (|| {
        let valgrind = |out: &Path| {
            vec![
                "valgrind".to_string(),
                "--tool=callgrind".into(),
                "--demangle=no".into(),
                "--compress-strings=no".into(),
                "--compress-pos=no".into(),
                "--dump-line=no".into(),
                format!("--callgrind-out-file={}", out.display()),
            ]
        };
        let patience = Duration::from_secs(120);
        let (main_out, session_out) = (work.join("main.callgrind"), work.join("session.callgrind"));
        let (mut main, _) = Node::start_under(&valgrind(&main_out), bin, &home, &key, patience)?;
        let loopsy = |args: &[&str]| crate::node::loopsy(bin, &home, args).map(drop);
        // A fleet of three; one of its sessions is restarted under callgrind, with the same home.
        loopsy(&["session", "start-fleet", "--count", "3"])?;
        let session_home = home.join("sessions/worker-1");
        loopsy(&["session", "stop", "worker-1"])?;
        let (mut session, _) = Node::start_under(&valgrind(&session_out), bin, &session_home, &key, patience)?;
        requests(&main)?;
        std::thread::sleep(idle);
        session.stop();
        main.stop();
        loopsy(&["session", "stop-all"])?;
        Ok((session_out, main_out))
    })();
    remove_home(&home);
    result
}

/// The common requests, a few times each in turn, then under load (32 connections at once:
/// the exec queue, group commits of context PUTs), whose code paths serial calls never take,
/// then a file sent and fetched back (the transfer path: multipart, hashing, sendfile).
fn requests(node: &Node) -> anyhow::Result<()> {
    serial(node)?;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..32).map(|_| scope.spawn(|| serial(node))).collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a load worker panicked"))))
    })?;
    let dir = user_home(&node.home).join("link-order-files");
    std::fs::create_dir_all(&dir)?;
    let (source, dest) = (dir.join("source"), dir.join("dest"));
    crate::bench::write_random_file(&source, 4 << 20)?;
    crate::bench::push(node, &source, &dest)?;
    crate::bench::pull(node, &dest)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Each common request a few times, on one connection.
fn serial(node: &Node) -> anyhow::Result<()> {
    let mut conn = Conn::open(&node.addr)?;
    let key = Some(node.key.as_str());
    for round in 0..3 {
        let context = format!("/api/v1/context/link-order-{round}");
        let calls: [(&str, &str, Option<&[u8]>); 6] = [
            ("GET", "/api/v1/health", None),
            ("GET", "/api/v1/status", None),
            ("PUT", &context, Some(br#"{"value":"v"}"#)),
            ("GET", &context, None),
            ("POST", "/api/v1/execute", Some(br#"{"command":"echo","args":["hi"]}"#)),
            ("GET", "/api/v1/peers", None),
        ];
        for (method, path, body) in calls {
            let reply = conn.call(method, path, key, body)?;
            anyhow::ensure!(reply.status < 300, "{method} {path} answered {}", reply.status);
        }
    }
    Ok(())
}

/// Self cost (instructions) of each function of object `object` in a callgrind profile written
/// with `--compress-strings=no`: `ob=`/`fn=` name the current object and function, cost lines
/// follow; the line after `calls=` is the callee's inclusive cost, not the caller's own.
fn self_costs(profile: &str, object: &str) -> HashMap<String, u64> {
    let mut costs = HashMap::new();
    let (mut in_object, mut function, mut call_line) = (false, None::<String>, false);
    for line in profile.lines() {
        if let Some(name) = line.strip_prefix("ob=") {
            in_object = name.trim() == object;
        } else if let Some(name) = line.strip_prefix("fn=") {
            // `'N` marks a recursion level (--separate-recs); the symbol is the same.
            let name = name.trim();
            let name =
                name.rsplit_once('\'').filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit())).map_or(name, |p| p.0);
            function = in_object.then(|| name.to_string());
            if let Some(f) = &function {
                costs.entry(f.clone()).or_insert(0);
            }
        } else if line.starts_with("calls=") {
            call_line = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-' || c == '*') {
            if std::mem::take(&mut call_line) {
                continue;
            }
            if let (Some(f), Some(cost)) =
                (&function, line.split_whitespace().nth(1).and_then(|c| c.parse::<u64>().ok()))
            {
                *costs.get_mut(f).expect("entered at fn=") += cost;
            }
        }
    }
    costs
}

/// The list: what the idle session ran, hottest first, then what only the main daemon ran,
/// hottest first; only names of `symbols`.
fn order<'a>(
    session: &'a HashMap<String, u64>,
    main: &'a HashMap<String, u64>,
    symbols: &HashMap<String, u64>,
) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for costs in [session, main] {
        let mut group: Vec<(&String, &u64)> = costs.iter().filter(|(n, _)| symbols.contains_key(*n)).collect();
        group.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, _) in group {
            if seen.insert(name.as_str()) {
                names.push(name.as_str());
            }
        }
    }
    names
}

/// A short stable fingerprint of the lock file (FNV-1a, 64 bits), recorded in the header: the
/// symbols' hashes change with the dependency graph.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_costs_count_own_lines_of_the_object_only() {
        let profile = "events: Ir\n\
            ob=/lib/libc.so.6\nfn=memcpy\n0 50\n\
            ob=/bin/loopsy\nfn=_ZN1a4main17hE\n0 10\n+2 5\ncfn=_ZN1a3sub17hE\ncalls=1 0\n0 1000\n\
            fn=_ZN1a3sub17hE'2\n0 7\n\
            fn=_ZN1a3sub17hE\n0 3\n";
        let costs = self_costs(profile, "/bin/loopsy");
        assert_eq!(costs.len(), 2, "{costs:?}");
        assert_eq!(costs["_ZN1a4main17hE"], 15, "the callee's inclusive 1000 is not main's own");
        assert_eq!(costs["_ZN1a3sub17hE"], 10, "recursion levels are one symbol");
    }

    #[test]
    fn order_puts_the_idle_sessions_functions_first_and_drops_unknown_names() {
        let map = |pairs: &[(&str, u64)]| pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect::<HashMap<_, _>>();
        let session = map(&[("idle_cold", 1), ("idle_hot", 9), ("0x0000000000401000", 99)]);
        let main = map(&[("request", 50), ("idle_hot", 70)]);
        let symbols = map(&[("idle_cold", 8), ("idle_hot", 8), ("request", 8)]);
        assert_eq!(order(&session, &main, &symbols), ["idle_hot", "idle_cold", "request"]);
    }

    #[test]
    fn nm_lines_give_code_symbols_and_sizes() {
        let table = parse_nm(
            "0000000000001000 0000000000000020 t _ZN1a4main17hE\n\
             0000000000002000 0000000000000010 T main\n\
             0000000000003000 0000000000000008 r _ZN1a5TABLE17hE\n\
             0000000000004000 T no_size\n",
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table["_ZN1a4main17hE"], 0x20);
    }

    #[test]
    fn the_list_parses_with_its_header() {
        let list = parse(
            "# Functions linked first\n# target x86_64-unknown-linux-gnu\n# rustc 1.95.0\n# lock 00ff\n\nf1\n  f2\n",
        );
        assert_eq!(list.target, Some("x86_64-unknown-linux-gnu"));
        assert_eq!(list.rustc, Some("1.95.0"));
        assert_eq!(list.lock, Some("00ff"));
        assert_eq!(list.symbols, ["f1", "f2"]);
    }

    #[test]
    fn build_rs_wants_the_list_only_for_release_linux_builds_of_its_target() {
        let list = parse("# target x86_64-unknown-linux-gnu\nf\n");
        let t = "x86_64-unknown-linux-gnu";
        assert!(shared::wanted("release", t, "linux", &list));
        assert!(!shared::wanted("debug", t, "linux", &list), "debug and test builds are unchanged");
        assert!(!shared::wanted("release", "aarch64-unknown-linux-gnu", "linux", &list), "other targets' names differ");
        assert!(!shared::wanted("release", "x86_64-apple-darwin", "macos", &list));
        assert!(!shared::wanted("release", t, "linux", &parse("# target x86_64-unknown-linux-gnu\n")), "empty list");
        assert!(!shared::wanted("release", t, "linux", &parse("f\n")), "a list without its target");
        assert_eq!(
            shared::link_args("/o/l.txt"),
            ["-Wl,--symbol-ordering-file=/o/l.txt".to_string(), "-Wl,--no-warn-symbol-ordering".to_string()]
        );
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(fingerprint(b""), "cbf29ce484222325");
        assert_eq!(fingerprint(b"a"), "af63dc4c8601ec8c");
    }
}
