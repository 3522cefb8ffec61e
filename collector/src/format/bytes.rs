//! Bounds-checked field access for untrusted byte buffers.

/// A field lay outside the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len}-byte field at offset {offset} is beyond the end of a {available}-byte buffer")]
pub struct OutOfBounds {
    /// Offset of the field.
    pub offset: usize,
    /// Size of the field.
    pub len: usize,
    /// Size of the buffer.
    pub available: usize,
}

/// Returns `bytes[offset..offset + len]`, or where it fell outside.
pub fn slice(bytes: &[u8], offset: usize, len: usize) -> Result<&[u8], OutOfBounds> {
    offset
        .checked_add(len)
        .and_then(|end| bytes.get(offset..end))
        .ok_or(OutOfBounds {
            offset,
            len,
            available: bytes.len(),
        })
}

fn array<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], OutOfBounds> {
    let field = slice(bytes, offset, N)?;
    Ok(field.try_into().expect("slice() returned exactly N bytes"))
}

/// Reads a little-endian `u16` at `offset`.
pub fn u16_le(bytes: &[u8], offset: usize) -> Result<u16, OutOfBounds> {
    array(bytes, offset).map(u16::from_le_bytes)
}

/// Reads a little-endian `u32` at `offset`.
pub fn u32_le(bytes: &[u8], offset: usize) -> Result<u32, OutOfBounds> {
    array(bytes, offset).map(u32::from_le_bytes)
}

/// Reads a little-endian `u64` at `offset`.
pub fn u64_le(bytes: &[u8], offset: usize) -> Result<u64, OutOfBounds> {
    array(bytes, offset).map(u64::from_le_bytes)
}

/// Reads a big-endian `u32` at `offset`.
pub fn u32_be(bytes: &[u8], offset: usize) -> Result<u32, OutOfBounds> {
    array(bytes, offset).map(u32::from_be_bytes)
}

/// Reads a big-endian `i64` at `offset`.
pub fn i64_be(bytes: &[u8], offset: usize) -> Result<i64, OutOfBounds> {
    array(bytes, offset).map(i64::from_be_bytes)
}

// rkdump only targets 64-bit Linux: a `u64` (an offset or a length in a vmcore, a dump file or
// the dead kernel's memory) always fits in a `usize`, which `to_usize` relies on.
const _: () = assert!(usize::BITS >= 64, "rkdump needs a 64-bit target");

/// Widens `value` to a `usize`, losslessly: rkdump is only built for 64-bit targets (checked at
/// compile time above). Use it for offsets and lengths into buffers and mappings; whether such a
/// value is in range of the buffer is still the caller's to check.
#[must_use]
pub const fn to_usize(value: u64) -> usize {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "usize is at least 64 bits wide (asserted at compile time)"
    )]
    let widened = value as usize;
    widened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_fields() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_le(&bytes, 1), Ok(0x0302));
        assert_eq!(u32_le(&bytes, 0), Ok(0x0403_0201));
        assert_eq!(u64_le(&bytes, 1), Ok(0x0908_0706_0504_0302));
        assert_eq!(i64_be(&bytes, 0), Ok(0x0102_0304_0506_0708));
    }

    #[test]
    fn reports_fields_past_the_end_and_offset_overflow() {
        let bytes = [0u8; 4];
        assert_eq!(
            u32_le(&bytes, 1),
            Err(OutOfBounds {
                offset: 1,
                len: 4,
                available: 4
            })
        );
        assert!(slice(&bytes, usize::MAX, 2).is_err());
    }

    #[test]
    fn widens_u64_losslessly() {
        assert_eq!(to_usize(0), 0);
        assert_eq!(to_usize(u64::MAX), usize::MAX);
    }
}
