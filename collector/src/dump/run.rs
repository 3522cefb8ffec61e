//! What both drivers share: the summary being filled in, progress reports, and the one way a
//! dump ends, complete or not.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::report::{self, Summary};
use super::{Progress, SaveError, SaveOptions};
use crate::output::{self, Opened, OutputError, Sink};

/// Least time between two progress reports.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Why a dump stopped before its end.
pub(super) enum Failure {
    /// The output refused a write.
    Output(OutputError),
    /// Memory could not be read, or the vmcore changed under the dump.
    Input(String),
}

impl From<OutputError> for Failure {
    fn from(e: OutputError) -> Self {
        Self::Output(e)
    }
}

/// One dump in progress.
pub(super) struct Run<'p> {
    started: Instant,
    progress: &'p mut (dyn FnMut(Progress) + Send),
    last_report: Option<Instant>,
    /// The output's incomplete name, once it is open.
    partial: Option<PathBuf>,
    /// Whether the output was opened (only then does a failure carry a summary).
    opened: bool,
    /// Filled in by the driver as the dump goes.
    pub summary: Summary,
}

impl<'p> Run<'p> {
    /// Starts the clock.
    pub fn new(progress: &'p mut (dyn FnMut(Progress) + Send)) -> Self {
        Self {
            started: Instant::now(),
            progress,
            last_report: None,
            partial: None,
            opened: false,
            summary: Summary::default(),
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Opens the destination of `options`; the summary starts with `summary`.
    pub fn open(&mut self, options: &SaveOptions, summary: Summary) -> Result<Opened, SaveError> {
        let opened = output::destination::open(&options.destination, &options.open_request())?;
        self.partial.clone_from(&opened.partial);
        self.opened = true;
        self.summary = Summary {
            output: opened.label.clone(),
            flattened: options.flattened,
            requested_level: options.level.bits(),
            threads: options.threads.max(1),
            ..summary
        };
        Ok(opened)
    }

    /// Reports that `done` of `total` pages are written, `bytes_read` bytes read.
    pub fn report(&mut self, done: u64, total: u64, bytes_read: u64) {
        let due = self
            .last_report
            .is_none_or(|last| last.elapsed() >= PROGRESS_EVERY);
        if due || done == total {
            self.last_report = Some(Instant::now());
            (self.progress)(Progress {
                done,
                total,
                bytes_read,
                elapsed: self.started.elapsed(),
            });
        }
    }

    /// The error for `failure`, with what was written to `sink` (if it is still at hand) and
    /// the summary so far.
    pub fn failed(&mut self, failure: Failure, sink: Option<&dyn Sink>) -> SaveError {
        if let Some(sink) = sink {
            self.summary.bytes_written = sink.bytes_written();
        }
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        self.summary.peak_rss_kib = report::peak_rss_kib();
        let summary = self.opened.then(|| Box::new(self.summary.clone()));
        let partial = self.partial.clone();
        match failure {
            Failure::Output(source) => SaveError::Output {
                source,
                partial,
                summary,
            },
            Failure::Input(message) => SaveError::Input {
                message,
                partial,
                summary,
            },
        }
    }

    /// Ends a dump whose last byte is written: `finish` completes the sink (the header without
    /// the incomplete flag, end marker, flush, fsync), then the file is renamed to its real
    /// name. `file_size` is the dump's size as a seekable file.
    pub fn complete(
        mut self,
        finish: impl FnOnce() -> Result<Box<dyn Sink>, OutputError>,
        rename: Option<&(PathBuf, PathBuf)>,
        file_size: u64,
    ) -> Result<Summary, SaveError> {
        let sink = finish().map_err(|e| self.failed(Failure::Output(e), None))?;
        self.summary.bytes_written = if self.summary.flattened {
            sink.bytes_written()
        } else {
            file_size
        };
        if let Some((temporary, target)) = rename {
            output::finalize(temporary, target)
                .map_err(|e| self.failed(Failure::Output(e), None))?;
            self.summary.output = target.display().to_string();
        }
        self.summary.complete = true;
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        self.summary.peak_rss_kib = report::peak_rss_kib();
        Ok(self.summary)
    }
}
