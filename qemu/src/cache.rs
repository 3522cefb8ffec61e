//! The lab's cache directory and the locks that let concurrent tests share it.
//!
//! Kernels, reference tools and finished crash runs live under `$RKDUMP_CACHE` (default
//! `/var/cache/rkdump`), outside the repository, so reruns and CI reuse them. Tests run as separate
//! processes (cargo-nextest), so sharing goes through `flock(2)`: the first test that needs a
//! crash makes it while the others wait on the lock, then all read the same result.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// The cache root.
pub fn root() -> PathBuf {
    std::env::var_os("RKDUMP_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/rkdump"), PathBuf::from)
}

/// Takes an exclusive lock on `path` (created if needed), held until the guard is dropped.
pub fn lock(path: &Path) -> Result<Flock<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", path.display()))
}
