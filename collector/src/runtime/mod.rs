//! The capture runtime: rkdump as PID 1 of the kdump initramfs.
//!
//! # Brief overview
//!
//! In the capture kernel, `/init` is rkdump. As PID 1 ([`pid1`]) it is a small supervisor:
//!
//! 1. mounts `/proc`, `/sys`, `/dev`, `/run`, `/tmp` ([`mounts`]) and starts the log ([`log`]);
//! 2. reads `/etc/kdump.conf` ([`crate::config`]);
//! 3. loads the drivers of the hardware present and the modules the target needs, from the
//!    standard `/lib/modules` tree ([`modules`]);
//! 4. starts the hardware watchdog keeper ([`watchdog`]);
//! 5. runs the capture ([`capture`]: network bring-up for network targets ([`network`]), target
//!    (mounted, raw, [`nfs`] or ssh), pre hooks, dmesg, dump, post hooks, log) in a child
//!    process, `rkdump capture --network`, with a deadline;
//! 6. carries out the final action, or the failure action when the child failed, crashed, was
//!    killed (OOM) or ran past its deadline ([`power`]).
//!
//! PID 1 never returns and never panics on purpose: everything that can fail runs in the
//! child, and every error of the supervisor is logged and leads to an action. Settings that are
//! not kdump.conf's come from the kernel command line (`rkdump.timeout=`, ...: see
//! [`crate::config::settings`] for every key and its default).

pub mod blockid;
pub mod capture;
pub mod hooks;
pub mod kernel;
pub mod log;
pub mod modules;
pub mod mounts;
pub mod network;
pub mod nfs;
pub mod power;
pub mod watchdog;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use capture::EXIT_PRE_HOOK_FAILED;
use log::Log;

use crate::config::{Action, CONFIG_FILE, Config, Settings, Severity, Target, WatchdogMode};

/// The vmcore of the capture kernel.
pub const VMCORE: &str = "/proc/vmcore";

/// Reads the configuration, logging every diagnostic.
pub fn load_config(path: &Path, log: &Log) -> Config {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (config, diagnostics) = Config::parse(&path.display().to_string(), &text);
            for diagnostic in diagnostics {
                log.line(&diagnostic.to_string());
                if diagnostic.severity == Severity::Error {
                    log.line("the line above is ignored; its default applies");
                }
            }
            config
        }
        Err(e) => {
            log.line(&format!(
                "{}: {e}; using the defaults (dump to the root filesystem)",
                path.display()
            ));
            Config::default()
        }
    }
}

/// The modules the target's filesystem or protocol needs, plus `extra_modules`.
fn target_modules(config: &Config) -> Vec<String> {
    let mut modules = config.extra_modules.clone();
    match &config.target {
        Target::Mount { fstype, .. } if fstype.starts_with("nfs") => {
            modules.extend(["nfs".into(), "nfsv4".into()]);
        }
        Target::Filesystem { fstype, .. } | Target::Mount { fstype, .. } => {
            modules.push(fstype.clone());
        }
        Target::Nfs { .. } => modules.extend(["nfs".into(), "nfsv4".into()]),
        Target::RootFs | Target::Raw(_) | Target::Ssh(_) => {}
    }
    modules
}

/// Whether this process is PID 1.
pub fn is_init() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// How the capture child ended.
enum ChildEnd {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    NotStarted(String),
}

/// Runs `rkdump capture` in a child and waits for it, reaping orphans meanwhile (PID 1's
/// duty). Kills it at the deadline.
fn run_child(args: &[&str], deadline: Duration, log: &Log) -> ChildEnd {
    let mut child: Child = match Command::new("/proc/self/exe")
        .arg("capture")
        .args(args)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return ChildEnd::NotStarted(e.to_string()),
    };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let started = Instant::now();
    loop {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return ChildEnd::Exited(code),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => {
                return ChildEnd::Signaled(signal as i32);
            }
            Ok(WaitStatus::StillAlive) | Err(_) => {
                if started.elapsed() > deadline {
                    log.line(&format!(
                        "the capture ran past its deadline of {} s; killing it",
                        deadline.as_secs()
                    ));
                    let _ = child.kill();
                    let _ = child.wait();
                    return ChildEnd::TimedOut;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // An orphan (a hook's leftover) was reaped.
            Ok(_) => {}
        }
    }
}

/// Whether the kernel killed `pid`'s process group for lack of memory, from its log.
fn oom_killed() -> bool {
    crate::kmsg::kernel_log()
        .lines()
        .any(|l| l.contains("Out of memory") || l.contains("oom-kill"))
}

