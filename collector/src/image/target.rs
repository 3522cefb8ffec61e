//! Where the dump goes, resolved on the running system for the capture image: the device by a
//! persistent name, its filesystem type and mount options, the path within that filesystem,
//! and the image's own kdump.conf that says so.
//!
//! kdump-utils' rules (mkdumprd): with no target line, the target is the filesystem that holds
//! `path` (`/var/crash` on the root filesystem, or whatever is mounted on `/var` or
//! `/var/crash`, NFS included), mounted in the capture as in the first kernel, with `path` made
//! relative to that mount point; a device named by a kernel name (`/dev/vdb`) is written by a
//! persistent one (`UUID=`), since names can change between kernels. fstab's options are
//! kept, except that the capture mounts now and writable (`ro`, `noauto`, `nofail` dropped).
//!
//! The image's kdump.conf is the user's file with the target, `path` and `dracut_args` lines
//! turned into comments, and the resolved lines after them: the capture reads one answer and
//! never has to look for the root filesystem (kdumpctl removes `root=` from its command line).

use std::path::Path;

use super::mountinfo::{self, Mount};
use super::sysfs;
use crate::config::kdump_conf::{self, Config, DeviceSpec, Target};

/// Why the target cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    /// `path` does not exist (kdump-utils: 'Dump path "P" does not exist in dump target').
    #[error(
        "the dump path {path} does not exist on this system: create it or fix `path` in kdump.conf"
    )]
    NoPath {
        /// The path.
        path: String,
    },
    /// The device is not on this system.
    #[error("the dump device {device} ({}) does not exist: fix the target line of kdump.conf or attach the disk", node.display())]
    NoDevice {
        /// As kdump.conf names it.
        device: String,
        /// The node looked at.
        node: std::path::PathBuf,
    },
    /// mountinfo cannot be read.
    #[error("{0}")]
    Mountinfo(String),
    /// No mount holds the path (an empty mount table).
    #[error("no mounted filesystem holds {0}")]
    NotMounted(String),
}

/// A resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The lines that replace the target and `path` lines in the image's kdump.conf.
    pub lines: Vec<String>,
    /// One line for people: what the capture will write to.
    pub description: String,
    /// The block device (kernel name, `vda1`) whose stack the image needs, for local targets.
    pub block: Option<String>,
    /// The persistent name of that device, as written into the image.
    pub persistent: Option<String>,
    /// The filesystem type (`ext4`, `nfs4`), for local and NFS targets.
    pub fstype: Option<String>,
    /// The target is on the network (NFS, ssh).
    pub network: bool,
}

/// The dump path of a configuration: `path`, or Debian's `KDUMP_COREDIR` when kdump.conf has
/// no `path` line.
pub(crate) fn dump_path(config: &Config, coredir: Option<&str>) -> String {
    match (config.path_line, coredir) {
        (0, Some(coredir)) => coredir.to_owned(),
        _ => config.path.clone(),
    }
}

/// The first persistent name of a block device, else its kernel name.
fn persistent(root: &Path, block: &str) -> String {
    sysfs::persistent_names(root, block)
        .into_iter()
        .next()
        .unwrap_or_else(|| format!("/dev/{block}"))
}

/// The `dracut_args --mount "DEVICE MOUNTPOINT FSTYPE OPTIONS"` line, each field escaped as
/// fstab escapes it (the parser undoes it).
fn mount_line(device: &str, mountpoint: &str, fstype: &str, options: &str) -> String {
    let fields: Vec<String> = [device, mountpoint, fstype, options]
        .iter()
        .map(|f| kdump_conf::escape_octal(f))
        .collect();
    // Inside the double quotes a backslash escapes the next character (shell rules, as
    // dracut_args reads): the octal escapes' backslashes are doubled.
    format!(
        "dracut_args --mount \"{}\"",
        fields.join(" ").replace('\\', "\\\\")
    )
}

