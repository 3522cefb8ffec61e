//! The kdump-compressed format (`KDUMP   `, header version 6), as makedumpfile writes it and
//! `crash`, libkdumpfile and `drgn` read it.
//!
//! ```text
//! block 0                 disk_dump_header (464 bytes)
//! block 1                 kdump_sub_header (104 bytes), then a verbatim copy of the PT_NOTE segment
//! 1 + sub_hdr_size        1st bitmap: pfns present in memory (bit p&7 of byte p>>3)
//!  + bitmap_blocks/2      2nd bitmap: pfns stored in the dump
//! 1 + sub + bitmap        page descriptors (24 bytes each), one per set bit of the 2nd bitmap
//!  + 24 * descriptors     page data: the shared zero page first, then each stored page
//! ```
//!
//! All fields are in the dumped machine's byte order (little-endian) with its `long` size (8).

use super::bytes::{self, OutOfBounds};

/// The signature at offset 0.
pub const SIGNATURE: &[u8; 8] = b"KDUMP   ";
/// The header version written (6 adds the 64-bit pfn fields to the sub header).
pub const HEADER_VERSION: u32 = 6;
/// Size of `struct disk_dump_header` on x86_64.
pub const HEADER_SIZE: usize = 464;
/// Size of `struct kdump_sub_header` (version 6) on x86_64.
pub const SUB_HEADER_SIZE: usize = 104;
/// Size of `struct page_desc`.
pub const PAGE_DESC_SIZE: usize = 24;
/// Length of each `utsname` field.
pub const UTS_FIELD_LEN: usize = 65;

/// Page or dump compressed with zlib.
pub const COMPRESSED_ZLIB: u32 = 0x1;
/// Page or dump compressed with LZO.
pub const COMPRESSED_LZO: u32 = 0x2;
/// Page or dump compressed with snappy.
pub const COMPRESSED_SNAPPY: u32 = 0x4;
/// Header status: the dump is incomplete.
pub const DUMP_INCOMPLETE: u32 = 0x8;
/// Page or dump compressed with zstd.
pub const COMPRESSED_ZSTD: u32 = 0x20;

/// The codec a page's or the header's compression flags name: "zlib", "lzo", "snappy" or
/// "zstd" (the lowest codec bit set wins, as in makedumpfile's readers), "none" for none.
pub fn compression_name(flags: u32) -> &'static str {
    [
        (COMPRESSED_ZLIB, "zlib"),
        (COMPRESSED_LZO, "lzo"),
        (COMPRESSED_SNAPPY, "snappy"),
        (COMPRESSED_ZSTD, "zstd"),
    ]
    .into_iter()
    .find(|&(flag, _)| flags & flag != 0)
    .map_or("none", |(_, name)| name)
}

/// Why bytes are not a readable kdump-compressed header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdumpError {
    /// The signature is not `KDUMP   `.
    #[error("not a kdump-compressed file (signature {0:?})")]
    BadSignature(String),
    /// Header versions before 6 lack the 64-bit fields rkdump relies on.
    #[error("unsupported kdump header version {0}")]
    UnsupportedVersion(u32),
    /// The block size is not a usable page size.
    #[error("invalid block size {0}")]
    BadBlockSize(u32),
    /// A structure is cut short.
    #[error("truncated kdump structure: {0}")]
    Truncated(#[from] OutOfBounds),
}

/// The `new_utsname` of the dead kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Utsname {
    /// Operating system name ("Linux").
    pub sysname: String,
    /// Host name.
    pub nodename: String,
    /// Kernel release.
    pub release: String,
    /// Kernel version (build string).
    pub version: String,
    /// Machine ("x86_64").
    pub machine: String,
    /// NIS domain name.
    pub domainname: String,
}

