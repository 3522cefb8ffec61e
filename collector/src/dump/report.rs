//! The summary of a dump: makedumpfile's "Excluded pages" report and a JSON form.

use serde::Serialize;

use crate::filter::Counts;

/// What a finished (or interrupted) dump did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Output file (or "-" for standard output).
    pub output: String,
    /// "kdump-compressed" or "elf".
    pub format: &'static str,
    /// Whether the output is a flattened stream.
    pub flattened: bool,
    /// Page compression ("zstd", "zlib", "lzo", "snappy" or "none").
    pub compression: &'static str,
    /// Dump level asked for.
    pub requested_level: u8,
    /// Dump level applied (lower when metadata did not allow filtering).
    pub dump_level: u8,
    /// Worker threads.
    pub threads: usize,
    /// Page frames covered (`max_mapnr`).
    pub total_pages: u64,
    /// makedumpfile's "Memory Hole".
    pub memory_hole: u64,
    /// Pages excluded, per category.
    pub excluded: Counts,
    /// Pages written to the dump (with data or as the shared zero page).
    pub dumped_pages: u64,
    /// Pages written with their own data.
    pub stored_pages: u64,
    /// Bytes of memory read from the vmcore.
    pub bytes_read: u64,
    /// Bytes written (the size of the dump file, or of the stream).
    pub bytes_written: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds until every page was classified (opening the vmcore and the first pass).
    pub filter_seconds: f64,
    /// Where the page pass's time went (its wall clock, the serial chunk source and writer,
    /// each worker), when it ran to its end.
    pub page_pass: Option<crate::pipeline::Times>,
    /// Peak resident memory of the process, in KiB (from /proc/self/status).
    pub peak_rss_kib: Option<u64>,
    /// Whether the dump is complete.
    pub complete: bool,
    /// Problems met, one line each.
    pub warnings: Vec<String>,
}

impl Summary {
    /// makedumpfile's "Original pages": page frames in PT_LOAD segments (the kernel-text alias
    /// counted again).
    pub fn original_pages(&self) -> u64 {
        self.total_pages.wrapping_sub(self.memory_hole)
    }

    /// The report in the shape of makedumpfile's `print_report` (message level 16), with
    /// `Extension filter pages` always 0 and no cache statistics.
    pub fn makedumpfile_report(&self) -> String {
        let original = self.original_pages();
        let excluded = self.excluded.excluded();
        let e = &self.excluded;
        let mut out = String::new();
        let mut line =
            |label: &str, value: u64| out.push_str(&format!("{label}: 0x{value:016x}\n"));
        line("\nOriginal pages  ", original);
        line("  Excluded pages   ", excluded);
        line("    Pages filled with zero  ", e.zero);
        line("    Non-private cache pages ", e.cache);
        line("    Private cache pages     ", e.cache_private);
        line("    User process data pages ", e.user);
        line("    Free pages              ", e.free);
        line("    Hwpoison pages          ", e.hwpoison);
        line("    Offline pages           ", e.offline);
        line("    Extension filter pages  ", 0);
        line("  Remaining pages  ", original.wrapping_sub(excluded));
        let remaining = original.wrapping_sub(excluded);
        if let Some(shrinking) = remaining.wrapping_mul(100).checked_div(original) {
            out.push_str(&format!(
                "  (The number of pages is reduced to {shrinking}%.)\n"
            ));
        }
        out.push_str(&format!("Memory Hole     : 0x{:016x}\n", self.memory_hole));
        out.push_str("--------------------------------------------------\n");
        out.push_str(&format!("Total pages     : 0x{:016x}\n", self.total_pages));
        out.push_str(&format!("Write bytes     : {}\n", self.bytes_written));
        out
    }

    /// The summary as JSON on one line.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("the summary serialises")
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the summary serialises")
    }
}

/// Peak resident set size of this process in KiB (`VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
