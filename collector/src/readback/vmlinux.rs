//! Which kernel a `vmlinux` is, to tell whether it belongs to a dump: its release (from the
//! `linux_banner` string, `"Linux version <release> (..."`) and its GNU build id (the
//! `NT_GNU_BUILD_ID` note of its `PT_NOTE` segment), the two things the dead kernel's
//! VMCOREINFO records (`OSRELEASE=`, `BUILD-ID=` since Linux 5.9).
//!
//! A debug vmlinux is several hundred MiB: the banner is searched in 16 MiB windows, and only
//! the headers and notes are read otherwise.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::elf::{FileHeader, HEADER_SIZE, PROGRAM_HEADER_SIZE, PT_NOTE, ProgramHeader};
use crate::format::note;

/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;
const BANNER: &[u8] = b"Linux version ";
const WINDOW: usize = 16 << 20;

/// What a vmlinux says it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmlinuxId {
    /// `uname -r` of the kernel.
    pub release: Option<String>,
    /// The GNU build id, in hex.
    pub build_id: Option<String>,
}

/// Why a vmlinux cannot be identified.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    /// Reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not an ELF file.
    #[error("{}: not an ELF vmlinux: {what}", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// Why.
        what: String,
    },
}

/// The hex form of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Identifies the vmlinux at `path`.
pub fn identify(path: &Path) -> Result<VmlinuxId, VmlinuxError> {
    let io = |source| VmlinuxError::Io {
        path: path.to_owned(),
        source,
    };
    let not_elf = |what: String| VmlinuxError::NotElf {
        path: path.to_owned(),
        what,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let read = |offset: u64, size: usize| -> Result<Vec<u8>, VmlinuxError> {
        let mut buf = vec![0u8; size];
        file.read_exact_at(&mut buf, offset).map_err(io)?;
        Ok(buf)
    };
    if len < HEADER_SIZE as u64 {
        return Err(not_elf("shorter than an ELF header".into()));
    }
    let head = read(0, HEADER_SIZE)?;
    let header = FileHeader::parse(&head).map_err(|e| not_elf(e.to_string()))?;
    let table_len = usize::from(header.phnum) * PROGRAM_HEADER_SIZE;
    if header.phoff.saturating_add(table_len as u64) > len {
        return Err(not_elf("the program headers run past the end".into()));
    }
    let table = read(header.phoff, table_len)?;
    let headers = ProgramHeader::parse_table(&table, usize::from(header.phnum))
        .map_err(|e| not_elf(e.to_string()))?;
    let mut id = VmlinuxId::default();
    for phdr in headers.iter().filter(|p| p.p_type == PT_NOTE) {
        let size = usize::try_from(phdr.filesz).unwrap_or(usize::MAX);
        if phdr.offset.saturating_add(phdr.filesz) > len || size > 1 << 20 {
            continue;
        }
        let bytes = read(phdr.offset, size)?;
        let Ok(notes) = note::parse(&bytes) else {
            continue;
        };
        if let Some(build) = notes
            .iter()
            .find(|n| n.name == b"GNU" && n.note_type == NT_GNU_BUILD_ID)
        {
            id.build_id = Some(hex(build.desc));
        }
    }
    id.release = banner_release(&file, len).map_err(io)?;
    Ok(id)
}

/// The release in the first `"Linux version <release> ("` of the file.
fn banner_release(file: &File, len: u64) -> std::io::Result<Option<String>> {
    let mut offset = 0u64;
    let mut window = vec![0u8; WINDOW];
    while offset < len {
        let size = usize::try_from((len - offset).min(WINDOW as u64)).unwrap_or(WINDOW);
        file.read_exact_at(&mut window[..size], offset)?;
        let bytes = &window[..size];
        let mut from = 0;
        while let Some(at) = bytes[from..]
            .windows(BANNER.len())
            .position(|w| w == BANNER)
        {
            let start = from + at + BANNER.len();
            let rest = &bytes[start..bytes.len().min(start + 128)];
            if let Some(end) = rest.iter().position(|&b| b == b' ')
                && rest.get(end + 1) == Some(&b'(')
                && end > 0
                && rest[..end].iter().all(|b| b.is_ascii_graphic())
            {
                return Ok(Some(String::from_utf8_lossy(&rest[..end]).into_owned()));
            }
            from = start;
        }
        if size < WINDOW {
            break;
        }
        // Overlap so that a banner across two windows is seen.
        offset += (WINDOW - 256) as u64;
    }
    Ok(None)
}

/// How a dump and a vmlinux compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The build ids are equal (or, without them, the releases).
    Yes,
    /// They differ: what differs.
    No(String),
    /// Nothing to compare.
    Unknown(String),
}

