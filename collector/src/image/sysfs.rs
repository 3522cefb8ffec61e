//! What sysfs says about the devices a dump needs: the drivers of a block device's whole stack,
//! of the network interfaces and of the watchdogs, and the persistent names udev gave a disk.
//!
//! A block device's stack is every device above it in `/sys/devices` (the disk, its SCSI
//! target and host, the PCI function and bridges: each `driver/module` is a module to load)
//! and, for device-mapper and md devices, the same for each device in `slaves/`. A driver
//! built into the kernel has a `/sys/module/<name>` without `initstate` and needs no loading.

use std::path::Path;

/// Block devices visited at most in one stack (a stack is a few levels deep; a loop in sysfs
/// would be a kernel bug).
const MAX_STACK: usize = 64;
/// udev's persistent-name directories, in the order a name is preferred: the identifiers the
/// capture finds by reading the disks themselves (it has no udev to make `/dev/disk/by-id` or
/// `by-path` links).
const BY_DIRS: &[(&str, &str)] = &[
    ("by-uuid", "UUID="),
    ("by-label", "LABEL="),
    ("by-partuuid", "PARTUUID="),
    ("by-partlabel", "PARTLABEL="),
];

/// The loadable module of a sysfs device's driver, if it has one.
pub(crate) fn driver_module(root: &Path, device: &Path) -> Option<String> {
    let module = std::fs::read_link(device.join("driver/module")).ok()?;
    let name = module.file_name()?.to_string_lossy().into_owned();
    root.join("sys/module")
        .join(&name)
        .join("initstate")
        .exists()
        .then_some(name)
}

/// The loadable drivers of `dir` and every device above it under `root/sys`.
fn drivers_above(root: &Path, dir: &Path, modules: &mut Vec<String>) {
    let sys = root.join("sys");
    let Ok(mut dir) = std::fs::canonicalize(dir) else {
        return;
    };
    while dir.starts_with(&sys) && dir != sys {
        if let Some(module) = driver_module(root, &dir)
            && !modules.contains(&module)
        {
            modules.push(module);
        }
        if !dir.pop() {
            break;
        }
    }
}

/// The modules a device-mapper or md device needs itself (it has no driver link): `dm_mod`
/// and the target of an LVM/crypt mapping, `md_mod` and the RAID personality.
fn virtual_block_modules(class: &Path, name: &str, modules: &mut Vec<String>) {
    let mut push = |m: &str| {
        if !modules.iter().any(|x| x == m) {
            modules.push(m.to_owned());
        }
    };
    if name.starts_with("dm-") {
        push("dm_mod");
        let uuid = std::fs::read_to_string(class.join("dm/uuid")).unwrap_or_default();
        if uuid.starts_with("CRYPT-") {
            push("dm_crypt");
        }
    } else if name.starts_with("md") {
        push("md_mod");
        let level = std::fs::read_to_string(class.join("md/level")).unwrap_or_default();
        match level.trim() {
            "raid4" | "raid5" | "raid6" => push("raid456"),
            level @ ("raid0" | "raid1" | "raid10" | "linear") => push(level),
            _ => {}
        }
    }
}

