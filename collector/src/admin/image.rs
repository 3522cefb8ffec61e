//! `rkdump mkinitrd` and `rkdump rebuild`, and the rebuild check of `start`: the first kernel's
//! settings and kdump.conf turned into [`crate::image::Options`], then [`crate::image`] builds
//! or checks.
//!
//! `start` rebuilds only rkdump's own image (`/var/lib/rkdump/initrd-<release>.img`): an image
//! named by `--initrd` or `KDUMP_INITRD` is the user's, loaded as it is.

use std::path::PathBuf;

use super::bootinfo;
use super::service::{self, Options as ServiceOptions, ServiceError};
use crate::image::{self, Built};

/// What `mkinitrd` is asked for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The system's root.
    pub root: PathBuf,
    /// kdump.conf.
    pub config: PathBuf,
    /// The kernel release (default: `KDUMP_KERNELVER`, else the running one).
    pub release: Option<String>,
    /// The output file (default: rkdump's own image for the release).
    pub output: Option<PathBuf>,
    /// Every storage, network and watchdog driver.
    pub all_drivers: bool,
    /// How to write it.
    pub how: How,
}

/// How `mkinitrd` writes the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum How {
    /// rkdump's own archive.
    Archive,
    /// The files into a directory (dracut's `$initdir`, from the dracut module).
    Tree(PathBuf),
    /// dracut with rkdump's module (`dracut -m rkdump`).
    Dracut,
}

/// Where dracut finds rkdump's module (the package installs it there).
pub(crate) const DRACUT_MODULE: &str = "/usr/lib/dracut/modules.d/99rkdump/module-setup.sh";

/// Runs `dracut -m rkdump` for `options`: only rkdump's module (its `check` makes dracut take
/// it only when asked), none of the system's dracut configuration, the image written where
/// rkdump's own would be; then records its manifest.
fn dracut(options: &image::Options, config: &std::path::Path) -> Result<Built, ServiceError> {
    let tool_error = |why: String| ServiceError::Dracut(why);
    if !options
        .root
        .join(DRACUT_MODULE.trim_start_matches('/'))
        .is_file()
    {
        return Err(tool_error(format!(
            "{DRACUT_MODULE} is missing: install rkdump's dracut module (dracut-module/99rkdump)"
        )));
    }
    // Fail before dracut runs when the plan cannot be made (a missing hook, ...).
    image::plan(options)?;
    let output = options.output();
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| tool_error(format!("{}: {e}", parent.display())))?;
    }
    let compress = image::kernel_unpacks_zstd(&options.root, &options.release);
    // None of the system's dracut configuration: an empty directory of our own.
    // Made new by mkdtemp (mode 0700): nobody can plant a .conf in it.
    let confdir = nix::unistd::mkdtemp(&std::env::temp_dir().join("rkdump-dracut.XXXXXX"))
        .map_err(|e| {
            tool_error(format!(
                "making dracut's empty configuration directory: {e}"
            ))
        })?;
    let mut command = std::process::Command::new("dracut");
    command
        .args([
            "--force",
            "--quiet",
            "--modules",
            "rkdump",
            "--no-early-microcode",
        ])
        .args(["--conf", "/dev/null", "--confdir"])
        .arg(&confdir)
        .arg(if compress { "--zstd" } else { "--no-compress" })
        .arg("--kver")
        .arg(&options.release)
        .arg(&output)
        .env("RKDUMP_CONFIG", config)
        .env("RKDUMP_BINARY", &options.rkdump)
        .env(
            "RKDUMP_ALL_DRIVERS",
            if options.all_drivers { "1" } else { "0" },
        );
    let result = command.output();
    let _ = std::fs::remove_dir(&confdir);
    let result = result.map_err(|e| tool_error(format!("running dracut: {e}")))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        let last: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(3)
            .collect();
        let last: Vec<&str> = last.into_iter().rev().map(str::trim).collect();
        return Err(tool_error(format!(
            "dracut -m rkdump failed ({}): {}",
            result.status,
            last.join(" / ")
        )));
    }
    let bytes =
        std::fs::read(&output).map_err(|e| tool_error(format!("{}: {e}", output.display())))?;
    let read = super::initramfs::read(&bytes)
        .map_err(|e| tool_error(format!("{}: {e}", output.display())))?;
    // dracut's image must be rkdump's: /init the binary that planned it.
    let init_size = std::fs::metadata(&options.rkdump).map(|m| m.len()).ok();
    let init = read.entries.iter().find(|e| e.name == "init");
    if init.map(|e| e.size) != init_size {
        return Err(tool_error(format!(
            "{}: dracut did not take rkdump's module (its /init is not {})",
            output.display(),
            options.rkdump.display()
        )));
    }
    let unpacked = read.unpacked;
    Ok(image::record_external(options, unpacked, compress)?)
}

