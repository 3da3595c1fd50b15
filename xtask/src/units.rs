//! `cargo xtask units`: writes the generated service units (systemd, launchd, schtasks) for a
//! fixed example into `dist/units/` for review. A unit test of the main crate
//! (`service::units`) fails while they are out of date.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.is_empty(), "usage: cargo xtask units");
    let bin = crate::build::loopsy(false)?;
    let dir = crate::repo_root().join("dist/units");
    print!("{}", crate::build::run(&bin, &["generate", "units", &dir.to_string_lossy()])?);
    Ok(())
}
