//! The parallel page pipeline: read, zero-test and compress pages on every CPU, hand the
//! results to one writer in page-frame order.
//!
//! The dump is cut into [`Chunk`]s of at most [`CHUNK_PAGES`] page frames, each inside one
//! extent of the vmcore's [`PageMap`](crate::vmcore::window::PageMap), with a mask of the frames
//! to dump. A batch of chunks is processed by a rayon pool, each worker with its own
//! [`PageReader`] and compression context; the batch's results, in chunk order, go through a
//! bounded channel to the writer thread while the next batch is computed. Chunking depends only
//! on the input, and each page is compressed on its own, so the output is byte-identical
//! whatever the number of threads. Memory in flight is bounded by the batch size, not by the
//! dump size.

use std::sync::Mutex;
use std::sync::mpsc;

use crate::format::kdump::COMPRESSED_ZSTD;
use crate::vmcore::window::{Access, ExtentKind, PageReader};
use crate::vmcore::{PAGE_SIZE, Vmcore, VmcoreError};

/// Page frames per chunk (1 MiB of memory).
pub const CHUNK_PAGES: usize = 256;
/// Chunks per batch, per thread.
const CHUNKS_PER_THREAD: usize = 4;
const PAGE: usize = PAGE_SIZE as usize;

/// How stored pages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Raw page bytes.
    None,
    /// One zstd frame per page at this level (kdump flag 0x20).
    Zstd(i32),
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError<E: std::error::Error + 'static> {
    /// A page could not be read.
    #[error("reading page frame {pfn:#x}: {source}")]
    Read {
        /// The page frame.
        pfn: u64,
        /// Why.
        source: VmcoreError,
    },
    /// The compression library failed to initialise.
    #[error("initialising the compressor: {0}")]
    Compressor(std::io::Error),
    /// The thread pool could not be started.
    #[error("starting {threads} worker threads: {message}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// What went wrong.
        message: String,
    },
    /// The writer failed.
    #[error(transparent)]
    Sink(E),
}

/// A run of page frames to process together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// First page frame.
    pub pfn_start: u64,
    /// Number of page frames (at most [`CHUNK_PAGES`]).
    pub pages: usize,
    /// Where the frames are stored.
    pub kind: ExtentKind,
    /// Which frames to dump: bit `i` of word `i / 64` for frame `pfn_start + i`.
    pub mask: [u64; CHUNK_PAGES / 64],
}

impl Chunk {
    /// Whether frame `i` of the chunk is to be dumped.
    pub fn wanted(&self, i: usize) -> bool {
        self.mask[i / 64] >> (i % 64) & 1 != 0
    }

    /// Runs of wanted frames, as `(first index, count)`.
    pub fn runs(&self) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for i in (0..self.pages).filter(|&i| self.wanted(i)) {
            match runs.last_mut() {
                Some((first, count)) if *first + *count == i => *count += 1,
                _ => runs.push((i, 1)),
            }
        }
        runs
    }

    /// Number of wanted frames.
    pub fn count(&self) -> usize {
        self.mask.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// How one page came out of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOut {
    /// Entirely zero (only reported when zero detection is on); no data.
    Zero,
    /// `size` bytes of data encoded with kdump flag `flags` (0: raw).
    Stored {
        /// Bytes in the chunk's data.
        size: u32,
        /// kdump compression flag, or 0 when stored raw.
        flags: u32,
    },
}

/// The pipeline's result for one chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkResult {
    /// First page frame of the chunk.
    pub pfn_start: u64,
    /// One entry per wanted frame, in order, with its page frame number.
    pub pages: Vec<(u64, PageOut)>,
    /// The stored pages' bytes, concatenated in order.
    pub data: Vec<u8>,
    /// Bytes of page data read from the vmcore.
    pub bytes_read: u64,
}

/// Pipeline settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Worker threads.
    pub threads: usize,
    /// Page encoding.
    pub codec: Codec,
    /// Whether to report zero pages as [`PageOut::Zero`].
    pub detect_zero: bool,
    /// How workers read page data.
    pub access: Access,
}

struct Worker {
    reader: PageReader,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
    page: Vec<u8>,
}

impl Worker {
    fn new(settings: &Settings) -> std::io::Result<Self> {
        let compressor = match settings.codec {
            Codec::None => None,
            Codec::Zstd(level) => Some(zstd::bulk::Compressor::new(level)?),
        };
        Ok(Self {
            reader: PageReader::new(settings.access),
            compressor,
            scratch: Vec::with_capacity(PAGE),
            page: vec![0; PAGE],
        })
    }

    fn process(
        &mut self,
        vmcore: &Vmcore,
        chunk: &Chunk,
        settings: &Settings,
    ) -> Result<ChunkResult, (u64, VmcoreError)> {
        let mut result = ChunkResult {
            pfn_start: chunk.pfn_start,
            ..Default::default()
        };
        let count = chunk.count();
        result.pages.reserve(count);
        result.data.reserve(count * PAGE / 2);
        match chunk.kind {
            ExtentKind::Regular { file_offset } => {
                let runs = chunk.runs();
                let window = self
                    .reader
                    .window(vmcore, file_offset, chunk.pages, &runs)
                    .map_err(|e| (chunk.pfn_start, e))?;
                for (first, len) in runs {
                    for i in first..first + len {
                        let page = &window[i * PAGE..(i + 1) * PAGE];
                        let out = encode(
                            page,
                            settings,
                            &mut self.compressor,
                            &mut self.scratch,
                            &mut result.data,
                        );
                        result.pages.push((chunk.pfn_start + i as u64, out));
                    }
                }
                self.reader.release();
            }
            ExtentKind::Irregular => {
                for i in (0..chunk.pages).filter(|&i| chunk.wanted(i)) {
                    let pfn = chunk.pfn_start + i as u64;
                    vmcore
                        .read_page(pfn, &mut self.page)
                        .map_err(|e| (pfn, e))?;
                    let out = encode(
                        &self.page,
                        settings,
                        &mut self.compressor,
                        &mut self.scratch,
                        &mut result.data,
                    );
                    result.pages.push((pfn, out));
                }
            }
        }
        result.bytes_read = (count * PAGE) as u64;
        Ok(result)
    }
}

