//! Reading dump files: what `rkdump info`, `rkdump reassemble` and the tests use.
//!
//! [`detect`] tells a kdump-compressed file, an ELF core and a flattened stream apart by their
//! first bytes. [`kdump_reader::KdumpFile`] reads a kdump-compressed file (headers, bitmaps, page
//! descriptors, page data) with every region checked against the file's size, so a file cut
//! short is reported with what is missing and where. [`reassemble`] replays a flattened stream
//! into a seekable file. [`vmlinux`] tells whether a vmlinux is the dead kernel's (release and
//! build id).

pub mod info;
pub mod kdump_reader;
pub mod reassemble;
pub mod vmlinux;

use std::io;
use std::path::PathBuf;

use crate::format::kdump::KdumpError;

/// The kind of a dump file, from its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    /// kdump-compressed (`KDUMP   `).
    Kdump,
    /// An ELF core (a vmcore, or an `-E` dump).
    Elf,
    /// makedumpfile's flattened stream.
    Flattened,
    /// A flattened stream inside an LZ4 frame.
    Lz4Flattened,
}

/// Magic number of an LZ4 frame.
pub const LZ4_FRAME_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

/// Identifies a dump by its first bytes (at least 16).
pub fn detect(start: &[u8]) -> Option<DumpKind> {
    if start.starts_with(crate::format::kdump::SIGNATURE) {
        Some(DumpKind::Kdump)
    } else if start.starts_with(b"\x7fELF") {
        Some(DumpKind::Elf)
    } else if start.starts_with(crate::format::flat::SIGNATURE) {
        Some(DumpKind::Flattened)
    } else if start.starts_with(&LZ4_FRAME_MAGIC) {
        Some(DumpKind::Lz4Flattened)
    } else {
        None
    }
}

/// Why a dump file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DumpFileError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The kdump header is invalid.
    #[error("{path}: {source}")]
    Kdump {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KdumpError,
    },
    /// The file is shorter than its headers say.
    #[error("{path}: truncated to {len:#x} bytes, but {what} extends to offset {end:#x}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The region cut short.
        what: String,
        /// Where the region ends.
        end: u64,
        /// The file's size.
        len: u64,
    },
    /// The contents contradict themselves.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        what: String,
    },
}
