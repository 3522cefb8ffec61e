//! The kdump-compressed writer.
//!
//! Regions are written in the order makedumpfile writes them: the header (marked incomplete),
//! the sub header with the copied notes, both bitmaps cycle by cycle, then page descriptors and
//! page data as the pipeline delivers pages. Data is always flushed before the descriptors that
//! point at it, so a dump cut short (a full disk, a dropped stream) never has a descriptor
//! pointing at unwritten bytes: descriptors not yet written read as zero, which readers treat
//! as a missing page. The header is rewritten without the incomplete flag last.

use std::ops::Range;

use super::{OutputError, Sink};
use crate::filter::Bitmap;
use crate::format::bytes::to_usize;
use crate::format::kdump::{self, DUMP_INCOMPLETE, Header, Layout, PageDesc, SubHeader};
use crate::pipeline::{ChunkResult, PageOut};

/// Largest gathering of small page data results into one write.
const DATA_BUFFER: usize = 256 << 10;
/// Flush threshold of the descriptor buffer.
const DESC_BUFFER: usize = 64 << 10;
/// Page size (and block size) of the dumps written.
const BLOCK_SIZE: u64 = BLOCK_SIZE_U32 as u64;
/// [`BLOCK_SIZE`] as the header's `block_size` and a zero page's descriptor hold it.
const BLOCK_SIZE_U32: u32 = 4096;

/// What goes into the headers.
#[derive(Debug, Clone)]
pub struct KdumpSpec {
    /// The dead kernel's raw `new_utsname` (390 bytes).
    pub utsname: Vec<u8>,
    /// Crash time, seconds since the epoch.
    pub crash_time: u64,
    /// Dump-wide compression flag (one of the `COMPRESSED_*` codec flags, or 0).
    pub compression: u32,
    /// Page frames covered.
    pub max_mapnr: u64,
    /// CPUs with register notes.
    pub cpus: u32,
    /// The kernel's `phys_base`.
    pub phys_base: u64,
    /// The dump level applied.
    pub dump_level: u32,
    /// Verbatim copy of the vmcore's PT_NOTE segment.
    pub notes: Vec<u8>,
    /// Offset and size of the VMCOREINFO text within `notes`.
    pub vmcoreinfo: Option<(u64, u64)>,
}

/// Writes one kdump-compressed dump to a [`Sink`].
#[derive(Debug)]
pub struct KdumpWriter<S: Sink> {
    sink: S,
    spec: KdumpSpec,
    layout: Layout,
    zero_page: Option<u64>,
    next_desc: u64,
    next_data: u64,
    descs: Vec<u8>,
    descs_at: u64,
    data: Vec<u8>,
    data_at: u64,
    stored_pages: u64,
    zero_pages: u64,
    /// The header's `sub_hdr_size` and `bitmap_blocks`, checked to fit its 32-bit words.
    header_blocks: (u32, u32),
}

impl<S: Sink> KdumpWriter<S> {
    /// Prepares a dump; nothing is written yet.
    ///
    /// # Panics
    ///
    /// If the sub header or the bitmaps need more blocks than the header's 32-bit words count,
    /// which [`crate::vmcore::Vmcore`] rules out: it refuses PT_NOTE segments over 64 MiB (about
    /// most 2^14 blocks of sub header and notes) and memory beyond 52-bit physical addresses
    /// (`max_mapnr` at most 2^40, 2^26 blocks for both bitmaps).
    pub fn new(sink: S, spec: KdumpSpec) -> Self {
        let layout = Layout::new(BLOCK_SIZE, spec.notes.len() as u64, spec.max_mapnr, 0);
        let header_blocks = (
            u32::try_from(layout.sub_hdr_blocks)
                .expect("a sub header and notes from a vmcore fit in 2^32 blocks"),
            u32::try_from(2 * layout.bitmap_blocks_each)
                .expect("the bitmaps of at most 2^40 page frames fit in 2^32 blocks"),
        );
        Self {
            sink,
            spec,
            layout,
            zero_page: None,
            next_desc: 0,
            next_data: 0,
            descs: Vec::new(),
            descs_at: 0,
            data: Vec::new(),
            data_at: 0,
            stored_pages: 0,
            zero_pages: 0,
            header_blocks,
        }
    }

    fn header(&self, incomplete: bool) -> Header {
        Header {
            utsname: self.spec.utsname.clone(),
            timestamp_sec: self.spec.crash_time,
            status: self.spec.compression | if incomplete { DUMP_INCOMPLETE } else { 0 },
            block_size: BLOCK_SIZE_U32,
            sub_hdr_size: self.header_blocks.0,
            bitmap_blocks: self.header_blocks.1,
            // The 32-bit field saturates; the sub header holds the full 64-bit value.
            max_mapnr: u32::try_from(self.spec.max_mapnr).unwrap_or(u32::MAX),
            nr_cpus: self.spec.cpus,
        }
    }

    /// Changes the dump level recorded in the sub header (call [`KdumpWriter::write_headers`]
    /// again to write it).
    pub fn set_dump_level(&mut self, level: u32) {
        self.spec.dump_level = level;
    }

