//! A lab scenario: one guest, one crash, the capture kernel running rkdump as `/init` with a
//! given kdump.conf, disks and devices.
//!
//! [`Scenario::prepare`] builds the two initramfs images and the disks; [`Prepared::start`]
//! boots the guest. The caller then follows the console ([`Vm::wait_for_text`]), talks to it
//! ([`Vm::send`]) and, once QEMU is gone, reads the disks ([`read_ext4_dir`],
//! [`read_mounted`]).
//!
//! The capture image is what dracut would build: rkdump as `/init`, `/etc/kdump.conf`, a
//! standard `/lib/modules/<release>` tree indexed by depmod, the hooks, and busybox only when a
//! hook needs a shell.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::build;
use crate::images::{ImageBuilder, env_file};
use crate::kernels::Kernel;
use crate::variants::Variant;
use crate::vm::{Stage, Vm, VmConfig};

const FIRST_INIT: &str = include_str!("../guest/first-init");
/// Modules the first kernel loads for its disks.
const FIRST_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4"];
/// Modules put into the capture image (those the kernel has); rkdump loads what the hardware
/// and the target need.
pub const CAPTURE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "ext4",
    "xfs",
    "i6300esb",
    "crc32c_generic",
];
/// Modules added when the guest has a NIC (as dracut adds network modules only for network
/// targets: they cost the reservation several MiB).
pub const NETWORK_MODULES: &[&str] = &["virtio_net", "nfsv4"];

/// The address at which guests reach the host's services (see [`Network`]).
pub const SERVER_ADDRESS: &str = "10.0.2.100";

/// The guest's NIC: QEMU user networking with `restrict=on`, so the guest reaches nothing but
/// the forwards — each from [`SERVER_ADDRESS`] to a service on the host's 127.0.0.1, in the
/// command form that opens one host connection per guest connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The NIC's MAC address.
    pub mac: String,
    /// The forwarded ports.
    pub forwards: Vec<Forward>,
}

/// One forward: guest connections to `SERVER_ADDRESS:guest_port` reach `127.0.0.1:host_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The port the guest connects to.
    pub guest_port: u16,
    /// The host service's port on 127.0.0.1.
    pub host_port: u16,
}

impl Network {
    /// The QEMU arguments of this NIC.
    pub fn qemu_args(&self) -> Vec<String> {
        let forwards: String = self
            .forwards
            .iter()
            .map(|f| {
                format!(
                    ",guestfwd=tcp:{SERVER_ADDRESS}:{}-cmd:busybox nc 127.0.0.1 {}",
                    f.guest_port, f.host_port
                )
            })
            .collect();
        vec![
            "-netdev".into(),
            format!("user,id=net0,restrict=on{forwards}"),
            "-device".into(),
            format!("virtio-net-pci,netdev=net0,mac={}", self.mac),
        ]
    }
}

/// A disk attached to the guest (vda, vdb, ... in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// An ext4 filesystem.
    Ext4 {
        /// Size in MiB.
        size_mib: u64,
        /// Filesystem label.
        label: String,
        /// Filesystem UUID (random when `None`).
        uuid: Option<String>,
    },
    /// An xfs filesystem.
    Xfs {
        /// Size in MiB.
        size_mib: u64,
        /// Filesystem label.
        label: String,
    },
    /// A GPT disk whose first partition holds an ext4 filesystem.
    GptExt4 {
        /// Size in MiB.
        size_mib: u64,
        /// The partition's GPT name (`PARTLABEL`).
        partlabel: String,
        /// The partition's GPT unique GUID (`PARTUUID`).
        partuuid: String,
    },
    /// Zeros (a raw target, the raw vmcore copy).
    Blank {
        /// Size in MiB.
        size_mib: u64,
    },
}

