//! `loopsy generate completions <bash|zsh|fish>`, `generate man`, `generate units <dir>`: shell
//! completions and the man page for users (README says how to install them) and packagers
//! (`cargo xtask dist`), the sample service units (`cargo xtask units`); `generate local-config
//! <dir>`: a loopback-only config for benchmarks and fleets (`cargo xtask bench|fleet`). It needs
//! no data directory: `cli::run` dispatches it before resolving one.
//!
//! The command tree is read from argh itself (each command's `--help` text, parsed), so the
//! completions and the man page follow the real commands without a hand-kept copy.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use argh::FromArgs;

use super::Loopsy;
use crate::service::units::{self, UnitSpec};

/// print shell completions (bash, zsh, fish) or the man page
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "generate")]
pub struct Args {
    #[argh(subcommand)]
    what: What,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum What {
    Completions(Completions),
    Man(Man),
    Units(Units),
    LocalConfig(LocalConfig),
}

/// print a shell completion script
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "completions")]
struct Completions {
    /// bash, zsh or fish
    #[argh(positional)]
    shell: String,
}

/// print the man page (roff)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "man")]
struct Man {}

/// write the sample service units (as reviewed in dist/units/) into a directory
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "units")]
struct Units {
    /// the directory to write into
    #[argh(positional)]
    dir: std::path::PathBuf,
}

/// make the config of a data directory listen on loopback only, not announced (benchmarks, fleets)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "local-config")]
struct LocalConfig {
    /// the data directory (made by `loopsy init`)
    #[argh(positional)]
    home: std::path::PathBuf,
    /// the port to listen on (0: any free port)
    #[argh(option)]
    port: Option<u16>,
    /// turn the per-key rate limits off
    #[argh(switch)]
    unlimited: bool,
    /// turn TLS on (loopback clients may still use plain HTTP on the same port)
    #[argh(switch)]
    tls: bool,
}

pub fn run(parsed: Args) -> anyhow::Result<()> {
    match parsed.what {
        What::Completions(cmd) => {
            let tree = Node::read(Vec::new());
            print!(
                "{}",
                match cmd.shell.as_str() {
                    "bash" => bash(&tree),
                    "zsh" => format!("#compdef loopsy\nautoload -U +X bashcompinit && bashcompinit\n{}", bash(&tree)),
                    "fish" => fish(&tree),
                    other => bail!("unknown shell '{other}' (bash, zsh or fish)"),
                }
            );
        }
        What::Man(_) => print!("{}", man(&Node::read(Vec::new()))),
        What::Units(cmd) => write_units(&cmd.dir)?,
        What::LocalConfig(cmd) => {
            let paths = crate::paths::Paths::from_dir(&cmd.home)?;
            let local = crate::config::LocalOnly { port: cmd.port, unlimited: cmd.unlimited, tls: cmd.tls };
            crate::config::make_local_only(&paths, local)?;
        }
    }
    Ok(())
}

/// One command of the tree, as its help text describes it.
#[derive(Debug, Default)]
pub struct Node {
    pub path: Vec<String>,
    pub usage: String,
    pub description: String,
    /// (flags as printed, e.g. "-f, --follow", description)
    pub options: Vec<(String, String)>,
    pub positionals: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Node {
    /// The command at `path` and everything below it.
    pub fn read(path: Vec<String>) -> Node {
        let mut words: Vec<&str> = path.iter().map(String::as_str).collect();
        words.push("--help");
        let help = match Loopsy::from_args(&["loopsy"], &words) {
            Err(early) => early.output,
            Ok(_) => String::new(),
        };
        let mut node = Node { path: path.clone(), ..Node::default() };
        let mut commands = Vec::new();
        let mut section = "";
        for line in help.lines() {
            if let Some(usage) = line.strip_prefix("Usage: ") {
                node.usage = usage.to_string();
            } else if !line.starts_with(' ') && line.ends_with(':') {
                section = match line {
                    "Options:" => "options",
                    "Commands:" => "commands",
                    "Positional Arguments:" => "positionals",
                    _ => "",
                };
            } else if !line.starts_with(' ') && !line.is_empty() && node.description.is_empty() && section.is_empty() {
                node.description = line.to_string();
            } else if let Some(entry) = line.strip_prefix("  ").filter(|e| !e.starts_with(' ')) {
                let (name, text) = entry.split_once("  ").unwrap_or((entry, ""));
                let item = (name.trim().to_string(), text.trim().to_string());
                match section {
                    "options" if !name.starts_with("--help") => node.options.push(item),
                    "positionals" => node.positionals.push(item),
                    "commands" => commands.push(item.0),
                    _ => {}
                }
            } else if !line.trim().is_empty() {
                // A wrapped description continues the last entry.
                let last = match section {
                    "options" => node.options.last_mut(),
                    "positionals" => node.positionals.last_mut(),
                    _ => None,
                };
                if let Some((_, text)) = last {
                    text.push(' ');
                    text.push_str(line.trim());
                }
            }
        }
        for command in commands {
            let mut child = path.clone();
            child.push(command);
            node.children.push(Node::read(child));
        }
        node
    }

    fn words(&self) -> Vec<String> {
        let mut words: Vec<String> = self.children.iter().map(|c| c.path.last().cloned().unwrap_or_default()).collect();
        for (flags, _) in &self.options {
            words.extend(flags.split(", ").map(String::from));
        }
        words.push("--help".into());
        words
    }

    fn all(&self) -> Vec<&Node> {
        let mut out = vec![self];
        for child in &self.children {
            out.extend(child.all());
        }
        out
    }
}

fn bash(tree: &Node) -> String {
    let nodes = tree.all();
    let mut known = String::new();
    let mut cases = String::new();
    for node in &nodes {
        let key = node.path.join(" ");
        if !key.is_empty() {
            let _ = write!(known, "|\" {key}\"");
        }
        let _ = writeln!(cases, "        \"{}\") words=\"{}\" ;;", prefixed(&key), node.words().join(" "));
    }
    format!(
        "# bash completion for loopsy (generated by `loopsy generate completions bash`)\n\
         _loopsy() {{\n\
         \x20   local cur=\"${{COMP_WORDS[COMP_CWORD]}}\" path=\"\" word words i\n\
         \x20   for ((i = 1; i < COMP_CWORD; i++)); do\n\
         \x20       word=\"${{COMP_WORDS[i]}}\"\n\
         \x20       case \"$path $word\" in\n\
         \x20           \"\"{known}) path=\"$path $word\" ;;\n\
         \x20       esac\n\
         \x20   done\n\
         \x20   case \"$path\" in\n\
         {cases}\
         \x20       *) words=\"\" ;;\n\
         \x20   esac\n\
         \x20   COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n\
         }}\n\
         complete -o default -F _loopsy loopsy\n"
    )
}

fn prefixed(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" {key}")
    }
}

