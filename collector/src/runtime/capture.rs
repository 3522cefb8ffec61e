//! The capture steps, in kdump-utils' order: find and mount the target, pre hooks, the kernel
//! log (`vmcore-dmesg.txt`, first, so that it survives a failed dump), the dump
//! (`vmcore-incomplete`, renamed to `vmcore` after fsync), post hooks with the dump's status,
//! and the capture log (`kexec-dmesg.log`).
//!
//! PID 1 runs these steps in a child process (`rkdump capture`); the same steps can be run by
//! hand on a saved vmcore with `--target-dir`, which skips finding and mounting the target.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::blockid;
use super::config::{Config, DeviceSpec, Target};
use super::hooks::{self, HookResult};
use super::log::Log;
use super::{network, nfs, system};
use crate::dump::{self, Destination, SaveError};
use crate::format::time::UtcTime;
use crate::transport::ssh::{self, SshTarget};
use crate::transport::upload::{Connection, RemoteDir};

/// Where targets are mounted in the capture kernel (kdump-utils' `/kdumproot`).
pub const MOUNT_BASE: &str = "/kdumproot";
/// Where the first kernel's root filesystem is mounted (`dump_to_rootfs`, no target).
pub const SYSROOT: &str = "/sysroot";

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
            Self::PreHookFailed => 10,
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
    /// The kernel command line (for `root=`).
    pub cmdline: String,
    /// How long to wait for the target device.
    pub device_timeout: Duration,
    /// Time limit of each hook.
    pub hook_timeout: Duration,
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

/// Where the dump goes, once the target is ready.
enum Ready {
    /// A directory to create the dump directory in (the mounted target plus `path`), and on an
    /// NFS export our address towards the server, which names the dump directory.
    Directory(PathBuf, Option<Ipv4Addr>),
    /// A raw device for the flattened stream.
    Device(PathBuf),
    /// An ssh server, connected, and the directory to create the dump directory in.
    Ssh(Box<Connection>, String),
}

/// The dump directory, on a mounted file system or on an ssh server.
enum DumpDir {
    Local(PathBuf),
    Remote(RemoteDir),
}

impl DumpDir {
    fn label(&self) -> String {
        match self {
            Self::Local(dir) => dir.display().to_string(),
            Self::Remote(dir) => dir.label(),
        }
    }

    /// Writes a small file as `<name>-incomplete`, then renames it.
    fn put(&self, name: &str, data: &[u8]) -> Result<(), String> {
        match self {
            Self::Local(dir) => {
                dump::write_file_atomically(&dir.join(name), data).map_err(|e| e.to_string())
            }
            Self::Remote(dir) => dir.put(name, data).map_err(|e| e.to_string()),
        }
    }

    /// Where the engine writes the file `name`.
    fn destination(&self, name: &str) -> Destination {
        match self {
            Self::Local(dir) => Destination::Path(dir.join(name)),
            Self::Remote(dir) => dir.destination(name),
        }
    }
}

