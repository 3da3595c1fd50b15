//! The deny/allow list of remote execution: which programs a request would run, and whether
//! the configured lists permit them.
//!
//! This is a **guard-rail against mistakes, not a sandbox**. It looks through the usual
//! wrappers (`sh -c`, `bash -lc`, `env`, `nohup`, `sudo`, `xargs`, `timeout`, `nice`, `exec`,
//! `command`, `busybox`, `find -exec`, …), splits shell scripts into their commands and compares
//! base names without path, case or `.exe`; but anyone who can run an interpreter (`python -c`,
//! `perl -e`), a script file, variable or glob expansion, or a copy of a binary under another
//! name gets past it. Only the operating system (a separate user, a container) can confine what
//! a remote caller runs. It is a pure function of the argv and the lists: no I/O.

/// How deep wrappers and nested shells may go before a command is refused as uncheckable.
const MAX_DEPTH: usize = 8;

/// Programs that only change the shell they run in and cannot start another program; an
/// allowlist need not name them.
const HARMLESS_BUILTINS: &[&str] = &[
    ":", "[", "break", "cd", "continue", "echo", "exit", "export", "false", "local", "printf", "pwd", "read",
    "readonly", "return", "set", "shift", "test", "true", "umask", "unset", "wait",
];

/// Shell words that put the next word in command position.
const SHELL_KEYWORDS: &[&str] =
    &["!", "{", "}", "then", "do", "else", "elif", "if", "while", "until", "fi", "done", "esac"];

/// Other names of a denied program: tools that do the same job. A denylist entry also covers
/// its name with a `.` or `_` suffix (`mkfs.ext4`, `newfs_hfs`, `dd_rescue`), see [`in_family`].
const FAMILIES: &[(&str, &[&str])] = &[
    ("mkfs", &["mke2fs", "mkdosfs", "mkntfs", "mkexfatfs", "mkswap", "newfs"]),
    ("rm", &["unlink", "shred", "srm"]),
    ("dd", &["dcfldd", "dc3dd"]),
    ("shutdown", &["poweroff", "halt"]),
];

/// The configured lists, normalised once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    denylist: Vec<String>,
    allowlist: Option<Vec<String>>,
}

/// Why a command is refused; the message keeps 1.0.21's `Command '<name>' is …` prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("Command '{program}' is denied{}{}", family_text(.program, .entry), via_text(.via))]
    Denied {
        program: String,
        /// The denylist entry whose family `program` belongs to.
        entry: String,
        via: Vec<String>,
    },
    #[error("Command '{program}' is not in the allowlist{}", via_text(.via))]
    NotAllowed { program: String, via: Vec<String> },
    #[error("Command is nested too deeply to check (more than {MAX_DEPTH} wrappers or shells)")]
    TooDeep,
}

fn family_text(program: &str, entry: &str) -> String {
    if program == entry {
        String::new()
    } else {
        format!(" (as '{entry}', which the denylist names)")
    }
}

fn via_text(via: &[String]) -> String {
    if via.is_empty() {
        String::new()
    } else {
        format!(" (run through {})", via.join(" → "))
    }
}

/// One program a command would start, with the wrappers it is reached through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// Normalised base name ([`normalize`]).
    pub program: String,
    pub via: Vec<String>,
}

impl Policy {
    pub(crate) fn new(denylist: &[String], allowlist: Option<&[String]>) -> Policy {
        Policy {
            denylist: denylist.iter().map(|name| normalize(name)).collect(),
            allowlist: allowlist.map(|list| list.iter().map(|name| normalize(name)).collect()),
        }
    }

    /// Refuses `command args` if any program it would start is denied or not allowed.
    pub(crate) fn check(&self, command: &str, args: &[String]) -> Result<(), Refusal> {
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(command.to_string());
        argv.extend(args.iter().cloned());
        for invocation in invocations(&argv)? {
            let Invocation { program, via } = invocation;
            if let Some(entry) = self.denylist.iter().find(|entry| in_family(entry, &program)) {
                return Err(Refusal::Denied { program, entry: entry.clone(), via });
            }
            if let Some(allowlist) = &self.allowlist {
                if !allowlist.contains(&program) && !HARMLESS_BUILTINS.contains(&program.as_str()) {
                    return Err(Refusal::NotAllowed { program, via });
                }
            }
        }
        Ok(())
    }
}