/// One run's setup.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The guest.
    pub variant: Variant,
    /// `/etc/kdump.conf` of the capture image.
    pub kdump_conf: String,
    /// Executable files added to the capture image (hooks): path and shell script.
    pub scripts: Vec<(String, String)>,
    /// Whether the capture image gets busybox (hooks need a shell).
    pub shell: bool,
    /// Disks, in order (`/dev/vda`, `/dev/vdb`, ...).
    pub disks: Vec<Disk>,
    /// Words added to the capture kernel's command line (`rkdump.*` settings).
    pub capture_cmdline: String,
    /// Further QEMU arguments (a watchdog device).
    pub qemu_args: Vec<String>,
    /// Files added to the capture image (keys, known_hosts): path, mode, contents.
    pub files: Vec<(String, u32, Vec<u8>)>,
    /// Dynamically linked host programs added to the capture image with their libraries:
    /// path in the image, host path.
    pub programs: Vec<(String, PathBuf)>,
    /// The guest's NIC, if it has one.
    pub network: Option<Network>,
    /// Let a reboot restart the guest instead of ending QEMU.
    pub allow_reboot: bool,
    /// Shell commands the first kernel runs instead of `kexec -p` (with rkdump at
    /// `/bin/rkdump`, the seccomp wrapper at `/bin/lab-seccomp`, the kernel at `/boot/vmlinuz-<release>`, the capture image at
    /// `/boot/capture.img` and the kdump.conf at `/etc/kdump.conf`); they must leave a
    /// capture kernel loaded or end the run (`poweroff -f`).
    pub first_loader: Option<String>,
    /// The first kernel's command line instead of the variant's (lockdown, no crashkernel=).
    pub first_cmdline: Option<String>,
}

/// A scenario ready to boot.
#[derive(Debug)]
pub struct Prepared {
    /// The run's directory (images, disks, serial log).
    pub dir: PathBuf,
    /// The disk images, in order.
    pub disks: Vec<PathBuf>,
    config: VmConfig,
}

impl Scenario {
    /// A scenario for `variant` with the given kdump.conf and nothing else.
    pub fn new(variant: Variant, kdump_conf: &str) -> Self {
        Self {
            variant,
            kdump_conf: kdump_conf.to_owned(),
            scripts: Vec::new(),
            shell: false,
            disks: Vec::new(),
            capture_cmdline: String::new(),
            qemu_args: Vec::new(),
            files: Vec::new(),
            programs: Vec::new(),
            network: None,
            allow_reboot: false,
            first_loader: None,
            first_cmdline: None,
        }
    }

    /// Loads the capture kernel in the first kernel with these shell commands instead of
    /// kexec-tools (see [`Scenario::first_loader`]).
    pub fn first_loader(mut self, commands: &str) -> Self {
        self.first_loader = Some(commands.to_owned());
        self
    }

    /// Adds a file to the capture image.
    pub fn file(mut self, path: &str, mode: u32, contents: &[u8]) -> Self {
        self.files.push((path.to_owned(), mode, contents.to_vec()));
        self
    }

    /// Adds a dynamically linked host program (with its libraries) to the capture image.
    pub fn program(mut self, path: &str, host: &Path) -> Self {
        self.programs.push((path.to_owned(), host.to_owned()));
        self
    }

    /// Adds a hook script (and busybox, to run it).
    pub fn script(mut self, path: &str, body: &str) -> Self {
        self.scripts
            .push((path.to_owned(), format!("#!/bin/sh\n{body}\n")));
        self.shell = true;
        self
    }

    /// Builds the images and disks in `dir` (created; emptied first).
    pub fn prepare(&self, kernel: &Kernel, dir: &Path) -> Result<Prepared> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let rkdump = build::rkdump()?;
        let workload = build::static_binary("rkdump-lab", "lab-workload")?;

        let mut capture = ImageBuilder::new();
        capture.host_file("/init", 0o755, &rkdump)?;
        capture.file("/etc/kdump.conf", 0o644, self.kdump_conf.as_bytes());
        let mut modules = CAPTURE_MODULES.to_vec();
        if self.network.is_some() {
            modules.extend(NETWORK_MODULES);
        }
        capture.module_tree(kernel, &modules)?;
        if self.shell {
            capture.busybox()?;
        }
        for (path, body) in &self.scripts {
            capture.file(path, 0o755, body.as_bytes());
        }
        for (path, mode, contents) in &self.files {
            capture.file(path, *mode, contents);
        }
        for (path, host) in &self.programs {
            capture.dynamic_binary(path, host)?;
        }
        let capture_image = capture.finish();

