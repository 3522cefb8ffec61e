//! The ELF writer (`-E`): the vmcore's own layout with excluded pages left out.
//!
//! Each input PT_LOAD is walked page by page, as makedumpfile does: a run of at least
//! [`SPLIT_RUN`] excluded pages ends the current output segment (its `p_memsz` covers the run,
//! its `p_filesz` does not) and the next dumped page starts a new one; shorter runs stay inside
//! the segment. Unlike makedumpfile, which copies the real bytes of such short runs, rkdump
//! leaves them as zeros (holes in the file): an excluded page is excluded. Segment data is
//! packed after the notes, the kernel-text alias is kept (so kernel text is stored twice), and
//! the header carries the incomplete flag until the last byte is written.
//!
//! [`ElfLayout`] decides the segments from the final exclusion of every page (which is why the
//! ELF driver in [`crate::dump`] keeps one bitmap for the whole machine) and writes the headers;
//! [`ElfPages`] places the pipeline's pages into their segments.

use super::{OutputError, Sink};
use crate::filter::Bitmap;
use crate::format::bytes::to_usize;
use crate::format::elf::{
    self, EF_DUMP_INCOMPLETE, EM_X86_64, ET_CORE, FileHeader, PT_LOAD, ProgramHeader,
};
use crate::pipeline::ChunkResult;
use crate::vmcore::{PAGE_SHIFT, PAGE_SIZE, Segment};

/// Excluded runs at least this long are left out of the file (makedumpfile's `PFN_EXCLUDED`).
pub const SPLIT_RUN: u64 = 256;

/// One output PT_LOAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutSegment {
    /// Physical address of its first byte.
    pub paddr: u64,
    /// Virtual address of its first byte.
    pub vaddr: u64,
    /// Bytes in memory.
    pub memsz: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// File offset of its data.
    pub offset: u64,
    /// `p_flags` and `p_align` of the input segment.
    pub flags_align: (u32, u64),
}

/// Splits the input segment `load` into output segments by the dumpable bitmap `keep`
/// (makedumpfile's `write_elf_pages_cyclic`). Offsets are filled in later.
pub fn split_segment(load: &Segment, keep: &Bitmap) -> Vec<OutSegment> {
    let mut out = Vec::new();
    let end = load.phys_start + load.file_size;
    let mut pfn_start = load.phys_start >> PAGE_SHIFT;
    let pfn_end = end.div_ceil(PAGE_SIZE);
    let frac_head = PAGE_SIZE - load.phys_start % PAGE_SIZE;
    let frac_tail = end % PAGE_SIZE;
    let (mut memsz, mut filesz) = (0, 0);
    if frac_head != PAGE_SIZE {
        memsz = frac_head;
        filesz = frac_head;
        pfn_start += 1;
    }
    let mut current = OutSegment {
        paddr: load.phys_start,
        vaddr: load.virt_start,
        memsz: 0,
        filesz: 0,
        offset: 0,
        flags_align: load.flags_align,
    };
    let mut excluded = 0u64;
    for pfn in pfn_start..pfn_end {
        let size = if pfn == pfn_end - 1 && frac_tail != 0 {
            frac_tail
        } else {
            PAGE_SIZE
        };
        if !keep.get(pfn) {
            excluded += 1;
            memsz += size;
            continue;
        }
        if excluded == 0 {
            memsz += size;
            filesz += size;
            continue;
        }
        if excluded < SPLIT_RUN {
            memsz += size;
            filesz += PAGE_SIZE * excluded + size;
            excluded = 0;
            continue;
        }
        current.memsz = memsz;
        current.filesz = filesz;
        out.push(current);
        current.paddr += memsz;
        current.vaddr = current.vaddr.wrapping_add(memsz);
        excluded = 0;
        memsz = size;
        filesz = size;
    }
    current.memsz = memsz;
    current.filesz = filesz;
    out.push(current);
    out
}

