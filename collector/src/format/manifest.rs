//! The manifest that travels with a dump sent to another machine: for every file of the dump
//! directory, its size and the CRC-32 of each fixed-size chunk of its contents.
//!
//! It is JSON (`rkdump-manifest.json`), written last, so that a receiver or `rkdump verify` can
//! tell a dump that arrived intact from one damaged in transit or on disk, and say which chunk
//! differs. [`ContentCrcs`] computes the chunk checksums of a file from the positioned writes
//! that produce it, in whatever order they come, without keeping the data.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::bytes::to_usize;

/// File name of the manifest inside a dump directory.
pub const MANIFEST_NAME: &str = "rkdump-manifest.json";
/// Chunk size of the checksums rkdump writes.
pub const DEFAULT_CHUNK_SIZE: u64 = 1 << 20;
/// Largest manifest accepted (a 64 TiB dump in 1 MiB chunks takes about 700 MiB of JSON; larger
/// dumps use larger chunks).
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// Manifest format version.
const VERSION: u32 = 1;

/// Why a manifest cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest of {0} bytes is larger than the {MAX_MANIFEST_BYTES} accepted")]
    TooLarge(usize),
    /// Not valid JSON of the expected shape.
    #[error("manifest is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// Valid JSON with impossible values.
    #[error("manifest is not valid: {0}")]
    Invalid(String),
}

/// One file of a dump directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Name inside the dump directory (no directory part).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 (IEEE, as `crc32fast` and zlib compute it) of each chunk, in order; the last
    /// chunk may be short.
    pub crc32: Vec<u32>,
}

/// The manifest of a dump directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// Chunk size of the checksums, in bytes.
    pub chunk_size: u64,
    /// The files, in the order they were written.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// An empty manifest with `chunk_size`-byte chunks.
    pub fn new(chunk_size: u64) -> Self {
        Self {
            version: VERSION,
            chunk_size,
            files: Vec::new(),
        }
    }

    /// Adds (or replaces) the entry of a file whose whole contents are `data`.
    pub fn add_bytes(&mut self, name: &str, data: &[u8]) {
        let crc32 = data
            .chunks(to_usize(self.chunk_size))
            .map(crc32fast::hash)
            .collect();
        self.add(FileEntry {
            name: name.to_owned(),
            size: data.len() as u64,
            crc32,
        });
    }

    /// Adds (or replaces) an entry.
    pub fn add(&mut self, entry: FileEntry) {
        self.files.retain(|f| f.name != entry.name);
        self.files.push(entry);
    }

    /// The JSON text.
    pub fn encode(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        text.push(b'\n');
        text
    }

    /// Parses and checks a manifest: known version, a sane chunk size, plain file names, and as
    /// many checksums as each size needs.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let manifest: Self = serde_json::from_slice(bytes)?;
        let invalid = |what: String| Err(ManifestError::Invalid(what));
        if manifest.version != VERSION {
            return invalid(format!("unknown version {}", manifest.version));
        }
        if !(4096..=1 << 30).contains(&manifest.chunk_size) {
            return invalid(format!("chunk size {} out of range", manifest.chunk_size));
        }
        for file in &manifest.files {
            if !is_plain_name(&file.name) {
                return invalid(format!("file name {:?} is not a plain name", file.name));
            }
            let chunks = file.size.div_ceil(manifest.chunk_size);
            if chunks != file.crc32.len() as u64 {
                return invalid(format!(
                    "{}: {} bytes need {chunks} checksums, not {}",
                    file.name,
                    file.size,
                    file.crc32.len()
                ));
            }
        }
        Ok(manifest)
    }
}

/// Whether `name` is a single path component: not empty, not `.` or `..`, no `/` or NUL.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains(['/', '\0'])
}

/// A written extent of one chunk, relative to the chunk's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    start: u64,
    len: u64,
    crc: u32,
}

impl Extent {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The extents written into one chunk, sorted and disjoint.
#[derive(Debug, Clone, Default)]
struct ChunkState {
    extents: Vec<Extent>,
    /// A write overlapped an earlier one only in part: the checksum can no longer be derived
    /// from the writes.
    conflicted: bool,
}

/// CRC-32 per chunk of a file produced by positioned writes.
///
/// Each write is checksummed as it passes; the contents are not kept. A write that lands
/// exactly on an earlier extent (a header rewritten with the same length) or covers earlier
/// extents entirely replaces them, as the file's contents do. Bytes never written read as zero.
/// A write that overlaps an earlier extent only partly leaves its chunk *conflicted*:
/// [`ContentCrcs::finish`] then names the byte ranges whose checksums must be computed from the
/// file itself. Adjacent extents of a chunk other than the first are merged as they arrive, so
/// memory stays at a few extents per chunk.
#[derive(Debug, Clone)]
pub struct ContentCrcs {
    chunk_size: u64,
    chunks: BTreeMap<u64, ChunkState>,
    size: u64,
}

impl ContentCrcs {
    /// A tracker for `chunk_size`-byte chunks.
    pub fn new(chunk_size: u64) -> Self {
        assert!(chunk_size > 0, "chunk size must be positive");
        Self {
            chunk_size,
            chunks: BTreeMap::new(),
            size: 0,
        }
    }

