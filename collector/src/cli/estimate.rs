//! `rkdump estimate`: the crashkernel= this machine needs.

use clap::Args;

use super::ExitStatus;
use super::service::{StartArgs, failure};
use crate::admin::service;

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
