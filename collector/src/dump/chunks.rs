//! Cutting one cycle's dumpable page frames into pipeline chunks of about equal work.

use std::ops::Range;

use crate::filter::Bitmap;
use crate::format::bytes::to_usize;
use crate::pipeline::{CHUNK_PAGES, CHUNK_SPAN, Chunk};
use crate::vmcore::PAGE_SHIFT;
use crate::vmcore::window::{ExtentKind, PageMap};

/// The chunks holding the set bits of `second` (one cycle's 2nd bitmap), in pfn order.
///
/// A chunk holds at most [`CHUNK_PAGES`] pages to dump and spans at most [`CHUNK_SPAN`] page
/// frames of one extent of `map`. Every set bit lands in exactly one chunk: frames outside all
/// extents are read one by one with zero fill.
pub fn chunks(map: &PageMap, second: &Bitmap) -> Vec<Chunk> {
    let mut out = Vec::new();
    for (range, kind) in regions(map, &second.range()) {
        let mut current: Option<Chunk> = None;
        for pfn in second.iter_set(range.clone()) {
            let full = current
                .as_ref()
                .is_some_and(|c| c.count() == CHUNK_PAGES || pfn - c.pfn_start >= CHUNK_SPAN);
            if full {
                out.extend(current.take());
            }
            let chunk = current.get_or_insert_with(|| Chunk {
                pfn_start: pfn,
                pages: 0,
                kind: match kind {
                    ExtentKind::Regular { file_offset } => ExtentKind::Regular {
                        file_offset: file_offset + ((pfn - range.start) << PAGE_SHIFT),
                    },
                    ExtentKind::Irregular => ExtentKind::Irregular,
                },
                runs: Vec::new(),
            });
            let index = to_usize(pfn - chunk.pfn_start);
            match chunk.runs.last_mut() {
                Some((first, count)) if *first + *count == index => *count += 1,
                _ => chunk.runs.push((index, 1)),
            }
            chunk.pages = index + 1;
        }
        out.extend(current);
    }
    out
}

/// The extents of `map` clipped to `cycle`, with the gaps between them as irregular regions.
fn regions(map: &PageMap, cycle: &Range<u64>) -> Vec<(Range<u64>, ExtentKind)> {
    let mut regions = Vec::new();
    let mut at = cycle.start;
    for extent in map.extents() {
        let start = extent.pfn_start.max(cycle.start);
        let end = extent.pfn_end.min(cycle.end);
        if start >= end {
            continue;
        }
        if at < start {
            regions.push((at..start, ExtentKind::Irregular));
        }
        let kind = match extent.kind {
            ExtentKind::Regular { file_offset } => ExtentKind::Regular {
                file_offset: file_offset + ((start - extent.pfn_start) << PAGE_SHIFT),
            },
            ExtentKind::Irregular => ExtentKind::Irregular,
        };
        regions.push((start..end, kind));
        at = end;
    }
    if at < cycle.end {
        regions.push((at..cycle.end, ExtentKind::Irregular));
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmcore::Segment;

    #[test]
    fn every_set_bit_is_in_one_chunk_with_its_file_offset() {
        let segment = Segment {
            index: 0,
            phys_start: 0x1000,
            phys_end: 0x1000 + 600 * 4096 + 0x800,
            virt_start: 0xffff_8880_0000_1000,
            file_offset: 0x2000,
            file_size: 600 * 4096 + 0x800,
            flags_align: (7, 0),
        };
        let map = PageMap::new(&[segment]);
        let mut second = Bitmap::new(0..1024);
        for pfn in [1, 2, 300, 601, 700] {
            second.set(pfn);
        }
        let chunks = chunks(&map, &second);
        let found: Vec<u64> = chunks.iter().flat_map(Chunk::pfns).collect();
        assert_eq!(found, [1, 2, 300, 601, 700]);
        assert_eq!(
            chunks[0].kind,
            ExtentKind::Regular {
                file_offset: 0x2000
            }
        );
        assert_eq!(chunks[0].runs, [(0, 2), (299, 1)]);
        assert_eq!(
            chunks[1].kind,
            ExtentKind::Irregular,
            "pfn 601 is a partial page"
        );
        assert_eq!(
            chunks[2].kind,
            ExtentKind::Irregular,
            "pfn 700 is outside every segment"
        );
    }

    #[test]
    fn chunks_hold_at_most_chunk_pages_and_span_at_most_chunk_span() {
        let segment = Segment {
            index: 0,
            phys_start: 0,
            phys_end: 40_000 * 4096,
            virt_start: 0xffff_8880_0000_0000,
            file_offset: 0x1000,
            file_size: 40_000 * 4096,
            flags_align: (7, 0),
        };
        let map = PageMap::new(&[segment]);
        let mut second = Bitmap::new(0..40_000);
        second.set_range(0..1000);
        second.set(30_000);
        let chunks = chunks(&map, &second);
        assert_eq!(
            chunks.iter().map(Chunk::count).collect::<Vec<_>>(),
            [256, 256, 256, 232, 1]
        );
        assert_eq!(
            chunks[1].kind,
            ExtentKind::Regular {
                file_offset: 0x1000 + 256 * 4096
            }
        );
        assert!(chunks.iter().all(|c| c.pages as u64 <= CHUNK_SPAN));
    }
}
