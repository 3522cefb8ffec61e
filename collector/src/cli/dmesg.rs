//! `rkdump dmesg`: write the dead kernel's log, as `makedumpfile --dump-dmesg` does.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{ExitStatus, report_error};
use crate::vmcore::Vmcore;

/// Write the dead kernel's log (vmcore-dmesg.txt).
#[derive(Debug, Args)]
#[command(
    after_help = "The output is byte-identical to `makedumpfile --dump-dmesg VMCORE FILE`. \
It needs only address translation and the printk symbols, so it works when page filtering is \
impossible. A file is written as FILE-incomplete and renamed when complete."
)]
pub struct DmesgArgs {
    /// The vmcore: /proc/vmcore in the capture kernel, or a saved ELF vmcore.
    vmcore: PathBuf,
    /// Output file (default or `-`: standard output). A device or FIFO is written in place.
    output: Option<PathBuf>,
}

/// Runs `rkdump dmesg`.
pub fn run(args: &DmesgArgs) -> ExitStatus {
    let log = match Vmcore::open(&args.vmcore) {
        Ok(vmcore) => crate::dmesg::extract(&vmcore)
            .map_err(|e| format!("{}: kernel log: {e}", args.vmcore.display())),
        Err(e) => Err(e.to_string()),
    };
    let log = match log {
        Ok(log) => log,
        Err(message) => {
            report_error(&message);
            return ExitStatus::Failure;
        }
    };
    let written = match args
        .output
        .as_deref()
        .filter(|p| *p != std::path::Path::new("-"))
    {
        Some(path) => crate::output::write_file_atomically(path, &log).map_err(|e| e.to_string()),
        None => std::io::stdout()
            .lock()
            .write_all(&log)
            .map_err(|e| format!("standard output: {e}")),
    };
    match written {
        Ok(()) => ExitStatus::Success,
        Err(message) => {
            report_error(&message);
            ExitStatus::Failure
        }
    }
}
