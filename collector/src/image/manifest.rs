//! The manifest beside each image (`initrd-<release>.img.json`): what the image was built from,
//! so that `start` can tell whether it is still right without unpacking it.
//!
//! kdumpctl's checks, from the recorded state: every input file (kdump.conf, the sysconfig
//! files, the kernel, its modules.dep, hooks and hook directories, `extra_bins`, the ssh files,
//! `/etc/fstab`, the rkdump binary) with its size and modification time; the resolved target
//! (device, filesystem type); the hostonly drivers (the target's block stack and the active
//! watchdogs). Any difference is a reason to rebuild, named for the user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Manifest format version.
pub(crate) const VERSION: u32 = 1;

/// One input file's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Input {
    /// Its path on the system.
    pub path: String,
    /// Size in bytes (`None`: it did not exist, which is itself recorded).
    pub size: Option<u64>,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: Option<i128>,
}

impl Input {
    /// The current state of `path`.
    pub(crate) fn read(path: &Path) -> Self {
        let meta = std::fs::metadata(path).ok();
        Self {
            path: path.display().to_string(),
            size: meta.as_ref().map(|m| if m.is_dir() { 0 } else { m.len() }),
            mtime_ns: meta
                .as_ref()
                .map(|m| i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())),
        }
    }
}

/// What an image was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// [`VERSION`].
    pub version: u32,
    /// The rkdump version that built it.
    pub rkdump: String,
    /// The capture kernel's release.
    pub release: String,
    /// The resolved target, as the image's kdump.conf says it.
    pub target: String,
    /// The target's persistent device name, if it has a device.
    pub device: Option<String>,
    /// Its filesystem type.
    pub fstype: Option<String>,
    /// The hostonly drivers: the target's block stack and NICs, the active watchdogs.
    pub drivers: Vec<String>,
    /// Every module in the image.
    pub modules: Vec<String>,
    /// The input files.
    pub inputs: Vec<Input>,
    /// The image's size.
    pub packed: u64,
    /// The bytes its files take unpacked.
    pub unpacked: u64,
    /// Whether it is zstd-compressed.
    pub compressed: bool,
}

/// The state a fresh build would record, to compare with a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// The release.
    pub release: String,
    /// As [`Manifest::target`].
    pub target: String,
    /// As [`Manifest::device`].
    pub device: Option<String>,
    /// As [`Manifest::fstype`].
    pub fstype: Option<String>,
    /// As [`Manifest::drivers`].
    pub drivers: Vec<String>,
    /// The input files, read now.
    pub inputs: Vec<Input>,
}

