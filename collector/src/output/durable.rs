//! Durability: how a file becomes visible only once it is complete.
//!
//! Every regular file rkdump writes (dumps, `vmcore-dmesg.txt`, reassembled dumps) is written
//! under its *incomplete name* (kdump-utils' spelling: `vmcore-incomplete`,
//! `vmcore-dmesg-incomplete.txt`), synced, and only then renamed to its real name, with the
//! directory synced so that the rename survives a power cut. A reader that finds the real name
//! therefore finds the whole file; a crash midway leaves the incomplete name behind.
//!
//! That only holds for regular files. A destination that already exists as something else (a
//! block or character device, a FIFO, a socket, or a symbolic link to one, `/dev/stdout`
//! among them) is written in place and never renamed over: [`existing`] tells the writers
//! which case they are in.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::OutputError;

/// What a destination path names already (through symbolic links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing, or a regular file: written under its incomplete name and renamed.
    File,
    /// A block device: seekable, written in place.
    BlockDevice,
    /// A character device, FIFO or socket: a stream, written in place from its start.
    Stream(&'static str),
}

/// What `path` names: a regular file (or nothing yet), a block device or a stream.
pub fn existing(path: &Path) -> Existing {
    let Ok(metadata) = std::fs::metadata(path) else {
        return Existing::File;
    };
    let kind = metadata.file_type();
    if kind.is_block_device() {
        Existing::BlockDevice
    } else if kind.is_char_device() {
        Existing::Stream("character device")
    } else if kind.is_fifo() {
        Existing::Stream("FIFO")
    } else if kind.is_socket() {
        Existing::Stream("socket")
    } else {
        Existing::File
    }
}

/// Makes what was written to `file` durable where that means something: a device or a pipe
/// cannot be synced (EINVAL), and is not expected to be.
pub fn sync_in_place(file: &File) -> io::Result<()> {
    match file.sync_all() {
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => Ok(()),
        other => other,
    }
}

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

/// Writes `text` to `path` via its incomplete name, fsync and rename (the dmesg files); a
/// device, FIFO or socket already at `path` gets `text` written into it in place instead.
pub fn write_file_atomically(path: &Path, text: &[u8]) -> Result<(), OutputError> {
    if existing(path) != Existing::File {
        let fail = |source| OutputError::Io {
            target: path.display().to_string(),
            offset: 0,
            len: text.len(),
            source,
        };
        let mut file = OpenOptions::new().write(true).open(path).map_err(fail)?;
        return file
            .write_all(text)
            .and_then(|()| sync_in_place(&file))
            .map_err(fail);
    }
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
    fn devices_and_fifos_are_told_from_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing(&dir.path().join("new")), Existing::File);
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert_eq!(existing(&dir.path().join("file")), Existing::File);
        assert_eq!(
            existing(Path::new("/dev/null")),
            Existing::Stream("character device")
        );
        let link = dir.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert_eq!(existing(&link), Existing::Stream("character device"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(existing(&fifo), Existing::Stream("FIFO"));
    }

    #[test]
    fn an_atomic_write_to_a_device_writes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        write_file_atomically(&link, b"log\n").unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
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