impl Utsname {
    /// Decodes six 65-byte NUL-padded fields.
    pub fn decode(raw: &[u8]) -> Result<Self, OutOfBounds> {
        let field = |i: usize| -> Result<String, OutOfBounds> {
            let bytes = bytes::slice(raw, i * UTS_FIELD_LEN, UTS_FIELD_LEN)?;
            let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            Ok(String::from_utf8_lossy(&bytes[..len]).into_owned())
        };
        Ok(Self {
            sysname: field(0)?,
            nodename: field(1)?,
            release: field(2)?,
            version: field(3)?,
            machine: field(4)?,
            domainname: field(5)?,
        })
    }
}

/// `struct disk_dump_header`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The dead kernel's `init_uts_ns.name`, raw (6 × 65 bytes).
    pub utsname: Vec<u8>,
    /// Crash time, seconds since the epoch.
    pub timestamp_sec: u64,
    /// `COMPRESSED_*` method and `DUMP_INCOMPLETE`.
    pub status: u32,
    /// Block size, equal to the page size.
    pub block_size: u32,
    /// Size of the sub header plus notes, in blocks.
    pub sub_hdr_size: u32,
    /// Size of both bitmaps together, in blocks.
    pub bitmap_blocks: u32,
    /// Number of page frames covered, clipped to 32 bits (the full value is in the sub header).
    pub max_mapnr: u32,
    /// Number of CPUs with register notes.
    pub nr_cpus: u32,
}

impl Header {
    /// Encodes the header, padded to `HEADER_SIZE`.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[..8].copy_from_slice(SIGNATURE);
        out[8..12].copy_from_slice(&HEADER_VERSION.to_le_bytes());
        let uts_len = self.utsname.len().min(6 * UTS_FIELD_LEN);
        out[12..12 + uts_len].copy_from_slice(&self.utsname[..uts_len]);
        out[408..416].copy_from_slice(&self.timestamp_sec.to_le_bytes());
        out[424..428].copy_from_slice(&self.status.to_le_bytes());
        out[428..432].copy_from_slice(&self.block_size.to_le_bytes());
        out[432..436].copy_from_slice(&self.sub_hdr_size.to_le_bytes());
        out[436..440].copy_from_slice(&self.bitmap_blocks.to_le_bytes());
        out[440..444].copy_from_slice(&self.max_mapnr.to_le_bytes());
        out[460..464].copy_from_slice(&self.nr_cpus.to_le_bytes());
        out
    }

    /// Decodes and validates a header.
    pub fn decode(raw: &[u8]) -> Result<Self, KdumpError> {
        let signature = bytes::slice(raw, 0, 8)?;
        if signature != SIGNATURE {
            return Err(KdumpError::BadSignature(
                String::from_utf8_lossy(signature).into_owned(),
            ));
        }
        let version = bytes::u32_le(raw, 8)?;
        if version < HEADER_VERSION {
            return Err(KdumpError::UnsupportedVersion(version));
        }
        let block_size = bytes::u32_le(raw, 428)?;
        if !block_size.is_power_of_two() || !(512..=1 << 16).contains(&block_size) {
            return Err(KdumpError::BadBlockSize(block_size));
        }
        Ok(Self {
            utsname: bytes::slice(raw, 12, 6 * UTS_FIELD_LEN)?.to_vec(),
            timestamp_sec: bytes::u64_le(raw, 408)?,
            status: bytes::u32_le(raw, 424)?,
            block_size,
            sub_hdr_size: bytes::u32_le(raw, 432)?,
            bitmap_blocks: bytes::u32_le(raw, 436)?,
            max_mapnr: bytes::u32_le(raw, 440)?,
            nr_cpus: bytes::u32_le(raw, 460)?,
        })
    }
}

/// `struct kdump_sub_header`, version 6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubHeader {
    /// The kernel's `phys_base`.
    pub phys_base: u64,
    /// The dump level (`-d`).
    pub dump_level: u32,
    /// File offset of the VMCOREINFO text (inside the note copy).
    pub offset_vmcoreinfo: u64,
    /// Size of the VMCOREINFO text.
    pub size_vmcoreinfo: u64,
    /// File offset of the note copy.
    pub offset_note: u64,
    /// Size of the note copy.
    pub size_note: u64,
    /// Number of page frames covered.
    pub max_mapnr: u64,
}

