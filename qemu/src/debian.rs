//! A real installed Debian 12 system for the first kernel's side: rkdump's image builder
//! (`rkdump mkinitrd`) and `rkdump start` run inside it under systemd, a crash follows, the
//! capture kernel dumps to `/var/crash` of its root filesystem, and the test reads the dump
//! back from the disk image once QEMU has exited.
//!
//! # Brief overview
//!
//! [`DebianSystem::get`] returns the system's tree, built once by mmdebstrap (minbase, the
//! [`PACKAGES`], and the kernel of [`FLAVOR`] installed from the very `.deb` the lab's
//! [`Kernel`] came from, so its debug vmlinux is at hand) into
//! `$RKDUMP_CACHE/debian12/<key>/root/`; the key hashes everything that shapes the tree. The
//! build runs under a lock, so parallel tests build it once, in a directory that is renamed into
//! place when complete, so an interrupted build is never used; its log is
//! `$RKDUMP_CACHE/debian12/<key>.log`.
//!
//! # Variants
//!
//! [`DebianSystem::get_variant`] builds the same system with a [`Variant`]: another lab kernel
//! ([`Variant::flavor`], e.g. [`Flavor::Generic61`], which has the i6300esb watchdog and xfs as
//! modules), more packages installed with the kernel ([`Variant::extra_packages`]), and
//! Debian's kdump-tools ([`Variant::kdump_tools`]: [`KDUMP_TOOLS_PACKAGES`] installed once the
//! kernel package is configured, by `guest/debian-kdump-tools`, with `USE_KDUMP=1` in
//! `/etc/default/kdump-tools`; nothing of kdump-tools runs during the build, so its capture
//! image `/var/lib/kdump/initrd.img-<release>` is built by its first `kdump-config load` in
//! the guest, 60-80 s under TCG, and its `kdump-tools.service` does that at every boot of a
//! fresh disk unless the test disables it: [`DiskBuilder::remove`] of
//! `/etc/systemd/system/basic.target.wants/kdump-tools.service`; masking it would stop the
//! capture's `kdump-tools-dump.service` too, whose init script exits when the unit is masked). [`Variant::DEFAULT`] is what [`DebianSystem::get`]
//! builds; [`Variant::GENERIC`] and [`Variant::KDUMP_TOOLS`] are the other two the lab uses.
//! Each variant is its own cache entry (its key hashes the variant too; the default's key is
//! what it was before variants existed): a build removes older trees of the same variant
//! ([`Variant::name`], recorded in the tree's `variant` file) and leaves the others' alone.
//!
//! [`DebianSystem::disk`] starts a [`DiskBuilder`]: each test makes a fresh raw disk of its own,
//! an ext4 root filesystem made from the tree by `mkfs.ext4 -d` (nothing is mounted), with
//! [`DEFAULT_FREE_MIB`] of room for dumps in a sparse file, `/etc/fstab` naming the root's UUID,
//! and the files the test adds (written with `debugfs -w`): the static rkdump, a kdump.conf, a
//! systemd unit and its enablement; [`DiskBuilder::remove`] takes files away (a unit's
//! enablement). [`DebianDisk::vm_config`] boots it with the tree's kernel
//! and initramfs (taken on the host, not from the disk) as a [`VmConfig`] with
//! `root=UUID=<uuid> ro console=ttyS0 crashkernel=<N>M`, a virtio-rng device (without it the
//! first boot can hang in `getrandom`), 1 GiB and 2 CPUs by default. After QEMU exits,
//! [`DebianDisk::read_dir`] and [`DebianDisk::read_file`] read the disk with debugfs.
//!
//! The guest has no network, no root password and no shell on the console for the tests: they
//! drive it with systemd units (`After=multi-user.target`) that print [`MARKER`] lines to
//! `/dev/console`. Booting to such a unit takes about 25 s under TCG.
//!
//! [`MARKER`]: crate::vm::MARKER

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::kernels::{Flavor, Kernel};
use crate::vm::VmConfig;