/// The fstab options of the filesystem mounted on `mountpoint`, or `defaults`.
fn fstab_options(root: &Path, mountpoint: &str) -> String {
    let text = std::fs::read_to_string(root.join("etc/fstab")).unwrap_or_default();
    mountinfo::parse_fstab(&text)
        .into_iter()
        .rev()
        .find(|e| e.file == mountpoint)
        .map_or_else(|| "defaults".to_owned(), |e| e.options)
}

/// Resolves the filesystem holding `path` (no target line).
fn holding_path(root: &Path, path: &str, mounts: &[Mount]) -> Result<Resolved, TargetError> {
    let host = root.join(path.trim_start_matches('/'));
    let real = std::fs::canonicalize(&host).map_err(|_| TargetError::NoPath {
        path: path.to_owned(),
    })?;
    let real = format!(
        "/{}",
        real.strip_prefix(root)
            .unwrap_or(&real)
            .to_string_lossy()
            .trim_start_matches('/')
    );
    let mount =
        mountinfo::holding(mounts, &real).ok_or_else(|| TargetError::NotMounted(real.clone()))?;
    let btrfs = mount.fstype == "btrfs";
    // Within the filesystem: the mount's own root (a bind mount) joined with the rest; a btrfs
    // subvolume is mounted as such in the capture too (`subvol=`), and the path is within it.
    let relative = mountinfo::relative_to(&real, &mount.mountpoint);
    let inside = if btrfs {
        relative
    } else {
        super::tree::normalize(&mount.root, relative.trim_start_matches('/'))
    };
    let mut options = mountinfo::capture_options(&fstab_options(root, &mount.mountpoint));
    if btrfs && mount.root != "/" && !options.split(',').any(|o| o.starts_with("subvol=")) {
        let subvol = format!("subvol={}", mount.root.trim_start_matches('/'));
        options = if options == "defaults" {
            subvol
        } else {
            format!("{options},{subvol}")
        };
    }
    let network = mount.fstype.starts_with("nfs");
    let (device, block) = if network {
        (mount.source.clone(), None)
    } else {
        // Filesystems with anonymous device numbers (btrfs: 0:N) are found by their source.
        let block = sysfs::block_name_of_dev(root, mount.dev)
            .or_else(|| {
                mount
                    .source
                    .starts_with("/dev/")
                    .then(|| sysfs::block_name(&root.join(mount.source.trim_start_matches('/'))))
                    .flatten()
            })
            .ok_or_else(|| TargetError::NoDevice {
                device: mount.source.clone(),
                node: root.join(format!("sys/dev/block/{}:{}", mount.dev.0, mount.dev.1)),
            })?;
        (persistent(root, &block), Some(block))
    };
    let capture_mountpoint = if mount.mountpoint == "/" {
        "/sysroot".to_owned()
    } else {
        mount.mountpoint.clone()
    };
    Ok(Resolved {
        lines: vec![
            mount_line(&device, &capture_mountpoint, &mount.fstype, &options),
            format!("path {inside}"),
        ],
        description: format!(
            "{} {device} (mounted on {} here), directory {inside}",
            mount.fstype, mount.mountpoint
        ),
        persistent: block.is_some().then(|| device.clone()),
        block,
        fstype: Some(mount.fstype.clone()),
        network,
    })
}

/// A device named in kdump.conf: its block name and the persistent name to write.
fn device_of(root: &Path, spec: &DeviceSpec) -> Result<(String, String), TargetError> {
    let node = spec.node(root);
    let block = sysfs::block_name(&node)
        .filter(|_| node.exists())
        .ok_or_else(|| TargetError::NoDevice {
            device: spec.to_string(),
            node: node.clone(),
        })?;
    let name = match spec {
        DeviceSpec::Path(path) if !path.starts_with("/dev/disk/") => persistent(root, &block),
        other => other.to_string(),
    };
    Ok((block, name))
}

