//! The kdump-compressed driver: two passes over the page frames, cycle by cycle.

use super::run::{Failure, Run};
use super::{Progress, SaveError, SaveOptions, Summary, chunks};
use crate::filter::{self, Bitmap, Counts, DumpLevel, Filter, FilterError};
use crate::format::kdump::UTS_FIELD_LEN;
use crate::output::Sink;
use crate::output::kdump_writer::{KdumpSpec, KdumpWriter};
use crate::pipeline::{self, Chunk, ChunkResult, PipelineError, Settings};
use crate::vmcore::window::PageMap;
use crate::vmcore::{KernelMemory, Vmcore};

/// Writes a kdump-compressed dump.
pub(super) fn save(
    options: &SaveOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, SaveError> {
    let mut run = Run::new(progress);
    let vmcore = Vmcore::open(&options.vmcore)?;
    let mut filter = Filter::new(&vmcore, options.level);
    let mut warnings: Vec<String> = Vec::new();
    let utsname = read_utsname(&vmcore, &mut warnings);
    let phys_base = KernelMemory::new(&vmcore).map_or(0, |m| m.tables().phys_base);
    let spec = KdumpSpec {
        utsname,
        crash_time: vmcore.info().crash_time().ok().flatten().unwrap_or(0),
        compression: options.codec.flag(),
        max_mapnr: filter.max_mapnr(),
        cpus: vmcore.cpus(),
        phys_base,
        dump_level: u32::from(filter.level().bits()),
        notes: vmcore.notes().to_vec(),
        vmcoreinfo: vmcore.vmcoreinfo_range(),
    };
    let opened = run.open(
        options,
        Summary {
            format: "kdump-compressed",
            compression: options.codec.name(),
            total_pages: filter.max_mapnr(),
            memory_hole: filter.memory_hole(),
            ..Summary::default()
        },
    )?;
    let mut writer = KdumpWriter::new(opened.sink, spec);

    let level_before = filter.level();
    let pass1 = writer
        .write_headers()
        .and_then(|()| count_pass(&mut filter, &mut writer, options.cycle_pfns));
    let (counts, per_cycle, kept) = match pass1 {
        Ok(pass1) => pass1,
        Err(e) => return Err(run.failed(e.into(), Some(writer.sink()))),
    };
    if filter.level() != level_before {
        // The level dropped during the first pass; the sub header must say so.
        writer.set_dump_level(u32::from(filter.level().bits()));
        if let Err(e) = writer.write_headers() {
            return Err(run.failed(e.into(), Some(writer.sink())));
        }
    }
    let total: u64 = per_cycle.iter().sum();
    run.summary.filter_seconds = run.elapsed().as_secs_f64();
    run.summary.dump_level = filter.level().bits();
    run.summary.excluded = counts;

    let exclude_zero = filter.level().contains(DumpLevel::ZERO);
    if let Err(e) = writer.start_pages(total, exclude_zero) {
        return Err(run.failed(e.into(), Some(writer.sink())));
    }
    let settings = Settings {
        threads: options.threads.max(1),
        codec: options.codec,
        detect_zero: exclude_zero,
        access: options.access,
    };
    let map = PageMap::new(vmcore.segments());
    let cycles: Vec<_> = filter::cycles(filter.max_mapnr(), options.cycle_pfns).collect();
    let mut second_pass_error = None;
    let chunk_source = SecondPass {
        filter: &mut filter,
        map: &map,
        cycles: cycles
            .into_iter()
            .zip(per_cycle)
            .collect::<Vec<_>>()
            .into_iter(),
        kept,
        current: Vec::new().into_iter(),
        error: &mut second_pass_error,
    };
    let mut done = 0u64;
    let mut bytes_read = 0u64;
    let result = pipeline::run(&vmcore, settings, chunk_source, |chunk: &ChunkResult| {
        writer.add(chunk)?;
        done += chunk.pages.len() as u64;
        bytes_read += chunk.bytes_read;
        run.report(done, total, bytes_read);
        Ok(())
    });

    warnings.extend(filter.warnings().iter().cloned());
    run.summary.warnings = warnings;
    run.summary.excluded.zero = writer.zero_pages();
    run.summary.dumped_pages = done;
    run.summary.stored_pages = writer.stored_pages();
    run.summary.bytes_read = bytes_read;
    let failure = match (result, second_pass_error) {
        (_, Some(message)) => Some(Failure::Input(message)),
        (Ok(_), None) if done != total => Some(Failure::Input(format!(
            "{done} pages were written but the bitmaps promise {total}"
        ))),
        (Ok(times), None) => {
            run.summary.page_pass = Some(times);
            None
        }
        (Err(PipelineError::Sink(e)), None) => Some(Failure::Output(e)),
        (Err(e), None) => Some(Failure::Input(e.to_string())),
    };
    if let Some(failure) = failure {
        let sink = writer.abandon();
        return Err(run.failed(failure, Some(&*sink)));
    }
    let file_size = writer.file_size();
    run.complete(|| writer.finish(), opened.rename.as_ref(), file_size)
}

/// The dead kernel's `init_uts_ns.name` (390 bytes); synthesised from VMCOREINFO if it cannot
/// be read.
fn read_utsname(vmcore: &Vmcore, warnings: &mut Vec<String>) -> Vec<u8> {
    let info = vmcore.info();
    let from_memory = || -> Result<Vec<u8>, String> {
        let base = info
            .symbol("init_uts_ns")
            .map_err(|e| e.to_string())?
            .ok_or("VMCOREINFO has no SYMBOL(init_uts_ns)")?;
        let offset = info
            .offset("uts_namespace.name")
            .map_err(|e| e.to_string())?
            .unwrap_or(4);
        let mut memory = KernelMemory::new(vmcore).map_err(|e| e.to_string())?;
        memory
            .read_vec(base + offset, 6 * UTS_FIELD_LEN)
            .map_err(|e| e.to_string())
    };
    from_memory().unwrap_or_else(|why| {
        warnings.push(format!(
            "cannot read the kernel's utsname ({why}); using VMCOREINFO"
        ));
        let mut raw = vec![0u8; 6 * UTS_FIELD_LEN];
        for (field, value) in [
            (0, "Linux"),
            (2, info.os_release().unwrap_or("")),
            (4, "x86_64"),
        ] {
            let bytes = value.as_bytes();
            let len = bytes.len().min(UTS_FIELD_LEN - 1);
            raw[field * UTS_FIELD_LEN..][..len].copy_from_slice(&bytes[..len]);
        }
        raw
    })
}

/// Pass 1: classify every cycle, write its bitmaps, count the frames to dump. Restarts at a
/// lower dump level if the dead kernel's `struct page` array cannot be read.
fn count_pass(
    filter: &mut Filter<'_>,
    writer: &mut KdumpWriter<Box<dyn Sink>>,
    cycle_pfns: u64,
) -> Result<(Counts, Vec<u64>, Option<Bitmap>), crate::output::OutputError> {
    'restart: loop {
        let mut counts = Counts::default();
        let mut per_cycle = Vec::new();
        let mut kept = None;
        let cycles: Vec<_> = filter::cycles(filter.max_mapnr(), cycle_pfns).collect();
        let single = cycles.len() == 1;
        for cycle in cycles {
            match filter.cycle(cycle.clone(), &mut counts) {
                Ok((first, second)) => {
                    writer.write_bitmaps(&cycle, &first, &second)?;
                    per_cycle.push(second.count());
                    if single {
                        kept = Some(second);
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
        return Ok((counts, per_cycle, kept));
    }
}

/// The chunks of the second pass, cycle after cycle (re-deriving each cycle's 2nd bitmap when
/// there is more than one).
struct SecondPass<'f, 'v> {
    filter: &'f mut Filter<'v>,
    map: &'f PageMap,
    cycles: std::vec::IntoIter<(std::ops::Range<u64>, u64)>,
    kept: Option<Bitmap>,
    current: std::vec::IntoIter<Chunk>,
    error: &'f mut Option<String>,
}

impl Iterator for SecondPass<'_, '_> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        loop {
            if let Some(chunk) = self.current.next() {
                return Some(chunk);
            }
            let (cycle, expected) = self.cycles.next()?;
            let second = match self.kept.take() {
                Some(second) => second,
                None => match self.filter.cycle(cycle.clone(), &mut Counts::default()) {
                    Ok((_, second)) => second,
                    Err(e) => {
                        *self.error = Some(format!("second pass: {e}"));
                        return None;
                    }
                },
            };
            if second.count() != expected {
                *self.error = Some(format!(
                    "the vmcore changed between passes: cycle {:#x}-{:#x} has {} pages to dump, not {expected}",
                    cycle.start,
                    cycle.end,
                    second.count()
                ));
                return None;
            }
            self.current = chunks::chunks(self.map, &second).into_iter();
        }
    }
}
