//! The capture image: `rkdump mkinitrd` builds the initramfs the capture kernel boots, from the
//! system it runs on, and tells `start` when an image no longer matches that system.
//!
//! # Data flow
//!
//! 1. [`plan`]: what the image needs, resolved in the first kernel where the facts are
//!    ([`target`]: the dump target's device by persistent name, its filesystem and options,
//!    the path within it; [`sysfs`]: the drivers of the target's block stack, of the NICs for
//!    network targets, of the active watchdogs; kdump.conf's hooks and `extra_bins`; the ssh
//!    key and known_hosts). A hook or binary that kdump.conf names and the system lacks is an
//!    error here, before anything is written or loaded.
//! 2. [`build`]: the [`tree::Tree`] gets the static rkdump as `/init`, the image's kdump.conf
//!    (the target resolved), each program with its interpreter and libraries ([`libs`]), the
//!    modules with dependencies, firmware and a cut index ([`modules`]); it becomes one `newc`
//!    archive, zstd-compressed when the capture kernel can unpack it (`CONFIG_RD_ZSTD`), byte
//!    for byte the same for the same inputs; image and [`manifest`] are written atomically.
//! 3. [`check`]: a fresh plan compared with the manifest: an input changed, the target, the
//!    drivers, the kernel release or rkdump itself; `force_rebuild`/`force_no_rebuild`.
//!
//! Nothing here loads anything; `admin::service::start` calls [`check`] and [`build`] before it
//! hands the image to the loader.

pub(crate) mod libs;
pub(crate) mod manifest;
pub(crate) mod modules;
pub(crate) mod mountinfo;
pub(crate) mod sysfs;
pub(crate) mod target;
pub(crate) mod tree;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::kdump_conf::{self, Config, Target};
use crate::config::sysconfig::{FirstKernel, KDUMP_TOOLS_FILE, SYSCONFIG_FILE};
use crate::config::{POST_HOOK_DIR, PRE_HOOK_DIR};
use crate::format::executable;
use crate::transport::ssh_config;
use manifest::{Expected, Input, Manifest};
use tree::Tree;

/// Where rkdump keeps its capture images.
pub(crate) const IMAGE_DIR: &str = "/var/lib/rkdump";
/// zstd level of compressed images: level 19 saves under 4% more than 9 on the lab's image and
/// takes several times longer (BENCHMARKS.md).
const ZSTD_LEVEL: i32 = 9;
/// zstd window (2^20 = 1 MiB): the capture kernel's decompressor allocates the window, so a
/// small one keeps the memory the image needs while it is unpacked small.
const ZSTD_WINDOW_LOG: u32 = 20;

/// The capture image rkdump builds for `release`, under `root`.
pub(crate) fn default_image(root: &Path, release: &str) -> PathBuf {
    root.join(IMAGE_DIR.trim_start_matches('/'))
        .join(format!("initrd-{release}.img"))
}

/// The manifest beside an image.
pub(crate) fn manifest_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// Why the image cannot be built or checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    /// The target cannot be resolved.
    #[error(transparent)]
    Target(#[from] target::TargetError),
    /// A program kdump.conf (or a hook directory) names is missing or not executable.
    #[error("{what} {path} does not exist or is not executable (named in {config})")]
    Missing {
        /// Which directive.
        what: &'static str,
        /// The path.
        path: String,
        /// kdump.conf.
        config: String,
    },
    /// A program cannot be copied.
    #[error("{what}: {source}")]
    Program {
        /// Which directive named it.
        what: String,
        /// Why.
        source: libs::LibsError,
    },
    /// A file cannot be copied.
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    /// The modules cannot be added.
    #[error(transparent)]
    Modules(#[from] modules::ModulesError),
    /// The rkdump binary is unusable as `/init`.
    #[error("{}: {why}", path.display())]
    Init {
        /// The binary.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The target is on device-mapper (LVM, dm-crypt) or md RAID, which the capture does not
    /// activate yet.
    #[error(
        "the dump target {target} is on {block} (device-mapper or md RAID), which rkdump's capture cannot activate yet: dump to a plain partition or disk, NFS or ssh"
    )]
    Stacked {
        /// The target.
        target: String,
        /// Its block device.
        block: String,
    },
    /// The ssh target lacks its key or pinned host key.
    #[error("{0}")]
    Ssh(String),
    /// `force_rebuild` and `force_no_rebuild` are both set.
    #[error("force_rebuild and force_no_rebuild are both set in {0}")]
    ForceBoth(String),
    /// Writing the image failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Compression failed.
    #[error("compressing the image: {0}")]
    Compress(std::io::Error),
}

