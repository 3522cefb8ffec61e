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

/// `mkinitrd` and `rebuild`: build unconditionally.
pub(crate) fn build(request: &Request) -> Result<Built, ServiceError> {
    Ok(image::build(&options(request)?)?)
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
