//! `cargo xtask tidy`: every third-party stack and every file format has one owner, checked.
//!
//! The rules are the tables of ARCHITECTURE.md's "Owners" section, read from the file, so the
//! document and the check cannot drift apart. The check fails when
//! - a file names a crate (`x::…`, `use x`) outside the files its row lists as owners (a row
//!   applies to `tests/` or `xtask/` only when it lists an owner there);
//! - a module of `src/` uses (`crate::x`) a module its row says it never uses;
//! - a `config.yaml` key path is spelled outside `src/config/`: a section and one of its keys,
//!   as the schema in `src/config/` declares them, written as consecutive string literals
//!   (`doc["auth"]["apiKey"]`, `&["tls", "enabled"]`, `("server", "host")`), in `src/` or
//!   `xtask/` (tests set keys through their support helper);
//! - code of `src/` other than `main.rs` ends the process (`process::exit`): commands return
//!   their exit code to `main`, the one exit path;
//! - a Rust file does not start with its `//!` header;
//! - a route file (`src/daemon/routes/`) spells OpenAPI (`"summary"`, `"requestBody"`,
//!   `"#/components/…"` as string literals outside its tests): the document is data, in
//!   `src/daemon/openapi/<area>.json`.
//!
//! Comments and string contents are not code: prose may name anything. Items under
//! `#[cfg(test)]` are skipped for the crate and module rules (a unit test may compare with
//! another module's output). The source is read with a small lexer, not a parser, so the check
//! is as good as these patterns: it catches the ordinary ways of reaching past an owner.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};

/// Exceptions still to be paid off. Each names a file and what it reaches for; the check fails
/// on an entry that no longer matches anything, so the list can only shrink.
const KNOWN: &[(&str, &str)] = &[];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !args.is_empty() {
        bail!("tidy takes no arguments");
    }
    let root = crate::repo_root();
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    let mut files = Vec::new();
    for dir in ["src", "tests", "xtask/src"] {
        collect(&root, &root.join(dir), &mut files)?;
    }
    let rules = Rules::read(&architecture, &files)?;
    let found = rules.check(&files);
    let (known, new, stale) = against_known(&found, KNOWN);
    for (file, subject) in KNOWN {
        let places: Vec<String> =
            known.iter().filter(|v| v.file == *file && v.subject == *subject).map(|v| v.line.to_string()).collect();
        if !places.is_empty() {
            println!("tidy: known, to be fixed: {file}: `{subject}` (line {})", places.join(", "));
        }
    }
    for violation in &new {
        eprintln!("tidy: {violation}");
    }
    for (file, subject) in &stale {
        eprintln!("tidy: {file}: `{subject}` is listed as a known exception but no longer found: remove it from KNOWN in xtask/src/tidy.rs");
    }
    println!(
        "tidy: {} files, {} stack rules, {} module rules, {} config keys: {} problem(s), {} known",
        files.len(),
        rules.stacks.len(),
        rules.edges.len(),
        rules.config_keys.len(),
        new.len() + stale.len(),
        known.len()
    );
    if !new.is_empty() || !stale.is_empty() {
        bail!("the tree is not tidy (rules: ARCHITECTURE.md, section Owners)");
    }
    let text = std::fs::read_to_string(root.join(crate::link_order::LIST)).context("reading the link order")?;
    let lock = std::fs::read(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (problem, note) = link_order_staleness(&text, &crate::link_order::fingerprint(&lock), &rustc);
    if let Some(note) = note {
        println!("tidy: note: {note}");
    }
    if let Some(problem) = problem {
        bail!("{problem}");
    }
    Ok(())
}

/// Whether `src/build/link-order.txt` was made for this lock file (its names' hashes depend on the
/// dependency graph: with another one, no name matches and the release layout is unordered),
/// and a note when it was made with another rustc than `rustc_version` (`rustc -V`): a build
/// with that one links unordered, which breaks nothing.
fn link_order_staleness(list: &str, lock: &str, rustc_version: &str) -> (Option<String>, Option<String>) {
    let list = crate::link_order::parse(list);
    let problem = (list.lock != Some(lock) && !list.symbols.is_empty()).then(|| {
        format!(
            "{} was made for another Cargo.lock ({} here, {} there): regenerate it with `cargo xtask link-order`",
            crate::link_order::LIST,
            lock,
            list.lock.unwrap_or("none")
        )
    });
    let made_with = list.rustc.unwrap_or("?");
    let same = rustc_version.split_whitespace().nth(1) == Some(made_with);
    let note = (!same).then(|| {
        format!(
            "{} was made with rustc {made_with}: release builds with this rustc link without it",
            crate::link_order::LIST
        )
    });
    (problem, note)
}

