//! `rkdump mkinitrd` and `rkdump rebuild`: build the capture image from the running system.

use std::path::PathBuf;

use clap::Args;

use super::ExitStatus;
use super::service::failure;
use crate::admin::image::{self, How, Made, Request};
use crate::admin::service;
use crate::config::CONFIG_FILE;
use crate::image::Built;

/// Build the capture image (the kdump initramfs) from this system: rkdump as /init, kdump.conf
/// with the dump target resolved, hooks and extra_bins with their libraries, the drivers the
/// target and the active watchdogs need.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 built, 1 not built (the message says why), 2 invalid \
command line or configuration."
)]
pub struct MkinitrdArgs {
    /// The kdump configuration.
    #[arg(long, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// The capture kernel's release (default: KDUMP_KERNELVER, else the running kernel).
    #[arg(long, value_name = "RELEASE")]
    kver: Option<String>,
    /// Where to write the image (default: /var/lib/rkdump/initrd-RELEASE.img, with its
    /// manifest beside it).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Every storage, network and watchdog driver, for an image that must boot on other
    /// hardware.
    #[arg(long)]
    all_drivers: bool,
    /// Build it with dracut and rkdump's dracut module (dracut -m rkdump), for distributions
    /// that build their images with dracut.
    #[arg(long, conflicts_with = "tree")]
    dracut: bool,
    /// Write the image's files into this directory instead of an archive (what the dracut
    /// module does with $initdir).
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    tree: Option<PathBuf>,
}

/// Rebuild rkdump's own capture image now, changed or not (kdumpctl rebuild).
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The kdump configuration.
    #[arg(long, default_value = CONFIG_FILE)]
    config: PathBuf,
}

/// Prints what went into an image.
pub(super) fn print_built(built: &Built) {
    println!("{}", image::summary(built));
    println!("rkdump: modules: {}", built.manifest.modules.join(" "));
    for program in &built.programs {
        println!("rkdump: program ({}): {}", program.what, program.path);
    }
    if !built.firmware.is_empty() {
        println!("rkdump: firmware: {}", built.firmware.join(" "));
    }
    if !built.missing_firmware.is_empty() {
        eprintln!(
            "rkdump: warning: firmware the modules declare is not on this system: {}",
            built.missing_firmware.join(" ")
        );
    }
}

fn run(request: &Request) -> ExitStatus {
    match image::build(request) {
        Ok(Made::Image(built)) => {
            print_built(&built);
            ExitStatus::Success
        }
        Ok(Made::Tree(dir, modules)) => {
            println!(
                "rkdump: wrote the capture image's files into {}; modules: {}",
                dir.display(),
                modules.join(" ")
            );
            ExitStatus::Success
        }
        Err(error) => failure(&error),
    }
}

/// `mkinitrd`.
pub(crate) fn mkinitrd(args: &MkinitrdArgs) -> ExitStatus {
    run(&Request {
        root: PathBuf::from("/"),
        config: args.config.clone(),
        release: args.kver.clone(),
        output: args.output.clone(),
        all_drivers: args.all_drivers,
        how: match (&args.tree, args.dracut) {
            (Some(dir), _) => How::Tree(dir.clone()),
            (None, true) => How::Dracut,
            (None, false) => How::Archive,
        },
    })
}

/// `rebuild`: rkdump's own image, under the service lock.
pub(crate) fn rebuild(args: &RebuildArgs) -> ExitStatus {
    let _lock = match service::lock() {
        Ok(lock) => lock,
        Err(error) => return failure(&error),
    };
    run(&Request {
        root: PathBuf::from("/"),
        config: args.config.clone(),
        release: None,
        output: None,
        all_drivers: false,
        how: How::Archive,
    })
}