/// What an image is built from.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The system's root (`/`; a recorded tree in tests).
    pub root: PathBuf,
    /// kdump.conf's path (under `root`).
    pub config_path: PathBuf,
    /// kdump.conf, parsed.
    pub config: Config,
    /// kdump.conf's text.
    pub config_text: String,
    /// The first-kernel settings (for `KDUMP_COREDIR`).
    pub settings: FirstKernel,
    /// The capture kernel's release.
    pub release: String,
    /// The capture kernel's image, an input of the manifest.
    pub kernel: Option<PathBuf>,
    /// Where to write the image; rkdump's own place for the release if `None`.
    pub output: Option<PathBuf>,
    /// Every storage, network and watchdog driver, not only this system's.
    pub all_drivers: bool,
    /// The static rkdump binary that becomes `/init`.
    pub rkdump: PathBuf,
}

impl Options {
    /// Where the image goes.
    pub(crate) fn output(&self) -> PathBuf {
        self.output
            .clone()
            .unwrap_or_else(|| default_image(&self.root, &self.release))
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// A program the image carries and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Program {
    /// `kdump_pre`, `extra_bins`, `post.d hook`...
    pub what: &'static str,
    /// Its path on the system.
    pub path: String,
}

/// What an image needs, resolved on the system.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The target.
    pub target: target::Resolved,
    /// Hooks and `extra_bins`.
    pub programs: Vec<Program>,
    /// Other files copied as they are (ssh key, known_hosts, ssh_config).
    pub files: Vec<String>,
    /// Module requests (drivers, filesystem, `extra_modules`).
    pub requests: Vec<String>,
    /// The hostonly drivers, as the manifest records them.
    pub drivers: Vec<String>,
    /// Input files whose change means a rebuild.
    pub inputs: Vec<PathBuf>,
    /// zstd-compressed (the kernel has `CONFIG_RD_ZSTD=y`).
    pub compress: bool,
}

/// The driver modules of the active watchdogs (`/sys/class/watchdog/*/state` = active),
/// sorted; built-in drivers included (their parameters exist too).
///
/// A watchdog's driver is its device's (`device/driver/module`, where kdumpctl and dracut read
/// its modalias). Some drivers register the watchdog without a parent device (i6300esb on
/// 6.1: `/sys/devices/virtual/watchdog/watchdog0`); then every loaded module of
/// `kernel/drivers/watchdog/` (the watchdog core and pretimeout governors aside) is taken,
/// since one of them keeps it running.
pub(crate) fn active_watchdog_drivers(root: &Path) -> Vec<String> {
    let mut drivers = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/watchdog")) else {
        return drivers;
    };
    let mut unattributed = false;
    for entry in entries.flatten() {
        let dir = entry.path();
        let active = std::fs::read_to_string(dir.join("state")).is_ok_and(|s| s.trim() == "active");
        if !active {
            continue;
        }
        let driver = std::fs::read_link(dir.join("device/driver/module"))
            .ok()
            .and_then(|m| m.file_name().map(|n| n.to_string_lossy().into_owned()));
        match driver {
            Some(driver) if !drivers.contains(&driver) => drivers.push(driver),
            Some(_) => {}
            None => unattributed = true,
        }
    }
    if unattributed {
        for module in loaded_watchdog_modules(root) {
            if !drivers.contains(&module) {
                drivers.push(module);
            }
        }
    }
    drivers.sort();
    drivers
}

