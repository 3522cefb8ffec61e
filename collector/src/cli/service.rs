//! `rkdump start`, `stop`, `restart`, `reload` and `showmem`: arm the running system, as
//! kdumpctl's verbs of the same names do.

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
    pub(crate) fn options(&self, extra_cmdline: Vec<String>) -> Options {
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
        }
    }
}

fn failure(error: &ServiceError) -> ExitStatus {
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

fn start_locked(options: &Options) -> ExitStatus {
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
        }) => {
            for warning in warnings {
                eprintln!("rkdump: warning: {warning}");
            }
            if let Some(refusal) = &loaded.fallback_from {
                eprintln!(
                    "rkdump: {refusal}; loaded with kexec_load instead. To load with \
                     kexec_file_load: {}",
                    refusal.explanation.fix
                );
            }
            println!(
                "rkdump: loaded the capture kernel ({}): {} with {}, command line: {cmdline}",
                loaded.syscall.name(),
                kernel.display(),
                initrd.display()
            );
            ExitStatus::Success
        }
        Err(error) => {
            let status = failure(&error);
            // What else stands in the way, as `rkdump doctor` sees it.
            if !matches!(error, ServiceError::Config { .. })
                && let Ok(checks) = doctor_checks(options)
            {
                print_checks(&checks, true);
            }
            status
        }
    }
}

fn stop_locked() -> ExitStatus {
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

/// `reload` and `restart`: unload, then load (no rebuild check for reload).
pub(crate) fn reload(args: &StartArgs) -> ExitStatus {
    let _lock = match service::lock() {
        Ok(lock) => lock,
        Err(error) => return failure(&error),
    };
    match stop_locked() {
        ExitStatus::Success => start_locked(&args.options(Vec::new())),
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

/// Print the crashkernel= this machine needs, from the capture kernel and image that `start`
/// would load, against what is reserved.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 the estimate was made (a WARNING line when the \
reservation is smaller), 1 the kernel or image cannot be read or measured."
)]
pub struct EstimateArgs {
    #[command(flatten)]
    start: StartArgs,
}

/// `estimate`.
pub(crate) fn estimate(args: &EstimateArgs) -> ExitStatus {
    use crate::admin::estimate::estimate_files;
    use crate::loader::KexecState;
    let options = args.start.options(Vec::new());
    let release = service::running_release();
    let found = service::first_kernel_settings(&options.root)
        .and_then(|settings| service::locate(&options, &settings, &release));
    let (kernel, initrd) = match found {
        Ok(found) => found,
        Err(error) => return failure(&error),
    };
    let state = KexecState::read(&options.root, &release);
    let cpus = service::capture_cpus(&state);
    let estimate = match estimate_files(&kernel, &initrd, cpus) {
        Ok(estimate) => estimate,
        Err(error) => return failure(&error),
    };
    let mib = |bytes: u64| bytes.div_ceil(1 << 20);
    println!(
        "rkdump: crashkernel={}M is needed here",
        mib(estimate.needed)
    );
    println!(
        "  capture kernel {} while it boots (init_size): {} MiB",
        kernel.display(),
        mib(estimate.kernel)
    );
    println!(
        "  capture image {}: {} MiB packed + {} MiB unpacked{}",
        initrd.display(),
        mib(estimate.image_packed),
        mib(estimate.image_unpacked),
        estimate
            .unpacked_note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    println!(
        "  capture kernel's own memory ({} CPU(s), struct pages): {} MiB",
        estimate.cpus,
        mib(estimate.kernel_runtime)
    );
    println!(
        "  rkdump ({} worker(s)): {} MiB",
        estimate.cpus,
        mib(estimate.rkdump)
    );
    match state.crash_size {
        Some(0) | None => println!("rkdump: WARNING: nothing is reserved (no crashkernel=)"),
        Some(reserved) if reserved < estimate.needed => println!(
            "rkdump: WARNING: {} MiB reserved, less than needed: raise crashkernel= to {}M",
            mib(reserved),
            mib(estimate.needed)
        ),
        Some(reserved) => println!("rkdump: {} MiB reserved: enough", mib(reserved)),
    }
    ExitStatus::Success
}

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

/// The doctor's checks for `options`.
fn doctor_checks(options: &Options) -> Result<Vec<crate::admin::doctor::Check>, ServiceError> {
    use crate::admin::doctor;
    use crate::config::sysconfig::{KDUMP_TOOLS_FILE, SYSCONFIG_FILE};
    let release = service::running_release();
    let (config, _) = service::kdump_conf(&options.config)?;
    let settings = service::first_kernel_settings(&options.root)?;
    let state = crate::loader::KexecState::read(&options.root, &release);
    let files = service::locate(options, &settings, &release).map_err(|e| e.to_string());
    let mut inputs_of_image = vec![
        options.config.clone(),
        PathBuf::from(SYSCONFIG_FILE),
        PathBuf::from(KDUMP_TOOLS_FILE),
        PathBuf::from("/etc/fstab"),
    ];
    inputs_of_image.extend(
        [
            &config.kdump_pre,
            &config.kdump_post,
            &config.kdump_emergency,
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::from),
    );
    inputs_of_image.extend(config.extra_bins.iter().map(PathBuf::from));
    inputs_of_image.extend(std::env::current_exe().ok());
    let kernel_log = crate::kmsg::kernel_log();
    Ok(doctor::run(&doctor::Inputs {
        root: &options.root,
        config: &config,
        settings: &settings,
        state: &state,
        files,
        inputs_of_image,
        kernel_log: &kernel_log,
    }))
}

fn print_checks(checks: &[crate::admin::doctor::Check], only_problems: bool) {
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
    let checks = match doctor_checks(&args.start.options(Vec::new())) {
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