        let mut first = ImageBuilder::new();
        first.busybox()?;
        first.dynamic_binary("/bin/kexec", Path::new("/usr/sbin/kexec"))?;
        first.host_file("/bin/lab-workload", 0o755, &workload)?;
        first.host_file("/boot/vmlinuz", 0o644, &kernel.vmlinuz())?;
        first.file("/boot/capture.img", 0o644, &capture_image);
        if let Some(commands) = &self.first_loader {
            first.host_file("/bin/rkdump", 0o755, &rkdump)?;
            let seccomp = build::static_binary("rkdump-lab", "lab-seccomp")?;
            first.host_file("/bin/lab-seccomp", 0o755, &seccomp)?;
            first.host_file(
                &format!("/boot/vmlinuz-{}", kernel.release),
                0o644,
                &kernel.vmlinuz(),
            )?;
            first.file("/etc/kdump.conf", 0o644, self.kdump_conf.as_bytes());
            first.file(
                "/etc/lab-load.sh",
                0o644,
                format!("{commands}\n").as_bytes(),
            );
        }
        let modules = first.modules(kernel, FIRST_MODULES)?;
        first.file("/init", 0o755, FIRST_INIT.as_bytes());
        let capture_cmdline = format!(
            "{} {}",
            self.variant.capture_cmdline(),
            self.capture_cmdline
        )
        .trim()
        .to_owned();
        first.file(
            "/etc/lab.env",
            0o644,
            &env_file(&[
                ("MODULES", modules.join(" ")),
                ("CAPTURE_CMDLINE", capture_cmdline),
                ("WORKLOAD_ARGS", self.variant.workload_args()),
            ]),
        );
        let first_image = dir.join("first.img");
        std::fs::write(&first_image, first.finish())?;

        let mut disks = Vec::new();
        for (i, disk) in self.disks.iter().enumerate() {
            let path = dir.join(format!("disk{i}.img"));
            create_disk(disk, &path)?;
            disks.push(path);
        }
        let config = VmConfig {
            kernel: kernel.vmlinuz(),
            initrd: first_image,
            cmdline: self
                .first_cmdline
                .clone()
                .unwrap_or_else(|| self.variant.first_cmdline()),
            memory_mib: self.variant.memory_mib,
            cpus: self.variant.cpus,
            cpu_model: self.variant.cpu_model.map(str::to_owned),
            disks: disks.clone(),
            extra_args: self
                .qemu_args
                .iter()
                .cloned()
                .chain(self.network.iter().flat_map(Network::qemu_args))
                .collect(),
            allow_reboot: self.allow_reboot,
        };
        Ok(Prepared {
            dir: dir.to_owned(),
            disks,
            config,
        })
    }
}

impl Prepared {
    /// Boots the guest; its console goes to `serial.log` in the run's directory.
    pub fn start(&self) -> Result<Vm> {
        Vm::start(&self.config, &self.serial_log())
    }

    /// The console log.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// The console log's text so far.
    pub fn serial(&self) -> String {
        std::fs::read_to_string(self.serial_log()).unwrap_or_default()
    }
}

/// Creates the disk image `disk` describes at `path`.
pub fn create_disk(disk: &Disk, path: &Path) -> Result<()> {
    let size = match disk {
        Disk::Ext4 { size_mib, .. }
        | Disk::Xfs { size_mib, .. }
        | Disk::GptExt4 { size_mib, .. }
        | Disk::Blank { size_mib } => size_mib << 20,
    };
    std::fs::File::create(path)?.set_len(size)?;
    let mut command = match disk {
        Disk::Blank { .. } => return Ok(()),
        Disk::GptExt4 {
            size_mib,
            partlabel,
            partuuid,
        } => {
            // One partition from 1 MiB to 1 MiB before the end (room for the backup GPT).
            let script = format!(
                "label: gpt\nstart=2048, size={}, name=\"{partlabel}\", uuid={partuuid}\n",
                (size_mib - 2) * 2048
            );
            let mut sfdisk = Command::new("sfdisk")
                .arg("--quiet")
                .arg(path)
                .stdin(std::process::Stdio::piped())
                .spawn()?;
            std::io::Write::write_all(sfdisk.stdin.as_mut().expect("piped"), script.as_bytes())?;
            if !sfdisk.wait()?.success() {
                bail!("sfdisk {} failed", path.display());
            }
            let mut c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-E", "offset=1048576"])
                .arg(path)
                .arg(format!("{}M", size_mib - 2));
            let status = c.status().context("running mkfs.ext4")?;
            if !status.success() {
                bail!("{c:?} failed");
            }
            return Ok(());
        }
        Disk::Ext4 { label, uuid, .. } => {
            let mut c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-L", label]);
            if let Some(uuid) = uuid {
                c.args(["-U", uuid]);
            }
            c
        }
        Disk::Xfs { label, .. } => {
            let mut c = Command::new("mkfs.xfs");
            c.args(["-q", "-f", "-L", label]);
            c
        }
    };
    let status = command.arg(path).status().context("running mkfs")?;
    if !status.success() {
        bail!("{command:?} failed");
    }
    Ok(())
}

