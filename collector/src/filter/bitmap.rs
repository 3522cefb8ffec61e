//! Page-frame bitmaps covering one cycle (a window of page frames).
//!
//! Bit order is makedumpfile's: the bit for pfn `p` is bit `(p - start) & 7` of byte
//! `(p - start) >> 3`, so a cycle's bytes can be written into a kdump file's bitmap as they are,
//! provided cycles start at multiples of 8.

use std::ops::Range;

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
        let len = (pfns.end - pfns.start).div_ceil(8) as usize;
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
        for pfn in pfns.start.max(self.start)..pfns.end.min(self.end) {
            self.set(pfn);
        }
    }

    /// Clears every bit of `pfns` (clipped to the range).
    pub fn clear_range(&mut self, pfns: Range<u64>) {
        for pfn in pfns.start.max(self.start)..pfns.end.min(self.end) {
            self.clear(pfn);
        }
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.bytes.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// The set bits in `pfns`, in increasing order.
    pub fn iter_set(&self, pfns: Range<u64>) -> impl Iterator<Item = u64> + '_ {
        let lo = pfns.start.max(self.start);
        let hi = pfns.end.min(self.end);
        (lo..hi).filter(move |&pfn| self.get(pfn))
    }

    /// Bitwise AND with `other` (same range).
    pub fn intersect(&mut self, other: &Bitmap) {
        debug_assert_eq!(self.range(), other.range());
        for (a, b) in self.bytes.iter_mut().zip(&other.bytes) {
            *a &= b;
        }
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
        #[test]
        fn matches_a_set_of_pfns(start in 0u64..64, len in 0u64..300, ops in proptest::collection::vec((any::<bool>(), 0u64..400), 0..100)) {
            let start = start * 8;
            let mut map = Bitmap::new(start..start + len);
            let mut model = std::collections::BTreeSet::new();
            for (set, pfn) in ops {
                if set { map.set(pfn) } else { map.clear(pfn) }
                if map.covers(pfn) {
                    if set { model.insert(pfn); } else { model.remove(&pfn); }
                }
            }
            prop_assert_eq!(map.count(), model.len() as u64);
            prop_assert_eq!(map.iter_set(0..1000).collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
        }
    }
}
