//! The ELF driver (`-E`): classify every page frame, find zero pages, lay the segments out,
//! then write each output segment's pages in file order.
//!
//! The segment layout needs the final exclusion of every page, zero pages included, before the
//! header can be written. The 2nd bitmaps of all cycles are therefore kept together (one bit per
//! page frame: 32 MiB for 1 TiB), and zero pages are found by a first read pass.

use std::collections::VecDeque;

use super::run::{Failure, Run};
use super::{Progress, SaveError, SaveOptions, Summary, chunks};
use crate::filter::{self, Bitmap, Category, Counts, DumpLevel, FilterError};
use crate::output::OutputError;
use crate::output::elf_writer::{ElfLayout, ElfPages};
use crate::pipeline::{self, Chunk, ChunkResult, Codec, PageOut, PipelineError, Settings};
use crate::vmcore::window::PageMap;
use crate::vmcore::{PAGE_SHIFT, PAGE_SIZE, Vmcore};

/// Writes an ELF dump.
pub(super) fn save(
    options: &SaveOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, SaveError> {
    let mut run = Run::new(progress);
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
            settings,
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
        .map_err(|e| run.failed(Failure::Input(e.to_string()), None))?;
        for pfn in &zero {
            keep.clear(*pfn);
        }
        counts.add(Category::Zero, zero.len() as u64);
    }
    let layout = ElfLayout::new(vmcore.segments(), &keep, vmcore.notes().len() as u64);

    let opened = run.open(
        options,
        Summary {
            format: "elf",
            compression: "none",
            dump_level: level.bits(),
            total_pages: filter.max_mapnr(),
            memory_hole: filter.memory_hole(),
            excluded: counts,
            filter_seconds: run.elapsed().as_secs_f64(),
            ..Summary::default()
        },
    )?;
    let mut sink = opened.sink;
    if let Err(e) = layout.write_headers(&mut *sink, vmcore.notes_header(), vmcore.notes()) {
        return Err(run.failed(e.into(), Some(&*sink)));
    }

    // The pages: each output segment's dumpable pages, in file order. Pages of the kernel-text
    // alias are written twice (once per segment), and counted twice in `total`.
    let mut placements = VecDeque::new();
    let mut work = Vec::new();
    for segment in layout.segments.iter().filter(|s| s.filesz > 0) {
        let first = segment.paddr >> PAGE_SHIFT;
        let end = (segment.paddr + segment.filesz).div_ceil(PAGE_SIZE);
        for chunk in chunks_for(&map, &keep, first..end) {
            placements.push_back(*segment);
            work.push(chunk);
        }
    }
    let total: u64 = work.iter().map(|chunk| chunk.count() as u64).sum();
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
            run.report(done, total, bytes_read);
            Ok::<(), OutputError>(())
        },
    );
    run.summary.warnings = filter.warnings().to_vec();
    run.summary.dumped_pages = done;
    run.summary.stored_pages = done;
    run.summary.bytes_read = bytes_read;
    let flushed = writer.into_sink();
    let failure = match (result, flushed) {
        (Ok(times), Ok(sink)) => {
            run.summary.page_pass = Some(times);
            Ok(sink)
        }
        (Err(PipelineError::Sink(e)), Ok(sink) | Err((_, sink))) => Err((Failure::Output(e), sink)),
        (Err(e), Ok(sink) | Err((_, sink))) => Err((Failure::Input(e.to_string()), sink)),
        (Ok(_), Err((e, sink))) => Err((Failure::Output(e), sink)),
    };
    let mut sink = match failure {
        Ok(sink) => sink,
        Err((failure, sink)) => return Err(run.failed(failure, Some(&*sink))),
    };
    let finish = || {
        layout.mark_complete(&mut *sink)?;
        sink.finish()?;
        Ok(sink)
    };
    run.complete(finish, opened.rename.as_ref(), layout.file_size)
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
    chunks::chunks(map, &window)
}
