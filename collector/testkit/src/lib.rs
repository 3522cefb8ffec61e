//! Synthetic x86_64 vmcores for rkdump's tests: small ELF core files holding exactly the kernel
//! state a test needs: every kind of page, each kernel generation's page encoding, 4- and
//! 5-level page tables (with 4 KiB, 2 MiB and 1 GiB leaves), KASLR-moved kernel text, direct
//! map and vmemmap, the SME encryption bit, both printk ring formats, memory holes, and corrupt
//! variants (through [`Builder::omit_vmcoreinfo`], [`Builder::extra_vmcoreinfo`] and the header
//! patching helpers of [`elf`]).
//!
//! The vmcore is a real x86_64 ELF core, laid out the way the kernel lays out its own:
//!
//! ```text
//! physical                      virtual
//! [0, pages*4K)          RAM    direct map at PAGE_OFFSET (4 KiB PTEs for the first 2 MiB,
//!                                2 MiB PMD leaves above; or 1 GiB PUD leaves)
//! [2 MiB, 4 MiB)  "kernel image": page tables, VMCOREINFO symbols, mem_section, printk
//!                                also mapped at 0xffffffff81000000 + KASLR offset (the
//!                                kernel-text alias)
//! [4 MiB, ...)    struct pages   mapped at VMEMMAP_START with 4 KiB PTEs
//! ```
//!
//! and PT_LOADs like `/proc/vmcore`'s: the kernel-text alias first, then RAM (minus holes).
//! makedumpfile reads these files as it reads real ones, so tests can compare against it.
//!
//! The crate does not depend on rkdump. rkdump's own unit tests dev-depend on it (a dependency
//! back on rkdump would give them two incompatible copies of rkdump's types), and its ELF
//! writer ([`elf`]) is written from the ELF specification rather than borrowed from rkdump's
//! encoder: a test that checks rkdump's reader against rkdump's writer would share their
//! mistakes, an independent writer does not.

pub mod elf;

use std::ops::Range;

// The synthetic vmcores are built for rkdump, which only targets 64-bit Linux: addresses and
// offsets (`u64`) always fit in a `usize`, which `to_usize` relies on.
const _: () = assert!(usize::BITS >= 64, "rkdump-testkit needs a 64-bit target");

/// Widens `value` to a `usize`, losslessly on the 64-bit targets this crate is built for
/// (checked at compile time above). rkdump's `format::bytes::to_usize`, which this crate cannot
/// depend on.
const fn to_usize(value: u64) -> usize {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "usize is at least 64 bits wide (asserted at compile time)"
    )]
    let widened = value as usize;
    widened
}

/// Page size.
pub const PAGE: u64 = 4096;
/// Physical address of the synthetic kernel image (page tables, symbols, mem_section, printk).
pub const KERNEL_PHYS: u64 = 2 << 20;
/// Size of the kernel image, which is also the size of the kernel-text PT_LOAD.
pub const KERNEL_SIZE: u64 = 2 << 20;
/// Virtual address of the kernel image without KASLR.
pub const KERNEL_VIRT: u64 = 0xffff_ffff_8100_0000;
/// x86_64 `__START_KERNEL_map`.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Physical address of the `struct page` of page frame 0 (the array is contiguous).
pub const VMEMMAP_PHYS: u64 = 4 << 20;
/// `SIZE(page)`.
pub const STRUCT_PAGE: u64 = 64;
/// Page frames per SPARSEMEM section (`SECTION_SIZE_BITS` is 22: 4 MiB).
pub const SECTION_PAGES: u64 = 1 << (SECTION_BITS - 12);
const SECTION_BITS: u32 = 22;

/// How a kernel generation marks page kinds in `struct page` and VMCOREINFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 4.18 to 6.5: `PG_slab` flag, `_mapcount` -129 for buddy, compound order and destructor
    /// fields in the first tail page.
    V6_1,
    /// 6.6 to 6.8: hugetlb is the `PG_hugetlb` flag of the first tail page, whose flags' low
    /// byte is the compound order.
    V6_6,
    /// 6.12: page types in the top byte of `page_type` (buddy 0xf0, offline 0xf1, hugetlb
    /// 0xf4, slab 0xf5), no `PG_slab`, order in the first tail page's flags.
    V6_12,
}

struct Flags {
    lru: u32,
    private: u32,
    swapcache: u32,
    swapbacked: u32,
    slab: Option<u32>,
    hwpoison: u32,
    head_mask: u64,
    hugetlb: Option<u32>,
    buddy: i32,
    offline: i32,
    slab_type: Option<i32>,
    hugetlb_type: Option<i32>,
}

