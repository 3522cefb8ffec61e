//! Bulk page access for the dump pipeline.
//!
//! [`PageMap`] lists the page frames a vmcore holds as extents: runs of whole pages stored
//! contiguously in one segment's file data ("regular"), and single pages that are only partly
//! backed by file data ("irregular": a segment starting or ending inside a page), which read
//! with zero-fill. Where segments overlap (the kernel-text alias), RAM segments win.
//!
//! [`PageReader`] gives a worker the bytes of a window of regular pages: through a read-only
//! `mmap` (no copy; `/proc/vmcore` supports it since Linux 3.11) or, where mapping fails or is
//! disabled, through `pread` of just the pages the worker needs.

use std::os::unix::fs::FileExt;

use super::{PAGE_SHIFT, PAGE_SIZE, Segment, Vmcore, VmcoreError};
use crate::format::bytes::to_usize;

/// How a run of page frames is stored in the vmcore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Whole pages, contiguous in the file from this offset.
    Regular {
        /// File offset of the extent's first page.
        file_offset: u64,
    },
    /// A page only partly backed by file data; read it with [`Vmcore::read_page`].
    Irregular,
}

/// A run of page frames with the same storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First page frame.
    pub pfn_start: u64,
    /// End page frame (exclusive).
    pub pfn_end: u64,
    /// Where the data is.
    pub kind: ExtentKind,
}

/// The readable page frames of a vmcore, sorted and disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageMap {
    extents: Vec<Extent>,
}

impl PageMap {
    /// Builds the map from the PT_LOAD segments.
    pub fn new(segments: &[Segment]) -> Self {
        let mut ordered: Vec<&Segment> = segments.iter().collect();
        ordered.sort_by_key(|s| (s.phys_start, s.is_kernel_text()));
        let mut extents: Vec<Extent> = Vec::new();
        let mut covered = 0u64;
        let push = |extents: &mut Vec<Extent>, start: u64, end: u64, kind: ExtentKind| {
            if start < end {
                extents.push(Extent {
                    pfn_start: start,
                    pfn_end: end,
                    kind,
                });
            }
        };
        for segment in ordered {
            let data_end = segment.file_phys_end();
            let first_whole = segment.phys_start.div_ceil(PAGE_SIZE);
            let end_whole = data_end >> PAGE_SHIFT;
            let first_touched = segment.phys_start >> PAGE_SHIFT;
            let end_touched = data_end.div_ceil(PAGE_SIZE);
            for pfn in first_touched..first_whole.min(end_touched) {
                if pfn >= covered {
                    push(&mut extents, pfn, pfn + 1, ExtentKind::Irregular);
                    covered = pfn + 1;
                }
            }
            let start = first_whole.max(covered);
            if start < end_whole {
                let file_offset =
                    segment.file_offset + ((start << PAGE_SHIFT) - segment.phys_start);
                push(
                    &mut extents,
                    start,
                    end_whole,
                    ExtentKind::Regular { file_offset },
                );
                covered = end_whole;
            }
            if end_whole < end_touched && end_whole >= first_whole && end_whole >= covered {
                push(
                    &mut extents,
                    end_whole,
                    end_whole + 1,
                    ExtentKind::Irregular,
                );
                covered = end_whole + 1;
            }
        }
        Self { extents }
    }

    /// The extents, in pfn order.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }
}

impl Vmcore {
    /// Reads page frame `pfn` the way makedumpfile's `readpage_elf` does: bytes backed by file
    /// data are read, the rest of the page is zero; a page no segment touches is an error.
    pub fn read_page(&self, pfn: u64, page: &mut [u8]) -> Result<(), VmcoreError> {
        let start = pfn << PAGE_SHIFT;
        let end = start + PAGE_SIZE;
        page.fill(0);
        let mut touched = false;
        for segment in self.segments() {
            let lo = start.max(segment.phys_start);
            let hi = end.min(segment.file_phys_end());
            if segment.phys_start < end && start < segment.phys_end {
                touched = true;
            }
            if lo < hi {
                let offset = segment.file_offset + (lo - segment.phys_start);
                let len = to_usize(hi - lo);
                let at = to_usize(lo - start);
                self.file()
                    .read_exact_at(&mut page[at..at + len], offset)
                    .map_err(|source| VmcoreError::Read {
                        offset,
                        len,
                        source,
                    })?;
            }
        }
        if touched {
            Ok(())
        } else {
            Err(VmcoreError::NotPresent(start))
        }
    }
}

