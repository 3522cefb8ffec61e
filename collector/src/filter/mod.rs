//! Page filtering: which page frames of the dead kernel's memory go into the dump.
//!
//! The dump level (`-d`) is makedumpfile's bit mask: 1 zero pages, 2 non-private cache, 4
//! private cache, 8 user data, 16 free pages. Everything but zero pages is decided from the
//! dead kernel's own `struct page` array ([`memmap`]), classified by makedumpfile's rules
//! ([`layout`]); zero pages are found later, when the pipeline reads the page data.
//!
//! Work proceeds in *cycles*: windows of page frames whose two bitmaps ([`bitmap`]) are built,
//! used and dropped before the next, so memory stays bounded whatever the machine's size (as in
//! makedumpfile's cyclic mode). For each cycle [`Filter::cycle`] gives the 1st bitmap (frames
//! present in the vmcore) and the 2nd bitmap (frames to dump), and adds to the [`Counts`].
//! Results do not depend on the cycle size: a compound or free range that runs past a cycle is
//! carried into the next one.
//!
//! If the metadata filtering needs is missing or inconsistent, the filter says why in
//! [`Filter::warnings`] and falls back to a lower dump level (ultimately: every page) instead of
//! failing, so a dump is never lost to a filtering problem.

pub mod bitmap;
pub mod layout;
pub mod memmap;

use std::ops::Range;

pub use bitmap::Bitmap;
pub use layout::{PageLayout, Verdict};
pub use memmap::MemMapRange;

use crate::format::bytes::to_usize;
use crate::vmcore::{KernelMemory, PAGE_SIZE, TranslateError, Vmcore};

/// A makedumpfile dump level: which kinds of pages to leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpLevel(u8);

impl DumpLevel {
    /// Leave out pages filled with zeros.
    pub const ZERO: Self = Self(1);
    /// Leave out page-cache pages without private data.
    pub const CACHE: Self = Self(2);
    /// Leave out all page-cache pages.
    pub const CACHE_PRIVATE: Self = Self(4);
    /// Leave out user-process data pages.
    pub const USER: Self = Self(8);
    /// Leave out free pages.
    pub const FREE: Self = Self(16);
    /// The highest level (`-d 31`).
    pub const MAX: u8 = 31;

    /// The level with these bits; `None` above 31.
    pub const fn new(bits: u8) -> Option<Self> {
        if bits <= Self::MAX {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// This level without the bits of `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

/// Why a page frame was excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Filled with zeros.
    Zero,
    /// Page cache without private data.
    Cache,
    /// Page cache with private data (buffer heads).
    CachePrivate,
    /// Anonymous or hugetlbfs memory of user processes.
    User,
    /// Free (buddy allocator) or unaccepted memory.
    Free,
    /// Memory with an uncorrectable hardware error.
    Hwpoison,
    /// Logically offline memory (balloons, virtio-mem).
    Offline,
}

/// Excluded page counts, per category, as makedumpfile reports them (and named so in the JSON
/// summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Counts {
    /// Pages filled with zero.
    pub zero: u64,
    /// Non-private cache pages.
    pub cache: u64,
    /// Private cache pages.
    pub cache_private: u64,
    /// User process data pages.
    pub user: u64,
    /// Free pages.
    pub free: u64,
    /// Hwpoison pages.
    pub hwpoison: u64,
    /// Offline pages.
    pub offline: u64,
}

impl Counts {
    /// Adds `pages` to `category`.
    pub fn add(&mut self, category: Category, pages: u64) {
        let counter = match category {
            Category::Zero => &mut self.zero,
            Category::Cache => &mut self.cache,
            Category::CachePrivate => &mut self.cache_private,
            Category::User => &mut self.user,
            Category::Free => &mut self.free,
            Category::Hwpoison => &mut self.hwpoison,
            Category::Offline => &mut self.offline,
        };
        *counter += pages;
    }

    /// The sum over all categories.
    pub fn excluded(&self) -> u64 {
        self.zero
            + self.cache
            + self.cache_private
            + self.user
            + self.free
            + self.hwpoison
            + self.offline
    }
}

/// Why filtering stopped.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A batch of `struct page` could not be read.
    #[error("cannot read struct pages of pfn {pfn:#x} at {vaddr:#x}: {source}")]
    StructPages {
        /// First page frame of the batch.
        pfn: u64,
        /// Virtual address of its `struct page`.
        vaddr: u64,
        /// The reason.
        source: TranslateError,
    },
}

