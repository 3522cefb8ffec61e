//! `rkdump verify`: check a received dump directory against its manifest.

use std::path::PathBuf;

use clap::Args;

use super::{ExitStatus, report_error};

/// Check the files of a dump directory against the manifest sent with them
/// (rkdump-manifest.json: size and CRC-32 of every 1 MiB chunk).
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every listed file matches, 1 a file is missing, \
differs or cannot be read (the message names the file and the chunk)."
)]
pub struct VerifyArgs {
    /// The dump directory.
    dir: PathBuf,
}

/// Runs `rkdump verify`.
pub fn run(args: &VerifyArgs) -> ExitStatus {
    match crate::server::verify::verify_dir(&args.dir) {
        Ok(verified) => {
            println!(
                "{}: {} files, {} bytes verified",
                args.dir.display(),
                verified.files,
                verified.bytes
            );
            ExitStatus::Success
        }
        Err(e) => {
            report_error(&e.to_string());
            ExitStatus::Failure
        }
    }
}