/// The loaded modules (`/proc/modules`) that the running kernel's `modules.dep` places in
/// `kernel/drivers/watchdog/`, except the core and the pretimeout governors.
fn loaded_watchdog_modules(root: &Path) -> Vec<String> {
    let release =
        std::fs::read_to_string(root.join("proc/sys/kernel/osrelease")).unwrap_or_default();
    let dep = std::fs::read_to_string(
        root.join("lib/modules")
            .join(release.trim())
            .join("modules.dep"),
    )
    .unwrap_or_default();
    let loaded = std::fs::read_to_string(root.join("proc/modules")).unwrap_or_default();
    let loaded: Vec<&str> = loaded
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    dep.lines()
        .filter_map(|line| line.split_once(':').map(|(path, _)| path))
        .filter(|path| path.starts_with("kernel/drivers/watchdog/"))
        .map(crate::kmod::index::name_of_path)
        .filter(|name| name != "watchdog" && !name.starts_with("pretimeout_"))
        .filter(|name| loaded.contains(&name.as_str()))
        .collect()
}

/// The executable files of a hook directory, in name order (a file without an execute bit is
/// skipped, as the capture and kdump-utils skip it: `chmod -x` disables a hook).
fn hook_dir(root: &Path, dir: &str) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found: Vec<String> = std::fs::read_dir(root.join(dir.trim_start_matches('/')))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::metadata(e.path())
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
        .collect();
    found.sort();
    found
}

/// Whether the kernel `release` can unpack zstd images (`CONFIG_RD_ZSTD=y` in its config).
pub(crate) fn kernel_unpacks_zstd(root: &Path, release: &str) -> bool {
    std::fs::read_to_string(root.join(format!("boot/config-{release}")))
        .is_ok_and(|text| text.lines().any(|l| l.trim() == "CONFIG_RD_ZSTD=y"))
}

/// The host of `user@host`.
fn ssh_host(destination: &str) -> &str {
    destination
        .rsplit_once('@')
        .map_or(destination, |(_, host)| host)
}