/// The Debian release.
pub const SUITE: &str = "bookworm";
/// The lab kernel installed in the system (the cloud kernel: virtio as modules, ext4 built in).
pub const FLAVOR: Flavor = Flavor::Cloud61;
/// The packages installed on top of minbase, besides the kernel.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "initramfs-tools",
    "e2fsprogs",
    "xfsprogs",
    "procps",
    "iproute2",
    "util-linux",
    // initramfs-tools recommends it, so installed systems have it: their initramfs is zstd.
    "zstd",
];
/// The packages [`Variant::kdump_tools`] installs after the kernel: makedumpfile is named
/// because `--no-install-recommends` would leave it out (kdump-tools then writes no dump).
pub const KDUMP_TOOLS_PACKAGES: &[&str] = &["kdump-tools", "makedumpfile", "kexec-tools"];
/// The root filesystem's UUID unless the test gives one ([`DiskBuilder::uuid`]).
pub const DEFAULT_UUID: &str = "d3b1a012-0000-4000-8000-000000000001";
/// Free room on a fresh disk for dumps, in MiB.
pub const DEFAULT_FREE_MIB: u64 = 1536;
/// The crashkernel= reservation of [`BootOptions::default`], in MiB.
pub const DEFAULT_CRASHKERNEL_MIB: u32 = 256;

/// mmdebstrap's last customize hook (fstab, hostname, machine-id, the initramfs again).
const CUSTOMIZE: &str = include_str!("../guest/debian-customize");
/// mmdebstrap's customize hook that installs [`KDUMP_TOOLS_PACKAGES`] (before [`CUSTOMIZE`]).
const KDUMP_TOOLS_HOOK: &str = include_str!("../guest/debian-kdump-tools");
/// mmdebstrap's hooks that make the kernel `.deb` given to `--include` visible in the chroot.
const AUTOMOUNT_HOOKS: &str = "/usr/share/mmdebstrap/hooks/file-mirror-automount";
/// Bumped when the build changes in a way the hashed inputs do not show.
const BUILD_VERSION: u32 = 1;
/// Room on a disk for ext4's own metadata (journal, inode tables), in MiB.
const METADATA_MIB: u64 = 160;

/// What a tree holds besides minbase and [`PACKAGES`] (see the module's "Variants").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant<'a> {
    /// The lab kernel installed (from the `.deb` [`Kernel::image_deb`] names).
    pub flavor: Flavor,
    /// More packages, installed in the same apt run as the kernel and [`PACKAGES`].
    pub extra_packages: &'a [&'a str],
    /// Debian's kdump-tools ([`KDUMP_TOOLS_PACKAGES`], installed after the kernel, with
    /// `USE_KDUMP=1`).
    pub kdump_tools: bool,
}

impl Variant<'static> {
    /// [`DebianSystem::get`]'s: the cloud kernel ([`FLAVOR`]), the [`PACKAGES`], no kdump-tools.
    pub const DEFAULT: Self = Self {
        flavor: FLAVOR,
        extra_packages: &[],
        kdump_tools: false,
    };
    /// The generic 6.1 kernel (i6300esb and xfs as modules), the same packages.
    pub const GENERIC: Self = Self {
        flavor: Flavor::Generic61,
        ..Self::DEFAULT
    };
    /// The default system with Debian's kdump-tools.
    pub const KDUMP_TOOLS: Self = Self {
        kdump_tools: true,
        ..Self::DEFAULT
    };
}

impl Default for Variant<'static> {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Variant<'_> {
    /// A short name: the flavour, `+kdump-tools`, then `+` and the extra packages
    /// (`cloud61+kdump-tools`); trees of one name replace each other in the cache.
    pub fn name(&self) -> String {
        let mut name = format!("{:?}", self.flavor).to_lowercase();
        if self.kdump_tools {
            name.push_str("+kdump-tools");
        }
        if !self.extra_packages.is_empty() {
            name.push('+');
            name.push_str(&self.extra_packages.join(","));
        }
        name
    }

    /// The packages installed with the kernel.
    fn packages(&self) -> Vec<&str> {
        PACKAGES
            .iter()
            .chain(self.extra_packages)
            .copied()
            .collect()
    }
}

/// The cached tree of the installed system.
#[derive(Debug, Clone)]
pub struct DebianSystem {
    /// The cache directory (`$RKDUMP_CACHE/debian12/<key>`), holding the tree in `root/`.
    pub dir: PathBuf,
    /// The lab kernel installed in it (its debug vmlinux is [`Kernel::vmlinux`]).
    pub kernel: Kernel,
    /// `uname -r` of that kernel.
    pub release: String,
    /// The variant's [`Variant::name`].
    pub variant: String,
    /// Whether Debian's kdump-tools is installed ([`Variant::kdump_tools`]).
    pub kdump_tools: bool,
    /// Bytes the tree occupies (allocated blocks), for sizing disks.
    tree_bytes: u64,
}

impl DebianSystem {
    /// Returns the system's tree ([`Variant::DEFAULT`]: the cloud kernel, the [`PACKAGES`]),
    /// building it first (about 1.5 min) unless it is cached.
    pub fn get() -> Result<Self> {
        Self::get_variant(&Variant::DEFAULT)
    }

