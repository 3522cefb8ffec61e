//! Reading kdump-compressed files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::DumpFileError;
use crate::format::bytes::to_usize;
use crate::format::kdump::{
    self, HEADER_SIZE, Header, Layout, PAGE_DESC_SIZE, PageDesc, SUB_HEADER_SIZE, SubHeader,
    Utsname,
};

/// An open kdump-compressed file.
#[derive(Debug)]
pub struct KdumpFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// The main header.
    pub header: Header,
    /// The sub header.
    pub sub: SubHeader,
    /// Where each region is.
    pub layout: Layout,
}

impl KdumpFile {
    /// Opens a kdump-compressed file and checks that its headers and bitmaps are present.
    pub fn open(path: &Path) -> Result<Self, DumpFileError> {
        let io = |source| DumpFileError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut dump = Self {
            file,
            path: path.to_owned(),
            len,
            header: Header::default(),
            sub: SubHeader::default(),
            layout: Layout::new(4096, 0, 0, 0),
        };
        let raw = dump.read(0, HEADER_SIZE, "the header")?;
        dump.header = Header::decode(&raw).map_err(|source| DumpFileError::Kdump {
            path: path.to_owned(),
            source,
        })?;
        let block = u64::from(dump.header.block_size);
        let raw = dump.read(block, SUB_HEADER_SIZE, "the sub header")?;
        dump.sub = SubHeader::decode(&raw).map_err(|source| DumpFileError::Kdump {
            path: path.to_owned(),
            source,
        })?;
        let max_mapnr = if dump.sub.max_mapnr != 0 {
            dump.sub.max_mapnr
        } else {
            u64::from(dump.header.max_mapnr)
        };
        let layout = Layout {
            block_size: block,
            sub_hdr_blocks: u64::from(dump.header.sub_hdr_size),
            bitmap_blocks_each: u64::from(dump.header.bitmap_blocks) / 2,
            descriptors: 0,
        };
        if layout.bitmap_blocks_each * block * 8 < max_mapnr {
            return Err(dump.invalid(format!(
                "bitmaps of {} blocks cannot cover {max_mapnr} page frames",
                dump.header.bitmap_blocks
            )));
        }
        dump.layout = layout;
        dump.check(layout.descriptors(), "the bitmap area")?;
        let second = dump.second_bitmap()?;
        dump.layout.descriptors = second.iter().map(|b| u64::from(b.count_ones())).sum();
        dump.check(dump.layout.data(), "the page descriptor table")?;
        Ok(dump)
    }

    fn invalid(&self, what: String) -> DumpFileError {
        DumpFileError::Invalid {
            path: self.path.clone(),
            what,
        }
    }

    fn check(&self, end: u64, what: &str) -> Result<(), DumpFileError> {
        if end > self.len {
            return Err(DumpFileError::Truncated {
                path: self.path.clone(),
                what: what.to_owned(),
                end,
                len: self.len,
            });
        }
        Ok(())
    }

    fn read(&self, offset: u64, len: usize, what: &str) -> Result<Vec<u8>, DumpFileError> {
        self.check(offset + len as u64, what)?;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| DumpFileError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }

    /// The file's size.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Page frames covered.
    pub fn max_mapnr(&self) -> u64 {
        if self.sub.max_mapnr != 0 {
            self.sub.max_mapnr
        } else {
            u64::from(self.header.max_mapnr)
        }
    }

    /// The dead kernel's utsname.
    pub fn utsname(&self) -> Utsname {
        Utsname::decode(&self.header.utsname).unwrap_or_default()
    }

    /// The dead kernel's VMCOREINFO, as the sub header places it (`None` when it has none).
    pub fn vmcoreinfo(
        &self,
    ) -> Result<Option<crate::format::vmcoreinfo::VmcoreInfo>, DumpFileError> {
        let (offset, size) = (self.sub.offset_vmcoreinfo, self.sub.size_vmcoreinfo);
        if offset == 0 || size == 0 {
            return Ok(None);
        }
        if size > 1 << 20 {
            return Err(DumpFileError::Invalid {
                path: self.path.clone(),
                what: format!("a VMCOREINFO of {size} bytes"),
            });
        }
        let raw = self.read(offset, to_usize(size), "VMCOREINFO")?;
        Ok(Some(crate::format::vmcoreinfo::VmcoreInfo::parse(&raw)))
    }

    /// Whether the header says the dump is incomplete.
    pub fn incomplete_flag(&self) -> bool {
        self.header.status & kdump::DUMP_INCOMPLETE != 0
    }

    fn bitmap(&self, offset: u64, what: &str) -> Result<Vec<u8>, DumpFileError> {
        let bytes = to_usize(self.max_mapnr().div_ceil(8));
        self.read(offset, bytes, what)
    }

    /// The 1st bitmap (page frames present in memory).
    pub fn first_bitmap(&self) -> Result<Vec<u8>, DumpFileError> {
        self.bitmap(self.layout.first_bitmap(), "the 1st bitmap")
    }

    /// The 2nd bitmap (page frames in the dump).
    pub fn second_bitmap(&self) -> Result<Vec<u8>, DumpFileError> {
        self.bitmap(self.layout.second_bitmap(), "the 2nd bitmap")
    }

    /// The page descriptors, in page-frame order, with their page frame numbers.
    pub fn descriptors(&self) -> Result<Vec<(u64, PageDesc)>, DumpFileError> {
        let second = self.second_bitmap()?;
        let raw = self.read(
            self.layout.descriptors(),
            to_usize(self.layout.descriptors) * PAGE_DESC_SIZE,
            "the page descriptor table",
        )?;
        let pfns = second.iter().enumerate().flat_map(|(byte, bits)| {
            (0..8)
                .filter(move |b| bits >> b & 1 != 0)
                .map(move |b| byte as u64 * 8 + b)
        });
        Ok(pfns
            .zip(raw.chunks_exact(PAGE_DESC_SIZE))
            .map(|(pfn, d)| (pfn, PageDesc::decode(d).expect("24-byte chunk")))
            .collect())
    }
}
