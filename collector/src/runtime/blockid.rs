//! Finding block devices by the names users give them, without blkid or udev.
//!
//! Filesystem identifiers come from superblocks (ext2/3/4, xfs, btrfs), partition identifiers
//! from the disk's GPT (or MBR signature), and the list of block devices from
//! `/sys/class/block`. The parsers take bytes and are tested on their own; [`find`] reads the
//! devices.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::config::DeviceSpec;
use crate::format::bytes::to_usize;

/// What a device's first bytes say about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsId {
    /// Filesystem type (`ext4`, `xfs`, `btrfs`), if recognised.
    pub fstype: Option<&'static str>,
    /// Filesystem UUID, lower case with dashes.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
}

/// Bytes of a device needed to recognise every supported superblock.
pub const PROBE_BYTES: usize = 65536 + 4096;

fn uuid_string(raw: &[u8]) -> String {
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn label_string(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let label = String::from_utf8_lossy(&raw[..end]).trim_end().to_owned();
    (!label.is_empty()).then_some(label)
}

/// Recognises the filesystem in the first [`PROBE_BYTES`] bytes of a device.
pub fn probe(start: &[u8]) -> FsId {
    let at = |offset: usize, len: usize| start.get(offset..offset + len);
    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56, UUID at +104, label at +120.
    if at(1024 + 56, 2) == Some(&[0x53, 0xef]) {
        let features = at(1024 + 92, 4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
        let incompat = at(1024 + 96, 4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
        let fstype = if incompat & 0x40 != 0 || incompat & 0x80 != 0 || incompat & 0x200 != 0 {
            "ext4" // extents, 64bit or flex_bg
        } else if features & 0x4 != 0 {
            "ext3" // has_journal
        } else {
            "ext2"
        };
        return FsId {
            fstype: Some(fstype),
            uuid: at(1024 + 104, 16).map(uuid_string),
            label: at(1024 + 120, 16).and_then(label_string),
        };
    }
    // xfs: "XFSB" at 0, UUID at 32, 12-byte label at 108.
    if at(0, 4) == Some(b"XFSB") {
        return FsId {
            fstype: Some("xfs"),
            uuid: at(32, 16).map(uuid_string),
            label: at(108, 12).and_then(label_string),
        };
    }
    // btrfs: superblock at 64 KiB, magic "_BHRfS_M" at +64, fsid at +32, label at +299.
    if at(65536 + 64, 8) == Some(b"_BHRfS_M") {
        return FsId {
            fstype: Some("btrfs"),
            uuid: at(65536 + 32, 16).map(uuid_string),
            label: at(65536 + 299, 256).and_then(label_string),
        };
    }
    FsId::default()
}

/// One partition as the disk's partition table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionId {
    /// 1-based partition number.
    pub number: u32,
    /// `PARTUUID`: the GPT unique GUID, or `xxxxxxxx-NN` for MBR.
    pub partuuid: String,
    /// `PARTLABEL` (GPT only).
    pub partlabel: Option<String>,
}

fn guid_string(raw: &[u8]) -> String {
    // Mixed-endian: the first three fields are little-endian.
    let swapped = [
        raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9], raw[10],
        raw[11], raw[12], raw[13], raw[14], raw[15],
    ];
    uuid_string(&swapped)
}

/// Reads the GPT header at LBA 1 (given the disk's first 1 MiB or more), returning where its
/// partition entries are: `(first entry byte offset, count, entry size)`.
pub fn gpt_entries(lba1: &[u8]) -> Option<(u64, u32, u32)> {
    if lba1.get(0..8)? != b"EFI PART" {
        return None;
    }
    let u64_at = |o: usize| Some(u64::from_le_bytes(lba1.get(o..o + 8)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(lba1.get(o..o + 4)?.try_into().ok()?));
    let entries_lba = u64_at(72)?;
    let count = u32_at(80)?.min(1024);
    let size = u32_at(84)?;
    (128..=4096)
        .contains(&size)
        .then_some((entries_lba.checked_mul(512)?, count, size))
}

/// Parses GPT partition entries.
pub fn gpt_partitions(entries: &[u8], entry_size: u32) -> Vec<PartitionId> {
    // Partition numbers count every entry, used or not, from 1.
    (1..=u32::MAX)
        .zip(entries.chunks_exact(entry_size as usize))
        .filter(|(_, e)| e[..16].iter().any(|&b| b != 0))
        .map(|(number, e)| {
            let name: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            PartitionId {
                number,
                partuuid: guid_string(&e[16..32]),
                partlabel: Some(String::from_utf16_lossy(&name)).filter(|n| !n.is_empty()),
            }
        })
        .collect()
}

/// The MBR disk signature, if the first sector is an MBR with one.
pub fn mbr_signature(sector0: &[u8]) -> Option<u32> {
    if sector0.get(510..512)? != [0x55, 0xaa] {
        return None;
    }
    let signature = u32::from_le_bytes(sector0.get(440..444)?.try_into().ok()?);
    (signature != 0).then_some(signature)
}

/// The first `len` bytes of a file or device (fewer if it is shorter).
pub fn read_start(path: &Path, len: usize) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(_) => return None,
        }
    }
    buf.truncate(done);
    Some(buf)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The partition identifiers of `partition` (a `/sys/class/block` name), from its disk's table.
