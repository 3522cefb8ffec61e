//! Progress lines on standard error while a dump is written.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::dump::Progress;

/// Prints progress at most every half second on a terminal (rewriting one line), every five
/// seconds otherwise (one line each: serial consoles and logs).
pub struct ProgressPrinter {
    terminal: bool,
    last: Option<Instant>,
    printed: bool,
}

impl ProgressPrinter {
    /// A printer for standard error.
    pub fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: None,
            printed: false,
        }
    }

    /// Shows `progress` if enough time passed since the last line (and always at 100%).
    pub fn update(&mut self, progress: Progress) {
        let interval = if self.terminal {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let finished = progress.done == progress.total;
        if !finished && self.last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        self.last = Some(Instant::now());
        let percent = if progress.total == 0 {
            100.0
        } else {
            progress.done as f64 * 100.0 / progress.total as f64
        };
        let seconds = progress.elapsed.as_secs_f64().max(1e-3);
        let rate = progress.bytes_read as f64 / seconds / f64::from(1 << 20);
        let eta = if progress.done == 0 {
            String::from("--:--")
        } else {
            let left = Duration::from_secs_f64(
                seconds * (progress.total - progress.done) as f64 / progress.done as f64,
            )
            .as_secs();
            format!("{}:{:02}", left / 60, left % 60)
        };
        let line = format!("Copying data : [{percent:5.1} %] {rate:8.1} MiB/s  ETA {eta}");
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}");
            if finished {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
        self.printed = true;
    }
}