fn fish(tree: &Node) -> String {
    let mut out = String::from("# fish completion for loopsy (generated by `loopsy generate completions fish`)\n");
    for node in tree.all() {
        let condition = match node.path.as_slice() {
            [] => "__fish_use_subcommand".to_string(),
            path => format!("__fish_seen_subcommand_from {}", path.last().expect("not empty")),
        };
        for child in &node.children {
            let name = child.path.last().expect("children have a name");
            let _ =
                writeln!(out, "complete -c loopsy -n '{condition}' -a {name} -d '{}'", fish_quote(&child.description));
        }
        for (flags, text) in &node.options {
            let mut spec = String::new();
            for flag in flags.split(", ") {
                match flag.strip_prefix("--") {
                    Some(long) => spec.push_str(&format!(" -l {long}")),
                    None => spec.push_str(&format!(" -s {}", flag.trim_start_matches('-'))),
                }
            }
            let _ = writeln!(out, "complete -c loopsy -n '{condition}'{spec} -d '{}'", fish_quote(text));
        }
    }
    out
}

fn fish_quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

fn man(tree: &Node) -> String {
    let mut out = format!(
        ".TH LOOPSY 1 \"\" \"loopsy {}\" \"User Commands\"\n.SH NAME\nloopsy \\- {}\n.SH SYNOPSIS\n.B loopsy\n{}\n.SH DESCRIPTION\n{}\n",
        env!("CARGO_PKG_VERSION"),
        roff(tree.description.trim_end_matches('.')),
        roff(tree.usage.trim_start_matches("loopsy ")),
        roff(&tree.description),
    );
    out.push_str(".SH OPTIONS\n");
    push_items(&mut out, &tree.options);
    out.push_str(".SH COMMANDS\n");
    for node in tree.all().into_iter().skip(1) {
        let _ = writeln!(out, ".SS \"loopsy {}\"", roff(&node.path.join(" ")));
        let _ = writeln!(out, "{}\n.PP\n.B Usage:\n{}", roff(&node.description), roff(&node.usage));
        push_items(&mut out, &node.positionals);
        push_items(&mut out, &node.options);
    }
    out.push_str(".SH FILES\n.TP\n.I ~/.loopsy/config.yaml\nconfiguration and keys (or \\fB$LOOPSY_HOME\\fR, \\fB\\-\\-home\\fR)\n.TP\n.I ~/.loopsy/logs/daemon.log\nthe daemon log (\\fBloopsy logs \\-\\-daemon\\fR)\n.TP\n.I ~/.loopsy/logs/audit.jsonl\nthe audit log, one JSON line per request (\\fBloopsy logs\\fR)\n");
    out
}

fn push_items(out: &mut String, items: &[(String, String)]) {
    for (name, text) in items {
        let _ = writeln!(out, ".TP\n\\fB{}\\fR\n{}", roff(name), roff(text));
    }
}

/// Escapes text for roff: backslashes, hyphens, and a leading dot or quote.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// The sample units of `dist/units/` (what the golden test compares against).
pub fn sample_units() -> anyhow::Result<Vec<(&'static str, String)>> {
    let sample = UnitSpec::sample();
    let windows = UnitSpec::sample_windows();
    Ok(vec![
        ("loopsy.service", units::systemd_unit(&sample)),
        ("com.loopsy.daemon.plist", units::launchd_plist(&sample)),
        ("schtasks-create.txt", units::schtasks_create(&windows)?.join("\n") + "\n"),
    ])
}

fn write_units(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in sample_units()? {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_holds_nested_commands_and_their_options() {
        let tree = Node::read(Vec::new());
        let session = tree.children.iter().find(|c| c.path == ["session"]).expect("session command");
        let fleet = session.children.iter().find(|c| c.path == ["session", "start-fleet"]).expect("start-fleet");
        assert!(fleet.options.iter().any(|(flags, _)| flags == "-c, --count"), "{:?}", fleet.options);
        assert!(tree.options.iter().any(|(flags, _)| flags == "--home"));
        assert!(tree.children.iter().any(|c| c.path == ["generate"]), "generate completes itself");
        let bash = bash(&tree);
        assert!(bash.contains("\" session\") words=\"start start-fleet"), "{bash}");
        let man = man(&tree);
        assert!(man.contains(".SS \"loopsy session start\\-fleet\""));
        assert!(fish(&tree).contains("complete -c loopsy -n '__fish_seen_subcommand_from session' -a start-fleet"));
    }

    #[test]
    fn roff_escapes_dots_and_hyphens() {
        assert_eq!(roff(".x -y \\"), "\\&.x \\-y \\e");
    }
}