    /// Writes the header (flagged incomplete), the sub header and the notes.
    pub fn write_headers(&mut self) -> Result<(), OutputError> {
        self.sink.write_at(0, &self.header(true).encode())?;
        let notes_at = self.layout.notes();
        self.sink.write_at(notes_at, &self.spec.notes)?;
        let (offset_vmcoreinfo, size_vmcoreinfo) = self
            .spec
            .vmcoreinfo
            .map_or((0, 0), |(offset, size)| (notes_at + offset, size));
        let sub = SubHeader {
            phys_base: self.spec.phys_base,
            dump_level: self.spec.dump_level,
            offset_vmcoreinfo,
            size_vmcoreinfo,
            offset_note: notes_at,
            size_note: self.spec.notes.len() as u64,
            max_mapnr: self.spec.max_mapnr,
        };
        self.sink.write_at(self.layout.sub_header(), &sub.encode())
    }

    /// Writes the bitmaps of one cycle (which starts at a multiple of 8).
    pub fn write_bitmaps(
        &mut self,
        cycle: &Range<u64>,
        first: &Bitmap,
        second: &Bitmap,
    ) -> Result<(), OutputError> {
        let byte = cycle.start / 8;
        self.sink
            .write_at(self.layout.first_bitmap() + byte, first.bytes())?;
        self.sink
            .write_at(self.layout.second_bitmap() + byte, second.bytes())
    }

    /// Fixes the number of descriptors (set bits of the 2nd bitmap) and, when zero pages are
    /// excluded, writes the shared zero page at the start of the data area.
    pub fn start_pages(&mut self, descriptors: u64, exclude_zero: bool) -> Result<(), OutputError> {
        self.layout.descriptors = descriptors;
        self.descs_at = self.layout.descriptors();
        self.next_desc = self.descs_at;
        self.data_at = self.layout.data();
        self.next_data = self.data_at;
        if exclude_zero {
            self.sink
                .write_at(self.data_at, &[0u8; to_usize(BLOCK_SIZE)])?;
            self.zero_page = Some(self.data_at);
            self.data_at += BLOCK_SIZE;
            self.next_data = self.data_at;
        }
        Ok(())
    }

    /// Adds the pages of one pipeline result, in page-frame order.
    pub fn add(&mut self, result: &ChunkResult) -> Result<(), OutputError> {
        let before = (
            self.descs.len(),
            self.next_desc,
            self.next_data,
            self.stored_pages,
            self.zero_pages,
        );
        for &(_, page) in &result.pages {
            let desc = match (page, self.zero_page) {
                (PageOut::Zero, Some(offset)) => {
                    self.zero_pages += 1;
                    PageDesc {
                        offset,
                        size: BLOCK_SIZE_U32,
                        flags: 0,
                    }
                }
                (PageOut::Zero, None) => unreachable!("zero pages are reported only when excluded"),
                (PageOut::Stored { size, flags }, _) => {
                    let desc = PageDesc {
                        offset: self.next_data,
                        size,
                        flags,
                    };
                    self.next_data += u64::from(size);
                    self.stored_pages += 1;
                    desc
                }
            };
            self.descs.extend_from_slice(&desc.encode());
            self.next_desc += kdump::PAGE_DESC_SIZE as u64;
        }
        // Small results are gathered into one write; large ones are written as they are,
        // which spares copying every byte of the dump once more.
        if self.data.len() + result.data.len() <= DATA_BUFFER {
            self.data.extend_from_slice(&result.data);
        } else {
            let written = self
                .flush_data()
                .and_then(|()| self.sink.write_at(self.data_at, &result.data));
            if let Err(e) = written {
                // This result's data is not (all) on the output: its descriptors must never
                // be, or a reader would take whatever is there for its pages, and its pages
                // are not counted.
                let descs;
                (
                    descs,
                    self.next_desc,
                    self.next_data,
                    self.stored_pages,
                    self.zero_pages,
                ) = before;
                self.descs.truncate(descs);
                return Err(e);
            }
            self.data_at += result.data.len() as u64;
        }
        if self.data.len() >= DATA_BUFFER || self.descs.len() >= DESC_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush_data(&mut self) -> Result<(), OutputError> {
        if !self.data.is_empty() {
            self.sink.write_at(self.data_at, &self.data)?;
            self.data_at += self.data.len() as u64;
            self.data.clear();
        }
        Ok(())
    }

    /// Writes buffered data, then the descriptors that point into it.
    fn flush(&mut self) -> Result<(), OutputError> {
        self.flush_data()?;
        if !self.descs.is_empty() {
            self.sink.write_at(self.descs_at, &self.descs)?;
            self.descs_at += self.descs.len() as u64;
            self.descs.clear();
        }
        Ok(())
    }

    /// Flushes everything, clears the incomplete flag and finishes the sink.
    pub fn finish(mut self) -> Result<S, OutputError> {
        self.flush()?;
        let header = self.header(false).encode();
        self.sink.write_at(0, &header)?;
        self.sink.finish()?;
        Ok(self.sink)
    }

    /// Pages stored with data so far.
    pub fn stored_pages(&self) -> u64 {
        self.stored_pages
    }

    /// Pages mapped to the shared zero page so far.
    pub fn zero_pages(&self) -> u64 {
        self.zero_pages
    }

    /// Size of the dump file (end of the data written).
    pub fn file_size(&self) -> u64 {
        self.next_data
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Flushes what is buffered (after an error elsewhere), leaving the dump marked incomplete.
    pub fn abandon(mut self) -> S {
        let _ = self.flush();
        self.sink
    }
}
