//! Checking a dump directory against its manifest (`rkdump verify`, and `rkdump receive` when a
//! manifest arrives).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::format::bytes::to_usize;
use crate::format::manifest::{MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, ManifestError};

/// Why a dump directory does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The manifest is unreadable.
    #[error("{}: {source}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// The problem.
        source: ManifestError,
    },
    /// A file has another size than the manifest says.
    #[error("{}: {size} bytes, but the manifest says {expected}", path.display())]
    Size {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The manifest's size.
        expected: u64,
    },
    /// A chunk's checksum differs.
    #[error(
        "{}: chunk {index} (bytes {start:#x}-{end:#x}) has CRC-32 {actual:08x}, but the manifest says {expected:08x}",
        path.display()
    )]
    Chunk {
        /// The file.
        path: PathBuf,
        /// Chunk number.
        index: usize,
        /// First byte of the chunk.
        start: u64,
        /// End of the chunk.
        end: u64,
        /// Checksum of the file's bytes.
        actual: u32,
        /// Checksum in the manifest.
        expected: u32,
    },
}

/// What a successful verification covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Files checked.
    pub files: usize,
    /// Bytes checked.
    pub bytes: u64,
}

/// Reads the manifest of `dir`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, VerifyError> {
    let path = dir.join(MANIFEST_NAME);
    let io = |source| VerifyError::Io {
        path: path.clone(),
        source,
    };
    let file = open_nofollow(&path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Manifest::parse(&bytes).map_err(|source| VerifyError::Manifest {
        path: path.clone(),
        source,
    })
}

/// Checks every file the manifest of `dir` lists: size and each chunk's CRC-32.
pub fn verify_dir(dir: &Path) -> Result<Verified, VerifyError> {
    let manifest = read_manifest(dir)?;
    let mut verified = Verified { files: 0, bytes: 0 };
    for entry in &manifest.files {
        let path = dir.join(&entry.name);
        let io = |source| VerifyError::Io {
            path: path.clone(),
            source,
        };
        let mut file = open_nofollow(&path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size != entry.size {
            return Err(VerifyError::Size {
                path,
                size,
                expected: entry.size,
            });
        }
        let mut buffer = vec![0u8; to_usize(manifest.chunk_size)];
        for (index, &expected) in entry.crc32.iter().enumerate() {
            let start = index as u64 * manifest.chunk_size;
            let len = to_usize((size - start).min(manifest.chunk_size));
            file.read_exact(&mut buffer[..len]).map_err(io)?;
            let actual = crc32fast::hash(&buffer[..len]);
            if actual != expected {
                return Err(VerifyError::Chunk {
                    path,
                    index,
                    start,
                    end: start + len as u64,
                    actual,
                    expected,
                });
            }
        }
        verified.files += 1;
        verified.bytes += size;
    }
    Ok(verified)
}

/// Opens a regular file for reading without following a symbolic link in its last component.
fn open_nofollow(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::new(4096);
        for (name, len) in [("vmcore-dmesg.txt", 100usize), ("vmcore", 10_000)] {
            let data: Vec<u8> = (0..len)
                .map(|i| u8::try_from(i * 7 % 256).unwrap())
                .collect();
            std::fs::write(dir.path().join(name), &data).unwrap();
            manifest.add_bytes(name, &data);
        }
        std::fs::write(dir.path().join(MANIFEST_NAME), manifest.encode()).unwrap();
        dir
    }

    #[test]
    fn an_intact_dump_verifies() {
        let dir = dump_dir();
        assert_eq!(
            verify_dir(dir.path()).unwrap(),
            Verified {
                files: 2,
                bytes: 10_100
            }
        );
    }

    #[test]
    fn a_flipped_byte_names_its_chunk() {
        let dir = dump_dir();
        let path = dir.path().join("vmcore");
        let mut data = std::fs::read(&path).unwrap();
        data[9000] ^= 1;
        std::fs::write(&path, &data).unwrap();
        let err = verify_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("vmcore: chunk 2 (bytes 0x2000-0x2710)"),
            "{err}"
        );
    }

    #[test]
    fn a_short_file_and_a_missing_manifest_are_named() {
        let dir = dump_dir();
        let path = dir.path().join("vmcore");
        std::fs::write(&path, [0u8; 10]).unwrap();
        let err = verify_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("vmcore: 10 bytes, but the manifest says 10000"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join(MANIFEST_NAME)).unwrap();
        let err = verify_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(MANIFEST_NAME), "{err}");
    }
}
