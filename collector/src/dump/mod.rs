//! The dump engine: from a vmcore to a dump file.
//!
//! # Data flow
//!
//! ```text
//! Vmcore ──► Filter (per cycle: 1st/2nd bitmaps, counts) ──► chunks ──► pipeline workers
//!                                                                          │ (read, zero test,
//!                                                                          ▼  compress)
//!                                       Sink (file or flattened stream) ◄── writer (pfn order)
//! ```
//!
//! [`save`] runs two passes over the page frames, cycle by cycle, as makedumpfile's cyclic
//! mode does: the first classifies every frame, writes the bitmaps and counts the frames to
//! dump (which fixes where page data starts); the second reads, compresses and writes them.
//! With a single cycle the first pass's bitmap is reused. A regular output file is written
//! under the name `<file>-incomplete` with the header's incomplete flag set, and is renamed to
//! its real name only after the last write and an fsync.

pub mod chunks;
pub mod report;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::Summary;

use crate::filter::{self, Bitmap, Counts, DumpLevel, Filter, FilterError};
use crate::format::kdump::{COMPRESSED_ZSTD, UTS_FIELD_LEN};
use crate::output::kdump::{KdumpSpec, KdumpWriter};
use crate::output::sink::Stream;
use crate::output::{FileSink, FlatSink, OutputError, Sink};
use crate::pipeline::{self, Chunk, ChunkResult, Codec, PipelineError, Settings};
use crate::vmcore::window::{Access, PageMap};
use crate::vmcore::{KernelMemory, Vmcore, VmcoreError};

/// Default cycle: 4 Mi page frames (16 GiB of memory, 512 KiB per bitmap).
pub const DEFAULT_CYCLE_PFNS: u64 = 4 << 20;

/// Where the dump goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A file (written as `<file>-incomplete`, then renamed) or a device (written in place).
    Path(PathBuf),
    /// Standard output (flattened format only).
    Stdout,
    /// A sink of the caller's (a file on another machine).
    Custom(Arc<dyn OpenSink>),
}

/// Opens a destination that is not a local path: the ssh target's remote file.
pub trait OpenSink: std::fmt::Debug + Send + Sync {
    /// Opens the sink for a dump with `options`. The sink's `finish` makes the output durable
    /// under its final name.
    fn open(&self, options: &SaveOptions) -> Result<Opened, SaveError>;
}

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
    /// The options contradict each other.
    #[error("{0}")]
    Usage(String),
    /// The output cannot be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The output file exists.
    #[error("{0} already exists (use -f to overwrite it)")]
    Exists(PathBuf),
    /// Writing failed; whatever was written is kept, marked incomplete.
    #[error("{source}{}", partial_note(.partial))]
    Output {
        /// The failure.
        source: OutputError,
        /// The incomplete file left behind.
        partial: Option<PathBuf>,
        /// What was done up to the failure.
        summary: Box<Summary>,
    },
    /// Reading memory failed midway; whatever was written is kept, marked incomplete.
    #[error("{message}{}", partial_note(.partial))]
    Input {
        /// The failure.
        message: String,
        /// The incomplete file left behind.
        partial: Option<PathBuf>,
        /// What was done up to the failure.
        summary: Box<Summary>,
    },
}

fn partial_note(partial: &Option<PathBuf>) -> String {
    partial.as_ref().map_or_else(String::new, |p| {
        format!("; incomplete dump kept as {}", p.display())
    })
}

impl SaveError {
    /// The summary of the work done before the failure, if any was done.
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            Self::Output { summary, .. } | Self::Input { summary, .. } => Some(summary),
            _ => None,
        }
    }
}

/// An opened destination: the sink and how to finalise it.
pub struct Opened {
    /// Where the bytes go.
    pub sink: Box<dyn Sink>,
    /// `(incomplete name, final name)` of a local file to rename at the end.
    pub rename: Option<(PathBuf, PathBuf)>,
    /// The name of the output while it is incomplete, reported if the dump fails.
    pub partial: Option<PathBuf>,
    /// The output's name for messages and the summary.
    pub label: String,
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

/// Starts a flattened stream on `out`, inside an LZ4 frame when asked.
pub(crate) fn flat_sink<W: Stream + 'static>(
    out: W,
    lz4: bool,
    label: &str,
) -> Result<Box<dyn Sink>, OutputError> {
    Ok(if lz4 {
        Box::new(FlatSink::new(
            lz4_flex::frame::FrameEncoder::new(out),
            label,
        )?)
    } else {
        Box::new(FlatSink::new(out, label)?)
    })
}