    /// Returns the tree of `variant`, building it first unless it is cached (about 1.5 min,
    /// 2 min with kdump-tools).
    pub fn get_variant(variant: &Variant<'_>) -> Result<Self> {
        let kernel = Kernel::fetch(variant.flavor)?;
        let deb = std::fs::canonicalize(kernel.image_deb()?)?;
        let key = tree_key(variant, &deb);
        let base = crate::cache::root().join("debian12");
        let _lock = crate::cache::lock(&base.join(".lock"))?;
        let dir = base.join(&key);
        if !dir.is_dir() {
            build(variant, &kernel, &deb, &base, &key)?;
        }
        let read = |name: &str| -> Result<String> {
            let path = dir.join(name);
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned())
        };
        let release = read("release")?;
        let tree_bytes = read("tree-bytes")?.parse()?;
        Ok(Self {
            dir,
            kernel,
            release,
            variant: variant.name(),
            kdump_tools: variant.kdump_tools,
            tree_bytes,
        })
    }

    /// The tree: the system's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The kernel image in the tree's `/boot` (the same file as the lab kernel's
    /// [`Kernel::vmlinuz`]).
    pub fn vmlinuz(&self) -> PathBuf {
        self.root()
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The initramfs Debian's initramfs-tools built, in the tree's `/boot`.
    pub fn initrd(&self) -> PathBuf {
        self.root()
            .join("boot")
            .join(format!("initrd.img-{}", self.release))
    }

    /// Starts a fresh disk of this system (see [`DiskBuilder`]).
    pub fn disk(&self) -> DiskBuilder<'_> {
        DiskBuilder {
            system: self,
            uuid: DEFAULT_UUID.to_owned(),
            free_mib: DEFAULT_FREE_MIB,
            entries: Vec::new(),
        }
    }
}

/// Names a tree: everything that shapes it. The default variant hashes what the trees did
/// before variants existed, so its cached tree stays valid.
fn tree_key(variant: &Variant<'_>, deb: &Path) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "{BUILD_VERSION}\n{SUITE}\n{}\n{}\n{DEFAULT_UUID}\n{CUSTOMIZE}",
        variant.packages().join(","),
        deb.file_name().unwrap_or_default().to_string_lossy()
    ));
    if variant.kdump_tools {
        hasher.update(format!(
            "\nkdump-tools {}\n{KDUMP_TOOLS_HOOK}",
            KDUMP_TOOLS_PACKAGES.join(",")
        ));
    }
    hasher.finalize()[..8]
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The variant a cached tree was built for (trees from before variants: the default's).
fn tree_variant(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("variant"))
        .map_or_else(|_| Variant::DEFAULT.name(), |name| name.trim().to_owned())
}

/// Builds the tree of `key` into `base/<key>`, in `base/.build-<key>` first.
fn build(variant: &Variant<'_>, kernel: &Kernel, deb: &Path, base: &Path, key: &str) -> Result<()> {
    // Interrupted builds (the lock is held: none is running) and older trees of this variant go,
    // with their logs; other variants' trees stay.
    let name = variant.name();
    for entry in std::fs::read_dir(base)? {
        let path = entry?.path();
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() && (file.starts_with(".build-") || tree_variant(&path) == name) {
            remove_tree(&path)?;
            let _ = std::fs::remove_file(base.join(format!("{file}.log")));
        } else if path.extension().is_some_and(|e| e == "log") && !path.with_extension("").is_dir()
        {
            std::fs::remove_file(&path)?;
        }
    }
    let work = base.join(format!(".build-{key}"));
    std::fs::create_dir_all(&work)?;
    let result = build_in(
        variant,
        kernel,
        deb,
        &work,
        &base.join(format!("{key}.log")),
    );
    if result.is_err() {
        let _ = remove_tree(&work);
    }
    result?;
    std::fs::rename(&work, base.join(key))?;
    Ok(())
}

