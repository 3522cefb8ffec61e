//! Command-line interface of the `rkdump` binary.
//!
//! Every subcommand has its own `--help`. The process exit status is one of [`ExitStatus`]'s
//! documented values, so scripts and the capture runtime can tell a usage error from a failed or
//! an incomplete dump. Errors are printed as one line: what failed and where.

mod capture;
mod crash_test;
mod crashkernel;
mod dmesg;
mod doctor;
mod estimate;
mod generator;
mod info;
mod mkinitrd;
mod progress;
mod propagate;
mod reassemble;
mod receive;
mod restore_raw;
pub(crate) mod save;
mod service;
mod status;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Process exit statuses of `rkdump`.
///
/// These values are part of the interface: kdump hooks receive them as `$1` and scripts test them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// The command did everything it was asked to do.
    Success = 0,
    /// The command failed; nothing it promised was produced.
    Failure = 1,
    /// The command line or a configuration file is invalid.
    Usage = 2,
    /// A dump was started but could not be finished; the partial output is kept and marked
    /// incomplete.
    Incomplete = 3,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status as u8)
    }
}

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  failure: the requested output was not produced
  2  invalid command line or configuration
  3  dump incomplete: the partial output is kept, marked incomplete";

/// rkdump: capture, filter and compress Linux crash dumps.
#[derive(Debug, Parser)]
#[command(name = "rkdump", version, about, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Save(save::SaveArgs),
    Capture(capture::CaptureArgs),
    Dmesg(dmesg::DmesgArgs),
    Info(info::InfoArgs),
    Reassemble(reassemble::ReassembleArgs),
    RestoreRaw(restore_raw::RestoreRawArgs),
    Receive(receive::ReceiveArgs),
    Verify(verify::VerifyArgs),
    Propagate(propagate::PropagateArgs),
    Start(service::StartArgs),
    Stop(service::StopArgs),
    /// Unload and load the capture kernel again, without the image rebuild check.
    Reload(service::StartArgs),
    /// Unload the capture kernel, then start.
    Restart(service::StartArgs),
    Showmem(service::ShowmemArgs),
    Status(status::StatusArgs),
    Test(crash_test::TestArgs),
    Estimate(estimate::EstimateArgs),
    Crashkernel(crashkernel::CrashkernelArgs),
    Doctor(doctor::DoctorArgs),
    Mkinitrd(mkinitrd::MkinitrdArgs),
    Rebuild(mkinitrd::RebuildArgs),
    #[command(hide = true)]
    SystemdGenerator(generator::GeneratorArgs),
}

/// Entry point of the `rkdump` binary. As PID 1 (the capture kernel's `/init`) it runs the
/// capture runtime, which never returns.
pub fn main() -> ExitCode {
    if crate::runtime::is_init() {
        crate::runtime::pid1();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help and version to stdout with status 0, usage errors to stderr
            // with status 2 (`ExitStatus::Usage`).
            let _ = err.print();
            return ExitCode::from(
                u8::try_from(err.exit_code()).unwrap_or(ExitStatus::Usage as u8),
            );
        }
    };
    let status = match cli.command {
        Command::Save(args) => save::run(&args),
        Command::Capture(args) => return ExitCode::from(capture::run(&args)),
        Command::Dmesg(args) => dmesg::run(&args),
        Command::Info(args) => info::run(&args),
        Command::Reassemble(args) => reassemble::run(&args),
        Command::RestoreRaw(args) => restore_raw::run(&args),
        Command::Receive(args) => receive::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Propagate(args) => propagate::run(&args),
        Command::Start(args) => service::start(&args.options(Vec::new())),
        Command::Stop(args) => service::stop(&args),
        Command::Reload(args) => service::reload(&args, false),
        Command::Restart(args) => service::reload(&args, true),
        Command::Showmem(args) => service::showmem(&args),
        Command::Status(args) => status::run(&args),
        Command::Test(args) => crash_test::test(&args),
        Command::Estimate(args) => estimate::estimate(&args),
        Command::Crashkernel(args) => crashkernel::crashkernel(&args),
        Command::Doctor(args) => doctor::doctor(&args),
        Command::Mkinitrd(args) => mkinitrd::mkinitrd(&args),
        Command::Rebuild(args) => mkinitrd::rebuild(&args),
        Command::SystemdGenerator(args) => generator::generate(&args),
    };
    status.into()
}

/// Prints a one-line error, prefixed with the program name.
fn report_error(message: &str) {
    eprintln!("rkdump: error: {message}");
}