/// Works out what the image needs.
pub(crate) fn plan(options: &Options) -> Result<Plan, ImageError> {
    let root = &options.root;
    let config = &options.config;
    let config_name = options.config_path.display().to_string();
    let resolved = target::resolve(root, config, options.settings.coredir.as_deref())?;
    let mut programs = Vec::new();
    let mut inputs = vec![
        options.config_path.clone(),
        options.at(SYSCONFIG_FILE),
        options.at(KDUMP_TOOLS_FILE),
        options.at("/etc/fstab"),
        options.rkdump.clone(),
        options.at(&format!("/lib/modules/{}/modules.dep", options.release)),
    ];
    inputs.extend(options.kernel.clone());
    let named = [
        ("kdump_pre", &config.kdump_pre),
        ("kdump_post", &config.kdump_post),
        ("kdump_emergency", &config.kdump_emergency),
    ];
    for (what, path) in named {
        if let Some(path) = path {
            programs.push(Program {
                what,
                path: path.clone(),
            });
        }
    }
    for (dir, what) in [(PRE_HOOK_DIR, "pre.d hook"), (POST_HOOK_DIR, "post.d hook")] {
        inputs.push(options.at(dir));
        for path in hook_dir(root, dir) {
            programs.push(Program { what, path });
        }
    }
    for bin in &config.extra_bins {
        programs.push(Program {
            what: "extra_bins",
            path: bin.clone(),
        });
    }
    for program in &programs {
        let host = options.at(&program.path);
        let executable = std::fs::metadata(&host).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        if !program.path.starts_with('/') || !executable {
            return Err(ImageError::Missing {
                what: program.what,
                path: program.path.clone(),
                config: config_name.clone(),
            });
        }
        inputs.push(host);
    }
    let mut files = Vec::new();
    if let Target::Ssh(destination) = &config.target {
        let ssh_config_text =
            std::fs::read_to_string(options.at("/etc/ssh/ssh_config")).unwrap_or_default();
        let settings = ssh_config::settings_for(&ssh_config_text, ssh_host(destination));
        let key = config.sshkey.clone();
        if !options.at(&key).is_file() {
            return Err(ImageError::Ssh(format!(
                "the ssh key {key} does not exist: run `rkdump propagate` (or set sshkey in {config_name})"
            )));
        }
        files.push(key.clone());
        let public = format!("{key}.pub");
        if options.at(&public).is_file() {
            files.push(public);
        }
        let mut known = settings.known_hosts.clone();
        if known.is_empty() {
            known = crate::transport::ssh::default_known_hosts();
        }
        let known: Vec<String> = known
            .iter()
            .map(|p| p.display().to_string())
            .filter(|p| options.at(p).is_file())
            .collect();
        if known.is_empty() {
            return Err(ImageError::Ssh(format!(
                "no known_hosts file pins the host key of {destination}: run `rkdump propagate`"
            )));
        }
        files.extend(known);
        if let Some(identity) = settings.identity {
            let identity = identity.display().to_string();
            if options.at(&identity).is_file() && !files.contains(&identity) {
                files.push(identity);
            }
        }
        if options.at("/etc/ssh/ssh_config").is_file() {
            files.push("/etc/ssh/ssh_config".to_owned());
        }
        for file in &files {
            inputs.push(options.at(file));
        }
    }
    if let Some(block) = resolved.block.as_deref()
        && (block.starts_with("dm-") || block.starts_with("md"))
    {
        return Err(ImageError::Stacked {
            target: resolved.description.clone(),
            block: block.to_owned(),
        });
    }
    let mut drivers = Vec::new();
    if let Some(block) = &resolved.block {
        drivers.extend(sysfs::block_stack_modules(root, block));
    }
    if resolved.network {
        let nics = sysfs::nics(root);
        let up: Vec<&sysfs::Nic> = nics.iter().filter(|n| n.up).collect();
        let chosen: Vec<&sysfs::Nic> = if up.is_empty() {
            nics.iter().collect()
        } else {
            up
        };
        for nic in chosen {
            for module in &nic.modules {
                if !drivers.contains(module) {
                    drivers.push(module.clone());
                }
            }
        }
    }
    for watchdog in active_watchdog_drivers(root) {
        let loadable = root
            .join("sys/module")
            .join(&watchdog)
            .join("initstate")
            .exists();
        if loadable && !drivers.contains(&watchdog) {
            drivers.push(watchdog);
        }
    }
    let mut requests = drivers.clone();
    match (&config.target, resolved.fstype.as_deref()) {
        (Target::Nfs { .. }, _) | (_, Some("nfs" | "nfs4")) => {
            requests.extend(["nfs".to_owned(), "nfsv4".to_owned()]);
        }
        (_, Some(fstype)) => requests.push(fstype.to_owned()),
        (_, None) => {}
    }
    requests.extend(config.extra_modules.iter().cloned());
    Ok(Plan {
        target: resolved,
        programs,
        files,
        requests,
        drivers,
        inputs,
        compress: kernel_unpacks_zstd(root, &options.release),
    })
}

/// What [`build`] made.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    /// The image.
    pub image: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The programs it carries (with who asked for them).
    pub programs: Vec<Program>,
    /// The firmware files added.
    pub firmware: Vec<String>,
    /// Firmware the modules declare that the system lacks.
    pub missing_firmware: Vec<String>,
    /// The target.
    pub target: String,
}

/// The expected manifest state of a plan.
fn expected(options: &Options, plan: &Plan) -> Expected {
    Expected {
        release: options.release.clone(),
        target: plan.target.description.clone(),
        device: plan.target.persistent.clone(),
        fstype: plan.target.fstype.clone(),
        drivers: plan.drivers.clone(),
        inputs: plan.inputs.iter().map(|p| Input::read(p)).collect(),
    }
}

/// Writes `data` to `path` through a temporary file and a rename, so that a reader sees the
/// old file or the new one, never a part. The file is root's alone (mode 0600: an image may
/// hold the ssh key), the temporary one is created new (never through a planted link), and the
/// directory is synced after the rename.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    write_new_file(path, data, 0o600, 0o700).map_err(|source| ImageError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Replaces `path` with `data` atomically: a new temporary file of `mode` beside it (created
/// with `O_EXCL`, so nothing planted there is written through), fsynced, renamed over `path`,
/// the directory fsynced. Missing directories are made with `dir_mode`.
pub(crate) fn write_new_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    dir_mode: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(parent)?;
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(&name);
    temporary_name.push(format!(".tmp.{}.{nanos}", std::process::id()));
    let temporary = parent.join(temporary_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    let written = file
        .write_all(data)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    std::fs::File::open(parent).and_then(|dir| dir.sync_all())
}