/// How a [`PageReader`] gets page data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Map windows of the file; fall back to `pread` if mapping fails.
    Mmap,
    /// Always `pread` (makedumpfile's `--non-mmap`).
    Pread,
}

/// One worker's access to windows of pages.
#[derive(Debug)]
pub struct PageReader {
    access: Access,
    map: Option<memmap2::Mmap>,
    buffer: Vec<u8>,
}

impl PageReader {
    /// A reader using `access`.
    pub fn new(access: Access) -> Self {
        Self {
            access,
            map: None,
            buffer: Vec::new(),
        }
    }

    /// Whether this reader still maps windows (it falls back to `pread` after a failed map).
    pub fn access(&self) -> Access {
        self.access
    }

    /// Returns the bytes of `pages` pages starting at `file_offset`. Only the pages in `wanted`
    /// (page index ranges within the window) are guaranteed to be read; with mmap every page is.
    pub fn window(
        &mut self,
        vmcore: &Vmcore,
        file_offset: u64,
        pages: usize,
        wanted: &[(usize, usize)],
    ) -> Result<&[u8], VmcoreError> {
        let len = pages * to_usize(PAGE_SIZE);
        self.map = None;
        if self.access == Access::Mmap {
            match crate::sys::map_readonly(vmcore.file(), file_offset, len) {
                Ok(map) => return Ok(&self.map.insert(map)[..]),
                Err(_) => self.access = Access::Pread,
            }
        }
        if self.buffer.len() < len {
            self.buffer.resize(len, 0);
        }
        for &(first, count) in wanted {
            let at = first * to_usize(PAGE_SIZE);
            let n = count * to_usize(PAGE_SIZE);
            let offset = file_offset + at as u64;
            vmcore
                .file()
                .read_exact_at(&mut self.buffer[at..at + n], offset)
                .map_err(|source| VmcoreError::Read {
                    offset,
                    len: n,
                    source,
                })?;
        }
        Ok(&self.buffer[..len])
    }

    /// Drops the current window's mapping.
    pub fn release(&mut self) {
        self.map = None;
    }
}

#[cfg(test)]
mod tests {
    use rkdump_testkit::elf as tk;
    use rkdump_testkit::{Builder, Generation, PAGE};

    use super::*;
    use crate::vmcore::testing::{built, open};

    fn segment(index: usize, phys_start: u64, size: u64, file_offset: u64, virt: u64) -> Segment {
        Segment {
            index,
            phys_start,
            phys_end: phys_start + size,
            virt_start: virt,
            file_offset,
            file_size: size,
            flags_align: (7, 0),
        }
    }

    #[test]
    fn lab_layout_with_kernel_text_alias_and_partial_last_page() {
        // The 1 GiB lab guest: kernel text alias first in file order, then RAM.
        let segments = [
            segment(1, 0x1340_0000, 0x343_0000, 0x2000, 0xffff_ffff_a300_0000),
            segment(2, 0x1000, 0x9_ec00, 0x343_2000, 0xffff_88c0_8000_1000),
            segment(3, 0x10_0000, 0x2df0_0000, 0x34d_1000, 0xffff_88c0_8010_0000),
        ];
        let map = PageMap::new(&segments);
        assert_eq!(
            map.extents(),
            &[
                Extent {
                    pfn_start: 1,
                    pfn_end: 0x9f,
                    kind: ExtentKind::Regular {
                        file_offset: 0x343_2000
                    }
                },
                Extent {
                    pfn_start: 0x9f,
                    pfn_end: 0xa0,
                    kind: ExtentKind::Irregular
                },
                Extent {
                    pfn_start: 0x100,
                    pfn_end: 0x2e000,
                    kind: ExtentKind::Regular {
                        file_offset: 0x34d_1000
                    }
                },
            ]
        );
    }

    #[test]
    fn unaligned_segment_start_gives_an_irregular_first_page() {
        let map = PageMap::new(&[segment(0, 0x1800, 0x3800, 0x1000, 0xffff_8880_0000_1800)]);
        assert_eq!(
            map.extents(),
            &[
                Extent {
                    pfn_start: 1,
                    pfn_end: 2,
                    kind: ExtentKind::Irregular
                },
                Extent {
                    pfn_start: 2,
                    pfn_end: 5,
                    kind: ExtentKind::Regular {
                        file_offset: 0x1800
                    }
                },
            ]
        );
    }