/// Resolves the target of `config` on the system under `root`; `coredir` is Debian's
/// `KDUMP_COREDIR`.
pub(crate) fn resolve(
    root: &Path,
    config: &Config,
    coredir: Option<&str>,
) -> Result<Resolved, TargetError> {
    let path = dump_path(config, coredir);
    let path_line = format!("path {path}");
    match &config.target {
        Target::RootFs => {
            let text = std::fs::read_to_string(root.join("proc/self/mountinfo"))
                .map_err(|e| TargetError::Mountinfo(format!("/proc/self/mountinfo: {e}")))?;
            let mounts =
                mountinfo::parse(&text).map_err(|e| TargetError::Mountinfo(e.to_string()))?;
            holding_path(root, &path, &mounts)
        }
        Target::Filesystem { fstype, device } => {
            let (block, name) = device_of(root, device)?;
            Ok(Resolved {
                lines: vec![format!("{fstype} {name}"), path_line],
                description: format!("{fstype} {name} ({block}), directory {path}"),
                block: Some(block),
                persistent: Some(name),
                fstype: Some(fstype.clone()),
                network: false,
            })
        }
        Target::Raw(device) => {
            let (block, name) = device_of(root, device)?;
            Ok(Resolved {
                lines: vec![format!("raw {name}")],
                description: format!("raw device {name} ({block})"),
                block: Some(block),
                persistent: Some(name),
                fstype: None,
                network: false,
            })
        }
        Target::Nfs { export, v4 } => Ok(Resolved {
            lines: vec![
                format!("{} {export}", if *v4 { "nfs4" } else { "nfs" }),
                path_line,
            ],
            description: format!("NFS {export}, directory {path}"),
            block: None,
            persistent: None,
            fstype: Some(if *v4 { "nfs4" } else { "nfs" }.to_owned()),
            network: true,
        }),
        Target::Ssh(server) => Ok(Resolved {
            lines: vec![format!("ssh {server}"), path_line],
            description: format!("ssh {server}, directory {path}"),
            block: None,
            persistent: None,
            fstype: None,
            network: true,
        }),
        Target::Mount {
            device,
            mountpoint,
            fstype,
            options,
        } => {
            let network = fstype.starts_with("nfs");
            let (block, name) = match DeviceSpec::parse(device) {
                Some(spec) if !network => {
                    let (block, name) = device_of(root, &spec)?;
                    (Some(block), name)
                }
                _ => (None, device.clone()),
            };
            let options = mountinfo::capture_options(options);
            Ok(Resolved {
                lines: vec![mount_line(&name, mountpoint, fstype, &options), path_line],
                description: format!("{fstype} {name} on {mountpoint}, directory {path}"),
                persistent: block.is_some().then(|| name.clone()),
                block,
                fstype: Some(fstype.clone()),
                network,
            })
        }
    }
}