fn build_in(
    variant: &Variant<'_>,
    kernel: &Kernel,
    deb: &Path,
    work: &Path,
    log_path: &Path,
) -> Result<()> {
    let started = std::time::Instant::now();
    eprintln!(
        "debian: building the Debian 12 tree {} with {} (log {})",
        variant.name(),
        kernel.release,
        log_path.display()
    );
    let customize = work.join("customize");
    std::fs::write(&customize, CUSTOMIZE)?;
    let root = work.join("root");
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    // A private mount namespace: the mounts mmdebstrap makes in the chroot (/proc, /sys, /dev,
    // the bind-mounted kernel package) end with it, even when it is killed.
    let mut mmdebstrap = Command::new("unshare");
    mmdebstrap
        .args(["--mount", "--propagation", "private", "mmdebstrap"])
        .args(["--variant=minbase", "--mode=root", "--format=directory"])
        .arg(format!("--include={}", variant.packages().join(",")))
        .arg(format!("--include={}", deb.display()))
        .arg(format!("--hook-dir={AUTOMOUNT_HOOKS}"));
    if variant.kdump_tools {
        // Once the kernel is configured (its postinst.d hook would run kdump-tools' mkinitramfs
        // in the chroot, which fails), before the last hook rebuilds the initramfs.
        let hook = work.join("kdump-tools");
        std::fs::write(&hook, KDUMP_TOOLS_HOOK)?;
        mmdebstrap.arg(format!(
            "--customize-hook=sh {} \"$1\" {}",
            shell_quote(&hook.display().to_string()),
            KDUMP_TOOLS_PACKAGES.join(" ")
        ));
    }
    let status = mmdebstrap
        // After the automount hooks, which unmount the package first.
        .arg(format!(
            "--customize-hook=sh {} \"$1\" {} {DEFAULT_UUID}",
            shell_quote(&customize.display().to_string()),
            shell_quote(&deb.display().to_string()),
        ))
        .arg(SUITE)
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running mmdebstrap (qemu/install-deps installs it)")?;
    if !status.success() {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "mmdebstrap failed ({status}); {} ends:\n{}",
            log_path.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    // The tree's kernel must be the lab kernel whose vmlinux the tests read.
    let installed = root
        .join("boot")
        .join(format!("vmlinuz-{}", kernel.release));
    let same = std::fs::read(&installed)
        .with_context(|| format!("reading {}", installed.display()))?
        == std::fs::read(kernel.vmlinuz())?;
    if !same {
        bail!(
            "{} differs from the lab kernel {}",
            installed.display(),
            kernel.vmlinuz().display()
        );
    }
    let initrd = root
        .join("boot")
        .join(format!("initrd.img-{}", kernel.release));
    if !initrd.is_file() {
        bail!("mmdebstrap left no {}", initrd.display());
    }
    if variant.kdump_tools {
        let defaults = std::fs::read_to_string(root.join("etc/default/kdump-tools"))
            .context("kdump-tools is not installed in the tree")?;
        if !defaults.lines().any(|l| l == "USE_KDUMP=1") {
            bail!("/etc/default/kdump-tools does not say USE_KDUMP=1");
        }
    }
    std::fs::write(work.join("release"), format!("{}\n", kernel.release))?;
    std::fs::write(work.join("variant"), format!("{}\n", variant.name()))?;
    std::fs::write(work.join("tree-bytes"), format!("{}\n", tree_bytes(&root)?))?;
    eprintln!("debian: tree built in {:.1?}", started.elapsed());
    Ok(())
}

/// Bytes the files under `root` occupy (`du`).
fn tree_bytes(root: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            total += metadata.blocks() * 512;
            if metadata.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Removes a directory tree, refusing one with something mounted inside (an interrupted chroot
/// build must not take the host's /dev with it).
fn remove_tree(path: &Path) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = path.display().to_string();
    for line in mountinfo.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = unescape_mountinfo(point);
        if point == prefix || point.starts_with(&format!("{prefix}/")) {
            bail!(
                "{point} is mounted: not removing {} (unmount it)",
                path.display()
            );
        }
    }
    std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match code {
            Some(code) if bytes[i] == b'\\' => {
                out.push(code);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// One addition to a disk.
#[derive(Debug, Clone)]
enum Entry {
    File {
        path: String,
        mode: u32,
        contents: Vec<u8>,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Remove {
        path: String,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Self::File { path, .. }
            | Self::Dir { path, .. }
            | Self::Symlink { path, .. }
            | Self::Remove { path } => path,
        }
    }
}

/// A fresh disk of the system under construction: the tree, `/etc/fstab` with the root's
/// UUID, then the additions in the order given.
///
/// Paths are absolute; symbolic links of the tree on the way are followed (`/lib` is
/// `usr/lib`), missing parent directories are created (mode 0755), and an existing file or
/// symbolic link at a path is replaced. Everything added is owned by root.
#[derive(Debug, Clone)]
pub struct DiskBuilder<'a> {
    system: &'a DebianSystem,
    uuid: String,
    free_mib: u64,
    entries: Vec<Entry>,
}

impl DiskBuilder<'_> {
    /// Gives the root filesystem this UUID instead of [`DEFAULT_UUID`].
    pub fn uuid(mut self, uuid: &str) -> Self {
        uuid.clone_into(&mut self.uuid);
        self
    }

    /// Leaves `mib` MiB free on the disk instead of [`DEFAULT_FREE_MIB`].
    pub fn free_mib(mut self, mib: u64) -> Self {
        self.free_mib = mib;
        self
    }

    /// Adds a file with mode `mode` (permission bits) and the given contents.
    pub fn file(mut self, path: &str, mode: u32, contents: &[u8]) -> Self {
        self.entries.push(Entry::File {
            path: path.to_owned(),
            mode,
            contents: contents.to_vec(),
        });
        self
    }

    /// Adds a copy of a host file (the static rkdump at `/usr/sbin/rkdump`).
    pub fn host_file(self, path: &str, mode: u32, source: &Path) -> Result<Self> {
        let contents =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        Ok(self.file(path, mode, &contents))
    }

    /// Adds a directory with mode `mode` (or sets the mode of an existing one).
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entries.push(Entry::Dir {
            path: path.to_owned(),
            mode,
        });
        self
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink {
            path: path.to_owned(),
            target: target.to_owned(),
        });
        self
    }

    /// Removes the file or symbolic link at `path`, which must exist (a unit's enablement:
    /// `systemctl disable` on the disk).
    pub fn remove(mut self, path: &str) -> Self {
        self.entries.push(Entry::Remove {
            path: path.to_owned(),
        });
        self
    }

    /// Adds the systemd unit `name` (`lab-test.service`) in `/etc/systemd/system`, enabled
    /// for `multi-user.target` as `systemctl enable` does for `WantedBy=multi-user.target`.
    pub fn unit(self, name: &str, text: &str) -> Self {
        let path = format!("/etc/systemd/system/{name}");
        self.file(&path, 0o644, text.as_bytes()).symlink(
            &format!("/etc/systemd/system/multi-user.target.wants/{name}"),
            &path,
        )
    }

    /// Adds the test's guest side: `script` as `/usr/local/sbin/<name>`, run once by the
    /// oneshot unit `<name>.service` after multi-user.target at every boot (no time limit).
    pub fn lab_script(self, name: &str, description: &str, script: &str) -> Self {
        let path = format!("/usr/local/sbin/{name}");
        let unit = format!(
            "[Unit]\nDescription=rkdump lab: {description}\nAfter=multi-user.target\n\n\
             [Service]\nType=oneshot\nExecStart={path}\nTimeoutStartSec=infinity\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        );
        self.file(&path, 0o755, script.as_bytes())
            .unit(&format!("{name}.service"), &unit)
    }

    /// Creates the disk image at `image` (replacing a file there).
    pub fn create(&self, image: &Path) -> Result<DebianDisk> {
        let fstab = Entry::File {
            path: "/etc/fstab".to_owned(),
            mode: 0o644,
            contents: format!("UUID={} / ext4 errors=remount-ro 0 1\n", self.uuid).into_bytes(),
        };
        let entries: Vec<&Entry> = std::iter::once(&fstab).chain(&self.entries).collect();
        let added: u64 = entries
            .iter()
            .map(|e| match e {
                Entry::File { contents, .. } => contents.len() as u64,
                _ => 4096,
            })
            .sum();
        let contents_mib = ((self.system.tree_bytes + added) * 11 / 10).div_ceil(1 << 20);
        let size_mib = contents_mib + METADATA_MIB + self.free_mib;
        if image.exists() {
            std::fs::remove_file(image)?;
        }
        std::fs::File::create(image)
            .with_context(|| format!("creating {}", image.display()))?
            .set_len(size_mib << 20)?;
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F", "-U", &self.uuid, "-d"])
            .arg(self.system.root())
            .arg(image);
        let output = mkfs.output().context("running mkfs.ext4")?;
        if !output.status.success() {
            bail!(
                "{mkfs:?} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }

        let staging = tempfile::tempdir()?;
        let mut plan = Plan {
            root: self.system.root(),
            added: BTreeMap::new(),
            script: String::new(),
        };
        for (i, entry) in entries.iter().enumerate() {
            plan.add(entry, &staging.path().join(i.to_string()))
                .with_context(|| format!("adding {} to {}", entry.path(), image.display()))?;
        }
        let script = staging.path().join("commands");
        std::fs::write(&script, &plan.script)?;
        let output = Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(image)
            .output()
            .context("running debugfs")?;
        let errors = debugfs_errors(&output.stderr);
        if !output.status.success() || !errors.is_empty() {
            bail!(
                "debugfs -w {} failed: {errors}\ncommands:\n{}",
                image.display(),
                plan.script
            );
        }
        Ok(DebianDisk {
            path: image.to_owned(),
            uuid: self.uuid.clone(),
            vmlinuz: self.system.vmlinuz(),
            initrd: self.system.initrd(),
        })
    }
}

/// What debugfs printed on stderr besides its banner (it reports failed commands there, and
/// exits 0 regardless).
fn debugfs_errors(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a path is on the disk being made.
#[derive(Clone)]
enum Node {
    Missing,
    Dir,
    Symlink(String),
    Other,
}

/// The debugfs commands that add the entries, and what the disk holds meanwhile (the tree,
/// then what was added).
struct Plan {
    root: PathBuf,
    added: BTreeMap<String, Node>,
    script: String,
}

impl Plan {
    fn node(&self, path: &str) -> Result<Node> {
        if let Some(node) = self.added.get(path) {
            return Ok(node.clone());
        }
        let host = self.root.join(path.trim_start_matches('/'));
        match std::fs::symlink_metadata(&host) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Node::Missing),
            Err(e) => Err(e).with_context(|| format!("reading {}", host.display())),
            Ok(m) if m.is_dir() => Ok(Node::Dir),
            Ok(m) if m.is_symlink() => Ok(Node::Symlink(
                std::fs::read_link(&host)?.display().to_string(),
            )),
            Ok(_) => Ok(Node::Other),
        }
    }

    /// Resolves directory `path` through the tree's symbolic links, creating what is missing;
    /// returns the real path ("" for the root).
    fn directory(&mut self, path: &str) -> Result<String> {
        let mut current = String::new();
        let mut parts: VecDeque<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let mut links = 0;
        while let Some(part) = parts.pop_front() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    current.truncate(current.rfind('/').unwrap_or(0));
                    continue;
                }
                _ => {}
            }
            let candidate = format!("{current}/{part}");
            match self.node(&candidate)? {
                Node::Dir => current = candidate,
                Node::Missing => {
                    writeln!(self.script, "mkdir {candidate}")?;
                    self.added.insert(candidate.clone(), Node::Dir);
                    current = candidate;
                }
                Node::Symlink(target) => {
                    links += 1;
                    if links > 40 {
                        bail!("too many symbolic links resolving {path}");
                    }
                    if target.starts_with('/') {
                        current.clear();
                    }
                    for part in target.split('/').filter(|p| !p.is_empty()).rev() {
                        parts.push_front(part.to_owned());
                    }
                }
                Node::Other => bail!("{candidate} is not a directory"),
            }
        }
        Ok(current)
    }

    fn add(&mut self, entry: &Entry, staged: &Path) -> Result<()> {
        let path = entry.path();
        let plain = |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"');
        let Some((parent, name)) = path.rsplit_once('/') else {
            bail!("not an absolute path");
        };
        if !path.starts_with('/') || !plain(path) || matches!(name, "" | "." | "..") {
            bail!("not an absolute path to a file without blanks or quotes");
        }
        let dest = format!("{}/{name}", self.directory(parent)?);
        let existing = self.node(&dest)?;
        let script = &mut self.script;
        match entry {
            Entry::File { mode, contents, .. } => {
                match existing {
                    Node::Dir => bail!("{dest} is a directory"),
                    Node::Missing => {}
                    _ => writeln!(script, "rm {dest}")?,
                }
                std::fs::write(staged, contents)?;
                writeln!(script, "write {} {dest}", staged.display())?;
                writeln!(script, "sif {dest} mode 0{:o}", 0o100_000 | (mode & 0o7777))?;
                writeln!(script, "sif {dest} uid 0\nsif {dest} gid 0")?;
                self.added.insert(dest, Node::Other);
            }
            Entry::Dir { mode, .. } => {
                match existing {
                    Node::Dir => {}
                    Node::Missing => writeln!(script, "mkdir {dest}")?,
                    _ => bail!("{dest} exists and is not a directory"),
                }
                writeln!(script, "sif {dest} mode 0{:o}", 0o040_000 | (mode & 0o7777))?;
                self.added.insert(dest, Node::Dir);
            }
            Entry::Symlink { target, .. } => {
                if !plain(target) {
                    bail!("the link target {target:?} is empty or has blanks or quotes");
                }
                match existing {
                    Node::Dir => bail!("{dest} is a directory"),
                    Node::Missing => {}
                    _ => writeln!(script, "rm {dest}")?,
                }
                writeln!(script, "symlink {dest} {target}")?;
                self.added.insert(dest, Node::Symlink(target.clone()));
            }
            Entry::Remove { .. } => {
                match existing {
                    Node::Missing => bail!("{dest} does not exist"),
                    Node::Dir => bail!("{dest} is a directory"),
                    _ => writeln!(script, "rm {dest}")?,
                }
                self.added.insert(dest, Node::Missing);
            }
        }
        Ok(())
    }
}