/// The base name a list entry or a program is compared by: after the last `/` or `\`,
/// lowercase (Windows and macOS file systems ignore case), without `.exe`/`.com`/`.bat`/`.cmd`.
pub(crate) fn normalize(program: &str) -> String {
    let base = program.rsplit(['/', '\\']).next().unwrap_or(program).to_lowercase();
    for suffix in [".exe", ".com", ".bat", ".cmd"] {
        if let Some(stem) = base.strip_suffix(suffix).filter(|stem| !stem.is_empty()) {
            return stem.to_string();
        }
    }
    base
}

/// Whether `program` (normalised) is what the denylist entry `entry` names: the entry itself,
/// the entry with a `.`/`_` suffix (file-system variants such as `mkfs.ext4`), or another name
/// for the same job ([`FAMILIES`]).
pub(crate) fn in_family(entry: &str, program: &str) -> bool {
    program == entry
        || program.strip_prefix(entry).is_some_and(|rest| rest.starts_with(['.', '_']) && rest.len() > 1)
        || FAMILIES
            .iter()
            .any(|(name, members)| *name == entry && members.iter().any(|member| in_family(member, program)))
}

/// The program a power-management command amounts to: `systemctl poweroff` is `poweroff`,
/// `init 6` is `reboot`.
fn power_action(program: &str, args: &[String]) -> Option<&'static str> {
    let operand = args.iter().find(|word| !word.starts_with('-'))?.as_str();
    match (program, operand) {
        ("systemctl" | "loginctl", "poweroff") => Some("poweroff"),
        ("systemctl" | "loginctl", "halt") => Some("halt"),
        ("systemctl" | "loginctl", "reboot" | "kexec" | "soft-reboot") => Some("reboot"),
        ("init" | "telinit", "0") => Some("shutdown"),
        ("init" | "telinit", "6") => Some("reboot"),
        _ => None,
    }
}

/// Every program `argv` would start, outermost first.
pub(crate) fn invocations(argv: &[String]) -> Result<Vec<Invocation>, Refusal> {
    let mut out = Vec::new();
    walk_argv(argv, &[], false, &mut out)?;
    Ok(out)
}

fn walk_argv(words: &[String], via: &[String], in_shell: bool, out: &mut Vec<Invocation>) -> Result<(), Refusal> {
    if via.len() > MAX_DEPTH {
        return Err(Refusal::TooDeep);
    }
    let mut i = 0;
    if in_shell {
        while i < words.len() && (is_assignment(&words[i]) || SHELL_KEYWORDS.contains(&words[i].as_str())) {
            i += 1;
        }
        // Loops and `case` name words and patterns, not programs; their bodies are separate
        // commands after `;`, `)` or a newline.
        if words.get(i).is_some_and(|w| matches!(w.as_str(), "for" | "select" | "case" | "function")) {
            return Ok(());
        }
    }
    let Some(first) = words.get(i) else { return Ok(()) };
    let program = normalize(first);
    out.push(Invocation { program: program.clone(), via: via.to_vec() });
    let rest = &words[i + 1..];
    let mut inner_via = via.to_vec();
    inner_via.push(program.clone());
    match program.as_str() {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "fish" | "rbash" => {
            if let Some(script) = shell_script(rest) {
                walk_script(&script, &inner_via, out)?;
            }
        }
        "cmd" => {
            if let Some(at) = rest.iter().position(|w| matches!(w.to_lowercase().as_str(), "/c" | "/k" | "/r")) {
                walk_script(&rest[at + 1..].join(" "), &inner_via, out)?;
            }
        }
        "eval" => walk_script(&rest.join(" "), &inner_via, out)?,
        "trap" => {
            if let Some(action) = rest.first() {
                walk_script(action, &inner_via, out)?;
            }
        }
        "find" => walk_find(rest, &inner_via, out)?,
        "systemctl" | "loginctl" | "init" | "telinit" => {
            if let Some(action) = power_action(&program, rest) {
                out.push(Invocation { program: action.into(), via: inner_via });
            }
        }
        "env" if env_split_string(rest).is_some() => {
            walk_script(&env_split_string(rest).expect("just checked"), &inner_via, out)?;
        }
        _ => {
            if let Some(skip) = wrapped_command(&program, rest) {
                walk_argv(&rest[skip..], &inner_via, false, out)?;
            }
        }
    }
    Ok(())
}

