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
    /// Check that this vmlinux is the dead kernel's (release and build id), as crash and drgn
    /// need it to be; exit status 1 when it is not.
    #[arg(long, value_name = "FILE")]
    vmlinux: Option<PathBuf>,
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
            if let Some(vmlinux) = &args.vmlinux {
                use crate::readback::vmlinux::{Match, compare, identify};
                let id = match identify(vmlinux) {
                    Ok(id) => id,
                    Err(e) => {
                        report_error(&e.to_string());
                        return ExitStatus::Failure;
                    }
                };
                match compare(
                    info.kernel_release.as_deref(),
                    info.build_id.as_deref(),
                    &id,
                ) {
                    Match::Yes => println!("vmlinux:      {} matches", vmlinux.display()),
                    Match::No(why) => {
                        report_error(&format!(
                            "{} does not match the dump: {why}",
                            vmlinux.display()
                        ));
                        return ExitStatus::Failure;
                    }
                    Match::Unknown(why) => {
                        println!("vmlinux:      {} not checked: {why}", vmlinux.display());
                    }
                }
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
