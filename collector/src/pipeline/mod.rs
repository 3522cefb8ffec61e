//! The parallel page pipeline: read, zero-test and compress pages on every CPU, hand the
//! results to one writer in page-frame order.
//!
//! The dump is cut into [`Chunk`]s of about the same work: at most [`CHUNK_PAGES`] pages to
//! dump, inside one extent of the vmcore's [`PageMap`](crate::vmcore::window::PageMap). Worker
//! threads of a rayon pool take chunks in order from the shared source, each with its own
//! [`PageReader`] and [`codec::PageCompressor`], and send results tagged with their sequence number
//! to the writer thread, which puts them back in order. There is no barrier between batches:
//! a worker that finishes early takes the next chunk at once. A worker may not run more than
//! [`IN_FLIGHT_PER_THREAD`] chunks per thread ahead of the writer, which bounds memory
//! whatever the dump's size, and buffers come back from the writer for reuse, so steady state
//! allocates nothing.
//!
//! Chunking depends only on the input, and each page is compressed on its own, so the output
//! is byte-identical whatever the number of threads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

pub mod codec;

pub use codec::Codec;
use codec::PageCompressor;

use crate::format::bytes::to_usize;
use crate::vmcore::window::{Access, ExtentKind, PageReader};
use crate::vmcore::{PAGE_SIZE, Vmcore, VmcoreError};

/// Most pages to dump in one chunk (1 MiB of memory).
pub const CHUNK_PAGES: usize = 256;
/// Most page frames one chunk spans (64 MiB of memory): the size of a worker's mapping.
pub const CHUNK_SPAN: u64 = 16384;
/// Chunks a thread may be ahead of the writer.
const IN_FLIGHT_PER_THREAD: u64 = 4;
const PAGE: usize = to_usize(PAGE_SIZE);

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
    /// Number of page frames spanned.
    pub pages: usize,
    /// Where the frames are stored.
    pub kind: ExtentKind,
    /// The frames to dump, as runs of `(first index, count)` within the span.
    pub runs: Vec<(usize, usize)>,
}

impl Chunk {
    /// Number of frames to dump.
    pub fn count(&self) -> usize {
        self.runs.iter().map(|(_, n)| n).sum()
    }

    /// The page frame numbers to dump, in order.
    pub fn pfns(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs
            .iter()
            .flat_map(move |&(first, n)| (first..first + n).map(move |i| self.pfn_start + i as u64))
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
    /// One entry per page dumped, in order, with its page frame number.
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
    compressor: PageCompressor,
    page: Vec<u8>,
}

impl Worker {
    fn new(settings: &Settings) -> std::io::Result<Self> {
        Ok(Self {
            reader: PageReader::new(settings.access),
            compressor: PageCompressor::new(settings.codec)?,
            page: vec![0; PAGE],
        })
    }

    /// Processes `chunk` into `result` (whose buffers are reused).
    fn process(
        &mut self,
        vmcore: &Vmcore,
        chunk: &Chunk,
        settings: &Settings,
        result: &mut ChunkResult,
    ) -> Result<(), (u64, VmcoreError)> {
        result.pfn_start = chunk.pfn_start;
        result.pages.clear();
        result.data.clear();
        let count = chunk.count();
        result.bytes_read = (count * PAGE) as u64;
        match chunk.kind {
            ExtentKind::Regular { file_offset } => {
                let window = self
                    .reader
                    .window(vmcore, file_offset, chunk.pages, &chunk.runs)
                    .map_err(|e| (chunk.pfn_start, e))?;
                for &(first, n) in &chunk.runs {
                    for i in first..first + n {
                        let page = &window[i * PAGE..(i + 1) * PAGE];
                        let out = encode(page, settings, &mut self.compressor, &mut result.data);
                        result.pages.push((chunk.pfn_start + i as u64, out));
                    }
                }
                self.reader.release();
            }
            ExtentKind::Irregular => {
                for pfn in chunk.pfns() {
                    vmcore
                        .read_page(pfn, &mut self.page)
                        .map_err(|e| (pfn, e))?;
                    let out = encode(&self.page, settings, &mut self.compressor, &mut result.data);
                    result.pages.push((pfn, out));
                }
            }
        }
        Ok(())
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
    compressor: &mut PageCompressor,
    data: &mut Vec<u8>,
) -> PageOut {
    if settings.detect_zero && is_zero_page(page) {
        return PageOut::Zero;
    }
    let codec::Stored { size, flags } = compressor.store(page, data);
    PageOut::Stored { size, flags }
}

/// Where one run's time went, for the scaling work: the workers run in parallel; handing out
/// chunks (under the source lock) and the writer are serial.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Times {
    /// Wall-clock seconds of the whole run.
    pub wall: f64,
    /// Seconds spent producing the next chunk (the caller's iterator), one worker at a time.
    pub chunk_source: f64,
    /// Seconds the writer thread spent in the sink (ordering aside).
    pub writer: f64,
    /// Each worker's seconds reading, zero-testing and compressing its chunks.
    pub workers: Vec<f64>,
}

/// The chunks still to hand out, with their sequence numbers and the writer's progress.
struct Source<I> {
    chunks: I,
    next: u64,
    written: u64,
    done: bool,
    /// Time spent in `chunks.next()`.
    producing: Duration,
}

/// Runs `chunks` through the workers and feeds the results, in order, to `sink` on a writer
/// thread; returns where the time went.
pub fn run<E, I, S>(
    vmcore: &Vmcore,
    settings: Settings,
    chunks: I,
    mut sink: S,
) -> Result<Times, PipelineError<E>>
where
    E: std::error::Error + Send + 'static,
    I: Iterator<Item = Chunk> + Send,
    S: FnMut(&ChunkResult) -> Result<(), E> + Send,
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
    let workers: Vec<Worker> = (0..threads)
        .map(|_| Worker::new(&settings))
        .collect::<Result<_, _>>()
        .map_err(PipelineError::Compressor)?;
    let started = Instant::now();
    let limit = threads as u64 * IN_FLIGHT_PER_THREAD;
    let source = Mutex::new(Source {
        chunks,
        next: 0,
        written: 0,
        done: false,
        producing: Duration::ZERO,
    });
    let busy: Mutex<Vec<f64>> = Mutex::new(Vec::with_capacity(threads));
    let room = Condvar::new();
    let stop = AtomicBool::new(false);
    let spare: Mutex<Vec<ChunkResult>> = Mutex::new(Vec::new());
    let (sender, receiver) = mpsc::channel::<(u64, Result<ChunkResult, (u64, VmcoreError)>)>();

