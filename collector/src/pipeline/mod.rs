//! The parallel page pipeline: read, zero-test and compress pages on every CPU, and hand the
//! results in page-frame order to the caller's sink.
//!
//! The dump is cut into [`Chunk`]s of about the same work: at most [`CHUNK_PAGES`] pages to
//! dump, inside one extent of the vmcore's [`PageMap`](crate::vmcore::window::PageMap). Worker
//! threads of a rayon pool take chunks in order from the shared source, each with its own
//! [`PageReader`] and [`codec::PageCompressor`]. There is no writer thread and no barrier
//! between batches: a worker hands its result in by sequence number, and the worker whose
//! result is next in order runs the sink on it and on the results next in order after it,
//! while the others go on compressing ([`run`]). A worker may not take more than
//! [`IN_FLIGHT_PER_THREAD`] chunks per thread ahead of the sink, which bounds memory whatever
//! the dump's size (it is the only time a worker waits for the sink), and buffers are reused,
//! so steady state allocates nothing. With one thread this is a serial loop on one CPU.
//!
//! The sink stays serial because the output is: a stream must see its bytes in order, and the
//! kernel takes one file's buffered writes one at a time (the inode lock of tmpfs, ext4, xfs
//! and NFS). That was measured: positioned writes from every worker at once spent the time
//! they saved spinning on that lock.
//!
//! Chunking depends only on the input, and each page is compressed on its own, so the output
//! is byte-identical whatever the number of threads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
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
/// Chunks a thread may be ahead of the sink.
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
    /// The sink failed.
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

/// Where one run's time went, for the scaling work: the workers' reading and compressing run
/// in parallel; handing out chunks (under the source lock) and the ordered step are serial.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Times {
    /// Wall-clock seconds of the whole run.
    pub wall: f64,
    /// Seconds spent producing the next chunk (the caller's iterator), one worker at a time.
    pub chunk_source: f64,
    /// Seconds in the ordered step (the caller's sink: for a dump file, placing each result
    /// and writing it), one chunk at a time in sequence order.
    pub ordered: f64,
    /// Each worker's seconds reading, zero-testing and compressing its chunks.
    pub workers: Vec<f64>,
    /// The serial part (chunk source and ordered step) as a fraction of all the work timed
    /// (Amdahl's `s`): what more CPUs cannot shorten.
    pub serial_fraction: f64,
}

impl Times {
    fn new(wall: f64, chunk_source: f64, ordered: f64, workers: Vec<f64>) -> Self {
        let serial = chunk_source + ordered;
        let total = serial + workers.iter().sum::<f64>();
        Self {
            wall,
            chunk_source,
            ordered,
            workers,
            serial_fraction: if total > 0.0 { serial / total } else { 0.0 },
        }
    }
}

/// The chunks still to hand out, with their sequence numbers and how many are done.
struct Source<I> {
    chunks: I,
    next: u64,
    /// Chunks through the ordered step.
    retired: u64,
    done: bool,
    /// Time spent in `chunks.next()`.
    producing: Duration,
}

/// Results waiting for their turn in the ordered step.
struct Pending {
    results: BTreeMap<u64, Result<ChunkResult, (u64, VmcoreError)>>,
    /// Sequence number of the next result for the ordered step.
    next: u64,
    /// Whether a worker is running the ordered step now (only one does at a time).
    draining: bool,
}

/// The ordered step: the caller's sink and the time spent in it.
struct Ordered<S> {
    sink: S,
    spent: Duration,
}

/// Runs `chunks` through the workers and feeds the results, in order and one at a time, to
/// `sink`; returns where the time went.
///
/// There is no writer thread: the worker whose result is next in order runs `sink` on it and
/// on the results next in order after it, while the others go on compressing; a worker whose
/// result is not next leaves it and takes another chunk, and waits only when it is
/// [`IN_FLIGHT_PER_THREAD`] chunks per thread ahead of the sink. With one thread this is a
/// serial loop on one CPU.
pub fn run<E, I, S>(
    vmcore: &Vmcore,
    settings: Settings,
    chunks: I,
    sink: S,
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
    let shared = Shared {
        limit: threads as u64 * IN_FLIGHT_PER_THREAD,
        source: Mutex::new(Source {
            chunks,
            next: 0,
            retired: 0,
            done: false,
            producing: Duration::ZERO,
        }),
        room: Condvar::new(),
        stop: AtomicBool::new(false),
        spare: Mutex::new(Vec::new()),
        pending: Mutex::new(Pending {
            results: BTreeMap::new(),
            next: 0,
            draining: false,
        }),
        ordered: Mutex::new(Ordered {
            sink,
            spent: Duration::ZERO,
        }),
        error: Mutex::new(None),
        busy: Mutex::new(Vec::with_capacity(threads)),
        settings,
    };
    pool.scope(|pool_scope| {
        for worker in workers {
            let shared = &shared;
            pool_scope.spawn(move |_| shared.work(vmcore, worker));
        }
    });
    if let Some(error) = shared.error.into_inner().expect("not poisoned") {
        return Err(error);
    }
    let source = shared.source.into_inner().expect("not poisoned");
    let ordered = shared.ordered.into_inner().expect("not poisoned").spent;
    let mut busy = shared.busy.into_inner().expect("not poisoned");
    busy.sort_by(|a, b| b.total_cmp(a));
    Ok(Times::new(
        started.elapsed().as_secs_f64(),
        source.producing.as_secs_f64(),
        ordered.as_secs_f64(),
        busy,
    ))
}

