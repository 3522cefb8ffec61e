//! LZO1X-1 compression: the page codec of makedumpfile's `-l` (kdump flag `0x2`).
//!
//! makedumpfile compresses each page with liblzo2's `lzo1x_1_compress`, and every reader
//! (crash, libkdumpfile, makedumpfile itself) decodes it with `lzo1x_decompress_safe`. This is
//! an encoder of the same LZO1X bitstream (version 0, without the kernel's RLE extension),
//! written for the one job rkdump has: one page in, one independent block out.
//!
//! The stream is a sequence of literal runs and back-references. A back-reference's form
//! depends on its distance and length:
//!
//! | form | distance       | length | bytes                                          |
//! |------|----------------|--------|------------------------------------------------|
//! | M2   | 1..=2048       | 3..=8  | `LLLDDDSS HHHHHHHH`                            |
//! | M3   | 1..=16384      | 3..    | `001LLLLL` [length bytes] `DDDDDDSS DDDDDDDD`  |
//! | M4   | 16385..=49151  | 3..    | `0001HLLL` [length bytes] `DDDDDDSS DDDDDDDD`  |
//!
//! `SS` carries the number (1 to 3) of literals that follow a back-reference; longer literal
//! runs get their own instruction (`0000LLLL`, or `17 + n` as the very first byte). A length
//! that does not fit its bits is a zero field followed by zero bytes (255 each) and a final
//! non-zero byte. The stream ends with the M4 instruction of distance 16384: `17 0 0`.
//!
//! Matches are found as LZO1X-1 finds them: a hash table of the last position of each 4-byte
//! sequence (2^14 entries), one candidate per position, and a search that skips faster over
//! input that does not match. Nothing here does I/O.

/// Entries in the hash table of 4-byte sequences (liblzo2's `D_BITS` for LZO1X-1).
const DICT_BITS: u32 = 14;
/// Longest distance of an M2 reference.
const M2_MAX_OFFSET: usize = 0x0800;
/// Longest distance of an M3 reference.
const M3_MAX_OFFSET: usize = 0x4000;
/// Longest distance of an M4 reference.
const M4_MAX_OFFSET: usize = 0xbfff;
/// Longest length of an M2 reference.
const M2_MAX_LEN: usize = 8;
/// Longest length an M3 instruction holds in its own bits.
const M3_MAX_LEN: usize = 33;
/// Longest length an M4 instruction holds in its own bits.
const M4_MAX_LEN: usize = 9;
/// Instruction bits of M3 and M4.
const M3_MARKER: u8 = 0x20;
const M4_MARKER: u8 = 0x10;
/// Input bytes at the end that are always stored as literals (no match reaches them).
const TAIL: usize = 20;

/// The largest output [`Compressor::compress`] can produce for `len` input bytes (liblzo2's bound:
/// incompressible input grows by 1/16 plus a few bytes).
pub const fn max_compressed_len(len: usize) -> usize {
    len + len / 16 + 64 + 3
}

/// A reusable LZO1X-1 encoder (its hash table is the `wrkmem` of liblzo2).
pub struct Compressor {
    dict: Vec<u16>,
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor").finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor with an empty table.
    pub fn new() -> Self {
        Self {
            dict: vec![0; 1 << DICT_BITS],
        }
    }

    /// Compresses `input` (at most 64 KiB: positions are kept in 16 bits) into one LZO1X
    /// block appended to `out`, and returns the block's length.
    ///
    /// # Panics
    /// If `input` is longer than 65535 bytes.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        assert!(
            input.len() <= usize::from(u16::MAX),
            "LZO1X input over 64 KiB"
        );
        let start = out.len();
        out.reserve(max_compressed_len(input.len()));
        self.dict.fill(0);
        let mut literal_start = 0;
        if input.len() > TAIL {
            literal_start = self.matches(input, out, start);
        }
        emit_literals(out, start, &input[literal_start..], true);
        out.extend_from_slice(&[M4_MARKER | 1, 0, 0]);
        out.len() - start
    }

    /// Encodes the matches of `input`, with the literals between them; returns where the
    /// literals not yet written begin.
    fn matches(&mut self, input: &[u8], out: &mut Vec<u8>, start: usize) -> usize {
        let limit = input.len() - TAIL;
        // The first bytes are always literals: there is nothing before them to refer to.
        let mut literal_start = 0;
        let mut ip = 4;
        while ip < limit {
            let sequence = read_u32(input, ip);
            let slot = hash(sequence);
            let candidate = usize::from(self.dict[slot]);
            self.dict[slot] = u16::try_from(ip).expect("input is under 64 KiB");
            let distance = ip - candidate;
            if distance > M4_MAX_OFFSET || read_u32(input, candidate) != sequence {
                // No match: step further the longer the run of literals gets.
                ip += 1 + ((ip - literal_start) >> 5);
                continue;
            }
            emit_literals(out, start, &input[literal_start..ip], false);
            let length = match_length(input, candidate, ip, limit);
            emit_match(out, distance, length);
            ip += length;
            literal_start = ip;
        }
        literal_start
    }
}

