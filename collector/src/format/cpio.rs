//! `newc` cpio archives, the format of initramfs images.
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the path and
//! a NUL padded to a multiple of 4, then the data padded to a multiple of 4. The archive ends with
//! an entry named `TRAILER!!!`. The kernel unpacks it into the initial rootfs; archives may be
//! concatenated. Timestamps are 0 so that identical inputs give identical images.

/// File type bits of a directory.
pub const S_IFDIR: u32 = 0o040_000;
/// File type bits of a regular file.
pub const S_IFREG: u32 = 0o100_000;
/// File type bits of a symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// File type bits of a character device.
pub const S_IFCHR: u32 = 0o020_000;

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// An in-memory `newc` archive under construction.
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Archive {
    /// Starts an empty archive.
    pub fn new() -> Self {
        Self {
            bytes: Vec::new(),
            next_inode: 1,
        }
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let path = path.trim_start_matches('/');
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let filesize = u32::try_from(data.len()).expect("cpio entries are smaller than 4 GiB");
        let namesize = u32::try_from(path.len() + 1).expect("cpio paths are short");
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            filesize,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            namesize,
            0, // check
        ];
        self.next_inode += 1;
        self.bytes.extend_from_slice(MAGIC.as_bytes());
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        self.bytes.resize(self.bytes.len().next_multiple_of(4), 0);
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(path, S_IFDIR | 0o755, (0, 0), &[]);
        self
    }

    /// Adds a regular file with permission bits `perm` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.entry(path, S_IFREG | (perm & 0o7777), (0, 0), data);
        self
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, S_IFLNK | 0o777, (0, 0), target.as_bytes());
        self
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(path, S_IFCHR | (perm & 0o7777), (major, minor), &[]);
        self
    }

    /// Adds the trailer and returns the archive's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, (0, 0), &[]);
        self.bytes
    }
}

/// One entry of an archive, as [`entries`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path, without a leading `/` (as archives store it).
    pub name: String,
    /// `c_mode`: type and permission bits.
    pub mode: u32,
    /// Bytes of data (a symlink's target for links).
    pub size: u64,
}

/// What [`contents`] found in an archive: the room its files take once unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Contents {
    /// Entries (trailers not counted).
    pub entries: u64,
    /// Bytes of file data (regular files and symlink targets).
    pub data_bytes: u64,
}

/// Why an archive could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpioError {
    /// A header is not `newc` (`070701`) or its fields are not hex.
    #[error("cpio entry at offset {offset}: not a newc header")]
    BadHeader {
        /// Where the header starts.
        offset: usize,
    },
    /// An entry runs past the end.
    #[error("cpio entry at offset {offset}: truncated")]
    Truncated {
        /// Where the entry starts.
        offset: usize,
    },
}

fn hex_field(header: &[u8], index: usize) -> Option<u64> {
    let field = header.get(6 + index * 8..6 + (index + 1) * 8)?;
    u64::from_str_radix(std::str::from_utf8(field).ok()?, 16).ok()
}

