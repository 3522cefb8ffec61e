//! `rkdump start`, `stop`, `restart`, `reload` and `showmem`: arm the running system, as
//! kdumpctl's verbs of the same names do. `test`, `estimate` and `doctor` are beside it.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{ExitStatus, report_error};
use crate::admin::service::{self, Options, ServiceError, Started, Stopped};
use crate::config::CONFIG_FILE;
use crate::loader::Method;

/// Which syscall loads the capture kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SyscallArg {
    /// kexec_file_load, then kexec_load when that fails for a reason kexec_load can overcome
    /// (not under lockdown).
    Auto,
    /// kexec_file_load only (the kernel verifies signatures where it is configured to).
    File,
    /// kexec_load only (rkdump builds every segment itself).
    Load,
}

/// Load the capture kernel so that a panic boots it (start), after checking that kdump can work
/// here.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 loaded (or already loaded: a warning), 1 not loaded (the \
message says why and what to do), 2 invalid command line or configuration."
)]
pub struct StartArgs {
    /// The kdump configuration.
    #[arg(long, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// The capture kernel (default: the running kernel's image, as kdumpctl finds it).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// The capture image (default: KDUMP_INITRD, else /var/lib/rkdump/initrd-$(uname -r).img).
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// Which syscall loads it (default: KEXEC_ARGS `-c` means load, else auto).
    #[arg(long, value_enum)]
    syscall: Option<SyscallArg>,
}

/// Unload the capture kernel (works under lockdown).
#[derive(Debug, Args)]
pub struct StopArgs {}

/// Print the memory reserved for the capture kernel (crashkernel=).
#[derive(Debug, Args)]
pub struct ShowmemArgs {}

impl StartArgs {
    /// The service options these arguments ask for, with `extra_cmdline` added to the capture
    /// kernel's command line.
    pub(crate) fn options(&self, extra_cmdline: Vec<String>) -> Options {
        self.options_checked(extra_cmdline, true)
    }

    /// As [`Self::options`], with or without the image rebuild check.
    pub(crate) fn options_checked(&self, extra_cmdline: Vec<String>, check_image: bool) -> Options {
        Options {
            root: PathBuf::from("/"),
            config: self.config.clone(),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            method: self.syscall.map(|s| match s {
                SyscallArg::Auto => Method::Auto,
                SyscallArg::File => Method::File,
                SyscallArg::Load => Method::Load,
            }),
            extra_cmdline,
            check_image,
        }
    }
}

/// Reports `error` in one line and returns its exit status (2 for a bad configuration).
pub(super) fn failure(error: &ServiceError) -> ExitStatus {
    report_error(&error.to_string());
    match error {
        ServiceError::Config { .. } => ExitStatus::Usage,
        _ => ExitStatus::Failure,
    }
}

/// Loads; reports what happened in one line (and the fallback's reason in another).
pub(crate) fn start(options: &Options) -> ExitStatus {
    let _lock = match service::lock() {
        Ok(lock) => lock,
        Err(error) => return failure(&error),
    };
    start_locked(options)
}

/// `start` with the service lock held; prints the doctor's findings when loading fails.
pub(super) fn start_locked(options: &Options) -> ExitStatus {
    match service::start(options) {
        Ok(Started::AlreadyLoaded) => {
            eprintln!(
                "rkdump: warning: the capture kernel is already loaded (`rkdump reload` replaces it)"
            );
            ExitStatus::Success
        }
        Ok(Started::Loaded {
            loaded,
            kernel,
            initrd,
            cmdline,
            warnings,
            rebuilt,
        }) => {
            for warning in warnings {
                eprintln!("rkdump: warning: {warning}");
            }
            if let Some(rebuilt) = rebuilt {
                let (reasons, built) = &*rebuilt;
                println!(
                    "rkdump: rebuilding the capture image: {}",
                    reasons.join("; ")
                );
                super::mkinitrd::print_built(built);
            }
            if let Some(refusal) = &loaded.fallback_from {
                eprintln!(
                    "rkdump: {refusal}; loaded with kexec_load instead. To load with \
                     kexec_file_load: {}",
                    refusal.explanation.fix
                );
            }
            println!(
                "rkdump: loaded the capture kernel ({}): {} with {}, command line: {}",
                loaded.syscall.name(),
                kernel.display(),
                initrd.display(),
                loaded.cmdline.as_deref().unwrap_or(&cmdline)
            );
            ExitStatus::Success
        }
        Err(error) => {
            let status = failure(&error);
            // What else stands in the way, as `rkdump doctor` sees it.
            if !matches!(error, ServiceError::Config { .. })
                && let Ok(checks) = crate::admin::doctor::check_system(options)
            {
                super::doctor::print_checks(&checks, true);
            }
            status
        }
    }
}

/// `stop` with the service lock held.
pub(super) fn stop_locked() -> ExitStatus {
    match service::stop(std::path::Path::new("/")) {
        Ok(Stopped::NotLoaded) => {
            println!("rkdump: no capture kernel was loaded");
            ExitStatus::Success
        }
        Ok(Stopped::Unloaded) => {
            println!("rkdump: unloaded the capture kernel");
            ExitStatus::Success
        }
        Err(error) => failure(&error),
    }
}

/// `stop`.
pub(crate) fn stop(_args: &StopArgs) -> ExitStatus {
    let _lock = match service::lock() {
        Ok(lock) => lock,
        Err(error) => return failure(&error),
    };
    stop_locked()
}

/// `reload` (no rebuild check, as kdumpctl) and `restart` (with it): unload, then load.
pub(crate) fn reload(args: &StartArgs, check_image: bool) -> ExitStatus {
    let _lock = match service::lock() {
        Ok(lock) => lock,
        Err(error) => return failure(&error),
    };
    match stop_locked() {
        ExitStatus::Success => start_locked(&args.options_checked(Vec::new(), check_image)),
        other => other,
    }
}

/// `showmem`.
pub(crate) fn showmem(_args: &ShowmemArgs) -> ExitStatus {
    match service::reserved(std::path::Path::new("/")) {
        Ok(bytes) => {
            println!(
                "rkdump: reserved {} MiB memory for the capture kernel",
                bytes >> 20
            );
            ExitStatus::Success
        }
        Err(error) => failure(&error),
    }
}
