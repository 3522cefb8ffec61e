//! `rkdump status`: armed or not (exit 0 or 3, as kdumpctl's), the last dump on the target and
//! the last `rkdump test`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{ExitStatus, report_error};
use crate::admin::service::{self, first_kernel_settings, kdump_conf, running_release};
use crate::admin::status::{DumpReport, LastDump, Operational, TestOutcome, status};
use crate::config::CONFIG_FILE;
use crate::loader::KexecState;

/// Say whether kdump is operational (a capture kernel is loaded) and describe the last dump on
/// the configured target and the last `rkdump test`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 operational, 3 not operational (the reason is printed), \
2 invalid configuration."
)]
pub struct StatusArgs {
    /// The kdump configuration.
    #[arg(long, default_value = CONFIG_FILE)]
    config: PathBuf,
}

fn describe(report: &DumpReport) -> String {
    let what = report.file.as_ref().map_or_else(
        || report.dir.display().to_string(),
        |f| f.display().to_string(),
    );
    match (&report.reason, report.complete) {
        (None, true) => format!("{what}, {} bytes, complete", report.size),
        (Some(note), true) => format!("{what}, {} bytes, complete ({note})", report.size),
        (reason, false) => format!(
            "{what}, {} bytes, INCOMPLETE: {}",
            report.size,
            reason.as_deref().unwrap_or("unknown")
        ),
    }
}

/// How long `status` waits for a `start`, `stop` or `reload` in progress.
const STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Prints the status.
pub(crate) fn run(args: &StatusArgs) -> ExitStatus {
    let root = Path::new("/");
    let (config, _) = match kdump_conf(&args.config) {
        Ok(config) => config,
        Err(error) => {
            report_error(&error.to_string());
            return ExitStatus::Usage;
        }
    };
    let settings = match first_kernel_settings(root) {
        Ok(settings) => settings,
        Err(error) => {
            report_error(&error.to_string());
            return ExitStatus::Usage;
        }
    };
    // A start, stop or reload in progress (rkdump.service reloading after a hotplug) changes
    // what the kernel says: wait for it, a bounded while, and only for the reading. Only root:
    // the verbs that hold the lock run as root, and a user's status must never create or hold
    // the lock file that root's verbs take.
    let state = {
        let _lock = if nix::unistd::geteuid().is_root() {
            match service::lock_within(STATUS_WAIT) {
                Ok(None) => {
                    println!(
                        "rkdump: another rkdump command still holds the service lock after {} s",
                        STATUS_WAIT.as_secs()
                    );
                    None
                }
                Ok(lock) => lock,
                Err(_) => None,
            }
        } else {
            None
        };
        KexecState::read(root, &running_release())
    };
    let status = status(root, &config, settings.coredir.as_deref(), &state);
    match &status.last_dump {
        LastDump::NotChecked(why) => println!("rkdump: last dump: not checked: {why}"),
        LastDump::None(dir) => println!("rkdump: last dump: none in {}", dir.display()),
        LastDump::Found(report) => println!("rkdump: last dump: {}", describe(report)),
    }
    if let Some((id, outcome)) = &status.test {
        let text = match outcome {
            TestOutcome::Complete(report) => format!("its dump arrived: {}", describe(report)),
            TestOutcome::Incomplete(report) => {
                format!("its dump arrived INCOMPLETE: {}", describe(report))
            }
            TestOutcome::Missing => {
                "no dump carries its id: the test crash was not captured".into()
            }
            TestOutcome::NotChecked => "the target cannot be checked from here".into(),
        };
        println!("rkdump: last kdump test {id}: {text}");
    }
    match status.operational {
        Operational::Yes => {
            println!("rkdump: kdump is operational");
            ExitStatus::Success
        }
        Operational::No(why) => {
            println!("rkdump: kdump is not operational: {why}");
            ExitStatus::Incomplete
        }
    }
}