pub(crate) fn open_destination(options: &SaveOptions) -> Result<Opened, SaveError> {
    if let Destination::Custom(opener) = &options.destination {
        return opener.open(options);
    }
    if options.lz4 && !options.flattened {
        return Err(SaveError::Usage(
            "--lz4 frames a flattened stream: it needs -F".into(),
        ));
    }
    let started = |source| SaveError::Output {
        source,
        partial: None,
        summary: Box::default(),
    };
    let path = match &options.destination {
        Destination::Stdout => {
            if !options.flattened {
                return Err(SaveError::Usage(
                    "writing to standard output needs -F (flattened format)".into(),
                ));
            }
            let out = BufWriter::with_capacity(1 << 20, io::stdout());
            let sink = flat_sink(out, options.lz4, "standard output").map_err(started)?;
            return Ok(Opened {
                sink,
                rename: None,
                partial: None,
                label: "-".into(),
            });
        }
        Destination::Path(path) => path,
        Destination::Custom(_) => unreachable!("handled above"),
    };
    let create = |p: &Path, regular: bool| -> Result<File, SaveError> {
        let mut open = OpenOptions::new();
        open.write(true);
        if regular {
            open.create(true).truncate(true).mode(0o600);
        }
        open.open(p).map_err(|source| SaveError::Create {
            path: p.to_owned(),
            source,
        })
    };
    let device = std::fs::metadata(path)
        .is_ok_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device());
    let (file, rename, written_as) = if device {
        (create(path, false)?, None, path.clone())
    } else {
        if path.exists() && !options.overwrite {
            return Err(SaveError::Exists(path.clone()));
        }
        let temporary = incomplete_name(path);
        (
            create(&temporary, true)?,
            Some((temporary.clone(), path.clone())),
            temporary,
        )
    };
    let label = written_as.display().to_string();
    let sink = if options.flattened {
        flat_sink(BufWriter::with_capacity(1 << 20, file), options.lz4, &label).map_err(started)?
    } else {
        Box::new(FileSink::new(file, &label))
    };
    Ok(Opened {
        partial: rename.as_ref().map(|(temporary, _)| temporary.clone()),
        sink,
        rename,
        label,
    })
}

/// The dead kernel's `init_uts_ns.name` (390 bytes); synthesised from VMCOREINFO if it cannot
/// be read.
fn read_utsname(vmcore: &Vmcore, warnings: &mut Vec<String>) -> Vec<u8> {
    let info = vmcore.info();
    let from_memory = || -> Result<Vec<u8>, String> {
        let base = info
            .symbol("init_uts_ns")
            .map_err(|e| e.to_string())?
            .ok_or("VMCOREINFO has no SYMBOL(init_uts_ns)")?;
        let offset = info
            .offset("uts_namespace.name")
            .map_err(|e| e.to_string())?
            .unwrap_or(4);
        let mut memory = KernelMemory::new(vmcore).map_err(|e| e.to_string())?;
        memory
            .read_vec(base + offset, 6 * UTS_FIELD_LEN)
            .map_err(|e| e.to_string())
    };
    from_memory().unwrap_or_else(|why| {
        warnings.push(format!(
            "cannot read the kernel's utsname ({why}); using VMCOREINFO"
        ));
        let mut raw = vec![0u8; 6 * UTS_FIELD_LEN];
        for (field, value) in [
            (0, "Linux"),
            (2, info.os_release().unwrap_or("")),
            (4, "x86_64"),
        ] {
            let bytes = value.as_bytes();
            let len = bytes.len().min(UTS_FIELD_LEN - 1);
            raw[field * UTS_FIELD_LEN..][..len].copy_from_slice(&bytes[..len]);
        }
        raw
    })
}

