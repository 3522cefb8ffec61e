//! `rkdump save`: write a dump file from a vmcore, taking makedumpfile's spellings.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::progress::ProgressPrinter;
use super::{ExitStatus, report_error};
use crate::dump::{self, DEFAULT_CYCLE_PFNS, Format, SaveOptions, Summary};
use crate::filter::DumpLevel;
use crate::output::Destination;
use crate::pipeline::Codec;
use crate::vmcore::window::Access;

/// Default zstd level: makedumpfile's `-z` level.
const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// makedumpfile's message-level bits.
const MSG_PROGRESS: u8 = 1;
const MSG_COMMON: u8 = 2;
const MSG_REPORT: u8 = 16;

const SAVE_HELP: &str = "\
Accepts the options kdump.conf core_collector lines give makedumpfile, e.g.
  rkdump save -l --message-level 7 -d 31 /proc/vmcore /var/crash/vmcore
Pages are compressed with zstd (kdump flag 0x20) whatever -c/-l/-p/-z say: crash, drgn and
makedumpfile read it, and it is smaller and faster than zlib. The file is written as
DUMPFILE-incomplete and renamed to DUMPFILE once complete and synced.

Exit status: 0 done, 1 failed (nothing written), 2 invalid options, 3 incomplete dump kept.";

/// Page compression choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Compression {
    /// One zstd frame per page (kdump flag 0x20).
    Zstd,
    /// Pages stored as they are.
    None,
}

/// Write a filtered, compressed dump of a vmcore.
#[derive(Debug, Args)]
#[command(after_help = SAVE_HELP)]
pub struct SaveArgs {
    /// Dump level: pages to leave out, as a bit mask (1 zero, 2 cache, 4 private cache,
    /// 8 user data, 16 free).
    #[arg(short = 'd', long = "dump-level", value_name = "LEVEL", default_value_t = 31,
          value_parser = clap::value_parser!(u8).range(0..=31))]
    dump_level: u8,
    /// makedumpfile's zlib compression; rkdump writes zstd instead.
    #[arg(short = 'c')]
    zlib: bool,
    /// makedumpfile's LZO compression; rkdump writes zstd instead.
    #[arg(short = 'l')]
    lzo: bool,
    /// makedumpfile's snappy compression; rkdump writes zstd instead.
    #[arg(short = 'p')]
    snappy: bool,
    /// zstd compression (the default).
    #[arg(short = 'z')]
    zstd: bool,
    /// Page compression.
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    compress: Compression,
    /// zstd level (negative levels are faster and compress less).
    #[arg(long, value_name = "LEVEL", default_value_t = DEFAULT_ZSTD_LEVEL, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-7..=19))]
    zstd_level: i32,
    /// Write an ELF dump instead of kdump-compressed (no compression).
    #[arg(short = 'E')]
    elf: bool,
    /// Write makedumpfile's flattened format (to standard output if DUMPFILE is omitted).
    #[arg(short = 'F')]
    flattened: bool,
    /// Wrap the -F stream in an LZ4 frame, for transports (`lz4 -d` or `rkdump reassemble`
    /// unwraps it). Pages are compressed already; this mostly shrinks the bitmaps and zero runs.
    #[arg(long, requires = "flattened")]
    lz4: bool,
    /// Worker threads (default: the online CPUs).
    #[arg(long = "num-threads", value_name = "N")]
    num_threads: Option<usize>,
    /// makedumpfile message level: 1 progress, 2 messages, 4 errors, 16 report.
    #[arg(long = "message-level", value_name = "LEVEL", default_value_t = 7)]
    message_level: u8,
    /// Debug messages (makedumpfile -D).
    #[arg(short = 'D')]
    debug: bool,
    /// Print a JSON summary on standard output when done.
    #[arg(long)]
    json: bool,
    /// Bitmap buffer per cycle, in KiB (bounds memory on huge machines).
    #[arg(long = "cyclic-buffer", value_name = "KiB")]
    cyclic_buffer: Option<u64>,
    /// Read the vmcore with pread instead of mmap.
    #[arg(long = "non-mmap")]
    non_mmap: bool,
    /// Accepted for compatibility; rkdump always bounds its memory.
    #[arg(long = "non-cyclic", hide = true)]
    non_cyclic: bool,
    /// Overwrite an existing DUMPFILE.
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// makedumpfile's cache block order; accepted and ignored.
    #[arg(short = 'b', value_name = "ORDER", hide = true)]
    block_order: Option<u32>,
    /// The vmcore: /proc/vmcore in the capture kernel, or a saved ELF vmcore.
    vmcore: PathBuf,
    /// The dump file (omit with -F to stream to standard output).
    dumpfile: Option<PathBuf>,
}