/// The rkdump binary running now, which becomes the image's `/init`.
fn this_binary() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// The image options for `request`, read from the system.
pub(crate) fn options(request: &Request) -> Result<image::Options, ServiceError> {
    let root = &request.root;
    let (config, _warnings) = service::kdump_conf(&request.config)?;
    let config_text = std::fs::read_to_string(&request.config).unwrap_or_default();
    let settings = service::first_kernel_settings(root)?;
    let release = request
        .release
        .clone()
        .or_else(|| settings.kernel_version.clone())
        .unwrap_or_else(service::running_release);
    let proc_cmdline = std::fs::read_to_string(root.join("proc/cmdline")).unwrap_or_default();
    let kernel = bootinfo::kernel(root, &settings, &release, &proc_cmdline).ok();
    Ok(image::Options {
        root: root.clone(),
        config_path: request.config.clone(),
        config,
        config_text,
        settings,
        release,
        kernel,
        output: request.output.clone(),
        all_drivers: request.all_drivers,
        rkdump: this_binary(),
    })
}

/// What `mkinitrd` made.
#[derive(Debug)]
pub(crate) enum Made {
    /// An image (rkdump's or dracut's) with its manifest.
    Image(Box<Built>),
    /// Files written into a directory, and the modules among them.
    Tree(PathBuf, Vec<String>),
}

/// `mkinitrd` and `rebuild`: build unconditionally.
pub(crate) fn build(request: &Request) -> Result<Made, ServiceError> {
    let options = options(request)?;
    Ok(match &request.how {
        How::Archive => Made::Image(Box::new(image::build(&options)?)),
        How::Dracut => Made::Image(Box::new(dracut(&options, &request.config)?)),
        How::Tree(dir) => Made::Tree(dir.clone(), image::build_tree(&options, dir)?),
    })
}

/// What `start` did about the image before loading.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// The image is the user's (`--initrd`, `KDUMP_INITRD`), or up to date.
    AsIs,
    /// Rebuilt, for these reasons.
    Rebuilt(Vec<String>, Box<Built>),
}

/// `start`'s step before loading: rebuild rkdump's own image for `release` when it is missing
/// or no longer matches the system.
pub(crate) fn prepare(
    options: &ServiceOptions,
    explicit_image: bool,
    release: &str,
) -> Result<Prepared, ServiceError> {
    if explicit_image {
        return Ok(Prepared::AsIs);
    }
    let request = Request {
        root: options.root.clone(),
        config: options.config.clone(),
        release: Some(release.to_owned()),
        output: None,
        all_drivers: false,
        how: How::Archive,
    };
    let mut image_options = self::options(&request)?;
    if let Some(kernel) = &options.kernel {
        image_options.kernel = Some(kernel.clone());
    }
    match image::check(&image_options)? {
        None => Ok(Prepared::AsIs),
        Some(reasons) => {
            let built = image::build(&image_options)?;
            Ok(Prepared::Rebuilt(reasons, Box::new(built)))
        }
    }
}

/// One line for the user about a built image.
pub(crate) fn summary(built: &Built) -> String {
    let manifest = &built.manifest;
    format!(
        "rkdump: wrote {} for kernel {}: {} bytes ({}), {} bytes unpacked; {} module(s), {} \
         program(s); dump target: {}",
        built.image.display(),
        manifest.release,
        manifest.packed,
        if manifest.compressed {
            "zstd"
        } else {
            "plain cpio"
        },
        manifest.unpacked,
        manifest.modules.len(),
        built.programs.len(),
        built.target
    )
}
