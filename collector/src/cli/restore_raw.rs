//! `rkdump restore-raw`: in the first kernel, recover a dump the capture kernel wrote onto a
//! raw device (kdump.conf `raw`).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;

use super::{ExitStatus, report_error};
use crate::format::flat;
use crate::format::time::UtcTime;
use crate::readback::reassemble::{ReassembleError, reassemble_to_file};

/// Recover a dump from a raw device into `DIR/<date>/vmcore`, then clear the device's stream
/// header so that the same dump is not recovered twice.
#[derive(Debug, Args)]
#[command(
    after_help = "The device holds makedumpfile's flattened stream (also readable by \
`makedumpfile -R vmcore < DEVICE`). Without a stream on the device, nothing is done.\n\nExit \
status: 0 recovered or nothing to do, 1 failed, 3 the stream is cut short (the partial dump is \
kept as vmcore-incomplete)."
)]
pub struct RestoreRawArgs {
    /// The raw device (or an image of it).
    device: PathBuf,
    /// Directory to create the dump directory in.
    #[arg(default_value = "/var/crash")]
    dir: PathBuf,
    /// Leave the device as it is after recovering.
    #[arg(long)]
    keep: bool,
}

/// Runs `rkdump restore-raw`.
pub fn run(args: &RestoreRawArgs) -> ExitStatus {
    let mut device = match File::open(&args.device) {
        Ok(file) => file,
        Err(e) => {
            report_error(&format!("{}: {e}", args.device.display()));
            return ExitStatus::Failure;
        }
    };
    let mut header = [0u8; flat::HEADER_SIZE];
    if device.read_exact(&mut header).is_err() || flat::decode_header(&header).is_err() {
        eprintln!(
            "rkdump: {}: no flattened dump on the device; nothing to do",
            args.device.display()
        );
        return ExitStatus::Success;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().cast_signed());
    let target = args.dir.join(UtcTime::from_unix(now).dump_dir_stamp());
    if let Err(e) = std::fs::create_dir_all(&target) {
        report_error(&format!("creating {}: {e}", target.display()));
        return ExitStatus::Failure;
    }
    let vmcore = target.join("vmcore");
    let stream = std::io::Cursor::new(header).chain(device);
    match reassemble_to_file(stream, &vmcore) {
        Ok(done) => {
            eprintln!(
                "rkdump: recovered {} ({} bytes) from {}",
                vmcore.display(),
                done.file_size,
                args.device.display()
            );
            if !args.keep {
                let cleared = OpenOptions::new()
                    .write(true)
                    .open(&args.device)
                    .and_then(|d| {
                        d.write_all_at(&[0u8; flat::HEADER_SIZE], 0)
                            .and_then(|()| d.sync_all())
                    });
                if let Err(e) = cleared {
                    report_error(&format!(
                        "clearing the stream header of {}: {e}",
                        args.device.display()
                    ));
                    return ExitStatus::Failure;
                }
            }
            ExitStatus::Success
        }
        Err(error @ (ReassembleError::Truncated { .. } | ReassembleError::Write(_))) => {
            report_error(&format!(
                "{}: {error}; partial dump kept as {}-incomplete",
                args.device.display(),
                vmcore.display()
            ));
            ExitStatus::Incomplete
        }
        Err(error) => {
            report_error(&format!("{}: {error}", args.device.display()));
            ExitStatus::Failure
        }
    }
}