/// How far the match of 4 bytes at `ip` with `candidate` goes on, compared 8 bytes at a time
/// as LZO1X-1 compares them: the comparison stops once it has passed `limit`, so a match may
/// end up to 7 bytes into the literal tail (which keeps 20 bytes of room for the reads).
fn match_length(input: &[u8], candidate: usize, ip: usize, limit: usize) -> usize {
    let differ = |length: usize| read_u64(input, ip + length) ^ read_u64(input, candidate + length);
    let mut length = 4;
    let mut difference = differ(length);
    while difference == 0 {
        length += 8;
        if ip + length >= limit {
            return length;
        }
        difference = differ(length);
    }
    length + (difference.trailing_zeros() / 8) as usize
}

fn read_u64(input: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(input[at..at + 8].try_into().expect("8 bytes"))
}

fn read_u32(input: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(input[at..at + 4].try_into().expect("4 bytes"))
}

/// The table slot of a 4-byte sequence (a multiplicative hash).
fn hash(sequence: u32) -> usize {
    (sequence.wrapping_mul(0x1824_429d) >> (32 - DICT_BITS)) as usize
}

/// Appends `count`'s extension bytes for a length field that overflowed: zero bytes of 255
/// each, then the remainder (never zero).
fn emit_length(out: &mut Vec<u8>, mut count: usize) {
    while count > 255 {
        count -= 255;
        out.push(0);
    }
    out.push(u8::try_from(count).expect("at most 255"));
}

/// Appends a run of literals. Up to three literals after a back-reference ride in its `SS`
/// bits; `ends_stream` allows the `17 + n` form for a stream that is only literals.
fn emit_literals(out: &mut Vec<u8>, start: usize, literals: &[u8], ends_stream: bool) {
    let count = literals.len();
    if count == 0 {
        return;
    }
    let at_start = out.len() == start;
    if at_start && ends_stream && count <= 238 {
        out.push(u8::try_from(17 + count).expect("at most 255"));
    } else if !at_start && count <= 3 {
        let at = out.len() - 2;
        out[at] |= u8::try_from(count).expect("at most 3");
    } else if count <= 18 {
        out.push(u8::try_from(count - 3).expect("at most 15"));
    } else {
        out.push(0);
        emit_length(out, count - 18);
    }
    out.extend_from_slice(literals);
}

