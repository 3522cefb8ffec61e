//! What `rkdump info` says about a dump file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::kdump_reader::KdumpFile;
use super::{DumpFileError, DumpKind, detect};
use crate::format::kdump::compression_name;
use crate::format::time::UtcTime;
use crate::vmcore::{PAGE_SIZE, Vmcore};

/// A summary of one dump file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Info {
    /// "kdump-compressed", "elf", "flattened" or "lz4-flattened".
    pub format: &'static str,
    /// Page compression of a kdump-compressed file.
    pub compression: Option<&'static str>,
    /// Whether the dump is complete (no incomplete flag, no unwritten page).
    pub complete: bool,
    /// Why it is not complete.
    pub incomplete_reason: Option<String>,
    /// The dead kernel's release.
    pub kernel_release: Option<String>,
    /// The dead kernel's version string.
    pub kernel_version: Option<String>,
    /// The dead kernel's GNU build id (VMCOREINFO `BUILD-ID`), in hex.
    pub build_id: Option<String>,
    /// The dead machine's host name.
    pub hostname: Option<String>,
    /// Crash time, seconds since the epoch.
    pub crash_time: Option<u64>,
    /// Crash time as a UTC date.
    pub crash_time_utc: Option<String>,
    /// Dump level of a kdump-compressed file.
    pub dump_level: Option<u32>,
    /// CPUs with register notes.
    pub cpus: Option<u64>,
    /// Page frames covered (`max_mapnr`).
    pub total_pages: Option<u64>,
    /// Page frames present in memory (1st bitmap).
    pub present_pages: Option<u64>,
    /// Page frames in the dump (2nd bitmap, or PT_LOAD data of an ELF file).
    pub dumped_pages: Option<u64>,
    /// Pages stored as the shared zero page.
    pub zero_pages: Option<u64>,
    /// Pages whose descriptor was never written.
    pub missing_pages: Option<u64>,
    /// Pages with data of a kdump-compressed file by how each is stored: its codec's name, or
    /// "raw" for a page that did not shrink.
    pub stored_as: Option<BTreeMap<&'static str, u64>>,
    /// PT_LOAD segments of an ELF file.
    pub segments: Option<usize>,
    /// Size of the file in bytes.
    pub file_size: u64,
}

fn with_crash_time(info: &mut Info, seconds: Option<u64>) {
    info.crash_time = seconds.filter(|&s| s != 0);
    info.crash_time_utc = info
        .crash_time
        .map(|s| UtcTime::from_unix(s.cast_signed()).to_string());
}

/// Reads `path` and describes it.
pub fn describe(path: &Path) -> Result<Info, DumpFileError> {
    let io = |source| DumpFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut start = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_size = file.metadata().map_err(io)?.len();
    let read = file.read(&mut start).map_err(io)?;
    let kind = detect(&start[..read]).ok_or_else(|| DumpFileError::Invalid {
        path: path.to_owned(),
        what: "not a kdump-compressed, ELF or flattened dump (unknown signature)".into(),
    })?;
    let mut info = Info {
        file_size,
        ..Info::default()
    };
    match kind {
        DumpKind::Kdump => describe_kdump(path, &mut info)?,
        DumpKind::Elf => describe_elf(path, &mut info)?,
        DumpKind::Flattened | DumpKind::Lz4Flattened => {
            info.format = if kind == DumpKind::Flattened {
                "flattened"
            } else {
                "lz4-flattened"
            };
            info.incomplete_reason =
                Some("a flattened stream: rebuild it with `rkdump reassemble`".into());
        }
    }
    Ok(info)
}

