//! x86_64 virtual-to-physical translation through the dead kernel's own page tables.
//!
//! Every kernel virtual address (direct map, vmemmap, vmalloc, kernel text) is translated the
//! same way makedumpfile does it: from `init_top_pgt` (located with `phys_base`, so KASLR needs
//! no special case: VMCOREINFO symbols are already relocated) through 4 or 5 levels, honouring
//! 1 GiB and 2 MiB leaf entries and the SME encryption bit. A handful of recent leaf mappings are
//! cached, which makes walking `mem_map` (vmemmap, mapped with 2 MiB pages) cost one walk per
//! 2 MiB.

use super::{START_KERNEL_MAP, Vmcore, VmcoreError};
use crate::format::bytes::to_usize;
use crate::format::vmcoreinfo::{VmcoreInfo, VmcoreInfoError};

/// Physical-address bits of a page table entry (bits 12..52).
const ENTRY_MASK: u64 = !0xfff0_0000_0000_0fff;
/// Present bit of a page table entry.
const PRESENT: u64 = 0x1;
/// Page-size bit: the entry maps a 1 GiB (PUD) or 2 MiB (PMD) page.
const PAGE_SIZE_BIT: u64 = 0x80;
/// Number of cached leaf mappings.
const CACHE_ENTRIES: usize = 8;

/// A virtual address cannot be translated.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// VMCOREINFO lacks what translation needs.
    #[error(transparent)]
    Info(#[from] VmcoreInfoError),
    /// A page table entry on the way is not present.
    #[error("virtual address {vaddr:#x} is not mapped ({level} entry {entry:#x} not present)")]
    NotMapped {
        /// The address being translated.
        vaddr: u64,
        /// The table level where the walk stopped.
        level: &'static str,
        /// The entry found there.
        entry: u64,
    },
    /// Reading a page table or the target memory failed.
    #[error(transparent)]
    Memory(#[from] VmcoreError),
}

/// The dead kernel's page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTables {
    /// Physical address of the top-level table.
    pub root: u64,
    /// Whether 5-level paging was on.
    pub five_level: bool,
    /// SME encryption mask to strip from entries.
    pub sme_mask: u64,
    /// The kernel's `phys_base`.
    pub phys_base: u64,
}

/// A leaf of the page tables: `size` bytes at `virt` map to `phys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leaf {
    virt: u64,
    phys: u64,
    size: u64,
}

impl PageTables {
    /// Locates the page tables from VMCOREINFO (`init_top_pgt`, `phys_base`,
    /// `pgtable_l5_enabled`, `sme_mask`). Without `NUMBER(phys_base)`, `phys_base` is derived from
    /// the kernel-text segment, as makedumpfile does.
    pub fn locate(info: &VmcoreInfo, vmcore: &Vmcore) -> Result<Self, TranslateError> {
        let phys_base = match info.number("phys_base")? {
            Some(value) => value.cast_unsigned(),
            None => vmcore
                .segments()
                .iter()
                .find(|s| s.is_kernel_text())
                .map_or(0, |s| {
                    s.phys_start.wrapping_sub(s.virt_start & !START_KERNEL_MAP)
                }),
        };
        let top = match info.symbol("init_top_pgt")? {
            Some(address) => address,
            None => info
                .symbol("init_level4_pgt")?
                .ok_or_else(|| VmcoreInfoError::Missing("SYMBOL(init_top_pgt)".to_owned()))?,
        };
        Ok(Self {
            root: top.wrapping_sub(START_KERNEL_MAP).wrapping_add(phys_base),
            five_level: info.number("pgtable_l5_enabled")?.is_some_and(|v| v != 0),
            sme_mask: info.number("sme_mask")?.map_or(0, i64::cast_unsigned),
            phys_base,
        })
    }