    std::thread::scope(|scope| {
        let (source_ref, room_ref, stop_ref, spare_ref) = (&source, &room, &stop, &spare);
        let writer = scope.spawn(move || -> Result<Duration, PipelineError<E>> {
            let (source, room, stop, spare) = (source_ref, room_ref, stop_ref, spare_ref);
            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            let mut writing = Duration::ZERO;
            let outcome = (|| {
                for (seq, result) in &receiver {
                    pending.insert(seq, result);
                    while let Some(result) = pending.remove(&next) {
                        let result =
                            result.map_err(|(pfn, source)| PipelineError::Read { pfn, source })?;
                        let at = Instant::now();
                        sink(&result).map_err(PipelineError::Sink)?;
                        writing += at.elapsed();
                        spare.lock().expect("not poisoned").push(result);
                        next += 1;
                        source.lock().expect("not poisoned").written = next;
                        room.notify_all();
                    }
                }
                Ok(())
            })();
            if outcome.is_err() {
                stop.store(true, Ordering::Relaxed);
                room.notify_all();
            }
            outcome.map(|()| writing)
        });
        pool.scope(|pool_scope| {
            for mut worker in workers {
                let sender = sender.clone();
                let (source, room, stop, spare, settings, busy) =
                    (&source, &room, &stop, &spare, &settings, &busy);
                pool_scope.spawn(move |_| {
                    let mut working = Duration::ZERO;
                    let report = |working: Duration| {
                        busy.lock()
                            .expect("not poisoned")
                            .push(working.as_secs_f64());
                    };
                    loop {
                        let (seq, chunk) = {
                            let mut state = source.lock().expect("not poisoned");
                            while !state.done
                                && state.next >= state.written + limit
                                && !stop.load(Ordering::Relaxed)
                            {
                                state = room.wait(state).expect("not poisoned");
                            }
                            if state.done || stop.load(Ordering::Relaxed) {
                                return report(working);
                            }
                            let at = Instant::now();
                            let chunk = state.chunks.next();
                            state.producing += at.elapsed();
                            match chunk {
                                Some(chunk) => {
                                    state.next += 1;
                                    (state.next - 1, chunk)
                                }
                                None => {
                                    state.done = true;
                                    room.notify_all();
                                    return report(working);
                                }
                            }
                        };
                        let mut result = spare
                            .lock()
                            .expect("not poisoned")
                            .pop()
                            .unwrap_or_default();
                        let at = Instant::now();
                        let outcome = worker
                            .process(vmcore, &chunk, settings, &mut result)
                            .map(|()| result);
                        working += at.elapsed();
                        let failed = outcome.is_err();
                        if sender.send((seq, outcome)).is_err() || failed {
                            stop.store(true, Ordering::Relaxed);
                            room.notify_all();
                            return report(working);
                        }
                    }
                });
            }
        });
        drop(sender);
        let writing = writer.join().expect("the writer thread does not panic")?;
        let producing = source.lock().expect("not poisoned").producing;
        let mut workers = std::mem::take(&mut *busy.lock().expect("not poisoned"));
        workers.sort_by(|a, b| b.total_cmp(a));
        Ok(Times {
            wall: started.elapsed().as_secs_f64(),
            chunk_source: producing.as_secs_f64(),
            writer: writing.as_secs_f64(),
            workers,
        })
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
    fn chunk_pfns_follow_the_runs() {
        let chunk = Chunk {
            pfn_start: 100,
            pages: 130,
            kind: ExtentKind::Irregular,
            runs: vec![(0, 3), (63, 3), (129, 1)],
        };
        assert_eq!(
            chunk.pfns().collect::<Vec<_>>(),
            [100, 101, 102, 163, 164, 165, 229]
        );
        assert_eq!(chunk.count(), 7);
    }

    #[test]
    fn zero_detection_comes_before_the_codec() {
        let mut settings = Settings {
            threads: 1,
            codec: Codec::Lzo,
            detect_zero: true,
            access: Access::Pread,
        };
        let mut compressor = PageCompressor::new(settings.codec).unwrap();
        let mut data = Vec::new();
        let zero = vec![0u8; PAGE];
        assert_eq!(
            encode(&zero, &settings, &mut compressor, &mut data),
            PageOut::Zero
        );
        assert!(data.is_empty());
        settings.detect_zero = false;
        let out = encode(&zero, &settings, &mut compressor, &mut data);
        assert_eq!(
            out,
            PageOut::Stored {
                size: u32::try_from(data.len()).unwrap(),
                flags: Codec::Lzo.flag()
            }
        );
    }
}
