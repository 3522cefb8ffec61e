//! makedumpfile's options, as `rkdump save` and kdump.conf's `core_collector` give them.
//!
//! One parser serves both: the command line of `rkdump save` and the words of a
//! `core_collector makedumpfile ...` line, so that a line written for kdump-utils means the
//! same to the capture kernel as to a user trying it by hand. [`CoreCollector`] splits the
//! line and applies kdump-utils' rule for `-F` (dropped for file targets, added for raw
//! devices and ssh streams); [`collector_options`] turns the options into the engine's
//! [`SaveOptions`].

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::dump::{DEFAULT_CYCLE_PFNS, Format, SaveOptions};
use crate::filter::DumpLevel;
use crate::output::Destination;
use crate::pipeline::Codec;
use crate::vmcore::window::Access;

/// Why makedumpfile's options cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectorError {
    /// The options contradict each other, or a file is missing.
    #[error("{0}")]
    Conflict(&'static str),
    /// A word is not one of makedumpfile's options, or its value is invalid (the first line of
    /// the parser's message).
    #[error("{0}")]
    Parse(String),
}

/// Default zstd level: makedumpfile's `-z` level.
const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// makedumpfile's message-level bits.
/// Progress lines.
pub const MSG_PROGRESS: u8 = 1;
/// Common messages (notes, warnings, the result).
pub const MSG_COMMON: u8 = 2;
/// The "Excluded pages" report.
pub const MSG_REPORT: u8 = 16;

const SAVE_HELP: &str = "\
Accepts the options kdump.conf core_collector lines give makedumpfile, e.g.
  rkdump save -l --message-level 7 -d 31 /proc/vmcore /var/crash/vmcore
Pages are compressed one by one as makedumpfile compresses them: -c zlib, -l LZO, -p snappy,
-z or none of them zstd (the smallest and, with threads, fast); when two are given the last
one counts. A page that does not shrink is stored as it is. crash, drgn and makedumpfile read
every codec, but older readers (crash 7.x, old libkdumpfile) may lack zstd: for them use -l
or -c. The file is written as DUMPFILE-incomplete and renamed to DUMPFILE once complete and synced.

Exit status: 0 done, 1 failed (nothing written), 2 invalid options, 3 incomplete dump kept.";

/// Page compression choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Compression {
    /// One zstd frame per page (kdump flag 0x20), as -z.
    Zstd,
    /// zlib, as -c (flag 0x1).
    Zlib,
    /// LZO1X-1, as -l (flag 0x2).
    Lzo,
    /// snappy, as -p (flag 0x4).
    Snappy,
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
    /// zlib compression, at zlib's fastest level (kdump flag 0x1).
    #[arg(short = 'c', overrides_with_all = ["lzo", "snappy", "zstd"])]
    zlib: bool,
    /// LZO1X-1 compression (kdump flag 0x2).
    #[arg(short = 'l', overrides_with_all = ["zlib", "snappy", "zstd"])]
    lzo: bool,
    /// snappy compression (kdump flag 0x4).
    #[arg(short = 'p', overrides_with_all = ["zlib", "lzo", "zstd"])]
    snappy: bool,
    /// zstd compression (kdump flag 0x20; the default).
    #[arg(short = 'z', overrides_with_all = ["zlib", "lzo", "snappy"])]
    zstd: bool,
    /// Page compression, by name (instead of -c, -l, -p or -z).
    #[arg(long, value_enum, value_name = "CODEC")]
    compress: Option<Compression>,
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
    pub message_level: u8,
    /// Debug messages (makedumpfile -D).
    #[arg(short = 'D')]
    pub debug: bool,
    /// Print a JSON summary on standard output when done.
    #[arg(long)]
    pub json: bool,
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
    /// The dump file (omit, or `-`, with -F to stream to standard output). A block device is
    /// written in place; a character device or FIFO takes only a -F stream.
    dumpfile: Option<PathBuf>,
}

