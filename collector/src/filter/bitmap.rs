//! Page-frame bitmaps covering one cycle (a window of page frames).
//!
//! Bit order is makedumpfile's: the bit for pfn `p` is bit `(p - start) & 7` of byte
//! `(p - start) >> 3`, so a cycle's bytes can be written into a kdump file's bitmap as they are,
//! provided cycles start at multiples of 8.

use std::ops::Range;

use crate::format::bytes::to_usize;

/// One bit per page frame of `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    start: u64,
    end: u64,
    bytes: Vec<u8>,
}

impl Bitmap {
    /// An all-clear bitmap for `pfns`.
    pub fn new(pfns: Range<u64>) -> Self {
        let len = to_usize((pfns.end - pfns.start).div_ceil(8));
        Self {
            start: pfns.start,
            end: pfns.end,
            bytes: vec![0; len],
        }
    }

    /// The page frames covered.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether `pfn` is covered.
    pub fn covers(&self, pfn: u64) -> bool {
        self.start <= pfn && pfn < self.end
    }

    /// Whether `pfn`'s bit is set (false outside the range).
    pub fn get(&self, pfn: u64) -> bool {
        self.covers(pfn) && {
            let i = pfn - self.start;
            self.bytes[(i >> 3) as usize] & (1 << (i & 7)) != 0
        }
    }

    /// Sets `pfn`'s bit; pfns outside the range are ignored.
    pub fn set(&mut self, pfn: u64) {
        if self.covers(pfn) {
            let i = pfn - self.start;
            self.bytes[(i >> 3) as usize] |= 1 << (i & 7);
        }
    }

    /// Clears `pfn`'s bit; pfns outside the range are ignored.
    pub fn clear(&mut self, pfn: u64) {
        if self.covers(pfn) {
            let i = pfn - self.start;
            self.bytes[(i >> 3) as usize] &= !(1 << (i & 7));
        }
    }

    /// Sets every bit of `pfns` (clipped to the range).
    pub fn set_range(&mut self, pfns: Range<u64>) {
        self.fill_range(pfns, true);
    }

    /// Clears every bit of `pfns` (clipped to the range).
    pub fn clear_range(&mut self, pfns: Range<u64>) {
        self.fill_range(pfns, false);
    }

    /// Sets or clears `pfns` (clipped to the range): bit by bit up to a byte boundary, then
    /// whole bytes.
    fn fill_range(&mut self, pfns: Range<u64>, value: bool) {
        let mut pfn = pfns.start.max(self.start);
        let end = pfns.end.min(self.end);
        let put = |bitmap: &mut Self, pfn: u64| {
            if value {
                bitmap.set(pfn);
            } else {
                bitmap.clear(pfn);
            }
        };
        while pfn < end && !(pfn - self.start).is_multiple_of(8) {
            put(self, pfn);
            pfn += 1;
        }
        let whole = (end.saturating_sub(pfn)) / 8;
        if whole > 0 {
            let first = ((pfn - self.start) / 8) as usize;
            self.bytes[first..first + whole as usize].fill(if value { 0xff } else { 0 });
            pfn += whole * 8;
        }
        while pfn < end {
            put(self, pfn);
            pfn += 1;
        }
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.bytes.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// The set bits in `pfns`, in increasing order.
    pub fn iter_set(&self, pfns: Range<u64>) -> impl Iterator<Item = u64> + '_ {
        let lo = pfns.start.clamp(self.start, self.end);
        let hi = pfns.end.clamp(lo, self.end);
        let first = ((lo - self.start) / 8) as usize;
        let last = to_usize((hi - self.start).div_ceil(8));
        // Whole zero bytes are skipped without looking at their bits.
        self.bytes[first..last]
            .iter()
            .enumerate()
            .filter(|(_, byte)| **byte != 0)
            .flat_map(move |(i, &byte)| {
                let base = self.start + (first + i) as u64 * 8;
                (0..8u64)
                    .filter(move |bit| byte & (1 << bit) != 0)
                    .map(move |bit| base + bit)
            })
            .filter(move |pfn| (lo..hi).contains(pfn))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bit_order_is_lsb_first_from_the_range_start() {
        let mut map = Bitmap::new(8..40);
        map.set(8);
        map.set(17);
        map.set(100);
        assert_eq!(map.bytes(), &[0b0000_0001, 0b0000_0010, 0, 0]);
        assert!(map.get(17) && !map.get(16) && !map.get(100));
        map.set_range(30..50);
        assert_eq!(map.count(), 2 + 10);
        map.clear_range(0..32);
        assert_eq!(
            map.iter_set(0..100).collect::<Vec<_>>(),
            [32, 33, 34, 35, 36, 37, 38, 39]
        );
    }

    proptest! {
        /// Single bits and ranges against a set model; iteration over any window.
        #[test]
        fn matches_a_set_of_pfns(
            start in 0u64..64,
            len in 0u64..300,
            ops in proptest::collection::vec((0u8..4, 0u64..800, 0u64..100), 0..100),
            window in (0u64..900, 0u64..900),
        ) {
            let start = start * 8;
            let mut map = Bitmap::new(start..start + len);
            let mut model = std::collections::BTreeSet::new();
            for (kind, pfn, span) in ops {
                let pfns = match kind {
                    0 | 1 => pfn..pfn + 1,
                    _ => pfn..pfn + span,
                };
                match kind {
                    0 => map.set(pfn),
                    1 => map.clear(pfn),
                    2 => map.set_range(pfns.clone()),
                    _ => map.clear_range(pfns.clone()),
                }
                for pfn in pfns.filter(|&p| map.covers(p)) {
                    if kind % 2 == 0 { model.insert(pfn); } else { model.remove(&pfn); }
                }
            }
            prop_assert_eq!(map.count(), model.len() as u64);
            prop_assert_eq!(map.iter_set(0..1000).collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            let (a, b) = window;
            prop_assert_eq!(
                map.iter_set(a..b).collect::<Vec<_>>(),
                model.range(a..b.max(a)).copied().collect::<Vec<_>>()
            );
        }
    }
}
