//! The x86 boot protocol's setup header of a bzImage (Documentation/arch/x86/boot.rst).
//!
//! A bzImage is the real-mode setup (`setup_sects + 1` sectors of 512 bytes, the boot sector
//! included) followed by the protected-mode kernel. Loading it for a crash with `kexec_load`
//! needs the header copied into `boot_params`, the 64-bit entry at `load + 0x200`, the
//! run-time footprint `init_size` and the placement rules (`kernel_alignment`, relocatable,
//! loadable above 4 GiB). The checks are those of the kernel's `bzImage64_probe`: a header
//! (`HdrS`), protocol 2.12 or later, a 64-bit entry, loadable above 4 GiB, and 5-level paging
//! support when the running kernel uses it.

use crate::format::bytes::{self, OutOfBounds};

/// Offset of the setup header in the image and in `boot_params`.
pub(crate) const HEADER_OFFSET: usize = 0x1f1;
/// The most of the setup header kexec-tools copies (up to 0x270, `kernel_info_offset` included).
const MAX_HEADER_LEN: usize = 0x7f;
/// Offset of the 64-bit entry point from the protected-mode kernel's load address.
pub(crate) const ENTRY_64_OFFSET: u64 = 0x200;
/// `xloadflags`: the kernel has a 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// `xloadflags`: kernel, boot_params, command line and initrd may live above 4 GiB.
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// `xloadflags`: the kernel boots with 5-level paging enabled.
const XLF_5LEVEL: u16 = 1 << 5;
/// The oldest boot protocol with `xloadflags` (and what the kernel's own loader requires).
const MIN_VERSION: u16 = 0x020c;

/// What a bzImage lacks for a 64-bit crash load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BzImageError {
    /// Shorter than its own header says.
    #[error("truncated bzImage: {0}")]
    Truncated(#[from] OutOfBounds),
    /// No `HdrS` signature at 0x202.
    #[error("not a bzImage: no \"HdrS\" setup header at 0x202")]
    NoHeader,
    /// Boot protocol older than 2.12.
    #[error("boot protocol {}.{:02} is older than 2.12 (no xloadflags)", .0 >> 8, .0 & 0xff)]
    OldProtocol(u16),
    /// No 64-bit entry point.
    #[error("no 64-bit entry point (xloadflags {0:#x} lacks XLF_KERNEL_64)")]
    Not64Bit(u16),
    /// Cannot be loaded above 4 GiB.
    #[error("cannot be loaded above 4 GiB (xloadflags {0:#x} lacks XLF_CAN_BE_LOADED_ABOVE_4G)")]
    Below4G(u16),
    /// The running kernel uses 5-level paging and the image cannot start in it.
    #[error(
        "the running kernel uses 5-level paging and the image cannot boot in it (xloadflags {0:#x} lacks XLF_5LEVEL)"
    )]
    No5Level(u16),
    /// Not relocatable: it would have to run at its fixed address, outside the crash region.
    #[error("not a relocatable kernel (CONFIG_RELOCATABLE off)")]
    NotRelocatable,
    /// `kernel_alignment` is not a power of two of at least a page.
    #[error("kernel_alignment {0:#x} is not a power of two of at least 4096")]
    BadAlignment(u32),
    /// The protected-mode kernel is larger than its own run-time size.
    #[error("the protected-mode kernel ({code} bytes) is larger than init_size ({init_size})")]
    InitSize {
        /// Bytes of the protected-mode kernel.
        code: u64,
        /// `init_size`.
        init_size: u32,
    },
}

/// The setup header fields the loader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetupHeader {
    /// `setup_sects` (0 read as 4, as the protocol says).
    pub setup_sects: u8,
    /// Boot protocol version (`0x020f` is 2.15).
    pub version: u16,
    /// `loadflags`.
    pub loadflags: u8,
    /// `kernel_alignment`: the protected-mode kernel's load address must be a multiple of it.
    pub kernel_alignment: u32,
    /// `relocatable_kernel`.
    pub relocatable: bool,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// `cmdline_size`: the longest command line, without its NUL.
    pub cmdline_size: u32,
    /// `pref_address`.
    pub pref_address: u64,
    /// `init_size`: bytes the kernel needs from its load address until it runs.
    pub init_size: u32,
    /// The kernel version string the header points at (`kernel_version`), if any.
    pub kernel_version: Option<String>,
    /// Bytes of the header to copy into `boot_params` from [`HEADER_OFFSET`]:
    /// `0x202 + image[0x201] - 0x1f1`, capped as kexec-tools caps it.
    pub header_len: usize,
}

impl SetupHeader {
    /// Offset of the protected-mode kernel in the image.
    pub fn kernel_offset(&self) -> usize {
        (usize::from(self.setup_sects) + 1) * 512
    }
}