/// The bytes of the static rkdump binary, refused when it is not one.
fn init_binary(path: &Path) -> Result<Vec<u8>, ImageError> {
    let init_error = |why: String| ImageError::Init {
        path: path.to_owned(),
        why,
    };
    let data = std::fs::read(path).map_err(|e| init_error(e.to_string()))?;
    if !executable::is_elf(&data) {
        return Err(init_error("not an ELF executable".into()));
    }
    let needs = executable::needs(&data).map_err(|e| init_error(e.to_string()))?;
    if let Some(interpreter) = needs.interpreter {
        return Err(init_error(format!(
            "dynamically linked (interpreter {interpreter}): the capture image needs the static \
             build (cargo build --release --target x86_64-unknown-linux-gnu)"
        )));
    }
    Ok(data)
}

/// The tree the options describe, and what went in.
fn assemble(options: &Options, plan: &Plan) -> Result<(Tree, modules::Selected), ImageError> {
    let root = &options.root;
    let mut tree = Tree::new(root);
    tree.file("/init", 0o755, init_binary(&options.rkdump)?);
    let source = options.config_path.display().to_string();
    let conf = target::image_conf(&source, &options.config_text, &plan.target);
    tree.file(crate::config::CONFIG_FILE, 0o644, conf.into_bytes());
    let mut installer = libs::Installer::new(root);
    for program in &plan.programs {
        installer
            .program(&mut tree, &program.path)
            .map_err(|source| ImageError::Program {
                what: format!("{} {}", program.what, program.path),
                source,
            })?;
    }
    for file in &plan.files {
        tree.host_file(file)?;
    }
    let selected = modules::add(
        &mut tree,
        root,
        &options.release,
        &plan.requests,
        options.all_drivers,
    )?;
    Ok((tree, selected))
}

/// Compresses an archive as the capture kernel unpacks it best (see [`ZSTD_WINDOW_LOG`]).
fn compress(archive: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(ImageError::Compress)?;
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::WindowLog(ZSTD_WINDOW_LOG))
        .and_then(|()| compressor.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true)))
        .map_err(ImageError::Compress)?;
    compressor.compress(archive).map_err(ImageError::Compress)
}

/// Writes the manifest of an image built from `plan` (by rkdump or by dracut) beside it.
fn record(
    options: &Options,
    plan: Plan,
    selected: modules::Selected,
    path: PathBuf,
    sizes: (u64, u64),
    compressed: bool,
) -> Result<Built, ImageError> {
    let expected = expected(options, &plan);
    let manifest = Manifest {
        version: manifest::VERSION,
        rkdump: env!("CARGO_PKG_VERSION").to_owned(),
        release: expected.release,
        target: expected.target,
        device: expected.device,
        fstype: expected.fstype,
        drivers: expected.drivers,
        modules: selected.modules,
        inputs: expected.inputs,
        packed: sizes.0,
        unpacked: sizes.1,
        compressed,
    };
    write_atomically(&manifest_path(&path), manifest.to_text().as_bytes())?;
    Ok(Built {
        image: path,
        manifest,
        programs: plan.programs,
        firmware: selected.firmware,
        missing_firmware: selected.missing_firmware,
        target: plan.target.description,
    })
}

/// Builds the image the options describe and writes it with its manifest.
pub(crate) fn build(options: &Options) -> Result<Built, ImageError> {
    let plan = plan(options)?;
    let (tree, selected) = assemble(options, &plan)?;
    let archive = tree.archive();
    let unpacked = tree.unpacked_size();
    let compressed = plan.compress;
    let image = if compressed {
        compress(&archive)?
    } else {
        archive
    };
    let path = options.output();
    write_atomically(&path, &image)?;
    record(
        options,
        plan,
        selected,
        path,
        (image.len() as u64, unpacked),
        compressed,
    )
}

