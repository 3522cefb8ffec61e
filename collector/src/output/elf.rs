//! ELF dumps (`-E`): the vmcore's own layout with excluded pages left out.
//!
//! Each input PT_LOAD is walked page by page, as makedumpfile does: a run of at least
//! [`SPLIT_RUN`] excluded pages ends the current output segment (its `p_memsz` covers the run,
//! its `p_filesz` does not) and the next dumped page starts a new one; shorter runs stay inside
//! the segment. Unlike makedumpfile, which copies the real bytes of such short runs, rkdump
//! leaves them as zeros (holes in the file): an excluded page is excluded. Segment data is
//! packed after the notes, the kernel-text alias is kept (so kernel text is stored twice), and
//! the header carries the incomplete flag until the last byte is written.
//!
//! Deciding the segments needs the final exclusion of every page, zero pages included, before
//! the header can be written. The 2nd bitmaps of all cycles are therefore kept together (one
//! bit per page frame: 32 MiB for 1 TiB), and zero pages are found by a first read pass.

use std::collections::VecDeque;
use std::time::Instant;

use super::{OutputError, Sink};
use crate::dump::{Destination, Progress, SaveError, SaveOptions, Summary, open_destination};
use crate::filter::{self, Bitmap, Category, Counts, DumpLevel, FilterError};
use crate::format::elf::{
    self, EF_DUMP_INCOMPLETE, EM_X86_64, ET_CORE, FileHeader, PT_LOAD, ProgramHeader,
};
use crate::pipeline::{self, Chunk, ChunkResult, Codec, PageOut, PipelineError, Settings};
use crate::vmcore::window::PageMap;
use crate::vmcore::{PAGE_SHIFT, PAGE_SIZE, Segment, Vmcore};

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

/// The dumpable page frames of every cycle, in one bitmap, with the counts of the exclusions.
fn classify(options: &SaveOptions, filter: &mut filter::Filter<'_>) -> (Bitmap, Counts) {
    'restart: loop {
        let mut counts = Counts::default();
        let mut keep = Bitmap::new(0..filter.max_mapnr());
        for cycle in filter::cycles(filter.max_mapnr(), options.cycle_pfns) {
            match filter.cycle(cycle.clone(), &mut counts) {
                Ok((_, second)) => {
                    for pfn in second.iter_set(cycle) {
                        keep.set(pfn);
                    }
                }
                Err(FilterError::StructPages { pfn, vaddr, source }) => {
                    filter.degrade(&format!(
                        "struct page of pfn {pfn:#x} at {vaddr:#x} is unreadable ({source})"
                    ));
                    filter.restart();
                    continue 'restart;
                }
            }
        }
        return (keep, counts);
    }
}

/// Chunks covering the dumpable pages of `pfns`, with the page map's storage.
fn chunks_for(map: &PageMap, keep: &Bitmap, pfns: std::ops::Range<u64>) -> Vec<Chunk> {
    let mut window = Bitmap::new(pfns.clone());
    for pfn in keep.iter_set(pfns) {
        window.set(pfn);
    }
    crate::dump::chunks::chunks(map, &window)
}

