//! The kernel modules of the image: the requested drivers with their dependencies and soft
//! dependencies (depmod's index of the capture kernel), the firmware they declare when the
//! system has it, and the index files cut down to what the image holds, so that the capture's
//! coldplug finds exactly these modules (no `depmod` run: the lines are the system's own).
//!
//! Module files go in as they are (`.ko`, `.ko.xz`, `.ko.zst`): the capture hands compressed
//! ones to the kernel, which decompresses them itself.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::tree::Tree;
use crate::format::executable;
use crate::kmod::index::{name_of_path, normalize};
use crate::kmod::{KmodError, ModuleIndex};

/// Directories of `kernel/` whose modules `--all-drivers` takes: storage, network, watchdogs.
const ALL_DRIVER_DIRS: &[&str] = &[
    "kernel/drivers/ata/",
    "kernel/drivers/block/",
    "kernel/drivers/md/",
    "kernel/drivers/mmc/",
    "kernel/drivers/nvme/",
    "kernel/drivers/scsi/",
    "kernel/drivers/virtio/",
    "kernel/drivers/net/ethernet/",
    "kernel/drivers/net/virtio_net",
    "kernel/drivers/usb/storage/",
    "kernel/drivers/usb/host/",
    "kernel/drivers/watchdog/",
    "kernel/drivers/hv/",
    "kernel/drivers/xen/",
];
/// Largest module read to find its firmware (decompressed).
const MAX_MODULE_BYTES: u64 = 64 << 20;
/// Where the kernel's loader looks for firmware, in its order (`fw_path[]`).
const FIRMWARE_DIRS: &[&str] = &[
    "/lib/firmware/updates/{release}",
    "/lib/firmware/updates",
    "/lib/firmware/{release}",
    "/lib/firmware",
];

/// Why the modules cannot go in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ModulesError {
    /// The capture kernel's index cannot be read.
    #[error("{}: {source} (is the kernel's module package installed?)", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A requested module is unknown or the index is inconsistent.
    #[error("kernel {release}: {source}")]
    Resolve {
        /// The kernel release.
        release: String,
        /// Why.
        source: KmodError,
    },
    /// A module file cannot be copied.
    #[error(transparent)]
    Tree(#[from] super::tree::TreeError),
}

/// The index files of one kernel's modules directory, as text.
pub(crate) struct IndexFiles {
    dep: String,
    alias: String,
    softdep: String,
    builtin: String,
    builtin_modinfo: Option<Vec<u8>>,
}

impl IndexFiles {
    /// Reads them from `dir` (`/lib/modules/<release>`).
    pub(crate) fn read(dir: &Path) -> Result<Self, ModulesError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModulesError::Index { path, source })
        };
        Ok(Self {
            dep: read("modules.dep")?,
            alias: read("modules.alias")?,
            softdep: read("modules.softdep").unwrap_or_default(),
            builtin: read("modules.builtin").unwrap_or_default(),
            builtin_modinfo: std::fs::read(dir.join("modules.builtin.modinfo")).ok(),
        })
    }

    /// The parsed index.
    pub(crate) fn index(&self) -> Result<ModuleIndex, KmodError> {
        ModuleIndex::parse(&self.dep, &self.alias, &self.softdep, &self.builtin)
    }
}

/// What went in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selected {
    /// Module names, in load order.
    pub modules: Vec<String>,
    /// Requests the kernel has built in (nothing to add).
    pub builtin: Vec<String>,
    /// Firmware files added (relative to /lib/firmware).
    pub firmware: Vec<String>,
    /// Firmware the modules declare that the system does not have.
    pub missing_firmware: Vec<String>,
}

/// Module names of `dep` text whose path starts with one of `dirs`.
fn modules_under(dep: &str, dirs: &[&str]) -> Vec<String> {
    dep.lines()
        .filter_map(|line| line.split_once(':').map(|(path, _)| path))
        .filter(|path| dirs.iter().any(|d| path.starts_with(d)))
        .map(name_of_path)
        .collect()
}

/// A writer that refuses to grow past `room` bytes (a decompression bomb stops there).
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    room: u64,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.len() as u64 > self.room {
            return Err(std::io::Error::other("decompressed module too large"));
        }
        self.room -= data.len() as u64;
        self.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a module file, decompressing `.xz` and `.zst`.
fn read_module(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut limited = file.take(MAX_MODULE_BYTES);
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        let mut input = std::io::BufReader::new(limited);
        let mut bounded = Bounded {
            out: &mut out,
            room: MAX_MODULE_BYTES,
        };
        lzma_rs::xz_decompress(&mut input, &mut bounded).ok()?;
    } else if name.ends_with(".zst") {
        let mut decoder = zstd::stream::read::Decoder::new(limited).ok()?;
        (&mut decoder)
            .take(MAX_MODULE_BYTES)
            .read_to_end(&mut out)
            .ok()?;
    } else {
        limited.read_to_end(&mut out).ok()?;
    }
    Some(out)
}

