//! initramfs images built from scratch: a cpio archive, no host initramfs tools.
//!
//! [`ImageBuilder`] creates parent directories as needed and knows how to carry busybox, a
//! dynamically linked host binary with its libraries (`ldd`), and kernel modules resolved through
//! depmod's index. The lab's guest scripts live in `qemu/guest/`; settings reach them through a
//! generated `/etc/lab.env`, so a script is the same text for every variant.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use rkdump::format::cpio::Archive;

use crate::kernels::{Kernel, read_module};

/// Busybox applets the guest scripts use.
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "mount", "umount", "insmod", "mkdir", "cat", "echo", "dd", "sync", "reboot", "poweroff",
    "grep", "taskset", "sleep", "ls", "df", "mknod", "uname", "rm",
];

/// An initramfs image under construction.
pub struct ImageBuilder {
    archive: Archive,
    dirs: BTreeSet<String>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// Starts an image with the directories every init needs and a console device node.
    pub fn new() -> Self {
        let mut image = Self {
            archive: Archive::new(),
            dirs: BTreeSet::new(),
        };
        for dir in [
            "/dev", "/proc", "/sys", "/run", "/tmp", "/mnt", "/etc", "/bin",
        ] {
            image.dir(dir);
        }
        image.archive.char_device("/dev/console", 0o600, 5, 1);
        image
    }

    /// Adds a directory and its missing parents.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            if self.dirs.insert(prefix.clone()) {
                self.archive.dir(&prefix);
            }
        }
        self
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    /// Adds a file with the given contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.parent(path);
        self.archive.file(path, perm, data);
        self
    }

    /// Adds a copy of a host file.
    pub fn host_file(&mut self, path: &str, perm: u32, source: &Path) -> Result<&mut Self> {
        let data =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        Ok(self.file(path, perm, &data))
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.parent(path);
        self.archive.symlink(path, target);
        self
    }

    /// Adds the host's static busybox as `/bin/busybox` with links for the applets scripts use.
    pub fn busybox(&mut self) -> Result<&mut Self> {
        self.host_file("/bin/busybox", 0o755, Path::new("/bin/busybox"))?;
        for applet in BUSYBOX_APPLETS {
            self.symlink(&format!("/bin/{applet}"), "busybox");
        }
        Ok(self)
    }

    /// Adds a dynamically linked host binary and the libraries `ldd` lists for it, at their
    /// host paths.
    pub fn dynamic_binary(&mut self, path: &str, source: &Path) -> Result<&mut Self> {
        self.host_file(path, 0o755, source)?;
        let output = Command::new("ldd")
            .arg(source)
            .output()
            .context("running ldd")?;
        if !output.status.success() {
            bail!("ldd {} failed", source.display());
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux... (0x...)"
            let library = line.split_whitespace().find(|w| w.starts_with('/'));
            if let Some(library) = library {
                let real = std::fs::canonicalize(library)?;
                self.host_file(library, 0o755, &real)?;
            }
        }
        Ok(self)
    }

    /// Adds the modules needed to load `requests` (names or aliases) of `kernel`, decompressed,
    /// under `/lib/modules/<release>/`, and returns their paths in load order.
    pub fn modules(&mut self, kernel: &Kernel, requests: &[&str]) -> Result<Vec<String>> {
        let index = kernel.module_index()?;
        let modules_dir = kernel.modules_dir();
        let mut paths = Vec::new();
        for module in index.load_order(requests)? {
            let data = read_module(&modules_dir, &module.path)?;
            let relative = module.path.trim_end_matches(".xz");
            let path = format!("/lib/modules/{}/{relative}", kernel.release);
            self.file(&path, 0o644, &data);
            paths.push(path);
        }
        Ok(paths)
    }

    /// Adds a standard `/lib/modules/<release>` tree holding the modules `requests` name (those
    /// this kernel has) and everything they need, indexed by the host's depmod as dracut does;
    /// compressed modules stay compressed. rkdump's runtime decides what to load from it.
    pub fn module_tree(&mut self, kernel: &Kernel, requests: &[&str]) -> Result<()> {
        let index = kernel.module_index()?;
        let known: Vec<&str> = requests
            .iter()
            .copied()
            .filter(|r| index.resolve(r).is_ok())
            .collect();
        let staging = tempfile::tempdir()?;
        let base = staging.path().join("lib/modules").join(&kernel.release);
        let source = kernel.modules_dir();
        for module in index.load_order(&known)? {
            let target = base.join(&module.path);
            std::fs::create_dir_all(target.parent().expect("module paths have directories"))?;
            std::fs::copy(source.join(&module.path), &target)
                .with_context(|| format!("copying {}", module.path))?;
        }
        std::fs::create_dir_all(&base)?;
        for name in [
            "modules.builtin",
            "modules.builtin.modinfo",
            "modules.order",
        ] {
            if source.join(name).exists() {
                std::fs::copy(source.join(name), base.join(name))?;
            }
        }
        let status = Command::new("depmod")
            .arg("-b")
            .arg(staging.path())
            .arg(&kernel.release)
            .status()?;
        if !status.success() {
            bail!(
                "depmod -b {} {} failed",
                staging.path().display(),
                kernel.release
            );
        }
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let relative = path.strip_prefix(staging.path())?.display().to_string();
                    self.host_file(&format!("/{relative}"), 0o644, &path)?;
                }
            }
        }
        Ok(())
    }

    /// Finishes the archive.
    pub fn finish(self) -> Vec<u8> {
        self.archive.finish()
    }
}

/// Renders `KEY='value'` lines for a guest script's `/etc/lab.env`.
pub fn env_file(pairs: &[(&str, String)]) -> Vec<u8> {
    let mut out = String::new();
    for (key, value) in pairs {
        out.push_str(&format!("{key}='{}'\n", value.replace('\'', r"'\''")));
    }
    out.into_bytes()
}
