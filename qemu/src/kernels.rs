//! The Debian kernels the lab boots, fetched once into the cache by `qemu/fetch-kernel`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use rkdump::kmod::ModuleIndex;

use crate::build::workspace_root;

/// A Debian kernel flavour, named by the meta package that tracks its newest build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `linux-image-amd64`: Debian 12's generic 6.1 kernel (the lab's default; crash reads it).
    Generic61,
    /// `linux-image-cloud-amd64`: the 6.1 cloud kernel (virtio as modules, ext4 built in).
    Cloud61,
    /// `linux-image-6.12-amd64`: the 6.12 kernel (new page-type encoding; crash 8.0.2 cannot read it).
    Generic612,
}

impl Flavor {
    /// The Debian meta package.
    pub fn meta_package(self) -> &'static str {
        match self {
            Self::Generic61 => "linux-image-amd64",
            Self::Cloud61 => "linux-image-cloud-amd64",
            Self::Generic612 => "linux-image-6.12-amd64",
        }
    }
}

/// A fetched kernel: image, debug vmlinux, System.map and modules tree.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Which flavour this is.
    pub flavor: Flavor,
    /// The cache directory holding its files.
    pub dir: PathBuf,
    /// `uname -r` of the kernel.
    pub release: String,
}

impl Kernel {
    /// Fetches the kernel (or finds it in the cache).
    pub fn fetch(flavor: Flavor) -> Result<Self> {
        let script = workspace_root().join("qemu/fetch-kernel");
        let output = Command::new(&script)
            .arg(flavor.meta_package())
            .env("RKDUMP_CACHE", crate::cache::root())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "fetch-kernel {} failed: {}",
                flavor.meta_package(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let dir = PathBuf::from(String::from_utf8(output.stdout)?.trim());
        let release = std::fs::read_to_string(dir.join("release"))
            .with_context(|| format!("reading {}/release", dir.display()))?
            .trim()
            .to_owned();
        Ok(Self {
            flavor,
            dir,
            release,
        })
    }

    /// The bootable image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The debug vmlinux from the `-dbg` package (for crash and drgn).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// The Debian image package (`linux-image-<release>_<version>_amd64.deb`, not the `-dbg`)
    /// that fetch-kernel downloaded and kept, which the installed Debian guest installs.
    pub fn image_deb(&self) -> Result<PathBuf> {
        let mut debs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("linux-image-") && name.ends_with(".deb") && !name.contains("-dbg_")
            {
                debs.push(self.dir.join(name));
            }
        }
        match debs.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!(
                "{} holds {} kernel image packages, not one: {debs:?} (run qemu/fetch-kernel {})",
                self.dir.display(),
                debs.len(),
                self.flavor.meta_package()
            ),
        }
    }

    /// The kernel's `.config`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// `/lib/modules/<release>` of this kernel.
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.join("lib/modules").join(&self.release)
    }

    /// Reads depmod's index of the modules.
    pub fn module_index(&self) -> Result<ModuleIndex> {
        let dir = self.modules_dir();
        let read = |name: &str| -> Result<String> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(ModuleIndex::parse(
            &read("modules.dep")?,
            &read("modules.alias")?,
            &read("modules.softdep")?,
            &read("modules.builtin")?,
        )?)
    }

    /// Whether the kernel config enables `option` (`=y`).
    pub fn config_enabled(&self, option: &str) -> Result<bool> {
        let config = std::fs::read_to_string(self.config())?;
        Ok(config.lines().any(|l| l == format!("{option}=y")))
    }
}

/// Reads a module file from `modules_dir`, decompressing `.ko.xz` with the host's xz.
pub fn read_module(modules_dir: &Path, path: &str) -> Result<Vec<u8>> {
    let full = modules_dir.join(path);
    if path.ends_with(".xz") {
        let output = Command::new("xz").arg("-dc").arg(&full).output()?;
        if !output.status.success() {
            bail!("xz -dc {} failed", full.display());
        }
        Ok(output.stdout)
    } else {
        std::fs::read(&full).with_context(|| format!("reading {}", full.display()))
    }
}
