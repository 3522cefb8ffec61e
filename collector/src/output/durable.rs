//! Durability: how a file becomes visible only once it is complete.
//!
//! Every regular file rkdump writes (dumps, `vmcore-dmesg.txt`, reassembled dumps) is written
//! under its *incomplete name* (kdump-utils' spelling: `vmcore-incomplete`,
//! `vmcore-dmesg-incomplete.txt`), synced, and only then renamed to its real name, with the
//! directory synced so that the rename survives a power cut. A reader that finds the real name
//! therefore finds the whole file; a crash midway leaves the incomplete name behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::OutputError;

/// The name a file is written under until it is complete, as kdump-utils names them:
/// `vmcore` becomes `vmcore-incomplete`, `vmcore-dmesg.txt` becomes
/// `vmcore-dmesg-incomplete.txt`.
pub fn incomplete_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let renamed = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => format!("{stem}-incomplete.{extension}"),
        _ => format!("{name}-incomplete"),
    };
    path.with_file_name(renamed)
}

/// Renames the finished file to its real name and makes the rename durable (syncs the
/// directory).
pub fn finalize(temporary: &Path, target: &Path) -> Result<(), OutputError> {
    let fail = |source| OutputError::Io {
        target: target.display().to_string(),
        offset: 0,
        len: 0,
        source,
    };
    std::fs::rename(temporary, target).map_err(fail)?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
}

/// Writes `text` to `path` via its incomplete name, fsync and rename (the dmesg files).
pub fn write_file_atomically(path: &Path, text: &[u8]) -> Result<(), OutputError> {
    let temporary = incomplete_name(path);
    let fail = |source| OutputError::Io {
        target: temporary.display().to_string(),
        offset: 0,
        len: text.len(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    file.write_all(text)
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    finalize(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_names_follow_kdump_utils() {
        assert_eq!(
            incomplete_name(Path::new("/d/vmcore")),
            Path::new("/d/vmcore-incomplete")
        );
        assert_eq!(
            incomplete_name(Path::new("/d/vmcore-dmesg.txt")),
            Path::new("/d/vmcore-dmesg-incomplete.txt")
        );
        assert_eq!(
            incomplete_name(Path::new(".hidden")),
            Path::new(".hidden-incomplete")
        );
    }

    #[test]
    fn an_atomic_write_leaves_only_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmcore-dmesg.txt");
        write_file_atomically(&path, b"log\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"log\n");
        assert!(!dir.path().join("vmcore-dmesg-incomplete.txt").exists());
    }
}