fn describe_kdump(path: &Path, info: &mut Info) -> Result<(), DumpFileError> {
    let dump = KdumpFile::open(path)?;
    let uts = dump.utsname();
    info.format = "kdump-compressed";
    info.compression = Some(compression_name(dump.header.status));
    info.kernel_release = Some(uts.release);
    info.kernel_version = Some(uts.version);
    // A damaged VMCOREINFO leaves the build id unknown; the rest is still described.
    info.build_id = dump
        .vmcoreinfo()
        .ok()
        .flatten()
        .and_then(|v| v.get("BUILD-ID").map(str::to_owned));
    info.hostname = Some(uts.nodename);
    with_crash_time(info, Some(dump.header.timestamp_sec));
    info.dump_level = Some(dump.sub.dump_level);
    info.cpus = Some(u64::from(dump.header.nr_cpus));
    info.total_pages = Some(dump.max_mapnr());
    let first = dump.first_bitmap()?;
    info.present_pages = Some(first.iter().map(|b| u64::from(b.count_ones())).sum());
    let descriptors = dump.descriptors()?;
    info.dumped_pages = Some(descriptors.len() as u64);
    let zero_page = dump.layout.data();
    let zero = descriptors
        .iter()
        .filter(|(_, d)| d.offset == zero_page && d.flags == 0 && d.size as u64 == PAGE_SIZE)
        .count();
    let missing = descriptors.iter().filter(|(_, d)| d.offset == 0).count() as u64;
    let mut stored_as = BTreeMap::new();
    for (_, d) in descriptors
        .iter()
        .filter(|(_, d)| d.offset != 0 && d.offset != zero_page)
    {
        let name = match compression_name(d.flags) {
            "none" => "raw",
            codec => codec,
        };
        *stored_as.entry(name).or_insert(0) += 1;
    }
    info.zero_pages = Some(zero as u64);
    info.missing_pages = Some(missing);
    info.stored_as = Some(stored_as);
    let data_end = descriptors
        .iter()
        .map(|(_, d)| d.offset + u64::from(d.size))
        .max()
        .unwrap_or(0);
    info.incomplete_reason = if dump.incomplete_flag() {
        Some(format!(
            "the header's incomplete flag is set; {missing} pages were never written"
        ))
    } else if missing > 0 {
        Some(format!("{missing} pages were never written"))
    } else if data_end > dump.len() {
        Some(format!(
            "page data ends at offset {data_end:#x} but the file has {:#x} bytes",
            dump.len()
        ))
    } else {
        None
    };
    info.complete = info.incomplete_reason.is_none();
    Ok(())
}

fn describe_elf(path: &Path, info: &mut Info) -> Result<(), DumpFileError> {
    let vmcore = Vmcore::open(path).map_err(|e| DumpFileError::Invalid {
        path: path.to_owned(),
        what: e.to_string(),
    })?;
    info.format = "elf";
    info.kernel_release = vmcore.info().os_release().map(str::to_owned);
    info.build_id = vmcore.info().get("BUILD-ID").map(str::to_owned);
    with_crash_time(info, vmcore.info().crash_time().ok().flatten());
    info.cpus = Some(u64::from(vmcore.cpus()));
    info.segments = Some(vmcore.segments().len());
    info.total_pages = Some(vmcore.max_pfn());
    let pages: u64 = vmcore
        .segments()
        .iter()
        .map(|s| s.file_size.div_ceil(PAGE_SIZE))
        .sum();
    info.dumped_pages = Some(pages);
    info.incomplete_reason = vmcore
        .elf_incomplete()
        .then(|| "the ELF header's incomplete flag is set".to_owned());
    info.complete = info.incomplete_reason.is_none();
    Ok(())
}

impl Info {
    /// The human-readable form.
    pub fn to_text(&self, path: &Path) -> String {
        let mut out = format!(
            "File:         {}\nFormat:       {}\n",
            path.display(),
            self.format
        );
        let mut line = |label: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push_str(&format!("{label:<14}{value}\n"));
            }
        };
        line("Compression:", self.compression.map(str::to_owned));
        line(
            "Complete:",
            Some(match &self.incomplete_reason {
                None => "yes".to_owned(),
                Some(why) => format!("no ({why})"),
            }),
        );
        line("Kernel:", self.kernel_release.clone());
        line(
            "Version:",
            self.kernel_version.clone().filter(|v| !v.is_empty()),
        );
        line("Build id:", self.build_id.clone());
        line("Host:", self.hostname.clone().filter(|v| !v.is_empty()));
        line("Crash time:", self.crash_time_utc.clone());
        line("Dump level:", self.dump_level.map(|l| l.to_string()));
        line("CPUs:", self.cpus.map(|c| c.to_string()));
        line("Segments:", self.segments.map(|s| s.to_string()));
        line("Page frames:", self.total_pages.map(|p| p.to_string()));
        line("Present:", self.present_pages.map(|p| p.to_string()));
        line(
            "In the dump:",
            self.dumped_pages
                .map(|d| match (self.zero_pages, self.missing_pages) {
                    (Some(zero), Some(0)) => {
                        format!("{d} pages ({zero} zero, {} with data)", d - zero)
                    }
                    (Some(zero), Some(missing)) => format!(
                        "{d} pages ({zero} zero, {} with data, {missing} never written)",
                        d - zero - missing
                    ),
                    _ => format!("{d} pages"),
                }),
        );
        line(
            "Stored as:",
            self.stored_as
                .as_ref()
                .filter(|counts| !counts.is_empty())
                .map(|counts| {
                    let mut counts: Vec<_> = counts.iter().collect();
                    counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                    counts
                        .iter()
                        .map(|(name, n)| format!("{n} {name}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
        );
        line("Size:", Some(format!("{} bytes", self.file_size)));
        out
    }
}