/// Pass 1: classify every cycle, write its bitmaps, count the frames to dump. Restarts at a
/// lower dump level if the dead kernel's `struct page` array cannot be read.
fn count_pass(
    filter: &mut Filter<'_>,
    writer: &mut KdumpWriter<Box<dyn Sink>>,
    cycle_pfns: u64,
) -> Result<(Counts, Vec<u64>, Option<Bitmap>), OutputError> {
    'restart: loop {
        let mut counts = Counts::default();
        let mut per_cycle = Vec::new();
        let mut kept = None;
        let cycles: Vec<_> = filter::cycles(filter.max_mapnr(), cycle_pfns).collect();
        let single = cycles.len() == 1;
        for cycle in cycles {
            match filter.cycle(cycle.clone(), &mut counts) {
                Ok((first, second)) => {
                    writer.write_bitmaps(&cycle, &first, &second)?;
                    per_cycle.push(second.count());
                    if single {
                        kept = Some(second);
                    }
                }
                Err(FilterError::StructPages { pfn, vaddr, source }) => {
                    filter.degrade(&format!(
                        "struct page of pfn {pfn:#x} at {vaddr:#x} is unreadable ({source})"
                    ));
                    filter.restart();
                    continue 'restart;
                }
            }
        }
        return Ok((counts, per_cycle, kept));
    }
}

