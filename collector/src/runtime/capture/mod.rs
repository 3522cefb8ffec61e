//! The capture steps, in kdump-utils' order: find and mount the target ([`target`]), pre
//! hooks, the kernel log (`vmcore-dmesg.txt`, first, so that it survives a failed dump), the
//! dump ([`collector`]: `vmcore-incomplete`, renamed to `vmcore` after fsync), post hooks with
//! the dump's status, and the capture log (`kexec-dmesg.log`).
//!
//! PID 1 runs these steps in a child process (`rkdump capture`); the same steps can be run by
//! hand on a saved vmcore with `--target-dir`, which skips finding and mounting the target.

mod collector;
mod target;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use target::{DumpDir, Ready};

use super::hooks;
use super::log::Log;
use super::{kernel, mounts, network, nfs};
use crate::config::Config;
use crate::format::time::UtcTime;
use crate::transport::upload::RemoteDir;

/// Where targets are mounted in the capture kernel (kdump-utils' `/kdumproot`).
pub const MOUNT_BASE: &str = "/kdumproot";
/// Where the first kernel's root filesystem is mounted (`dump_to_rootfs`, no target).
pub const SYSROOT: &str = "/sysroot";

/// Exit status of `rkdump capture` when `kdump_pre` failed and no dump was taken (PID 1 then
/// goes to the final action, as kdump-utils does, not to the failure action).
pub const EXIT_PRE_HOOK_FAILED: u8 = 10;