impl Generation {
    fn flags(self) -> Flags {
        match self {
            Self::V6_1 => Flags {
                lru: 4,
                private: 13,
                swapcache: 10,
                swapbacked: 19,
                slab: Some(9),
                hwpoison: 23,
                head_mask: 1 << 16,
                hugetlb: None,
                buddy: -129,
                offline: -257,
                slab_type: None,
                hugetlb_type: None,
            },
            Self::V6_6 => Flags {
                hugetlb: Some(8),
                ..Self::V6_1.flags()
            },
            Self::V6_12 => Flags {
                lru: 5,
                private: 14,
                swapcache: 10,
                swapbacked: 17,
                slab: None,
                hwpoison: 20,
                head_mask: 1 << 6,
                hugetlb: None,
                buddy: 0xf000_0000_u32.cast_signed(),
                offline: 0xf100_0000_u32.cast_signed(),
                slab_type: Some(0xf500_0000_u32.cast_signed()),
                hugetlb_type: Some(0xf400_0000_u32.cast_signed()),
            },
        }
    }

    fn release(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1.0-synthetic",
            Self::V6_6 => "6.6.0-synthetic",
            Self::V6_12 => "6.12.0-synthetic",
        }
    }
}

/// What a range of page frames is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Kernel memory with data (kept at every level).
    Kernel,
    /// Kernel memory full of zeros.
    Zero,
    /// A free buddy block of `2^order` pages (the range must be exactly that, aligned).
    Free {
        /// log2 of the block's pages.
        order: u32,
    },
    /// Page cache without private data.
    Cache,
    /// Page cache with buffer heads (`PG_private`).
    CachePrivate,
    /// Anonymous user memory.
    Anon,
    /// A compound anonymous page (`2^order` pages, aligned).
    CompoundAnon {
        /// log2 of its pages.
        order: u32,
    },
    /// A hugetlbfs page (`2^order` pages, aligned).
    Hugetlb {
        /// log2 of its pages.
        order: u32,
    },
    /// Slab memory.
    Slab,
    /// Memory with a hardware error.
    Hwpoison,
    /// Logically offline memory.
    Offline,
}

/// One printk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Timestamp in nanoseconds since boot.
    pub ts_nsec: u64,
    /// `T<pid>`, or `C<cpu>` with bit 31 set.
    pub caller_id: u32,
    /// The message.
    pub text: Vec<u8>,
}

/// Which printk buffer the kernel has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Log {
    /// The lockless ring (5.10+).
    Lockless(Vec<Record>),
    /// The `printk_log` records of 3.5 to 5.9 (`caller_id` when the flag is set).
    Legacy {
        /// The records, oldest first.
        records: Vec<Record>,
        /// Whether `struct printk_log` has `caller_id` (CONFIG_PRINTK_CALLER).
        caller_id: bool,
    },
}

/// Where KASLR put the kernel: the randomised bases a real x86_64 kernel publishes through
/// `KERNELOFFSET` and its (relocated) VMCOREINFO symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kaslr {
    /// How far the kernel text moved from [`KERNEL_VIRT`] (`KERNELOFFSET`; a multiple of
    /// 2 MiB, below 1 GiB).
    pub kernel_offset: u64,
    /// `page_offset_base`: the direct map's base (a multiple of 1 GiB).
    pub page_offset: u64,
    /// `vmemmap_base`: where the `struct page` array is mapped (a multiple of 1 GiB).
    pub vmemmap: u64,
}

/// A synthetic vmcore under construction.
#[derive(Debug, Clone)]
pub struct Builder {
    /// How the kernel encodes page kinds.
    pub generation: Generation,
    /// RAM size in pages (a multiple of 512, at least 2048).
    pub pages: u64,
    /// 5-level paging (`la57`).
    pub five_level: bool,
    /// Page frame ranges no PT_LOAD covers.
    pub holes: Vec<Range<u64>>,
    /// What page frame ranges hold (later entries win; the rest is kernel memory).
    pub kinds: Vec<(Range<u64>, Kind)>,
    /// CPUs with register notes.
    pub cpus: usize,
    /// The printk buffer.
    pub log: Log,
    /// VMCOREINFO entries appended at the end.
    pub extra_vmcoreinfo: Vec<(String, String)>,
    /// VMCOREINFO keys left out.
    pub omit_vmcoreinfo: Vec<String>,
    /// SPARSEMEM_EXTREME (a root array of section pages) rather than one flat static array.
    pub extreme: bool,
    /// SPARSEMEM_VMEMMAP (struct pages mapped at VMEMMAP_START) rather than in the direct map.
    pub vmemmap: bool,
    /// Randomised kernel addresses (`None`: the fixed non-KASLR layout).
    pub kaslr: Option<Kaslr>,
    /// The direct map is made of 1 GiB PUD leaves instead of 4 KiB and 2 MiB pages.
    pub gigabyte_pages: bool,
    /// SME encryption mask (`NUMBER(sme_mask)`), set in every page table entry.
    pub sme_mask: u64,
}

impl Builder {
    /// A 32 MiB, 4-level vmcore with a few log lines and only kernel pages.
    pub fn new(generation: Generation) -> Self {
        Self {
            generation,
            pages: 8192,
            five_level: false,
            holes: Vec::new(),
            kinds: Vec::new(),
            cpus: 2,
            log: Log::Lockless(default_records()),
            extra_vmcoreinfo: Vec::new(),
            omit_vmcoreinfo: Vec::new(),
            extreme: true,
            vmemmap: true,
            kaslr: None,
            gigabyte_pages: false,
            sme_mask: 0,
        }
    }

