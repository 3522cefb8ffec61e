//! Space accounting of a receiving session: the client's quota and the file system's reserve.
//!
//! The quota counts the bytes of the regular files under the client's directory, measured once
//! when the session opens and grown by every write that extends a file (rewriting bytes a file
//! already holds costs nothing, so a resumed transfer is not charged twice). The reserve is
//! free space that writes must leave on the root's file system, so that a flood of dumps does
//! not fill the server's disk; `statvfs` answers show the client the space above it only.

use std::io;
use std::path::{Path, PathBuf};

use crate::format::sftp;

/// Why a write does not fit.
#[derive(Debug, thiserror::Error)]
pub(super) enum QuotaError {
    /// The client's quota would be exceeded.
    #[error("quota of {quota} bytes for client {client} reached ({held} bytes held)")]
    Quota {
        /// The quota.
        quota: u64,
        /// The client's name.
        client: String,
        /// Bytes the client holds.
        held: u64,
    },
    /// The free-space reserve would be used.
    #[error("free-space reserve of {reserve} bytes on {} reached ({available} bytes free)", root.display())]
    Reserve {
        /// The reserve.
        reserve: u64,
        /// The dump root.
        root: PathBuf,
        /// Bytes free for unprivileged writers.
        available: u64,
    },
    /// The file system's free space cannot be read.
    #[error("statvfs: {0}")]
    Statvfs(#[source] io::Error),
}

/// The space one session may still use.
#[derive(Debug)]
pub(super) struct Space {
    /// The client's name, for messages.
    client: String,
    /// The dump root, for messages.
    root: PathBuf,
    /// The client's directory, whose file system is measured.
    home: PathBuf,
    /// Free space writes must leave, in bytes.
    reserve: u64,
    /// Bytes the client may hold, if limited.
    quota: Option<u64>,
    /// Bytes the client holds (counted only with a quota).
    used: u64,
}

impl Space {
    /// The accounting of client `client`, whose directory `home` is under `root`; with a quota,
    /// what the directory already holds is counted.
    pub(super) fn open(
        client: &str,
        root: &Path,
        home: &Path,
        reserve: u64,
        quota: Option<u64>,
    ) -> io::Result<Self> {
        let used = if quota.is_some() {
            disk_usage(home)?
        } else {
            0
        };
        Ok(Self {
            client: client.to_owned(),
            root: root.to_owned(),
            home: home.to_owned(),
            reserve,
            quota,
            used,
        })
    }

    /// Whether a write that grows the client's files by `growth` bytes fits (the quota, then,
    /// for a growing write, the reserve). A growth whose sum with the bytes held overflows is
    /// over any quota.
    pub(super) fn check(&self, growth: u64) -> Result<(), QuotaError> {
        if let Some(quota) = self.quota
            && self
                .used
                .checked_add(growth)
                .is_none_or(|total| total > quota)
        {
            return Err(QuotaError::Quota {
                quota,
                client: self.client.clone(),
                held: self.used,
            });
        }
        if growth > 0 {
            let available = available_bytes(&self.home).map_err(QuotaError::Statvfs)?;
            if available.saturating_sub(growth) < self.reserve {
                return Err(QuotaError::Reserve {
                    reserve: self.reserve,
                    root: self.root.clone(),
                    available,
                });
            }
        }
        Ok(())
    }

    /// Counts a write [`check`](Self::check)ed and done.
    pub(super) fn record(&mut self, growth: u64) {
        self.used = self.used.saturating_add(growth);
    }

    /// The `statvfs@openssh.com` reply for the client's file system, the reserve not shown
    /// as available.
    pub(super) fn statvfs_reply(&self) -> io::Result<Vec<u8>> {
        let stat = nix::sys::statvfs::statvfs(&self.home).map_err(io::Error::from)?;
        let unit = stat.fragment_size().max(1);
        let reserve_blocks = self.reserve.div_ceil(unit);
        Ok(sftp::encode_statvfs(
            unit,
            stat.blocks(),
            stat.blocks_free(),
            stat.blocks_available().saturating_sub(reserve_blocks),
        ))
    }
}

/// Bytes available to unprivileged writers on the file system of `path`.
fn available_bytes(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// Bytes held by the regular files under `dir`.
fn disk_usage(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_already_held_count_against_the_quota() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("web01");
        std::fs::create_dir_all(home.join("d")).unwrap();
        std::fs::write(home.join("vmcore"), b"1234").unwrap();
        std::fs::write(home.join("d/vmcore"), b"56").unwrap();
        let mut space = Space::open("web01", root.path(), &home, 0, Some(10)).unwrap();
        space.check(4).unwrap();
        space.record(4);
        let error = space.check(1).unwrap_err().to_string();
        assert_eq!(
            error,
            "quota of 10 bytes for client web01 reached (10 bytes held)"
        );
        // Without a quota nothing is measured or limited.
        let space = Space::open("web01", root.path(), &home, 0, None).unwrap();
        assert_eq!(space.used, 0);
        space.check(1 << 20).unwrap();
    }

    #[test]
    fn a_growth_that_overflows_the_count_is_over_quota() {
        let root = tempfile::tempdir().unwrap();
        let mut space = Space::open("web01", root.path(), root.path(), 0, Some(u64::MAX)).unwrap();
        space.check(4).unwrap();
        space.record(4);
        // 4 + (u64::MAX - 3) does not fit in a u64: refused, not wrapped to 0 or a panic.
        assert!(matches!(
            space.check(u64::MAX - 3),
            Err(QuotaError::Quota { held: 4, .. })
        ));
        space.check(u64::MAX - 4).unwrap();
        let space = Space::open("web01", root.path(), root.path(), 0, Some(10)).unwrap();
        assert!(matches!(
            space.check(u64::MAX),
            Err(QuotaError::Quota { quota: 10, .. })
        ));
    }

    #[test]
    fn the_reserve_is_checked_only_for_growing_writes() {
        let root = tempfile::tempdir().unwrap();
        let space = Space::open("web01", root.path(), root.path(), u64::MAX / 2, None).unwrap();
        space.check(0).unwrap();
        assert!(matches!(
            space.check(1),
            Err(QuotaError::Reserve { reserve, .. }) if reserve == u64::MAX / 2
        ));
    }
}