/// Why the dump step failed.
#[derive(Debug)]
struct DumpFailed {
    /// The one-line error.
    message: String,
    /// Whether writing to the target failed (rather than reading or the configuration).
    writing: bool,
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
        let stamp = UtcTime::from_unix(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs().cast_signed()),
        )
        .dump_dir_stamp();
        let (dir, device) = match ready {
            Ready::Directory(base, address) => {
                let ip = address.map_or_else(|| self.host_ip.clone(), |ip| ip.to_string());
                let dir = base.join(format!("{ip}-{stamp}"));
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    return step_failed("target", format!("creating {}: {e}", dir.display()));
                }
                (Some(DumpDir::Local(dir)), None)
            }
            Ready::Ssh(connection, base) => {
                // As kdump-utils: named after this machine's address on the route to the server.
                let ip = connection
                    .local_address()
                    .map_or_else(|| self.host_ip.clone(), |ip| ip.to_string());
                let path = format!("{}/{ip}-{stamp}", base.trim_end_matches('/'));
                match RemoteDir::create(*connection, &path) {
                    Ok(dir) => (Some(DumpDir::Remote(dir)), None),
                    Err(e) => return step_failed("target", format!("creating {path}: {e}")),
                }
            }
            Ready::Device(device) => {
                self.log.line(&format!(
                    "raw target {}: the flattened stream goes to the device",
                    device.display()
                ));
                (None, Some(device))
            }
        };
        if let Some(dir) = &dir {
            self.log.line(&format!("dump directory: {}", dir.label()));
        }

        if !self.pre_hooks() {
            return Outcome::PreHookFailed;
        }
        if let Some(dir) = &dir {
            let _step = self.log.step("vmcore-dmesg.txt");
            match crate::dmesg::extract_path(&self.vmcore)
                .map_err(|e| e.to_string())
                .and_then(|text| dir.put("vmcore-dmesg.txt", &text))
            {
                Ok(()) => {}
                // As kdump-utils: a missing log does not stop the dump.
                Err(e) => self.log.line(&format!("vmcore-dmesg.txt: {e}")),
            }
        }
        let dumped = {
            let _step = self.log.step("dump");
            self.dump(device.as_deref(), dir.as_ref())
        };
        self.log
            .line(&format!("after the dump: {}", system::memory()));
        let status = match &dumped {
            Ok(()) => 0,
            Err(_) => 1,
        };
        self.post_hooks(status);
        if let (Err(failed), Some(mountpoint)) = (&dumped, self.network_mountpoint())
            && failed.writing
        {
            // A soft NFS mount fails writes after its timeouts, but every further write, the
            // log's included, and sync(2) would wait for a dead server again: abort what is
            // pending and leave the export alone. The log stays on the console.
            self.log.line(&format!(
                "the NFS server stopped taking data: forcing {} off; the capture log is not \
                 saved there",
                mountpoint.display()
            ));
            system::force_unmount(&mountpoint, self.log);
            if self.network {
                network::take_links_down(self.log);
            }
            return step_failed("dump", &failed.message);
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
            system::unmount(&mountpoint, self.log);
        }
        match dumped {
            Ok(()) => Outcome::Saved,
            Err(failed) => step_failed("dump", failed.message),
        }
    }

    /// Watches a dump to an NFS export: when this process wrote nothing for
    /// `rkdump.stall_timeout=` seconds (default 120, 0 turns the guard off; `wchar` of /proc/self/io, which counts
    /// every byte handed to write(2)), the server is taken for dead and its pending requests
    /// are aborted (`umount -f`), which fails the write or sync the dump is blocked in (a soft
    /// mount alone can take many minutes to give up while it keeps reconnecting).
    fn guard_against_stalls(&self, mountpoint: &Path, finished: &AtomicBool) {
        let limit = Duration::from_secs(
            system::cmdline_value(&self.cmdline, "rkdump.stall_timeout")
                .and_then(|v| v.parse().ok())
                .unwrap_or(120),
        );
        if limit.is_zero() {
            return;
        }
        let mut written = system::bytes_written();
        let mut since = Instant::now();
        while !finished.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let now = system::bytes_written();
            if now != written {
                written = now;
                since = Instant::now();
            } else if since.elapsed() >= limit {
                self.log.line(&format!(
                    "dump: nothing written for {} s: the NFS server is not answering; aborting \
                     its requests on {}",
                    since.elapsed().as_secs(),
                    mountpoint.display()
                ));
                // Every round aborts the requests pending then; write-back issues new ones
                // until the dump gives up.
                let aborting = Instant::now();
                while !finished.load(Ordering::Relaxed) {
                    system::abort_nfs_requests(mountpoint);
                    std::thread::sleep(Duration::from_secs(2));
                    if aborting.elapsed() >= limit {
                        // Last resort: PID 1 sees the capture fail and runs the failure action;
                        // a fatal signal ends even a task waiting for the server.
                        self.log.line(
                            "dump: still blocked on the NFS server; ending the capture (no post \
                             hooks)",
                        );
                        #[allow(clippy::exit, reason = "the dump thread cannot be unblocked")]
                        std::process::exit(1);
                    }
                }
                return;
            }
        }
    }

    /// Where an NFS target is mounted, if the target is one.
    fn network_mountpoint(&self) -> Option<PathBuf> {
        let network = match &self.config.target {
            Target::Nfs { .. } => true,
            Target::Mount { fstype, .. } => fstype.starts_with("nfs"),
            _ => false,
        };
        if network && self.target_dir.is_none() && !self.to_rootfs {
            self.mountpoint()
        } else {
            None
        }
    }

    /// Where `prepare_target` mounts the target (nothing for `--target-dir` and raw devices).
    fn mountpoint(&self) -> Option<PathBuf> {
        if self.target_dir.is_some() {
            return None;
        }
        if self.to_rootfs {
            return Some(PathBuf::from(SYSROOT));
        }
        match &self.config.target {
            Target::RootFs => Some(PathBuf::from(SYSROOT)),
            Target::Filesystem { .. } => Some(PathBuf::from(MOUNT_BASE)),
            Target::Mount { mountpoint, .. } => {
                Some(Path::new(MOUNT_BASE).join(mountpoint.trim_start_matches('/')))
            }
            Target::Nfs { .. } => Some(PathBuf::from(MOUNT_BASE)),
            Target::Raw(_) | Target::Ssh(_) => None,
        }
    }

    fn prepare_target(&self) -> Result<Ready, String> {
        let path = self.config.path.trim_start_matches('/');
        if let Some(dir) = &self.target_dir {
            return Ok(Ready::Directory(dir.join(path), None));
        }
        if self.to_rootfs {
            return self
                .mount_rootfs()
                .map(|root| Ready::Directory(root.join(path), None));
        }
        match &self.config.target {
            Target::RootFs => self
                .mount_rootfs()
                .map(|root| Ready::Directory(root.join(path), None)),
            Target::Filesystem { fstype, device } => {
                let device = self.wait_for(device)?;
                let mountpoint = Path::new(MOUNT_BASE);
                self.mount_logged(&device, mountpoint, fstype, "defaults")?;
                Ok(Ready::Directory(mountpoint.join(path), None))
            }
            Target::Mount {
                device,
                mountpoint,
                fstype,
                options,
            } => {
                let target = Path::new(MOUNT_BASE).join(mountpoint.trim_start_matches('/'));
                if fstype.starts_with("nfs") {
                    let ip = self.mount_nfs(device, &target, fstype == "nfs4", options)?;
                    return Ok(Ready::Directory(target.join(path), Some(ip)));
                }
                let spec = DeviceSpec::parse(device).ok_or_else(|| {
                    format!("--mount device {device:?} is not a path or NAME=value")
                })?;
                let device = self.wait_for(&spec)?;
                self.mount_logged(&device, &target, fstype, options)?;
                Ok(Ready::Directory(target.join(path), None))
            }
            Target::Raw(spec) => self.wait_for(spec).map(Ready::Device),
            Target::Nfs { export, v4 } => {
                let mountpoint = Path::new(MOUNT_BASE);
                let ip = self.mount_nfs(export, mountpoint, *v4, "")?;
                Ok(Ready::Directory(mountpoint.join(path), Some(ip)))
            }
            Target::Ssh(destination) => {
                self.bring_up_network()?;
                let target = self.ssh_target(destination)?;
                self.log.line(&format!(
                    "ssh target {} with key {}",
                    target.label(),
                    target.identity.display()
                ));
                let log = Arc::new(self.log.duplicate());
                let connection = Connection::open(
                    target,
                    self.network_timeout,
                    Arc::new(move |message: &str| log.line(message)),
                )
                .map_err(|e| e.to_string())?;
                Ok(Ready::Ssh(Box::new(connection), self.config.path.clone()))
            }
        }
    }

    /// Brings the network up when this capture is the one in the capture kernel (`network`).
    fn bring_up_network(&self) -> Result<(), String> {
        if !self.network {
            return Ok(());
        }
        let _step = self.log.step("network");
        network::bring_up(
            &self.cmdline,
            Instant::now() + self.network_timeout,
            self.log,
        )
        .map(|_| ())
        .map_err(|e| format!("network: {e}"))
    }

    /// Mounts an NFS export after bringing the network up; returns our address towards the
    /// server.
    fn mount_nfs(
        &self,
        export: &str,
        mountpoint: &Path,
        v4_only: bool,
        options: &str,
    ) -> Result<Ipv4Addr, String> {
        self.bring_up_network()?;
        let deadline = Instant::now() + self.network_timeout;
        nfs::mount(export, mountpoint, v4_only, options, deadline, self.log)
            .map_err(|e| e.to_string())
    }

    /// The ssh target of `ssh user@host`, completed from ssh_config.
    fn ssh_target(&self, destination: &str) -> Result<SshTarget, String> {
        let text = std::fs::read_to_string(&self.ssh_config).unwrap_or_default();
        let identity = ssh::identity_for(
            Path::new(&self.config.sshkey),
            destination,
            &text,
            &mut |line| self.log.line(line),
        );
        SshTarget::from_destination(destination, &text, identity)
    }

    /// Mounts `device` on `mountpoint` and logs it; the error names both.
    fn mount_logged(
        &self,
        device: &Path,
        mountpoint: &Path,
        fstype: &str,
        options: &str,
    ) -> Result<(), String> {
        let what = format!("{} ({fstype}, {options})", device.display());
        system::mount(device, mountpoint, fstype, options)
            .map_err(|e| format!("mounting {what} on {}: {e}", mountpoint.display()))?;
        self.log
            .line(&format!("mounted {what} on {}", mountpoint.display()));
        Ok(())
    }

    /// Waits up to the device timeout for the device `spec` names.
    fn wait_for(&self, spec: &DeviceSpec) -> Result<PathBuf, String> {
        let started = Instant::now();
        loop {
            if let Some(device) = blockid::find(spec) {
                self.log.line(&format!("{spec} is {}", device.display()));
                return Ok(device);
            }
            if started.elapsed() >= self.device_timeout {
                return Err(format!(
                    "no block device {spec} appeared within {} s",
                    self.device_timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn mount_rootfs(&self) -> Result<PathBuf, String> {
        let root = system::cmdline_value(&self.cmdline, "root")
            .ok_or("the kernel command line has no root=: the first kernel's root is unknown")?;
        let spec = DeviceSpec::parse(root).ok_or_else(|| format!("root={root} is not a device"))?;
        let device = self.wait_for(&spec)?;
        let fstype = match system::cmdline_value(&self.cmdline, "rootfstype") {
            Some(fstype) => fstype.to_owned(),
            None => {
                let start = blockid::read_start(&device, blockid::PROBE_BYTES);
                let probed = start.as_deref().map(blockid::probe);
                probed
                    .and_then(|id| id.fstype)
                    .ok_or_else(|| format!("cannot tell the filesystem of {}", device.display()))?
                    .to_owned()
            }
        };
        system::mount(&device, Path::new(SYSROOT), &fstype, "defaults").map_err(|e| {
            format!(
                "mounting the root {} ({fstype}) on {SYSROOT}: {e}",
                device.display()
            )
        })?;
        self.log.line(&format!(
            "mounted the first kernel's root {} ({fstype}) on {SYSROOT}",
            device.display()
        ));
        Ok(PathBuf::from(SYSROOT))
    }

    /// `kdump_pre` then `pre.d`; false if `kdump_pre` failed.
    fn pre_hooks(&self) -> bool {
        if let Some(command) = &self.config.kdump_pre {
            let _step = self.log.step("kdump_pre");
            let result = hooks::run(command, &[], self.hook_timeout, self.log);
            if !result.success() {
                self.log.line(&format!(
                    "kdump_pre {command}: {result:?}; no dump is taken"
                ));
                return false;
            }
        }
        for hook in hooks::directory(&self.pre_dir) {
            let _step = self.log.step(&format!("pre hook {}", hook.display()));
            let result = hooks::run(
                &hook.display().to_string(),
                &[],
                self.hook_timeout,
                self.log,
            );
            if !result.success() {
                self.log
                    .line(&format!("pre hook {}: {result:?}", hook.display()));
            }
        }
        true
    }

    /// `post.d` then `kdump_post`, with the dump's status as `$1`.
    fn post_hooks(&self, status: i32) {
        let args = [status.to_string()];
        let mut commands: Vec<String> = hooks::directory(&self.post_dir)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        commands.extend(self.config.kdump_post.clone());
        for command in commands {
            let _step = self.log.step(&format!("post hook {command}"));
            let result: HookResult = hooks::run(&command, &args, self.hook_timeout, self.log);
            if !result.success() {
                self.log.line(&format!("post hook {command}: {result:?}"));
            }
        }
    }

    fn dump(&self, device: Option<&Path>, dir: Option<&DumpDir>) -> Result<(), DumpFailed> {
        let words: Vec<String> = self
            .config
            .core_collector
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let Some((program, options)) = words.split_first() else {
            return Err(DumpFailed {
                message: "core_collector is empty".into(),
                writing: false,
            });
        };
        let program_name = program.rsplit('/').next().unwrap_or(program);
        let vmcore = self.vmcore.display().to_string();
        let (destination, flattened) = match (device, dir) {
            (Some(device), _) => (Destination::Path(device.to_owned()), true),
            // kdump-utils' ssh form (its ssh targets require -F): vmcore.flat through dd.
            (None, Some(DumpDir::Remote(remote)))
                if program_name == "makedumpfile" && options.iter().any(|o| o == "-F") =>
            {
                self.log.line(
                    "core_collector has -F: vmcore.flat piped to dd on the server, as \
                     kdump-utils does (drop -F for a seekable vmcore written over SFTP, which \
                     resumes after a dropped connection)",
                );
                (remote.stream_destination("vmcore.flat"), true)
            }
            (None, Some(dir)) => (dir.destination("vmcore"), false),
            (None, None) => unreachable!("every target has a device or a dump directory"),
        };
        match program_name {
            "makedumpfile" => {
                // As kdump-utils: -F is dropped for file targets and added for raw devices and
                // ssh streams.
                let mut options: Vec<String> = options
                    .iter()
                    .filter(|o| o.as_str() != "-F")
                    .cloned()
                    .collect();
                if flattened {
                    options.push("-F".into());
                }
                let (mut save, _, notes) = crate::cli::save::collector_options(
                    &options, &vmcore, "vmcore",
                )
                .map_err(|e| DumpFailed {
                    message: format!(
                        "core_collector (line {}): {e}",
                        self.config.core_collector_line
                    ),
                    writing: false,
                })?;
                for note in notes {
                    self.log.line(&format!("core_collector: {note}"));
                }
                save.destination = destination;
                self.log.line(&format!(
                    "dump level {}, {} worker thread(s), {}",
                    save.level.bits(),
                    save.threads,
                    if flattened {
                        "flattened stream"
                    } else {
                        "kdump-compressed file"
                    }
                ));
                let mut last = Instant::now();
                let finished = AtomicBool::new(false);
                let result = std::thread::scope(|scope| {
                    if let Some(mountpoint) = self.network_mountpoint() {
                        let finished = &finished;
                        scope.spawn(move || self.guard_against_stalls(&mountpoint, finished));
                    }
                    let result = dump::save(&save, &mut |p| {
                        if last.elapsed() >= Duration::from_secs(5) {
                            last = Instant::now();
                            self.log
                                .line(&format!("dump: {} of {} pages", p.done, p.total));
                        }
                    });
                    finished.store(true, Ordering::Relaxed);
                    result
                });
                match result {
                    Ok(summary) => {
                        for warning in &summary.warnings {
                            self.log.line(&format!("dump: warning: {warning}"));
                        }
                        self.log
                            .line(&format!("dump summary: {}", summary.to_json_line()));
                        self.log.line(&format!(
                            "dump: {} bytes, {} of {} pages in {:.1} s",
                            summary.bytes_written,
                            summary.dumped_pages,
                            summary.original_pages(),
                            summary.seconds
                        ));
                        Ok(())
                    }
                    Err(error) => {
                        let message = error.to_string();
                        self.log.line(&format!("dump: {message}"));
                        if let SaveError::Output { source, .. } = &error
                            && source.is_no_space()
                        {
                            self.log.line("dump: the target is full; vmcore-incomplete and vmcore-dmesg.txt are kept");
                        }
                        let writing = matches!(error, SaveError::Output { .. });
                        Err(DumpFailed { message, writing })
                    }
                }
            }
            "cp" | "cat" | "scp" if !flattened => {
                copy_file(&self.vmcore, &destination).map_err(|e| DumpFailed {
                    message: e.to_string(),
                    writing: true,
                })
            }
            other => Err(DumpFailed {
                message: format!(
                    "core_collector (line {}): {other} is not supported (makedumpfile, cp, cat or scp)",
                    self.config.core_collector_line
                ),
                writing: false,
            }),
        }
    }

    fn save_log(&self, dir: &DumpDir) {
        let mut text = self
            .log
            .path()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        text.push_str("\n--- kernel log of the capture kernel ---\n");
        text.push_str(&system::kernel_log());
        if let Err(e) = dir.put("kexec-dmesg.log", text.as_bytes()) {
            self.log.line(&format!("kexec-dmesg.log: {e}"));
        }
    }
}

/// `core_collector cp` (and `scp` on an ssh target): an unfiltered copy of the vmcore, still
/// written as `-incomplete` and renamed.
fn copy_file(source: &Path, destination: &Destination) -> Result<(), String> {
    let options = dump::SaveOptions {
        vmcore: source.to_owned(),
        destination: destination.clone(),
        format: dump::Format::Elf,
        flattened: false,
        lz4: false,
        codec: crate::pipeline::Codec::None,
        level: crate::filter::DumpLevel::new(0).expect("0 is a dump level"),
        threads: 1,
        access: crate::vmcore::window::Access::Pread,
        cycle_pfns: dump::DEFAULT_CYCLE_PFNS,
        overwrite: false,
    };
    let mut opened = dump::open_destination(&options).map_err(|e| e.to_string())?;
    let mut input =
        std::fs::File::open(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = std::io::Read::read(&mut input, &mut buffer)
            .map_err(|e| format!("{}: {e}", source.display()))?;
        if n == 0 {
            break;
        }
        opened
            .sink
            .write_at(offset, &buffer[..n])
            .map_err(|e| e.to_string())?;
        offset += n as u64;
    }
    opened.sink.finish().map_err(|e| e.to_string())?;
    if let Some((temporary, target)) = &opened.rename {
        dump::finalize(temporary, target).map_err(|e| e.to_string())?;
    }
    Ok(())
}