/// The findings split into known exceptions and new problems, and the exceptions that match
/// nothing any more (stale: to be removed from the list).
fn against_known<'a, 'k>(
    found: &'a [Violation],
    known: &'k [(&'k str, &'k str)],
) -> (Vec<&'a Violation>, Vec<&'a Violation>, Vec<&'k (&'k str, &'k str)>) {
    let (old, new) = found.iter().partition(|v| known.contains(&(v.file.as_str(), v.subject.as_str())));
    let stale = known
        .iter()
        .filter(|(file, subject)| !found.iter().any(|v| v.file == *file && v.subject == *subject))
        .collect();
    (old, new, stale)
}

/// Every `.rs` file below `dir`, as (path relative to `root` with `/`, text), sorted.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            // Installed test clients (tests/browser/node_modules) are not ours.
            if entry.file_name() != "node_modules" {
                collect(root, &path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("below the root").to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            out.push((relative, text));
        }
    }
    Ok(())
}

/// One finding: where, what was reached for (the key of a `KNOWN` entry), and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    /// A crate name, `crate::<module>`, `config <section>.<key>` or `//! header`.
    pub subject: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// A row of the stack table: these crates may be named only by these files.
#[derive(Debug)]
struct Stack {
    crates: Vec<String>,
    owners: Vec<String>,
    what: String,
}

/// A row of the module table: these modules never use those.
#[derive(Debug)]
struct Edge {
    modules: Vec<String>,
    never: Vec<String>,
}

#[derive(Debug)]
pub struct Rules {
    stacks: Vec<Stack>,
    edges: Vec<Edge>,
    /// (section, key) of `config.yaml`, camelCase as on disk.
    config_keys: BTreeSet<(String, String)>,
}

/// Where the `config.yaml` schema lives; the only place its key paths may be spelled.
const CONFIG_OWNER: [&str; 2] = ["src/config.rs", "src/config/"];

/// The route files: HTTP plumbing, their OpenAPI description lives in `src/daemon/openapi/`.
const ROUTES: &str = "src/daemon/routes/";

/// The one file of `src/` that may end the process: commands return their exit code to it.
const EXIT_OWNER: &str = "src/main.rs";

impl Rules {
    /// The rules from ARCHITECTURE.md's "Owners" section and the config schema among `files`.
    pub fn read(architecture: &str, files: &[(String, String)]) -> anyhow::Result<Rules> {
        let section = architecture
            .split("\n## ")
            .find(|s| s.starts_with("Owners"))
            .context("ARCHITECTURE.md has no `## Owners` section")?;
        let mut stacks = Vec::new();
        let mut edges = Vec::new();
        let mut header: Option<String> = None;
        for line in section.lines() {
            let line = line.trim();
            if !line.starts_with('|') {
                header = None;
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) {
                continue;
            }
            let Some(kind) = &header else {
                header = Some(cells[0].to_string());
                continue;
            };
            anyhow::ensure!(cells.len() >= 2, "ARCHITECTURE.md Owners: a row needs two cells: {line}");
            match kind.as_str() {
                "Crate" => stacks.push(Stack {
                    crates: code_spans(cells[0]),
                    owners: code_spans(cells[1]),
                    what: cells.get(2).map(|c| c.replace('`', "")).unwrap_or_default(),
                }),
                "Module" => edges.push(Edge { modules: code_spans(cells[0]), never: code_spans(cells[1]) }),
                other => bail!("ARCHITECTURE.md Owners: a table whose first column is `{other}` (Crate or Module)"),
            }
        }
        anyhow::ensure!(!stacks.is_empty(), "ARCHITECTURE.md Owners: no `| Crate | Owners |` table");
        anyhow::ensure!(!edges.is_empty(), "ARCHITECTURE.md Owners: no `| Module | Never uses |` table");
        let schema: Vec<&(String, String)> = files.iter().filter(|(path, _)| owned_by(path, &CONFIG_OWNER)).collect();
        let config_keys = config_keys(schema.iter().map(|(_, text)| text.as_str()));
        anyhow::ensure!(!config_keys.is_empty(), "no `struct Config` found in src/config");
        Ok(Rules { stacks, edges, config_keys })
    }

