//! `/proc/self/mountinfo` and `/etc/fstab`, as far as the image builder needs them: which mount
//! holds a path, with what source, type and options.
//!
//! mountinfo (proc(5)): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root
//! rw,errors=continue`: id, parent, major:minor, root within the filesystem, mount point, mount
//! options, optional fields up to `-`, then type, source and superblock options. Spaces and
//! other bytes in paths are octal escapes (`\040`).

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// `major:minor` of the filesystem's device (`0:N` for those without one).
    pub dev: (u32, u32),
    /// The directory of the filesystem mounted here (`/` unless a bind mount or a btrfs
    /// subvolume).
    pub root: String,
    /// Where it is mounted.
    pub mountpoint: String,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    /// Filesystem type (`ext4`, `nfs4`).
    pub fstype: String,
    /// The source (`/dev/vda1`, `server:/export`).
    pub source: String,
}

/// Why mountinfo text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mountinfo line {line}: malformed: {text:?}")]
pub(crate) struct MountinfoError {
    /// 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
}

/// Undoes the kernel's octal escapes (`\040` for a space): fstab's, which kdump.conf's
/// `--mount` fields use too.
pub(crate) use crate::config::kdump_conf::unescape_octal as unescape;

/// Parses mountinfo text.
pub(crate) fn parse(text: &str) -> Result<Vec<Mount>, MountinfoError> {
    let mut mounts = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || MountinfoError {
            line: number + 1,
            text: line.to_owned(),
        };
        let (left, right) = line.split_once(" - ").ok_or_else(bad)?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 2 {
            return Err(bad());
        }
        let (major, minor) = left[2].split_once(':').ok_or_else(bad)?;
        let dev = (
            major.parse().map_err(|_| bad())?,
            minor.parse().map_err(|_| bad())?,
        );
        mounts.push(Mount {
            dev,
            root: unescape(left[3]),
            mountpoint: unescape(left[4]),
            options: left[5].to_owned(),
            fstype: right[0].to_owned(),
            source: unescape(right[1]),
        });
    }
    Ok(mounts)
}

/// Whether `path` is `dir` or below it (both absolute, normalised).
pub(crate) fn is_under(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The mount that holds `path` (absolute, symlinks resolved): the last mount on the longest
/// mount point above it, as the kernel's path walk finds it.
pub(crate) fn holding<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for mount in mounts {
        if is_under(path, &mount.mountpoint)
            && best.is_none_or(|b| mount.mountpoint.len() >= b.mountpoint.len())
        {
            best = Some(mount);
        }
    }
    best
}

/// `path` relative to the mount point `dir`, as an absolute path in that filesystem
/// (`/var/crash` under `/var` is `/crash`).
pub(crate) fn relative_to(path: &str, dir: &str) -> String {
    if dir == "/" {
        return path.to_owned();
    }
    match path.strip_prefix(dir) {
        Some("") | None => "/".to_owned(),
        Some(rest) => rest.to_owned(),
    }
}

/// One `/etc/fstab` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FstabEntry {
    /// `UUID=...`, `/dev/vda1`, `server:/export`.
    pub spec: String,
    /// Mount point.
    pub file: String,
    /// Type.
    pub vfstype: String,
    /// Options (`defaults` when the field is missing).
    pub options: String,
}

/// Parses fstab text (fstab(5)); comments and lines with fewer than three fields are skipped,
/// as mount(8) does with the latter after a warning.
pub(crate) fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 3 {
                return None;
            }
            Some(FstabEntry {
                spec: unescape(fields[0]),
                file: unescape(fields[1]),
                vfstype: fields[2].to_owned(),
                options: fields.get(3).copied().unwrap_or("defaults").to_owned(),
            })
        })
        .collect()
}

/// Options for mounting a dump target in the capture kernel, from fstab's: `ro` becomes `rw`,
/// and `noauto`, `nofail`, `x-*` (systemd's, util-linux's), `_netdev`, `auto`, `bind` and
/// `defaults` go, as mkdumprd does (the capture must mount the filesystem itself, now,
/// writable). Empty means `defaults`.
pub(crate) fn capture_options(options: &str) -> String {
    let kept: Vec<&str> = options
        .split(',')
        .filter(|o| {
            !o.is_empty()
                && !matches!(
                    *o,
                    "ro" | "rw" | "noauto" | "auto" | "nofail" | "_netdev" | "defaults"
                )
                && !matches!(*o, "bind" | "rbind")
                && !o.starts_with("x-")
                && !o.starts_with("comment=")
        })
        .collect();
    if kept.is_empty() {
        "defaults".to_owned()
    } else {
        kept.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:1 / / ro,relatime - ext4 /dev/vda1 ro,errors=remount-ro
30 27 254:16 / /var rw,noatime - xfs /dev/vdb rw,attr2,inode64
31 30 0:44 / /var/crash\\040dir rw,relatime - nfs4 10.0.2.100:/export rw,vers=4.1,addr=10.0.2.100
";

    #[test]
    fn parses_the_kernel_s_format_with_escapes() {
        let mounts = parse(MOUNTINFO).unwrap();
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[1].dev, (254, 1));
        assert_eq!(mounts[1].fstype, "ext4");
        assert_eq!(mounts[1].source, "/dev/vda1");
        assert_eq!(mounts[3].mountpoint, "/var/crash dir");
        assert_eq!(mounts[3].source, "10.0.2.100:/export");
        let error = parse("1 2 3\n").unwrap_err();
        assert_eq!(error.line, 1);
        assert!(parse("27 1 x:1 / / rw - ext4 /dev/vda1 rw").is_err());
    }

    #[test]
    fn the_longest_mount_point_holds_a_path() {
        let mounts = parse(MOUNTINFO).unwrap();
        assert_eq!(holding(&mounts, "/var/crash").unwrap().fstype, "xfs");
        assert_eq!(holding(&mounts, "/var").unwrap().fstype, "xfs");
        assert_eq!(holding(&mounts, "/variable").unwrap().fstype, "ext4");
        assert_eq!(holding(&mounts, "/var/crash dir/x").unwrap().fstype, "nfs4");
        assert_eq!(relative_to("/var/crash", "/var"), "/crash");
        assert_eq!(relative_to("/var/crash", "/"), "/var/crash");
        assert_eq!(relative_to("/var", "/var"), "/");
        // A later mount over the same mount point hides the earlier one.
        let over = format!("{MOUNTINFO}40 30 254:32 / /var rw - ext4 /dev/vdc rw\n");
        let mounts = parse(&over).unwrap();
        assert_eq!(holding(&mounts, "/var/crash").unwrap().source, "/dev/vdc");
    }

    #[test]
    fn fstab_and_the_capture_s_options() {
        let fstab = parse_fstab(
            "# comment\nUUID=ab / ext4 errors=remount-ro 0 1\n\
             LABEL=dumps /var/crash xfs ro,noauto,nofail,x-systemd.automount,nouuid 0 2\n\
             short line\n/dev/sr0 /media/cdrom0 udf\n",
        );
        assert_eq!(fstab.len(), 3);
        assert_eq!(fstab[1].spec, "LABEL=dumps");
        assert_eq!(fstab[2].options, "defaults");
        assert_eq!(capture_options(&fstab[1].options), "nouuid");
        assert_eq!(capture_options("errors=remount-ro"), "errors=remount-ro");
        assert_eq!(capture_options("ro,relatime"), "relatime");
        assert_eq!(capture_options("defaults,nofail"), "defaults");
    }
}