/// Appends a back-reference of `length` (at least 4) bytes at `distance` (1 to 49151).
fn emit_match(out: &mut Vec<u8>, distance: usize, length: usize) {
    if length <= M2_MAX_LEN && distance <= M2_MAX_OFFSET {
        let offset = distance - 1;
        out.push(u8::try_from(((length - 1) << 5) | ((offset & 7) << 2)).expect("one byte"));
        out.push(u8::try_from(offset >> 3).expect("at most 255"));
        return;
    }
    let offset = if distance <= M3_MAX_OFFSET {
        if length <= M3_MAX_LEN {
            out.push(M3_MARKER | u8::try_from(length - 2).expect("at most 31"));
        } else {
            out.push(M3_MARKER);
            emit_length(out, length - M3_MAX_LEN);
        }
        distance - 1
    } else {
        let offset = distance - M3_MAX_OFFSET;
        let high = u8::try_from((offset >> 11) & 8).expect("one bit");
        if length <= M4_MAX_LEN {
            out.push(M4_MARKER | high | u8::try_from(length - 2).expect("at most 7"));
        } else {
            out.push(M4_MARKER | high);
            emit_length(out, length - M4_MAX_LEN);
        }
        offset
    };
    out.push(u8::try_from((offset << 2) & 0xff).expect("one byte"));
    out.push(u8::try_from((offset >> 6) & 0xff).expect("one byte"));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A decoder written from the stream description (Linux's Documentation/staging/lzo.rst),
    /// strict about every bound: the encoder's output must decode with it exactly.
    pub(crate) fn decode(input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut i = 0;
        let byte = |i: &mut usize| -> Result<usize, String> {
            let b = *input.get(*i).ok_or(format!("input ends at {i}"))?;
            *i += 1;
            Ok(usize::from(b))
        };
        let length = |i: &mut usize, field: usize, bits: usize| -> Result<usize, String> {
            if field != 0 {
                return Ok(field);
            }
            let mut total = (1 << bits) - 1;
            loop {
                let b = byte(i)?;
                if b != 0 {
                    return Ok(total + b);
                }
                total += 255;
            }
        };
        let copy = |out: &mut Vec<u8>, distance: usize, n: usize| -> Result<(), String> {
            if distance == 0 || distance > out.len() {
                return Err(format!("distance {distance} beyond {} bytes", out.len()));
            }
            for _ in 0..n {
                out.push(out[out.len() - distance]);
            }
            Ok(())
        };
        let mut state;
        let first = byte(&mut i)?;
        if first > 17 {
            let n = first - 17;
            out.extend_from_slice(input.get(i..i + n).ok_or("literals past the end")?);
            i += n;
            state = if n < 4 { n } else { 4 };
        } else {
            i = 0;
            state = 0;
        }
        loop {
            let op = byte(&mut i)?;
            let trailing;
            if op < 16 {
                if state == 0 {
                    let n = 3 + length(&mut i, op, 4)?;
                    out.extend_from_slice(input.get(i..i + n).ok_or("literals past the end")?);
                    i += n;
                    state = 4;
                    continue;
                }
                let h = byte(&mut i)?;
                if state == 4 {
                    copy(&mut out, (h << 2) + ((op >> 2) & 3) + 2049, 3)?;
                } else {
                    copy(&mut out, (h << 2) + ((op >> 2) & 3) + 1, 2)?;
                }
                trailing = op & 3;
            } else if op < 32 {
                let n = 2 + length(&mut i, op & 7, 3)?;
                let low = byte(&mut i)?;
                let high = byte(&mut i)?;
                let distance = 16384 + ((op & 8) << 11) + (((high << 8) | low) >> 2);
                if distance == 16384 {
                    return if i == input.len() {
                        Ok(out)
                    } else {
                        Err(format!("{} bytes after the end", input.len() - i))
                    };
                }
                copy(&mut out, distance, n)?;
                trailing = low & 3;
            } else if op < 64 {
                let n = 2 + length(&mut i, op & 31, 5)?;
                let low = byte(&mut i)?;
                let high = byte(&mut i)?;
                copy(&mut out, (((high << 8) | low) >> 2) + 1, n)?;
                trailing = low & 3;
            } else {
                let n = if op < 128 {
                    3 + ((op >> 5) & 1)
                } else {
                    5 + ((op >> 5) & 3)
                };
                let h = byte(&mut i)?;
                copy(&mut out, (h << 3) + ((op >> 2) & 7) + 1, n)?;
                trailing = op & 3;
            }
            out.extend_from_slice(input.get(i..i + trailing).ok_or("literals past the end")?);
            i += trailing;
            state = trailing;
        }
    }

    fn round_trip(input: &[u8]) -> usize {
        let mut out = vec![0xaa];
        let n = Compressor::new().compress(input, &mut out);
        assert_eq!(out.len(), n + 1, "appended after what was there");
        assert!(n <= max_compressed_len(input.len()));
        assert_eq!(decode(&out[1..]).as_deref(), Ok(input));
        n
    }

    #[test]
    fn a_zero_page_shrinks_to_a_few_bytes() {
        assert!(round_trip(&[0; 4096]) < 64);
    }

    #[test]
    fn short_and_empty_inputs_are_literals() {
        assert_eq!(round_trip(&[]), 3);
        for len in 1..40 {
            round_trip(&vec![7; len]);
        }
    }

    #[test]
    fn text_and_long_matches_and_far_distances() {
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog; "
            .iter()
            .cycle()
            .take(4096)
            .copied()
            .collect();
        assert!(round_trip(&text) < 200);
        // A block repeated at a distance beyond M3's reach (M4, where the table still holds it).
        let mut far: Vec<u8> = (0..20_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
            .collect();
        far.extend_from_within(0..300);
        round_trip(&far);
    }

    proptest! {
        #[test]
        fn every_input_decodes_to_itself(
            data in prop::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..6000),
        ) {
            round_trip(&data);
        }
    }
}