    fn walk(&self, vmcore: &Vmcore, vaddr: u64) -> Result<Leaf, TranslateError> {
        let entry_mask = ENTRY_MASK & !self.sme_mask;
        let read_entry = |table: u64, shift: u32, level: &'static str| {
            let mut raw = [0u8; 8];
            vmcore.read_phys(table + ((vaddr >> shift) & 511) * 8, &mut raw)?;
            let entry = u64::from_le_bytes(raw);
            if entry & PRESENT == 0 {
                return Err(TranslateError::NotMapped {
                    vaddr,
                    level,
                    entry,
                });
            }
            Ok(entry)
        };
        let mut table = self.root;
        if self.five_level {
            table = read_entry(table, 48, "PGD")? & entry_mask;
            table = read_entry(table, 39, "P4D")? & entry_mask;
        } else {
            table = read_entry(table, 39, "PGD")? & entry_mask;
        }
        let pud = read_entry(table, 30, "PUD")?;
        if pud & PAGE_SIZE_BIT != 0 {
            return Ok(leaf(vaddr, pud & entry_mask, 1 << 30));
        }
        let pmd = read_entry(pud & entry_mask, 21, "PMD")?;
        if pmd & PAGE_SIZE_BIT != 0 {
            return Ok(leaf(vaddr, pmd & entry_mask, 1 << 21));
        }
        let pte = read_entry(pmd & entry_mask, 12, "PTE")?;
        Ok(leaf(vaddr, pte & entry_mask, 1 << 12))
    }
}

fn leaf(vaddr: u64, phys: u64, size: u64) -> Leaf {
    Leaf {
        virt: vaddr & !(size - 1),
        phys: phys & !(size - 1),
        size,
    }
}

/// The dead kernel's memory, readable by virtual address.
#[derive(Debug)]
pub struct KernelMemory<'a> {
    vmcore: &'a Vmcore,
    tables: PageTables,
    cache: [Option<Leaf>; CACHE_ENTRIES],
    next_slot: usize,
}

impl<'a> KernelMemory<'a> {
    /// Prepares virtual reads of `vmcore`.
    pub fn new(vmcore: &'a Vmcore) -> Result<Self, TranslateError> {
        let tables = PageTables::locate(vmcore.info(), vmcore)?;
        Ok(Self {
            vmcore,
            tables,
            cache: [None; CACHE_ENTRIES],
            next_slot: 0,
        })
    }

    /// The page tables in use.
    pub fn tables(&self) -> &PageTables {
        &self.tables
    }