impl SubHeader {
    /// Encodes the sub header of a single (not `--split`) dump file.
    pub fn encode(&self) -> [u8; SUB_HEADER_SIZE] {
        let mut out = [0u8; SUB_HEADER_SIZE];
        out[0..8].copy_from_slice(&self.phys_base.to_le_bytes());
        out[8..12].copy_from_slice(&self.dump_level.to_le_bytes());
        out[32..40].copy_from_slice(&self.offset_vmcoreinfo.to_le_bytes());
        out[40..48].copy_from_slice(&self.size_vmcoreinfo.to_le_bytes());
        out[48..56].copy_from_slice(&self.offset_note.to_le_bytes());
        out[56..64].copy_from_slice(&self.size_note.to_le_bytes());
        out[96..104].copy_from_slice(&self.max_mapnr.to_le_bytes());
        out
    }

    /// Decodes a sub header.
    pub fn decode(raw: &[u8]) -> Result<Self, KdumpError> {
        Ok(Self {
            phys_base: bytes::u64_le(raw, 0)?,
            dump_level: bytes::u32_le(raw, 8)?,
            offset_vmcoreinfo: bytes::u64_le(raw, 32)?,
            size_vmcoreinfo: bytes::u64_le(raw, 40)?,
            offset_note: bytes::u64_le(raw, 48)?,
            size_note: bytes::u64_le(raw, 56)?,
            max_mapnr: bytes::u64_le(raw, 96)?,
        })
    }
}

/// `struct page_desc`: where one stored page is and how it is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageDesc {
    /// File offset of the page's data (0: the page was never written).
    pub offset: u64,
    /// Bytes stored.
    pub size: u32,
    /// `COMPRESSED_*` flag of this page, or 0 when stored raw.
    pub flags: u32,
}

impl PageDesc {
    /// Encodes the descriptor.
    pub fn encode(&self) -> [u8; PAGE_DESC_SIZE] {
        let mut out = [0u8; PAGE_DESC_SIZE];
        out[0..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.size.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out
    }

    /// Decodes a descriptor.
    pub fn decode(raw: &[u8]) -> Result<Self, OutOfBounds> {
        Ok(Self {
            offset: bytes::u64_le(raw, 0)?,
            size: bytes::u32_le(raw, 8)?,
            flags: bytes::u32_le(raw, 12)?,
        })
    }
}

/// Where each region of a kdump-compressed file starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Block (and page) size.
    pub block_size: u64,
    /// Size of the sub header plus notes, in blocks.
    pub sub_hdr_blocks: u64,
    /// Size of one bitmap, in blocks.
    pub bitmap_blocks_each: u64,
    /// Number of page descriptors (set bits of the 2nd bitmap).
    pub descriptors: u64,
}

impl Layout {
    /// Plans a file for `max_mapnr` page frames, a note copy of `note_size` bytes and
    /// `descriptors` stored pages.
    pub fn new(block_size: u64, note_size: u64, max_mapnr: u64, descriptors: u64) -> Self {
        let sub_hdr_blocks = (SUB_HEADER_SIZE as u64 + note_size).div_ceil(block_size);
        let bitmap_blocks_each = max_mapnr.div_ceil(8).div_ceil(block_size);
        Self {
            block_size,
            sub_hdr_blocks,
            bitmap_blocks_each,
            descriptors,
        }
    }

    /// Offset of the sub header.
    pub fn sub_header(&self) -> u64 {
        self.block_size
    }

    /// Offset of the note copy.
    pub fn notes(&self) -> u64 {
        self.block_size + SUB_HEADER_SIZE as u64
    }

    /// Offset of the 1st bitmap.
    pub fn first_bitmap(&self) -> u64 {
        (1 + self.sub_hdr_blocks) * self.block_size
    }