/// Compares the dump's release and build id with the vmlinux's.
pub fn compare(
    dump_release: Option<&str>,
    dump_build_id: Option<&str>,
    vmlinux: &VmlinuxId,
) -> Match {
    let release = match (dump_release, vmlinux.release.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Match::No(format!("the dump is of {a}, the vmlinux is {b}"));
        }
        (Some(_), Some(_)) => true,
        _ => false,
    };
    match (dump_build_id, vmlinux.build_id.as_deref()) {
        (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => Match::No(format!(
            "same release, different builds: the dump's build id is {a}, the vmlinux's {b}"
        )),
        (Some(_), Some(_)) => Match::Yes,
        _ if release => Match::Yes,
        _ => Match::Unknown("neither the release nor the build id could be compared".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::elf::EM_X86_64;

    #[test]
    fn compare_by_build_id_then_release() {
        let vmlinux = VmlinuxId {
            release: Some("6.1.0-57-amd64".into()),
            build_id: Some("ab12".into()),
        };
        assert_eq!(
            compare(Some("6.1.0-57-amd64"), Some("AB12"), &vmlinux),
            Match::Yes
        );
        assert!(
            matches!(compare(Some("6.1.0-57-cloud-amd64"), None, &vmlinux), Match::No(m) if m.contains("cloud"))
        );
        assert!(
            matches!(compare(Some("6.1.0-57-amd64"), Some("cd34"), &vmlinux), Match::No(m) if m.contains("different builds"))
        );
        assert_eq!(compare(Some("6.1.0-57-amd64"), None, &vmlinux), Match::Yes);
        assert!(matches!(
            compare(None, None, &VmlinuxId::default()),
            Match::Unknown(_)
        ));
    }

    #[test]
    fn identifies_an_elf_with_a_build_id_note_and_a_banner() {
        // An ELF64 file with one PT_NOTE holding NT_GNU_BUILD_ID and, after it, a banner as
        // init/version.c prints it.
        let build = [0x5a_u8; 20];
        let notes = note::encode(b"GNU", NT_GNU_BUILD_ID, &build);
        let mut file = vec![0u8; 64 + 56];
        let header = FileHeader {
            e_type: 2, // ET_EXEC
            machine: EM_X86_64,
            phoff: 64,
            phnum: 1,
            ..FileHeader::default()
        };
        file[..64].copy_from_slice(&header.encode());
        let phdr = ProgramHeader {
            p_type: PT_NOTE,
            offset: 120,
            filesz: notes.len() as u64,
            memsz: notes.len() as u64,
            ..ProgramHeader::default()
        };
        file[64..120].copy_from_slice(&phdr.encode());
        file.extend_from_slice(&notes);
        file.extend_from_slice(
            b"\0Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) (gcc-12)\0",
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, &file).unwrap();
        let id = identify(&path).unwrap();
        assert_eq!(id.release.as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(id.build_id, Some(hex(&build)));
        std::fs::write(
            &path,
            b"not an elf file at all, but long enough for a header......................",
        )
        .unwrap();
        assert!(identify(&path).is_err());
    }
}