/// Walks a (possibly concatenated) `newc` archive as the kernel's unpacker does: NUL padding
/// between archives is skipped, every trailer ends one archive. Returns the entries (trailers
/// left out) and where the walk stopped: the end, or the first byte that starts neither a
/// header nor padding (a compressed archive appended to a plain one).
pub fn entries(archive: &[u8]) -> Result<(Vec<Entry>, usize), CpioError> {
    let mut found = Vec::new();
    let mut at = 0usize;
    while at < archive.len() {
        if archive[at] == 0 {
            at += 1;
            continue;
        }
        let offset = at;
        if !archive[at..].starts_with(MAGIC.as_bytes()) {
            if found.is_empty() && at == 0 {
                return Err(CpioError::BadHeader { offset });
            }
            return Ok((found, at));
        }
        let header = archive
            .get(at..at + 110)
            .ok_or(CpioError::Truncated { offset })?;
        let field = |index| hex_field(header, index).ok_or(CpioError::BadHeader { offset });
        let mode = u32::try_from(field(1)?).map_err(|_| CpioError::BadHeader { offset })?;
        let size = field(6)?;
        let name_size = field(11)?;
        let size_bytes = usize::try_from(size).map_err(|_| CpioError::Truncated { offset })?;
        let name_size = usize::try_from(name_size).map_err(|_| CpioError::Truncated { offset })?;
        let name_end = at
            .checked_add(110 + name_size)
            .ok_or(CpioError::Truncated { offset })?;
        let name = archive
            .get(at + 110..name_end)
            .ok_or(CpioError::Truncated { offset })?;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start
            .checked_add(size_bytes)
            .filter(|&end| end <= archive.len())
            .ok_or(CpioError::Truncated { offset })?;
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        if name != TRAILER.as_bytes() {
            found.push(Entry {
                name: String::from_utf8_lossy(name).into_owned(),
                mode,
                size,
            });
        }
        at = data_end.next_multiple_of(4);
    }
    Ok((found, at))
}

/// The number of entries and bytes of data of a whole plain archive.
pub fn contents(archive: &[u8]) -> Result<Contents, CpioError> {
    let (found, end) = entries(archive)?;
    if end < archive.len() {
        return Err(CpioError::BadHeader { offset: end });
    }
    Ok(Contents {
        entries: found.len() as u64,
        data_bytes: found.iter().map(|e| e.size).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_of_concatenated_archives() {
        let mut first = Archive::new();
        first.dir("/etc").file("/etc/a", 0o644, b"12345");
        let mut second = Archive::new();
        second.file("/b", 0o644, &[7; 1000]).symlink("/c", "b");
        let mut bytes = first.finish();
        bytes.extend_from_slice(&[0; 512]);
        bytes.extend(second.finish());
        assert_eq!(
            contents(&bytes),
            Ok(Contents {
                entries: 4,
                data_bytes: 5 + 1000 + 1
            })
        );
        assert!(matches!(
            contents(&bytes[..bytes.len() - 200]),
            Err(CpioError::Truncated { .. })
        ));
        assert_eq!(contents(b"hello"), Err(CpioError::BadHeader { offset: 0 }));
        assert_eq!(contents(b"0707"), Err(CpioError::BadHeader { offset: 0 }));
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert_eq!(contents(&bad), Err(CpioError::BadHeader { offset: 0 }));
    }

    #[test]
    fn entries_are_newc_with_4_byte_alignment() {
        let mut archive = Archive::new();
        archive
            .dir("/etc")
            .file("/etc/kdump.conf", 0o644, b"path /var/crash\n");
        let bytes = archive.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        // The second entry starts after the first's 110-byte header and name, padded together.
        let second = (110 + "etc\0".len()).next_multiple_of(4);
        assert_eq!(&bytes[second..second + 6], b"070701");
        let mode = &bytes[second + 14..second + 22];
        assert_eq!(mode, b"000081a4");
        let name_at = second + 110;
        assert_eq!(&bytes[name_at..name_at + 15], b"etc/kdump.conf\0");
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    /// GNU cpio (the reference reader) extracts what the archive holds.
    #[test]
    fn gnu_cpio_extracts_the_archive() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let mut archive = Archive::new();
        archive
            .dir("/bin")
            .file("/bin/init", 0o755, b"#!/bin/sh\n")
            .symlink("/init", "bin/init")
            .dir("/data")
            .file("/data/odd", 0o600, b"12345");
        let bytes = archive.finish();
        let dir = tempfile::tempdir().unwrap();
        let mut cpio = Command::new("cpio")
            .args(["-i", "--quiet", "--make-directories"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        cpio.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(cpio.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("data/odd")).unwrap(),
            b"12345"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("init"))
                .unwrap()
                .to_str(),
            Some("bin/init")
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("bin/init"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o755);
    }
}