    /// Every kind of page, somewhere above the kernel's own memory.
    pub fn with_every_kind(mut self) -> Self {
        let base = self.first_free_pfn().next_multiple_of(1024);
        let layout = [
            (16, Kind::Free { order: 4 }),
            (16, Kind::Zero),
            (8, Kind::Kernel),
            (12, Kind::Cache),
            (4, Kind::CachePrivate),
            (10, Kind::Anon),
            (6, Kind::Slab),
            (8, Kind::CompoundAnon { order: 3 }),
            (432, Kind::Kernel),
            (512, Kind::Hugetlb { order: 9 }),
            (3, Kind::Hwpoison),
            (5, Kind::Offline),
            (1016, Kind::Kernel),
            (1024, Kind::Free { order: 10 }),
        ];
        let mut at = base;
        for (len, kind) in layout {
            self.kinds.push((at..at + len, kind));
            at += len;
        }
        self
    }

    /// The first page frame after the `struct page` array: from here on, page frames hold
    /// nothing the vmcore's metadata needs.
    pub fn first_free_pfn(&self) -> u64 {
        (VMEMMAP_PHYS + self.pages * STRUCT_PAGE).div_ceil(PAGE)
    }

    /// The direct map's base (`PAGE_OFFSET`).
    pub fn page_offset(&self) -> u64 {
        if let Some(kaslr) = self.kaslr {
            kaslr.page_offset
        } else if self.five_level {
            0xff11_0000_0000_0000
        } else {
            0xffff_8880_0000_0000
        }
    }

    /// `VMEMMAP_START` (used when [`Builder::vmemmap`] is set).
    pub fn vmemmap_start(&self) -> u64 {
        if let Some(kaslr) = self.kaslr {
            kaslr.vmemmap
        } else if self.five_level {
            0xffd4_0000_0000_0000
        } else {
            0xffff_ea00_0000_0000
        }
    }

    fn physmem_bits(&self) -> u32 {
        match (self.extreme, self.five_level) {
            // A flat mem_section array must fit in the synthetic kernel image: 64 GiB of
            // physical address space is 16384 sections.
            (false, _) => 36,
            (true, true) => 52,
            (true, false) => 46,
        }
    }

    /// Virtual address of the kernel image (the kernel-text alias of [`KERNEL_PHYS`]).
    pub fn kernel_virt(&self) -> u64 {
        KERNEL_VIRT + self.kaslr.map_or(0, |k| k.kernel_offset)
    }

    /// Virtual address of the struct page of pfn 0.
    pub fn mem_map(&self) -> u64 {
        if self.vmemmap {
            self.vmemmap_start()
        } else {
            self.page_offset() + VMEMMAP_PHYS
        }
    }