/// An exclusion that runs past the end of a cycle, finished in the next.
#[derive(Debug, Clone, Copy)]
struct Pending {
    end: u64,
    category: Category,
}

/// Decides which page frames to dump, cycle by cycle.
#[derive(Debug)]
pub struct Filter<'a> {
    memory: Option<KernelMemory<'a>>,
    layout: Option<PageLayout>,
    sections: Vec<MemMapRange>,
    level: DumpLevel,
    walk: bool,
    max_mapnr: u64,
    loads: Vec<Range<u64>>,
    nodata: Vec<Range<u64>>,
    in_segments: Vec<Range<u64>>,
    pending: Option<Pending>,
    bad_free_orders: u64,
    warnings: Vec<String>,
}

impl<'a> Filter<'a> {
    /// Prepares filtering `vmcore` at `requested` level, lowering the level (with a warning)
    /// where the dead kernel's metadata does not allow it.
    pub fn new(vmcore: &'a Vmcore, requested: DumpLevel) -> Self {
        let mut warnings = Vec::new();
        let elf_max = vmcore.max_pfn();
        let mut memory = match KernelMemory::new(vmcore) {
            Ok(memory) => Some(memory),
            Err(e) => {
                warnings.push(format!("cannot translate kernel addresses: {e}"));
                None
            }
        };
        let layout = match PageLayout::from_vmcoreinfo(vmcore.info()) {
            Ok(layout) => Some(layout),
            Err(e) => {
                warnings.push(format!("cannot interpret struct page: {e}"));
                None
            }
        };
        let sections = match memory.as_mut().map(|m| memmap::find_mem_map(m, elf_max)) {
            Some(Ok(sections)) => sections,
            Some(Err(e)) => {
                warnings.push(format!("cannot find mem_map: {e}"));
                Vec::new()
            }
            None => Vec::new(),
        };
        let max_mapnr = sections
            .iter()
            .map(|s| s.pfn_end)
            .max()
            .map_or(elf_max, |m| m.min(elf_max));

        let mut level = requested;
        let can_walk = layout.is_some() && !sections.is_empty();
        if !can_walk {
            let dropped = requested.without(DumpLevel::ZERO);
            if dropped.bits() != 0 {
                warnings.push(format!(
                    "page filtering is impossible; dump level lowered from {} to {}",
                    requested.bits(),
                    requested.bits() & DumpLevel::ZERO.bits()
                ));
            }
            level = DumpLevel(requested.bits() & DumpLevel::ZERO.bits());
        } else if let Some(layout) = &layout
            && requested.contains(DumpLevel::FREE)
            && !layout.can_find_free_pages()
        {
            warnings.push(
                "free pages cannot be recognised from struct page; they are kept (dump level without 16)"
                    .to_owned(),
            );
            level = level.without(DumpLevel::FREE);
        }
        let walk = can_walk && layout.as_ref().is_some_and(|l| l.walk_needed(level));

        let segments = vmcore.segments();
        let loads = segments
            .iter()
            .map(|s| s.first_pfn()..s.end_pfn())
            .collect();
        let nodata = segments
            .iter()
            .map(|s| s.file_phys_end().div_ceil(PAGE_SIZE)..s.phys_end.div_ceil(PAGE_SIZE))
            .filter(|r| r.start < r.end)
            .collect();
        let mut in_segments: Vec<Range<u64>> = segments
            .iter()
            .map(|s| s.phys_start.div_ceil(PAGE_SIZE)..s.file_phys_end().div_ceil(PAGE_SIZE))
            .filter(|r| r.start < r.end)
            .collect();
        in_segments.sort_by_key(|r| r.start);
        let in_segments = merge(in_segments);

        Self {
            memory,
            layout,
            sections,
            level,
            walk,
            max_mapnr,
            loads,
            nodata,
            in_segments,
            pending: None,
            bad_free_orders: 0,
            warnings,
        }
    }

    /// The number of page frames the dump covers (`max_mapnr`).
    pub fn max_mapnr(&self) -> u64 {
        self.max_mapnr
    }

    /// The dump level actually applied.
    pub fn level(&self) -> DumpLevel {
        self.level
    }