    /// The file size so far: the end of the furthest write.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Records that `data` was written at `offset`.
    pub fn record(&mut self, offset: u64, data: &[u8]) {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = at / self.chunk_size;
            let within = at % self.chunk_size;
            let take = rest.len().min(to_usize(self.chunk_size - within));
            let (piece, tail) = rest.split_at(take);
            let extent = Extent {
                start: within,
                len: take as u64,
                crc: crc32fast::hash(piece),
            };
            let merge = chunk != 0;
            insert(self.chunks.entry(chunk).or_default(), extent, merge);
            at += take as u64;
            rest = tail;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    /// The byte ranges of the file whose checksums the writes cannot give (partly overlapping
    /// rewrites). Empty in the usual case.
    #[cfg(test)]
    pub fn conflicted(&self) -> Vec<Range<u64>> {
        self.chunks
            .iter()
            .filter(|(_, state)| state.conflicted)
            .map(|(&chunk, _)| self.chunk_range(chunk))
            .collect()
    }

    /// The checksum of every chunk of a file of [`ContentCrcs::size`] bytes. `read_back` gives
    /// the checksum of a conflicted range from the file itself.
    pub fn finish<E>(
        &self,
        mut read_back: impl FnMut(Range<u64>) -> Result<u32, E>,
    ) -> Result<Vec<u32>, E> {
        let count = self.size.div_ceil(self.chunk_size);
        let mut crcs = Vec::with_capacity(to_usize(count));
        for chunk in 0..count {
            let range = self.chunk_range(chunk);
            let len = range.end - range.start;
            let crc = match self.chunks.get(&chunk) {
                None => zeros_crc(len),
                Some(state) if state.conflicted => read_back(range)?,
                Some(state) => combine_with_gaps(&state.extents, len),
            };
            crcs.push(crc);
        }
        Ok(crcs)
    }

    fn chunk_range(&self, chunk: u64) -> Range<u64> {
        let start = chunk * self.chunk_size;
        start..(start + self.chunk_size).min(self.size)
    }
}

/// Inserts `extent` into `state` (see [`ContentCrcs`] for the rules).
fn insert(state: &mut ChunkState, extent: Extent, merge: bool) {
    let extents = &mut state.extents;
    let first = extents.partition_point(|e| e.end() <= extent.start);
    let last = extents.partition_point(|e| e.start < extent.end());
    let overlapping = &extents[first..last];
    let covered = overlapping
        .iter()
        .all(|e| e.start >= extent.start && e.end() <= extent.end());
    if !covered {
        state.conflicted = true;
    }
    extents.splice(first..last, [extent]);
    if merge {
        merge_neighbours(extents, first);
    }
}

/// Merges the extent at `index` with the ones right before and after it when they touch.
fn merge_neighbours(extents: &mut Vec<Extent>, index: usize) {
    let mut index = index;
    if index > 0 && extents[index - 1].end() == extents[index].start {
        let next = extents.remove(index);
        let prev = &mut extents[index - 1];
        prev.crc = combine(prev.crc, next.crc, next.len);
        prev.len += next.len;
        index -= 1;
    }
    if index + 1 < extents.len() && extents[index].end() == extents[index + 1].start {
        let next = extents.remove(index + 1);
        let cur = &mut extents[index];
        cur.crc = combine(cur.crc, next.crc, next.len);
        cur.len += next.len;
    }
}

/// The CRC of a chunk of `len` bytes made of `extents` (all within it) with zeros in between.
fn combine_with_gaps(extents: &[Extent], len: u64) -> u32 {
    let mut crc = 0u32;
    let mut at = 0;
    for extent in extents {
        let gap = extent.start - at;
        crc = combine(combine(crc, zeros_crc(gap), gap), extent.crc, extent.len);
        at = extent.end();
    }
    combine(crc, zeros_crc(len - at), len - at)
}

/// CRC-32 of `a ++ b` from the CRCs of `a` and of `b` (`b_len` bytes long).
fn combine(a: u32, b: u32, b_len: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial_len(a, 0);
    hasher.combine(&crc32fast::Hasher::new_with_initial_len(b, b_len));
    hasher.finalize()
}

/// CRC-32 of `len` zero bytes, in time logarithmic in `len`: blocks of zeros double by
/// combining a block's CRC with itself.
fn zeros_crc(len: u64) -> u32 {
    const BLOCK: [u8; 4096] = [0; 4096];
    let mut crc = 0u32;
    let mut unit = crc32fast::hash(&BLOCK);
    let mut unit_len = BLOCK.len() as u64;
    let mut blocks = len / unit_len;
    while blocks > 0 {
        if blocks & 1 != 0 {
            crc = combine(crc, unit, unit_len);
        }
        unit = combine(unit, unit, unit_len);
        unit_len *= 2;
        blocks >>= 1;
    }
    let tail = to_usize(len % BLOCK.len() as u64);
    combine(crc, crc32fast::hash(&BLOCK[..tail]), tail as u64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunk_crcs(file: &[u8], chunk: u64) -> Vec<u32> {
        file.chunks(to_usize(chunk)).map(crc32fast::hash).collect()
    }

    #[test]
    fn known_crc() {
        // The check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096 + 5, 100_000] {
            assert_eq!(
                zeros_crc(len),
                crc32fast::hash(&vec![0; to_usize(len)]),
                "{len}"
            );
        }
    }

    #[test]
    fn a_kdump_like_write_order_needs_no_read_back() {
        // Header, bitmaps, then descriptors and data from two cursors, then the header again.
        let chunk = 4096;
        let mut file = vec![0u8; 40_000];
        let mut crcs = ContentCrcs::new(chunk);
        let mut write = |file: &mut Vec<u8>, at: usize, data: Vec<u8>| {
            file[at..at + data.len()].copy_from_slice(&data);
            crcs.record(at as u64, &data);
        };
        write(&mut file, 0, vec![1; 512]);
        write(&mut file, 4096, vec![2; 3000]);
        for i in 0u8..6 {
            write(&mut file, 8192 + usize::from(i) * 1000, vec![3 + i; 1000]);
            write(
                &mut file,
                20_000 + usize::from(i) * 3000,
                vec![10 + i; 3000],
            );
        }
        write(&mut file, 0, vec![9; 512]);
        file.truncate(38_000);
        assert!(crcs.conflicted().is_empty());
        assert_eq!(crcs.size(), 38_000);
        let got = crcs.finish(|_| Err::<u32, ()>(())).unwrap();
        assert_eq!(got, chunk_crcs(&file, chunk));
    }

    #[test]
    fn parse_rejects_names_and_counts_that_do_not_fit() {
        let mut manifest = Manifest::new(4096);
        manifest.add_bytes("vmcore", &[7; 5000]);
        assert_eq!(Manifest::parse(&manifest.encode()).unwrap(), manifest);
        let mut bad = manifest.clone();
        bad.files[0].name = "../etc/passwd".to_owned();
        assert!(
            Manifest::parse(&bad.encode())
                .unwrap_err()
                .to_string()
                .contains("plain name")
        );
        let mut bad = manifest.clone();
        bad.files[0].crc32.pop();
        assert!(
            Manifest::parse(&bad.encode())
                .unwrap_err()
                .to_string()
                .contains("need 2 checksums")
        );
        let mut bad = manifest;
        bad.chunk_size = 0;
        assert!(Manifest::parse(&bad.encode()).is_err());
    }

    proptest! {
        /// Any positioned writes, overlapping or not: the checksums equal those of the file
        /// they produce (conflicted chunks read back from it).
        #[test]
        fn crcs_match_the_written_file(
            writes in proptest::collection::vec((0u64..20_000, 1usize..5000, any::<u8>()), 1..40),
        ) {
            let chunk = 4096;
            let mut file = Vec::new();
            let mut crcs = ContentCrcs::new(chunk);
            for (offset, len, seed) in writes {
                let data: Vec<u8> = (0..len).map(|i: usize| seed.wrapping_add(i.to_le_bytes()[0])).collect();
                let end = to_usize(offset) + len;
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[to_usize(offset)..end].copy_from_slice(&data);
                crcs.record(offset, &data);
            }
            prop_assert_eq!(crcs.size(), file.len() as u64);
            let got = crcs
                .finish(|range| Ok::<u32, ()>(crc32fast::hash(&file[to_usize(range.start)..to_usize(range.end)])))
                .unwrap();
            prop_assert_eq!(got, chunk_crcs(&file, chunk));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::parse(&bytes);
        }
    }
}