/// A disk of the system made for one test.
#[derive(Debug, Clone)]
pub struct DebianDisk {
    /// The raw image.
    pub path: PathBuf,
    /// Its root filesystem's UUID.
    pub uuid: String,
    /// The kernel to boot (the tree's, on the host).
    pub vmlinuz: PathBuf,
    /// The initramfs to boot (the tree's, on the host).
    pub initrd: PathBuf,
}

/// How to boot a [`DebianDisk`]; the defaults are the lab's guest.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The crashkernel= reservation in MiB (none when `None`).
    pub crashkernel_mib: Option<u32>,
    /// Words added to the kernel command line.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Number of vCPUs.
    pub cpus: u32,
    /// More raw disks, attached after the system disk (vdb, vdc, ...: dump targets).
    pub disks: Vec<PathBuf>,
    /// Further QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Let a reboot restart the guest (the system boots again after the capture kernel's
    /// final action `reboot`); without it QEMU exits at the reboot.
    pub allow_reboot: bool,
}

impl Default for BootOptions {
    fn default() -> Self {
        Self {
            crashkernel_mib: Some(DEFAULT_CRASHKERNEL_MIB),
            cmdline: String::new(),
            memory_mib: 1024,
            cpus: 2,
            disks: Vec::new(),
            qemu_args: Vec::new(),
            allow_reboot: false,
        }
    }
}