/// Reads and checks the setup header of `image`; `five_level` says whether the running kernel
/// uses 5-level paging.
pub(crate) fn parse(image: &[u8], five_level: bool) -> Result<SetupHeader, BzImageError> {
    if bytes::slice(image, 0x202, 4)? != b"HdrS" {
        return Err(BzImageError::NoHeader);
    }
    let version = bytes::u16_le(image, 0x206)?;
    if version < MIN_VERSION {
        return Err(BzImageError::OldProtocol(version));
    }
    let xloadflags = bytes::u16_le(image, 0x236)?;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BzImageError::Not64Bit(xloadflags));
    }
    if xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G == 0 {
        return Err(BzImageError::Below4G(xloadflags));
    }
    if five_level && xloadflags & XLF_5LEVEL == 0 {
        return Err(BzImageError::No5Level(xloadflags));
    }
    if bytes::slice(image, 0x234, 1)?[0] == 0 {
        return Err(BzImageError::NotRelocatable);
    }
    let kernel_alignment = bytes::u32_le(image, 0x230)?;
    if !kernel_alignment.is_power_of_two() || kernel_alignment < 4096 {
        return Err(BzImageError::BadAlignment(kernel_alignment));
    }
    let setup_sects = match bytes::slice(image, HEADER_OFFSET, 1)?[0] {
        0 => 4,
        n => n,
    };
    let jump_end = usize::from(bytes::slice(image, 0x201, 1)?[0]) + 0x202;
    let header = SetupHeader {
        setup_sects,
        version,
        loadflags: bytes::slice(image, 0x211, 1)?[0],
        kernel_alignment,
        relocatable: true,
        xloadflags,
        cmdline_size: bytes::u32_le(image, 0x238)?,
        pref_address: bytes::u64_le(image, 0x258)?,
        init_size: bytes::u32_le(image, 0x260)?,
        kernel_version: kernel_version(image),
        header_len: jump_end.saturating_sub(HEADER_OFFSET).min(MAX_HEADER_LEN),
    };
    // The protected-mode kernel must be there, and fit in what it says it needs.
    let code = image
        .len()
        .checked_sub(header.kernel_offset())
        .ok_or(OutOfBounds {
            offset: header.kernel_offset(),
            len: 0,
            available: image.len(),
        })?;
    let code = u64::try_from(code).unwrap_or(u64::MAX);
    if code > u64::from(header.init_size) {
        return Err(BzImageError::InitSize {
            code,
            init_size: header.init_size,
        });
    }
    Ok(header)
}

/// The NUL-terminated string at `0x200 + kernel_version` (boot.rst: "kernel_version").
fn kernel_version(image: &[u8]) -> Option<String> {
    let pointer = bytes::u16_le(image, 0x20e).ok()?;
    if pointer == 0 {
        return None;
    }
    let start = usize::from(pointer) + 0x200;
    let tail = image.get(start..)?;
    let end = tail.iter().take(256).position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&tail[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    //! The image is the first 0x4530 bytes (the setup header and the version string it points at) of the lab's Debian `vmlinuz-6.1.0-57-cloud-amd64` (the
    //! whole setup header), padded with zeros to the real file's 14190528 bytes. Expected values:
    //! `file vmlinuz` for the version string; kexec-tools 2.0.26's `kexec -p --debug` in the
    //! guest for `init_size` ("kernel init_size 0x3378000") and the protected-mode size
    //! (segment bufsz 0xd837c0 = 14190528 - (39 + 1) * 512); the offsets are boot.rst's.
    use super::*;

    const HEAD: &[u8] = include_bytes!("testdata/vmlinuz-6.1.0-57-cloud-amd64.head");
    const FILE_LEN: usize = 14_190_528;

    fn image() -> Vec<u8> {
        let mut image = HEAD.to_vec();
        image.resize(FILE_LEN, 0);
        image
    }

    #[test]
    fn reads_the_debian_cloud_kernel() {
        let image = image();
        let header = parse(&image, false).unwrap();
        assert_eq!(
            header.kernel_version.as_deref(),
            Some(
                "6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)"
            )
        );
        assert_eq!(header.init_size, 0x337_8000);
        assert_eq!(FILE_LEN - header.kernel_offset(), 0xd8_37c0);
        assert_eq!(header.version, 0x020f);
        assert_eq!(header.kernel_alignment, 0x20_0000);
        assert_eq!(header.cmdline_size, 0x7ff);
        assert_eq!(header.pref_address, 0x100_0000);
        // 0x202 + 0x6a - 0x1f1: the header up to the end of the jump's target area.
        assert_eq!(header.header_len, 0x7b);
        // xloadflags 0x7f: 64-bit entry, above 4G, EFI handovers, kexec, 5-level.
        assert!(parse(&image, true).is_ok());
    }

    #[test]
    fn says_what_the_image_lacks() {
        let good = image();
        let with = |offset: usize, value: &[u8]| {
            let mut image = good.clone();
            image[offset..offset + value.len()].copy_from_slice(value);
            image
        };
        assert_eq!(
            parse(&with(0x202, b"HdrX"), false),
            Err(BzImageError::NoHeader)
        );
        assert_eq!(
            parse(&with(0x206, &0x020bu16.to_le_bytes()), false),
            Err(BzImageError::OldProtocol(0x020b))
        );
        assert_eq!(
            parse(&with(0x236, &0x7eu16.to_le_bytes()), false),
            Err(BzImageError::Not64Bit(0x7e))
        );
        assert_eq!(
            parse(&with(0x236, &0x7du16.to_le_bytes()), false),
            Err(BzImageError::Below4G(0x7d))
        );
        assert_eq!(
            parse(&with(0x236, &0x1fu16.to_le_bytes()), true),
            Err(BzImageError::No5Level(0x1f))
        );
        assert_eq!(
            parse(&with(0x234, &[0]), false),
            Err(BzImageError::NotRelocatable)
        );
        assert!(matches!(
            parse(&good[..0x300], false),
            Err(BzImageError::Truncated(_))
        ));
        assert!(matches!(
            parse(&good[..0x100], false),
            Err(BzImageError::Truncated(_))
        ));
        let mut too_big = good.clone();
        too_big.resize(0x337_8000 + 40 * 512 + 1, 0);
        assert!(matches!(
            parse(&too_big, false),
            Err(BzImageError::InitSize { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = parse(&bytes, false);
            let _ = parse(&bytes, true);
        }
    }
}