/// Writes a dump of `options.vmcore`; `progress` is called as pages are written.
pub fn save(
    options: &SaveOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, SaveError> {
    let started = Instant::now();
    if options.format == Format::Elf {
        return crate::output::elf::save(options, progress);
    }
    let vmcore = Vmcore::open(&options.vmcore)?;
    let mut filter = Filter::new(&vmcore, options.level);
    let mut warnings: Vec<String> = Vec::new();
    let utsname = read_utsname(&vmcore, &mut warnings);
    let phys_base = KernelMemory::new(&vmcore).map_or(0, |m| m.tables().phys_base);
    let opened = open_destination(options)?;
    let partial = opened.partial.clone();

    let spec = KdumpSpec {
        utsname,
        crash_time: vmcore.info().crash_time().ok().flatten().unwrap_or(0),
        compression: match options.codec {
            Codec::Zstd(_) => COMPRESSED_ZSTD,
            Codec::None => 0,
        },
        max_mapnr: filter.max_mapnr(),
        cpus: vmcore.cpus() as u32,
        phys_base,
        dump_level: u32::from(filter.level().bits()),
        notes: vmcore.notes().to_vec(),
        vmcoreinfo: vmcore.vmcoreinfo_range(),
    };
    let mut summary = Summary {
        output: opened.label.clone(),
        format: "kdump-compressed",
        flattened: options.flattened,
        compression: if spec.compression == 0 {
            "none"
        } else {
            "zstd"
        },
        requested_level: options.level.bits(),
        threads: options.threads.max(1),
        total_pages: filter.max_mapnr(),
        memory_hole: filter.memory_hole(),
        ..Summary::default()
    };
    let mut writer = KdumpWriter::new(opened.sink, spec);
    let output_failed = |source: OutputError, summary: &Summary| SaveError::Output {
        source,
        partial: partial.clone(),
        summary: Box::new(summary.clone()),
    };

    let level_before = filter.level();
    let pass1 = writer
        .write_headers()
        .and_then(|()| count_pass(&mut filter, &mut writer, options.cycle_pfns));
    let (counts, per_cycle, kept) = pass1.map_err(|e| output_failed(e, &summary))?;
    if filter.level() != level_before {
        // The level dropped during the first pass; the sub header must say so.
        writer.set_dump_level(u32::from(filter.level().bits()));
        writer
            .write_headers()
            .map_err(|e| output_failed(e, &summary))?;
    }
    let total: u64 = per_cycle.iter().sum();
    summary.filter_seconds = started.elapsed().as_secs_f64();
    summary.dump_level = filter.level().bits();
    summary.excluded = counts;

    let exclude_zero = filter.level().contains(DumpLevel::ZERO);
    writer
        .start_pages(total, exclude_zero)
        .map_err(|e| output_failed(e, &summary))?;
    let settings = Settings {
        threads: options.threads.max(1),
        codec: options.codec,
        detect_zero: exclude_zero,
        access: options.access,
    };
    let map = PageMap::new(vmcore.segments());
    let cycles: Vec<_> = filter::cycles(filter.max_mapnr(), options.cycle_pfns).collect();
    let mut second_pass_error = None;
    let chunk_source = SecondPass {
        filter: &mut filter,
        map: &map,
        cycles: cycles
            .into_iter()
            .zip(per_cycle)
            .collect::<Vec<_>>()
            .into_iter(),
        kept,
        current: Vec::new().into_iter(),
        error: &mut second_pass_error,
    };
    let mut done = 0u64;
    let mut bytes_read = 0u64;
    let mut last_report = Instant::now();
    let result = pipeline::run(
        &vmcore,
        settings,
        chunk_source,
        |chunk: &ChunkResult| -> Result<(), OutputError> {
            writer.add(chunk)?;
            done += chunk.pages.len() as u64;
            bytes_read += chunk.bytes_read;
            if last_report.elapsed() >= Duration::from_millis(200) || done == total {
                last_report = Instant::now();
                progress(Progress {
                    done,
                    total,
                    bytes_read,
                    elapsed: started.elapsed(),
                });
            }
            Ok(())
        },
    );

    summary.warnings = warnings;
    summary.warnings.extend(filter.warnings().iter().cloned());
    summary.excluded.zero = writer.zero_pages();
    summary.dumped_pages = done;
    summary.stored_pages = writer.stored_pages();
    summary.bytes_read = bytes_read;
    summary.seconds = started.elapsed().as_secs_f64();
    let failure = match (result, second_pass_error) {
        (_, Some(message)) => Some(SaveError::Input {
            message,
            partial: partial.clone(),
            summary: Box::default(),
        }),
        (Ok(()), None) => None,
        (Err(PipelineError::Sink(e)), None) => Some(output_failed(e, &summary)),
        (Err(e), None) => Some(SaveError::Input {
            message: e.to_string(),
            partial: partial.clone(),
            summary: Box::default(),
        }),
    };
    if let Some(mut failure) = failure {
        let sink = writer.abandon();
        summary.bytes_written = sink.bytes_written();
        summary.peak_rss_kib = report::peak_rss_kib();
        if let SaveError::Input { summary: s, .. } | SaveError::Output { summary: s, .. } =
            &mut failure
        {
            **s = summary;
        }
        return Err(failure);
    }
    if done != total {
        let message = format!("{done} pages were written but the bitmaps promise {total}");
        return Err(SaveError::Input {
            message,
            partial,
            summary: Box::new(summary),
        });
    }
    let file_size = writer.file_size();
    let sink = writer.finish().map_err(|e| output_failed(e, &summary))?;
    summary.bytes_written = if options.flattened {
        sink.bytes_written()
    } else {
        file_size
    };
    if let Some((temporary, target)) = &opened.rename {
        finalize(temporary, target).map_err(|source| output_failed(source, &summary))?;
        summary.output = target.display().to_string();
    }
    summary.complete = true;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.peak_rss_kib = report::peak_rss_kib();
    Ok(summary)
}

/// Renames the finished file to its real name and makes the rename durable.
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

/// The chunks of the second pass, cycle after cycle (re-deriving each cycle's 2nd bitmap when
/// there is more than one).
struct SecondPass<'f, 'v> {
    filter: &'f mut Filter<'v>,
    map: &'f PageMap,
    cycles: std::vec::IntoIter<(std::ops::Range<u64>, u64)>,
    kept: Option<Bitmap>,
    current: std::vec::IntoIter<Chunk>,
    error: &'f mut Option<String>,
}

impl Iterator for SecondPass<'_, '_> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        loop {
            if let Some(chunk) = self.current.next() {
                return Some(chunk);
            }
            let (cycle, expected) = self.cycles.next()?;
            let second = match self.kept.take() {
                Some(second) => second,
                None => match self.filter.cycle(cycle.clone(), &mut Counts::default()) {
                    Ok((_, second)) => second,
                    Err(e) => {
                        *self.error = Some(format!("second pass: {e}"));
                        return None;
                    }
                },
            };
            if second.count() != expected {
                *self.error = Some(format!(
                    "the vmcore changed between passes: cycle {:#x}-{:#x} has {} pages to dump, not {expected}",
                    cycle.start,
                    cycle.end,
                    second.count()
                ));
                return None;
            }
            self.current = chunks::chunks(self.map, &second).into_iter();
        }
    }
}

/// Writes `text` to `path` via `<path>-incomplete`, fsync and rename (used for dmesg files).
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
}