/// The first kernel's stages, up to the panic; every scenario goes through them.
pub fn wait_for_crash(vm: &mut Vm, on_stage: &mut dyn FnMut(&Stage)) -> Result<Vec<Stage>> {
    let mut stages = Vec::new();
    // The panic is the kernel's own message: the workload's marker before it may be split by
    // the panic's output on the console.
    for (name, pattern, limit) in [
        ("first-boot", "RKDUMP-LAB: first-boot", 180),
        ("capture-loaded", "RKDUMP-LAB: capture-loaded", 120),
        ("panic", "sysrq: Trigger a crash", 900),
    ] {
        let stage = vm.wait_for_text(name, pattern, Duration::from_secs(limit))?;
        on_stage(&stage);
        stages.push(stage);
    }
    Ok(stages)
}

/// Copies directory `path` out of an ext4 image (debugfs: no mount needed) into `into`.
pub fn read_ext4_dir(image: &Path, path: &str, into: &Path) -> Result<PathBuf> {
    read_ext4_dir_at(image, 0, path, into)
}

/// [`read_ext4_dir`] for a filesystem starting `offset` bytes into the image (a partition).
pub fn read_ext4_dir_at(image: &Path, offset: u64, path: &str, into: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(into)?;
    let device = if offset == 0 {
        image.display().to_string()
    } else {
        format!("{}?offset={offset}", image.display())
    };
    let output = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump {path} {}", into.display()))
        .arg(device)
        .output()
        .context("running debugfs")?;
    let copied = into.join(Path::new(path).file_name().unwrap_or_default());
    if !output.status.success() || !copied.is_dir() {
        bail!(
            "debugfs could not copy {path} out of {}: {}",
            image.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(copied)
}

/// Mounts a filesystem image read-only on the host (loop device), copies directory `path` out
/// into `into`, unmounts.
pub fn read_mounted(image: &Path, path: &str, into: &Path) -> Result<PathBuf> {
    let mountpoint = tempfile::tempdir()?;
    // norecovery: a filesystem left with a dirty log still mounts read-only.
    let options = if is_xfs(image) {
        "loop,ro,norecovery"
    } else {
        "loop,ro"
    };
    let status = Command::new("mount")
        .args(["-o", options])
        .arg(image)
        .arg(mountpoint.path())
        .status()?;
    if !status.success() {
        bail!("mounting {} failed", image.display());
    }
    std::fs::create_dir_all(into)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(mountpoint.path().join(path.trim_start_matches('/')))
        .arg(into)
        .status();
    let _ = Command::new("umount").arg(mountpoint.path()).status();
    if !status?.success() {
        bail!("copying {path} out of {} failed", image.display());
    }
    Ok(into.join(Path::new(path).file_name().unwrap_or_default()))
}

fn is_xfs(image: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(image)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"XFSB"
}

/// The one dump directory (`127.0.0.1-<date>`) inside `base`.
pub fn dump_dir(base: &Path) -> Result<PathBuf> {
    let entries: Vec<PathBuf> = std::fs::read_dir(base)?
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    match entries.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{} holds {} entries, not one dump directory: {entries:?}",
            base.display(),
            entries.len()
        ),
    }
}
