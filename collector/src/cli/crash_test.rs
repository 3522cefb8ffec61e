//! `rkdump test`: crash the machine on purpose, as kdumpctl's `test` does, so that `status`
//! tells after the reboot whether the dump arrived.

use clap::Args;

use super::service::{StartArgs, failure, start_locked, stop_locked};
use super::{ExitStatus, report_error};
use crate::admin::service;

/// Crash the machine on purpose to test kdump: record a test id, reload the capture kernel with
/// it, and trigger a panic (sysrq-c). After the reboot, `rkdump status` says whether the
/// test's dump arrived and is complete.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    start: StartArgs,
}

/// `test`.
pub(crate) fn test(args: &TestArgs) -> ExitStatus {
    use std::io::{BufRead, IsTerminal, Write};
    if !args.force {
        if !std::io::stdin().is_terminal() {
            report_error(
                "rkdump test crashes this machine: confirm on a terminal, or pass --force",
            );
            return ExitStatus::Usage;
        }
        print!(
            "DANGER!!! rkdump test crashes this machine now to check that its dump is saved. \
             Continue? (y/N) "
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("rkdump: test cancelled");
            return ExitStatus::Failure;
        }
    }
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let _lock = match service::lock() {
        Ok(lock) => lock,
        Err(error) => return failure(&error),
    };
    if stop_locked() != ExitStatus::Success {
        return ExitStatus::Failure;
    }
    let options = args.start.options(vec![format!(
        "{}={id}",
        crate::admin::status::TEST_ID_PARAMETER
    )]);
    if start_locked(&options) != ExitStatus::Success {
        // Leave the machine armed as it was, without the test id.
        eprintln!("rkdump: the test is not run; loading the capture kernel again without it");
        let _ = start_locked(&args.start.options(Vec::new()));
        return ExitStatus::Failure;
    }
    // Recorded only once the test's kernel is loaded, so that status never waits for a test
    // that did not crash.
    let status_file = std::path::Path::new(crate::admin::status::TEST_STATUS_FILE);
    let record = status_file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(status_file, format!("pending {id}\n")))
        .and_then(|()| std::fs::File::open(status_file)?.sync_all());
    if let Err(error) = record {
        report_error(&format!(
            "cannot record the test in {}: {error}",
            status_file.display()
        ));
        return ExitStatus::Failure;
    }
    println!("rkdump: kdump test {id}: crashing the machine now");
    let _ = std::io::stdout().flush();
    nix::unistd::sync();
    match std::fs::write("/proc/sysrq-trigger", b"c") {
        Ok(()) => ExitStatus::Success,
        Err(error) => {
            report_error(&format!(
                "cannot crash the machine through /proc/sysrq-trigger: {error}"
            ));
            ExitStatus::Failure
        }
    }
}