    /// Problems met so far, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The sections' `struct page` arrays, if they were found.
    #[cfg(test)]
    pub fn sections(&self) -> &[MemMapRange] {
        &self.sections
    }

    /// makedumpfile's "Memory Hole" count: `max_mapnr` minus the page frames of every PT_LOAD,
    /// overlapping ones (the kernel-text alias) counted each time; like makedumpfile's unsigned
    /// counter it wraps below zero when the overlaps outweigh the holes.
    pub fn memory_hole(&self) -> u64 {
        let present: u64 = self
            .loads
            .iter()
            .map(|r| {
                r.end
                    .min(self.max_mapnr)
                    .saturating_sub(r.start.min(self.max_mapnr))
            })
            .sum();
        self.max_mapnr.wrapping_sub(present)
    }

    /// Gives up page classification after `reason`: the level drops to zero-page exclusion only.
    /// Call [`Filter::restart`] and redo the cycles afterwards.
    pub fn degrade(&mut self, reason: &str) {
        self.warnings.push(format!(
            "{reason}; dump level lowered from {} to {}",
            self.level.bits(),
            self.level.bits() & DumpLevel::ZERO.bits()
        ));
        self.level = DumpLevel(self.level.bits() & DumpLevel::ZERO.bits());
        self.walk = false;
    }

    /// Starts over from the first cycle.
    pub fn restart(&mut self) {
        self.pending = None;
    }

    /// Builds the bitmaps of the cycle `pfns` (which must start at a multiple of 8 and follow the
    /// previous cycle) and adds its exclusions to `counts`. Returns `(1st, 2nd)` bitmaps.
    pub fn cycle(
        &mut self,
        pfns: Range<u64>,
        counts: &mut Counts,
    ) -> Result<(Bitmap, Bitmap), FilterError> {
        let mut first = Bitmap::new(pfns.clone());
        for load in &self.loads {
            first.set_range(load.clone());
        }
        let mut second = first.clone();
        for range in &self.nodata {
            second.clear_range(range.clone());
        }
        if self.walk {
            self.walk_cycle(&pfns, &mut second, counts)?;
        }
        Ok((first, second))
    }

    fn walk_cycle(
        &mut self,
        cycle: &Range<u64>,
        second: &mut Bitmap,
        counts: &mut Counts,
    ) -> Result<(), FilterError> {
        let layout = self.layout.clone().expect("walk implies a layout");
        let memory = self
            .memory
            .as_mut()
            .expect("walk implies address translation");
        let mut pending = self.pending.take();
        let page_size = layout.size;
        let mut batch = Vec::new();
        for section in &self.sections {
            if section.pfn_end < cycle.start || section.pfn_start > cycle.end {
                continue;
            }
            let mut start = section.pfn_start;
            if let Some(carried) = pending.take() {
                pending = exclude_range(
                    carried.category,
                    cycle.start,
                    carried.end,
                    cycle,
                    second,
                    counts,
                );
                start = start.max(carried.end);
            }
            let mut batch_range = 0..0;
            let end = section.pfn_end.min(cycle.end);
            let mut pfn = start.max(cycle.start);
            while pfn < end {
                if !contains(&self.in_segments, pfn) {
                    pfn = next_contained(&self.in_segments, pfn).unwrap_or(end);
                    continue;
                }
                if !batch_range.contains(&pfn) {
                    let end = (pfn + 1)
                        .next_multiple_of(layout::STRUCT_PAGE_BATCH)
                        .min(section.pfn_end);
                    let vaddr = section.mem_map + (pfn - section.pfn_start) * page_size as u64;
                    batch.resize(to_usize(end - pfn) * page_size, 0);
                    memory
                        .read(vaddr, &mut batch)
                        .map_err(|source| FilterError::StructPages { pfn, vaddr, source })?;
                    batch_range = pfn..end;
                }
                let index = to_usize(pfn - batch_range.start);
                let page = &batch[index * page_size..(index + 1) * page_size];
                let next = batch.get((index + 1) * page_size..(index + 2) * page_size);
                match layout.classify(self.level, pfn, page, next) {
                    Verdict::Keep => pfn += 1,
                    Verdict::BadFreeOrder(_) => {
                        self.bad_free_orders += 1;
                        pfn += 1;
                    }
                    Verdict::Exclude { category, pages: 1 } => {
                        second.clear(pfn);
                        counts.add(category, 1);
                        pfn += 1;
                    }
                    Verdict::Exclude { category, pages } => {
                        pending = exclude_range(category, pfn, pfn + pages, cycle, second, counts);
                        pfn += pages;
                    }
                }
            }
        }
        self.pending = pending;
        if self.bad_free_orders > 0 && cycle.end >= self.max_mapnr {
            let warning = format!(
                "{} free pages claimed an invalid order and were kept",
                self.bad_free_orders
            );
            // The kdump writer's second pass walks the cycles again: say it once.
            if !self.warnings.contains(&warning) {
                self.warnings.push(warning);
            }
            self.bad_free_orders = 0;
        }
        Ok(())
    }
}

