//! The target step: find the device, mount the filesystem or the NFS export, or connect to the
//! ssh server, as kdump.conf's target line says (the root filesystem without one).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Capture, CaptureError, MOUNT_BASE, SYSROOT};
use crate::config::{DeviceSpec, Target, cmdline_value};
use crate::output::{self, Destination};
use crate::runtime::{blockid, mounts, network, nfs};
use crate::transport::ssh::{self, SshTarget};
use crate::transport::upload::{Connection, RemoteDir};

/// Where the dump goes, once the target is ready.
pub(super) enum Ready {
    /// A directory to create the dump directory in (the mounted target plus `path`), and on an
    /// NFS export our address towards the server, which names the dump directory.
    Directory(PathBuf, Option<Ipv4Addr>),
    /// A raw device for the flattened stream.
    Device(PathBuf),
    /// An ssh server, connected, and the directory to create the dump directory in.
    Ssh(Box<Connection>, String),
}

/// The dump directory, on a mounted file system or on an ssh server.
pub(super) enum DumpDir {
    Local(PathBuf),
    Remote(RemoteDir),
}

impl DumpDir {
    pub(super) fn label(&self) -> String {
        match self {
            Self::Local(dir) => dir.display().to_string(),
            Self::Remote(dir) => dir.label(),
        }
    }

    /// Writes a small file as `<name>-incomplete`, then renames it.
    pub(super) fn put(&self, name: &str, data: &[u8]) -> Result<(), CaptureError> {
        match self {
            Self::Local(dir) => Ok(output::write_file_atomically(&dir.join(name), data)?),
            Self::Remote(dir) => Ok(dir.put(name, data)?),
        }
    }

    /// Where the engine writes the file `name`.
    pub(super) fn destination(&self, name: &str) -> Destination {
        match self {
            Self::Local(dir) => Destination::Path(dir.join(name)),
            Self::Remote(dir) => dir.destination(name),
        }
    }
}

impl Capture<'_> {
    /// Where an NFS target is mounted, if the target is one.
    pub(super) fn network_mountpoint(&self) -> Option<PathBuf> {
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
    pub(super) fn mountpoint(&self) -> Option<PathBuf> {
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

    pub(super) fn prepare_target(&self) -> Result<Ready, CaptureError> {
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
                let spec = DeviceSpec::parse(device)
                    .ok_or_else(|| CaptureError::MountDevice(device.clone()))?;
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
                )?;
                Ok(Ready::Ssh(Box::new(connection), self.config.path.clone()))
            }
        }
    }

    /// Brings the network up when this capture is the one in the capture kernel (`network`).
    fn bring_up_network(&self) -> Result<(), CaptureError> {
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
        .map_err(CaptureError::Network)
    }

    /// Mounts an NFS export after bringing the network up; returns our address towards the
    /// server.
    fn mount_nfs(
        &self,
        export: &str,
        mountpoint: &Path,
        v4_only: bool,
        options: &str,
    ) -> Result<Ipv4Addr, CaptureError> {
        self.bring_up_network()?;
        let deadline = Instant::now() + self.network_timeout;
        Ok(nfs::mount(
            export, mountpoint, v4_only, options, deadline, self.log,
        )?)
    }

    /// The ssh target of `ssh user@host`, completed from ssh_config.
    fn ssh_target(&self, destination: &str) -> Result<SshTarget, CaptureError> {
        let text = std::fs::read_to_string(&self.ssh_config).unwrap_or_default();
        let identity = ssh::identity_for(
            Path::new(&self.config.sshkey),
            destination,
            &text,
            &mut |line| self.log.line(line),
        );
        SshTarget::from_destination(destination, &text, identity).map_err(CaptureError::SshConfig)
    }

    /// Mounts `device` on `mountpoint` and logs it; the error names both.
    fn mount_logged(
        &self,
        device: &Path,
        mountpoint: &Path,
        fstype: &str,
        options: &str,
    ) -> Result<(), CaptureError> {
        let what = format!("{} ({fstype}, {options})", device.display());
        mounts::mount(device, mountpoint, fstype, options).map_err(|source| {
            CaptureError::Mount {
                what: what.clone(),
                mountpoint: mountpoint.to_owned(),
                source,
            }
        })?;
        self.log
            .line(&format!("mounted {what} on {}", mountpoint.display()));
        Ok(())
    }

    /// Waits up to the device timeout for the device `spec` names.
    fn wait_for(&self, spec: &DeviceSpec) -> Result<PathBuf, CaptureError> {
        let started = Instant::now();
        loop {
            if let Some(device) = blockid::find(spec) {
                self.log.line(&format!("{spec} is {}", device.display()));
                return Ok(device);
            }
            if started.elapsed() >= self.device_timeout {
                return Err(CaptureError::NoDevice {
                    spec: spec.to_string(),
                    seconds: self.device_timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn mount_rootfs(&self) -> Result<PathBuf, CaptureError> {
        let root = cmdline_value(&self.cmdline, "root").ok_or(CaptureError::NoRoot)?;
        let spec =
            DeviceSpec::parse(root).ok_or_else(|| CaptureError::RootNotADevice(root.to_owned()))?;
        let device = self.wait_for(&spec)?;
        let fstype = match cmdline_value(&self.cmdline, "rootfstype") {
            Some(fstype) => fstype.to_owned(),
            None => {
                let start = blockid::read_start(&device, blockid::PROBE_BYTES);
                let probed = start.as_deref().map(blockid::probe);
                probed
                    .and_then(|id| id.fstype)
                    .ok_or_else(|| CaptureError::UnknownFilesystem(device.clone()))?
                    .to_owned()
            }
        };
        mounts::mount(&device, Path::new(SYSROOT), &fstype, "defaults").map_err(|source| {
            CaptureError::Mount {
                what: format!("the root {} ({fstype})", device.display()),
                mountpoint: SYSROOT.into(),
                source,
            }
        })?;
        self.log.line(&format!(
            "mounted the first kernel's root {} ({fstype}) on {SYSROOT}",
            device.display()
        ));
        Ok(PathBuf::from(SYSROOT))
    }
}
