//! `rkdump save`: write a dump file from a vmcore, taking makedumpfile's spellings.

use super::progress::ProgressPrinter;
use super::{ExitStatus, report_error};
pub use crate::config::collector::SaveArgs;
use crate::config::collector::{MSG_COMMON, MSG_PROGRESS, MSG_REPORT};
use crate::dump::{self, Summary};
use crate::output::Destination;

/// Runs `rkdump save`.
pub fn run(args: &SaveArgs) -> ExitStatus {
    let message_level = args.message_level | if args.debug { 8 } else { 0 };
    let mut notes = Vec::new();
    let options = match args.options(&mut notes) {
        Ok(options) => options,
        Err(error) => {
            report_error(&error.to_string());
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