impl Manifest {
    /// Parses a manifest file's text.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let manifest: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if manifest.version != VERSION {
            return Err(format!(
                "manifest version {} (this rkdump writes {VERSION})",
                manifest.version
            ));
        }
        Ok(manifest)
    }

    /// The manifest as a file's text.
    pub(crate) fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        text.push('\n');
        text
    }

    /// Why an image built as this manifest says differs from what `expected` would build;
    /// empty when it does not.
    pub(crate) fn differences(&self, expected: &Expected) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.rkdump != env!("CARGO_PKG_VERSION") {
            reasons.push(format!(
                "built by rkdump {}, this is {}",
                self.rkdump,
                env!("CARGO_PKG_VERSION")
            ));
        }
        if self.release != expected.release {
            reasons.push(format!(
                "built for kernel {}, not {}",
                self.release, expected.release
            ));
        }
        for input in &expected.inputs {
            match self.inputs.iter().find(|i| i.path == input.path) {
                None if input.size.is_some() => {
                    reasons.push(format!("{} is new", input.path));
                }
                None => {}
                Some(old) if old.size.is_some() && input.size.is_none() => {
                    reasons.push(format!("{} was removed", input.path));
                }
                Some(old) if old.size.is_none() && input.size.is_some() => {
                    reasons.push(format!("{} appeared", input.path));
                }
                Some(old) if old != input => reasons.push(format!("{} changed", input.path)),
                Some(_) => {}
            }
        }
        for old in &self.inputs {
            if old.size.is_some() && !expected.inputs.iter().any(|i| i.path == old.path) {
                reasons.push(format!("{} is no longer used", old.path));
            }
        }
        if self.target != expected.target
            || self.device != expected.device
            || self.fstype != expected.fstype
        {
            reasons.push(format!(
                "the dump target changed (was {}, now {})",
                self.target, expected.target
            ));
        }
        let mut old = self.drivers.clone();
        old.sort();
        let mut new = expected.drivers.clone();
        new.sort();
        if old != new {
            let added: Vec<&String> = new.iter().filter(|d| !old.contains(d)).collect();
            let removed: Vec<&String> = old.iter().filter(|d| !new.contains(d)).collect();
            let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            reasons.push(match (added.is_empty(), removed.is_empty()) {
                (false, true) => format!("new drivers needed: {}", list(&added)),
                (true, false) => format!("drivers no longer needed: {}", list(&removed)),
                _ => format!(
                    "the drivers changed (+{}; -{})",
                    list(&added),
                    list(&removed)
                ),
            });
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(inputs: Vec<Input>) -> Manifest {
        Manifest {
            version: VERSION,
            rkdump: env!("CARGO_PKG_VERSION").into(),
            release: "6.1.0-57-cloud-amd64".into(),
            target: "ext4 UUID=ab".into(),
            device: Some("UUID=ab".into()),
            fstype: Some("ext4".into()),
            drivers: vec!["virtio_blk".into(), "virtio_pci".into()],
            modules: vec!["virtio_blk".into()],
            inputs,
            packed: 1,
            unpacked: 2,
            compressed: true,
        }
    }

    #[test]
    fn round_trip_and_version() {
        let m = manifest(vec![]);
        assert_eq!(Manifest::parse(&m.to_text()).unwrap(), m);
        let old = m.to_text().replace("\"version\": 1", "\"version\": 0");
        assert!(Manifest::parse(&old).unwrap_err().contains("version 0"));
        assert!(Manifest::parse("{").is_err());
    }

    #[test]
    fn every_difference_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/kdump.conf"), "path /var/crash\n").unwrap();
        let conf = Input::read(&root.join("etc/kdump.conf"));
        let hook = Input::read(&root.join("usr/local/bin/hook"));
        assert_eq!(hook.size, None);
        let m = manifest(vec![conf.clone(), hook.clone()]);
        let same = Expected {
            release: m.release.clone(),
            target: m.target.clone(),
            device: m.device.clone(),
            fstype: m.fstype.clone(),
            drivers: vec!["virtio_pci".into(), "virtio_blk".into()],
            inputs: vec![conf.clone(), hook],
        };
        assert_eq!(m.differences(&same), Vec::<String>::new());
        std::fs::write(root.join("etc/kdump.conf"), "path /var/crash2\n").unwrap();
        std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
        std::fs::write(root.join("usr/local/bin/hook"), "#!/bin/sh\n").unwrap();
        let changed = Expected {
            release: "6.12".into(),
            target: "xfs LABEL=d".into(),
            drivers: vec!["virtio_blk".into(), "virtio_pci".into(), "i6300esb".into()],
            inputs: vec![
                Input::read(&root.join("etc/kdump.conf")),
                Input::read(&root.join("usr/local/bin/hook")),
            ],
            ..same
        };
        assert_eq!(
            m.differences(&changed),
            [
                "built for kernel 6.1.0-57-cloud-amd64, not 6.12".to_owned(),
                format!("{} changed", conf.path),
                format!("{} appeared", root.join("usr/local/bin/hook").display()),
                "the dump target changed (was ext4 UUID=ab, now xfs LABEL=d)".to_owned(),
                "new drivers needed: i6300esb".to_owned(),
            ]
        );
        let fewer = Expected {
            inputs: vec![],
            drivers: vec!["virtio_blk".into()],
            ..changed
        };
        let reasons = m.differences(&fewer);
        assert!(reasons.contains(&format!("{} is no longer used", conf.path)));
        assert!(reasons.contains(&"drivers no longer needed: virtio_pci".to_owned()));
    }
}