/// The file layout of an ELF dump: its output segments with their offsets, the program header
/// table and where the notes go.
#[derive(Debug, Clone)]
pub struct ElfLayout {
    /// The output PT_LOADs, offsets filled in.
    pub segments: Vec<OutSegment>,
    /// Program headers: the PT_NOTE and every PT_LOAD.
    phnum: u64,
    /// Whether `phnum` needs the extended count in section header 0 (`PN_XNUM`).
    extended: bool,
    /// File offset of the notes.
    pub notes_offset: u64,
    /// Size of the notes.
    notes_size: u64,
    /// Size of the whole file.
    pub file_size: u64,
}

impl ElfLayout {
    /// Lays out a dump of the input segments `loads` keeping the page frames set in `keep`,
    /// with `notes_size` bytes of notes.
    pub fn new(loads: &[Segment], keep: &Bitmap, notes_size: u64) -> Self {
        let mut segments: Vec<OutSegment> =
            loads.iter().flat_map(|s| split_segment(s, keep)).collect();
        let phnum = 1 + segments.len() as u64;
        let extended = phnum >= u64::from(elf::PN_XNUM);
        let notes_offset = elf::HEADER_SIZE as u64
            + phnum * elf::PROGRAM_HEADER_SIZE as u64
            + if extended {
                elf::SECTION_HEADER_SIZE as u64
            } else {
                0
            };
        let mut offset = notes_offset + notes_size;
        for segment in &mut segments {
            segment.offset = if segment.filesz == 0 { 0 } else { offset };
            offset += segment.filesz;
        }
        Self {
            segments,
            phnum,
            extended,
            notes_offset,
            notes_size,
            file_size: offset,
        }
    }

    /// The ELF file header, with `flags` (`EF_DUMP_INCOMPLETE` until the dump is complete).
    pub fn file_header(&self, flags: u32) -> FileHeader {
        let phoff = elf::HEADER_SIZE as u64;
        FileHeader {
            e_type: ET_CORE,
            machine: EM_X86_64,
            flags,
            phoff,
            shoff: if self.extended {
                phoff + self.phnum * elf::PROGRAM_HEADER_SIZE as u64
            } else {
                0
            },
            phnum: if self.extended {
                elf::PN_XNUM
            } else {
                u16::try_from(self.phnum).expect("below PN_XNUM")
            },
            shnum: u16::from(self.extended),
        }
    }

    /// Writes the file header marked incomplete, the program headers (the PT_NOTE from the
    /// vmcore's `notes_header`) and the notes.
    pub fn write_headers(
        &self,
        sink: &mut dyn Sink,
        notes_header: &ProgramHeader,
        notes: &[u8],
    ) -> Result<(), OutputError> {
        let mut table = Vec::with_capacity(to_usize(self.notes_offset - elf::HEADER_SIZE as u64));
        let notes_ph = ProgramHeader {
            offset: self.notes_offset,
            filesz: self.notes_size,
            memsz: self.notes_size,
            ..*notes_header
        };
        table.extend_from_slice(&notes_ph.encode());
        for segment in &self.segments {
            let ph = ProgramHeader {
                p_type: PT_LOAD,
                flags: segment.flags_align.0,
                offset: segment.offset,
                vaddr: segment.vaddr,
                paddr: segment.paddr,
                filesz: segment.filesz,
                memsz: segment.memsz,
                align: segment.flags_align.1,
            };
            table.extend_from_slice(&ph.encode());
        }
        if self.extended {
            let count = u32::try_from(self.phnum).expect("program headers fit in 32 bits");
            table.extend_from_slice(&elf::encode_extended_count_section(count));
        }
        sink.write_at(0, &self.file_header(EF_DUMP_INCOMPLETE).encode())?;
        sink.write_at(elf::HEADER_SIZE as u64, &table)?;
        sink.write_at(self.notes_offset, notes)
    }

    /// Clears the incomplete flag: the last write of a complete dump.
    pub fn mark_complete(&self, sink: &mut dyn Sink) -> Result<(), OutputError> {
        sink.write_at(0, &self.file_header(0).encode())
    }
}