    /// Offset of the 2nd bitmap.
    pub fn second_bitmap(&self) -> u64 {
        self.first_bitmap() + self.bitmap_blocks_each * self.block_size
    }

    /// Offset of the first page descriptor.
    pub fn descriptors(&self) -> u64 {
        self.second_bitmap() + self.bitmap_blocks_each * self.block_size
    }

    /// Offset of the page data area.
    pub fn data(&self) -> u64 {
        self.descriptors() + self.descriptors * PAGE_DESC_SIZE as u64
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn header_round_trips_at_makedumpfile_offsets() {
        let mut utsname = vec![0u8; 6 * UTS_FIELD_LEN];
        utsname[..5].copy_from_slice(b"Linux");
        utsname[2 * UTS_FIELD_LEN..][..6].copy_from_slice(b"6.1.0a");
        let header = Header {
            utsname,
            timestamp_sec: 1_764_072_000,
            status: COMPRESSED_ZSTD,
            block_size: 4096,
            sub_hdr_size: 2,
            bitmap_blocks: 16,
            max_mapnr: 0x3ffdd,
            nr_cpus: 2,
        };
        let raw = header.encode();
        assert_eq!(&raw[..8], b"KDUMP   ");
        assert_eq!(&raw[142..148], b"6.1.0a");
        assert_eq!(raw[424], 0x20);
        assert_eq!(Header::decode(&raw), Ok(header.clone()));
        let uts = Utsname::decode(&header.utsname).unwrap();
        assert_eq!(
            (uts.sysname.as_str(), uts.release.as_str()),
            ("Linux", "6.1.0a")
        );
    }

    #[test]
    fn rejects_other_files() {
        assert!(matches!(
            Header::decode(&[0; HEADER_SIZE]),
            Err(KdumpError::BadSignature(_))
        ));
        let mut raw = Header {
            block_size: 4096,
            ..Default::default()
        }
        .encode();
        raw[8] = 5;
        assert_eq!(Header::decode(&raw), Err(KdumpError::UnsupportedVersion(5)));
        let raw = Header {
            block_size: 3000,
            ..Default::default()
        }
        .encode();
        assert_eq!(Header::decode(&raw), Err(KdumpError::BadBlockSize(3000)));
        assert!(matches!(
            Header::decode(b"KDUMP   "),
            Err(KdumpError::Truncated(_))
        ));
    }

    #[test]
    fn layout_matches_makedumpfile_for_a_1_gib_guest() {
        // The 1 GiB guest of the reference notes: 4020-byte notes, max_mapnr 0x3ffdd.
        let layout = Layout::new(4096, 4020, 0x3ffdd, 19_486);
        assert_eq!(layout.sub_hdr_blocks, 2);
        assert_eq!(layout.notes(), 0x1068);
        assert_eq!(layout.bitmap_blocks_each, 8);
        assert_eq!(layout.first_bitmap(), 3 * 4096);
        assert_eq!(layout.descriptors(), 19 * 4096);
        assert_eq!(layout.data(), 19 * 4096 + 19_486 * 24);
    }

    proptest! {
        #[test]
        fn sub_header_and_descriptors_round_trip(v in any::<(u64, u32, [u64; 5], u64, u32, u32)>()) {
            let (phys_base, dump_level, [a, b, c, d, max_mapnr], offset, size, flags) = v;
            let sub = SubHeader {
                phys_base, dump_level, offset_vmcoreinfo: a, size_vmcoreinfo: b,
                offset_note: c, size_note: d, max_mapnr,
            };
            prop_assert_eq!(SubHeader::decode(&sub.encode()), Ok(sub));
            let desc = PageDesc { offset, size, flags };
            prop_assert_eq!(PageDesc::decode(&desc.encode()), Ok(desc));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Header::decode(&raw);
            let _ = SubHeader::decode(&raw);
            let _ = PageDesc::decode(&raw);
        }
    }
}