    pub fn check(&self, files: &[(String, String)]) -> Vec<Violation> {
        let mut found = Vec::new();
        for (path, text) in files {
            if !text.starts_with("//!") {
                found.push(Violation {
                    file: path.clone(),
                    line: 1,
                    subject: "//! header".into(),
                    message: "the file does not start with its `//!` header (what it is, what it owns)".into(),
                });
            }
            let tokens = lex(text);
            let code = without_tests(&tokens);
            self.check_stacks(path, &code, &mut found);
            self.check_edges(path, &code, &mut found);
            if path.starts_with("src/") && path != EXIT_OWNER {
                check_exits(path, &code, &mut found);
            }
            if path.starts_with(ROUTES) {
                check_openapi_prose(path, &code, &mut found);
            }
            if (path.starts_with("src/") || path.starts_with("xtask/")) && !owned_by(path, &CONFIG_OWNER) {
                self.check_config_keys(path, &tokens, &mut found);
            }
        }
        found.dedup_by(|a, b| (&a.file, a.line, &a.subject) == (&b.file, b.line, &b.subject));
        found
    }

    fn check_stacks(&self, path: &str, code: &[Token], found: &mut Vec<Violation>) {
        let top = path.split('/').next().unwrap_or_default();
        for (line, name) in named_crates(code) {
            for stack in self.stacks.iter().filter(|s| s.crates.contains(&name)) {
                let applies = top == "src" || stack.owners.iter().any(|o| o.starts_with(&format!("{top}/")));
                if applies && !owned_by(path, &stack.owners) {
                    found.push(Violation {
                        file: path.into(),
                        line,
                        subject: name.clone(),
                        message: format!(
                            "names `{name}`, which only {} may name ({}): go through its owner",
                            stack.owners.join(", "),
                            stack.what
                        ),
                    });
                }
            }
        }
    }

    fn check_edges(&self, path: &str, code: &[Token], found: &mut Vec<Violation>) {
        let Some(module) = module_of(path) else { return };
        let never: Vec<&String> =
            self.edges.iter().filter(|e| e.modules.contains(&module)).flat_map(|e| &e.never).collect();
        for (line, used) in used_modules(code) {
            if never.contains(&&used) {
                found.push(Violation {
                    file: path.into(),
                    line,
                    subject: format!("crate::{used}"),
                    message: format!("`{module}` uses `{used}`, which it never may (ARCHITECTURE.md, Owners)"),
                });
            }
        }
    }

    fn check_config_keys(&self, path: &str, tokens: &[Token], found: &mut Vec<Violation>) {
        for window in tokens.windows(4) {
            let pair = match window {
                [Token { tok: Tok::Str(section), line }, Token { tok: Tok::Punct(']'), .. }, Token { tok: Tok::Punct('['), .. }, Token { tok: Tok::Str(key), .. }] => {
                    Some((section, key, *line))
                }
                [Token { tok: Tok::Str(section), line }, Token { tok: Tok::Punct(','), .. }, Token { tok: Tok::Str(key), .. }, _] => {
                    Some((section, key, *line))
                }
                _ => None,
            };
            let Some((section, key, line)) = pair else { continue };
            if self.config_keys.contains(&(section.clone(), key.clone())) {
                found.push(Violation {
                    file: path.into(),
                    line,
                    subject: format!("config {section}.{key}"),
                    message: format!(
                        "spells the config.yaml key path `{section}.{key}`, which only the config module (src/config.rs, src/config/) \
                         knows: use (or add) a typed operation of `config`"
                    ),
                });
            }
        }
    }
}

/// The `code spans` of a table cell.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(String::from).collect()
}

/// Whether `path` is one of `owners` (a path ending in `/` owns everything below it).
fn owned_by(path: &str, owners: &[impl AsRef<str>]) -> bool {
    owners.iter().map(AsRef::as_ref).any(|o| if o.ends_with('/') { path.starts_with(o) } else { path == o })
}

/// The top-level module of a file of `src/` (`src/peer/mod.rs` → `peer`); none elsewhere.
fn module_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    Some(first.strip_suffix(".rs").unwrap_or(first).to_string())
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
    /// A number, a char literal or a lifetime: nothing the rules look at.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    line: usize,
    tok: Tok,
}

