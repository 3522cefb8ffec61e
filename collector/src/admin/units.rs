//! What the Debian package's systemd integration asks of rkdump.
//!
//! `rkdump.service` is ordered after `network-online.target` and `remote-fs.target` but does
//! not pull the network in: most dump targets are local. systemd runs generators at boot and at
//! every `daemon-reload`, before units start (systemd.generator(7)); rkdump's,
//! `/usr/lib/systemd/system-generators/rkdump-generator`, runs `rkdump systemd-generator DIR`,
//! which links `network-online.target` into `DIR/rkdump.service.wants/` when kdump.conf's
//! target is on the network, as kdump-utils' `kdump-dep-generator.sh` does for kdump.service:
//! an `nfs`/`nfs4` or `ssh` line, a `dracut_args --mount` of an NFS export, or no target line
//! and a `path` that `/etc/fstab` puts on NFS (the mount is not there yet when generators run).

use std::path::Path;

use crate::config::kdump_conf::{Config, Target, unescape_octal};

/// The unit the generator adds.
const NETWORK_ONLINE: &str = "network-online.target";
/// Where systemd's own units are.
const SYSTEM_UNITS: &str = "/usr/lib/systemd/system";

/// Whether a filesystem type is a network one.
fn is_network_fstype(fstype: &str) -> bool {
    matches!(
        fstype,
        "nfs" | "nfs4" | "cifs" | "smb3" | "ceph" | "glusterfs"
    )
}

/// Whether the dump target of `config` is reached over the network; `fstab` is
/// `/etc/fstab`'s text (for a `path` with no target line).
pub(crate) fn needs_network(config: &Config, fstab: &str) -> bool {
    match &config.target {
        Target::Nfs { .. } | Target::Ssh(_) => true,
        Target::Mount { fstype, .. } => is_network_fstype(fstype),
        Target::RootFs => {
            // The fstab entry whose mount point is the longest prefix of `path`.
            let path = Path::new(&config.path);
            fstab
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(|l| {
                    let mut fields = l.split_whitespace();
                    let (_, mountpoint, fstype) = (fields.next()?, fields.next()?, fields.next()?);
                    Some((unescape_octal(mountpoint), fstype.to_owned()))
                })
                .filter(|(mountpoint, _)| path.starts_with(mountpoint))
                .max_by_key(|(mountpoint, _)| mountpoint.len())
                .is_some_and(|(_, fstype)| is_network_fstype(&fstype))
        }
        Target::Filesystem { .. } | Target::Raw(_) => false,
    }
}

/// The generator: reads `root`'s kdump.conf and fstab and, when the target needs the network,
/// links `network-online.target` into `dir/rkdump.service.wants/`. Returns whether it did.
/// A kdump.conf that does not parse adds nothing: `rkdump start` reports it.
pub(crate) fn generate(root: &Path, config: &Path, dir: &Path) -> std::io::Result<bool> {
    let text = match std::fs::read_to_string(root.join(config.strip_prefix("/").unwrap_or(config)))
    {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let (parsed, _) = Config::parse(&config.display().to_string(), &text);
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap_or_default();
    if !needs_network(&parsed, &fstab) {
        return Ok(false);
    }
    let wants = dir.join("rkdump.service.wants");
    std::fs::create_dir_all(&wants)?;
    let link = wants.join(NETWORK_ONLINE);
    match std::os::unix::fs::symlink(Path::new(SYSTEM_UNITS).join(NETWORK_ONLINE), &link) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let (config, diagnostics) = Config::parse("kdump.conf", text);
        assert!(
            diagnostics
                .iter()
                .all(|d| d.severity != crate::config::kdump_conf::Severity::Error),
            "{diagnostics:?}"
        );
        config
    }

    #[test]
    fn network_targets_are_the_ones_kdump_utils_waits_for() {
        let fstab = "UUID=1 / ext4 defaults 0 1\nserver:/dumps /var/crash nfs defaults 0 0\n";
        assert!(needs_network(&config("nfs server:/export\n"), ""));
        assert!(needs_network(&config("nfs4 server:/export\n"), ""));
        assert!(needs_network(&config("ssh kdump@server\n"), ""));
        assert!(needs_network(
            &config("dracut_args --mount \"server:/e /mnt/d nfs defaults\"\n"),
            ""
        ));
        assert!(!needs_network(
            &config("dracut_args --mount \"UUID=1 /mnt/d ext4 defaults\"\n"),
            ""
        ));
        assert!(!needs_network(&config("ext4 UUID=1234\n"), fstab));
        assert!(!needs_network(&config("raw /dev/vdb\n"), fstab));
        // No target line: where fstab puts `path`.
        assert!(needs_network(&config(""), fstab));
        assert!(needs_network(&config("path /var/crash/host\n"), fstab));
        assert!(!needs_network(&config("path /srv/crash\n"), fstab));
        assert!(!needs_network(
            &config(""),
            "UUID=1 / ext4 defaults 0 1\n# x /var nfs\n"
        ));
        // Not a prefix by characters: /var/crash2 is not under /var/crash.
        assert!(!needs_network(&config("path /var/crash2\n"), fstab));
    }

    #[test]
    fn the_generator_links_network_online_for_network_targets_only() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let conf = Path::new("/etc/kdump.conf");
        // No kdump.conf: the root filesystem.
        assert!(!generate(root.path(), conf, out.path()).unwrap());
        assert!(!out.path().join("rkdump.service.wants").exists());
        std::fs::write(etc.join("kdump.conf"), "ssh kdump@server\n").unwrap();
        assert!(generate(root.path(), conf, out.path()).unwrap());
        let link = out
            .path()
            .join("rkdump.service.wants/network-online.target");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("/usr/lib/systemd/system/network-online.target")
        );
        // systemd runs generators again at daemon-reload, into a fresh directory, but a second
        // run into the same one is no error either.
        assert!(generate(root.path(), conf, out.path()).unwrap());
    }
}
