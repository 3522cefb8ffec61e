//! `rkdump crashkernel`: is memory reserved for the capture kernel, and how much does this
//! system need (`rkdump estimate`'s value); `--set` writes that value for GRUB.

use std::path::Path;

use clap::Args;

use super::service::{StartArgs, failure};
use super::{ExitStatus, report_error};
use crate::admin::crashkernel::{self, GRUB_FILE};
use crate::admin::service;

/// Show the crashkernel= reservation against what this system needs; with --set, write the
/// needed value to /etc/default/grub.d/rkdump.cfg and run update-grub (as kdumpctl
/// reset-crashkernel does with grubby).
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 enough is reserved (or --set wrote the value), 3 not enough \
is reserved, 1 the estimate or the file could not be made."
)]
pub struct CrashkernelArgs {
    /// Write the value to /etc/default/grub.d/rkdump.cfg and run update-grub; it takes effect
    /// at the next boot.
    #[arg(long)]
    set: bool,
    /// With --set, this reservation (for example 128M) instead of the estimate.
    #[arg(long, value_name = "SIZE", requires = "set")]
    size: Option<String>,
    #[command(flatten)]
    start: StartArgs,
}

/// `crashkernel`.
pub(crate) fn crashkernel(args: &CrashkernelArgs) -> ExitStatus {
    use crate::loader::KexecState;
    let root = Path::new("/");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let values = crashkernel::on_cmdline(&cmdline);
    let release = service::running_release();
    let state = KexecState::read(root, &release);
    let reserved = state.crash_size.unwrap_or(0);
    if values.is_empty() {
        println!(
            "rkdump: crashkernel= is not on the kernel command line: no memory is reserved for the \
             capture kernel, so a crash leaves no dump"
        );
    } else {
        println!(
            "rkdump: crashkernel={} on the kernel command line: {} MiB reserved",
            values.join(" crashkernel="),
            reserved >> 20
        );
    }
    let needed = match &args.size {
        Some(size) => match crashkernel::parse_size(size) {
            Some(mib) => mib,
            None => {
                report_error(&format!("--size {size}: not a size such as 96M or 1G"));
                return ExitStatus::Usage;
            }
        },
        None => match estimate(&args.start) {
            Ok(mib) => {
                println!("rkdump: this system needs crashkernel={mib}M (rkdump estimate)");
                mib
            }
            Err(status) => return status,
        },
    };
    if args.set {
        return set(needed);
    }
    if reserved >> 20 >= needed {
        println!("rkdump: enough is reserved");
        return ExitStatus::Success;
    }
    println!(
        "rkdump: to reserve it: rkdump crashkernel --set (writes {GRUB_FILE} with \
         crashkernel={needed}M and runs update-grub), then reboot"
    );
    ExitStatus::Incomplete
}

/// The estimate in MiB, building rkdump's own image first when it is missing or stale (the
/// estimate measures the image that will be loaded).
fn estimate(start: &StartArgs) -> Result<u64, ExitStatus> {
    let options = start.options(Vec::new());
    let release = service::running_release();
    let settings = service::first_kernel_settings(&options.root).map_err(|e| failure(&e))?;
    let explicit = options.initrd.is_some() || settings.initrd.is_some();
    let kernel_release = settings.kernel_version.as_deref().unwrap_or(&release);
    {
        let _lock = service::lock().map_err(|e| failure(&e))?;
        if let crate::admin::image::Prepared::Rebuilt(reasons, built) =
            crate::admin::image::prepare(&options, explicit, kernel_release)
                .map_err(|e| failure(&e))?
        {
            println!(
                "rkdump: building the capture image to measure it: {}",
                reasons.join("; ")
            );
            super::mkinitrd::print_built(&built);
        }
    }
    let (kernel, initrd) =
        service::locate(&options, &settings, &release).map_err(|e| failure(&e))?;
    let state = crate::loader::KexecState::read(&options.root, &release);
    crate::admin::estimate::estimate_files(&kernel, &initrd, service::capture_cpus(&state))
        .map(|e| e.needed.div_ceil(1 << 20))
        .map_err(|e| failure(&e))
}

/// Writes the GRUB snippet and runs update-grub when there is one.
fn set(mib: u64) -> ExitStatus {
    let path = match crashkernel::write_grub(Path::new("/"), mib) {
        Ok(path) => path,
        Err(error) => {
            report_error(&format!("writing {GRUB_FILE}: {error}"));
            return ExitStatus::Failure;
        }
    };
    println!(
        "rkdump: wrote {}: crashkernel={mib}M for the kernels GRUB boots",
        path.display()
    );
    let update_grub = ["/usr/sbin/update-grub", "/sbin/update-grub"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    match update_grub {
        None => {
            println!(
                "rkdump: update-grub is not installed: add crashkernel={mib}M to the kernel \
                 command line in your boot loader's configuration, then reboot"
            );
            ExitStatus::Success
        }
        Some(tool) => match std::process::Command::new(tool).status() {
            Ok(status) if status.success() => {
                println!("rkdump: ran {tool}; reboot to reserve the memory");
                ExitStatus::Success
            }
            Ok(status) => {
                report_error(&format!(
                    "{tool} failed ({status}); {} is written",
                    path.display()
                ));
                ExitStatus::Failure
            }
            Err(error) => {
                report_error(&format!("running {tool}: {error}"));
                ExitStatus::Failure
            }
        },
    }
}
