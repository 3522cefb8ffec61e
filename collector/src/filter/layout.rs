//! What a `struct page` says about its page frame, read the way makedumpfile reads it.
//!
//! [`PageLayout`] collects the offsets, flag bit numbers and `page_type` values the dead kernel
//! published in VMCOREINFO, with makedumpfile's defaults for entries old kernels lack.
//! [`PageLayout::classify`] applies makedumpfile's first-match rules to one `struct page` (and
//! the next one, for compound heads), giving the category and the number of page frames to
//! exclude. Nothing here reads memory.
//!
//! Kernel generations differ in how they mark page kinds, and VMCOREINFO says which applies:
//! free pages are `PageBuddy` by `_mapcount == PAGE_BUDDY_MAPCOUNT_VALUE` (-128 up to 4.17,
//! `~PG_buddy` = -129 from 4.18, `PGTY_buddy << 24` from 6.12); slab moved from a flag to a page
//! type in 6.10; hugetlb from the compound destructor to a flag in 6.6 and to a page type in 6.9;
//! the compound order from a field of the first tail page to the low byte of its flags in 6.6.

use super::{Category, DumpLevel};
use crate::format::bytes::to_usize;
use crate::format::vmcoreinfo::{VmcoreInfo, VmcoreInfoError};

/// Makedumpfile's `PGMM_CACHED`: struct pages are read in batches of this many entries, aligned
/// on the page frame number, and a compound head at the last index of a batch is taken as
/// order 0.
pub const STRUCT_PAGE_BATCH: u64 = 512;

/// Destructor value meaning "known to be hugetlb" (makedumpfile's `IS_HUGETLB`).
const IS_HUGETLB: u64 = u64::MAX;

/// Why filtering metadata is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A VMCOREINFO entry is missing or malformed.
    #[error(transparent)]
    Info(#[from] VmcoreInfoError),
    /// The published layout is inconsistent.
    #[error("inconsistent struct page layout: {0}")]
    Inconsistent(String),
}

/// Where the compound order and destructor of a head page are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompoundScheme {
    /// 6.9+: order in the low byte of the first tail page's flags; hugetlb when the head's
    /// `page_type` equals this value.
    HugetlbPageType(i32),
    /// 6.6-6.8: order in the low byte of the first tail page's flags; hugetlb when that word
    /// has this flag bit set.
    HugetlbFlag(u32),
    /// Older kernels: order and destructor are fields of the first tail page.
    TailFields {
        /// Offset of the order within the tail page, if published.
        order: Option<usize>,
        /// Width of the order field in bytes (1 from 4.16, else 2).
        order_width: usize,
        /// Offset of the destructor within the tail page, if published.
        dtor: Option<usize>,
        /// Width of the destructor field (1 from 4.16, 2 from 4.4, else 8).
        dtor_width: usize,
    },
}

/// Offsets and constants needed to classify page frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLayout {
    /// `SIZE(page)`.
    pub size: usize,
    flags: usize,
    mapping: usize,
    mapcount: Option<usize>,
    private: Option<usize>,
    compound_head: Option<usize>,
    pg_lru: u32,
    pg_private: u32,
    pg_swapcache: u32,
    pg_swapbacked: Option<u32>,
    pg_slab: u32,
    pg_head_mask: u64,
    pg_hwpoison: Option<u32>,
    pg_buddy: Option<u32>,
    buddy_value: Option<i32>,
    slab_value: Option<i32>,
    offline_value: Option<i32>,
    unaccepted_value: Option<i32>,
    hugetlb_dtor: Option<u64>,
    free_huge_page: Option<u64>,
    free_area_orders: Option<u64>,
    compound: CompoundScheme,
}

/// How many page frames a classified page frame stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the page frame (or it is a tail, handled through its head).
    Keep,
    /// Exclude `pages` page frames starting here, counted under `category`.
    Exclude {
        /// Why.
        category: Category,
        /// How many frames (a power of two).
        pages: u64,
    },
    /// A free page claims an order beyond the kernel's maximum: it is kept, with a warning.
    BadFreeOrder(u64),
}

