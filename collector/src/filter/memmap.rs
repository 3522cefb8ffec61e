//! Finding `mem_map`: the `struct page` array of every SPARSEMEM section.
//!
//! x86_64 kernels use SPARSEMEM: physical memory is cut into sections of
//! `2^SECTION_SIZE_BITS` bytes, and `mem_section` describes each one. With SPARSEMEM_EXTREME
//! (every distribution kernel), `SYMBOL(mem_section)` is an array of root pointers, each to a
//! page of `struct mem_section`. A section's `section_mem_map` holds its `struct page` array
//! minus the section's first pfn (so that `mem_map + pfn` works), with flags in the low 5 bits;
//! bit 0 means present. The arrays live in vmemmap, so they are read by virtual address.

use crate::format::bytes::to_usize;
use crate::format::vmcoreinfo::{VmcoreInfo, VmcoreInfoError, require};
use crate::vmcore::{KernelMemory, PAGE_SHIFT};

/// Flag bits stored in the low bits of `section_mem_map` (makedumpfile masks 5).
const SECTION_MAP_FLAG_BITS: u64 = 5;
/// `SECTION_MARKED_PRESENT`.
const SECTION_PRESENT: u64 = 1;
/// x86_64 `__PAGE_OFFSET` when nothing better is known: the lowest kernel address accepted.
const MIN_KERNEL_ADDRESS: u64 = 0xff00_0000_0000_0000;

/// Why `mem_map` cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum MemMapError {
    /// VMCOREINFO lacks what SPARSEMEM discovery needs.
    #[error(transparent)]
    Info(#[from] VmcoreInfoError),
    /// No section is present, or sections decode to impossible addresses.
    #[error("cannot validate mem_section: {0}")]
    Invalid(String),
}

/// The `struct page` array of one section, clipped to `max_mapnr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemMapRange {
    /// First page frame of the section.
    pub pfn_start: u64,
    /// End page frame (exclusive).
    pub pfn_end: u64,
    /// Virtual address of the `struct page` of `pfn_start`.
    pub mem_map: u64,
}

/// Locates the `struct page` arrays of the sections covering `[0, max_pfn)`.
///
/// Returns the present sections, in pfn order. Follows makedumpfile's `get_mm_sparsemem`: the
/// root array is first read at `SYMBOL(mem_section)`; if no section validates, the symbol is
/// taken as a pointer to the array instead.
pub fn find_mem_map(
    memory: &mut KernelMemory<'_>,
    max_pfn: u64,
) -> Result<Vec<MemMapRange>, MemMapError> {
    let info: &VmcoreInfo = memory.vmcore().info();
    let symbol = require(info.symbol("mem_section"), "SYMBOL(mem_section)")?;
    let section_size = require(info.size("mem_section"), "SIZE(mem_section)")?;
    let map_offset = require(
        info.offset("mem_section.section_mem_map"),
        "OFFSET(mem_section.section_mem_map)",
    )?;
    let page_size = require(info.size("page"), "SIZE(page)")?;
    let five_level = info.number("pgtable_l5_enabled")?.is_some_and(|v| v != 0);
    let section_bits = info
        .number("SECTION_SIZE_BITS")?
        .filter(|&v| v > 0)
        .map_or(27, i64::cast_unsigned);
    let physmem_bits = info
        .number("MAX_PHYSMEM_BITS")?
        .filter(|&v| v > 0)
        .map_or(if five_level { 52 } else { 46 }, i64::cast_unsigned);
    if section_size == 0
        || section_size > 4096
        || physmem_bits > 52
        || !(u64::from(PAGE_SHIFT)..=physmem_bits).contains(&section_bits)
    {
        return Err(MemMapError::Invalid(format!(
            "SIZE(mem_section)={section_size}, SECTION_SIZE_BITS={section_bits}, \
             MAX_PHYSMEM_BITS={physmem_bits}"
        )));
    }
    let pages_per_section = 1u64 << (section_bits - u64::from(PAGE_SHIFT));
    let sections_total = 1u64 << (physmem_bits - section_bits);
    let per_root = 4096 / section_size;
    let extreme = match info.length("mem_section")? {
        None => true,
        Some(length) => length == sections_total.div_ceil(per_root),
    };
    // Page frames past the architecture's physical address space have no section.
    let count = max_pfn.div_ceil(pages_per_section).min(sections_total);
    let min_kernel = lowest_kernel_address(memory);

    let decode = |memory: &mut KernelMemory<'_>,
                  array: u64|
     -> Result<Option<Vec<MemMapRange>>, MemMapError> {
        let mut ranges = Vec::new();
        let roots = if extreme { count.div_ceil(per_root) } else { 0 };
        let mut root_pointers = Vec::with_capacity(to_usize(roots));
        for i in 0..roots {
            match memory.read_u64(array + i * 8) {
                Ok(p) => root_pointers.push(p),
                Err(_) => return Ok(None),
            }
        }
        for nr in 0..count {
            let address = if extreme {
                match root_pointers[to_usize(nr / per_root)] {
                    0 => continue,
                    root => root + (nr % per_root) * section_size,
                }
            } else {
                array + nr * section_size
            };
            if address < min_kernel {
                continue;
            }
            // An unreadable section is absent, as in makedumpfile.
            let Ok(coded) = memory.read_u64(address + map_offset) else {
                continue;
            };
            if coded & SECTION_PRESENT == 0 {
                continue;
            }
            let pfn_start = nr * pages_per_section;
            let mem_map = (coded & !((1 << SECTION_MAP_FLAG_BITS) - 1))
                .wrapping_add(pfn_start.wrapping_mul(page_size));
            if mem_map < min_kernel {
                return Ok(None);
            }
            ranges.push(MemMapRange {
                pfn_start,
                pfn_end: (pfn_start + pages_per_section).min(max_pfn),
                mem_map,
            });
        }
        Ok(if ranges.is_empty() {
            None
        } else {
            Some(ranges)
        })
    };

    if let Some(ranges) = decode(memory, symbol)? {
        return Ok(ranges);
    }
    if extreme
        && let Ok(pointer) = memory.read_u64(symbol)
        && let Some(ranges) = decode(memory, pointer)?
    {
        return Ok(ranges);
    }
    Err(MemMapError::Invalid(format!(
        "no present section found from SYMBOL(mem_section)={symbol:#x}"
    )))
}