/// Rust source as tokens, without comments (string literals keep their text, unescaped only as
/// far as the rules need: none of them look at escapes).
fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let count_lines = |from: usize, to: usize, line: &mut usize| {
        *line += chars[from..to.min(chars.len())].iter().filter(|c| **c == '\n').count();
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let start = i;
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            count_lines(start, i, &mut line);
        } else if c == '"' || ((c == 'r' || c == 'b') && raw_or_byte_string_at(&chars, i)) {
            let start = i;
            // Prefixes: b"…", r"…", r#"…"#, br#"…"#.
            if chars[i] == 'b' {
                i += 1;
            }
            let raw = chars[i] == 'r';
            if raw {
                i += 1;
            }
            let mut hashes = 0;
            while chars[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1; // the opening quote
            let content_start = i;
            loop {
                if i >= chars.len() {
                    break;
                }
                if !raw && chars[i] == '\\' {
                    i += 2;
                    continue;
                }
                if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
                    break;
                }
                i += 1;
            }
            let content: String = chars[content_start..i.min(chars.len())].iter().collect();
            tokens.push(Token { line, tok: Tok::Str(content) });
            i += 1 + hashes;
            count_lines(start, i, &mut line);
        } else if c == '\'' {
            // A char literal ('a', '\n', '\'', '\u{1F600}') or a lifetime ('a).
            if next == Some('\\') {
                // Past the backslash and the escaped character, then to the closing quote.
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            tokens.push(Token { line, tok: Tok::Other });
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token { line, tok: Tok::Ident(chars[start..i].iter().collect()) });
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                // `1..2` is a range, not a number with two dots.
                if chars[i] == '.' && chars.get(i + 1) == Some(&'.') {
                    break;
                }
                i += 1;
            }
            tokens.push(Token { line, tok: Tok::Other });
        } else {
            tokens.push(Token { line, tok: Tok::Punct(c) });
            i += 1;
        }
    }
    tokens
}

/// Whether a raw or byte string starts at `i` (`r"`, `r#"`, `b"`, `br"`, `br#"`), not an
/// identifier beginning with r or b.
fn raw_or_byte_string_at(chars: &[char], i: usize) -> bool {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let mut j = i;
    if chars[j] == 'b' {
        j += 1;
    }
    if chars.get(j) == Some(&'r') {
        j += 1;
        while chars.get(j) == Some(&'#') {
            j += 1;
        }
    }
    j > i && chars.get(j) == Some(&'"')
}