/// Why a capture step failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The target's block device did not appear.
    #[error("no block device {spec} appeared within {seconds} s")]
    NoDevice {
        /// The device as kdump.conf names it.
        spec: String,
        /// How long we waited.
        seconds: u64,
    },
    /// A filesystem could not be mounted.
    #[error("mounting {what} on {}: {source}", .mountpoint.display())]
    Mount {
        /// The device, its type and options.
        what: String,
        /// Where.
        mountpoint: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel command line names no root (`dump_to_rootfs`, no target line).
    #[error("the kernel command line has no root=: the first kernel's root is unknown")]
    NoRoot,
    /// `root=` names no device.
    #[error("root={0} is not a device")]
    RootNotADevice(String),
    /// The root device's filesystem cannot be told (no `rootfstype=`, nothing recognised).
    #[error("cannot tell the filesystem of {}", .0.display())]
    UnknownFilesystem(PathBuf),
    /// A `--mount` device is neither a path nor `NAME=value`.
    #[error("--mount device {0:?} is not a path or NAME=value")]
    MountDevice(String),
    /// The network did not come up.
    #[error("network: {0}")]
    Network(#[from] network::Error),
    /// The NFS export could not be mounted.
    #[error(transparent)]
    Nfs(#[from] nfs::Error),
    /// The ssh target is misconfigured.
    #[error("{0}")]
    SshConfig(String),
    /// The ssh server could not be used.
    #[error(transparent)]
    Ssh(#[from] crate::transport::upload::UploadError),
    /// A file could not be written to the dump directory.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// The dead kernel's log could not be read.
    #[error(transparent)]
    Dmesg(#[from] crate::dmesg::DmesgError),
    /// The dump directory could not be created on a mounted target.
    #[error("creating {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The dump directory could not be created on the ssh server.
    #[error("creating {path}: {source}")]
    CreateRemoteDir {
        /// The directory.
        path: String,
        /// Why.
        source: crate::transport::upload::UploadError,
    },
    /// kdump.conf's `core_collector` cannot be carried out.
    #[error("{0}")]
    Collector(String),
    /// The dump failed; what was written is kept, marked incomplete.
    #[error(transparent)]
    Save(#[from] crate::dump::SaveError),
    /// The unfiltered copy (`core_collector cp`) failed.
    #[error(transparent)]
    Copy(#[from] collector::CopyError),
}

impl CaptureError {
    /// Whether writing to the target failed (rather than reading the vmcore or the
    /// configuration): on an NFS export, the server is then taken for gone.
    fn is_write_failure(&self) -> bool {
        matches!(
            self,
            Self::Save(crate::dump::SaveError::Output { .. }) | Self::Copy(_)
        )
    }
}

/// How the capture ended; also the worker's exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The dump (or the raw stream) was written completely.
    Saved,
    /// `kdump_pre` failed: no dump was taken (kdump-utils goes to the final action).
    PreHookFailed,
    /// The capture failed in `step`.
    Failed {
        /// The step that failed.
        step: &'static str,
        /// Why.
        error: String,
    },
}

impl Outcome {
    /// The exit status of `rkdump capture` for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Saved => 0,
            Self::Failed { .. } => 1,
            Self::PreHookFailed => EXIT_PRE_HOOK_FAILED,
        }
    }
}

/// Everything one capture needs.
#[derive(Debug)]
pub struct Capture<'a> {
    /// The parsed kdump.conf.
    pub config: &'a Config,
    /// The vmcore (`/proc/vmcore`).
    pub vmcore: PathBuf,
    /// The log.
    pub log: &'a Log,
    /// An already-mounted directory to use as the target's root (skips finding and mounting).
    pub target_dir: Option<PathBuf>,
    /// Use the first kernel's root filesystem whatever the configured target (`dump_to_rootfs`).
    pub to_rootfs: bool,
    /// The kernel command line (for `root=` and `ip=`).
    pub cmdline: String,
    /// How long to wait for the target device.
    pub device_timeout: Duration,
    /// Time limit of each hook.
    pub hook_timeout: Duration,
    /// An NFS dump writing nothing this long is abandoned (`None`: never).
    pub stall_timeout: Option<Duration>,
    /// The address naming the dump directory (`127.0.0.1` for local targets).
    pub host_ip: String,
    /// Directory of the pre hooks (`/etc/kdump/pre.d`).
    pub pre_dir: PathBuf,
    /// Directory of the post hooks (`/etc/kdump/post.d`).
    pub post_dir: PathBuf,
    /// The ssh client configuration (`/etc/ssh/ssh_config`), for the ssh target's port, user,
    /// key and known_hosts files.
    pub ssh_config: PathBuf,
    /// How long to keep trying to reach a network target.
    pub network_timeout: Duration,
    /// Bring the network up (from the kernel command line) before a network target.
    pub network: bool,
}

fn step_failed(step: &'static str, error: impl std::fmt::Display) -> Outcome {
    Outcome::Failed {
        step,
        error: error.to_string(),
    }
}

impl Capture<'_> {
    /// Runs every step and reports how it ended.
    pub fn run(&self) -> Outcome {
        let ready = {
            let _step = self.log.step("target");
            match self.prepare_target() {
                Ok(ready) => ready,
                Err(error) => {
                    self.log.line(&format!("target: {error}"));
                    return step_failed("target", error);
                }
            }
        };
        let (dir, device) = match self.dump_dir(ready) {
            Ok(found) => found,
            Err(error) => return step_failed("target", error),
        };
        if let Some(dir) = &dir {
            self.log.line(&format!("dump directory: {}", dir.label()));
        }

        if !hooks::run_pre(self.config, &self.pre_dir, self.hook_timeout, self.log) {
            return Outcome::PreHookFailed;
        }
        if let Some(dir) = &dir {
            let _step = self.log.step("vmcore-dmesg.txt");
            let saved = crate::dmesg::extract_path(&self.vmcore)
                .map_err(CaptureError::from)
                .and_then(|text| dir.put("vmcore-dmesg.txt", &text));
            if let Err(e) = saved {
                // As kdump-utils: a missing log does not stop the dump.
                self.log.line(&format!("vmcore-dmesg.txt: {e}"));
            }
        }
        let dumped = {
            let _step = self.log.step("dump");
            self.dump(device.as_deref(), dir.as_ref())
        };
        self.log
            .line(&format!("after the dump: {}", kernel::memory()));
        let status = i32::from(dumped.is_err());
        hooks::run_post(
            self.config,
            &self.post_dir,
            status,
            self.hook_timeout,
            self.log,
        );
        if let (Err(failed), Some(mountpoint)) = (&dumped, self.network_mountpoint())
            && failed.is_write_failure()
        {
            // A soft NFS mount fails writes after its timeouts, but every further write, the
            // log's included, and sync(2) would wait for a dead server again: abort what is
            // pending and leave the export alone. The log stays on the console.
            self.log.line(&format!(
                "the NFS server stopped taking data: forcing {} off; the capture log is not \
                 saved there",
                mountpoint.display()
            ));
            mounts::force_unmount(&mountpoint, self.log);
            if self.network {
                network::take_links_down(self.log);
            }
            return step_failed("dump", failed);
        }
        if let Some(dir) = &dir {
            self.save_log(dir);
            if let DumpDir::Remote(remote) = dir {
                match remote.finish() {
                    Ok(()) => self.log.line(&format!(
                        "manifest written; the connection was re-established {} time(s)",
                        remote.reconnects()
                    )),
                    Err(e) => self.log.line(&format!("manifest: {e}")),
                }
            }
        }
        nix::unistd::sync();
        if let Some(mountpoint) = self.mountpoint() {
            mounts::unmount(&mountpoint, self.log);
        }
        match dumped {
            Ok(()) => Outcome::Saved,
            Err(failed) => step_failed("dump", failed),
        }
    }

    /// Creates the dump directory `<address>-<date>` on a ready target, or hands on its raw
    /// device.
    fn dump_dir(&self, ready: Ready) -> Result<(Option<DumpDir>, Option<PathBuf>), CaptureError> {
        let stamp = UtcTime::from_unix(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs().cast_signed()),
        )
        .dump_dir_stamp();
        match ready {
            Ready::Directory(base, address) => {
                let ip = address.map_or_else(|| self.host_ip.clone(), |ip| ip.to_string());
                let dir = base.join(format!("{ip}-{stamp}"));
                std::fs::create_dir_all(&dir).map_err(|source| CaptureError::CreateDir {
                    path: dir.clone(),
                    source,
                })?;
                Ok((Some(DumpDir::Local(dir)), None))
            }
            Ready::Ssh(connection, base) => {
                // As kdump-utils: named after this machine's address on the route to the server.
                let ip = connection
                    .local_address()
                    .map_or_else(|| self.host_ip.clone(), |ip| ip.to_string());
                let path = format!("{}/{ip}-{stamp}", base.trim_end_matches('/'));
                match RemoteDir::create(*connection, &path) {
                    Ok(dir) => Ok((Some(DumpDir::Remote(dir)), None)),
                    Err(source) => Err(CaptureError::CreateRemoteDir { path, source }),
                }
            }
            Ready::Device(device) => {
                self.log.line(&format!(
                    "raw target {}: the flattened stream goes to the device",
                    device.display()
                ));
                Ok((None, Some(device)))
            }
        }
    }

    /// Runs the dump with the NFS stall guard beside it when the target is an NFS export.
    fn guarded<T: Send>(&self, dump: impl FnOnce() -> T) -> T {
        let finished = AtomicBool::new(false);
        std::thread::scope(|scope| {
            if let (Some(mountpoint), Some(limit)) = (self.network_mountpoint(), self.stall_timeout)
            {
                let finished = &finished;
                let log = self.log;
                scope.spawn(move || nfs::guard_against_stalls(&mountpoint, limit, finished, log));
            }
            let result = dump();
            finished.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        })
    }

    fn save_log(&self, dir: &DumpDir) {
        let mut text = self
            .log
            .path()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        text.push_str("\n--- kernel log of the capture kernel ---\n");
        text.push_str(&crate::kmsg::kernel_log());
        if let Err(e) = dir.put("kexec-dmesg.log", text.as_bytes()) {
            self.log.line(&format!("kexec-dmesg.log: {e}"));
        }
    }
}

#[cfg(test)]
mod tests;