/// Clears `[start, end)` within the cycle and counts every page frame of it (as makedumpfile
/// does, whether or not its bit was set); returns what is left for the next cycle.
fn exclude_range(
    category: Category,
    start: u64,
    end: u64,
    cycle: &Range<u64>,
    second: &mut Bitmap,
    counts: &mut Counts,
) -> Option<Pending> {
    let clipped = end.min(cycle.end);
    if start < clipped {
        second.clear_range(start..clipped);
        counts.add(category, clipped - start);
    }
    (end > cycle.end).then_some(Pending { end, category })
}

fn merge(sorted: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

fn contains(sorted: &[Range<u64>], pfn: u64) -> bool {
    let i = sorted.partition_point(|r| r.end <= pfn);
    sorted.get(i).is_some_and(|r| r.start <= pfn)
}

/// The first page frame at or after `pfn` that `sorted` contains.
fn next_contained(sorted: &[Range<u64>], pfn: u64) -> Option<u64> {
    let i = sorted.partition_point(|r| r.end <= pfn);
    sorted.get(i).map(|r| r.start.max(pfn))
}

/// Splits `[0, max_mapnr)` into cycles of at most `pfns_per_cycle` page frames (a multiple of 8).
pub fn cycles(max_mapnr: u64, pfns_per_cycle: u64) -> impl Iterator<Item = Range<u64>> {
    let step = pfns_per_cycle.max(8).next_multiple_of(8);
    (0..max_mapnr.div_ceil(step)).map(move |i| i * step..((i + 1) * step).min(max_mapnr))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rkdump_testkit::{Builder, Generation, Kind, PAGE, STRUCT_PAGE, VMEMMAP_PHYS};

    use super::*;
    use crate::vmcore::VmcoreError;
    use crate::vmcore::testing::built;

    const GENERATIONS: [Generation; 3] = [Generation::V6_1, Generation::V6_6, Generation::V6_12];

    /// What the filter should make of a page frame the builder made `kind`, at `level`, when
    /// it can walk `mem_map` (the builder always publishes `PG_hwpoison`, so it always walks).
    /// Zero pages are the pipeline's business: the filter keeps them.
    fn category(kind: Kind, level: DumpLevel) -> Option<Category> {
        let has = |bit: DumpLevel| level.contains(bit);
        match kind {
            Kind::Kernel | Kind::Zero | Kind::Slab => None,
            // LENGTH(zone.free_area) is 11: order 10 is the largest free block.
            Kind::Free { order } => (has(DumpLevel::FREE) && order < 11).then_some(Category::Free),
            Kind::Cache => {
                (has(DumpLevel::CACHE) || has(DumpLevel::CACHE_PRIVATE)).then_some(Category::Cache)
            }
            Kind::CachePrivate => has(DumpLevel::CACHE_PRIVATE).then_some(Category::CachePrivate),
            Kind::Anon | Kind::CompoundAnon { .. } | Kind::Hugetlb { .. } => {
                has(DumpLevel::USER).then_some(Category::User)
            }
            Kind::Hwpoison => Some(Category::Hwpoison),
            Kind::Offline => Some(Category::Offline),
        }
    }

    /// Expected counts and 2nd-bitmap bits, from the builder's own description.
    fn expected(builder: &Builder, level: DumpLevel) -> (Counts, Vec<bool>) {
        let mut dumped: Vec<bool> = (0..builder.pages).map(|p| in_ram(builder, p)).collect();
        let mut counts = Counts::default();
        for (i, (range, kind)) in builder.kinds.iter().enumerate() {
            assert!(
                builder.kinds[i + 1..]
                    .iter()
                    .all(|(r, _)| r.end <= range.start || range.end <= r.start),
                "the model assumes disjoint kinds"
            );
            if let Some(category) = category(*kind, level) {
                counts.add(category, range.end - range.start);
                for pfn in range.clone() {
                    dumped[to_usize(pfn)] = false;
                }
            }
        }
        (counts, dumped)
    }

    fn in_ram(builder: &Builder, pfn: u64) -> bool {
        builder.ram().iter().any(|r| r.contains(&pfn))
    }

    /// The filter's counts and both bitmaps, one bit per page frame, over cycles of
    /// `per_cycle` page frames.
    fn run(
        filter: &mut Filter<'_>,
        per_cycle: u64,
    ) -> Result<(Counts, Vec<bool>, Vec<bool>), FilterError> {
        let mut counts = Counts::default();
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for cycle in cycles(filter.max_mapnr(), per_cycle) {
            let (a, b) = filter.cycle(cycle.clone(), &mut counts)?;
            assert_eq!(a.range(), cycle);
            first.extend(cycle.clone().map(|p| a.get(p)));
            second.extend(cycle.map(|p| b.get(p)));
        }
        Ok((counts, first, second))
    }

    fn level(bits: u8) -> DumpLevel {
        DumpLevel::new(bits).unwrap()
    }

    /// Every page kind of every generation, at every dump level: exactly the page frames the
    /// builder made of an excluded kind are cleared, and counted under their category.
    #[test]
    fn every_page_kind_is_excluded_as_built_at_every_level() {
        for generation in GENERATIONS {
            let builder = Builder::new(generation).with_every_kind();
            let (_, vmcore) = built(&builder);
            for bits in 0..=DumpLevel::MAX {
                let mut filter = Filter::new(&vmcore, level(bits));
                assert_eq!(filter.warnings(), &[] as &[String]);
                assert_eq!(filter.level(), level(bits));
                assert_eq!(filter.max_mapnr(), builder.pages);
                let (counts, first, second) = run(&mut filter, 1 << 20).unwrap();
                let (want_counts, want_second) = expected(&builder, level(bits));
                assert_eq!(counts, want_counts, "{generation:?} -d {bits}");
                assert!(first.iter().all(|&b| b), "no hole: every frame present");
                let wrong: Vec<usize> = (0..second.len())
                    .filter(|&p| second[p] != want_second[p])
                    .collect();
                assert!(wrong.is_empty(), "{generation:?} -d {bits}: pfns {wrong:?}");
                assert_eq!(counts.zero, 0, "zero pages are found by the pipeline");
            }
        }
    }

    /// Free blocks, compound and hugetlb pages that run past the end of a cycle are finished
    /// in the next one: any cycle size gives the same bitmaps and counts.
    #[test]
    fn exclusions_carry_across_cycle_boundaries() {
        let builder = Builder::new(Generation::V6_12).with_every_kind();
        let (_, vmcore) = built(&builder);
        let (want_counts, want_second) = expected(&builder, level(31));
        for per_cycle in [8, 24, 200, 1000, 4096] {
            let mut filter = Filter::new(&vmcore, level(31));
            let (counts, _, second) = run(&mut filter, per_cycle).unwrap();
            assert_eq!(counts, want_counts, "cycles of {per_cycle}");
            assert!(second == want_second, "cycles of {per_cycle}");
        }
    }

    /// Holes (one inside a section, one a whole section) are absent from both bitmaps; page
    /// kinds around them are excluded as built; the memory-hole count is the holes' frames
    /// minus the kernel-text alias's 512, which it counts a second time.
    #[test]
    fn holes_are_absent_and_counted_as_makedumpfile_counts_them() {
        let mut builder = Builder::new(Generation::V6_1).with_every_kind();
        builder.pages = 16384;
        builder.holes = vec![5200..5300, 7168..8192];
        builder.kinds.push((12288..12800, Kind::Free { order: 9 }));
        builder.kinds.push((9000..9100, Kind::Cache));
        let (_, vmcore) = built(&builder);
        let mut filter = Filter::new(&vmcore, level(31));
        assert_eq!(filter.sections().len(), 15);
        let (counts, first, second) = run(&mut filter, 3000).unwrap();
        let (want_counts, want_second) = expected(&builder, level(31));
        assert_eq!(counts, want_counts);
        let ram: Vec<bool> = (0..builder.pages).map(|p| in_ram(&builder, p)).collect();
        assert!(first == ram);
        assert!(second == want_second);
        assert_eq!(filter.memory_hole(), 100 + 1024 - 512);

        // Fewer hole frames than the alias's: the count wraps, like makedumpfile's.
        let mut builder = Builder::new(Generation::V6_1);
        builder.holes = vec![5000..5100, 6000..6001];
        let (_, vmcore) = built(&builder);
        assert_eq!(
            Filter::new(&vmcore, level(31)).memory_hole(),
            101u64.wrapping_sub(512)
        );
    }

    /// Frames of a segment's memory without file data (`p_filesz < p_memsz`) are present in
    /// the 1st bitmap but not dumped, at any level; past the last section they are not even
    /// covered (`max_mapnr` ends with the sections).
    #[test]
    fn frames_without_file_data_are_present_but_not_dumped() {
        let builder = Builder::new(Generation::V6_6);
        let good = builder.build();
        let last = rkdump_testkit::elf::program_headers(&good).len() - 1;
        let edited = |edit: &dyn Fn(&mut rkdump_testkit::elf::ProgramHeader)| {
            let mut bytes = good.clone();
            let mut header = rkdump_testkit::elf::program_headers(&bytes)[last];
            edit(&mut header);
            rkdump_testkit::elf::set_program_header(&mut bytes, last, &header);
            crate::vmcore::testing::open(&bytes).unwrap()
        };
        let end = builder.pages;

        let vmcore = edited(&|h| h.p_filesz -= 4 * PAGE);
        for bits in [0, 31] {
            let mut filter = Filter::new(&vmcore, level(bits));
            let (_, first, second) = run(&mut filter, 1000).unwrap();
            assert_eq!(first.len() as u64, end);
            assert!(first.iter().all(|&b| b), "-d {bits}");
            let not_dumped: Vec<u64> = (0..end).filter(|&p| !second[to_usize(p)]).collect();
            assert_eq!(not_dumped, (end - 4..end).collect::<Vec<_>>(), "-d {bits}");
        }

        let vmcore = edited(&|h| h.p_memsz += 4 * PAGE);
        assert_eq!(vmcore.max_pfn(), end + 4);
        let mut filter = Filter::new(&vmcore, level(31));
        assert_eq!(filter.max_mapnr(), end);
        let (_, first, second) = run(&mut filter, 1 << 20).unwrap();
        assert!(first.iter().all(|&b| b) && second.iter().all(|&b| b));

        // A segment ending inside a page: that page is not in the 1st bitmap (Segment::end_pfn
        // rounds down, as makedumpfile does), though the page map can read it.
        let vmcore = edited(&|h| {
            h.p_filesz -= 0x800;
            h.p_memsz -= 0x800;
        });
        let mut filter = Filter::new(&vmcore, level(31));
        assert_eq!(filter.max_mapnr(), end);
        let (_, first, second) = run(&mut filter, 1 << 20).unwrap();
        let absent: Vec<u64> = (0..end).filter(|&p| !first[to_usize(p)]).collect();
        assert_eq!(absent, [end - 1]);
        assert!(first == second);
    }

    /// Unreadable `struct page`s of a later section (their frames are in a hole): the cycles
    /// before succeed, the one that needs them fails naming the first frame and the address;
    /// after `degrade` the level is zero pages only, with a warning, and no cycle fails.
    #[test]
    fn unreadable_struct_pages_degrade_the_level_instead_of_failing() {
        let mut builder = Builder::new(Generation::V6_12).with_every_kind();
        // The struct pages of pfns 4096..5120 (a free block of order 10 in with_every_kind).
        let first_frame = (VMEMMAP_PHYS + 4096 * STRUCT_PAGE) / PAGE;
        let end_frame = (VMEMMAP_PHYS + 5120 * STRUCT_PAGE) / PAGE;
        builder.holes = std::iter::once(first_frame..end_frame).collect();
        let (_, vmcore) = built(&builder);
        let mut filter = Filter::new(&vmcore, level(31));
        assert_eq!(filter.warnings(), &[] as &[String]);
        let mut counts = Counts::default();
        let mut cycles = cycles(filter.max_mapnr(), 1024);
        for cycle in cycles.by_ref().take(4) {
            filter.cycle(cycle, &mut counts).unwrap();
        }
        match filter.cycle(cycles.next().unwrap(), &mut counts) {
            Err(FilterError::StructPages {
                pfn: 4096,
                vaddr,
                source: TranslateError::Memory(VmcoreError::NotPresent(at)),
            }) => {
                assert_eq!(vaddr, builder.mem_map() + 4096 * STRUCT_PAGE);
                assert_eq!(at, first_frame * PAGE);
            }
            other => panic!("expected unreadable struct pages, got {other:?}"),
        }
        filter.degrade("cannot read struct pages");
        filter.restart();
        assert_eq!(filter.level(), level(1));
        assert_eq!(
            filter.warnings(),
            &["cannot read struct pages; dump level lowered from 31 to 1".to_owned()]
        );
        let (counts, first, second) = run(&mut filter, 1024).unwrap();
        assert_eq!(counts, Counts::default(), "nothing classified any more");
        assert!(first == second, "every present frame dumped");
    }

    /// Without what classification needs, `Filter::new` keeps zero-page exclusion only and says
    /// why; it never fails.
    #[test]
    fn missing_metadata_lowers_the_level_with_a_warning() {
        let cases: [(&[&str], u8, &[&str]); 4] = [
            (
                &["SYMBOL(mem_section)"],
                31,
                &[
                    "cannot find mem_map: VMCOREINFO has no SYMBOL(mem_section)",
                    "page filtering is impossible; dump level lowered from 31 to 1",
                ],
            ),
            (
                &["OFFSET(page.flags)"],
                30,
                &[
                    "cannot interpret struct page: VMCOREINFO has no OFFSET(page.flags)",
                    "page filtering is impossible; dump level lowered from 30 to 0",
                ],
            ),
            (
                &["SYMBOL(init_top_pgt)"],
                17,
                &[
                    "cannot translate kernel addresses: VMCOREINFO has no SYMBOL(init_top_pgt)",
                    "page filtering is impossible; dump level lowered from 17 to 1",
                ],
            ),
            // Level 1 loses nothing: no second warning.
            (
                &["SIZE(page)"],
                1,
                &[
                    "cannot interpret struct page: VMCOREINFO has no SIZE(page)",
                    "cannot find mem_map: VMCOREINFO has no SIZE(page)",
                ],
            ),
        ];
        for (omit, bits, warnings) in cases {
            let mut builder = Builder::new(Generation::V6_12).with_every_kind();
            builder.omit_vmcoreinfo = omit.iter().map(|k| (*k).to_owned()).collect();
            let (_, vmcore) = built(&builder);
            let mut filter = Filter::new(&vmcore, level(bits));
            assert_eq!(filter.warnings(), warnings, "{omit:?}");
            assert_eq!(filter.level(), level(bits & 1), "{omit:?}");
            let (counts, first, second) = run(&mut filter, 1 << 20).unwrap();
            assert_eq!(counts, Counts::default(), "{omit:?}: not even hwpoison");
            assert!(first == second);
        }
    }

    /// Without `OFFSET(page.private)` free pages cannot be told apart: level 16 is dropped with
    /// a warning, everything else is still excluded as built.
    #[test]
    fn free_pages_unrecognisable_keep_the_rest_of_the_level() {
        let mut builder = Builder::new(Generation::V6_1).with_every_kind();
        builder.omit_vmcoreinfo = vec!["OFFSET(page.private)".to_owned()];
        let (_, vmcore) = built(&builder);
        let mut filter = Filter::new(&vmcore, level(31));
        assert_eq!(
            filter.warnings(),
            &[
                "free pages cannot be recognised from struct page; they are kept (dump level \
               without 16)"
                    .to_owned()
            ]
        );
        assert_eq!(filter.level(), level(15));
        let (counts, _, second) = run(&mut filter, 1 << 20).unwrap();
        let (want_counts, want_second) = expected(&builder, level(15));
        assert_eq!(counts, want_counts);
        assert!(second == want_second);
    }

    /// A free block claiming an order the kernel cannot have (11, with 11 free areas) is kept,
    /// and reported once, when the last cycle is done.
    #[test]
    fn an_impossible_free_order_is_kept_and_reported_once() {
        let mut builder = Builder::new(Generation::V6_6);
        builder.pages = 16384;
        builder.kinds = vec![
            (4096..6144, Kind::Free { order: 11 }),
            (8192..8704, Kind::Free { order: 9 }),
        ];
        let (_, vmcore) = built(&builder);
        let mut filter = Filter::new(&vmcore, level(16));
        let mut counts = Counts::default();
        let all: Vec<Range<u64>> = cycles(filter.max_mapnr(), 4096).collect();
        for cycle in &all[..all.len() - 1] {
            filter.cycle(cycle.clone(), &mut counts).unwrap();
        }
        assert_eq!(filter.warnings(), &[] as &[String]);
        filter
            .cycle(all[all.len() - 1].clone(), &mut counts)
            .unwrap();
        assert_eq!(counts.free, 512);
        let warned = ["1 free pages claimed an invalid order and were kept".to_owned()];
        assert_eq!(filter.warnings(), &warned);
        // The kdump writer walks the cycles a second time to write the pages (dump::SecondPass):
        // the warning is not repeated.
        for cycle in all {
            filter.cycle(cycle, &mut Counts::default()).unwrap();
        }
        assert_eq!(filter.warnings(), &warned);
    }

    /// KASLR, 5-level tables, 1 GiB direct-map pages and the SME bit together change nothing
    /// in what is excluded.
    #[test]
    fn the_address_layout_does_not_change_the_classification() {
        let mut builder = Builder::new(Generation::V6_12).with_every_kind();
        builder.five_level = true;
        builder.gigabyte_pages = true;
        builder.sme_mask = 1 << 47;
        builder.kaslr = Some(rkdump_testkit::Kaslr {
            kernel_offset: 0x3a00_0000,
            page_offset: 0xff3c_8000_0000_0000,
            vmemmap: 0xffd9_8000_0000_0000,
        });
        let (_, vmcore) = built(&builder);
        let mut filter = Filter::new(&vmcore, level(31));
        assert_eq!(filter.warnings(), &[] as &[String]);
        let (counts, _, second) = run(&mut filter, 1000).unwrap();
        let (want_counts, want_second) = expected(&builder, level(31));
        assert_eq!(counts, want_counts);
        assert!(second == want_second);
    }

    fn any_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Kernel),
            Just(Kind::Zero),
            (0u32..=10).prop_map(|order| Kind::Free { order }),
            Just(Kind::Cache),
            Just(Kind::CachePrivate),
            Just(Kind::Anon),
            (1u32..=4).prop_map(|order| Kind::CompoundAnon { order }),
            (1u32..=9).prop_map(|order| Kind::Hugetlb { order }),
            Just(Kind::Slab),
            Just(Kind::Hwpoison),
            Just(Kind::Offline),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Any layout of page kinds (each compound or free block aligned to its size, as the
        /// kernel aligns them), any generation, dump level and cycle size: the filter excludes
        /// exactly what was built.
        #[test]
        fn any_layout_is_excluded_as_built(
            generation in prop_oneof![
                Just(Generation::V6_1),
                Just(Generation::V6_6),
                Just(Generation::V6_12)
            ],
            items in proptest::collection::vec((any_kind(), 1u64..40), 1..60),
            bits in 0..=DumpLevel::MAX,
            per_cycle in 1u64..600,
        ) {
            let mut builder = Builder::new(generation);
            let mut at = builder.first_free_pfn();
            for (kind, len) in items {
                let len = match kind {
                    Kind::Free { order }
                    | Kind::CompoundAnon { order }
                    | Kind::Hugetlb { order } => 1 << order,
                    _ => len,
                };
                let start = at.next_multiple_of(len.next_power_of_two().min(1 << 10));
                if start + len > builder.pages {
                    break;
                }
                builder.kinds.push((start..start + len, kind));
                at = start + len;
            }
            let (_, vmcore) = built(&builder);
            let mut filter = Filter::new(&vmcore, level(bits));
            let (counts, _, second) = run(&mut filter, per_cycle * 8).unwrap();
            let (want_counts, want_second) = expected(&builder, level(bits));
            prop_assert_eq!(counts, want_counts);
            prop_assert!(second == want_second);
        }
    }
}