/// Keeps the index lines that name a module of `names` (by path in modules.dep, by the last
/// word in modules.alias, by the second in modules.softdep).
fn cut_index(
    files: &IndexFiles,
    paths: &BTreeSet<String>,
    names: &BTreeSet<String>,
) -> [String; 3] {
    let keep = |text: &str, pick: &dyn Fn(&str) -> Option<bool>| {
        let mut out = String::new();
        for line in text.lines() {
            if pick(line).unwrap_or(false) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    };
    let dep = keep(&files.dep, &|line| {
        line.split_once(':').map(|(path, _)| paths.contains(path))
    });
    let alias = keep(&files.alias, &|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        (words.len() == 3 && words[0] == "alias").then(|| names.contains(&normalize(words[2])))
    });
    let softdep = keep(&files.softdep, &|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        (words.len() >= 2 && words[0] == "softdep").then(|| names.contains(&normalize(words[1])))
    });
    [dep, alias, softdep]
}

/// Adds the modules `requests` name (names or aliases) for kernel `release`, from
/// `root/lib/modules/<release>`, to `tree`, with dependencies, firmware and the cut index.
/// Requests the kernel does not have are an error naming them; `all_drivers` adds every
/// storage, network and watchdog driver.
pub(crate) fn add(
    tree: &mut Tree,
    root: &Path,
    release: &str,
    requests: &[String],
    all_drivers: bool,
) -> Result<Selected, ModulesError> {
    let image_dir = format!("/lib/modules/{release}");
    let host_dir = root.join(image_dir.trim_start_matches('/'));
    let files = IndexFiles::read(&host_dir)?;
    let resolve_error = |source| ModulesError::Resolve {
        release: release.to_owned(),
        source,
    };
    let index = files.index().map_err(resolve_error)?;
    let mut requests: Vec<String> = requests.to_vec();
    if all_drivers {
        requests.extend(modules_under(&files.dep, ALL_DRIVER_DIRS));
    }
    let mut selected = Selected::default();
    for request in &requests {
        if index.module(request).is_none()
            && index
                .resolve(request)
                .is_ok_and(|names| names.iter().all(|n| index.module(n).is_none()))
            && !selected.builtin.contains(request)
        {
            selected.builtin.push(request.clone());
        }
    }
    let order = index.load_order(&requests).map_err(resolve_error)?;
    let mut paths = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut firmware = BTreeSet::new();
    for module in &order {
        if !names.insert(module.name.clone()) {
            continue;
        }
        selected.modules.push(module.name.clone());
        paths.insert(module.path.clone());
        let image_path = format!("{image_dir}/{}", module.path);
        let real = tree.host_file(&image_path)?;
        if let Some(data) = read_module(&tree.host(&real)) {
            for (key, value) in executable::modinfo(&data).unwrap_or_default() {
                if key == "firmware" {
                    firmware.insert(value);
                }
            }
        }
    }
    for name in firmware {
        let found = FIRMWARE_DIRS.iter().find_map(|dir| {
            let dir = dir.replace("{release}", release);
            ["", ".xz", ".zst"].iter().find_map(|suffix| {
                let path = format!("{dir}/{name}{suffix}");
                tree.host(&path).is_file().then_some(path)
            })
        });
        match found {
            Some(path) => {
                tree.host_file(&path)?;
                selected.firmware.push(name);
            }
            None => selected.missing_firmware.push(name),
        }
    }
    let [dep, alias, softdep] = cut_index(&files, &paths, &names);
    tree.file(&format!("{image_dir}/modules.dep"), 0o644, dep.into_bytes());
    tree.file(
        &format!("{image_dir}/modules.alias"),
        0o644,
        alias.into_bytes(),
    );
    tree.file(
        &format!("{image_dir}/modules.softdep"),
        0o644,
        softdep.into_bytes(),
    );
    tree.file(
        &format!("{image_dir}/modules.builtin"),
        0o644,
        files.builtin.clone().into_bytes(),
    );
    if let Some(modinfo) = &files.builtin_modinfo {
        tree.file(
            &format!("{image_dir}/modules.builtin.modinfo"),
            0o644,
            modinfo.clone(),
        );
    }
    Ok(selected)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records a modules directory for kernel `6.1.0-test` (virtio, xfs, crc32c).
    pub(crate) fn record(root: &Path) {
        let dir = root.join("lib/modules/6.1.0-test");
        for path in [
            "kernel/drivers/block/virtio_blk.ko",
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/virtio/virtio.ko",
            "kernel/drivers/virtio/virtio_pci.ko",
            "kernel/drivers/net/virtio_net.ko",
            "kernel/fs/xfs/xfs.ko.xz",
            "kernel/lib/libcrc32c.ko",
            "kernel/crypto/crc32c_generic.ko",
        ] {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, b"not an elf").unwrap();
        }
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
             kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
             kernel/fs/xfs/xfs.ko.xz: kernel/lib/libcrc32c.ko\n\
             kernel/lib/libcrc32c.ko:\n\
             kernel/crypto/crc32c_generic.ko:\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("modules.alias"),
            "alias virtio:d00000002v* virtio_blk\nalias virtio:d00000001v* virtio_net\n\
             alias fs-xfs xfs\nalias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("modules.softdep"),
            "softdep libcrc32c pre: crc32c\nsoftdep virtio_net pre: net_failover\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
    }

    #[test]
    fn requested_modules_with_dependencies_softdeps_and_a_cut_index() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        record(root);
        let mut tree = Tree::new(root);
        let selected = add(
            &mut tree,
            root,
            "6.1.0-test",
            &["virtio_blk".into(), "xfs".into(), "ext4".into()],
            false,
        )
        .unwrap();
        assert_eq!(
            selected.modules,
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "crc32c_generic",
                "libcrc32c",
                "xfs"
            ]
        );
        assert_eq!(selected.builtin, ["ext4"]);
        let dir = "/lib/modules/6.1.0-test";
        assert!(tree.contains(&format!("{dir}/kernel/fs/xfs/xfs.ko.xz")));
        assert!(!tree.contains(&format!("{dir}/kernel/drivers/net/virtio_net.ko")));
        let text = |name: &str| match &tree.nodes()[&format!("{dir}/{name}")] {
            super::super::tree::Node::File(_, data) => String::from_utf8(data.clone()).unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(!text("modules.dep").contains("virtio_net"));
        assert_eq!(text("modules.dep").lines().count(), 6);
        assert_eq!(
            text("modules.alias"),
            "alias virtio:d00000002v* virtio_blk\nalias fs-xfs xfs\nalias crypto-crc32c crc32c_generic\n\
             alias crc32c crc32c_generic\n"
        );
        assert_eq!(text("modules.softdep"), "softdep libcrc32c pre: crc32c\n");
        // The cut index still resolves what the capture asks for (rkdump's own reader).
        let index = ModuleIndex::parse(
            &text("modules.dep"),
            &text("modules.alias"),
            &text("modules.softdep"),
            &text("modules.builtin"),
        )
        .unwrap();
        assert_eq!(
            index.lookup_alias("virtio:d00000002v00001AF4"),
            ["virtio_blk"]
        );
        assert!(index.resolve("virtio_net").is_err());
    }

    #[test]
    fn declared_firmware_goes_in_when_the_system_has_it() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        record(root);
        // virtio_blk declares two firmware files (a synthetic ELF with a .modinfo section),
        // compressed as 6.12's modules are.
        let module = crate::format::executable::tests::elf(
            None,
            &[],
            b"license=GPL\0firmware=vendor/a.bin\0firmware=vendor/b.bin\0",
        );
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut module.as_slice(), &mut xz).unwrap();
        let dir = root.join("lib/modules/6.1.0-test");
        std::fs::remove_file(dir.join("kernel/drivers/block/virtio_blk.ko")).unwrap();
        std::fs::write(dir.join("kernel/drivers/block/virtio_blk.ko.xz"), xz).unwrap();
        let dep = std::fs::read_to_string(dir.join("modules.dep")).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            dep.replace("virtio_blk.ko:", "virtio_blk.ko.xz:"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("lib/firmware/vendor")).unwrap();
        std::fs::write(root.join("lib/firmware/vendor/a.bin.zst"), b"fw").unwrap();
        let mut tree = Tree::new(root);
        let selected = add(&mut tree, root, "6.1.0-test", &["virtio_blk".into()], false).unwrap();
        assert_eq!(selected.firmware, ["vendor/a.bin"]);
        assert_eq!(selected.missing_firmware, ["vendor/b.bin"]);
        assert!(tree.contains("/lib/firmware/vendor/a.bin.zst"));
    }

    #[test]
    fn unknown_requests_and_all_drivers() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        record(root);
        let error = add(
            &mut Tree::new(root),
            root,
            "6.1.0-test",
            &["nvme".into()],
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("kernel 6.1.0-test") && error.contains("nvme"),
            "{error}"
        );
        let selected = add(&mut Tree::new(root), root, "6.1.0-test", &[], true).unwrap();
        assert!(selected.modules.contains(&"virtio_net".to_owned()));
        assert!(selected.modules.contains(&"virtio_blk".to_owned()));
        assert!(!selected.modules.contains(&"xfs".to_owned()));
        let error = add(&mut Tree::new(root), root, "6.2", &[], false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("lib/modules/6.2/modules.dep"), "{error}");
    }
}
