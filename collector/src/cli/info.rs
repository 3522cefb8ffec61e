//! `rkdump info`: describe a dump file.

use std::path::PathBuf;

use clap::Args;

use super::{ExitStatus, report_error};

/// Describe a dump file: format, compression, pages, completeness, the dead kernel.
#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 a complete dump, 1 unreadable, 3 an incomplete dump.")]
pub struct InfoArgs {
    /// A kdump-compressed, ELF or flattened dump.
    dumpfile: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `rkdump info`.
pub fn run(args: &InfoArgs) -> ExitStatus {
    match crate::readback::info::describe(&args.dumpfile) {
        Ok(info) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).expect("info serialises")
                );
            } else {
                print!("{}", info.to_text(&args.dumpfile));
            }
            if info.complete {
                ExitStatus::Success
            } else {
                ExitStatus::Incomplete
            }
        }
        Err(e) => {
            report_error(&e.to_string());
            ExitStatus::Failure
        }
    }
}