/// The tokens without the items under `#[cfg(test)]` (a `mod tests { … }`, a `use …;`, a fn).
fn without_tests(tokens: &[Token]) -> Vec<Token> {
    let is = |i: usize, want: &Tok| tokens.get(i).is_some_and(|t| &t.tok == want);
    let ident = |s: &str| Tok::Ident(s.into());
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let cfg_test = is(i, &Tok::Punct('#'))
            && is(i + 1, &Tok::Punct('['))
            && is(i + 2, &ident("cfg"))
            && is(i + 3, &Tok::Punct('('))
            && is(i + 4, &ident("test"))
            && is(i + 5, &Tok::Punct(')'))
            && is(i + 6, &Tok::Punct(']'));
        if !cfg_test {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        // Skip the item: up to its `;`, or its balanced `{ … }` when one opens first.
        i += 7;
        let mut depth = 0usize;
        while i < tokens.len() {
            match tokens[i].tok {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                Tok::Punct(';') if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// `process::exit` (as `std::process::exit`, `process::exit` or `use std::process::exit`).
fn check_exits(path: &str, code: &[Token], found: &mut Vec<Violation>) {
    for window in code.windows(4) {
        if let [Token { tok: Tok::Ident(process), line }, Token { tok: Tok::Punct(':'), .. }, Token { tok: Tok::Punct(':'), .. }, Token { tok: Tok::Ident(exit), .. }] =
            window
        {
            if process == "process" && exit == "exit" {
                found.push(Violation {
                    file: path.into(),
                    line: *line,
                    subject: "process::exit".into(),
                    message: format!("ends the process: return the exit code to `{EXIT_OWNER}`, the one exit path"),
                });
            }
        }
    }
}

/// OpenAPI written in a route file: the keys only an OpenAPI description has, or a reference
/// into its components.
fn check_openapi_prose(path: &str, code: &[Token], found: &mut Vec<Violation>) {
    for token in code {
        let Tok::Str(text) = &token.tok else { continue };
        if ["summary", "requestBody"].contains(&text.as_str()) || text.starts_with("#/components/") {
            found.push(Violation {
                file: path.into(),
                line: token.line,
                subject: "OpenAPI".into(),
                message: format!("spells OpenAPI (`{text}`): describe the route in src/daemon/openapi/<area>.json"),
            });
        }
    }
}

/// Crates named as the first segment of a path (`x::…`), by `use x` or `extern crate x`.
fn named_crates(code: &[Token]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, token) in code.iter().enumerate() {
        let Tok::Ident(name) = &token.tok else { continue };
        let before = |back: usize| i.checked_sub(back).and_then(|j| code.get(j)).map(|t| &t.tok);
        let after = |ahead: usize| code.get(i + ahead).map(|t| &t.tok);
        let starts_path = after(1) == Some(&Tok::Punct(':')) && after(2) == Some(&Tok::Punct(':'));
        let inside_path = before(1) == Some(&Tok::Punct(':'));
        let used = matches!(before(1), Some(Tok::Ident(w)) if w == "use")
            || matches!((before(2), before(1)), (Some(Tok::Ident(e)), Some(Tok::Ident(c))) if e == "extern" && c == "crate");
        if (starts_path && !inside_path) || used {
            out.push((token.line, name.clone()));
        }
    }
    out
}

/// Top-level modules reached through `crate::x` or `use crate::{x, y::z}`.
fn used_modules(code: &[Token]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let is_crate = code[i].tok == Tok::Ident("crate".into())
            && code.get(i + 1).map(|t| &t.tok) == Some(&Tok::Punct(':'))
            && code.get(i + 2).map(|t| &t.tok) == Some(&Tok::Punct(':'))
            && i.checked_sub(1).and_then(|j| code.get(j)).map(|t| &t.tok) != Some(&Tok::Punct('$'));
        if !is_crate {
            i += 1;
            continue;
        }
        match code.get(i + 3).map(|t| &t.tok) {
            Some(Tok::Ident(module)) => out.push((code[i].line, module.clone())),
            Some(Tok::Punct('{')) => {
                // The first segment of each item of the group.
                let mut depth = 0;
                let mut expect = true;
                for token in &code[i + 3..] {
                    match &token.tok {
                        Tok::Punct('{') => {
                            depth += 1;
                            expect = depth == 1;
                        }
                        Tok::Punct('}') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Tok::Punct(',') if depth == 1 => expect = true,
                        Tok::Ident(module) if depth == 1 && expect => {
                            out.push((token.line, module.clone()));
                            expect = false;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        i += 3;
    }
    out
}

/// (section, key) pairs of the `config.yaml` schema: the fields of `struct Config` and of the
/// structs they name, camelCase as serde writes them.
fn config_keys<'a>(sources: impl Iterator<Item = &'a str>) -> BTreeSet<(String, String)> {
    let structs: Vec<(String, Vec<(String, String)>)> = sources.flat_map(|text| structs(&lex(text))).collect();
    let fields_of = |name: &str| structs.iter().find(|(n, _)| n == name).map(|(_, f)| f.clone()).unwrap_or_default();
    let mut keys = BTreeSet::new();
    for (section, ty) in fields_of("Config") {
        for (key, _) in fields_of(&ty) {
            keys.insert((camel(&section), camel(&key)));
        }
    }
    keys
}

/// Every `struct Name { field: Type, … }`: its name and (field, first identifier of the type).
fn structs(tokens: &[Token]) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if token.tok != Tok::Ident("struct".into()) {
            continue;
        }
        let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
            (tokens.get(i + 1).map(|t| &t.tok), tokens.get(i + 2).map(|t| &t.tok))
        else {
            continue;
        };
        let mut fields = Vec::new();
        let (mut braces, mut other) = (0i32, 0i32);
        let mut j = i + 2;
        while j < tokens.len() {
            match &tokens[j].tok {
                Tok::Punct('{') => braces += 1,
                Tok::Punct('}') => {
                    braces -= 1;
                    if braces == 0 {
                        break;
                    }
                }
                Tok::Punct('(' | '[' | '<') => other += 1,
                Tok::Punct(')' | ']' | '>') => other -= 1,
                Tok::Ident(field) if braces == 1 && other == 0 => {
                    let colon = tokens.get(j + 1).map(|t| &t.tok) == Some(&Tok::Punct(':'))
                        && tokens.get(j + 2).map(|t| &t.tok) != Some(&Tok::Punct(':'));
                    if colon {
                        if let Some(Tok::Ident(ty)) = tokens.get(j + 2).map(|t| &t.tok) {
                            fields.push((field.clone(), ty.clone()));
                        }
                    }
                }
                _ => {}
            }
            j += 1;
        }
        out.push((name.clone(), fields));
    }
    out
}

/// `rate_limits` → `rateLimits`.
fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCHITECTURE: &str = "# Architecture\n\n## Owners\n\nText.\n\n\
        | Crate | Owners | What |\n| --- | --- | --- |\n\
        | `serde_yaml` | `src/config/`, `tests/support/` | config.yaml |\n\
        | `surf`, `http_client` | `src/peer/` | the HTTP client |\n\
        | `rustls` | `src/tls.rs` | TLS |\n\n\
        | Module | Never uses |\n| --- | --- |\n\
        | `store`, `transfer` | `daemon`, `peer` |\n\n## Next\n\n| Crate | Owners |\n| --- | --- |\n| `x` | `y` |\n";

    const SCHEMA: &str = "//! The schema.\n\
        #[serde(rename_all = \"camelCase\")]\n\
        pub struct Config { pub server: Server, pub rate_limits: RateLimits, #[serde(skip)] pub tls: Tls }\n\
        pub struct Server { pub port: u16, pub host: String, pub data_dir: Option<String> }\n\
        pub struct RateLimits { pub execute: u32 }\n\
        pub struct Tls { pub enabled: bool, pub pinned_certs: BTreeMap<String, String> }\n";

    fn check(files: &[(&str, &str)]) -> Vec<Violation> {
        let mut all: Vec<(String, String)> = vec![("src/config/schema.rs".into(), SCHEMA.into())];
        all.extend(files.iter().map(|(p, t)| (p.to_string(), t.to_string())));
        Rules::read(ARCHITECTURE, &all).unwrap().check(&all[1..])
    }

    fn subjects(found: &[Violation]) -> Vec<(String, usize, String)> {
        let mut all: Vec<_> = found.iter().map(|v| (v.file.clone(), v.line, v.subject.clone())).collect();
        all.sort();
        all
    }

    #[test]
    fn the_tables_and_the_schema_are_read() {
        let all = vec![("src/config/schema.rs".to_string(), SCHEMA.to_string())];
        let rules = Rules::read(ARCHITECTURE, &all).unwrap();
        assert_eq!(rules.stacks.len(), 3, "the table of the next section is not read");
        assert_eq!(rules.stacks[1].crates, ["surf", "http_client"]);
        assert_eq!(rules.edges[0].never, ["daemon", "peer"]);
        let keys: Vec<String> = rules.config_keys.iter().map(|(s, k)| format!("{s}.{k}")).collect();
        assert_eq!(
            keys,
            ["rateLimits.execute", "server.dataDir", "server.host", "server.port", "tls.enabled", "tls.pinnedCerts"]
        );
    }

    #[test]
    fn missing_tables_are_an_error() {
        let all = vec![("src/config.rs".to_string(), SCHEMA.to_string())];
        assert!(Rules::read("# A\n\n## Code map\n", &all).is_err());
        assert!(Rules::read("## Owners\n\n| Crate | Owners |\n| --- | --- |\n| `a` | `b` |\n", &all).is_err());
        assert!(Rules::read(ARCHITECTURE, &[]).is_err(), "no schema");
    }

    #[test]
    fn a_crate_named_outside_its_owner_fails_and_says_who_owns_it() {
        let found = check(&[
            (
                "src/cli/connect.rs",
                "//! Connect.\nuse serde_yaml::Value;\nfn f() {\n    let v: Value = serde_yaml::from_str(\"\");\n}\n",
            ),
            ("src/cli/ls.rs", "//! Ls.\nuse surf::http::Method;\n"),
            ("src/doctor.rs", "//! Doctor.\nfn f() { use rustls::pki_types::pem::PemObject; }\n"),
        ]);
        assert_eq!(
            subjects(&found),
            [
                ("src/cli/connect.rs".into(), 2, "serde_yaml".into()),
                ("src/cli/connect.rs".into(), 4, "serde_yaml".into()),
                ("src/cli/ls.rs".into(), 2, "surf".into()),
                ("src/doctor.rs".into(), 2, "rustls".into()),
            ]
        );
        assert!(found[0].message.contains("only src/config/, tests/support/ may name"), "{}", found[0].message);
        assert!(found[0].to_string().starts_with("src/cli/connect.rs:2: "), "{}", found[0]);
    }

    #[test]
    fn owners_comments_strings_and_other_paths_pass() {
        let found = check(&[
            ("src/config/edit.rs", "//! Edits.\nuse serde_yaml::Value;\n"),
            ("src/peer/mod.rs", "//! Client.\npub use surf::http::Method;\nuse http_client::HttpClient;\n"),
            ("src/tls.rs", "//! TLS.\nuse rustls::ClientConfig;\n"),
            (
                "src/daemon/mod.rs",
                "//! Only this module knows tide, not serde_yaml::Value.\n\
                 // surf::Client would be wrong here\n/* rustls::x */\n\
                 fn f() { let s = \"serde_yaml::from_str\"; let r = r#\"surf::get(\"x\")\"#; let c = '\"'; }\n\
                 fn g<'a>(x: &'a str) { crate::peer::surf_like(); foo::serde_yaml::bar(); }\n",
            ),
            ("tests/tls.rs", "//! Tests use rustls directly.\nuse rustls::ClientConnection;\n"),
            ("xtask/src/x.rs", "//! Chores.\nuse surf::Client;\n"),
        ]);
        assert_eq!(subjects(&found), []);
    }

    #[test]
    fn a_row_applies_to_tests_only_when_it_lists_an_owner_there() {
        let found = check(&[
            ("tests/support/mod.rs", "//! Support.\nuse serde_yaml::Value;\n"),
            ("tests/peers.rs", "//! Peers.\nfn f() -> serde_yaml::Value { todo!() }\n"),
        ]);
        assert_eq!(subjects(&found), [("tests/peers.rs".into(), 2, "serde_yaml".into())]);
    }

    #[test]
    fn unit_tests_are_not_held_to_the_stack_and_module_rules() {
        let text = "//! Units.\nfn f() {}\n#[cfg(test)]\nmod tests {\n    use serde_yaml::Value;\n    fn g() { crate::daemon::x(); }\n}\n\
                    #[cfg(test)]\nuse serde_yaml::Mapping;\nfn h() { serde_yaml::to_string(1); }\n";
        let found = check(&[("src/store/map.rs", text)]);
        assert_eq!(subjects(&found), [("src/store/map.rs".into(), 10, "serde_yaml".into())]);
    }

    #[test]
    fn a_forbidden_module_edge_fails() {
        let found = check(&[
            ("src/store/mod.rs", "//! Store.\nuse crate::{clock, daemon::api::Health};\n"),
            ("src/transfer.rs", "//! Transfer.\nfn f() { crate::peer::Client::new(); crate::durable::write(); }\n"),
            ("src/exec/mod.rs", "//! Exec may.\nuse crate::daemon;\n"),
            ("src/store/watch.rs", "//! Nested groups.\nuse crate::{durable::{self, Mode}, paths::{Paths, peer}};\n"),
        ]);
        assert_eq!(
            subjects(&found),
            [
                ("src/store/mod.rs".into(), 2, "crate::daemon".into()),
                ("src/transfer.rs".into(), 2, "crate::peer".into()),
            ]
        );
        assert!(found[0].message.contains("`store` uses `daemon`"), "{}", found[0].message);
    }

    #[test]
    fn config_key_paths_outside_config_fail() {
        let found = check(&[
            (
                "src/daemon/pairing.rs",
                "//! Pairing.\nfn f(doc: &mut Doc) {\n    doc[\"tls\"][\"pinnedCerts\"][name] = 1;\n    set_path(doc, &[\"tls\", \"enabled\"], true);\n}\n",
            ),
            ("xtask/src/node.rs", "//! Node.\nfn f() { match x { (\"server\", \"host\") => 1 } }\n"),
            ("src/config/edit.rs", "//! The owner.\nfn f() { set_path(doc, &[\"tls\", \"enabled\"], true); }\n"),
            (
                "src/other.rs",
                "//! Prose and other JSON.\n/// Sets [\"tls\"][\"enabled\"].\nfn f() { let e = \"see tls.enabled\"; j[\"tls\"][\"version\"]; [\"server\", \"port\"].len(); }\n",
            ),
            ("tests/peers.rs", "//! Tests set keys.\nfn f() { doc[\"server\"][\"port\"] = 0; }\n"),
        ]);
        assert_eq!(
            subjects(&found),
            [
                ("src/daemon/pairing.rs".into(), 3, "config tls.pinnedCerts".into()),
                ("src/daemon/pairing.rs".into(), 4, "config tls.enabled".into()),
                ("src/other.rs".into(), 3, "config server.port".into()),
                ("xtask/src/node.rs".into(), 2, "config server.host".into()),
            ]
        );
        assert!(found[0].message.contains("only the config module"), "{}", found[0].message);
    }

    #[test]
    fn the_project_forbids_the_peer_cycle() {
        let architecture = std::fs::read_to_string(crate::repo_root().join("ARCHITECTURE.md")).unwrap();
        let mut all: Vec<(String, String)> = vec![("src/config/schema.rs".into(), SCHEMA.into())];
        let files = [
            ("src/peer/mod.rs", "//! The client.\nuse crate::peers::Peer;\nfn f() { crate::resolve::resolve(); }\n"),
            ("src/peers/health.rs", "//! Health.\nuse crate::peer::Client;\nuse crate::resolve::find;\n"),
            ("src/resolve.rs", "//! Resolution.\nuse crate::{peer::Client, peers::Peer};\n"),
        ];
        all.extend(files.iter().map(|(p, t)| (p.to_string(), t.to_string())));
        let found = Rules::read(&architecture, &all).unwrap().check(&all[1..]);
        assert_eq!(
            subjects(&found),
            [
                ("src/peer/mod.rs".into(), 2, "crate::peers".into()),
                ("src/peer/mod.rs".into(), 3, "crate::resolve".into()),
                ("src/peers/health.rs".into(), 3, "crate::resolve".into()),
            ]
        );
    }

    #[test]
    fn route_files_hold_no_openapi() {
        let found = check(&[
            (
                "src/daemon/routes/locks.rs",
                "//! Locks.\nfn f() -> Value { json!({\"summary\": \"x\", \"schema\": {\"$ref\": \"#/components/schemas/Lock\"}}) }\n",
            ),
            ("src/daemon/routes/peers.rs", "//! Peers.\n/// The \"summary\".\nfn f() { let s = \"a summary\"; }\n#[cfg(test)]\nmod tests {\n    fn g() { doc[\"requestBody\"]; }\n}\n"),
            ("src/daemon/openapi.rs", "//! The document.\nfn f() { json!({\"$ref\": \"#/components/responses/Busy\"}); }\n"),
        ]);
        // Both literals of line 2, reported once per line.
        assert_eq!(subjects(&found), vec![("src/daemon/routes/locks.rs".into(), 2, "OpenAPI".into())]);
    }

    #[test]
    fn only_main_ends_the_process() {
        let found = check(&[
            ("src/cli/exec.rs", "//! Exec.\nfn f() {\n    std::process::exit(130);\n}\n"),
            ("src/cli/task.rs", "//! Task.\nuse std::process::exit;\nfn g() { let s = \"process::exit\"; }\n"),
            ("src/main.rs", "//! Main.\nfn main() { std::process::exit(2) }\n"),
            ("xtask/src/main.rs", "//! Xtask.\nfn main() { std::process::exit(1) }\n"),
            ("src/x.rs", "//! X.\nfn f() -> std::process::ExitCode { todo!() }\n"),
        ]);
        assert_eq!(
            subjects(&found),
            [
                ("src/cli/exec.rs".into(), 3, "process::exit".into()),
                ("src/cli/task.rs".into(), 2, "process::exit".into()),
            ]
        );
    }

    #[test]
    fn known_exceptions_pass_until_they_are_stale() {
        let found = check(&[("src/cli/ls.rs", "//! Ls.\nuse surf::http::Method;\n"), ("src/b.rs", "// B.\n")]);
        let known = [("src/cli/ls.rs", "surf"), ("src/cli/send.rs", "surf")];
        let (old, new, stale) = against_known(&found, &known);
        assert_eq!(old.iter().map(|v| v.subject.as_str()).collect::<Vec<_>>(), ["surf"]);
        assert_eq!(new.iter().map(|v| v.subject.as_str()).collect::<Vec<_>>(), ["//! header"]);
        assert_eq!(stale, [&("src/cli/send.rs", "surf")]);
    }

    #[test]
    fn a_file_without_its_header_fails() {
        let found = check(&[("src/a.rs", "// not a module doc\nfn f() {}\n"), ("src/b.rs", "//! B.\n")]);
        assert_eq!(subjects(&found), [("src/a.rs".into(), 1, "//! header".into())]);
    }

    #[test]
    fn the_lexer_keeps_lines_and_literals() {
        let tokens = lex("a /* x\n y */ \"s\\\"q\n\" r#\"raw \"x\"\"# b'c' 'x' '\\n' 1..2 br\"b\"\nend");
        let strings: Vec<&str> =
            tokens.iter().filter_map(|t| if let Tok::Str(s) = &t.tok { Some(s.as_str()) } else { None }).collect();
        assert_eq!(strings, ["s\\\"q\n", "raw \"x\"", "b"]);
        assert_eq!(tokens.last().unwrap(), &Token { line: 4, tok: Tok::Ident("end".into()) });
        let chars = lex("'\\'' x '\\u{1F600}' y");
        assert_eq!(chars.iter().filter(|t| matches!(t.tok, Tok::Ident(_))).count(), 2, "{chars:?}");
    }

    #[test]
    fn the_link_order_is_stale_for_another_lock_file_and_noted_for_another_rustc() {
        let list = "# target x86_64-unknown-linux-gnu\n# rustc 1.95.0\n# lock 00ff\nf\n";
        assert_eq!(link_order_staleness(list, "00ff", "rustc 1.95.0 (59807616e 2026-04-14)"), (None, None));
        let (problem, note) = link_order_staleness(list, "0100", "rustc 1.95.0 (59807616e 2026-04-14)");
        assert!(problem.unwrap().contains("cargo xtask link-order"));
        assert_eq!(note, None);
        let (problem, note) = link_order_staleness(list, "00ff", "rustc 1.96.0 (0 2026-06-01)");
        assert_eq!(problem, None, "another toolchain builds, without the layout");
        assert!(note.unwrap().contains("1.95.0"));
    }
}
