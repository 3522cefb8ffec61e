//! The Debian package: `rkdump_<version>_amd64.deb`, the README's package command
//! (`cargo run -p rkdump-lab -- package`).
//!
//! Three steps: the static binary ([`build::rkdump`]), the man pages generated from rkdump's own
//! command-line definitions (`clap_mangen`, one page per subcommand, into `target/man/`), then
//! cargo-deb with `--no-build` on the rkdump crate, whose `[package.metadata.deb]` lists the
//! files (the unit, the udev rule, the generator, the default kdump.conf, the dracut module,
//! the docs) and the maintainer scripts in `collector/debian/`. cargo-deb writes the systemd
//! parts of the maintainer scripts (enable, start, restart after an upgrade) as
//! dh_installsystemd does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;

use crate::build;

/// The cargo-deb release the package is built and tested with (`cargo install --locked
/// cargo-deb@VERSION`; `qemu/install-deps` installs it).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where the man pages are generated (the metadata's `../target/man/*.8`).
pub fn man_dir() -> PathBuf {
    build::workspace_root().join("target/man")
}

/// Writes `rkdump.8` and one `rkdump-<subcommand>.8` per visible subcommand into `dir`;
/// returns the pages written.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let command = rkdump::cli::Cli::command();
    let mut pages = Vec::new();
    let mut write = |name: &str, command: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.8"));
        let mut text = Vec::new();
        clap_mangen::Man::new(command)
            .section("8")
            .render(&mut text)
            .with_context(|| format!("rendering {name}(8)"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        pages.push(path);
        Ok(())
    };
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap's names are `&'static str` without its `string` feature; this runs once.
        let name: &'static str = format!("rkdump-{}", sub.get_name()).leak();
        write(name, sub.clone().name(name))?;
    }
    write("rkdump", command)?;
    pages.sort();
    Ok(pages)
}

/// Builds the package into `target/debian/` and returns its path. Concurrent callers (tests
/// in parallel processes) build one after the other, under a lock in that directory.
pub fn build() -> Result<PathBuf> {
    let out_dir = build::target_dir().join("debian");
    std::fs::create_dir_all(&out_dir)?;
    let lock = std::fs::File::create(out_dir.join(".lock"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| anyhow::anyhow!("locking {}: {errno}", out_dir.display()))?;
    build::rkdump()?;
    write_man_pages(&man_dir())?;
    let version = Command::new("cargo-deb").arg("--version").output();
    match version {
        Ok(output) if output.status.success() => {}
        _ => bail!(
            "cargo-deb is not installed: cargo install --locked cargo-deb@{CARGO_DEB_VERSION}"
        ),
    }
    let output = Command::new("cargo-deb")
        .current_dir(build::workspace_root())
        .args(["--package", "rkdump", "--no-build", "--no-strip", "--quiet"])
        .args(["--target", build::STATIC_TARGET])
        .arg("--output")
        .arg(&out_dir)
        .output()
        .context("running cargo-deb")?;
    if !output.status.success() {
        bail!(
            "cargo-deb failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    let path = PathBuf::from(printed.trim().lines().last().unwrap_or_default());
    if !path.is_file() {
        bail!("cargo-deb printed {printed:?}, which is not the package it wrote");
    }
    Ok(path)
}

/// What `dpkg-deb` says a package holds: its control fields and its paths (`./usr/sbin/rkdump`,
/// ...), for the tests.
pub fn contents(deb: &Path) -> Result<(String, Vec<String>)> {
    let run = |option: &str| -> Result<String> {
        let output = Command::new("dpkg-deb")
            .arg(option)
            .arg(deb)
            .output()
            .context("running dpkg-deb")?;
        if !output.status.success() {
            bail!(
                "dpkg-deb {option} {}: {}",
                deb.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let control = run("--field")?;
    // `dpkg-deb --contents` is `tar -tv`: the path is the sixth field (a link adds `-> target`).
    let files = run("--contents")?
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5).map(str::to_owned))
        .collect();
    Ok((control, files))
}