/// `NAME=value` in command position of a shell command.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// The script of `sh [options] -c SCRIPT …` (also `-lc`, `-ec`, `--login -c`, `-o opt -c`).
fn shell_script(args: &[String]) -> Option<String> {
    let mut has_c = false;
    let mut i = 0;
    while let Some(word) = args.get(i) {
        if word == "--" || word == "-" {
            i += 1;
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            has_c |= long == "command";
            i += if matches!(long, "rcfile" | "init-file") { 2 } else { 1 };
            continue;
        }
        if let Some(flags) = word.strip_prefix(['-', '+']) {
            has_c |= flags.contains('c');
            // `-o pipefail`: the option's value is the next word.
            i += if flags.ends_with('o') { 2 } else { 1 };
            continue;
        }
        break;
    }
    if has_c {
        args.get(i).cloned()
    } else {
        None
    }
}

/// The string of `env -S STRING` (`-SSTRING`, `--split-string=STRING`): env splits it into
/// the command and its arguments.
fn env_split_string(args: &[String]) -> Option<String> {
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "-S" || word == "--split-string" {
            return words.next().cloned();
        }
        if let Some(value) = word.strip_prefix("--split-string=") {
            return Some(value.to_string());
        }
        if let Some(value) = word.strip_prefix("-S") {
            return Some(value.to_string());
        }
        if matches!(word.as_str(), "-u" | "-C" | "--unset" | "--chdir") {
            words.next();
            continue;
        }
        if !word.starts_with('-') || word == "--" {
            return None;
        }
    }
    None
}

/// `find … -exec CMD … ;` runs CMD; `-delete` removes files as `rm` would.
fn walk_find(args: &[String], via: &[String], out: &mut Vec<Invocation>) -> Result<(), Refusal> {
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-exec" | "-execdir" | "-ok" | "-okdir" => {
                let end = args[i + 1..].iter().position(|w| w == ";" || w == "+").map_or(args.len(), |p| i + 1 + p);
                walk_argv(&args[i + 1..end], via, false, out)?;
                i = end;
            }
            "-delete" => out.push(Invocation { program: "rm".into(), via: via.to_vec() }),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// For a program that runs another program given in its arguments, how many words of `args`
/// come before that program (its options and their values). `None` for other programs.
fn wrapped_command(program: &str, args: &[String]) -> Option<usize> {
    // (options taking a value, whether the first operand is not the command itself)
    let (with_value, operand_first): (&[&str], bool) = match program {
        "env" => (&["-u", "-C", "-S", "--unset", "--chdir", "--split-string"], false),
        "sudo" | "doas" => (
            &["-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-T", "-U", "--user", "--group", "--host", "--prompt"],
            false,
        ),
        "xargs" => (
            &["-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--arg-file", "--delimiter", "--max-args", "--max-procs"],
            false,
        ),
        "timeout" => (&["-s", "-k", "--signal", "--kill-after"], true),
        "nice" => (&["-n", "--adjustment"], false),
        "ionice" => (&["-c", "-n", "--class", "--classdata"], false),
        "stdbuf" => (&["-i", "-o", "-e", "--input", "--output", "--error"], false),
        "exec" => (&["-a"], false),
        "nohup" | "command" | "builtin" | "time" | "setsid" | "busybox" | "chrt" | "taskset" | "unbuffer" => {
            (&[], matches!(program, "chrt" | "taskset"))
        }
        _ => return None,
    };
    let mut i = 0;
    while let Some(word) = args.get(i) {
        if word == "--" {
            i += 1;
            break;
        }
        if !word.starts_with('-') || word == "-" {
            break;
        }
        let takes_value = with_value
            .iter()
            .any(|opt| word == opt || (!opt.starts_with("--") && word.len() == 2 && word.starts_with(opt)));
        let cluster_ends_in_value = !word.starts_with("--")
            && word.len() > 2
            && with_value.iter().any(|opt| !opt.starts_with("--") && word.ends_with(&opt[1..]));
        i += if takes_value || cluster_ends_in_value { 2 } else { 1 };
    }
    if matches!(program, "env" | "sudo" | "doas") {
        while args.get(i).is_some_and(|w| is_assignment(w)) {
            i += 1;
        }
    }
    if operand_first {
        i += 1; // `timeout 5 CMD`, `chrt 10 CMD`, `taskset 0x1 CMD`
    }
    (i < args.len()).then_some(i)
}