    /// The vmcore being read.
    pub fn vmcore(&self) -> &'a Vmcore {
        self.vmcore
    }

    /// Translates a virtual address to a physical one.
    pub fn translate(&mut self, vaddr: u64) -> Result<u64, TranslateError> {
        let found = self
            .cache
            .iter()
            .flatten()
            .find(|l| vaddr.wrapping_sub(l.virt) < l.size);
        let leaf = match found {
            Some(leaf) => *leaf,
            None => {
                let leaf = self.tables.walk(self.vmcore, vaddr)?;
                self.cache[self.next_slot] = Some(leaf);
                self.next_slot = (self.next_slot + 1) % CACHE_ENTRIES;
                leaf
            }
        };
        Ok((leaf.phys + (vaddr - leaf.virt)) & !self.tables.sme_mask)
    }

    /// Reads `buf.len()` bytes at virtual address `vaddr`, translating page by page.
    pub fn read(&mut self, vaddr: u64, buf: &mut [u8]) -> Result<(), TranslateError> {
        let mut done = 0;
        while done < buf.len() {
            let addr = vaddr.wrapping_add(done as u64);
            let in_page = to_usize(4096 - (addr & 0xfff));
            let len = in_page.min(buf.len() - done);
            let paddr = self.translate(addr)?;
            self.vmcore.read_phys(paddr, &mut buf[done..done + len])?;
            done += len;
        }
        Ok(())
    }

    /// Reads a little-endian `u64` at `vaddr`.
    pub fn read_u64(&mut self, vaddr: u64) -> Result<u64, TranslateError> {
        let mut raw = [0u8; 8];
        self.read(vaddr, &mut raw)?;
        Ok(u64::from_le_bytes(raw))
    }

    /// Reads a little-endian `u32` at `vaddr`.
    pub fn read_u32(&mut self, vaddr: u64) -> Result<u32, TranslateError> {
        let mut raw = [0u8; 4];
        self.read(vaddr, &mut raw)?;
        Ok(u32::from_le_bytes(raw))
    }

    /// Reads `len` bytes at `vaddr` into a new buffer.
    pub fn read_vec(&mut self, vaddr: u64, len: usize) -> Result<Vec<u8>, TranslateError> {
        let mut buf = vec![0u8; len];
        self.read(vaddr, &mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use rkdump_testkit::{
        Builder, Generation, KERNEL_PHYS, KERNEL_VIRT, Kaslr, PAGE, STRUCT_PAGE, VMEMMAP_PHYS,
    };

    use super::*;
    use crate::vmcore::testing::built;

    const GIB: u64 = 1 << 30;
    const MIB2: u64 = 2 << 20;

    /// The leaf that maps `vaddr`, found by a fresh walk.
    fn leaf_of(memory: &KernelMemory<'_>, vaddr: u64) -> Leaf {
        memory.tables().walk(memory.vmcore(), vaddr).unwrap()
    }

    /// Translates every kind of mapping the builder makes, with the leaf size it chose, and
    /// reads through each the bytes that the physical address holds.
    fn assert_mappings(builder: &Builder) {
        let (_, vmcore) = built(builder);
        let mut memory = KernelMemory::new(&vmcore).unwrap();
        let po = builder.page_offset();
        let direct_leaf = |low: bool| match (builder.gigabyte_pages, low) {
            (true, _) => GIB,
            (false, true) => PAGE,
            (false, false) => MIB2,
        };
        let cases = [
            (po + 0x1234, 0x1234, direct_leaf(true)),
            (po + 0x1f_fff8, 0x1f_fff8, direct_leaf(true)),
            (po + 0x20_0010, 0x20_0010, direct_leaf(false)),
            (po + (5 << 20) + 0x77, (5 << 20) + 0x77, direct_leaf(false)),
            (
                po + builder.pages * PAGE - 8,
                builder.pages * PAGE - 8,
                direct_leaf(false),
            ),
            (
                builder.kernel_virt() + 0x1_2345,
                KERNEL_PHYS + 0x1_2345,
                MIB2,
            ),
            (
                builder.mem_map() + 3000 * STRUCT_PAGE + 8,
                VMEMMAP_PHYS + 3000 * STRUCT_PAGE + 8,
                PAGE,
            ),
        ];
        for (vaddr, paddr, size) in cases {
            assert_eq!(memory.translate(vaddr).unwrap(), paddr, "{vaddr:#x}");
            let leaf = leaf_of(&memory, vaddr);
            assert_eq!(leaf.size, size, "leaf size for {vaddr:#x}");
            assert_eq!(leaf.virt, vaddr & !(size - 1));
            let mut expected = [0u8; 8];
            vmcore.read_phys(paddr, &mut expected).unwrap();
            assert_eq!(
                memory.read_u64(vaddr).unwrap(),
                u64::from_le_bytes(expected)
            );
        }
    }

    #[test]
    fn four_level_tables_translate_4k_2m_and_kernel_text_mappings() {
        let builder = Builder::new(Generation::V6_1);
        assert_mappings(&builder);
        let (_, vmcore) = built(&builder);
        let tables = PageTables::locate(vmcore.info(), &vmcore).unwrap();
        let top = vmcore.info().symbol("init_top_pgt").unwrap().unwrap();
        assert_eq!(
            tables,
            PageTables {
                root: KERNEL_PHYS + (top - KERNEL_VIRT),
                five_level: false,
                sme_mask: 0,
                phys_base: KERNEL_PHYS.wrapping_sub(KERNEL_VIRT - START_KERNEL_MAP),
            }
        );
    }

    #[test]
    fn five_level_tables_and_gigabyte_pages_translate() {
        for (five_level, gigabyte_pages) in [(true, false), (false, true), (true, true)] {
            let mut builder = Builder::new(Generation::V6_12);
            builder.five_level = five_level;
            builder.gigabyte_pages = gigabyte_pages;
            assert_mappings(&builder);
            let (_, vmcore) = built(&builder);
            assert_eq!(
                PageTables::locate(vmcore.info(), &vmcore)
                    .unwrap()
                    .five_level,
                five_level
            );
        }
    }

    /// KASLR moves the kernel text (so `phys_base` changes), the direct map and vmemmap; the
    /// relocated `init_top_pgt` and `phys_base` find the tables, and without
    /// `NUMBER(phys_base)` the kernel-text segment gives the same `phys_base`.
    #[test]
    fn kaslr_offsets_are_followed_with_or_without_phys_base() {
        let kaslr = Kaslr {
            kernel_offset: 0x2c00_0000,
            page_offset: 0xffff_9b40_0000_0000,
            vmemmap: 0xffff_e3c0_0000_0000,
        };
        let mut builder = Builder::new(Generation::V6_6);
        builder.kaslr = Some(kaslr);
        assert_mappings(&builder);
        let (_, vmcore) = built(&builder);
        let expected = PageTables::locate(vmcore.info(), &vmcore).unwrap();
        assert_eq!(
            expected.phys_base,
            KERNEL_PHYS.wrapping_sub(KERNEL_VIRT + kaslr.kernel_offset - START_KERNEL_MAP)
        );
        assert_eq!(
            vmcore.info().kernel_offset().unwrap(),
            Some(kaslr.kernel_offset)
        );
        builder.omit_vmcoreinfo = vec!["NUMBER(phys_base)".to_owned()];
        let (_, vmcore) = built(&builder);
        assert_eq!(vmcore.info().get("NUMBER(phys_base)"), None);
        assert_eq!(
            PageTables::locate(vmcore.info(), &vmcore).unwrap(),
            expected
        );
    }

    /// The SME encryption bit set in every entry is stripped from tables and results.
    #[test]
    fn the_sme_mask_is_stripped_from_entries_and_addresses() {
        let mut builder = Builder::new(Generation::V6_1);
        builder.sme_mask = 1 << 47;
        assert_mappings(&builder);
        let (_, vmcore) = built(&builder);
        let memory = KernelMemory::new(&vmcore).unwrap();
        assert_eq!(memory.tables().sme_mask, 1 << 47);
    }

    /// An unmapped address names the level where the walk stopped and the entry found there.
    #[test]
    fn unmapped_addresses_name_the_level_that_is_not_present() {
        for five_level in [false, true] {
            let mut builder = Builder::new(Generation::V6_12);
            builder.five_level = five_level;
            let (_, vmcore) = built(&builder);
            let mut memory = KernelMemory::new(&vmcore).unwrap();
            let po = builder.page_offset();
            // A top-level slot nothing uses (4-level: vmalloc space; 5-level: the slot below
            // the direct map's).
            let empty = if five_level {
                0xff00_0000_0000_0000
            } else {
                0xffff_c900_0000_0000
            };
            for (vaddr, level) in [
                (empty, "PGD"),
                // Right after RAM, in the same 1 GiB: no PMD entry.
                (po + builder.pages * PAGE, "PMD"),
                // The next 1 GiB of the direct map: no PUD entry.
                (po + GIB, "PUD"),
                // vmemmap past the struct pages: no PTE.
                (
                    builder.mem_map() + builder.pages * STRUCT_PAGE + PAGE,
                    "PTE",
                ),
            ] {
                match memory.translate(vaddr) {
                    Err(TranslateError::NotMapped {
                        vaddr: v,
                        level: l,
                        entry: 0,
                    }) => assert_eq!((v, l), (vaddr, level), "{vaddr:#x}"),
                    other => panic!("{vaddr:#x}: expected NotMapped at {level}, got {other:?}"),
                }
            }
        }
        let mut builder = Builder::new(Generation::V6_12);
        builder.five_level = true;
        let (_, vmcore) = built(&builder);
        let mut memory = KernelMemory::new(&vmcore).unwrap();
        // Same PGD slot as the direct map (bits 48..56), another P4D slot (bits 39..47).
        let vaddr = builder.page_offset() + (1 << 39);
        assert!(matches!(
            memory.translate(vaddr),
            Err(TranslateError::NotMapped { level: "P4D", .. })
        ));
    }

    #[test]
    fn without_init_top_pgt_translation_is_impossible() {
        let mut builder = Builder::new(Generation::V6_1);
        builder.omit_vmcoreinfo = vec!["SYMBOL(init_top_pgt)".to_owned()];
        let (_, vmcore) = built(&builder);
        match KernelMemory::new(&vmcore) {
            Err(TranslateError::Info(VmcoreInfoError::Missing(key))) => {
                assert_eq!(key, "SYMBOL(init_top_pgt)");
            }
            other => panic!("expected a missing symbol, got {other:?}"),
        }
    }

    /// A virtual read spanning pages of the vmemmap (4 KiB leaves, translated one by one)
    /// gives the struct pages' physical bytes; so does the same array through the direct map.
    #[test]
    fn reads_across_pages_equal_the_physical_bytes() {
        let builder = Builder::new(Generation::V6_12).with_every_kind();
        let (_, vmcore) = built(&builder);
        let mut memory = KernelMemory::new(&vmcore).unwrap();
        let len = 3 * to_usize(PAGE) + 100;
        let mut expected = vec![0u8; len];
        vmcore.read_phys(VMEMMAP_PHYS + 100, &mut expected).unwrap();
        assert!(memory.read_vec(builder.mem_map() + 100, len).unwrap() == expected);
        assert!(
            memory
                .read_vec(builder.page_offset() + VMEMMAP_PHYS + 100, len)
                .unwrap()
                == expected
        );
    }
}