/// Writes the image's files into the directory `dir` instead of an archive (the dracut
/// module's `install`, into `$initdir`); returns what went in. No manifest: dracut's caller
/// records the image it makes ([`record_external`]).
pub(crate) fn build_tree(options: &Options, dir: &Path) -> Result<Vec<String>, ImageError> {
    let plan = plan(options)?;
    let (tree, selected) = assemble(options, &plan)?;
    tree.write_to(dir)?;
    Ok(selected.modules)
}

/// Records the manifest of an image another tool (dracut with rkdump's module) wrote at the
/// options' output from the same plan, so that `start` checks it as its own.
pub(crate) fn record_external(
    options: &Options,
    unpacked: u64,
    compressed: bool,
) -> Result<Built, ImageError> {
    let plan = plan(options)?;
    let (_, selected) = assemble(options, &plan)?;
    let path = options.output();
    let packed = std::fs::metadata(&path)
        .map_err(|source| ImageError::Write {
            path: path.clone(),
            source,
        })?
        .len();
    record(
        options,
        plan,
        selected,
        path,
        (packed, unpacked),
        compressed,
    )
}

/// Whether the image at the options' output must be (re)built, and why; `None` when it is
/// up to date or `force_no_rebuild` is set.
pub(crate) fn check(options: &Options) -> Result<Option<Vec<String>>, ImageError> {
    let text = &options.config_text;
    let config_name = options.config_path.display().to_string();
    let force = kdump_conf::switch_on(text, "force_rebuild");
    let force_no = kdump_conf::switch_on(text, "force_no_rebuild");
    if force && force_no {
        return Err(ImageError::ForceBoth(config_name));
    }
    // As kdumpctl: force_no_rebuild loads the image as it is, without looking at the system.
    if force_no {
        return Ok(None);
    }
    // The plan also finds missing hooks and binaries: an error even when nothing is rebuilt.
    let plan = plan(options)?;
    if force {
        return Ok(Some(vec![format!("force_rebuild is set in {config_name}")]));
    }
    let image = options.output();
    if !image.is_file() {
        return Ok(Some(vec![format!(
            "no capture image at {}",
            image.display()
        )]));
    }
    let manifest_file = manifest_path(&image);
    let manifest = match std::fs::read_to_string(&manifest_file) {
        Ok(text) => match Manifest::parse(&text) {
            Ok(manifest) => manifest,
            Err(why) => {
                return Ok(Some(vec![format!(
                    "its manifest {} is unreadable: {why}",
                    manifest_file.display()
                )]));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(vec![format!(
                "no manifest {} (not built by rkdump mkinitrd)",
                manifest_file.display()
            )]));
        }
        Err(e) => {
            return Ok(Some(vec![format!(
                "its manifest {} is unreadable: {e}",
                manifest_file.display()
            )]));
        }
    };
    let mut reasons = manifest.differences(&expected(options, &plan));
    let size = std::fs::metadata(&image).map_or(0, |m| m.len());
    if size != manifest.packed {
        reasons.push(format!(
            "{} is {size} bytes, its manifest says {} (damaged or replaced)",
            image.display(),
            manifest.packed
        ));
    }
    Ok((!reasons.is_empty()).then_some(reasons))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "6.1.0-test";

    fn options(root: &Path, text: &str) -> Options {
        let config_path = root.join("etc/kdump.conf");
        std::fs::write(&config_path, text).unwrap();
        let (config, diagnostics) = Config::parse("/etc/kdump.conf", text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        Options {
            root: root.to_owned(),
            config_path,
            config,
            config_text: text.to_owned(),
            settings: FirstKernel::default(),
            release: RELEASE.to_owned(),
            kernel: None,
            output: None,
            all_drivers: false,
            // A static ELF executable the machine has (busybox-static, from install-deps).
            rkdump: PathBuf::from("/bin/busybox"),
        }
    }

    fn system() -> tempfile::TempDir {
        let host = target::tests::system();
        modules::tests::record(host.path());
        std::fs::create_dir_all(host.path().join("boot")).unwrap();
        std::fs::write(
            host.path().join(format!("boot/config-{RELEASE}")),
            "CONFIG_RD_ZSTD=y\n",
        )
        .unwrap();
        host
    }

    fn unpack(image: &Path) -> Vec<cpio::Entry> {
        let packed = std::fs::read(image).unwrap();
        let archive = zstd::decode_all(packed.as_slice()).unwrap();
        crate::format::cpio::entries(&archive).unwrap().0
    }
    use crate::format::cpio;

    #[test]
    fn builds_a_hostonly_image_and_knows_when_it_is_current() {
        let host = system();
        let root = host.path();
        let options = options(root, "core_collector makedumpfile -l -d 31\n");
        assert_eq!(
            check(&options).unwrap().unwrap(),
            [format!(
                "no capture image at {}",
                root.join("var/lib/rkdump/initrd-6.1.0-test.img").display()
            )]
        );
        let built = build(&options).unwrap();
        assert!(built.manifest.compressed);
        assert_eq!(built.manifest.drivers, ["virtio_blk", "virtio_pci"]);
        let names: Vec<String> = unpack(&built.image).into_iter().map(|e| e.name).collect();
        assert!(names.contains(&"init".to_owned()));
        assert!(names.contains(&"etc/kdump.conf".to_owned()));
        // Exactly the target's driver stack and its dependencies.
        assert_eq!(
            built.manifest.modules,
            ["virtio_ring", "virtio", "virtio_blk", "virtio_pci"]
        );
        assert!(names.contains(&format!(
            "lib/modules/{RELEASE}/kernel/drivers/block/virtio_blk.ko"
        )));
        assert!(!names.iter().any(|n| n.contains("virtio_net")), "{names:?}");
        assert_eq!(check(&options).unwrap(), None);
        // The same inputs give the same bytes.
        let first = std::fs::read(&built.image).unwrap();
        build(&options).unwrap();
        assert!(std::fs::read(&built.image).unwrap() == first);
        // kdump.conf changed: a rebuild, saying why.
        let changed = self::options(root, "core_collector makedumpfile -l -d 17\n");
        assert_eq!(
            check(&changed).unwrap().unwrap(),
            [format!("{} changed", root.join("etc/kdump.conf").display())]
        );
        build(&changed).unwrap();
        // A post.d hook: the directory changed and the hook is a new input.
        std::fs::create_dir_all(root.join("etc/kdump/post.d")).unwrap();
        std::fs::copy("/bin/busybox", root.join("etc/kdump/post.d/10-copy")).unwrap();
        let reasons = check(&changed).unwrap().unwrap();
        assert!(
            reasons.contains(&format!(
                "{} appeared",
                root.join("etc/kdump/post.d").display()
            )),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&format!(
                "{} is new",
                root.join("etc/kdump/post.d/10-copy").display()
            )),
            "{reasons:?}"
        );
        let built = build(&changed).unwrap();
        assert_eq!(built.programs[0].what, "post.d hook");
        // force_no_rebuild keeps even a changed image; force_rebuild always rebuilds.
        let no = self::options(root, "force_no_rebuild 1\n");
        assert_eq!(check(&no).unwrap(), None);
        let force = self::options(
            root,
            "core_collector makedumpfile -l -d 17\nforce_rebuild 1\n",
        );
        assert!(check(&force).unwrap().unwrap()[0].contains("force_rebuild is set"));
        let both = self::options(root, "force_rebuild 1\nforce_no_rebuild 1\n");
        assert!(matches!(check(&both), Err(ImageError::ForceBoth(_))));
    }

    #[test]
    fn the_image_s_kdump_conf_names_the_resolved_target() {
        let host = system();
        let root = host.path();
        let built = build(&options(root, "failure_action poweroff\n")).unwrap();
        let packed = std::fs::read(&built.image).unwrap();
        let archive = zstd::decode_all(packed.as_slice()).unwrap();
        let text = String::from_utf8_lossy(&archive);
        assert!(
            text.contains(
                "dracut_args --mount \"UUID=0f6e4c8e-1111-2222-3333-444455556666 /sysroot ext4 errors=remount-ro\"\npath /var/crash\n"
            ),
            "the resolved target is missing"
        );
        assert_eq!(built.manifest.fstype.as_deref(), Some("ext4"));
        // Without CONFIG_RD_ZSTD the image is a plain archive.
        std::fs::write(
            root.join(format!("boot/config-{RELEASE}")),
            "# CONFIG_RD_ZSTD is not set\n",
        )
        .unwrap();
        let built = build(&options(root, "")).unwrap();
        assert!(!built.manifest.compressed);
        assert!(std::fs::read(&built.image).unwrap().starts_with(b"070701"));
    }

    #[test]
    fn an_active_watchdog_without_a_parent_device_brings_the_loaded_watchdog_driver() {
        let host = system();
        let root = host.path();
        // i6300esb on 6.1: the class device is virtual, no device link.
        let dir = root.join("sys/devices/virtual/watchdog/watchdog0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state"), "active\n").unwrap();
        std::fs::create_dir_all(root.join("sys/class/watchdog")).unwrap();
        std::os::unix::fs::symlink(&dir, root.join("sys/class/watchdog/watchdog0")).unwrap();
        std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        std::fs::write(
            root.join("proc/sys/kernel/osrelease"),
            format!("{RELEASE}\n"),
        )
        .unwrap();
        std::fs::write(
            root.join("proc/modules"),
            "i6300esb 16384 1 - Live 0x0\nwatchdog 40960 1 i6300esb, Live 0x0\nvirtio_blk 1 0 - Live 0x0\n",
        )
        .unwrap();
        let modules = root.join(format!("lib/modules/{RELEASE}"));
        let dep = std::fs::read_to_string(modules.join("modules.dep")).unwrap();
        std::fs::write(
            modules.join("modules.dep"),
            format!(
                "{dep}kernel/drivers/watchdog/i6300esb.ko: kernel/drivers/watchdog/watchdog.ko\n\
                 kernel/drivers/watchdog/watchdog.ko:\nkernel/drivers/watchdog/softdog.ko:\n"
            ),
        )
        .unwrap();
        assert_eq!(active_watchdog_drivers(root), ["i6300esb"]);
    }

    #[test]
    fn refusals_skips_and_the_image_s_own_checks() {
        let host = system();
        let root = host.path();
        // An LVM volume: the capture cannot activate it, so no image pretends it can.
        let error = build(&options(root, "xfs LABEL=my dumps\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("on dm-0 (device-mapper or md RAID)"),
            "{error}"
        );
        // A hook without an execute bit is skipped (chmod -x disables it); a named one fails.
        std::fs::create_dir_all(root.join("etc/kdump/pre.d")).unwrap();
        std::fs::write(root.join("etc/kdump/pre.d/00-off"), "#!/bin/sh\n").unwrap();
        let built = build(&options(root, "")).unwrap();
        assert!(built.programs.is_empty());
        let error = check(&options(root, "kdump_pre /etc/kdump/pre.d/00-off\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not executable"), "{error}");
        // The image is root's alone (it may hold the ssh key); a truncated one is rebuilt.
        let options = options(root, "");
        let built = build(&options).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&built.image)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(check(&options).unwrap(), None);
        let data = std::fs::read(&built.image).unwrap();
        std::fs::write(&built.image, &data[..data.len() / 2]).unwrap();
        let reasons = check(&options).unwrap().unwrap();
        assert!(reasons[0].contains("its manifest says"), "{reasons:?}");
        // force_no_rebuild looks at nothing, not even a missing dump path.
        let no = self::options(root, "force_no_rebuild 1\npath /nowhere\n");
        assert_eq!(check(&no).unwrap(), None);
    }

    #[test]
    fn what_kdump_conf_names_must_exist_and_init_must_be_static() {
        let host = system();
        let root = host.path();
        let error = check(&options(root, "kdump_post /usr/local/bin/copy-dump\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "kdump_post /usr/local/bin/copy-dump does not exist or is not executable"
            ),
            "{error}"
        );
        let error = build(&options(root, "extra_bins /bin/nothing\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("extra_bins /bin/nothing"), "{error}");
        let error = build(&options(root, "ssh kdump@10.0.2.100\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("rkdump propagate"), "{error}");
        let mut dynamic = options(root, "");
        dynamic.rkdump = PathBuf::from("/bin/sh");
        let error = build(&dynamic).unwrap_err().to_string();
        assert!(error.contains("dynamically linked"), "{error}");
        assert!(!default_image(root, RELEASE).exists());
    }
}