/// Whether a page is all zeros (64 bytes at a time, stopping at the first non-zero block).
pub fn is_zero_page(page: &[u8]) -> bool {
    page.chunks_exact(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

fn encode(
    page: &[u8],
    settings: &Settings,
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
    scratch: &mut Vec<u8>,
    data: &mut Vec<u8>,
) -> PageOut {
    if settings.detect_zero && is_zero_page(page) {
        return PageOut::Zero;
    }
    if let Some(compressor) = compressor {
        // A destination one byte short of a page: output that would not shrink the page fails
        // to fit, and the page is stored raw.
        scratch.resize(PAGE - 1, 0);
        if let Ok(size) = compressor.compress_to_buffer(page, &mut scratch[..]) {
            data.extend_from_slice(&scratch[..size]);
            return PageOut::Stored {
                size: size as u32,
                flags: COMPRESSED_ZSTD,
            };
        }
    }
    data.extend_from_slice(page);
    PageOut::Stored {
        size: PAGE as u32,
        flags: 0,
    }
}

/// Runs `chunks` through the workers and feeds the results, in order, to `sink` on a writer
/// thread.
pub fn run<E, I, S>(
    vmcore: &Vmcore,
    settings: Settings,
    chunks: I,
    mut sink: S,
) -> Result<(), PipelineError<E>>
where
    E: std::error::Error + Send + 'static,
    I: Iterator<Item = Chunk>,
    S: FnMut(ChunkResult) -> Result<(), E> + Send,
{
    let threads = settings.threads.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("rkdump-worker-{i}"))
        .build()
        .map_err(|e| PipelineError::Threads {
            threads,
            message: e.to_string(),
        })?;
    let workers: Vec<Mutex<Worker>> = (0..threads)
        .map(|_| Worker::new(&settings).map(Mutex::new))
        .collect::<Result<_, _>>()
        .map_err(PipelineError::Compressor)?;
    let batch_size = threads * CHUNKS_PER_THREAD;
    let mut chunks = chunks.peekable();

    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::sync_channel::<Vec<ChunkResult>>(1);
        let writer = scope.spawn(move || -> Result<(), E> {
            for batch in receiver {
                for result in batch {
                    sink(result)?;
                }
            }
            Ok(())
        });
        let mut outcome = Ok(());
        while chunks.peek().is_some() {
            let batch: Vec<Chunk> = chunks.by_ref().take(batch_size).collect();
            let results: Result<Vec<ChunkResult>, (u64, VmcoreError)> = pool.install(|| {
                use rayon::prelude::*;
                batch
                    .par_iter()
                    .map(|chunk| {
                        let index = rayon::current_thread_index().unwrap_or(0);
                        let mut worker = workers[index]
                            .lock()
                            .expect("worker state is never poisoned");
                        worker.process(vmcore, chunk, &settings)
                    })
                    .collect()
            });
            match results {
                Ok(results) => {
                    if sender.send(results).is_err() {
                        break; // The writer failed; its error is reported below.
                    }
                }
                Err((pfn, source)) => {
                    outcome = Err(PipelineError::Read { pfn, source });
                    break;
                }
            }
        }
        drop(sender);
        let written = writer.join().expect("the writer thread does not panic");
        outcome.and(written.map_err(PipelineError::Sink))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_pages_are_recognised() {
        let mut page = vec![0u8; PAGE];
        assert!(is_zero_page(&page));
        page[4095] = 1;
        assert!(!is_zero_page(&page));
    }

    #[test]
    fn chunk_runs_follow_the_mask() {
        let mut chunk = Chunk {
            pfn_start: 100,
            pages: 130,
            kind: ExtentKind::Irregular,
            mask: [0; 4],
        };
        for i in [0, 1, 2, 63, 64, 65, 129] {
            chunk.mask[i / 64] |= 1 << (i % 64);
        }
        assert_eq!(chunk.runs(), [(0, 3), (63, 3), (129, 1)]);
        assert_eq!(chunk.count(), 7);
    }

    #[test]
    fn incompressible_pages_are_stored_raw() {
        let settings = Settings {
            threads: 1,
            codec: Codec::Zstd(1),
            detect_zero: true,
            access: Access::Pread,
        };
        let mut compressor = Some(zstd::bulk::Compressor::new(1).unwrap());
        let mut scratch = Vec::new();
        let mut data = Vec::new();
        let mut state = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..PAGE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let out = encode(&random, &settings, &mut compressor, &mut scratch, &mut data);
        assert_eq!(
            out,
            PageOut::Stored {
                size: 4096,
                flags: 0
            }
        );
        assert_eq!(data, random);
        let text = b"kdump ".repeat(PAGE / 6 + 1)[..PAGE].to_vec();
        data.clear();
        let out = encode(&text, &settings, &mut compressor, &mut scratch, &mut data);
        let PageOut::Stored {
            size,
            flags: COMPRESSED_ZSTD,
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            zstd::bulk::decompress(&data[..size as usize], PAGE).unwrap(),
            text
        );
    }
}
