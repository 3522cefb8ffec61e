//! Reading a capture image as the kernel unpacks it, for the estimate (how much room it takes
//! unpacked) and the doctor (which modules it holds).
//!
//! An image is one or more `newc` archives, each plain or compressed; rkdump reads plain ones and
//! zstd ones (rkdump's own images, and Debian's mkinitramfs default), also one after the other
//! (early microcode first, then the main archive, as mkinitramfs writes it). Another
//! compression ends the reading with a note: the unpacked size is then counted as four times
//! the packed rest, and the module list is what the plain part showed.

use crate::format::cpio::{self, Entry};

/// Largest unpacked size read (a guard against a decompression bomb).
const MAX_UNPACKED: u64 = 4 << 30;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// What an image holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Initramfs {
    /// Every entry read.
    pub entries: Vec<Entry>,
    /// Bytes it takes unpacked (file data; four times the packed size of what could not be
    /// read).
    pub unpacked: u64,
    /// What could not be read, when something could not.
    pub note: Option<String>,
}

impl Initramfs {
    /// Whether the image holds the kernel module `name` (`-` and `_` alike, any of `.ko`,
    /// `.ko.xz`, `.ko.zst`, `.ko.gz`).
    pub(crate) fn has_module(&self, name: &str) -> bool {
        let wanted = name.replace('-', "_");
        self.entries.iter().any(|entry| {
            let file = entry.name.rsplit('/').next().unwrap_or(&entry.name);
            [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().any(|suffix| {
                file.strip_suffix(suffix)
                    .is_some_and(|stem| stem.replace('-', "_") == wanted)
            })
        })
    }
}

/// Why an image cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitramfsError {
    /// A cpio archive is damaged.
    #[error(transparent)]
    Cpio(#[from] cpio::CpioError),
    /// The zstd stream is damaged.
    #[error("zstd: {0}")]
    Zstd(std::io::Error),
}

/// Reads an image.
pub(crate) fn read(image: &[u8]) -> Result<Initramfs, InitramfsError> {
    let mut result = Initramfs::default();
    let mut rest = image;
    loop {
        let start = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
        rest = &rest[start..];
        if rest.is_empty() {
            return Ok(result);
        }
        if rest.starts_with(&ZSTD_MAGIC) {
            let decoder = zstd::stream::read::Decoder::new(rest).map_err(InitramfsError::Zstd)?;
            let mut unpacked = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(decoder, MAX_UNPACKED),
                &mut unpacked,
            )
            .map_err(InitramfsError::Zstd)?;
            let inner = read(&unpacked)?;
            result.unpacked += inner.unpacked;
            result.entries.extend(inner.entries);
            result.note = result.note.or(inner.note);
            return Ok(result);
        }
        if !rest.starts_with(b"070701") {
            result.unpacked += 4 * rest.len() as u64;
            result.note = Some(
                "part of the image is compressed with something other than zstd: its unpacked \
                 size is taken as 4x and its modules are not seen"
                    .into(),
            );
            return Ok(result);
        }
        let (entries, end) = cpio::entries(rest)?;
        result.unpacked += entries.iter().map(|e| e.size).sum::<u64>();
        result.entries.extend(entries);
        rest = &rest[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, usize)]) -> Vec<u8> {
        let mut archive = cpio::Archive::new();
        for (path, size) in files {
            archive.file(path, 0o644, &vec![1; *size]);
        }
        archive.finish()
    }

    #[test]
    fn plain_zstd_and_microcode_first_images() {
        let plain = archive(&[("/init", 1000)]);
        let read_plain = read(&plain).unwrap();
        assert_eq!((read_plain.unpacked, read_plain.note), (1000, None));
        let main = archive(&[
            (
                "/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko.xz",
                100_000,
            ),
            ("/lib/modules/6.1/kernel/drivers/watchdog/i6300esb.ko", 10),
        ]);
        let zstd = zstd::encode_all(&main[..], 19).unwrap();
        assert!(zstd.len() < 10_000);
        let mut both = archive(&[("/kernel/x86/microcode/GenuineIntel.bin", 500)]);
        both.extend_from_slice(&[0; 100]);
        both.extend_from_slice(&zstd);
        let image = read(&both).unwrap();
        assert_eq!(image.unpacked, 100_510);
        assert_eq!(image.entries.len(), 3);
        assert!(image.has_module("virtio_blk") && image.has_module("virtio-blk"));
        assert!(image.has_module("i6300esb"));
        assert!(!image.has_module("virtio_net"));
        let mut gzip = plain.clone();
        gzip.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        let image = read(&gzip).unwrap();
        assert_eq!(image.unpacked, 1032);
        assert!(image.note.unwrap().contains("4x"));
        assert!(
            read(b"hello").unwrap().note.is_some(),
            "unknown compression"
        );
        assert!(
            read(&plain[..plain.len() - 150]).is_err(),
            "a truncated archive"
        );
    }
}