fn partition_ids(sys_block: &Path, partition: &str) -> Option<PartitionId> {
    let number: u32 = read_trimmed(&sys_block.join(partition).join("partition"))?
        .parse()
        .ok()?;
    // The parent directory of the partition's sysfs node is the disk's.
    let real = std::fs::canonicalize(sys_block.join(partition)).ok()?;
    let disk = real.parent()?.file_name()?.to_str()?.to_owned();
    let dev = Path::new("/dev").join(&disk);
    let start = read_start(&dev, 1 << 20)?;
    if let Some((entries_at, count, size)) = gpt_entries(start.get(512..1024)?) {
        let len = (count * size) as usize;
        let at = to_usize(entries_at);
        let entries = if let Some(entries) = at.checked_add(len).and_then(|end| start.get(at..end))
        {
            entries.to_vec()
        } else {
            let file = File::open(&dev).ok()?;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, entries_at).ok()?;
            buf
        };
        return gpt_partitions(&entries, size)
            .into_iter()
            .find(|p| p.number == number);
    }
    let signature = mbr_signature(&start)?;
    Some(PartitionId {
        number,
        partuuid: format!("{signature:08x}-{number:02x}"),
        partlabel: None,
    })
}

/// Whether `/dev/<name>` matches `spec`.
fn matches(sys_block: &Path, name: &str, spec: &DeviceSpec) -> bool {
    let dev = Path::new("/dev").join(name);
    match spec {
        DeviceSpec::Path(path) => {
            let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
            wanted == dev
        }
        DeviceSpec::Uuid(uuid) => read_start(&dev, PROBE_BYTES)
            .and_then(|b| probe(&b).uuid)
            .is_some_and(|u| &u == uuid),
        DeviceSpec::Label(label) => read_start(&dev, PROBE_BYTES)
            .and_then(|b| probe(&b).label)
            .is_some_and(|l| &l == label),
        DeviceSpec::PartUuid(uuid) => {
            partition_ids(sys_block, name).is_some_and(|p| &p.partuuid == uuid)
        }
        DeviceSpec::PartLabel(label) => partition_ids(sys_block, name)
            .and_then(|p| p.partlabel)
            .is_some_and(|l| &l == label),
    }
}

/// Looks for the block device `spec` names among those the kernel has now.
pub fn find(spec: &DeviceSpec) -> Option<PathBuf> {
    let sys_block = Path::new("/sys/class/block");
    if let DeviceSpec::Path(path) = spec {
        // A path may name a device outside /sys/class/block's names (a by-id link): accept it
        // once it exists and is a block device.
        let path = Path::new(path);
        use std::os::unix::fs::FileTypeExt;
        return std::fs::metadata(path)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .map(|_| path.to_owned());
    }
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .find(|name| matches(sys_block, name, spec))
        .map(|name| Path::new("/dev").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mkfs.ext4 and mkfs.xfs (the reference tools) write what `probe` reads.
    #[test]
    fn probes_real_filesystems() {
        let dir = tempfile::tempdir().unwrap();
        for (fstype, mkfs, args) in [
            (
                "ext4",
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-L",
                    "dumps",
                    "-U",
                    "0a1b2c3d-1111-2222-3333-444455556666",
                ][..],
            ),
            (
                "xfs",
                "mkfs.xfs",
                &[
                    "-q",
                    "-f",
                    "-L",
                    "xdumps",
                    "-m",
                    "uuid=0a1b2c3d-1111-2222-3333-444455556666",
                ][..],
            ),
        ] {
            let image = dir.path().join(fstype);
            std::fs::File::create(&image)
                .unwrap()
                .set_len(320 << 20)
                .unwrap();
            let status = std::process::Command::new(mkfs)
                .args(args)
                .arg(&image)
                .status()
                .unwrap();
            assert!(status.success(), "{mkfs}");
            let id = probe(&read_start(&image, PROBE_BYTES).unwrap());
            assert_eq!(id.fstype, Some(fstype));
            assert_eq!(
                id.uuid.as_deref(),
                Some("0a1b2c3d-1111-2222-3333-444455556666")
            );
            assert_eq!(
                id.label.as_deref(),
                Some(if fstype == "xfs" { "xdumps" } else { "dumps" })
            );
        }
    }

    #[test]
    fn gpt_entries_give_partuuid_and_partlabel() {
        let mut entry = vec![0u8; 128];
        entry[0] = 1; // type GUID (non-zero: used)
        let unique = [
            0x3d, 0x2c, 0x1b, 0x0a, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55,
            0x66, 0x66,
        ];
        entry[16..32].copy_from_slice(&unique);
        for (i, c) in "dumps".encode_utf16().enumerate() {
            entry[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        let mut entries = vec![0u8; 128];
        entries.extend(entry);
        let parts = gpt_partitions(&entries, 128);
        assert_eq!(
            parts,
            [PartitionId {
                number: 2,
                partuuid: "0a1b2c3d-1111-2222-3333-444455556666".into(),
                partlabel: Some("dumps".into())
            }]
        );
        let mut header = vec![0u8; 512];
        header[..8].copy_from_slice(b"EFI PART");
        header[72..80].copy_from_slice(&2u64.to_le_bytes());
        header[80..84].copy_from_slice(&128u32.to_le_bytes());
        header[84..88].copy_from_slice(&128u32.to_le_bytes());
        assert_eq!(gpt_entries(&header), Some((1024, 128, 128)));
    }

    #[test]
    fn mbr_signature_needs_the_boot_mark() {
        let mut sector = vec![0u8; 512];
        sector[440..444].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        assert_eq!(mbr_signature(&sector), None);
        sector[510] = 0x55;
        sector[511] = 0xaa;
        assert_eq!(mbr_signature(&sector), Some(0x1234_abcd));
    }
}
