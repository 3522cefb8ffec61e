//! `rkdump capture`: the capture steps PID 1 runs in its child, runnable by hand.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{CONFIG_FILE, Settings};
use crate::runtime::capture::{Capture, Outcome};
use crate::runtime::log::{LOG_FILE, Log};
use crate::runtime::{VMCORE, hooks, kernel, load_config};

/// Run the capture steps of kdump.conf once (PID 1 of the capture kernel runs this).
#[derive(Debug, Args)]
#[command(
    after_help = "Steps, in kdump-utils' order: find and mount the target, kdump_pre and \
pre.d, vmcore-dmesg.txt, the dump (vmcore-incomplete renamed to vmcore), post.d and kdump_post \
with the dump's status, kexec-dmesg.log.\n\nExit status: 0 saved, 1 failed, 10 kdump_pre failed \
(no dump taken)."
)]
pub struct CaptureArgs {
    /// The configuration.
    #[arg(long, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// The vmcore.
    #[arg(long, default_value = VMCORE)]
    vmcore: PathBuf,
    /// Use this (already mounted) directory as the target's root instead of the configured
    /// target.
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// Save to the first kernel's root filesystem (root= on the kernel command line).
    #[arg(long)]
    to_rootfs: bool,
    /// Append the log to this file too (copied next to the dump as kexec-dmesg.log).
    #[arg(long, default_value = LOG_FILE)]
    log: PathBuf,
    /// Time limit of each hook, in seconds (default: rkdump.hook_timeout= of the kernel
    /// command line, or 300).
    #[arg(long, value_name = "SECONDS")]
    hook_timeout: Option<u64>,
    /// Directory of the hooks run before the dump.
    #[arg(long, default_value = hooks::PRE_DIR)]
    pre_dir: PathBuf,
    /// Directory of the hooks run after the dump.
    #[arg(long, default_value = hooks::POST_DIR)]
    post_dir: PathBuf,
    /// The ssh client configuration read for the ssh target (port, user, key, known_hosts).
    #[arg(long, default_value = "/etc/ssh/ssh_config")]
    ssh_config: PathBuf,
    /// How long to keep trying to reach a network target, in seconds (default:
    /// rkdump.network_timeout= of the kernel command line, or 180).
    #[arg(long, value_name = "SECONDS")]
    network_timeout: Option<u64>,
    /// Bring the network up before a network target, from the kernel command line's ip=,
    /// ifname= and nameserver= (dracut's syntax; DHCP on every Ethernet interface without
    /// ip=). PID 1 of the capture kernel passes it; a running system's network is already up.
    #[arg(long)]
    network: bool,
}

/// Runs `rkdump capture`; returns its exit status.
pub fn run(args: &CaptureArgs) -> u8 {
    let log = Log::with_file(&args.log);
    let config = load_config(&args.config, &log);
    let cmdline = kernel::cmdline();
    let settings = Settings::from_cmdline(&cmdline);
    let capture = Capture {
        config: &config,
        vmcore: args.vmcore.clone(),
        log: &log,
        target_dir: args.target_dir.clone(),
        to_rootfs: args.to_rootfs,
        cmdline: cmdline.clone(),
        device_timeout: settings.device_timeout,
        hook_timeout: args
            .hook_timeout
            .map_or(settings.hook_timeout, Duration::from_secs),
        stall_timeout: settings.stall_timeout,
        host_ip: "127.0.0.1".into(),
        pre_dir: args.pre_dir.clone(),
        post_dir: args.post_dir.clone(),
        ssh_config: args.ssh_config.clone(),
        network: args.network,
        network_timeout: args
            .network_timeout
            .map_or(settings.network_timeout, Duration::from_secs),
    };
    let outcome = capture.run();
    match &outcome {
        Outcome::Saved => log.line("capture complete"),
        Outcome::PreHookFailed => log.line("capture skipped: kdump_pre failed"),
        Outcome::Failed { step, error } => log.line(&format!("capture failed at {step}: {error}")),
    }
    outcome.exit_code()
}