/// What the workers of one run share.
struct Shared<I, S, E: std::error::Error + 'static> {
    /// Chunks that may be taken and not yet through the ordered step.
    limit: u64,
    source: Mutex<Source<I>>,
    /// Signalled when chunks retire or the run ends.
    room: Condvar,
    stop: AtomicBool,
    /// Result buffers for reuse.
    spare: Mutex<Vec<ChunkResult>>,
    /// Results waiting for the ordered step; held only to queue or take one.
    pending: Mutex<Pending>,
    /// The ordered step, locked by the one worker that runs it (`Pending::draining`).
    ordered: Mutex<Ordered<S>>,
    /// The first failure.
    error: Mutex<Option<PipelineError<E>>>,
    /// Each worker's compressing seconds.
    busy: Mutex<Vec<f64>>,
    settings: Settings,
}

impl<E, I, S> Shared<I, S, E>
where
    E: std::error::Error + Send + 'static,
    I: Iterator<Item = Chunk>,
    S: FnMut(&ChunkResult) -> Result<(), E>,
{
    /// One worker's loop: take a chunk, process it, hand it to the ordered step.
    fn work(&self, vmcore: &Vmcore, mut worker: Worker) {
        let _stop_on_panic = StopOnPanic(self);
        let mut working = Duration::ZERO;
        while let Some((seq, chunk)) = self.take() {
            let mut result = self
                .spare
                .lock()
                .expect("not poisoned")
                .pop()
                .unwrap_or_default();
            let at = Instant::now();
            let outcome = worker
                .process(vmcore, &chunk, &self.settings, &mut result)
                .map(|()| result);
            working += at.elapsed();
            self.hand_in(seq, outcome);
        }
        self.busy
            .lock()
            .expect("not poisoned")
            .push(working.as_secs_f64());
    }

    /// The next chunk, once there is room for it; `None` at the end or after a failure.
    fn take(&self) -> Option<(u64, Chunk)> {
        let mut state = self.source.lock().expect("not poisoned");
        while !state.done && state.next >= state.retired + self.limit && !self.stopped() {
            state = self.room.wait(state).expect("not poisoned");
        }
        if state.done || self.stopped() {
            return None;
        }
        let at = Instant::now();
        let chunk = state.chunks.next();
        state.producing += at.elapsed();
        match chunk {
            Some(chunk) => {
                state.next += 1;
                Some((state.next - 1, chunk))
            }
            None => {
                state.done = true;
                self.room.notify_all();
                None
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records the first failure and stops every worker.
    fn fail(&self, error: PipelineError<E>) {
        self.error
            .lock()
            .expect("not poisoned")
            .get_or_insert(error);
        self.halt();
    }

    /// Queues result `seq`. If it is the next in order and no other worker is running the
    /// ordered step, runs the step on it and on every result next in order after it, those
    /// already waiting and those that arrive meanwhile.
    fn hand_in(&self, seq: u64, outcome: Result<ChunkResult, (u64, VmcoreError)>) {
        {
            let mut pending = self.pending.lock().expect("not poisoned");
            pending.results.insert(seq, outcome);
            if pending.draining || seq != pending.next {
                return;
            }
            pending.draining = true;
        }
        let mut ordered = self.ordered.lock().expect("not poisoned");
        loop {
            let outcome = {
                let mut pending = self.pending.lock().expect("not poisoned");
                let seq = pending.next;
                let Some(outcome) = pending.results.remove(&seq) else {
                    pending.draining = false;
                    return;
                };
                pending.next += 1;
                outcome
            };
            // After a failure nothing more goes through: `draining` stays set.
            let result = match outcome {
                Ok(result) => result,
                Err((pfn, source)) => return self.fail(PipelineError::Read { pfn, source }),
            };
            let at = Instant::now();
            let written = (ordered.sink)(&result);
            ordered.spent += at.elapsed();
            self.spare.lock().expect("not poisoned").push(result);
            if let Err(e) = written {
                return self.fail(PipelineError::Sink(e));
            }
            self.source.lock().expect("not poisoned").retired += 1;
            self.room.notify_all();
        }
    }
}

impl<I, S, E: std::error::Error + 'static> Shared<I, S, E> {
    /// Stops every worker: those waiting for room wake up and end.
    fn halt(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // Taken under the source lock, so that no worker misses the wake-up between its
        // check of `stop` and its wait; after a panic a poisoned lock is still a lock.
        let _source = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        self.room.notify_all();
    }
}

/// Stops the run when a worker panics (in the sink or in its own processing), so that the
/// others, which would wait for its result forever, end and the panic reaches the caller.
struct StopOnPanic<'a, I, S, E: std::error::Error + 'static>(&'a Shared<I, S, E>);

impl<I, S, E: std::error::Error + 'static> Drop for StopOnPanic<'_, I, S, E> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.halt();
        }
    }
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