impl SaveArgs {
    fn options(&self, notes: &mut Vec<String>) -> Result<SaveOptions, String> {
        let level = DumpLevel::new(self.dump_level).expect("clap checked the range");
        let legacy = [
            (self.zlib, "-c (zlib)"),
            (self.lzo, "-l (lzo)"),
            (self.snappy, "-p (snappy)"),
        ];
        let asked_compression = self.zlib || self.lzo || self.snappy || self.zstd;
        if self.elf && asked_compression {
            return Err("ELF dumps (-E) are not compressed; drop -c/-l/-p/-z".into());
        }
        for (given, name) in legacy {
            if given {
                notes.push(format!(
                    "{name} is not available; pages are compressed with zstd instead"
                ));
            }
        }
        if self.non_cyclic {
            notes.push("--non-cyclic is ignored: memory use is always bounded".into());
        }
        if self.block_order.is_some() {
            notes.push("-b is ignored".into());
        }
        let codec = match (self.elf, self.compress) {
            (true, _) | (false, Compression::None) => Codec::None,
            (false, Compression::Zstd) => Codec::Zstd(self.zstd_level),
        };
        let destination = match &self.dumpfile {
            Some(path) => Destination::Path(path.clone()),
            None if self.flattened => Destination::Stdout,
            None => return Err("DUMPFILE is required unless -F streams to standard output".into()),
        };
        if self.json && matches!(destination, Destination::Stdout) {
            return Err(
                "--json needs standard output, which the -F stream uses; give a DUMPFILE".into(),
            );
        }
        let threads = match self.num_threads {
            Some(0) | None => std::thread::available_parallelism().map_or(1, usize::from),
            Some(n) => n,
        };
        let cycle_pfns = match self.cyclic_buffer {
            Some(0) => return Err("--cyclic-buffer must be at least 1 KiB".into()),
            Some(kib) => kib.saturating_mul(1024 * 8),
            None => DEFAULT_CYCLE_PFNS,
        };
        Ok(SaveOptions {
            vmcore: self.vmcore.clone(),
            destination,
            format: if self.elf { Format::Elf } else { Format::Kdump },
            flattened: self.flattened,
            lz4: self.lz4,
            codec,
            level,
            threads,
            access: if self.non_mmap {
                Access::Pread
            } else {
                Access::Mmap
            },
            cycle_pfns,
            overwrite: self.force,
        })
    }
}

/// A kdump.conf `core_collector` line's options, parsed with `rkdump save`'s parser.
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true)]
struct CollectorLine {
    #[command(flatten)]
    args: SaveArgs,
}

/// Turns the options of a `core_collector makedumpfile ...` line into dump options for
/// `vmcore` and `dumpfile` (`None`: the stream goes to a device given by the caller).
/// Returns the options, the message level and notes about options replaced or ignored.
pub fn collector_options(
    options: &[String],
    vmcore: &str,
    dumpfile: &str,
) -> Result<(SaveOptions, u8, Vec<String>), String> {
    let words = options.iter().map(String::as_str).chain([vmcore, dumpfile]);
    let line = <CollectorLine as clap::Parser>::try_parse_from(words).map_err(|e| {
        let text = e.to_string();
        text.lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned()
    })?;
    let mut notes = Vec::new();
    let options = line.args.options(&mut notes)?;
    Ok((options, line.args.message_level, notes))
}

/// Runs `rkdump save`.
pub fn run(args: &SaveArgs) -> ExitStatus {
    let message_level = args.message_level | if args.debug { 8 } else { 0 };
    let mut notes = Vec::new();
    let options = match args.options(&mut notes) {
        Ok(options) => options,
        Err(message) => {
            report_error(&message);
            return ExitStatus::Usage;
        }
    };
    if message_level & MSG_COMMON != 0 {
        for note in &notes {
            eprintln!("rkdump: note: {note}");
        }
    }
    let mut printer = ProgressPrinter::new();
    let show_progress = message_level & MSG_PROGRESS != 0;
    let result = dump::save(&options, &mut |p| {
        if show_progress {
            printer.update(p);
        }
    });
    let streaming = matches!(options.destination, Destination::Stdout);
    let finish = |summary: &Summary| {
        if message_level & MSG_COMMON != 0 {
            for warning in &summary.warnings {
                eprintln!("rkdump: warning: {warning}");
            }
        }
        if message_level & MSG_REPORT != 0 {
            let report = summary.makedumpfile_report();
            if streaming || args.json {
                eprint!("{report}");
            } else {
                print!("{report}");
            }
        }
        if args.json {
            println!("{}", summary.to_json());
        }
    };
    match result {
        Ok(summary) => {
            finish(&summary);
            if message_level & MSG_COMMON != 0 {
                eprintln!(
                    "rkdump: saved {} ({} bytes, {} of {} pages) in {:.1} s",
                    summary.output,
                    summary.bytes_written,
                    summary.dumped_pages,
                    summary.original_pages(),
                    summary.seconds
                );
            }
            ExitStatus::Success
        }
        Err(error) => {
            if let Some(summary) = error.summary() {
                finish(summary);
            }
            report_error(&error.to_string());
            if error.is_usage() {
                ExitStatus::Usage
            } else if error.partial().is_some() {
                ExitStatus::Incomplete
            } else {
                ExitStatus::Failure
            }
        }
    }
}