    /// The page map of a vmcore with holes: one regular extent per RAM segment, at the file
    /// offsets the testkit wrote them, and nothing for the kernel-text alias (RAM covers it).
    #[test]
    fn the_page_map_is_the_ram_segments() {
        let mut builder = Builder::new(Generation::V6_1);
        builder.holes = vec![100..200, 5000..6000];
        let (bytes, vmcore) = built(&builder);
        let headers = tk::program_headers(&bytes);
        let ram = builder.ram();
        let expected: Vec<Extent> = ram
            .iter()
            .zip(&headers[2..])
            .map(|(r, h)| Extent {
                pfn_start: r.start,
                pfn_end: r.end,
                kind: ExtentKind::Regular {
                    file_offset: h.p_offset,
                },
            })
            .collect();
        assert_eq!(PageMap::new(vmcore.segments()).extents(), &expected[..]);
    }

    /// A RAM segment whose data ends inside a page: that page is irregular and reads its
    /// file-backed half followed by zeros; the page after it is in no segment.
    #[test]
    fn a_partial_last_page_is_irregular_and_zero_filled() {
        let builder = Builder::new(Generation::V6_12);
        let mut bytes = builder.build();
        let last = tk::program_headers(&bytes).len() - 1;
        let mut header = tk::program_headers(&bytes)[last];
        header.p_filesz -= 0x800;
        header.p_memsz -= 0x800;
        tk::set_program_header(&mut bytes, last, &header);
        let vmcore = open(&bytes).unwrap();
        let end = builder.pages;
        assert_eq!(
            PageMap::new(vmcore.segments()).extents().last(),
            Some(&Extent {
                pfn_start: end - 1,
                pfn_end: end,
                kind: ExtentKind::Irregular
            })
        );
        let mut page = vec![0xeeu8; to_usize(PAGE)];
        vmcore.read_page(end - 1, &mut page).unwrap();
        let at = to_usize(header.p_offset + header.p_filesz - 0x800);
        assert!(page[..0x800] == bytes[at..at + 0x800]);
        assert!(page[0x800..].iter().all(|&b| b == 0));
        assert!(matches!(
            vmcore.read_page(end, &mut page),
            Err(VmcoreError::NotPresent(a)) if a == end * PAGE
        ));
    }

    /// A window read through mmap and through pread holds the same bytes for the pages asked
    /// for, and those are the pages `read_page` reads one by one.
    #[test]
    fn mmap_and_pread_windows_hold_the_same_pages() {
        let mut builder = Builder::new(Generation::V6_12).with_every_kind();
        builder.holes = std::iter::once(3000..3100).collect();
        let (_, vmcore) = built(&builder);
        let map = PageMap::new(vmcore.segments());
        let mut mapped = PageReader::new(Access::Mmap);
        let mut read = PageReader::new(Access::Pread);
        let mut page = vec![0u8; to_usize(PAGE)];
        for extent in map.extents() {
            let ExtentKind::Regular { file_offset } = extent.kind else {
                panic!("no irregular page in this vmcore: {extent:?}");
            };
            let pages = 96usize;
            let first = extent.pfn_end - pages as u64 - 3;
            let offset = file_offset + (first - extent.pfn_start) * PAGE;
            let wanted = [(0, 5), (17, 1), (40, 56)];
            let via_mmap = mapped
                .window(&vmcore, offset, pages, &wanted)
                .unwrap()
                .to_vec();
            let via_pread = read
                .window(&vmcore, offset, pages, &wanted)
                .unwrap()
                .to_vec();
            assert_eq!(via_mmap.len(), pages * to_usize(PAGE));
            assert_eq!(via_pread.len(), via_mmap.len());
            for &(start, count) in &wanted {
                for i in start..start + count {
                    let bytes = i * to_usize(PAGE)..(i + 1) * to_usize(PAGE);
                    assert!(
                        via_mmap[bytes.clone()] == via_pread[bytes.clone()],
                        "page {i}"
                    );
                    vmcore.read_page(first + i as u64, &mut page).unwrap();
                    assert!(via_mmap[bytes] == page[..], "page {i}");
                }
            }
        }
        assert_eq!(
            mapped.access(),
            Access::Mmap,
            "a regular file can be mapped"
        );
        assert_eq!(read.access(), Access::Pread);
    }
}