impl DebianDisk {
    /// The kernel command line booting this disk with `options`.
    pub fn cmdline(&self, options: &BootOptions) -> String {
        let mut cmdline = format!("root=UUID={} ro console=ttyS0", self.uuid);
        if let Some(mib) = options.crashkernel_mib {
            write!(cmdline, " crashkernel={mib}M").expect("writing to a String");
        }
        if !options.cmdline.trim().is_empty() {
            cmdline.push(' ');
            cmdline.push_str(options.cmdline.trim());
        }
        cmdline
    }

    /// The guest booting this disk (vda) with `options`.
    pub fn vm_config(&self, options: &BootOptions) -> VmConfig {
        VmConfig {
            kernel: self.vmlinuz.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline(options),
            memory_mib: options.memory_mib,
            cpus: options.cpus,
            cpu_model: None,
            disks: std::iter::once(self.path.clone())
                .chain(options.disks.iter().cloned())
                .collect(),
            extra_args: ["-device", "virtio-rng-pci"]
                .into_iter()
                .map(str::to_owned)
                .chain(options.qemu_args.iter().cloned())
                .collect(),
            allow_reboot: options.allow_reboot,
        }
    }

    /// Replays the root filesystem's journal if the guest left one to replay (a crash, a
    /// reset), with `e2fsck -E journal_only`: debugfs reads only what is outside the journal.
    /// Only while QEMU is not running.
    pub fn replay_journal(&self) -> Result<()> {
        let output = Command::new("e2fsck")
            .args(["-E", "journal_only", "-y"])
            .arg(&self.path)
            .output()
            .context("running e2fsck")?;
        // 0: nothing to do, 1: the journal was replayed.
        if !matches!(output.status.code(), Some(0 | 1)) {
            bail!(
                "e2fsck -E journal_only {} failed ({}): {}{}",
                self.path.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Copies directory `path` (`/var/crash`) out of the disk into `into` and returns the
    /// copy (`into/<name>`); the journal is replayed first. Only while QEMU is not running.
    pub fn read_dir(&self, path: &str, into: &Path) -> Result<PathBuf> {
        self.replay_journal()?;
        crate::scenario::read_ext4_dir(&self.path, path, into)
    }

    /// Reads file `path` from the disk; the journal is replayed first. Only while QEMU is not
    /// running. Symbolic links are not followed (debugfs): `path` must name the file itself.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.replay_journal()?;
        let output = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat \"{path}\""))
            .arg(&self.path)
            .output()
            .context("running debugfs")?;
        let errors = debugfs_errors(&output.stderr);
        if !output.status.success() || !errors.is_empty() {
            bail!(
                "debugfs could not read {path} from {}: {errors}",
                self.path.display()
            );
        }
        Ok(output.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny stand-in for the tree: merged /usr (`lib -> usr/lib`) and an /etc/fstab.
    fn system(dir: &Path) -> DebianSystem {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::write(root.join("etc/fstab"), "# UNCONFIGURED FSTAB\n").unwrap();
        DebianSystem {
            dir: dir.to_owned(),
            kernel: Kernel {
                flavor: FLAVOR,
                dir: dir.to_owned(),
                release: "test".into(),
            },
            release: "test".into(),
            variant: Variant::DEFAULT.name(),
            kdump_tools: false,
            tree_bytes: 1 << 20,
        }
    }

    #[test]
    fn additions_follow_the_tree_s_links_and_replace_files() {
        let dir = tempfile::tempdir().unwrap();
        let system = system(dir.path());
        let unit = "[Unit]\nDescription=x\n";
        let disk = system
            .disk()
            .free_mib(8)
            .file("/lib/systemd/system/x.service", 0o644, unit.as_bytes())
            .unit("y.service", unit)
            .dir("/var/crash", 0o700)
            .file("/etc/fstab", 0o600, b"replaced twice\n")
            .file("/etc/gone", 0o644, b"x")
            .remove("/etc/gone")
            .create(&dir.path().join("disk.img"))
            .unwrap();
        assert!(disk.read_file("/etc/gone").is_err());
        // Written through the link, into directories made on the way.
        assert_eq!(
            disk.read_file("/usr/lib/systemd/system/x.service").unwrap(),
            unit.as_bytes()
        );
        assert_eq!(
            disk.read_file("/etc/systemd/system/y.service").unwrap(),
            unit.as_bytes()
        );
        let wants = disk
            .read_dir(
                "/etc/systemd/system/multi-user.target.wants",
                &dir.path().join("wants"),
            )
            .unwrap();
        assert_eq!(
            std::fs::read_link(wants.join("y.service")).unwrap(),
            Path::new("/etc/systemd/system/y.service")
        );
        assert_eq!(disk.read_file("/etc/fstab").unwrap(), b"replaced twice\n");
        let copied = disk.read_dir("/var", &dir.path().join("out")).unwrap();
        assert!(copied.join("crash").is_dir());
        assert!(disk.read_file("/etc/missing").is_err());
    }

    #[test]
    fn only_files_and_links_that_exist_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let system = system(dir.path());
        for path in ["/etc/missing", "/etc"] {
            let result = system
                .disk()
                .free_mib(8)
                .remove(path)
                .create(&dir.path().join("disk.img"));
            assert!(result.is_err(), "{path} removed");
        }
        // Through the tree's link, what the tree holds.
        std::fs::write(dir.path().join("root/usr/lib/x"), "x").unwrap();
        let disk = system
            .disk()
            .free_mib(8)
            .remove("/lib/x")
            .create(&dir.path().join("disk.img"))
            .unwrap();
        assert!(disk.read_file("/usr/lib/x").is_err());
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        let dir = tempfile::tempdir().unwrap();
        let system = system(dir.path());
        for path in ["relative", "/a b", "/etc/", "/etc/.."] {
            let result = system
                .disk()
                .free_mib(8)
                .file(path, 0o644, b"")
                .create(&dir.path().join("disk.img"));
            assert!(result.is_err(), "{path} accepted");
        }
    }

    #[test]
    fn cmdline_and_vm_config() {
        let disk = DebianDisk {
            path: "/d/root.img".into(),
            uuid: DEFAULT_UUID.into(),
            vmlinuz: "/t/vmlinuz".into(),
            initrd: "/t/initrd".into(),
        };
        let options = BootOptions {
            cmdline: " nokaslr ".into(),
            disks: vec!["/d/dumps.img".into()],
            ..BootOptions::default()
        };
        let config = disk.vm_config(&options);
        assert_eq!(
            config.cmdline,
            format!("root=UUID={DEFAULT_UUID} ro console=ttyS0 crashkernel=256M nokaslr")
        );
        assert_eq!(
            config.disks,
            [PathBuf::from("/d/root.img"), "/d/dumps.img".into()]
        );
        assert!(config.extra_args.iter().any(|a| a == "virtio-rng-pci"));
        let none = BootOptions {
            crashkernel_mib: None,
            ..BootOptions::default()
        };
        assert_eq!(
            disk.cmdline(&none),
            format!("root=UUID={DEFAULT_UUID} ro console=ttyS0")
        );
    }
}
