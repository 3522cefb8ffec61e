//! Where the capture kernel and its image are, and what its command line is made of, found on
//! the running system as kdumpctl's `prepare_kdump_bootinfo` and `prepare_cmdline` find them.
//!
//! The kernel: `KDUMP_KERNEL` (kdump-tools), else for `KDUMP_KERNELVER` (default: the running
//! release) the `BOOT_IMAGE=` of `/proc/cmdline` when it names that release, else
//! `vmlinuz-<release>` in `/boot`, `/boot/efi`, `/efi` or `/`. The image: `--initrd`, else
//! `KDUMP_INITRD`, else rkdump's own `/var/lib/rkdump/initrd-<release>.img`.

use std::path::{Path, PathBuf};

use crate::config::sysconfig::FirstKernel;
use crate::loader::cmdline;

pub(crate) use crate::image::default_image;

/// Why the kernel was not found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BootInfoError {
    /// No candidate exists.
    #[error("no kernel image for release {release} (looked at {})", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoKernel {
        /// The release looked for.
        release: String,
        /// Every path tried.
        tried: Vec<PathBuf>,
    },
    /// The capture image is empty (an interrupted build).
    #[error("the capture image {} is empty: rebuild it", path.display())]
    EmptyImage {
        /// Where it is.
        path: PathBuf,
    },
    /// The capture image is missing.
    #[error("no capture image at {}: build it with `rkdump mkinitrd`, or pass --initrd FILE (or set KDUMP_INITRD)", path.display())]
    NoImage {
        /// Where it was expected.
        path: PathBuf,
    },
}

/// The `BOOT_IMAGE=` path of a command line, without a GRUB device prefix (`(hd0,gpt2)`).
fn boot_image(cmdline_text: &str) -> Option<String> {
    let value = cmdline::split(cmdline_text)
        .into_iter()
        .find_map(|p| p.strip_prefix("BOOT_IMAGE=").map(str::to_owned))?;
    let path = match value.strip_prefix('(') {
        Some(rest) => rest.split_once(')')?.1.to_owned(),
        None => value,
    };
    Some(path)
}

/// Finds the kernel image to load for `release`, under `root`.
pub(crate) fn kernel(
    root: &Path,
    settings: &FirstKernel,
    release: &str,
    proc_cmdline: &str,
) -> Result<PathBuf, BootInfoError> {
    let at = |path: &str| root.join(path.trim_start_matches('/'));
    let mut tried = Vec::new();
    if let Some(kernel) = &settings.kernel {
        let path = at(kernel);
        if path.is_file() {
            return Ok(path);
        }
        tried.push(path);
    } else {
        let name = format!("vmlinuz-{release}");
        // BOOT_IMAGE is relative to the boot partition, which is /boot or /.
        if let Some(image) = boot_image(proc_cmdline).filter(|image| image.ends_with(&name)) {
            for candidate in [at(&image), at(&format!("/boot{image}"))] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
                tried.push(candidate);
            }
        }
        for dir in ["/boot", "/boot/efi", "/efi", "/"] {
            let candidate = at(dir).join(&name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
    }
    Err(BootInfoError::NoKernel {
        release: release.to_owned(),
        tried,
    })
}

/// Finds the capture image: `explicit` (`--initrd`), `KDUMP_INITRD`, or rkdump's own.
pub(crate) fn image(
    root: &Path,
    settings: &FirstKernel,
    release: &str,
    explicit: Option<&Path>,
) -> Result<PathBuf, BootInfoError> {
    let path = match (explicit, &settings.initrd) {
        (Some(path), _) => path.to_owned(),
        (None, Some(initrd)) => root.join(initrd.trim_start_matches('/')),
        (None, None) => default_image(root, release),
    };
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() > 0 => Ok(path),
        Ok(meta) if meta.is_file() => Err(BootInfoError::EmptyImage { path }),
        _ => Err(BootInfoError::NoImage { path }),
    }
}

pub(crate) use crate::image::active_watchdog_drivers;

/// The active watchdogs' drivers that have a `pretimeout` parameter, as kdumpctl appends
/// `<driver>.pretimeout=0` for them.
pub(crate) fn pretimeout_watchdogs(root: &Path) -> Vec<String> {
    active_watchdog_drivers(root)
        .into_iter()
        .filter(|driver| {
            root.join("sys/module")
                .join(driver)
                .join("parameters/pretimeout")
                .exists()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, path: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn kernel_from_boot_image_then_boot() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let settings = FirstKernel::default();
        let release = "6.1.0-56-cloud-amd64";
        touch(root, "boot/vmlinuz-6.1.0-56-cloud-amd64");
        // GRUB on a separate /boot partition: BOOT_IMAGE is relative to it.
        let cmdline = "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.1.0-56-cloud-amd64 root=UUID=x ro";
        assert_eq!(
            kernel(root, &settings, release, cmdline).unwrap(),
            root.join("boot/vmlinuz-6.1.0-56-cloud-amd64")
        );
        // /boot on the root filesystem.
        touch(root, "vmlinuz-6.1.0-56-cloud-amd64");
        let cmdline = "BOOT_IMAGE=/vmlinuz-6.1.0-56-cloud-amd64 ro";
        assert_eq!(
            kernel(root, &settings, release, cmdline).unwrap(),
            root.join("vmlinuz-6.1.0-56-cloud-amd64")
        );
        let error = kernel(root, &settings, "6.12.0", "")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no kernel image for release 6.12.0"),
            "{error}"
        );
        assert!(error.contains("boot/vmlinuz-6.12.0"), "{error}");
        let settings = FirstKernel {
            kernel: Some("/var/lib/kdump/vmlinuz".to_owned()),
            ..FirstKernel::default()
        };
        assert!(kernel(root, &settings, release, "").is_err());
        touch(root, "var/lib/kdump/vmlinuz");
        assert_eq!(
            kernel(root, &settings, release, "").unwrap(),
            root.join("var/lib/kdump/vmlinuz")
        );
    }

    #[test]
    fn image_order() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let settings = FirstKernel::default();
        let error = image(root, &settings, "6.1", None).unwrap_err().to_string();
        assert!(error.contains("var/lib/rkdump/initrd-6.1.img"), "{error}");
        touch(root, "var/lib/rkdump/initrd-6.1.img");
        assert_eq!(
            image(root, &settings, "6.1", None).unwrap(),
            root.join("var/lib/rkdump/initrd-6.1.img")
        );
        let explicit = root.join("mine.img");
        assert!(image(root, &settings, "6.1", Some(&explicit)).is_err());
        std::fs::write(&explicit, b"").unwrap();
        let error = image(root, &settings, "6.1", Some(&explicit)).unwrap_err();
        assert!(error.to_string().contains("is empty"), "{error}");
    }
}