/// The image's kdump.conf: `text` with its target, `path` and `dracut_args` lines commented
/// out (and the first kernel's switches, which mean nothing in the capture), then the resolved
/// lines.
pub(crate) fn image_conf(source: &str, text: &str, resolved: &Resolved) -> String {
    let mut out = format!(
        "# The capture image's kdump.conf, written by rkdump mkinitrd from {source}:\n\
         # the target is resolved at the end.\n"
    );
    for line in text.lines() {
        let replaced = kdump_conf::split_line(line).is_some_and(|(directive, _)| {
            kdump_conf::is_target_directive(directive)
                || kdump_conf::is_first_kernel_directive(directive)
                || matches!(directive, "path" | "dracut_args")
        });
        if replaced {
            out.push_str("#(resolved below) ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("\n# resolved: {}\n", resolved.description));
    for line in &resolved.lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A recorded system: sysfs, the root ext4 on vda1 in mountinfo and fstab, /var/crash.
    pub(crate) fn system() -> tempfile::TempDir {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        sysfs::tests::record_sysfs(root);
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        std::fs::create_dir_all(root.join("var/crash")).unwrap();
        std::fs::write(
            root.join("proc/self/mountinfo"),
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             27 1 254:1 / / ro,relatime - ext4 /dev/vda1 ro,errors=remount-ro\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/fstab"),
            "UUID=0f6e4c8e-1111-2222-3333-444455556666 / ext4 errors=remount-ro 0 1\n",
        )
        .unwrap();
        host
    }

    fn config(text: &str) -> Config {
        let (config, diagnostics) = Config::parse("/etc/kdump.conf", text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        config
    }

    #[test]
    fn no_target_line_means_the_filesystem_holding_path() {
        let host = system();
        let root = host.path();
        let resolved = resolve(root, &config(""), None).unwrap();
        assert_eq!(
            resolved.lines,
            [
                "dracut_args --mount \"UUID=0f6e4c8e-1111-2222-3333-444455556666 /sysroot ext4 errors=remount-ro\"",
                "path /var/crash"
            ]
        );
        assert_eq!(resolved.block.as_deref(), Some("vda1"));
        assert!(!resolved.network);
        // The capture reads the resolved lines back as one --mount target.
        let conf = image_conf(
            "/etc/kdump.conf",
            "core_collector makedumpfile -l -d 31\n",
            &resolved,
        );
        let (back, diagnostics) = Config::parse("/etc/kdump.conf", &conf);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(
            back.target,
            Target::Mount {
                device: "UUID=0f6e4c8e-1111-2222-3333-444455556666".into(),
                mountpoint: "/sysroot".into(),
                fstype: "ext4".into(),
                options: "errors=remount-ro".into()
            }
        );
        assert_eq!(back.path, "/var/crash");
        assert_eq!(back.core_collector, "makedumpfile -l -d 31");
        // Debian's KDUMP_COREDIR when there is no path line; a missing one is an error.
        std::fs::create_dir_all(root.join("srv/dumps")).unwrap();
        let resolved = resolve(root, &config(""), Some("/srv/dumps")).unwrap();
        assert_eq!(resolved.lines[1], "path /srv/dumps");
        let error = resolve(root, &config("path /nowhere\n"), None).unwrap_err();
        assert!(
            error.to_string().contains("/nowhere does not exist"),
            "{error}"
        );
    }

    #[test]
    fn a_separate_var_and_an_nfs_dump_directory() {
        let host = system();
        let root = host.path();
        let mountinfo = "27 1 254:1 / / rw - ext4 /dev/vda1 rw\n\
                         30 27 253:0 / /var rw,noatime - xfs /dev/mapper/vg-var rw\n";
        std::fs::write(root.join("proc/self/mountinfo"), mountinfo).unwrap();
        std::fs::write(
            root.join("etc/fstab"),
            "/dev/mapper/vg-var /var xfs noatime,nofail 0 2\n",
        )
        .unwrap();
        let resolved = resolve(root, &config(""), None).unwrap();
        assert_eq!(
            resolved.lines,
            [
                "dracut_args --mount \"UUID=aaaa-bbbb /var xfs noatime\"",
                "path /crash"
            ]
        );
        assert_eq!(resolved.block.as_deref(), Some("dm-0"));
        let nfs = format!(
            "{mountinfo}31 30 0:44 / /var/crash rw - nfs4 10.0.2.100:/export rw,vers=4.1\n"
        );
        std::fs::write(root.join("proc/self/mountinfo"), nfs).unwrap();
        let resolved = resolve(root, &config(""), None).unwrap();
        assert!(resolved.network);
        assert_eq!(
            resolved.lines,
            [
                "dracut_args --mount \"10.0.2.100:/export /var/crash nfs4 defaults\"",
                "path /"
            ]
        );
    }

    #[test]
    fn a_btrfs_subvolume_and_a_mount_point_with_a_space() {
        let host = system();
        let root = host.path();
        // Debian's btrfs layout: the root is subvolume @ of vda1, with an anonymous dev number.
        std::fs::write(
            root.join("proc/self/mountinfo"),
            "27 1 0:31 /@ / rw,relatime - btrfs /dev/vda1 rw,space_cache=v2,subvol=/@\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/fstab"), "UUID=x / btrfs defaults 0 0\n").unwrap();
        let resolved = resolve(root, &config(""), None).unwrap();
        assert_eq!(
            resolved.lines,
            [
                "dracut_args --mount \"UUID=0f6e4c8e-1111-2222-3333-444455556666 /sysroot btrfs subvol=@\"",
                "path /var/crash"
            ]
        );
        // A mount point with a space and a # goes through kdump.conf's parser intact.
        std::fs::create_dir_all(root.join("srv/dump dir#1")).unwrap();
        std::fs::write(
            root.join("proc/self/mountinfo"),
            "27 1 254:1 / / rw - ext4 /dev/vda1 rw\n30 27 254:1 / /srv/dump\\040dir#1 rw - ext4 /dev/vda1 rw\n",
        )
        .unwrap();
        let resolved = resolve(root, &config("path /srv/dump dir#1\n"), None).unwrap();
        let conf = image_conf("/etc/kdump.conf", "", &resolved);
        let (back, diagnostics) = Config::parse("/etc/kdump.conf", &conf);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        match back.target {
            Target::Mount { mountpoint, .. } => assert_eq!(mountpoint, "/srv/dump dir#1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn explicit_targets_get_persistent_names() {
        let host = system();
        let root = host.path();
        let resolved = resolve(root, &config("ext4 /dev/vda1\npath /dumps\n"), None).unwrap();
        assert_eq!(
            resolved.lines,
            [
                "ext4 UUID=0f6e4c8e-1111-2222-3333-444455556666",
                "path /dumps"
            ]
        );
        let resolved = resolve(root, &config("xfs LABEL=my dumps\n"), None).unwrap();
        assert_eq!(resolved.lines[0], "xfs LABEL=my dumps");
        assert_eq!(resolved.block.as_deref(), Some("dm-0"));
        // No persistent name: the kernel name stays.
        let resolved = resolve(root, &config("raw /dev/vdb\n"), None).unwrap();
        assert_eq!(resolved.lines, ["raw /dev/vdb"]);
        let error = resolve(root, &config("ext4 UUID=feed\n"), None).unwrap_err();
        assert!(
            error.to_string().contains("dump device UUID=feed"),
            "{error}"
        );
        let resolved = resolve(root, &config("ssh kdump@10.0.2.100\n"), None).unwrap();
        assert!(resolved.network && resolved.block.is_none());
        let resolved = resolve(root, &config("nfs 10.0.2.100:/export\n"), None).unwrap();
        assert_eq!(resolved.fstype.as_deref(), Some("nfs"));
    }

    #[test]
    fn the_image_conf_comments_out_what_it_replaces() {
        let resolved = Resolved {
            lines: vec!["ext4 UUID=ab".into(), "path /x".into()],
            description: "ext4 UUID=ab".into(),
            block: None,
            persistent: None,
            fstype: None,
            network: false,
        };
        let conf = image_conf(
            "/etc/kdump.conf",
            "ext4 /dev/vdb\npath /x # here\ndracut_args --omit plymouth\nfailure_action poweroff\n",
            &resolved,
        );
        assert!(conf.contains("#(resolved below) ext4 /dev/vdb\n"), "{conf}");
        assert!(conf.contains("#(resolved below) dracut_args --omit plymouth\n"));
        assert!(conf.contains("\nfailure_action poweroff\n"));
        let (back, diagnostics) = Config::parse("/etc/kdump.conf", &conf);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(back.path, "/x");
        assert_eq!(back.failure_action, kdump_conf::Action::Poweroff);
    }
}