    /// Builds the vmcore file's bytes.
    pub fn build(&self) -> Vec<u8> {
        assert!(
            self.pages.is_multiple_of(512) && self.pages >= 2048,
            "pages: a multiple of 512, at least 8 MiB"
        );
        if let Some(kaslr) = self.kaslr {
            assert!(
                kaslr.kernel_offset.is_multiple_of(2 << 20) && kaslr.kernel_offset < 1 << 30,
                "KASLR kernel offset: a multiple of 2 MiB below 1 GiB"
            );
            assert!(
                kaslr.page_offset.is_multiple_of(1 << 30) && kaslr.vmemmap.is_multiple_of(1 << 30),
                "KASLR bases: multiples of 1 GiB"
            );
        }
        let mut mem = Memory {
            bytes: vec![0; to_usize(self.pages * PAGE)],
            next_kernel: KERNEL_PHYS,
        };
        // Deterministic non-zero content everywhere; zero pages are cleared below.
        let mut state = 0x243f_6a88_85a3_08d3u64;
        for word in mem.bytes.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&(state & 0x00ff_00ff_00ff_00ff).to_le_bytes());
        }
        let struct_pages_end = VMEMMAP_PHYS + self.pages * STRUCT_PAGE;
        mem.bytes[to_usize(VMEMMAP_PHYS)..to_usize(struct_pages_end)].fill(0);

        let root = self.page_tables(&mut mem);
        let flags = self.generation.flags();
        self.struct_pages(&mut mem, &flags);
        let (mem_section, in_kernel_image) = self.mem_section(&mut mem);
        let uts = mem.kernel_alloc(390, 8);
        for (i, field) in [
            "Linux",
            "synthetic",
            self.generation.release(),
            "#1 SMP synthetic",
            "x86_64",
            "(none)",
        ]
        .iter()
        .enumerate()
        {
            mem.write(uts + i as u64 * 65, field.as_bytes());
        }
        let log_symbols = self.printk(&mut mem);

        let phys_base = KERNEL_PHYS.wrapping_sub(self.kernel_virt() - START_KERNEL_MAP);
        let kvirt = |phys: u64| self.kernel_virt() + (phys - KERNEL_PHYS);
        let mut info: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| info.push((k.to_owned(), v));
        put("OSRELEASE", self.generation.release().to_owned());
        put("PAGESIZE", "4096".into());
        put("SYMBOL(init_uts_ns)", format!("{:x}", kvirt(uts)));
        put("OFFSET(uts_namespace.name)", "0".into());
        let mem_section = if in_kernel_image {
            kvirt(mem_section)
        } else {
            self.page_offset() + mem_section
        };
        put("SYMBOL(mem_section)", format!("{mem_section:x}"));
        let all_sections = 1u64 << (self.physmem_bits() - SECTION_BITS);
        let length = if self.extreme {
            all_sections.div_ceil(4096 / 32)
        } else {
            all_sections
        };
        put("LENGTH(mem_section)", length.to_string());
        put("SIZE(mem_section)", "32".into());
        put("OFFSET(mem_section.section_mem_map)", "0".into());
        put("NUMBER(SECTION_SIZE_BITS)", SECTION_BITS.to_string());
        put("NUMBER(MAX_PHYSMEM_BITS)", self.physmem_bits().to_string());
        put("SIZE(page)", STRUCT_PAGE.to_string());
        for (member, offset) in [
            ("flags", 0),
            ("_refcount", 52),
            ("mapping", 24),
            ("lru", 8),
            ("_mapcount", 48),
            ("private", 40),
            ("compound_head", 8),
        ] {
            put(&format!("OFFSET(page.{member})"), offset.to_string());
        }
        if self.generation == Generation::V6_1 {
            put("OFFSET(page.compound_dtor)", "16".into());
            put("OFFSET(page.compound_order)", "17".into());
            put("NUMBER(HUGETLB_PAGE_DTOR)", "2".into());
        }
        put("LENGTH(zone.free_area)", "11".into());
        put("NUMBER(PG_lru)", flags.lru.to_string());
        put("NUMBER(PG_private)", flags.private.to_string());
        put("NUMBER(PG_swapcache)", flags.swapcache.to_string());
        put("NUMBER(PG_swapbacked)", flags.swapbacked.to_string());
        if let Some(bit) = flags.slab {
            put("NUMBER(PG_slab)", bit.to_string());
        }
        if let Some(bit) = flags.hugetlb {
            put("NUMBER(PG_hugetlb)", bit.to_string());
        }
        put("NUMBER(PG_hwpoison)", flags.hwpoison.to_string());
        put("NUMBER(PG_head_mask)", flags.head_mask.to_string());
        put("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", flags.buddy.to_string());
        put(
            "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)",
            flags.offline.to_string(),
        );
        if let Some(value) = flags.slab_type {
            put("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)", value.to_string());
        }
        if let Some(value) = flags.hugetlb_type {
            put("NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)", value.to_string());
        }
        for (key, value) in log_symbols {
            put(&key, value);
        }
        put("NUMBER(phys_base)", phys_base.cast_signed().to_string());
        put("SYMBOL(init_top_pgt)", format!("{:x}", kvirt(root)));
        put(
            "NUMBER(pgtable_l5_enabled)",
            u8::from(self.five_level).to_string(),
        );
        put(
            "KERNELOFFSET",
            format!("{:x}", self.kernel_virt() - KERNEL_VIRT),
        );
        put("NUMBER(KERNEL_IMAGE_SIZE)", "1073741824".into());
        put("NUMBER(sme_mask)", self.sme_mask.to_string());
        put("CRASHTIME", "1764072000".into());
        info.retain(|(k, _)| !self.omit_vmcoreinfo.contains(k));
        info.extend(self.extra_vmcoreinfo.iter().cloned());
        let text: String = info.iter().map(|(k, v)| format!("{k}={v}\n")).collect();

        let mut notes = Vec::new();
        for cpu in 0..self.cpus {
            let mut prstatus = vec![0u8; elf::PRSTATUS_SIZE];
            prstatus[32..36].copy_from_slice(
                &u32::try_from(cpu + 1)
                    .expect("fewer than 2^32 CPUs")
                    .to_le_bytes(),
            ); // pr_pid
            notes.extend(elf::note(b"CORE", elf::NT_PRSTATUS, &prstatus));
        }
        notes.extend(elf::note(b"VMCOREINFO", 0, text.as_bytes()));
        self.elf(&mem.bytes, &notes)
    }

    fn page_tables(&self, mem: &mut Memory) -> u64 {
        let root = mem.kernel_alloc(PAGE, PAGE);
        let mut tables = Tables {
            root,
            five_level: self.five_level,
            sme_mask: self.sme_mask,
        };
        if self.gigabyte_pages {
            // Direct map: 1 GiB leaves.
            for phys in (0..self.pages * PAGE).step_by(1 << 30) {
                tables.map(mem, self.page_offset() + phys, phys, Level::Pud);
            }
        } else {
            // Direct map: 4 KiB pages for the first 2 MiB, 2 MiB leaves above.
            for phys in (0..2 << 20).step_by(to_usize(PAGE)) {
                tables.map(mem, self.page_offset() + phys, phys, Level::Pte);
            }
            for phys in ((2 << 20)..self.pages * PAGE).step_by(2 << 20) {
                tables.map(mem, self.page_offset() + phys, phys, Level::Pmd);
            }
        }
        // The kernel image.
        tables.map(mem, self.kernel_virt(), KERNEL_PHYS, Level::Pmd);
        // vmemmap: the struct page array (without SPARSEMEM_VMEMMAP it is reached through the
        // direct map).
        let bytes = if self.vmemmap {
            (self.pages * STRUCT_PAGE).next_multiple_of(PAGE)
        } else {
            0
        };
        for offset in (0..bytes).step_by(to_usize(PAGE)) {
            tables.map(
                mem,
                self.vmemmap_start() + offset,
                VMEMMAP_PHYS + offset,
                Level::Pte,
            );
        }
        root
    }

    fn struct_pages(&self, mem: &mut Memory, flags: &Flags) {
        let page_at = |pfn: u64| VMEMMAP_PHYS + pfn * STRUCT_PAGE;
        for pfn in 0..self.pages {
            mem.write_u32(page_at(pfn) + 48, u32::MAX); // _mapcount = -1
            mem.write_u32(page_at(pfn) + 52, 1); // _refcount
        }
        for (range, kind) in &self.kinds {
            for pfn in range.clone() {
                let at = page_at(pfn);
                let head = pfn == range.start;
                let bit = |b: u32| 1u64 << b;
                match kind {
                    Kind::Kernel => {}
                    Kind::Zero => {
                        mem.bytes[to_usize(pfn * PAGE)..to_usize((pfn + 1) * PAGE)].fill(0);
                    }
                    Kind::Free { order } => {
                        if head {
                            mem.write_u32(at + 48, flags.buddy.cast_unsigned());
                            mem.write_u64(at + 40, u64::from(*order));
                            mem.write_u32(at + 52, 0);
                        } else {
                            mem.write_u32(at + 52, 0);
                        }
                    }
                    Kind::Cache => {
                        mem.write_u64(at, bit(flags.lru));
                        mem.write_u64(at + 24, self.page_offset() + 0x1000);
                    }
                    Kind::CachePrivate => {
                        mem.write_u64(at, bit(flags.lru) | bit(flags.private));
                        mem.write_u64(at + 24, self.page_offset() + 0x1000);
                    }
                    Kind::Anon => {
                        mem.write_u64(at, bit(flags.lru) | bit(flags.swapbacked));
                        mem.write_u64(at + 24, self.page_offset() + 0x2001);
                    }
                    Kind::Slab => match (flags.slab, flags.slab_type) {
                        (_, Some(value)) => mem.write_u32(at + 48, value.cast_unsigned()),
                        (Some(b), None) => mem.write_u64(at, bit(b)),
                        (None, None) => unreachable!(),
                    },
                    Kind::Hwpoison => mem.write_u64(at, bit(flags.hwpoison)),
                    Kind::Offline => mem.write_u32(at + 48, flags.offline.cast_unsigned()),
                    Kind::CompoundAnon { order } | Kind::Hugetlb { order } => {
                        let hugetlb = matches!(kind, Kind::Hugetlb { .. });
                        if head {
                            let mut f = flags.head_mask;
                            if !hugetlb {
                                f |= bit(flags.lru) | bit(flags.swapbacked);
                                mem.write_u64(at + 24, self.page_offset() + 0x2001);
                            }
                            mem.write_u64(at, f);
                            if hugetlb && let Some(value) = flags.hugetlb_type {
                                mem.write_u32(at + 48, value.cast_unsigned());
                            }
                        } else {
                            mem.write_u64(at + 8, (self.mem_map() + range.start * STRUCT_PAGE) | 1);
                            if pfn == range.start + 1 {
                                match self.generation {
                                    Generation::V6_1 => {
                                        mem.bytes[to_usize(at + 17)] = u8::try_from(*order)
                                            .expect("a compound order fits in a byte");
                                        mem.bytes[to_usize(at + 16)] = if hugetlb { 2 } else { 1 };
                                    }
                                    Generation::V6_6 | Generation::V6_12 => {
                                        let mut f = u64::from(*order);
                                        if hugetlb && let Some(b) = flags.hugetlb {
                                            f |= bit(b);
                                        }
                                        mem.write_u64(at, f);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// SPARSEMEM_EXTREME: a root array in the direct map, one page of sections per root; or a
    /// flat static array of every section. Returns the symbol's physical address and whether it
    /// is in the kernel image (else in the direct map).
    fn mem_section(&self, mem: &mut Memory) -> (u64, bool) {
        let per_section = 1u64 << (SECTION_BITS - 12);
        let sections = self.pages.div_ceil(per_section);
        let present = |nr: u64| {
            let (start, end) = (nr * per_section, (nr + 1) * per_section);
            !self.holes.iter().any(|h| h.start <= start && end <= h.end)
        };
        // The kernel stores mem_map minus the section's first pfn, with flags below.
        let coded = self.mem_map() | 0x1 | 0x2 | 0x8;
        if !self.extreme {
            let all = 1u64 << (self.physmem_bits() - SECTION_BITS);
            let array = mem.kernel_alloc(all * 32, 32);
            for nr in (0..sections).filter(|&nr| present(nr)) {
                mem.write_u64(array + nr * 32, coded);
            }
            return (array, true);
        }
        let roots = sections.div_ceil(4096 / 32);
        let root_array = mem.kernel_alloc(roots.max(1) * 8, 8);
        for r in 0..roots {
            let page = mem.kernel_alloc(PAGE, PAGE);
            mem.write_u64(root_array + r * 8, self.page_offset() + page);
            for i in 0..(4096 / 32) {
                let nr = r * (4096 / 32) + i;
                if nr < sections && present(nr) {
                    mem.write_u64(page + i * 32, coded);
                }
            }
        }
        (root_array, false)
    }

    fn printk(&self, mem: &mut Memory) -> Vec<(String, String)> {
        let kvirt = |phys: u64| self.kernel_virt() + (phys - KERNEL_PHYS);
        let mut symbols = Vec::new();
        let mut sym = |k: &str, v: String| symbols.push((k.to_owned(), v));
        match &self.log {
            Log::Lockless(records) => {
                let count_bits = 5u32;
                let count = 1u64 << count_bits;
                let size_bits = 14u32;
                let ring = 1u64 << size_bits;
                let descs = mem.kernel_alloc(count * 24, 8);
                let infos = mem.kernel_alloc(count * 88, 8);
                let data = mem.kernel_alloc(ring, 8);
                // Unused ring bytes hold old messages in a real kernel, not zeros.
                mem.bytes[to_usize(data)..to_usize(data + ring)].fill(0x5a);
                let rb = mem.kernel_alloc(88, 8);
                let prb = mem.kernel_alloc(8, 8);
                mem.write_u64(prb, kvirt(rb));
                let first_id = 0x80u64;
                // Start near the end of the ring so that a record's block wraps to its start.
                let mut lpos = 4 * ring - 48;
                for (i, record) in records.iter().enumerate() {
                    let id = first_id + i as u64;
                    let slot = id % count;
                    let (begin, next) = if record.text.is_empty() {
                        (3, 3) // an empty line has no data block
                    } else {
                        let block = (8 + record.text.len() as u64).next_multiple_of(8);
                        let at = lpos % ring;
                        let (begin, write_at) = if at + block > ring {
                            (lpos, 0)
                        } else {
                            (lpos, at)
                        };
                        mem.write_u64(data + write_at, id);
                        mem.write(data + write_at + 8, &record.text);
                        lpos = if write_at == 0 && at != 0 {
                            lpos - at + ring + block
                        } else {
                            lpos + block
                        };
                        (begin, lpos)
                    };
                    mem.write_u64(descs + slot * 24, (2u64 << 62) | id);
                    mem.write_u64(descs + slot * 24 + 8, begin);
                    mem.write_u64(descs + slot * 24 + 16, next);
                    mem.write_u64(infos + slot * 88, id);
                    mem.write_u64(infos + slot * 88 + 8, record.ts_nsec);
                    mem.write_u16(
                        infos + slot * 88 + 16,
                        u16::try_from(record.text.len()).expect("a record's text is under 64 KiB"),
                    );
                    mem.write_u32(infos + slot * 88 + 20, record.caller_id);
                }
                let head = first_id + records.len() as u64 - 1;
                mem.write_u32(rb, count_bits);
                mem.write_u64(rb + 8, kvirt(descs));
                mem.write_u64(rb + 16, kvirt(infos));
                mem.write_u64(rb + 24, head);
                mem.write_u64(rb + 32, first_id);
                mem.write_u32(rb + 48, size_bits);
                mem.write_u64(rb + 56, kvirt(data));
                sym("SYMBOL(prb)", format!("{:x}", kvirt(prb)));
                for (k, v) in [
                    ("SIZE(printk_ringbuffer)", 88),
                    ("OFFSET(printk_ringbuffer.desc_ring)", 0),
                    ("OFFSET(printk_ringbuffer.text_data_ring)", 48),
                    ("OFFSET(printk_ringbuffer.fail)", 80),
                    ("OFFSET(prb_desc_ring.count_bits)", 0),
                    ("OFFSET(prb_desc_ring.descs)", 8),
                    ("OFFSET(prb_desc_ring.infos)", 16),
                    ("OFFSET(prb_desc_ring.head_id)", 24),
                    ("OFFSET(prb_desc_ring.tail_id)", 32),
                    ("SIZE(prb_desc)", 24),
                    ("OFFSET(prb_desc.state_var)", 0),
                    ("OFFSET(prb_desc.text_blk_lpos)", 8),
                    ("OFFSET(prb_data_blk_lpos.begin)", 0),
                    ("OFFSET(prb_data_blk_lpos.next)", 8),
                    ("SIZE(printk_info)", 88),
                    ("OFFSET(printk_info.seq)", 0),
                    ("OFFSET(printk_info.ts_nsec)", 8),
                    ("OFFSET(printk_info.text_len)", 16),
                    ("OFFSET(printk_info.caller_id)", 20),
                    ("OFFSET(prb_data_ring.size_bits)", 0),
                    ("OFFSET(prb_data_ring.data)", 8),
                    ("SIZE(atomic_long_t)", 8),
                    ("OFFSET(atomic_long_t.counter)", 0),
                ] {
                    sym(k, v.to_string());
                }
            }
            Log::Legacy { records, caller_id } => {
                let header = if *caller_id { 24u64 } else { 16 };
                let len = 1u64 << 13;
                let buf = mem.kernel_alloc(len, 8);
                let mut at = 0u64;
                for record in records {
                    let size = (header + record.text.len() as u64).next_multiple_of(8);
                    if at + size > len {
                        break;
                    }
                    mem.write_u64(buf + at, record.ts_nsec);
                    mem.write_u16(
                        buf + at + 8,
                        u16::try_from(size).expect("within the 8 KiB buffer"),
                    );
                    mem.write_u16(
                        buf + at + 10,
                        u16::try_from(record.text.len()).expect("within the 8 KiB buffer"),
                    );
                    if *caller_id {
                        mem.write_u32(buf + at + 16, record.caller_id);
                    }
                    mem.write(buf + at + header, &record.text);
                    at += size;
                }
                let pointer = mem.kernel_alloc(8, 8);
                mem.write_u64(pointer, kvirt(buf));
                let values = mem.kernel_alloc(12, 4);
                mem.write_u32(values, u32::try_from(len).expect("an 8 KiB buffer"));
                mem.write_u32(values + 4, 0);
                mem.write_u32(
                    values + 8,
                    u32::try_from(at).expect("within the 8 KiB buffer"),
                );
                sym("SYMBOL(log_buf)", format!("{:x}", kvirt(pointer)));
                sym("SYMBOL(log_buf_len)", format!("{:x}", kvirt(values)));
                sym("SYMBOL(log_first_idx)", format!("{:x}", kvirt(values + 4)));
                sym("SYMBOL(log_next_idx)", format!("{:x}", kvirt(values + 8)));
                sym("SIZE(printk_log)", header.to_string());
                sym("OFFSET(printk_log.ts_nsec)", "0".into());
                sym("OFFSET(printk_log.len)", "8".into());
                sym("OFFSET(printk_log.text_len)", "10".into());
                if *caller_id {
                    sym("OFFSET(printk_log.caller_id)", "16".into());
                }
            }
        }
        symbols
    }

    /// The page frame ranges of the RAM PT_LOADs, in order: `[0, pages)` minus the holes.
    pub fn ram(&self) -> Vec<Range<u64>> {
        let mut ram: Vec<Range<u64>> = std::iter::once(0..self.pages).collect();
        for hole in &self.holes {
            ram = ram
                .into_iter()
                .flat_map(|r| {
                    [
                        r.start..hole.start.clamp(r.start, r.end),
                        hole.end.clamp(r.start, r.end)..r.end,
                    ]
                })
                .filter(|r| r.start < r.end)
                .collect();
        }
        ram
    }

    /// The file: notes, the kernel-text alias, then RAM without holes.
    fn elf(&self, memory: &[u8], notes: &[u8]) -> Vec<u8> {
        let ram = self.ram();
        let text = to_usize(KERNEL_PHYS)..to_usize(KERNEL_PHYS + KERNEL_SIZE);
        let loads: Vec<elf::Load<'_>> = std::iter::once(elf::Load {
            vaddr: self.kernel_virt(),
            paddr: KERNEL_PHYS,
            data: &memory[text],
        })
        .chain(ram.iter().map(|r| elf::Load {
            vaddr: self.page_offset() + r.start * PAGE,
            paddr: r.start * PAGE,
            data: &memory[to_usize(r.start * PAGE)..to_usize(r.end * PAGE)],
        }))
        .collect();
        elf::core_file(notes, &loads, PAGE)
    }
}

fn default_records() -> Vec<Record> {
    vec![
        Record {
            ts_nsec: 0,
            caller_id: 0,
            text: b"Linux version 6.1.0-synthetic".to_vec(),
        },
        Record {
            ts_nsec: 1_500_000_000,
            caller_id: 1,
            text: b"first\nsecond line".to_vec(),
        },
        Record {
            ts_nsec: 2_000_001_000,
            caller_id: 0x8000_0001,
            text: b"cpu record \x01\x7f\xc3\xa9 tab\t".to_vec(),
        },
        Record {
            ts_nsec: 3_000_000_000,
            caller_id: 42,
            text: Vec::new(),
        },
        Record {
            ts_nsec: 123_456_789_012,
            caller_id: 4242,
            text: b"sysrq: Trigger a crash".to_vec(),
        },
    ]
}

struct Memory {
    bytes: Vec<u8>,
    next_kernel: u64,
}

impl Memory {
    fn kernel_alloc(&mut self, size: u64, align: u64) -> u64 {
        let at = self.next_kernel.next_multiple_of(align);
        assert!(
            at + size <= KERNEL_PHYS + KERNEL_SIZE,
            "synthetic kernel image is full"
        );
        self.next_kernel = at + size;
        self.bytes[to_usize(at)..to_usize(at + size)].fill(0);
        at
    }

    fn write(&mut self, at: u64, data: &[u8]) {
        self.bytes[to_usize(at)..to_usize(at) + data.len()].copy_from_slice(data);
    }

    fn write_u16(&mut self, at: u64, v: u16) {
        self.write(at, &v.to_le_bytes());
    }

    fn write_u32(&mut self, at: u64, v: u32) {
        self.write(at, &v.to_le_bytes());
    }

    fn write_u64(&mut self, at: u64, v: u64) {
        self.write(at, &v.to_le_bytes());
    }

    fn read_u64(&self, at: u64) -> u64 {
        u64::from_le_bytes(
            self.bytes[to_usize(at)..to_usize(at) + 8]
                .try_into()
                .unwrap(),
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Pud,
    Pmd,
    Pte,
}

struct Tables {
    root: u64,
    five_level: bool,
    sme_mask: u64,
}

impl Tables {
    /// Maps `virt` to `phys` with a leaf at `level`, creating tables on the way.
    fn map(&mut self, mem: &mut Memory, virt: u64, phys: u64, level: Level) {
        let mut shifts: Vec<u32> = if self.five_level {
            vec![48, 39, 30]
        } else {
            vec![39, 30]
        };
        match level {
            Level::Pud => {}
            Level::Pmd => shifts.push(21),
            Level::Pte => shifts.extend([21, 12]),
        }
        let mut table = self.root;
        let last = shifts.len() - 1;
        for (i, shift) in shifts.iter().enumerate() {
            let entry_at = table + ((virt >> shift) & 511) * 8;
            if i == last {
                // Present and writable; PS (bit 7) for 1 GiB and 2 MiB leaves.
                let leaf_flags = if level == Level::Pte { 0x3 } else { 0x83 };
                mem.write_u64(entry_at, phys | self.sme_mask | leaf_flags);
                return;
            }
            let entry = mem.read_u64(entry_at);
            assert!(
                entry & 0x80 == 0,
                "{virt:#x}: a table is needed where a large page is mapped"
            );
            table = if entry & 1 != 0 {
                entry & 0x000f_ffff_ffff_f000 & !self.sme_mask
            } else {
                let next = mem.kernel_alloc(PAGE, PAGE);
                mem.write_u64(entry_at, next | self.sme_mask | 0x3);
                next
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VMCOREINFO text of a built vmcore (the last note of its PT_NOTE segment).
    fn vmcoreinfo(file: &[u8]) -> String {
        let notes = elf::program_headers(file)[0];
        let notes = &file[to_usize(notes.p_offset)..][..to_usize(notes.p_filesz)];
        let text = notes
            .windows(11)
            .position(|w| w == b"VMCOREINFO\0")
            .map(|at| &notes[at + 12..])
            .expect("a VMCOREINFO note");
        String::from_utf8_lossy(text)
            .trim_end_matches('\0')
            .to_owned()
    }

    #[test]
    fn pt_loads_are_the_kernel_text_alias_then_ram_around_the_holes() {
        let mut builder = Builder::new(Generation::V6_1);
        builder.holes = vec![100..200, 8000..8192];
        assert_eq!(builder.ram(), vec![0..100, 200..8000]);
        let file = builder.build();
        let headers = elf::program_headers(&file);
        assert_eq!(headers.len(), 4);
        assert_eq!(
            (headers[1].p_vaddr, headers[1].p_paddr, headers[1].p_filesz),
            (KERNEL_VIRT, KERNEL_PHYS, KERNEL_SIZE)
        );
        let ram: Vec<(u64, u64)> = headers[2..]
            .iter()
            .map(|h| (h.p_paddr / PAGE, (h.p_paddr + h.p_memsz) / PAGE))
            .collect();
        assert_eq!(ram, [(0, 100), (200, 8000)]);
        assert_eq!(headers[3].p_vaddr, builder.page_offset() + 200 * PAGE);
        // The alias holds the same bytes as RAM at the same physical address.
        let alias = to_usize(headers[1].p_offset);
        let ram_at = to_usize(headers[3].p_offset + KERNEL_PHYS - headers[3].p_paddr);
        assert!(file[alias..][..to_usize(KERNEL_SIZE)] == file[ram_at..][..to_usize(KERNEL_SIZE)]);
    }

    #[test]
    fn vmcoreinfo_publishes_the_kaslr_layout() {
        let mut builder = Builder::new(Generation::V6_12);
        builder.kaslr = Some(Kaslr {
            kernel_offset: 0x1e00_0000,
            page_offset: 0xffff_a0c0_0000_0000,
            vmemmap: 0xffff_f6c0_0000_0000,
        });
        builder.sme_mask = 1 << 47;
        assert_eq!(builder.kernel_virt(), 0xffff_ffff_9f00_0000);
        assert_eq!(builder.mem_map(), 0xffff_f6c0_0000_0000);
        let text = vmcoreinfo(&builder.build());
        assert!(text.starts_with("OSRELEASE=6.12.0-synthetic\n"), "{text}");
        assert!(text.contains("\nKERNELOFFSET=1e000000\n"), "{text}");
        assert!(
            text.contains("\nNUMBER(sme_mask)=140737488355328\n"),
            "{text}"
        );
        let phys_base = KERNEL_PHYS.wrapping_sub(0xffff_ffff_9f00_0000 - START_KERNEL_MAP);
        assert!(
            text.contains(&format!(
                "\nNUMBER(phys_base)={}\n",
                phys_base.cast_signed()
            )),
            "{text}"
        );
    }
}
