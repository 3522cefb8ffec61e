//! `rkdump doctor`: every known reason a crash would leave no dump, one line each.

use clap::Args;

use super::service::{StartArgs, failure};
use super::{ExitStatus, report_error};

/// Check everything a crash needs to leave a dump here, one line per check (ok, warn, FAIL)
/// with the fix.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 no check failed, 1 a check failed (no dump would be \
taken), 2 invalid configuration."
)]
pub struct DoctorArgs {
    /// Print JSON (an array of {check, level, message, fix}).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    start: StartArgs,
}

/// Prints one line per check (`only_problems`: the warnings and failures only).
pub(super) fn print_checks(checks: &[crate::admin::doctor::Check], only_problems: bool) {
    use crate::admin::doctor::Level;
    for check in checks {
        let level = match check.level {
            Level::Ok if only_problems => continue,
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        let fix = check
            .fix
            .as_deref()
            .map(|fix| format!(" (fix: {fix})"))
            .unwrap_or_default();
        println!(
            "rkdump doctor: {level} {}: {}{fix}",
            check.check, check.message
        );
    }
}

/// `doctor`.
pub(crate) fn doctor(args: &DoctorArgs) -> ExitStatus {
    use crate::admin::doctor::Level;
    let checks = match crate::admin::doctor::check_system(&args.start.options(Vec::new())) {
        Ok(checks) => checks,
        Err(error) => return failure(&error),
    };
    if args.json {
        match serde_json::to_string_pretty(&checks) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                report_error(&format!("cannot print JSON: {error}"));
                return ExitStatus::Failure;
            }
        }
    } else {
        print_checks(&checks, false);
    }
    if checks.iter().any(|c| c.level == Level::Fail) {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    }
}