impl SaveArgs {
    /// The engine's options; `notes` gets a line for every option replaced or ignored.
    pub fn options(&self, notes: &mut Vec<String>) -> Result<SaveOptions, CollectorError> {
        let level = DumpLevel::new(self.dump_level).expect("clap checked the range");
        // clap's overrides leave at most one of them: the last given, as makedumpfile takes it.
        let short = [
            (self.zlib, Compression::Zlib),
            (self.lzo, Compression::Lzo),
            (self.snappy, Compression::Snappy),
            (self.zstd, Compression::Zstd),
        ]
        .into_iter()
        .find_map(|(given, compression)| given.then_some(compression));
        if self.elf && short.is_some() {
            return Err(CollectorError::Conflict(
                "ELF dumps (-E) are not compressed; drop -c/-l/-p/-z",
            ));
        }
        let compression = match (short, self.compress) {
            (Some(a), Some(b)) if a != b => {
                return Err(CollectorError::Conflict(
                    "--compress names another codec than -c/-l/-p/-z; give one of them",
                ));
            }
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => Compression::Zstd,
        };
        if self.non_cyclic {
            notes.push("--non-cyclic is ignored: memory use is always bounded".into());
        }
        if self.block_order.is_some() {
            notes.push("-b is ignored".into());
        }
        let codec = match (self.elf, compression) {
            (true, _) | (false, Compression::None) => Codec::None,
            (false, Compression::Zstd) => Codec::Zstd(self.zstd_level),
            (false, Compression::Zlib) => Codec::Zlib,
            (false, Compression::Lzo) => Codec::Lzo,
            (false, Compression::Snappy) => Codec::Snappy,
        };
        let destination = match &self.dumpfile {
            Some(path) if path.as_os_str() == "-" => {
                if !self.flattened {
                    return Err(CollectorError::Conflict(
                        "writing to standard output (-) needs -F",
                    ));
                }
                Destination::Stdout
            }
            Some(path) => Destination::Path(path.clone()),
            None if self.flattened => Destination::Stdout,
            None => {
                return Err(CollectorError::Conflict(
                    "DUMPFILE is required unless -F streams to standard output",
                ));
            }
        };
        if self.json && matches!(destination, Destination::Stdout) {
            return Err(CollectorError::Conflict(
                "--json needs standard output, which the -F stream uses; give a DUMPFILE",
            ));
        }
        let threads = match self.num_threads {
            Some(0) | None => std::thread::available_parallelism().map_or(1, usize::from),
            Some(n) => n,
        };
        let cycle_pfns = match self.cyclic_buffer {
            Some(0) => {
                return Err(CollectorError::Conflict(
                    "--cyclic-buffer must be at least 1 KiB",
                ));
            }
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
) -> Result<(SaveOptions, u8, Vec<String>), CollectorError> {
    let words = options.iter().map(String::as_str).chain([vmcore, dumpfile]);
    let line = <CollectorLine as clap::Parser>::try_parse_from(words).map_err(|e| {
        let text = e.to_string();
        CollectorError::Parse(
            text.lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned(),
        )
    })?;
    let mut notes = Vec::new();
    let options = line.args.options(&mut notes)?;
    Ok((options, line.args.message_level, notes))
}

/// A kdump.conf `core_collector` line: the program and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreCollector {
    /// The program as written (`makedumpfile`, `/usr/sbin/makedumpfile`, `cp`, ...).
    pub program: String,
    /// The words after it.
    pub options: Vec<String>,
}

impl CoreCollector {
    /// Splits `line` into program and options; `None` when it is empty.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace().map(str::to_owned);
        let program = words.next()?;
        Some(Self {
            program,
            options: words.collect(),
        })
    }

    /// The program's file name: `makedumpfile` for `/usr/sbin/makedumpfile`.
    pub fn name(&self) -> &str {
        self.program.rsplit('/').next().unwrap_or(&self.program)
    }

    /// Whether the line asks makedumpfile for a flattened stream (`-F`).
    pub fn asks_flattened(&self) -> bool {
        self.options.iter().any(|o| o == "-F")
    }

    /// The options with `-F` as the target needs it, as kdump-utils rewrites them: dropped for
    /// file targets, added for raw devices and streams.
    pub fn options_for(&self, flattened: bool) -> Vec<String> {
        let mut options: Vec<String> = self
            .options
            .iter()
            .filter(|o| o.as_str() != "-F")
            .cloned()
            .collect();
        if flattened {
            options.push("-F".into());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn kdump_utils_default_line_means_lzo_at_level_31() {
        let collector = CoreCollector::parse(crate::config::DEFAULT_CORE_COLLECTOR).unwrap();
        assert_eq!(collector.name(), "makedumpfile");
        let (options, message_level, notes) =
            collector_options(&collector.options_for(false), "/proc/vmcore", "vmcore").unwrap();
        assert_eq!(options.level.bits(), 31);
        assert_eq!(message_level, 7);
        assert!(!options.flattened);
        assert_eq!(options.codec, Codec::Lzo);
        assert!(notes.is_empty(), "{notes:?}");
    }

    fn codec_of(line: &str) -> Result<Codec, CollectorError> {
        collector_options(&words(line), "/proc/vmcore", "vmcore").map(|(o, _, _)| o.codec)
    }

    #[test]
    fn each_makedumpfile_option_names_its_codec_and_the_last_one_counts() {
        assert_eq!(codec_of("-d 31"), Ok(Codec::Zstd(1)));
        assert_eq!(codec_of("-z -d 31"), Ok(Codec::Zstd(1)));
        assert_eq!(codec_of("-c -d 31"), Ok(Codec::Zlib));
        assert_eq!(codec_of("-p"), Ok(Codec::Snappy));
        assert_eq!(codec_of("-l -c"), Ok(Codec::Zlib));
        assert_eq!(codec_of("-c -l"), Ok(Codec::Lzo));
        assert_eq!(codec_of("-z --zstd-level 3 -p -z"), Ok(Codec::Zstd(3)));
        assert_eq!(codec_of("--compress lzo"), Ok(Codec::Lzo));
        assert_eq!(codec_of("--compress none"), Ok(Codec::None));
        assert_eq!(codec_of("-c --compress zlib"), Ok(Codec::Zlib));
        assert!(matches!(
            codec_of("-c --compress none"),
            Err(CollectorError::Conflict(_))
        ));
        assert!(matches!(
            codec_of("-E -l"),
            Err(CollectorError::Conflict(_))
        ));
        assert_eq!(codec_of("-E"), Ok(Codec::None));
    }

    #[test]
    fn minus_f_is_dropped_for_files_and_added_for_streams() {
        let collector = CoreCollector::parse("/usr/sbin/makedumpfile -F -c -d 17").unwrap();
        assert_eq!(collector.name(), "makedumpfile");
        assert!(collector.asks_flattened());
        assert_eq!(collector.options_for(false), words("-c -d 17"));
        assert_eq!(collector.options_for(true), words("-c -d 17 -F"));
        assert_eq!(CoreCollector::parse("  "), None);
    }

    #[test]
    fn a_bad_option_is_one_line_naming_it() {
        let error = collector_options(&words("-d 99"), "/proc/vmcore", "vmcore")
            .unwrap_err()
            .to_string();
        assert!(error.contains("99"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }
}