/// Writes an ELF dump.
pub fn save(
    options: &SaveOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, SaveError> {
    let started = Instant::now();
    let vmcore = Vmcore::open(&options.vmcore)?;
    let mut filter = filter::Filter::new(&vmcore, options.level);
    let map = PageMap::new(vmcore.segments());
    let (mut keep, mut counts) = classify(options, &mut filter);
    let level = filter.level();
    let settings = Settings {
        threads: options.threads.max(1),
        codec: Codec::None,
        detect_zero: level.contains(DumpLevel::ZERO),
        access: options.access,
    };

    // Zero pages are excluded too, so find them before the segments are laid out.
    if settings.detect_zero {
        let all = chunks_for(&map, &keep, 0..filter.max_mapnr());
        let mut zero = Vec::new();
        pipeline::run(
            &vmcore,
            Settings { ..settings },
            all.into_iter(),
            |result: &ChunkResult| {
                zero.extend(
                    result
                        .pages
                        .iter()
                        .filter(|(_, out)| *out == PageOut::Zero)
                        .map(|(pfn, _)| *pfn),
                );
                Ok::<(), OutputError>(())
            },
        )
        .map_err(|e| SaveError::Input {
            message: e.to_string(),
            partial: None,
            summary: Box::default(),
        })?;
        for pfn in &zero {
            keep.clear(*pfn);
        }
        counts.add(Category::Zero, zero.len() as u64);
    }

    let mut segments: Vec<OutSegment> = vmcore
        .segments()
        .iter()
        .flat_map(|s| split_segment(s, &keep))
        .collect();
    let loads = segments.len() as u64;
    let phnum = 1 + loads;
    let extended = phnum >= u64::from(elf::PN_XNUM);
    let headers_end = elf::HEADER_SIZE as u64
        + phnum * elf::PROGRAM_HEADER_SIZE as u64
        + if extended {
            elf::SECTION_HEADER_SIZE as u64
        } else {
            0
        };
    let notes_offset = headers_end;
    let mut offset = notes_offset + vmcore.notes().len() as u64;
    for segment in &mut segments {
        segment.offset = if segment.filesz == 0 { 0 } else { offset };
        offset += segment.filesz;
    }
    let file_size = offset;

    let opened = open_destination(options)?;
    let partial = opened.partial.clone();
    let mut sink = opened.sink;
    let mut summary = Summary {
        output: opened.label.clone(),
        format: "elf",
        flattened: options.flattened,
        compression: "none",
        requested_level: options.level.bits(),
        dump_level: level.bits(),
        threads: settings.threads,
        total_pages: filter.max_mapnr(),
        memory_hole: filter.memory_hole(),
        excluded: counts,
        ..Summary::default()
    };
    let header = |flags: u32| FileHeader {
        e_type: ET_CORE,
        machine: EM_X86_64,
        flags,
        phoff: elf::HEADER_SIZE as u64,
        shoff: if extended {
            elf::HEADER_SIZE as u64 + phnum * elf::PROGRAM_HEADER_SIZE as u64
        } else {
            0
        },
        phnum: if extended { elf::PN_XNUM } else { phnum as u16 },
        shnum: u16::from(extended),
    };
    let failed = |source: OutputError, summary: &Summary| SaveError::Output {
        source,
        partial: partial.clone(),
        summary: Box::new(summary.clone()),
    };

    let mut table = Vec::with_capacity((headers_end - elf::HEADER_SIZE as u64) as usize);
    let notes_size = vmcore.notes().len() as u64;
    let notes = ProgramHeader {
        offset: notes_offset,
        filesz: notes_size,
        memsz: notes_size,
        ..*vmcore.notes_header()
    };
    table.extend_from_slice(&notes.encode());
    for segment in &segments {
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
    if extended {
        table.extend_from_slice(&elf::encode_extended_count_section(phnum as u32));
    }
    sink.write_at(0, &header(EF_DUMP_INCOMPLETE).encode())
        .and_then(|()| sink.write_at(elf::HEADER_SIZE as u64, &table))
        .and_then(|()| sink.write_at(notes_offset, vmcore.notes()))
        .map_err(|e| failed(e, &summary))?;

    // The pages: each output segment's dumpable pages, in file order.
    let mut placements = VecDeque::new();
    let mut work = Vec::new();
    let total: u64 = keep.count();
    for segment in segments.iter().filter(|s| s.filesz > 0) {
        let first = segment.paddr >> PAGE_SHIFT;
        let end = (segment.paddr + segment.filesz).div_ceil(PAGE_SIZE);
        for chunk in chunks_for(&map, &keep, first..end) {
            placements.push_back(*segment);
            work.push(chunk);
        }
    }
    let mut writer = ElfPages::new(sink);
    let mut done = 0u64;
    let mut bytes_read = 0u64;
    let result = pipeline::run(
        &vmcore,
        Settings {
            detect_zero: false,
            ..settings
        },
        work.into_iter(),
        |result: &ChunkResult| {
            let segment = placements.pop_front().expect("one placement per chunk");
            writer.add(&segment, result)?;
            done += result.pages.len() as u64;
            bytes_read += result.bytes_read;
            progress(Progress {
                done,
                total,
                bytes_read,
                elapsed: started.elapsed(),
            });
            Ok::<(), OutputError>(())
        },
    );
    let mut sink = writer.into_sink();
    summary.warnings = filter.warnings().to_vec();
    summary.dumped_pages = done;
    summary.stored_pages = done;
    summary.bytes_read = bytes_read;
    summary.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {}
        Err(PipelineError::Sink(e)) => return Err(failed(e, &summary)),
        Err(e) => {
            return Err(SaveError::Input {
                message: e.to_string(),
                partial,
                summary: Box::new(summary),
            });
        }
    }
    sink.write_at(0, &header(0).encode())
        .and_then(|()| sink.finish())
        .map_err(|e| failed(e, &summary))?;
    summary.bytes_written = if options.flattened {
        sink.bytes_written()
    } else {
        file_size
    };
    if let Some((temporary, target)) = &opened.rename {
        crate::dump::finalize(temporary, target).map_err(|e| failed(e, &summary))?;
        summary.output = target.display().to_string();
    }
    if matches!(options.destination, Destination::Stdout) {
        summary.output = "-".into();
    }
    summary.complete = true;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.peak_rss_kib = crate::dump::report::peak_rss_kib();
    Ok(summary)
}

/// Places pipeline results into their segments, coalescing adjacent pages into one write.
struct ElfPages {
    sink: Box<dyn Sink>,
    pending: Vec<u8>,
    pending_at: u64,
}

/// Largest coalesced write.
const WRITE_BUFFER: usize = 1 << 20;

impl ElfPages {
    fn new(sink: Box<dyn Sink>) -> Self {
        Self {
            sink,
            pending: Vec::new(),
            pending_at: 0,
        }
    }

    fn add(&mut self, segment: &OutSegment, result: &ChunkResult) -> Result<(), OutputError> {
        let start = segment.paddr;
        let end = segment.paddr + segment.filesz;
        let mut data = &result.data[..];
        for &(pfn, _) in &result.pages {
            let (page, rest) = data.split_at(PAGE_SIZE as usize);
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
                .extend_from_slice(&page[(lo - page_start) as usize..(hi - page_start) as usize]);
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

    fn into_sink(mut self) -> Box<dyn Sink> {
        let _ = self.flush();
        self.sink
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
