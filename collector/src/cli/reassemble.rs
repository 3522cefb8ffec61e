//! `rkdump reassemble`: turn a flattened stream back into a dump file (`makedumpfile -R`).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use clap::Args;

use super::{ExitStatus, report_error};
use crate::output::incomplete_name;
use crate::readback::reassemble::{ReassembleError, reassemble_to_file};

/// Rebuild a dump file from a flattened stream (-F output, a raw device, vmcore.flat).
#[derive(Debug, Args)]
#[command(
    after_help = "The result is byte-identical to the file the same dump writes without -F. \
An LZ4-framed stream (save -F --lz4) is unwrapped. DUMPFILE is written as DUMPFILE-incomplete and \
renamed once the stream's end marker is read.\n\nExit status: 0 done, 1 failed, 2 invalid \
options, 3 the stream is cut short (the partial file is kept)."
)]
pub struct ReassembleArgs {
    /// The flattened stream: a file, a device, or - for standard input.
    stream: PathBuf,
    /// The dump file to write.
    dumpfile: PathBuf,
    /// Overwrite an existing DUMPFILE.
    #[arg(short = 'f', long = "force")]
    force: bool,
}

/// Runs `rkdump reassemble`.
pub fn run(args: &ReassembleArgs) -> ExitStatus {
    if args.dumpfile.exists() && !args.force {
        report_error(&format!(
            "{} already exists (use -f to overwrite it)",
            args.dumpfile.display()
        ));
        return ExitStatus::Usage;
    }
    let input: Box<dyn Read> = if args.stream.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match File::open(&args.stream) {
            Ok(file) => Box::new(file),
            Err(e) => {
                report_error(&format!("{}: {e}", args.stream.display()));
                return ExitStatus::Failure;
            }
        }
    };
    let temporary = incomplete_name(&args.dumpfile);
    let result = reassemble_to_file(input, &args.dumpfile);
    match result {
        Ok(done) => {
            eprintln!(
                "rkdump: reassembled {} ({} bytes from {} records)",
                args.dumpfile.display(),
                done.file_size,
                done.records
            );
            ExitStatus::Success
        }
        Err(error) => {
            let source = if args.stream.as_os_str() == "-" {
                "standard input".into()
            } else {
                args.stream.display().to_string()
            };
            match error {
                ReassembleError::NotAFile { .. } => {
                    report_error(&error.to_string());
                    ExitStatus::Usage
                }
                ReassembleError::Truncated { .. } | ReassembleError::Write(_) => {
                    report_error(&format!(
                        "{source}: {error}; partial dump kept as {}",
                        temporary.display()
                    ));
                    ExitStatus::Incomplete
                }
                _ => {
                    let _ = std::fs::remove_file(&temporary);
                    report_error(&format!("{source}: {error}"));
                    ExitStatus::Failure
                }
            }
        }
    }
}
