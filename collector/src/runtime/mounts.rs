//! Mounting: the API filesystems PID 1 needs first, dump targets, and taking an NFS export off
//! when its server is gone.

use std::path::Path;

use sys_mount::{Mount, MountFlags, UnmountFlags};

use super::log::Log;

/// Mounts the API filesystems an initramfs needs (errors are logged: a filesystem already
/// mounted by the kernel is fine).
pub fn early_mounts(log: &Log) {
    for (source, target, fstype, data) in [
        ("proc", "/proc", "proc", ""),
        ("sysfs", "/sys", "sysfs", ""),
        ("devtmpfs", "/dev", "devtmpfs", "mode=0755"),
        ("tmpfs", "/run", "tmpfs", "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
    ] {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = Mount::builder()
            .fstype(fstype)
            .data(data)
            .mount(source, target)
            && e.raw_os_error() != Some(nix::libc::EBUSY)
        {
            log.line(&format!("mount {fstype} on {target}: {e}"));
        }
    }
}

/// Mounts `device` on `target` (created if needed) read-write.
pub fn mount(device: &Path, target: &Path, fstype: &str, options: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            // mount(8)'s own options, and the defaults of the flags below.
            "defaults" | "rw" | "nofail" | "noauto" | "auto" | "nobootwait" | "_netdev"
            | "async" | "atime" | "diratime" | "exec" | "suid" | "dev" | "user" | "nouser"
            | "users" | "owner" | "group" | "norelatime" | "nostrictatime" => {}
            "ro" => flags |= MountFlags::RDONLY,
            "noatime" => flags |= MountFlags::NOATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "strictatime" => flags |= MountFlags::STRICTATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            "dirsync" => flags |= MountFlags::DIRSYNC,
            "nodev" => flags |= MountFlags::NODEV,
            "nosuid" => flags |= MountFlags::NOSUID,
            "noexec" => flags |= MountFlags::NOEXEC,
            other => data.push(other),
        }
    }
    // kdump-utils mounts read-only targets read-write: the dump has to be written.
    flags.remove(MountFlags::RDONLY);
    let data = data.join(",");
    Mount::builder()
        .fstype(fstype)
        .flags(flags)
        .data(&data)
        .mount(device, target)
        .map(|_| ())
}

/// Unmounts `target` so that its filesystem is left clean; a busy target is detached lazily
/// instead (a hook's leftover must not stop the capture).
pub fn unmount(target: &Path, log: &Log) {
    match sys_mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => log.line(&format!("unmounted {}", target.display())),
        Err(e) => {
            log.line(&format!(
                "unmounting {}: {e}; detaching it",
                target.display()
            ));
            let _ = sys_mount::unmount(target, UnmountFlags::DETACH);
        }
    }
}

/// Aborts the requests an NFS mount has pending (they fail with EIO), leaving it mounted:
/// `umount2(MNT_FORCE)` runs the filesystem's `umount_begin` even when the mount is busy and
/// then fails with EBUSY, which is expected here.
pub fn abort_nfs_requests(target: &Path) {
    let _ = sys_mount::unmount(target, UnmountFlags::FORCE);
}

/// Unmounts a network filesystem whose server stopped answering: `MNT_FORCE` aborts the
/// requests still waiting for it (NFS fails them with EIO), then the mount is detached.
pub fn force_unmount(target: &Path, log: &Log) {
    match sys_mount::unmount(target, UnmountFlags::FORCE | UnmountFlags::DETACH) {
        Ok(()) => log.line(&format!("forced {} off", target.display())),
        Err(e) => log.line(&format!("forcing {} off: {e}", target.display())),
    }
}