/// Explains why the child ended, and whether that was a success.
fn judge(end: &ChildEnd, log: &Log) -> Result<(), ()> {
    match end {
        ChildEnd::Exited(0) => Ok(()),
        ChildEnd::Exited(code) if *code == i32::from(EXIT_PRE_HOOK_FAILED) => {
            log.line("kdump_pre failed: no dump; going to the final action");
            Ok(())
        }
        ChildEnd::Exited(code) => {
            log.line(&format!("the capture failed (exit status {code})"));
            Err(())
        }
        ChildEnd::Signaled(signal) => {
            let why = if *signal == nix::libc::SIGKILL && oom_killed() {
                " (out of memory)"
            } else {
                ""
            };
            log.line(&format!("the capture was killed by signal {signal}{why}"));
            Err(())
        }
        ChildEnd::TimedOut => Err(()),
        ChildEnd::NotStarted(e) => {
            log.line(&format!("the capture could not be started: {e}"));
            Err(())
        }
    }
}

/// PID 1 of the capture kernel. Never returns.
pub fn pid1() -> ! {
    let console = Log::console();
    mounts::early_mounts(&console);
    let log = Log::with_file(Path::new(log::LOG_FILE));
    log.line(&format!(
        "rkdump {} capture runtime starting",
        env!("CARGO_PKG_VERSION")
    ));
    let release = nix::sys::utsname::uname().map_or_else(
        |_| "?".into(),
        |u| u.release().to_string_lossy().into_owned(),
    );
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    log.line(&format!(
        "capture kernel {release}: {cpus} CPUs online; {}",
        kernel::memory()
    ));
    let settings = Settings::from_cmdline(&kernel::cmdline());
    for warning in &settings.warnings {
        log.line(warning);
    }
    let config = load_config(Path::new(CONFIG_FILE), &log);

    {
        let _step = log.step("modules");
        match modules::Modules::open() {
            Ok(mut modules) => {
                if let Err(e) = modules.coldplug(&log) {
                    log.line(&format!("coldplug: {e}"));
                }
                if let Err(e) = modules.load(&target_modules(&config), &log) {
                    log.line(&format!("target modules: {e}"));
                }
            }
            Err(e) => log.line(&format!(
                "no module index ({e}); relying on built-in drivers"
            )),
        }
    }

    let watchdog = match (settings.watchdog, watchdog::find()) {
        (WatchdogMode::Off, _) | (_, None) => None,
        (mode, Some(path)) => {
            let timeout = i32::try_from(settings.watchdog_timeout.as_secs())
                .expect("Settings bounds the watchdog timeout");
            match watchdog::Watchdog::start(&path, timeout, mode == WatchdogMode::Pet, &log) {
                Ok(watchdog) => Some(watchdog),
                Err(e) => {
                    log.line(&format!("watchdog {}: {e}", path.display()));
                    None
                }
            }
        }
    };

    let deadline = settings.timeout;
    let end = run_child(&["--network"], deadline, &log);
    let result = judge(&end, &log);
    match result {
        Ok(()) => {
            if let Some(watchdog) = watchdog {
                watchdog.disarm(&log);
            }
            power::finish(config.final_action, &log)
        }
        Err(()) => failure(&config, deadline, &log),
    }
}

/// Carries out `failure_action`, then (for shell and dump_to_rootfs) `final_action`.
fn failure(config: &Config, deadline: Duration, log: &Log) -> ! {
    log.line(&format!("failure action: {}", config.failure_action));
    match config.failure_action {
        Action::DumpToRootfs => {
            let end = run_child(&["--to-rootfs"], deadline, log);
            if judge(&end, log).is_err() {
                log.line("dump_to_rootfs failed too");
            }
        }
        Action::Shell => shell(log),
        Action::Reboot | Action::Halt | Action::Poweroff => {
            power::finish(config.failure_action, log)
        }
    }
    power::finish(config.final_action, log)
}

/// An interactive shell on the console, if the image has one.
fn shell(log: &Log) {
    let Some(sh) = ["/bin/sh", "/usr/bin/sh", "/bin/bash"]
        .iter()
        .find(|p| Path::new(p).exists())
    else {
        log.line("failure_action shell: this image has no shell; rebooting instead");
        return;
    };
    log.line("Entering kdump emergency mode: leave the shell to continue with the final action");
    let status = Command::new(sh)
        .arg("-i")
        .env("PS1", "kdump:$PWD# ")
        .status();
    log.line(&format!("the shell exited: {status:?}"));
}
