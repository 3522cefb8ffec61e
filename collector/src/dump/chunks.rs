//! Cutting one cycle's dumpable page frames into pipeline chunks.

use std::ops::Range;

use crate::filter::Bitmap;
use crate::pipeline::{CHUNK_PAGES, Chunk};
use crate::vmcore::PAGE_SHIFT;
use crate::vmcore::window::{ExtentKind, PageMap};

/// The chunks holding the set bits of `second` (one cycle's 2nd bitmap), in pfn order.
///
/// Every set bit lands in exactly one chunk: frames inside an extent of `map` get that
/// extent's storage, any others are read one by one with zero fill.
pub fn chunks<'a>(map: &'a PageMap, second: &'a Bitmap) -> impl Iterator<Item = Chunk> + 'a {
    let cycle = second.range();
    regions(map, &cycle)
        .into_iter()
        .flat_map(move |(range, kind)| {
            (range.start..range.end)
                .step_by(CHUNK_PAGES)
                .filter_map(move |start| {
                    let pages = (range.end - start).min(CHUNK_PAGES as u64) as usize;
                    let mut mask = [0u64; CHUNK_PAGES / 64];
                    for pfn in second.iter_set(start..start + pages as u64) {
                        let i = (pfn - start) as usize;
                        mask[i / 64] |= 1 << (i % 64);
                    }
                    if mask.iter().all(|&w| w == 0) {
                        return None;
                    }
                    let kind = match kind {
                        ExtentKind::Regular { file_offset } => ExtentKind::Regular {
                            file_offset: file_offset + ((start - range.start) << PAGE_SHIFT),
                        },
                        ExtentKind::Irregular => ExtentKind::Irregular,
                    };
                    Some(Chunk {
                        pfn_start: start,
                        pages,
                        kind,
                        mask,
                    })
                })
        })
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
        let chunks: Vec<Chunk> = chunks(&map, &second).collect();
        let found: Vec<u64> = chunks
            .iter()
            .flat_map(|c| {
                (0..c.pages)
                    .filter(|&i| c.wanted(i))
                    .map(move |i| c.pfn_start + i as u64)
            })
            .collect();
        assert_eq!(found, [1, 2, 300, 601, 700]);
        assert_eq!(
            chunks[0].kind,
            ExtentKind::Regular {
                file_offset: 0x2000
            }
        );
        assert_eq!(chunks[1].pfn_start, 257);
        assert_eq!(
            chunks[1].kind,
            ExtentKind::Regular {
                file_offset: 0x2000 + 256 * 4096
            }
        );
        assert_eq!(
            chunks[2].kind,
            ExtentKind::Irregular,
            "pfn 601 is a partial page"
        );
        assert_eq!(
            chunks[3].kind,
            ExtentKind::Irregular,
            "pfn 700 is outside every segment"
        );
    }
}