fn number_u32(info: &VmcoreInfo, name: &str) -> Result<Option<u32>, LayoutError> {
    info.number(name)?
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                LayoutError::Inconsistent(format!("NUMBER({name})={v} is not a flag bit number"))
            })
        })
        .transpose()
}

fn number_i32(info: &VmcoreInfo, name: &str) -> Result<Option<i32>, LayoutError> {
    // makedumpfile compares the 32-bit word with `(int)NUMBER(...)`: truncate the same way.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "deliberate: makedumpfile truncates NUMBER() to int the same way"
    )]
    let truncate = |v: i64| v as i32;
    Ok(info.number(name)?.map(truncate))
}

fn offset(info: &VmcoreInfo, member: &str) -> Result<Option<usize>, LayoutError> {
    Ok(info.offset(member)?.map(to_usize))
}

/// Parses `major.minor.patch` from the front of a release string (`6.1.0-56-amd64`).
pub fn kernel_version(release: &str) -> (u32, u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

impl PageLayout {
    /// Reads the layout from VMCOREINFO.
    pub fn from_vmcoreinfo(info: &VmcoreInfo) -> Result<Self, LayoutError> {
        let required = |member: &str| -> Result<usize, LayoutError> {
            offset(info, member)?
                .ok_or_else(|| VmcoreInfoError::Missing(format!("OFFSET({member})")).into())
        };
        let size = to_usize(
            info.size("page")?
                .ok_or_else(|| VmcoreInfoError::Missing("SIZE(page)".to_owned()))?,
        );
        let flags = required("page.flags")?;
        let mapping = required("page.mapping")?;
        // `_refcount` (or the older `_count`) must exist for makedumpfile to filter at all.
        if offset(info, "page._refcount")?.is_none() && offset(info, "page._count")?.is_none() {
            return Err(VmcoreInfoError::Missing("OFFSET(page._refcount)".to_owned()).into());
        }
        let compound_head = match offset(info, "page.compound_head")? {
            Some(o) => Some(o),
            None => offset(info, "page.compound_info")?,
        };
        let version = kernel_version(info.os_release().unwrap_or(""));

        // Defaults makedumpfile applies when a kernel does not publish a number.
        let pg_private = number_u32(info, "PG_private")?.unwrap_or(11);
        let pg_swapcache = number_u32(info, "PG_swapcache")?.unwrap_or(15);
        let pg_swapbacked = match number_u32(info, "PG_swapbacked")? {
            Some(bit) => Some(bit),
            None if pg_swapcache < pg_private => Some(pg_private + 6),
            None => None,
        };
        // Kernels from 6.10 publish no PG_slab; makedumpfile then tests bit 7 (PG_waiters on
        // those kernels) as well as the slab page type. Doing the same keeps a few more pages
        // than strictly needed and never drops one makedumpfile would keep.
        let pg_slab = number_u32(info, "PG_slab")?.unwrap_or(7);
        let pg_head_mask = info
            .number("PG_head_mask")?
            .map_or(1 << 14, i64::cast_unsigned);

        let compound = if let Some(value) = number_i32(info, "PAGE_HUGETLB_MAPCOUNT_VALUE")? {
            CompoundScheme::HugetlbPageType(value)
        } else if let Some(bit) = number_u32(info, "PG_hugetlb")? {
            CompoundScheme::HugetlbFlag(bit)
        } else {
            let tail_field = |folio: &str, page: &str, lru_member: &str| {
                Ok::<_, LayoutError>(match offset(info, folio)? {
                    Some(o) => o.checked_sub(size),
                    None => match offset(info, page)? {
                        Some(o) => Some(o),
                        None if version < (4, 4, 0) => {
                            let lru = offset(info, "page.lru")?.unwrap_or(0);
                            Some(lru + offset(info, lru_member)?.unwrap_or(0))
                        }
                        None => None,
                    },
                })
            };
            let modern = version >= (4, 16, 0);
            CompoundScheme::TailFields {
                order: tail_field(
                    "folio._folio_order",
                    "page.compound_order",
                    "list_head.prev",
                )?
                .filter(|&o| o != 0),
                order_width: if modern { 1 } else { 2 },
                dtor: tail_field("folio._folio_dtor", "page.compound_dtor", "list_head.next")?
                    .filter(|&o| o != 0),
                dtor_width: if modern {
                    1
                } else if version >= (4, 4, 0) {
                    2
                } else {
                    8
                },
            }
        };

        let layout = Self {
            size,
            flags,
            mapping,
            mapcount: offset(info, "page._mapcount")?,
            private: offset(info, "page.private")?,
            compound_head,
            pg_lru: number_u32(info, "PG_lru")?.unwrap_or(5),
            pg_private,
            pg_swapcache,
            pg_swapbacked,
            pg_slab,
            pg_head_mask,
            pg_hwpoison: number_u32(info, "PG_hwpoison")?,
            pg_buddy: number_u32(info, "PG_buddy")?,
            buddy_value: number_i32(info, "PAGE_BUDDY_MAPCOUNT_VALUE")?,
            slab_value: number_i32(info, "PAGE_SLAB_MAPCOUNT_VALUE")?,
            offline_value: number_i32(info, "PAGE_OFFLINE_MAPCOUNT_VALUE")?,
            unaccepted_value: number_i32(info, "PAGE_UNACCEPTED_MAPCOUNT_VALUE")?,
            hugetlb_dtor: info.number("HUGETLB_PAGE_DTOR")?.map(i64::cast_unsigned),
            free_huge_page: info.symbol("free_huge_page")?,
            free_area_orders: info.length("zone.free_area")?,
            compound,
        };
        layout.validate()?;
        Ok(layout)
    }

    fn validate(&self) -> Result<(), LayoutError> {
        if !(32..=256).contains(&self.size) {
            return Err(LayoutError::Inconsistent(format!(
                "SIZE(page)={} is implausible",
                self.size
            )));
        }
        let fields = [
            Some(self.flags),
            Some(self.mapping),
            self.mapcount,
            self.private,
            self.compound_head,
        ];
        let widths = [8, 8, 4, 8, 8];
        for (field, width) in fields.iter().zip(widths) {
            if let Some(at) = field
                && at + width > self.size
            {
                return Err(LayoutError::Inconsistent(format!(
                    "a field at offset {at} does not fit in a {}-byte struct page",
                    self.size
                )));
            }
        }
        if let CompoundScheme::TailFields {
            order,
            order_width,
            dtor,
            dtor_width,
        } = self.compound
        {
            for (field, width) in [(order, order_width), (dtor, dtor_width)] {
                if field.is_some_and(|at| at + width > self.size) {
                    return Err(LayoutError::Inconsistent(
                        "compound fields beyond struct page".into(),
                    ));
                }
            }
        }
        for bit in [
            self.pg_lru,
            self.pg_private,
            self.pg_swapcache,
            self.pg_slab,
        ] {
            if bit >= 64 {
                return Err(LayoutError::Inconsistent(format!(
                    "page flag bit {bit} is out of range"
                )));
            }
        }
        Ok(())
    }

    /// Whether free (buddy) pages can be recognised from `struct page` alone (makedumpfile's
    /// `page_is_buddy` handler exists).
    pub fn can_find_free_pages(&self) -> bool {
        self.private.is_some()
            && match self.buddy_value {
                Some(_) => self.mapcount.is_some(),
                None => self.pg_buddy.is_some(),
            }
    }

    /// Whether the walk over `mem_map` is needed at all for `level` (makedumpfile runs it when
    /// a cache, user or free filter is asked for, or always when the kernel has hwpoison).
    pub fn walk_needed(&self, level: DumpLevel) -> bool {
        level.contains(DumpLevel::CACHE)
            || level.contains(DumpLevel::CACHE_PRIVATE)
            || level.contains(DumpLevel::USER)
            || self.pg_hwpoison.is_some()
            || (level.contains(DumpLevel::FREE) && self.can_find_free_pages())
    }

    /// Classifies the page frame `pfn` described by `page` (`SIZE(page)` bytes), with `next`
    /// the following `struct page` when it is in the same read batch.
    pub fn classify(
        &self,
        level: DumpLevel,
        pfn: u64,
        page: &[u8],
        next: Option<&[u8]>,
    ) -> Verdict {
        let word = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"));
        let flags = word(self.flags);
        let mapping = word(self.mapping);
        let mapcount = self.mapcount.map_or(0, |at| {
            i32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes"))
        });
        let private = self.private.map_or(0, word);
        let compound_head = self.compound_head.map_or(0, word);

        let test = |bit: u32| (flags >> (bit & 31)) & 1 != 0;
        let is_slab =
            self.slab_value == Some(mapcount) || (self.pg_slab < 32 && test(self.pg_slab));
        let is_anon = mapping & 1 != 0 && !is_slab;
        let is_cache =
            test(self.pg_lru) || (self.pg_swapbacked.is_none_or(test) && test(self.pg_swapcache));
        let is_private = test(self.pg_private);

        let (order, dtor) = match next {
            Some(tail)
                if flags & self.pg_head_mask != 0
                    && !(pfn + 1).is_multiple_of(STRUCT_PAGE_BATCH) =>
            {
                self.compound_order(mapcount, tail)
            }
            _ => (0, 0),
        };
        let hugetlb = dtor == IS_HUGETLB
            || self.hugetlb_dtor == Some(dtor)
            || self.free_huge_page == Some(dtor);
        let order = if order >= 64 || pfn & ((1u64 << order) - 1) != 0 {
            0
        } else {
            order
        };
        let compound_pages = 1u64 << order;

        if compound_head & 1 != 0 {
            return Verdict::Keep;
        }
        let free_level = level.contains(DumpLevel::FREE);
        if free_level && self.is_buddy(flags, mapcount, is_slab) {
            if private >= 64 || self.free_area_orders.is_some_and(|max| private >= max) {
                return Verdict::BadFreeOrder(private);
            }
            return exclude(Category::Free, 1 << private);
        }
        if free_level && self.unaccepted_value.is_some_and(|v| v == mapcount) {
            let orders = self.free_area_orders.unwrap_or(11);
            return exclude(Category::Free, 1 << orders.saturating_sub(1).min(63));
        }
        if level.contains(DumpLevel::CACHE) && is_cache && !is_private && !is_anon {
            return exclude(Category::Cache, compound_pages);
        }
        if level.contains(DumpLevel::CACHE_PRIVATE) && is_cache && !is_anon {
            let category = if is_private {
                Category::CachePrivate
            } else {
                Category::Cache
            };
            return exclude(category, compound_pages);
        }
        if level.contains(DumpLevel::USER) && (is_anon || hugetlb) {
            return exclude(Category::User, compound_pages);
        }
        if self.pg_hwpoison.is_some_and(test) {
            return exclude(Category::Hwpoison, compound_pages);
        }
        if !is_slab && self.offline_value.is_some_and(|v| v == mapcount) {
            return exclude(Category::Offline, compound_pages);
        }
        Verdict::Keep
    }

    fn is_buddy(&self, flags: u64, mapcount: i32, is_slab: bool) -> bool {
        if self.private.is_none() {
            return false;
        }
        match (self.buddy_value, self.mapcount, self.pg_buddy) {
            (Some(value), Some(_), _) => !is_slab && mapcount == value,
            (None, _, Some(bit)) => bit < 64 && flags & (1 << bit) != 0,
            _ => false,
        }
    }

    /// The order and destructor of a compound head, from its first tail page.
    fn compound_order(&self, head_mapcount: i32, tail: &[u8]) -> (u64, u64) {
        let read = |at: usize, width: usize| {
            let mut raw = [0u8; 8];
            raw[..width].copy_from_slice(&tail[at..at + width]);
            u64::from_le_bytes(raw)
        };
        match self.compound {
            CompoundScheme::HugetlbPageType(value) => {
                let dtor = if head_mapcount == value {
                    IS_HUGETLB
                } else {
                    0
                };
                (read(self.flags, 8) & 0xff, dtor)
            }
            CompoundScheme::HugetlbFlag(bit) => {
                let tail_flags = read(self.flags, 8);
                let hugetlb = bit < 64 && tail_flags & (1 << bit) != 0;
                (tail_flags & 0xff, if hugetlb { IS_HUGETLB } else { 0 })
            }
            CompoundScheme::TailFields {
                order,
                order_width,
                dtor,
                dtor_width,
            } => (
                order.map_or(0, |at| read(at, order_width)),
                dtor.map_or(0, |at| read(at, dtor_width)),
            ),
        }
    }
}

fn exclude(category: Category, pages: u64) -> Verdict {
    Verdict::Exclude { category, pages }
}

#[cfg(test)]
mod tests {
    use rkdump_testkit::{Builder, Generation, Kind};

    use super::*;
    use crate::filter::{Counts, Filter, cycles};
    use crate::vmcore::testing::built;

    fn layout_of(builder: &Builder) -> PageLayout {
        let (_, vmcore) = built(builder);
        PageLayout::from_vmcoreinfo(vmcore.info()).unwrap()
    }

    /// Each generation's VMCOREINFO selects its way of finding compound orders and hugetlb:
    /// tail-page fields (order at 17, destructor at 16, one byte each, from 4.16) before 6.6,
    /// the `PG_hugetlb` flag of the first tail page in 6.6, the page type in 6.12.
    #[test]
    fn each_generation_selects_its_compound_scheme() {
        assert_eq!(
            layout_of(&Builder::new(Generation::V6_1)).compound,
            CompoundScheme::TailFields {
                order: Some(17),
                order_width: 1,
                dtor: Some(16),
                dtor_width: 1,
            }
        );
        assert_eq!(
            layout_of(&Builder::new(Generation::V6_6)).compound,
            CompoundScheme::HugetlbFlag(8)
        );
        assert_eq!(
            layout_of(&Builder::new(Generation::V6_12)).compound,
            CompoundScheme::HugetlbPageType(0xf400_0000_u32.cast_signed())
        );
        for generation in [Generation::V6_1, Generation::V6_6, Generation::V6_12] {
            let layout = layout_of(&Builder::new(generation));
            assert_eq!(layout.size, 64);
            assert!(layout.can_find_free_pages(), "{generation:?}");
        }
    }

    /// Without `NUMBER(HUGETLB_PAGE_DTOR)` a 6.1 kernel's hugetlb page is no longer user
    /// memory: it is kept whole, while the anonymous compound page is still excluded.
    #[test]
    fn without_the_hugetlb_destructor_hugetlb_pages_are_kept() {
        let mut builder = Builder::new(Generation::V6_1);
        builder.kinds = vec![
            (2560..3072, Kind::Hugetlb { order: 9 }),
            (3072..3080, Kind::CompoundAnon { order: 3 }),
        ];
        builder.omit_vmcoreinfo = vec!["NUMBER(HUGETLB_PAGE_DTOR)".to_owned()];
        let (_, vmcore) = built(&builder);
        let mut filter = Filter::new(&vmcore, DumpLevel::USER);
        let mut counts = Counts::default();
        for cycle in cycles(filter.max_mapnr(), 1 << 20) {
            let (_, second) = filter.cycle(cycle, &mut counts).unwrap();
            assert!((2560..3072).all(|p| second.get(p)));
            assert!((3072..3080).all(|p| !second.get(p)));
        }
        assert_eq!(counts.user, 8);
    }

    /// The walk over `mem_map` runs for levels with a cache, user or free bit, or whenever
    /// the kernel has `PG_hwpoison`; without it, levels 0 and 1 leave hwpoison and offline
    /// pages in the dump (nothing reads their struct pages).
    #[test]
    fn the_walk_runs_only_when_some_level_bit_or_hwpoison_needs_it() {
        let mut builder = Builder::new(Generation::V6_12).with_every_kind();
        assert!(layout_of(&builder).walk_needed(DumpLevel::default()));
        builder.omit_vmcoreinfo = vec!["NUMBER(PG_hwpoison)".to_owned()];
        let layout = layout_of(&builder);
        assert!(!layout.walk_needed(DumpLevel::ZERO));
        for bits in [2, 4, 8, 16] {
            assert!(layout.walk_needed(DumpLevel::new(bits).unwrap()), "{bits}");
        }
        let (_, vmcore) = built(&builder);
        for (bits, offline) in [(1, 0), (16, 5)] {
            let mut filter = Filter::new(&vmcore, DumpLevel::new(bits).unwrap());
            let mut counts = Counts::default();
            for cycle in cycles(filter.max_mapnr(), 1 << 20) {
                filter.cycle(cycle, &mut counts).unwrap();
            }
            assert_eq!((counts.hwpoison, counts.offline), (0, offline), "-d {bits}");
        }
    }
}