/// Splits a shell script into simple commands and walks each, including command substitutions.
fn walk_script(script: &str, via: &[String], out: &mut Vec<Invocation>) -> Result<(), Refusal> {
    if via.len() > MAX_DEPTH {
        return Err(Refusal::TooDeep);
    }
    let parsed = split_script(script);
    for command in &parsed.commands {
        walk_argv(command, via, true, out)?;
    }
    // A substitution is one level deeper: `$($($(…)))` nested without end must hit the depth
    // limit, not the stack (the script comes from a remote request).
    let mut nested_via = via.to_vec();
    nested_via.push("$(…)".into());
    for nested in &parsed.substitutions {
        walk_script(nested, &nested_via, out)?;
    }
    Ok(())
}

/// A script cut into simple commands (words after quote removal) and the scripts of its
/// command substitutions (`$(…)`, backticks, `<(…)`, `>(…)`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Script {
    commands: Vec<Vec<String>>,
    substitutions: Vec<String>,
}

/// A small shell lexer: quotes, escapes, comments, separators (`;`, `&`, `|`, newline,
/// parentheses) and redirections. Expansions other than command substitution stay literal.
fn split_script(script: &str) -> Script {
    let chars: Vec<char> = script.chars().collect();
    let mut parsed = Script::default();
    let mut command: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut skip_next_word = false; // the target of a redirection
    let mut i = 0;
    let end_word = |word: &mut Option<String>, command: &mut Vec<String>, skip: &mut bool| {
        if let Some(w) = word.take() {
            if *skip {
                *skip = false;
            } else {
                command.push(w);
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => end_word(&mut word, &mut command, &mut skip_next_word),
            '\n' | ';' | '&' | '|' | '(' | ')' => {
                end_word(&mut word, &mut command, &mut skip_next_word);
                skip_next_word = false;
                if !command.is_empty() {
                    parsed.commands.push(std::mem::take(&mut command));
                }
            }
            '<' | '>' => {
                if word.as_deref().is_some_and(|w| w.chars().all(|c| c.is_ascii_digit())) {
                    word = None; // `2>file`: the digits are a file descriptor
                }
                end_word(&mut word, &mut command, &mut skip_next_word);
                if chars.get(i + 1) == Some(&'(') {
                    let (inner, next) = balanced(&chars, i + 2);
                    parsed.substitutions.push(inner);
                    i = next;
                    continue;
                }
                while matches!(chars.get(i + 1), Some('<' | '>' | '&' | '|')) {
                    i += 1;
                }
                skip_next_word = true;
            }
            '#' if word.is_none() => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '\'' => {
                let text = word.get_or_insert_with(String::new);
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    text.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                let text = word.get_or_insert_with(String::new);
                i = double_quoted(&chars, i + 1, text, &mut parsed.substitutions);
                continue;
            }
            '`' => {
                let (inner, next) = backticked(&chars, i + 1);
                parsed.substitutions.push(inner);
                word.get_or_insert_with(String::new).push_str("$(…)");
                i = next;
                continue;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                let arithmetic = chars.get(i + 2) == Some(&'(');
                let (inner, next) = balanced(&chars, i + 2);
                if !arithmetic {
                    parsed.substitutions.push(inner);
                }
                word.get_or_insert_with(String::new).push_str("$(…)");
                i = next;
                continue;
            }
            '\\' => {
                if let Some(&next) = chars.get(i + 1) {
                    if next != '\n' {
                        word.get_or_insert_with(String::new).push(next);
                    }
                    i += 1;
                }
            }
            _ => word.get_or_insert_with(String::new).push(c),
        }
        i += 1;
    }
    end_word(&mut word, &mut command, &mut skip_next_word);
    if !command.is_empty() {
        parsed.commands.push(command);
    }
    parsed
}

/// Reads a double-quoted string starting after the opening quote into `word`; returns the
/// index after the closing quote.
fn double_quoted(chars: &[char], mut i: usize, word: &mut String, substitutions: &mut Vec<String>) -> usize {
    while i < chars.len() && chars[i] != '"' {
        match chars[i] {
            '\\' if matches!(chars.get(i + 1), Some('$' | '`' | '"' | '\\' | '\n')) => {
                if chars[i + 1] != '\n' {
                    word.push(chars[i + 1]);
                }
                i += 2;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                let (inner, next) = balanced(chars, i + 2);
                if chars.get(i + 2) != Some(&'(') {
                    substitutions.push(inner);
                }
                word.push_str("$(…)");
                i = next;
            }
            '`' => {
                let (inner, next) = backticked(chars, i + 1);
                substitutions.push(inner);
                word.push_str("$(…)");
                i = next;
            }
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
    i + 1
}

/// The text up to the parenthesis that closes one already open at `start - 1`, skipping quoted
/// parts; returns it and the index after the closing parenthesis.
fn balanced(chars: &[char], start: usize) -> (String, usize) {
    let mut depth = 1;
    let mut i = start;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => i += 1,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => i += 1,
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return (chars[start..i].iter().collect(), i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    (chars[start.min(chars.len())..].iter().collect(), chars.len())
}

/// The text up to the next unescaped backtick; returns it and the index after that backtick.
fn backticked(chars: &[char], start: usize) -> (String, usize) {
    let mut inner = String::new();
    let mut i = start;
    while i < chars.len() && chars[i] != '`' {
        if chars[i] == '\\' && matches!(chars.get(i + 1), Some('`' | '\\' | '$')) {
            i += 1;
        }
        inner.push(chars[i]);
        i += 1;
    }
    (inner, i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let denylist = ["rm", "rmdir", "format", "mkfs", "dd", "shutdown", "reboot"].map(String::from);
        Policy::new(&denylist, None)
    }

    fn words(line: &str) -> Vec<String> {
        shell_words(line)
    }

    /// The test cases are written as shell lines; this turns one into argv like a shell would.
    fn shell_words(line: &str) -> Vec<String> {
        let parsed = split_script(line);
        assert_eq!(parsed.commands.len(), 1, "one command per test line: {line}");
        parsed.commands.into_iter().next().unwrap()
    }

    #[track_caller]
    fn denied(line: &str) {
        let argv = words(line);
        let result = policy().check(&argv[0], &argv[1..]);
        assert!(result.is_err(), "should be refused: {line}");
    }

    #[track_caller]
    fn allowed(line: &str) {
        let argv = words(line);
        assert_eq!(policy().check(&argv[0], &argv[1..]), Ok(()), "should pass: {line}");
    }

    #[test]
    fn plain_programs_are_checked_by_base_name() {
        denied("rm -rf /tmp/x");
        denied("/bin/rm x");
        denied("./rm x");
        denied("../../usr/bin/rm x");
        denied("RM x");
        denied("Rm.EXE x");
        denied(r"'C:\Windows\System32\rm.exe' x");
        denied("mkfs.exe /dev/sda");
        denied("dd if=/dev/zero of=/dev/sda");
        allowed("ls -la");
        allowed("echo rm");
        allowed("git rm file");
        allowed("rmx");
        allowed("/usr/bin/rmdirs");
    }

    // See: #13 (`mkfs.ext4` ran although the denylist names `mkfs`).
    #[test]
    fn a_denied_name_covers_its_family() {
        denied("mkfs.ext4 /dev/sdb1");
        denied("/sbin/mkfs.vfat -F 32 /dev/sdc");
        denied("MKFS.XFS /dev/sdb");
        denied("mke2fs /dev/sdb1");
        denied("mkswap /dev/sdb2");
        denied("newfs_hfs /dev/disk2");
        denied("sudo mkfs.btrfs /dev/sdb");
        denied("sh -c 'mkfs.ext4 /dev/sdb1'");
        denied("unlink file");
        denied("shred -u file");
        denied("dd_rescue /dev/sda x");
        denied("dcfldd if=/dev/zero of=/dev/sda");
        denied("poweroff");
        denied("halt");
        denied("systemctl poweroff");
        denied("systemctl --no-wall reboot");
        denied("loginctl reboot");
        denied("init 0");
        denied("sudo telinit 6");
        allowed("mkfsx");
        allowed("rmate file");
        allowed("ddate");
        allowed("mkfs.");
        allowed("systemctl status");
        allowed("systemctl restart nginx");
        allowed("init");
        allowed("dig reboot.example");
        let argv = words("mkfs.ext4 /dev/sdb1");
        assert_eq!(
            policy().check(&argv[0], &argv[1..]).unwrap_err().to_string(),
            "Command 'mkfs.ext4' is denied (as 'mkfs', which the denylist names)"
        );
        let argv = words("systemctl poweroff");
        assert_eq!(
            policy().check(&argv[0], &argv[1..]).unwrap_err().to_string(),
            "Command 'poweroff' is denied (as 'shutdown', which the denylist names) (run through systemctl)"
        );
    }

    #[test]
    fn shells_are_seen_through() {
        denied("sh -c 'rm -rf /'");
        denied("bash -c 'rm -rf /'");
        denied("bash -lc 'rm x'");
        denied("bash -ec 'rm x'");
        denied("bash -c -e 'rm x'");
        denied("bash --login -c 'rm x'");
        denied("bash -o pipefail -c 'rm x'");
        denied("/bin/sh -c 'echo hi; rm x'");
        denied("zsh -c 'true && rm x'");
        denied("dash -c 'false || rm x'");
        denied("sh -c 'ls | rm x'");
        denied("sh -c 'ls\nrm x'");
        denied("sh -c 'sleep 1 & rm x'");
        denied("sh -c 'echo $(rm x)'");
        denied("sh -c 'echo `rm x`'");
        denied(r#"sh -c 'echo "$(rm x)"'"#);
        denied("sh -c 'diff <(rm x) y'");
        denied("sh -c '(rm x)'");
        denied("sh -c '{ rm x; }'");
        denied("sh -c 'if true; then rm x; fi'");
        denied("sh -c 'for f in a b; do rm $f; done'");
        denied("sh -c 'while true; do rm x; done'");
        denied("sh -c 'FOO=1 rm x'");
        denied("sh -c '! rm x'");
        denied(r#"sh -c '"rm" x'"#);
        denied(r#"sh -c 'r""m x'"#);
        denied(r"sh -c '\rm x'");
        denied("sh -c 'ls 2>/dev/null; rm x'");
        denied("sh -c \"sh -c 'rm x'\"");
        denied("sh -c 'eval rm x'");
        denied("sh -c \"trap 'rm x' EXIT\"");
        denied("sh -c 'echo ok # comment\nrm x'");
        denied("cmd /c rm x");
        denied("CMD.EXE /C 'del && rm x'");
        allowed("sh -c 'echo rm'");
        allowed("sh -c 'ls > rm'");
        allowed("sh -c 'echo hi # rm x'");
        allowed("sh script.sh");
        allowed("bash -c 'echo $((1+2))'");
    }

    #[test]
    fn wrappers_are_seen_through() {
        denied("env rm x");
        denied("env FOO=1 BAR=2 rm x");
        denied("env -i PATH=/bin rm x");
        denied("env -u HOME rm x");
        denied("env -- rm x");
        denied("nohup rm x");
        denied("sudo rm x");
        denied("sudo -u root rm x");
        denied("sudo -E -u root -- rm x");
        denied("sudo -nu root rm x");
        denied("doas rm x");
        denied("xargs rm");
        denied("xargs -0 -n 1 rm");
        denied("xargs -I {} rm {}");
        denied("timeout 5 rm x");
        denied("timeout -s KILL 5 rm x");
        denied("timeout --kill-after=1 5 rm x");
        denied("nice rm x");
        denied("nice -n 10 rm x");
        denied("ionice -c 3 rm x");
        denied("exec rm x");
        denied("command rm x");
        denied("command -p rm x");
        denied("stdbuf -oL rm x");
        denied("setsid rm x");
        denied("busybox rm x");
        denied("time rm x");
        denied(r"find . -name x -exec rm {} \;");
        denied("env -S 'rm -rf x'");
        denied("env -u A --split-string='FOO=1 rm x'");
        denied("find . -delete");
        denied("env sh -c 'nohup sudo rm x'");
        denied("sudo bash -c 'xargs rm < list'");
        denied("timeout 5 env FOO=1 nice -n 5 /bin/rm x");
        allowed("env FOO=1 ls");
        allowed("sudo -l");
        allowed("timeout 5 sleep 1");
        allowed("find . -name rm");
        allowed("xargs echo");
        allowed("nohup");
    }

    #[test]
    fn the_allowlist_applies_to_every_program_in_the_chain() {
        let allow = ["ls", "git", "sh"].map(String::from);
        let policy = Policy::new(&[], Some(&allow));
        let check = |line: &str| {
            let argv = words(line);
            policy.check(&argv[0], &argv[1..])
        };
        assert_eq!(check("ls -la"), Ok(()));
        assert_eq!(check("/usr/bin/git status"), Ok(()));
        assert_eq!(check("sh -c 'cd /tmp && ls'"), Ok(()), "harmless builtins need not be listed");
        assert_eq!(check("cat /etc/passwd"), Err(Refusal::NotAllowed { program: "cat".into(), via: vec![] }));
        assert_eq!(
            check("sh -c 'ls; cat x'"),
            Err(Refusal::NotAllowed { program: "cat".into(), via: vec!["sh".into()] })
        );
        assert!(check("env ls").is_err(), "env itself is a program that must be allowed");
        assert!(check("bash -c ls").is_err());
    }

    #[test]
    fn refusals_keep_the_1_0_21_wording_and_name_the_wrappers() {
        let argv = words("sudo sh -c 'rm x'");
        let refusal = policy().check(&argv[0], &argv[1..]).unwrap_err();
        assert_eq!(refusal.to_string(), "Command 'rm' is denied (run through sudo → sh)");
        assert_eq!(policy().check("rm", &[]).unwrap_err().to_string(), "Command 'rm' is denied");
    }

    #[test]
    fn an_empty_denylist_denies_nothing_and_deep_nesting_is_refused() {
        let open = Policy::new(&[], None);
        assert_eq!(open.check("rm", &["x".into()]), Ok(()));
        let mut argv: Vec<String> = Vec::new();
        for _ in 0..20 {
            argv.push("env".into());
        }
        argv.push("ls".into());
        assert_eq!(open.check(&argv[0], &argv[1..]), Err(Refusal::TooDeep));
    }

    #[test]
    fn scripts_split_into_commands_and_substitutions() {
        let parsed = split_script("a 'b c' \"d $(e f)\" 2>/dev/null | g; h `i`");
        assert_eq!(
            parsed.commands,
            vec![
                vec!["a".to_string(), "b c".into(), "d $(…)".into()],
                vec!["g".into()],
                vec!["h".into(), "$(…)".into()]
            ]
        );
        assert_eq!(parsed.substitutions, vec!["e f".to_string(), "i".into()]);
    }

    /// A remote request's command line: any text, nested as deep as it likes.
    #[test]
    fn any_command_line_is_judged_without_panicking_or_overflowing_the_stack() {
        let lines = crate::fuzz::inputs(
            &[
                "sh -c 'echo \"$(rm x)\" `ls` <(a) # c'",
                "env -S 'a b' find . -exec rm {} ;",
                "timeout -k 1 5 sudo -u r x",
            ],
            "abcrm -'\"\\$()`;&|<>#{}=\n",
            19,
            20_000,
        );
        for line in &lines {
            let argv: Vec<String> = line.split(' ').map(String::from).collect();
            let _ = policy().check(&argv[0], &argv[1..]);
            let _ = policy().check("sh", &["-c".into(), line.clone()]);
        }
        for nest in ["$(", "<(", "\"$("] {
            let deep = format!("{}rm x", nest.repeat(100_000));
            assert_eq!(policy().check("sh", &["-c".into(), deep]), Err(Refusal::TooDeep), "{nest}");
        }
        for nest in ["`", "sh -c '", "env -S '", "(", "{ "] {
            let _ = policy().check("sh", &["-c".into(), nest.repeat(100_000)]);
        }
        let wrappers: Vec<String> = ["sudo", "nice"].repeat(50_000).into_iter().map(String::from).collect();
        assert_eq!(policy().check("env", &wrappers), Err(Refusal::TooDeep));
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalize("/usr/bin/RM"), "rm");
        assert_eq!(normalize(r"C:\bin\Rm.Exe"), "rm");
        assert_eq!(normalize(".exe"), ".exe");
        assert_eq!(normalize("mkfs.ext4"), "mkfs.ext4");
    }
}