/// The lowest valid kernel virtual address: the direct map's base, from the last RAM segment's
/// virtual and physical addresses (makedumpfile's `page_offset`).
fn lowest_kernel_address(memory: &KernelMemory<'_>) -> u64 {
    memory
        .vmcore()
        .segments()
        .iter()
        .rev()
        .find(|s| s.virt_start != 0 && !s.is_kernel_text())
        .map_or(MIN_KERNEL_ADDRESS, |s| {
            s.virt_start.wrapping_sub(s.phys_start)
        })
}

#[cfg(test)]
mod tests {
    use rkdump_testkit::{Builder, Generation, Kaslr, SECTION_PAGES, STRUCT_PAGE};

    use super::*;
    use crate::vmcore::testing::built;

    /// The sections the builder made present: every section not entirely inside a hole, its
    /// `struct page` array at `mem_map() + pfn * SIZE(page)`, the last one clipped to RAM.
    fn expected(builder: &Builder) -> Vec<MemMapRange> {
        (0..builder.pages.div_ceil(SECTION_PAGES))
            .map(|nr| nr * SECTION_PAGES)
            .filter(|&start| {
                !builder
                    .holes
                    .iter()
                    .any(|h| h.start <= start && start + SECTION_PAGES <= h.end)
            })
            .map(|start| MemMapRange {
                pfn_start: start,
                pfn_end: (start + SECTION_PAGES).min(builder.pages),
                mem_map: builder.mem_map() + start * STRUCT_PAGE,
            })
            .collect()
    }

    #[test]
    fn every_sparsemem_model_gives_the_sections_built() {
        let models = [
            (true, true, false),
            (true, false, false),
            (false, true, false),
            (false, false, false),
            (true, true, true),
            (false, false, true),
        ];
        for (extreme, vmemmap, five_level) in models {
            let mut builder = Builder::new(Generation::V6_1);
            builder.pages = 12288;
            builder.extreme = extreme;
            builder.vmemmap = vmemmap;
            builder.five_level = five_level;
            // Section 5 is missing entirely; section 7 only in part (it stays present).
            builder.holes = vec![5 * 1024..6 * 1024, 7 * 1024 + 100..7 * 1024 + 200];
            let (_, vmcore) = built(&builder);
            let mut memory = KernelMemory::new(&vmcore).unwrap();
            let sections = find_mem_map(&mut memory, vmcore.max_pfn()).unwrap();
            assert_eq!(sections.len(), 11);
            assert_eq!(
                sections,
                expected(&builder),
                "extreme {extreme}, vmemmap {vmemmap}, 5-level {five_level}"
            );
        }
    }

    /// With KASLR the direct map starts elsewhere, and so does the lowest address a section
    /// may point at (taken from the RAM segments, as makedumpfile does).
    #[test]
    fn kaslr_moved_direct_map_and_vmemmap_are_accepted() {
        let mut builder = Builder::new(Generation::V6_12);
        builder.kaslr = Some(Kaslr {
            kernel_offset: 0x1e00_0000,
            page_offset: 0xffff_a0c0_0000_0000,
            vmemmap: 0xffff_f6c0_0000_0000,
        });
        let (_, vmcore) = built(&builder);
        let mut memory = KernelMemory::new(&vmcore).unwrap();
        assert_eq!(lowest_kernel_address(&memory), 0xffff_a0c0_0000_0000);
        let sections = find_mem_map(&mut memory, vmcore.max_pfn()).unwrap();
        assert_eq!(sections, expected(&builder));
    }

    /// A `max_pfn` below the end of RAM clips the sections; above it, no section past RAM's
    /// appears (the builder marks only RAM's sections present).
    #[test]
    fn sections_are_clipped_to_max_pfn() {
        let builder = Builder::new(Generation::V6_6);
        let (_, vmcore) = built(&builder);
        let mut memory = KernelMemory::new(&vmcore).unwrap();
        let sections = find_mem_map(&mut memory, 2500).unwrap();
        assert_eq!(sections.len(), 3);
        assert_eq!(sections[2].pfn_end, 2500);
        let sections = find_mem_map(&mut memory, 1 << 20).unwrap();
        assert_eq!(sections, expected(&builder));
    }

    #[test]
    fn missing_entries_are_named() {
        for key in ["SYMBOL(mem_section)", "SIZE(mem_section)", "SIZE(page)"] {
            let mut builder = Builder::new(Generation::V6_1);
            builder.omit_vmcoreinfo = vec![key.to_owned()];
            let (_, vmcore) = built(&builder);
            let mut memory = KernelMemory::new(&vmcore).unwrap();
            match find_mem_map(&mut memory, vmcore.max_pfn()) {
                Err(MemMapError::Info(VmcoreInfoError::Missing(missing))) => {
                    assert_eq!(missing, key);
                }
                other => panic!("{key}: expected it missing, got {other:?}"),
            }
        }
    }
}