/// The block device name (`vda1`) of a device node under `root` (`/dev/vda1`, a udev link).
pub(crate) fn block_name(device: &Path) -> Option<String> {
    let real = std::fs::canonicalize(device).ok()?;
    real.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The block device name of `major:minor`, from `/sys/dev/block`.
pub(crate) fn block_name_of_dev(root: &Path, dev: (u32, u32)) -> Option<String> {
    let link = root.join(format!("sys/dev/block/{}:{}", dev.0, dev.1));
    let target = std::fs::read_link(link).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The loadable drivers of the block device `name` (`vda1`), every device above it, and the
/// same for the devices under it (`slaves/`: the disks of an LVM, dm or md device), in the
/// order found.
pub(crate) fn block_stack_modules(root: &Path, name: &str) -> Vec<String> {
    let mut modules = Vec::new();
    let mut pending = vec![name.to_owned()];
    let mut seen: Vec<String> = Vec::new();
    while let Some(name) = pending.pop() {
        if seen.contains(&name) || seen.len() > MAX_STACK {
            continue;
        }
        seen.push(name.clone());
        let class = root.join("sys/class/block").join(&name);
        virtual_block_modules(&class, &name, &mut modules);
        for slave in std::fs::read_dir(class.join("slaves"))
            .into_iter()
            .flatten()
            .flatten()
        {
            pending.push(slave.file_name().to_string_lossy().into_owned());
        }
        drivers_above(root, &class, &mut modules);
    }
    modules
}

/// One network interface backed by hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nic {
    /// Its name (`enp0s3`).
    pub name: String,
    /// Its MAC address.
    pub mac: String,
    /// The loadable drivers of it and the devices above it.
    pub modules: Vec<String>,
    /// `operstate` is `up`.
    pub up: bool,
}

/// The interfaces with a device (virtual ones, `lo` and bridges, have none), sorted by name.
pub(crate) fn nics(root: &Path) -> Vec<Nic> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/net")) else {
        return found;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.join("device").exists() {
            continue;
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let mut modules = Vec::new();
        drivers_above(root, &dir.join("device"), &mut modules);
        found.push(Nic {
            name: entry.file_name().to_string_lossy().into_owned(),
            mac: read("address"),
            modules,
            up: read("operstate") == "up",
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The persistent names udev made for the block device `name`, most preferred first, as
/// kdump.conf would write them (`UUID=...`, `LABEL=...`).
pub(crate) fn persistent_names(root: &Path, name: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (dir, prefix) in BY_DIRS {
        let dir_path = root.join("dev/disk").join(dir);
        let Ok(entries) = std::fs::read_dir(&dir_path) else {
            continue;
        };
        let mut matching: Vec<String> = entries
            .flatten()
            .filter(|e| block_name(&e.path()).as_deref() == Some(name))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        matching.sort();
        for link in matching {
            names.push(format!("{prefix}{}", unescape_udev(&link)));
        }
    }
    names
}

/// udev escapes bytes of labels in link names as `\xNN`.
fn unescape_udev(name: &str) -> String {
    let mut out = Vec::new();
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && bytes.get(i + 1) == Some(&b'x')
            && let Some(value) = bytes
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Records a sysfs tree as the kernel lays it out for a virtio disk `vda` with partition
    /// `vda1` (virtio_blk on virtio_pci), an xfs on LVM over `vdb`, and a virtio NIC.
    pub(crate) fn record_sysfs(root: &Path) {
        let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        let link = |target: &str, at: &str| {
            let at = root.join(at);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            symlink(target, at).unwrap();
        };
        let pci = "sys/devices/pci0000:00/0000:00:04.0";
        mk(&format!("{pci}/virtio1/block/vda/vda1"));
        mk("sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb");
        mk("sys/devices/virtual/block/dm-0/slaves");
        mk("sys/devices/virtual/block/dm-0/dm");
        std::fs::write(
            root.join("sys/devices/virtual/block/dm-0/dm/uuid"),
            "LVM-abc\n",
        )
        .unwrap();
        mk("sys/devices/pci0000:00/0000:00:03.0/virtio0/net/enp0s3");
        mk("sys/devices/virtual/net/lo");
        for module in ["virtio_blk", "virtio_pci", "virtio_net", "dm_mod"] {
            mk(&format!("sys/module/{module}"));
            std::fs::write(
                root.join(format!("sys/module/{module}/initstate")),
                "live\n",
            )
            .unwrap();
        }
        mk("sys/bus/virtio/drivers/virtio_blk");
        mk("sys/bus/virtio/drivers/virtio_net");
        mk("sys/bus/pci/drivers/virtio-pci");
        link(
            "../../../../module/virtio_blk",
            "sys/bus/virtio/drivers/virtio_blk/module",
        );
        link(
            "../../../../module/virtio_net",
            "sys/bus/virtio/drivers/virtio_net/module",
        );
        link(
            "../../../../module/virtio_pci",
            "sys/bus/pci/drivers/virtio-pci/module",
        );
        for (dev, driver) in [
            ("pci0000:00/0000:00:04.0", "pci/drivers/virtio-pci"),
            (
                "pci0000:00/0000:00:04.0/virtio1",
                "virtio/drivers/virtio_blk",
            ),
            ("pci0000:00/0000:00:05.0", "pci/drivers/virtio-pci"),
            (
                "pci0000:00/0000:00:05.0/virtio2",
                "virtio/drivers/virtio_blk",
            ),
            ("pci0000:00/0000:00:03.0", "pci/drivers/virtio-pci"),
            (
                "pci0000:00/0000:00:03.0/virtio0",
                "virtio/drivers/virtio_net",
            ),
        ] {
            let depth = dev.matches('/').count() + 2;
            let up = "../".repeat(depth);
            link(
                &format!("{up}bus/{driver}"),
                &format!("sys/devices/{dev}/driver"),
            );
        }
        link(
            "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda1",
            "sys/class/block/vda1",
        );
        link(
            "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
            "sys/class/block/vda",
        );
        link(
            "../../devices/pci0000:00/0000:00:05.0/virtio2/block/vdb",
            "sys/class/block/vdb",
        );
        link("../../devices/virtual/block/dm-0", "sys/class/block/dm-0");
        link(
            "../../../../pci0000:00/0000:00:05.0/virtio2/block/vdb",
            "sys/devices/virtual/block/dm-0/slaves/vdb",
        );
        link(
            "../../devices/pci0000:00/0000:00:03.0/virtio0/net/enp0s3",
            "sys/class/net/enp0s3",
        );
        link("../../devices/virtual/net/lo", "sys/class/net/lo");
        let net = root.join("sys/devices/pci0000:00/0000:00:03.0/virtio0/net/enp0s3");
        std::fs::write(net.join("address"), "52:54:00:12:34:56\n").unwrap();
        std::fs::write(net.join("operstate"), "up\n").unwrap();
        link(
            "../../../virtio0",
            "sys/devices/pci0000:00/0000:00:03.0/virtio0/net/enp0s3/device",
        );
        link(
            "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda1",
            "sys/dev/block/254:1",
        );
        link("../../devices/virtual/block/dm-0", "sys/dev/block/253:0");
        mk("dev/disk/by-uuid");
        mk("dev/disk/by-label");
        for name in ["vda", "vda1", "vdb", "dm-0"] {
            std::fs::write(root.join("dev").join(name), "").unwrap();
        }
        link(
            "../../vda1",
            "dev/disk/by-uuid/0f6e4c8e-1111-2222-3333-444455556666",
        );
        link("../../dm-0", "dev/disk/by-uuid/aaaa-bbbb");
        link("../../dm-0", "dev/disk/by-label/my\\x20dumps");
    }

    #[test]
    fn the_stack_of_a_partition_and_of_an_lvm_volume() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        record_sysfs(root);
        assert_eq!(
            block_stack_modules(root, "vda1"),
            ["virtio_blk", "virtio_pci"]
        );
        assert_eq!(
            block_stack_modules(root, "dm-0"),
            ["dm_mod", "virtio_blk", "virtio_pci"]
        );
        assert_eq!(block_name_of_dev(root, (254, 1)).as_deref(), Some("vda1"));
        assert_eq!(block_name_of_dev(root, (8, 0)), None);
    }

    #[test]
    fn nics_with_devices_only() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        record_sysfs(root);
        let nics = nics(root);
        assert_eq!(nics.len(), 1, "{nics:?}");
        assert_eq!(nics[0].name, "enp0s3");
        assert_eq!(nics[0].mac, "52:54:00:12:34:56");
        assert_eq!(nics[0].modules, ["virtio_net", "virtio_pci"]);
        assert!(nics[0].up);
    }

    #[test]
    fn persistent_names_in_udev_s_order_with_its_escapes() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        record_sysfs(root);
        assert_eq!(
            persistent_names(root, "vda1"),
            ["UUID=0f6e4c8e-1111-2222-3333-444455556666"]
        );
        assert_eq!(
            persistent_names(root, "dm-0"),
            ["UUID=aaaa-bbbb", "LABEL=my dumps"]
        );
        assert!(persistent_names(root, "vdb").is_empty());
    }
}
