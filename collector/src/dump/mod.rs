//! The dump engine: from a vmcore to a dump file.
//!
//! # Data flow
//!
//! ```text
//! Vmcore ──► Filter (per cycle: 1st/2nd bitmaps, counts) ──► chunks ──► pipeline workers
//!                                                                          │ (read, zero test,
//!                                                                          ▼  compress)
//!          output::destination ──► Sink (file, stream, remote) ◄── format writer (pfn order)
//! ```
//!
//! [`save`] hands the work to one of two drivers, side by side and sharing one failure and
//! summary path ([`run`]):
//!
//! * [`write_kdump`] runs two passes over the page frames, cycle by cycle, as makedumpfile's
//!   cyclic mode does: the first classifies every frame, writes the bitmaps and counts the
//!   frames to dump (which fixes where page data starts); the second reads, compresses and
//!   writes them. With a single cycle the first pass's bitmap is reused.
//! * [`write_elf`] classifies every frame first (the segment layout needs the final exclusion
//!   of every page before the header), finds zero pages in a read pass, then writes each
//!   output segment's pages.
//!
//! Either way a regular output file is written under its incomplete name with the header's
//! incomplete flag set, and renamed to its real name only after the last write and an fsync
//! ([`crate::output::durable`]).

pub mod chunks;
pub mod report;
mod run;
mod write_elf;
mod write_kdump;

use std::path::PathBuf;
use std::time::Duration;

pub use report::Summary;

use crate::filter::DumpLevel;
use crate::output::{Destination, DestinationError, OpenRequest, OutputError};
use crate::pipeline::Codec;
use crate::vmcore::VmcoreError;
use crate::vmcore::window::Access;

/// Default cycle: 4 Mi page frames (16 GiB of memory, 512 KiB per bitmap).
pub const DEFAULT_CYCLE_PFNS: u64 = 4 << 20;

/// The dump file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// kdump-compressed (`KDUMP   `).
    Kdump,
    /// ELF core with excluded pages left out (`-E`).
    Elf,
}

/// Everything [`save`] needs to know.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// The vmcore to read.
    pub vmcore: PathBuf,
    /// Where to write.
    pub destination: Destination,
    /// Output format.
    pub format: Format,
    /// Write a flattened stream instead of a seekable file.
    pub flattened: bool,
    /// Wrap the flattened stream in an LZ4 frame (`lz4 -d` unwraps it).
    pub lz4: bool,
    /// Page compression (kdump format only).
    pub codec: Codec,
    /// Dump level.
    pub level: DumpLevel,
    /// Worker threads.
    pub threads: usize,
    /// How page data is read.
    pub access: Access,
    /// Page frames per cycle.
    pub cycle_pfns: u64,
    /// Replace an existing dump file.
    pub overwrite: bool,
}

impl SaveOptions {
    /// What opening the destination needs to know.
    pub fn open_request(&self) -> OpenRequest {
        OpenRequest {
            flattened: self.flattened,
            lz4: self.lz4,
            overwrite: self.overwrite,
        }
    }
}

/// Progress of the page-writing pass.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Pages written so far.
    pub done: u64,
    /// Pages to write in all.
    pub total: u64,
    /// Bytes of memory read so far.
    pub bytes_read: u64,
    /// Time since the start.
    pub elapsed: Duration,
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The vmcore cannot be read.
    #[error(transparent)]
    Vmcore(#[from] VmcoreError),
    /// The destination cannot be opened; nothing was written.
    #[error(transparent)]
    Destination(#[from] DestinationError),
    /// Writing failed; whatever was written is kept, marked incomplete.
    #[error("{source}{}", partial_note(.partial))]
    Output {
        /// The failure.
        source: OutputError,
        /// The incomplete file left behind.
        partial: Option<PathBuf>,
        /// What was done up to the failure, once the output was opened.
        summary: Option<Box<Summary>>,
    },
    /// Reading memory failed midway; whatever was written is kept, marked incomplete.
    #[error("{message}{}", partial_note(.partial))]
    Input {
        /// The failure.
        message: String,
        /// The incomplete file left behind.
        partial: Option<PathBuf>,
        /// What was done up to the failure, once the output was opened.
        summary: Option<Box<Summary>>,
    },
}

fn partial_note(partial: &Option<PathBuf>) -> String {
    partial.as_ref().map_or_else(String::new, |p| {
        format!("; incomplete dump kept as {}", p.display())
    })
}

impl SaveError {
    /// The summary of the work done before the failure, if the output had been opened.
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            Self::Output { summary, .. } | Self::Input { summary, .. } => summary.as_deref(),
            _ => None,
        }
    }

    /// The incomplete output left behind, if any.
    pub fn partial(&self) -> Option<&std::path::Path> {
        match self {
            Self::Output { partial, .. } | Self::Input { partial, .. } => partial.as_deref(),
            _ => None,
        }
    }

    /// Whether the failure is the user's: contradictory options or an existing output.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Destination(DestinationError::Usage(_) | DestinationError::Exists(_))
        )
    }
}

/// Writes a dump of `options.vmcore`; `progress` is called as pages are written (at most every
/// 200 ms, and once when the last page is written).
pub fn save(
    options: &SaveOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, SaveError> {
    match options.format {
        Format::Kdump => write_kdump::save(options, progress),
        Format::Elf => write_elf::save(options, progress),
    }
}

#[cfg(test)]
mod tests;
