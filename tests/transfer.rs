//! File transfer: push, pull, list, mkdir and resumable uploads over raw HTTP (multipart bodies
//! built by hand, so field order, cut connections and odd bytes are under the test's control),
//! the path policy, crashes mid-upload, and the `send`/`pull`/`ls` commands.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::{prerequisite, wait_until, Daemon, Home, Response, TempDir};

const BOUNDARY: &str = "----loopsyTestBoundary7MA4YWxkTrZu0gW";

/// One part of a hand-built multipart body.
enum Part<'a> {
    Field(&'a str, &'a str),
    File(&'a str, &'a [u8]),
}

fn field_head(name: &str) -> String {
    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
}

fn file_head(filename: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
}

fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        match part {
            Part::Field(name, value) => body.extend(format!("{}{value}\r\n", field_head(name)).into_bytes()),
            Part::File(filename, data) => {
                body.extend(file_head(filename).into_bytes());
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend(format!("--{BOUNDARY}--\r\n").into_bytes());
    body
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return hex(&hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// Pseudo-random bytes (so a shifted or truncated copy never matches by accident).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A daemon whose transfer policy allows `<files>/allowed` and denies `<files>/allowed/secret`.
struct Setup {
    daemon: Daemon,
    files: TempDir,
}

impl Setup {
    fn new(name: &str) -> Setup {
        Setup::with(name, |_| {})
    }

    fn with(name: &str, edit: impl FnOnce(&mut crate::support::Yaml)) -> Setup {
        let files = TempDir::new(&format!("{name}-files"));
        let root = std::fs::canonicalize(files.path()).unwrap();
        std::fs::create_dir_all(root.join("allowed/secret")).unwrap();
        std::fs::create_dir_all(root.join("allowed2")).unwrap();
        let home = Home::new(name);
        home.edit_config(|doc| {
            doc["transfer"]["allowedPaths"] = vec![root.join("allowed").display().to_string()].into();
            doc["transfer"]["deniedPaths"] = vec![root.join("allowed/secret").display().to_string()].into();
            edit(doc);
        });
        Setup { daemon: home.start(), files }
    }

    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.files.path()).unwrap()
    }

    /// `<files>/allowed/<rel>` as a string.
    fn allowed(&self, rel: &str) -> String {
        self.root().join("allowed").join(rel).display().to_string()
    }

    fn push(&self, parts: &[Part]) -> Response {
        self.push_with(parts, &[])
    }

    fn push_with(&self, parts: &[Part], headers: &[(&str, &str)]) -> Response {
        let mut req = self
            .daemon
            .req("POST", "/api/v1/transfer/push")
            .header("Content-Type", &format!("multipart/form-data; boundary={BOUNDARY}"));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req.body(multipart(parts)).send()
    }

    fn pull(&self, body: serde_json::Value) -> Response {
        self.daemon.req("POST", "/api/v1/transfer/pull").json(&body).send()
    }

    fn list(&self, path: &str) -> Response {
        self.daemon.req("POST", "/api/v1/transfer/list").json(&json!({"path": path})).send()
    }

    /// Names in `dir` (hidden temporary files included).
    fn names(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

#[test]
fn empty_and_small_files_round_trip_with_checksums() {
    let s = Setup::new("tx-roundtrip");
    for (name, content) in
        [("empty.bin", Vec::new()), ("small.txt", b"hello\n".to_vec()), ("mid.bin", data(300_000, 1))]
    {
        let dest = s.allowed(name);
        let reply = s.push(&[Part::Field("destPath", &dest), Part::File(name, &content)]).expect(200);
        assert_eq!(reply["path"], dest.as_str());
        assert_eq!(reply["size"], content.len());
        assert_eq!(reply["checksum"], sha256_hex(&content));
        assert!(reply["duration"].is_u64());
        assert_eq!(std::fs::read(&dest).unwrap(), content);

        let res = s.pull(json!({"sourcePath": dest, "checksum": true}));
        assert_eq!(res.status, 200);
        assert_eq!(res.body, content);
        assert_eq!(res.header("content-type"), Some("application/octet-stream"));
        assert_eq!(res.header("x-loopsy-file-size"), Some(content.len().to_string().as_str()));
        assert_eq!(res.header("content-length"), Some(content.len().to_string().as_str()));
        assert_eq!(res.header("x-loopsy-sha256"), Some(sha256_hex(&content).as_str()));
        assert!(res.header("content-disposition").unwrap().contains(&format!("filename=\"{name}\"")));
    }
    // Without "checksum": true the hash is not computed.
    assert_eq!(s.pull(json!({"sourcePath": s.allowed("small.txt")})).header("x-loopsy-sha256"), None);
    assert_eq!(s.names(&s.allowed("")), ["empty.bin", "mid.bin", "secret", "small.txt"], "no temporary files left");
}

#[test]
fn the_file_part_may_come_before_dest_path() {
    let s = Setup::new("tx-order");
    let content = data(3 * 1024 * 1024 + 11, 2);
    let dest = s.allowed("late.bin");
    let sha = sha256_hex(&content);
    let reply = s
        .push(&[Part::File("late.bin", &content), Part::Field("destPath", &dest), Part::Field("sha256", &sha)])
        .expect(200);
    assert_eq!(reply["checksum"], sha.as_str());
    assert_eq!(sha256_file(Path::new(&dest)), sha);
    // A file first and a destPath that is not allowed: refused, and nothing stays in staging.
    let outside = s.root().join("allowed2/x").display().to_string();
    s.push(&[Part::File("x", b"data"), Part::Field("destPath", &outside)]).expect_error(403, 4001);
    s.push(&[Part::File("x", b"data")]).expect_error(400, 9003);
    assert!(!Path::new(&outside).exists());
    let staging = s.daemon.home.path().join("transfer/staging");
    assert_eq!(std::fs::read_dir(staging).map(|d| d.count()).unwrap_or(0), 0, "staging is empty");
}

#[test]
fn a_checksum_mismatch_leaves_nothing_at_the_destination() {
    let s = Setup::new("tx-mismatch");
    let dest = s.allowed("bad.bin");
    let wrong = "0".repeat(64);
    let message = s
        .push(&[Part::Field("destPath", &dest), Part::File("bad.bin", b"payload"), Part::Field("sha256", &wrong)])
        .expect_error(400, 4004);
    assert!(message.contains("checksum"), "{message}");
    s.push_with(&[Part::Field("destPath", &dest), Part::File("bad.bin", b"payload")], &[("X-Loopsy-Sha256", &wrong)])
        .expect_error(400, 4004);
    // The header and the field are both checked.
    let good = sha256_hex(b"payload");
    s.push_with(
        &[Part::Field("destPath", &dest), Part::File("bad.bin", b"payload"), Part::Field("sha256", &good)],
        &[("X-Loopsy-Sha256", &wrong)],
    )
    .expect_error(400, 4004);
    s.push(&[Part::Field("destPath", &dest), Part::Field("sha256", "nothex"), Part::File("bad.bin", b"x")])
        .expect_error(400, 9003);
    assert_eq!(s.names(&s.allowed("")), ["secret"]);
    // An existing file is not touched by a failed push.
    std::fs::write(&dest, b"old").unwrap();
    s.push(&[Part::Field("destPath", &dest), Part::File("bad.bin", b"new"), Part::Field("sha256", &wrong)])
        .expect_error(400, 4004);
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    let reply =
        s.push(&[Part::Field("destPath", &dest), Part::File("bad.bin", b"payload"), Part::Field("sha256", &good)]);
    assert_eq!(reply.expect(200)["checksum"], good.as_str());
}

#[test]
fn an_oversized_push_is_413_and_writes_nothing() {
    let s = Setup::with("tx-oversize", |doc| doc["transfer"]["maxFileSize"] = 1000.into());
    let dest = s.allowed("big.bin");
    // Counted while streaming (the body is within the up-front allowance).
    let message =
        s.push(&[Part::Field("destPath", &dest), Part::File("big.bin", &data(5000, 3))]).expect_error(413, 4003);
    assert!(message.contains("max size"), "{message}");
    // Refused on Content-Length before any byte is read.
    s.push(&[Part::Field("destPath", &dest), Part::File("big.bin", &data(2 * 1024 * 1024, 3))]).expect_error(413, 4003);
    // Exactly the limit is fine.
    s.push(&[Part::Field("destPath", &dest), Part::File("ok.bin", &data(1000, 3))]).expect(200);
    assert_eq!(std::fs::metadata(&dest).ok().map(|m| m.len()), Some(1000));
    std::fs::remove_file(&dest).unwrap();
    assert_eq!(s.names(&s.allowed("")), ["secret"]);
    // Pull refuses files over the limit too.
    std::fs::write(s.allowed("huge"), data(1001, 4)).unwrap();
    s.pull(json!({"sourcePath": s.allowed("huge")})).expect_error(413, 4003);
}

#[test]
fn impossible_destinations_are_clear_4xx_and_the_daemon_survives() {
    let s = Setup::new("tx-dest");
    let push_to = |dest: &str| s.push(&[Part::Field("destPath", dest), Part::File("f", b"data")]);
    let message = push_to(&s.allowed("")).expect_error(409, 4006);
    assert!(message.contains("is a directory"), "{message}");
    push_to(&s.allowed("secret/..x")).expect_error(403, 4001);
    let message = push_to(&s.allowed("missing/dir/f")).expect_error(409, 4006);
    assert!(message.contains("does not exist"), "{message}");
    std::fs::write(s.allowed("plain"), b"x").unwrap();
    push_to(&s.allowed("plain/f")).expect_error(409, 4006);
    s.daemon.get("/api/v1/health").expect(200);
}

#[test]
fn malformed_pushes_are_refused_with_json_errors() {
    let s = Setup::new("tx-malformed");
    s.daemon.req("POST", "/api/v1/transfer/push").json(&json!({"destPath": "/x"})).send().expect_error(415, 9007);
    s.daemon.req("POST", "/api/v1/transfer/push").send().expect_error(415, 9007);
    let dest = s.allowed("f");
    assert_eq!(s.push(&[Part::Field("destPath", &dest)]).expect_error(400, 4005), "No file in request");
    assert_eq!(s.push(&[Part::File("f", b"x")]).expect_error(400, 9003), "Missing destPath field");
    s.push(&[Part::Field("destPath", ""), Part::File("f", b"x")]).expect_error(400, 9003);
    // A cut-off multipart body (no closing boundary).
    let mut body = multipart(&[Part::Field("destPath", &dest), Part::File("f", b"abc")]);
    body.truncate(body.len() - 20);
    let res = s
        .daemon
        .req("POST", "/api/v1/transfer/push")
        .header("Content-Type", &format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .send();
    assert!((400..500).contains(&res.status), "{}: {}", res.status, res.text());
    assert!(!Path::new(&dest).exists());
    s.daemon.anon("POST", "/api/v1/transfer/push").send().expect_error(401, 1001);
    s.pull(json!({})).expect_error(400, 9003);
    s.list("").expect_error(400, 9003);
}

#[test]
fn the_path_policy_refuses_escapes_for_push_pull_and_list() {
    let s = Setup::new("tx-policy");
    let root = s.root();
    std::fs::write(root.join("allowed2/outside.txt"), b"outside").unwrap();
    std::fs::write(root.join("allowed/secret/key"), b"secret").unwrap();
    std::fs::create_dir_all(root.join("allowed/.secretx")).unwrap();
    std::fs::write(root.join("allowed/.secretx/ok"), b"fine").unwrap();
    std::os::unix::fs::symlink(root.join("allowed2/outside.txt"), root.join("allowed/link-out")).unwrap();
    std::os::unix::fs::symlink(root.join("allowed2"), root.join("allowed/dir-out")).unwrap();
    let refused = [
        format!("{}/allowed/../allowed2/outside.txt", root.display()), // traversal
        "allowed/x".to_string(),                                       // relative
        format!("{}/allowed/a\0b", root.display()),                    // NUL byte
        root.join("allowed2/outside.txt").display().to_string(),       // sibling prefix
        root.join("allowed/link-out").display().to_string(),           // symlink escape
        root.join("allowed/dir-out/outside.txt").display().to_string(), // through a linked directory
        root.join("allowed/secret/key").display().to_string(),         // denied
        root.join("allowed/secret").display().to_string(),
    ];
    for path in &refused {
        let message = s.pull(json!({"sourcePath": path})).expect_error(403, 4001);
        assert!(message.starts_with(&format!("Path '{path}' is not allowed")), "{message}");
        s.list(path).expect_error(403, 4001);
        s.push(&[Part::Field("destPath", path), Part::File("f", b"x")]).expect_error(403, 4001);
    }
    assert_eq!(std::fs::read(root.join("allowed2/outside.txt")).unwrap(), b"outside", "nothing was overwritten");
    assert_eq!(std::fs::read(root.join("allowed/secret/key")).unwrap(), b"secret");
    // Component matching: `.secretx` is not under the denied `secret`, and the tree itself is fine.
    assert_eq!(s.pull(json!({"sourcePath": root.join("allowed/.secretx/ok")})).body, b"fine");
    s.list(&s.allowed("")).expect(200);
    // The daemon's own data directory (it holds the keys) is never served.
    let open = Setup::with("tx-policy-open", |doc| doc["transfer"]["allowedPaths"] = Vec::<String>::new().into());
    let config_open = open.daemon.home.path().join("config.yaml").display().to_string();
    open.pull(json!({"sourcePath": config_open})).expect_error(403, 4001);
    assert_eq!(
        open.pull(json!({"sourcePath": root.join("allowed2/outside.txt")})).body,
        b"outside",
        "empty allow list = all"
    );
}

#[test]
fn pull_serves_byte_ranges() {
    let s = Setup::new("tx-range");
    let content = data(10_000, 5);
    let path = s.allowed("r.bin");
    std::fs::write(&path, &content).unwrap();
    let range = |header: &str| {
        s.daemon
            .req("POST", "/api/v1/transfer/pull")
            .header("Range", header)
            .json(&json!({"sourcePath": path, "checksum": true}))
            .send()
    };
    let res = range("bytes=100-199");
    assert_eq!(res.status, 206);
    assert_eq!(res.body, &content[100..200]);
    assert_eq!(res.header("content-range"), Some("bytes 100-199/10000"));
    assert_eq!(res.header("x-loopsy-file-size"), Some("10000"));
    assert_eq!(res.header("x-loopsy-sha256"), Some(sha256_hex(&content).as_str()), "the whole file's hash");
    assert_eq!(range("bytes=9000-").body, &content[9000..]);
    assert_eq!(range("bytes=-10").body, &content[9990..]);
    let res = range("bytes=10000-");
    assert_eq!(res.expect_error(416, 4008), "range not satisfiable: the file has 10000 bytes");
    assert_eq!(res.header("content-range"), Some("bytes */10000"));
    let whole = range("bytes=0-1,5-6");
    assert_eq!((whole.status, whole.body.len()), (200, 10_000), "several ranges: the whole file");
}

/// A pull of `path` from `d` over pinned TLS: the response body.
fn pull_over_tls(d: &Daemon, path: &str) -> Vec<u8> {
    let tcp = std::net::TcpStream::connect(&d.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let paths = loopsy::paths::Paths::from_dir(d.home.path()).unwrap();
    let pin = loopsy::tls::local_fingerprint(&paths).expect("the daemon's certificate");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(loopsy::tls::client_config(&pin), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let body = json!({"sourcePath": path}).to_string();
    let head = format!(
        "POST /api/v1/transfer/pull HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        d.key,
        body.len()
    );
    tls.write_all(format!("{head}{body}").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let (start, length) = loop {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "the answer ended early: {}", String::from_utf8_lossy(&answer[..answer.len().min(300)]));
        answer.extend_from_slice(&buf[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")).expect("a length").trim();
            break (end + 4, length.parse::<usize>().unwrap());
        }
    };
    while answer.len() < start + length {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "the body ended after {} of {length} bytes", answer.len() - start);
        answer.extend_from_slice(&buf[..n]);
    }
    answer.split_off(start)
}

// A pull larger than one coalesced write goes out with sendfile on plain HTTP (a whole file and a
// range, which starts at its offset), and through the reader over TLS, which must encrypt it.
#[test]
fn large_pulls_go_out_with_sendfile_on_plain_connections_and_whole_over_tls() {
    let s = Setup::with("tx-sendfile", |doc| {
        doc["logging"]["level"] = "debug".into();
        doc["tls"]["enabled"] = true.into();
    });
    let content = data(3 << 20, 9);
    let path = s.allowed("big.bin");
    std::fs::write(&path, &content).unwrap();
    let sent = || s.daemon.output.lock().unwrap().iter().filter(|line| line.contains("with sendfile")).count();

    let whole = s.pull(json!({"sourcePath": path}));
    assert_eq!(whole.status, 200);
    assert!(whole.body == content, "the whole file, {} bytes", whole.body.len());
    let part = s
        .daemon
        .req("POST", "/api/v1/transfer/pull")
        .header("Range", "bytes=1000001-2999999")
        .json(&json!({"sourcePath": path}))
        .send();
    assert_eq!(part.status, 206);
    assert!(part.body == content[1_000_001..3_000_000], "the range, {} bytes", part.body.len());
    wait_until(Duration::from_secs(5), "both sent with sendfile", || sent() == 2);

    assert!(pull_over_tls(&s.daemon, &path) == content, "the file arrives whole over TLS");
    // Log lines are written in order: had the TLS pull used sendfile, its line would come
    // before the next plain pull's.
    assert!(s.pull(json!({"sourcePath": path})).body == content);
    wait_until(Duration::from_secs(5), "the third plain pull's line", || sent() >= 3);
    assert_eq!(sent(), 3, "the TLS pull went through the reader");
}

// The head promised the file's length: when the file shrinks during the pull, the connection
// closes at once, so the client sees a truncated body instead of waiting for bytes that never come.
#[test]
fn a_file_that_shrinks_during_a_pull_ends_the_connection() {
    let s = Setup::new("tx-shrink");
    let path = s.allowed("shrinking.bin");
    std::fs::write(&path, data(64 << 20, 3)).unwrap();
    let mut stream = s
        .daemon
        .req("POST", "/api/v1/transfer/pull")
        .timeout(Duration::from_secs(30))
        .json(&json!({"sourcePath": path}))
        .stream();
    assert_eq!(stream.status, 200);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 20).unwrap();
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let error = stream.body.read_to_end(&mut received).expect_err("a truncated body is an error");
    assert!(started.elapsed() < Duration::from_secs(10), "ended after {:?}: {error}", started.elapsed());
    assert!(received.len() < 64 << 20, "{} bytes", received.len());
}

#[test]
fn pull_and_list_report_missing_things_as_4xx() {
    let s = Setup::new("tx-missing");
    let message = s.pull(json!({"sourcePath": s.allowed("nope")})).expect_error(404, 4002);
    assert_eq!(message, format!("File not found: {}", s.allowed("nope")));
    s.pull(json!({"sourcePath": s.allowed("")})).expect_error(404, 4002);
    s.list(&s.allowed("nope")).expect_error(404, 4002);
    std::fs::write(s.allowed("plain"), b"x").unwrap();
    s.list(&s.allowed("plain")).expect_error(404, 4002);
}

#[test]
fn list_and_mkdir_describe_and_create_directories() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new("tx-list");
    std::fs::write(s.allowed("f.txt"), b"12345").unwrap();
    std::fs::set_permissions(s.allowed("f.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink(s.allowed("f.txt"), s.allowed("link")).unwrap();
    std::os::unix::fs::symlink(s.allowed("gone"), s.allowed("dangling")).unwrap();
    let mkdir = |path: &str, mode: Option<&str>| {
        s.daemon.req("POST", "/api/v1/transfer/mkdir").json(&json!({"path": path, "mode": mode})).send()
    };
    assert_eq!(mkdir(&s.allowed("d/e"), Some("750")).expect(200)["created"], true);
    assert_eq!(mkdir(&s.allowed("d/e"), None).expect(200)["created"], false);
    mkdir(&s.allowed("f.txt"), None).expect_error(409, 4006);
    mkdir(&s.allowed("secret/x"), None).expect_error(403, 4001);
    mkdir(&s.allowed("x"), Some("999")).expect_error(400, 9003);
    assert_eq!(std::fs::metadata(s.allowed("d/e")).unwrap().permissions().mode() & 0o777, 0o750);

    let listing = s.list(&s.allowed("")).expect(200);
    let files = listing["files"].as_array().unwrap();
    let entry = |name: &str| files.iter().find(|f| f["name"] == name).cloned();
    let f = entry("f.txt").unwrap();
    assert_eq!((f["type"].as_str(), f["size"].as_u64(), f["mode"].as_u64()), (Some("file"), Some(5), Some(0o640)));
    assert_eq!(f["path"], s.allowed("f.txt").as_str());
    assert!(f["modified"].as_f64().unwrap() > 1.0e12);
    assert_eq!(entry("link").unwrap()["type"], "symlink");
    assert_eq!(entry("d").unwrap()["type"], "directory");
    assert!(entry("dangling").is_none(), "entries whose stat fails are left out");
    assert!(listing.get("truncated").is_none());
}

/// Opens a push by hand and sends its head and the first `send` bytes of a `len`-byte file part
/// (plus, first, the given fields); the caller decides what happens to the connection.
fn start_push(daemon: &Daemon, fields: &[(&str, &str)], len: u64, content: &[u8]) -> std::net::TcpStream {
    let mut head = String::new();
    for (name, value) in fields {
        head.push_str(&format!("{}{value}\r\n", field_head(name)));
    }
    head.push_str(&file_head("part.bin"));
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let total = head.len() as u64 + len + tail.len() as u64;
    let mut tcp = std::net::TcpStream::connect(&daemon.addr).unwrap();
    write!(
        tcp,
        "POST /api/v1/transfer/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {total}\r\n\r\n{head}",
        daemon.key
    )
    .unwrap();
    tcp.write_all(content).unwrap();
    tcp
}

fn temp_with_data(dir: &str, marker: &str) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(marker) && e.metadata().is_ok_and(|m| m.len() > 0))
}

#[test]
fn a_daemon_killed_mid_push_leaves_nothing_at_the_destination() {
    let Setup { mut daemon, files } = Setup::new("tx-kill");
    let dir = std::fs::canonicalize(files.path()).unwrap().join("allowed").display().to_string();
    let dest = format!("{dir}/killed.bin");
    let tcp = start_push(&daemon, &[("destPath", &dest)], 64 << 20, &vec![7u8; 4 << 20]);
    wait_until(Duration::from_secs(10), "the daemon wrote part of the upload", || temp_with_data(&dir, ".loopsy-tmp-"));
    daemon.kill();
    drop(tcp);
    assert!(!Path::new(&dest).exists());
    let daemon = daemon.restart();
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["secret"], "the restarted daemon removed the temporary file");
    daemon.get("/api/v1/health").expect(200);
}

#[test]
fn an_interrupted_resumable_push_continues_where_it_stopped() {
    let s = Setup::new("tx-resume");
    let content = data(5 * 1024 * 1024 + 3, 6);
    let sha = sha256_hex(&content);
    let dest = s.allowed("resumed.bin");
    let upload = "upload-0001";
    let status_path = format!("/api/v1/transfer/uploads/{upload}?destPath={}", dest.replace('/', "%2F"));
    let status = s.daemon.get(&status_path).expect(200);
    assert_eq!((status["offset"].as_u64(), status["active"].as_bool()), (Some(0), Some(false)));
    assert!(status["maxFileSize"].as_u64().unwrap() > 0);

    // Send 3 MiB of the file part, then cut the connection.
    let tcp = start_push(
        &s.daemon,
        &[("destPath", &dest), ("uploadId", upload), ("offset", "0")],
        content.len() as u64,
        &content[..3 << 20],
    );
    wait_until(Duration::from_secs(10), "the daemon holds the upload", || {
        s.daemon.get(&status_path).expect(200)["active"] == true
    });
    tcp.shutdown(std::net::Shutdown::Both).unwrap();
    wait_until(Duration::from_secs(10), "the daemon noticed the cut", || {
        s.daemon.get(&status_path).expect(200)["active"] == false
    });
    let offset = s.daemon.get(&status_path).expect(200)["offset"].as_u64().unwrap();
    assert!(offset > 0 && offset <= 3 << 20, "offset {offset}");
    assert!(!Path::new(&dest).exists(), "nothing at the destination yet");

    // An offset beyond what arrived is a conflict; the right one completes the file.
    let too_far = (offset + 1).to_string();
    s.push(&[
        Part::Field("destPath", &dest),
        Part::Field("uploadId", upload),
        Part::Field("offset", &too_far),
        Part::File("r", b"x"),
    ])
    .expect_error(409, 4007);
    let at = offset.to_string();
    let rest = &content[offset as usize..];
    let reply = s
        .push(&[
            Part::Field("destPath", &dest),
            Part::Field("uploadId", upload),
            Part::Field("offset", &at),
            Part::File("r", rest),
            Part::Field("sha256", &sha),
        ])
        .expect(200);
    assert_eq!((reply["size"].as_u64(), reply["checksum"].as_str()), (Some(content.len() as u64), Some(sha.as_str())));
    assert_eq!(sha256_file(Path::new(&dest)), sha);
    assert_eq!(s.daemon.get(&status_path).expect(200)["offset"], 0, "the part is gone");
    assert_eq!(s.names(&s.allowed("")), ["resumed.bin", "secret"]);

    // uploadId after the file part is refused; a wrong final checksum discards the part.
    s.push(&[Part::Field("destPath", &dest), Part::File("r", b"x"), Part::Field("uploadId", upload)])
        .expect_error(409, 4007);
    s.push(&[
        Part::Field("destPath", &dest),
        Part::Field("uploadId", upload),
        Part::File("r", b"xyz"),
        Part::Field("sha256", &sha),
    ])
    .expect_error(400, 4004);
    assert_eq!(s.daemon.get(&status_path).expect(200)["offset"], 0);
    assert_eq!(sha256_file(Path::new(&dest)), sha, "the earlier file is untouched");
    // A part can be abandoned explicitly.
    let tcp = start_push(&s.daemon, &[("destPath", &dest), ("uploadId", upload)], 4 << 20, &[1u8; 2 << 20]);
    wait_until(Duration::from_secs(10), "the daemon holds the upload", || {
        s.daemon.get(&status_path).expect(200)["active"] == true
    });
    s.daemon.req("DELETE", &status_path).send().expect_error(409, 4007);
    drop(tcp);
    wait_until(Duration::from_secs(10), "the daemon noticed the cut", || {
        s.daemon.get(&status_path).expect(200)["active"] == false
    });
    assert!(s.daemon.get(&status_path).expect(200)["offset"].as_u64() > Some(0));
    s.daemon.req("DELETE", &status_path).send().expect(200);
    assert_eq!(s.names(&s.allowed("")), ["resumed.bin", "secret"]);
    s.daemon
        .get(&format!("/api/v1/transfer/uploads/bad?destPath={}", dest.replace('/', "%2F")))
        .expect_error(400, 9003);
}

#[test]
fn an_interrupted_pull_resumes_with_a_range() {
    let s = Setup::new("tx-pull-resume");
    let content = data(4 * 1024 * 1024 + 5, 7);
    let path = s.allowed("p.bin");
    std::fs::write(&path, &content).unwrap();
    // Read part of the body, then drop the connection.
    let mut stream =
        s.daemon.req("POST", "/api/v1/transfer/pull").json(&json!({"sourcePath": path, "checksum": true})).stream();
    let sha = stream.headers.iter().find(|(n, _)| n == "x-loopsy-sha256").unwrap().1.clone();
    let mut first = vec![0u8; 1_000_000];
    stream.body.read_exact(&mut first).unwrap();
    stream.close();
    let res = s
        .daemon
        .req("POST", "/api/v1/transfer/pull")
        .header("Range", &format!("bytes={}-", first.len()))
        .json(&json!({"sourcePath": path}))
        .send();
    assert_eq!(res.status, 206);
    first.extend_from_slice(&res.body);
    assert_eq!(sha256_hex(&first), sha);
}

#[test]
fn a_multi_gib_sparse_file_round_trips() {
    let size: u64 = (2 << 30) + 1; // past 2^31: no 32-bit sizes anywhere
    let s = Setup::with("tx-huge", |doc| doc["transfer"]["maxFileSize"] = (3u64 << 30).into());
    // The source is sparse, the pushed copy is not: it needs its size on disk, plus some slack.
    let needed = size + (256 << 20);
    let Some(free) = prerequisite(crate::support::skip::free_disk(&s.root(), needed)) else { return };
    eprintln!("{} has {} MiB free; this test writes {} MiB", s.root().display(), free >> 20, needed >> 20);
    let source = s.root().join("allowed2/sparse.bin");
    let file = std::fs::File::create(&source).unwrap();
    file.set_len(size).unwrap();
    drop(file);
    let expected = sha256_file(&source);

    let dest = s.allowed("huge.bin");
    let head = format!("{}{dest}\r\n{}", field_head("destPath"), file_head("sparse.bin"));
    let tail = format!("\r\n{}{expected}\r\n--{BOUNDARY}--\r\n", field_head("sha256"));
    let total = head.len() as u64 + size + tail.len() as u64;
    let res = s
        .daemon
        .req("POST", "/api/v1/transfer/push")
        .header("Content-Type", &format!("multipart/form-data; boundary={BOUNDARY}"))
        .timeout(Duration::from_secs(600))
        .send_with(total, |tcp| {
            tcp.write_all(head.as_bytes())?;
            let mut source = std::fs::File::open(&source)?;
            std::io::copy(&mut source, tcp)?;
            tcp.write_all(tail.as_bytes())
        })
        .unwrap();
    let reply = res.expect(200);
    assert_eq!((reply["size"].as_u64(), reply["checksum"].as_str()), (Some(size), Some(expected.as_str())));
    std::fs::remove_file(&source).unwrap();

    // Pull it back, hashing as it streams (never in memory).
    let mut stream = s
        .daemon
        .req("POST", "/api/v1/transfer/pull")
        .json(&json!({"sourcePath": dest}))
        .timeout(Duration::from_secs(600))
        .stream();
    assert_eq!(stream.status, 200);
    let length = stream.headers.iter().find(|(n, _)| n == "content-length").unwrap().1.clone();
    assert_eq!(length, size.to_string());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = stream.body.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
        hasher.update(&buf[..n]);
    }
    assert_eq!((got, hex(&hasher.finalize())), (size, expected));
    let rss_kib = daemon_peak_rss_kib(s.daemon.pid());
    eprintln!("daemon peak RSS after moving {size} bytes both ways: {rss_kib} KiB");
    assert!(rss_kib < 64 * 1024, "daemon memory stays flat: VmHWM {rss_kib} KiB");
}

/// `VmHWM` of a process, in KiB.
fn daemon_peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_transfer_rate_limit_applies_to_a_peers_transfer_routes() {
    let peer_key = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
    let s = Setup::with("tx-rate", |doc| {
        doc["rateLimits"]["transfer"] = 2.into();
        doc["auth"]["allowedKeys"]["bob"] = peer_key.into();
    });
    let bob = |method: &str, path: &str| s.daemon.anon(method, path).key(peer_key);
    let body = json!({"path": s.allowed("")});
    bob("POST", "/api/v1/transfer/list").json(&body).send().expect(200);
    bob("POST", "/api/v1/transfer/list").json(&body).send().expect(200);
    let res = bob("POST", "/api/v1/transfer/pull").json(&json!({"sourcePath": s.allowed("x")})).send();
    res.expect_error(429, 9002);
    assert!(res.header("retry-after").is_some());
    let push = bob("POST", "/api/v1/transfer/push")
        .header("Content-Type", &format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(multipart(&[Part::Field("destPath", &s.allowed("f")), Part::File("f", b"x")]));
    push.send().expect_error(429, 9002);
    // The upload status is not limited, and tells a client to wait before sending a big body.
    let upload = format!("/api/v1/transfer/uploads/upload-0001?destPath={}", s.allowed("f"));
    let status = bob("GET", &upload).send().expect(200);
    assert!(status["retryAfter"].as_u64().unwrap() > 0, "{status}");
    // Other categories are not affected; the owner is not limited.
    bob("GET", "/api/v1/status").send().expect(200);
    s.list(&s.allowed("")).expect(200);
    assert!(s.daemon.get(&upload).expect(200).get("retryAfter").is_none_or(|v| v.is_null()));
}

#[test]
fn the_openapi_document_describes_the_transfer_routes() {
    let daemon = Daemon::start("tx-openapi");
    let doc = daemon.anon("GET", "/api/v1/openapi.json").send().expect(200);
    for (path, method) in [
        ("/api/v1/transfer/push", "post"),
        ("/api/v1/transfer/pull", "post"),
        ("/api/v1/transfer/list", "post"),
        ("/api/v1/transfer/mkdir", "post"),
        ("/api/v1/transfer/uploads/{uploadId}", "get"),
        ("/api/v1/transfer/uploads/{uploadId}", "delete"),
    ] {
        assert!(doc["paths"][path][method]["responses"]["200"].is_object(), "{method} {path}");
    }
    let form = &doc["components"]["schemas"]["PushForm"]["properties"];
    for field in ["destPath", "file", "sha256", "mode", "uploadId", "offset"] {
        assert!(form[field].is_object(), "{field} is documented");
    }
}

#[test]
fn send_pull_and_ls_move_single_files_through_the_cli() {
    let s = Setup::new("tx-cli");
    let content = data(1_500_000, 8);
    let source = s.root().join("allowed2/source.bin");
    std::fs::write(&source, &content).unwrap();
    let src = source.display().to_string();
    let dest = s.allowed("sent.bin");
    let run = s.daemon.loopsy(&["send", &s.daemon.addr, &src, &dest, "--json"]).success();
    let reply = run.json();
    assert_eq!(
        (reply["size"].as_u64(), reply["checksum"].as_str()),
        (Some(content.len() as u64), Some(sha256_hex(&content).as_str()))
    );
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    // A destination ending in / receives the file under its own name.
    s.daemon.loopsy(&["send", "local", &src, &format!("{}/", s.allowed(""))]).success().stdout_has("File sent:");
    assert!(Path::new(&s.allowed("source.bin")).exists());

    let back = s.root().join("allowed2/back/copy.bin");
    let run = s.daemon.loopsy(&["pull", "local", &dest, &back.display().to_string(), "--json"]).success();
    assert_eq!(run.json()["verified"], true);
    assert_eq!(std::fs::read(&back).unwrap(), content);
    assert_eq!(std::fs::read_dir(back.parent().unwrap()).unwrap().count(), 1, "no partial file left");

    let run = s.daemon.loopsy(&["ls", "local", &s.allowed("")]).success();
    assert!(
        run.stdout.contains("sent.bin") && run.stdout.contains("d ") && run.stdout.contains("secret/"),
        "{}",
        run.stdout
    );
    let listing = s.daemon.loopsy(&["ls", "local", &s.allowed(""), "--json"]).success().json();
    assert!(listing["files"].as_array().unwrap().iter().any(|f| f["name"] == "sent.bin"));
}

#[test]
fn the_cli_resumes_a_partial_download_and_discards_a_bad_one() {
    let s = Setup::new("tx-cli-resume");
    let content = data(2_000_000, 9);
    let remote = s.allowed("r.bin");
    std::fs::write(&remote, &content).unwrap();
    let local_dir = s.root().join("allowed2");
    let dest = local_dir.join("r.bin");
    let part = local_dir.join(".r.bin.loopsy-part");
    std::fs::write(&part, &content[..700_000]).unwrap();
    let run = s.daemon.loopsy(&["pull", "local", &remote, &dest.display().to_string(), "--json"]).success();
    assert_eq!(run.json()["resumedFrom"], 700_000);
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    assert!(!part.exists());
    // A partial file that does not match the source is detected by the checksum and redone.
    std::fs::remove_file(&dest).unwrap();
    std::fs::write(&part, vec![0u8; 500_000]).unwrap();
    let run = s.daemon.loopsy(&["pull", "local", &remote, &dest.display().to_string(), "--json"]).success();
    assert_eq!(run.json()["resumedFrom"], 0);
    assert_eq!(std::fs::read(&dest).unwrap(), content);
}

#[test]
fn send_r_and_pull_r_copy_a_tree_with_modes_and_empty_directories() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new("tx-tree");
    let mode = |path: &Path| std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777;
    let src = s.root().join("allowed2/tree");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    std::fs::write(src.join("sub/script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(src.join("sub/deeper/data.bin"), data(300_000, 10)).unwrap();
    std::fs::write(src.join("private"), b"p").unwrap();
    std::fs::set_permissions(src.join("sub/script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(src.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(src.join("sub/deeper"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();

    let remote = s.allowed("copy");
    let run = s.daemon.loopsy(&["send", "-r", "local", &src.display().to_string(), &remote, "--json"]).success();
    let report = run.json();
    assert_eq!(report["files"].as_array().unwrap().len(), 4);
    assert_eq!(report["skipped"], json!([src.join("link").display().to_string()]));
    assert_eq!(report["failed"], json!([]));

    let back = s.root().join("allowed2/back");
    s.daemon
        .loopsy(&["pull", "-r", "local", &remote, &back.display().to_string()])
        .success()
        .stdout_has("pulled 4 file(s)");
    for tree in [Path::new(&remote), back.as_path()] {
        assert_eq!(std::fs::read(tree.join("top.txt")).unwrap(), b"top");
        assert_eq!(std::fs::read(tree.join("sub/deeper/data.bin")).unwrap(), data(300_000, 10));
        assert_eq!(mode(&tree.join("sub/script.sh")), 0o755, "{}", tree.display());
        assert_eq!(mode(&tree.join("private")), 0o600);
        assert_eq!(mode(&tree.join("sub/deeper")), 0o750);
        assert!(tree.join("empty").is_dir());
        assert!(
            !tree.join("link").exists() && std::fs::symlink_metadata(tree.join("link")).is_err(),
            "links are not copied"
        );
    }
    // Without -r a directory is refused.
    s.daemon.loopsy(&["send", "local", &src.display().to_string(), &remote]).code(2).stderr_has("use -r");
}

#[test]
fn a_tree_copy_reports_failed_files_and_copies_the_rest() {
    let s = Setup::new("tx-tree-fail");
    // The destination tree's `secret` directory is denied on the peer.
    let src = s.root().join("allowed2/t");
    std::fs::create_dir_all(src.join("secret")).unwrap();
    std::fs::write(src.join("ok.txt"), b"ok").unwrap();
    std::fs::write(src.join("secret/no.txt"), b"no").unwrap();
    let run = s.daemon.loopsy(&["send", "-r", "local", &src.display().to_string(), &s.allowed(""), "--json"]).code(2);
    let report = run.json();
    assert_eq!(report["files"].as_array().unwrap().len(), 1);
    assert!(!report["failed"].as_array().unwrap().is_empty());
    assert_eq!(std::fs::read(s.allowed("ok.txt")).unwrap(), b"ok");
    assert!(!Path::new(&s.allowed("secret/no.txt")).exists());
}

#[test]
fn cli_transfer_errors_exit_non_zero_with_a_message() {
    let s = Setup::new("tx-cli-errors");
    let file = s.root().join("allowed2/f.txt");
    std::fs::write(&file, b"x").unwrap();
    let f = file.display().to_string();
    s.daemon.loopsy(&["send", "local", "/nonexistent/file", &s.allowed("x")]).code(2).stderr_has("/nonexistent/file");
    s.daemon.loopsy(&["send", "local", &f, "/etc/x"]).code(2).stderr_has("not allowed");
    s.daemon.loopsy(&["send", "local", &f, &s.allowed("no/such/dir/x")]).code(2).stderr_has("does not exist");
    s.daemon.loopsy(&["pull", "local", &s.allowed("missing"), &f]).code(2).stderr_has("File not found");
    s.daemon.loopsy(&["ls", "local", &s.allowed("missing")]).code(2).stderr_has("Directory not found");
    s.daemon
        .loopsy(&["send", &s.daemon.addr, &f, &s.allowed("x"), "--key", "wrong-key-0000000000"])
        .code(2)
        .stderr_has("Invalid API key");
    // A port nothing listens on (bound and released by the test).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    s.daemon.loopsy(&["send", &format!("127.0.0.1:{port}"), &f, &s.allowed("x")]).code(2).stderr_has("cannot reach");
    s.daemon.loopsy(&["pull", &format!("127.0.0.1:{port}"), &s.allowed("x"), &f]).code(2);
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "a failed pull does not touch the destination");
}

#[test]
fn a_send_killed_midway_is_resumed_by_the_next_run() {
    let s = Setup::new("tx-cli-push-resume");
    let size: u64 = 768 << 20;
    let source = s.root().join("allowed2/big.bin");
    let file = std::fs::File::create(&source).unwrap();
    file.set_len(size).unwrap();
    drop(file);
    let src = source.display().to_string();
    let dest = s.allowed("big.bin");
    let cli = crate::support::Background::spawn(s.daemon.home.path(), &["send", "-q", "local", &src, &dest]);
    let dir = s.allowed("");
    wait_until(Duration::from_secs(20), "part of the upload arrived", || temp_with_data(&dir, ".loopsy-part-"));
    cli.signal(libc::SIGKILL);
    cli.wait(Duration::from_secs(10));
    assert!(!Path::new(&dest).exists());
    let run = s.daemon.loopsy(&["send", "--json", "local", &src, &dest]).success();
    let reply = run.json();
    let resumed = reply["resumedFrom"].as_u64().unwrap();
    assert!(resumed > 0 && resumed < size, "resumed from {resumed}");
    assert_eq!(reply["size"].as_u64(), Some(size));
    assert_eq!(sha256_file(Path::new(&dest)), sha256_file(&source));
    assert_eq!(s.names(&dir), ["big.bin", "secret"], "the part became the file");
}

// See: #13 (item 10): the part file was opened following symlinks.
#[test]
fn a_symlink_planted_as_a_part_file_is_never_written_through() {
    let s = Setup::new("tx-part-symlink");
    // The victim is outside the allowed tree: the link would have let a push write anywhere.
    let victim = s.root().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let dest = s.allowed("linked.bin");
    let upload = "upload-link-01";
    let part = s.root().join("allowed").join(format!(".linked.bin.loopsy-part-{upload}"));
    std::os::unix::fs::symlink(&victim, &part).unwrap();
    let status_path = format!("/api/v1/transfer/uploads/{upload}?destPath={}", dest.replace('/', "%2F"));
    assert_eq!(s.daemon.get(&status_path).expect(200)["offset"], 0, "the link's target is not this upload's data");

    // Resuming at the target's size is refused: the link is not this upload's part.
    let message = s
        .push(&[
            Part::Field("destPath", &dest),
            Part::Field("uploadId", upload),
            Part::Field("offset", "8"),
            Part::File("r", b"appended"),
        ])
        .expect_error(409, 4007);
    assert!(message.contains("not this upload's partial data"), "{message}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // Starting over replaces the link by a file of the daemon's; the target is untouched.
    let content = data(300_000, 9);
    let reply = s
        .push(&[
            Part::Field("destPath", &dest),
            Part::Field("uploadId", upload),
            Part::Field("offset", "0"),
            Part::File("r", &content),
            Part::Field("sha256", &sha256_hex(&content)),
        ])
        .expect(200);
    assert_eq!(reply["size"].as_u64(), Some(content.len() as u64));
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&part).is_err(), "no part is left");

    // A hard link is not followed either: a resume is refused and the linked file keeps its bytes.
    std::fs::hard_link(&victim, &part).unwrap();
    s.push(&[
        Part::Field("destPath", &dest),
        Part::Field("uploadId", upload),
        Part::Field("offset", "4"),
        Part::File("r", b"xx"),
    ])
    .expect_error(409, 4007);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Cancelling removes the name only.
    s.daemon.req("DELETE", &status_path).send().expect(200);
    assert!(std::fs::symlink_metadata(&part).is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn the_cli_replaces_a_planted_partial_download_instead_of_writing_through_it() {
    let s = Setup::new("tx-cli-part-link");
    let content = data(900_000, 10);
    let remote = s.allowed("p.bin");
    std::fs::write(&remote, &content).unwrap();
    let local_dir = s.root().join("allowed2");
    let victim = local_dir.join("victim.txt");
    let dest = local_dir.join("p.bin");
    let part = local_dir.join(".p.bin.loopsy-part");
    for link in [std::os::unix::fs::symlink::<&Path, &Path>, |a: &Path, b: &Path| std::fs::hard_link(a, b)] {
        std::fs::write(&victim, &content[..400_000]).unwrap();
        link(&victim, &part).unwrap();
        let run = s.daemon.loopsy(&["pull", "local", &remote, &dest.display().to_string(), "--json"]).success();
        assert_eq!(run.json()["resumedFrom"], 0, "a link is not our partial download");
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        assert_eq!(std::fs::read(&victim).unwrap(), &content[..400_000], "the link's target is untouched");
        assert!(std::fs::symlink_metadata(&part).is_err());
        std::fs::remove_file(&dest).unwrap();
    }
}

/// Whether `dir` holds nothing but `secret` (no destination, no temporary or part file).
fn only_secret_in(dir: &str) -> bool {
    let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names == ["secret"]
}

#[test]
fn a_push_whose_connection_is_cut_or_whose_body_is_short_leaves_nothing() {
    let s = Setup::new("tx-cut");
    let dir = s.allowed("");
    let dest = s.allowed("cut.bin");
    // A killed client: the connection closes mid-body.
    let tcp = start_push(&s.daemon, &[("destPath", &dest)], 64 << 20, &vec![7u8; 4 << 20]);
    wait_until(Duration::from_secs(10), "the daemon wrote part of the upload", || temp_with_data(&dir, ".loopsy-tmp-"));
    drop(tcp);
    wait_until(Duration::from_secs(10), "the temporary file is removed", || only_secret_in(&dir));

    // A truncated body: the client says it is done (half-close) before Content-Length bytes.
    let mut tcp = start_push(&s.daemon, &[("destPath", &dest)], 1 << 20, &vec![7u8; 1000]);
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer); // an error answer or a closed connection, never a 200
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    wait_until(Duration::from_secs(10), "nothing is left", || only_secret_in(&dir));

    // The daemon is fine and the next push works.
    let content = data(3 << 20, 9);
    let sha = sha256_hex(&content);
    let reply = s.push(&[Part::Field("destPath", &dest), Part::File("cut.bin", &content), Part::Field("sha256", &sha)]);
    assert_eq!(reply.expect(200)["checksum"], sha.as_str());
    assert_eq!(sha256_file(Path::new(&dest)), sha);
}

/// A small tmpfs mounted over a directory for the test's life (root only).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Result<SmallDisk, String> {
        crate::support::skip::root()?;
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (target, options) = (c(&dir.display().to_string()), c(&format!("size={size},mode=0755")));
        // SAFETY: valid NUL-terminated strings; mounting has no memory-safety preconditions.
        let rc = unsafe {
            libc::mount(c("tmpfs").as_ptr(), target.as_ptr(), c("tmpfs").as_ptr(), 0, options.as_ptr().cast())
        };
        if rc != 0 {
            return Err(format!("cannot mount a tmpfs: {}", std::io::Error::last_os_error()));
        }
        Ok(SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.0.display().to_string()).unwrap();
        // SAFETY: as above.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_push_onto_a_full_disk_fails_cleanly_and_leaves_nothing() {
    let s = Setup::new("tx-full");
    let dir = s.allowed("");
    let Some(_disk) = prerequisite(SmallDisk::mount(Path::new(&dir), "4m")) else { return };
    std::fs::create_dir(s.allowed("secret")).unwrap();
    let dest = s.allowed("full.bin");
    let content = data(8 << 20, 11);
    let reply = s.push(&[Part::Field("destPath", &dest), Part::File("full.bin", &content)]);
    assert!(reply.status >= 400 && reply.status != 500, "a clear error, not {}: {}", reply.status, reply.text());
    assert!(reply.text().contains("space"), "the error says why: {}", reply.text());
    wait_until(Duration::from_secs(10), "nothing is left", || only_secret_in(&dir));
    // The space came back: a push that fits still works.
    let small = data(1 << 20, 12);
    let sha = sha256_hex(&small);
    let reply = s.push(&[Part::Field("destPath", &dest), Part::File("full.bin", &small), Part::Field("sha256", &sha)]);
    assert_eq!(reply.expect(200)["checksum"], sha.as_str());
}