/// Places pipeline results into their segments, coalescing adjacent pages into one write.
pub struct ElfPages {
    sink: Box<dyn Sink>,
    pending: Vec<u8>,
    pending_at: u64,
}

/// Largest coalesced write.
const WRITE_BUFFER: usize = 1 << 20;

impl ElfPages {
    /// Writes pages into `sink`.
    pub fn new(sink: Box<dyn Sink>) -> Self {
        Self {
            sink,
            pending: Vec::new(),
            pending_at: 0,
        }
    }

    /// Writes the pages of `result` that fall inside `segment`.
    pub fn add(&mut self, segment: &OutSegment, result: &ChunkResult) -> Result<(), OutputError> {
        let start = segment.paddr;
        let end = segment.paddr + segment.filesz;
        let mut data = &result.data[..];
        for &(pfn, _) in &result.pages {
            let (page, rest) = data.split_at(to_usize(PAGE_SIZE));
            data = rest;
            let page_start = pfn << PAGE_SHIFT;
            let lo = page_start.max(start);
            let hi = (page_start + PAGE_SIZE).min(end);
            if lo >= hi {
                continue;
            }
            let at = segment.offset + (lo - start);
            if at != self.pending_at + self.pending.len() as u64
                || self.pending.len() >= WRITE_BUFFER
            {
                self.flush()?;
                self.pending_at = at;
            }
            self.pending
                .extend_from_slice(&page[to_usize(lo - page_start)..to_usize(hi - page_start)]);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        if !self.pending.is_empty() {
            self.sink.write_at(self.pending_at, &self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Flushes what is pending and gives the sink back.
    pub fn into_sink(mut self) -> Result<Box<dyn Sink>, (OutputError, Box<dyn Sink>)> {
        match self.flush() {
            Ok(()) => Ok(self.sink),
            Err(e) => Err((e, self.sink)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(phys_start: u64, size: u64) -> Segment {
        Segment {
            index: 1,
            phys_start,
            phys_end: phys_start + size,
            virt_start: 0xffff_8880_0000_0000 + phys_start,
            file_offset: 0x1000,
            file_size: size,
            flags_align: (7, 0),
        }
    }

    #[test]
    fn short_excluded_runs_stay_long_runs_split() {
        let mut keep = Bitmap::new(0..2048);
        keep.set_range(0..10);
        keep.set_range(100..200); // 90 excluded pages before: kept inside
        keep.set_range(600..700); // 400 excluded pages before: split
        let segments = split_segment(&load(0, 1000 * PAGE_SIZE), &keep);
        assert_eq!(segments.len(), 2);
        assert_eq!(
            (segments[0].paddr, segments[0].filesz, segments[0].memsz),
            (0, 200 * PAGE_SIZE, 600 * PAGE_SIZE)
        );
        assert_eq!(segments[1].paddr, 600 * PAGE_SIZE);
        assert_eq!(segments[1].vaddr, 0xffff_8880_0000_0000 + 600 * PAGE_SIZE);
        assert_eq!(
            (segments[1].filesz, segments[1].memsz),
            (100 * PAGE_SIZE, 400 * PAGE_SIZE)
        );
    }

    #[test]
    fn partial_pages_at_both_ends() {
        let mut keep = Bitmap::new(0..16);
        keep.set_range(0..16);
        let segments = split_segment(&load(0x1800, 0x3000), &keep);
        assert_eq!(segments.len(), 1);
        assert_eq!(
            (segments[0].paddr, segments[0].filesz, segments[0].memsz),
            (0x1800, 0x3000, 0x3000)
        );
    }

    #[test]
    fn an_all_excluded_load_is_one_empty_segment() {
        let keep = Bitmap::new(0..16);
        let segments = split_segment(&load(0, 8 * PAGE_SIZE), &keep);
        assert_eq!(
            segments,
            [OutSegment {
                paddr: 0,
                vaddr: 0xffff_8880_0000_0000,
                memsz: 8 * PAGE_SIZE,
                filesz: 0,
                offset: 0,
                flags_align: (7, 0),
            }]
        );
    }
}
