//! `cargo xtask e2e`: the multi-daemon scenarios (sessions on one machine, netlab hosts, the
//! approval inbox across both) in one
//! run, ending with a summary line `N passed, M failed`.
//!
//! The tests run with `CI=true`, so a scenario whose prerequisite is missing (root, netlab,
//! python-zeroconf) fails instead of being skipped: an e2e run that skipped something did not
//! show what it is for.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The test modules of the scenarios.
const SCENARIOS: &[&str] = &["sessions::", "netlab::", "approvals::"];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut command = Command::new(env!("CARGO"));
    command.args(["test", "--package", "loopsy", "--test", "integration", "--"]).args(SCENARIOS).args(args);
    // A skip is a failure here (tests/support/skip.rs).
    command.env("CI", "true");
    let mut child = command.current_dir(crate::repo_root()).stdout(Stdio::piped()).spawn()?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = summary(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    println!(
        "\ne2e: {passed} passed, {failed} failed (with CI=true: a missing prerequisite is a failure, never a skip)"
    );
    anyhow::ensure!(status.success() && failed == 0, "the end-to-end scenarios failed");
    Ok(())
}

/// (passed, failed) of a libtest `test result:` line.
fn summary(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |label: &str| {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(label).and_then(|n| n.trim().rsplit(' ').next()?.parse().ok()))
    };
    Some((count(" passed")?, count(" failed")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn libtest_summaries_are_read() {
        let line = "test result: ok. 5 passed; 1 failed; 2 ignored; 0 measured; 122 filtered out; finished in 1.21s";
        assert_eq!(super::summary(line), Some((5, 1)));
        assert_eq!(super::summary("running 5 tests"), None);
    }
}
