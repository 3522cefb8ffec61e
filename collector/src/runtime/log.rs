//! The capture log: every line goes to the console and to a file in `/run`, which is copied next
//! to the dump as `kexec-dmesg.log` (with the capture kernel's own log appended).
//!
//! Lines carry the time since boot, like the kernel's: `[   12.345678] rkdump: ...`. A
//! [`Step`] logs its start and, when dropped, how long it took.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use nix::time::{ClockId, clock_gettime};

/// Where the supervisor and the worker write their log.
pub const LOG_FILE: &str = "/run/rkdump/log";

/// Seconds since boot (`CLOCK_BOOTTIME`), as the kernel stamps its messages.
pub fn uptime() -> f64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// A log writing to the console (standard error) and, when it could be opened, a file.
#[derive(Debug)]
pub struct Log {
    file: Mutex<Option<File>>,
    path: Option<PathBuf>,
}

impl Log {
    /// Logs to standard error only.
    pub fn console() -> Self {
        Self {
            file: Mutex::new(None),
            path: None,
        }
    }

    /// Logs to standard error and appends to `path` (its directory is created).
    pub fn with_file(path: &Path) -> Self {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = OpenOptions::new().create(true).append(true).open(path).ok();
        Self {
            file: Mutex::new(file),
            path: Some(path.to_owned()),
        }
    }

    /// A second handle on the same log, for code that needs to own one (the ssh transfer's
    /// reconnection messages).
    pub fn duplicate(&self) -> Self {
        let file = self
            .file
            .lock()
            .ok()
            .and_then(|f| f.as_ref().and_then(|f| f.try_clone().ok()));
        Self {
            file: Mutex::new(file),
            path: self.path.clone(),
        }
    }

    /// The file the log is appended to.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes one line.
    pub fn line(&self, message: &str) {
        let text = format!("[{:12.6}] rkdump: {message}\n", uptime());
        let _ = std::io::stderr().write_all(text.as_bytes());
        if let Ok(mut file) = self.file.lock()
            && let Some(file) = file.as_mut()
        {
            let _ = file.write_all(text.as_bytes());
        }
    }

    /// Starts a timed step.
    pub fn step<'a>(&'a self, name: &str) -> Step<'a> {
        self.line(&format!("{name}: started"));
        Step {
            log: self,
            name: name.to_owned(),
            started: Instant::now(),
        }
    }
}

/// A step of the capture; logs its duration when dropped.
#[derive(Debug)]
pub struct Step<'a> {
    log: &'a Log,
    name: String,
    started: Instant,
}

impl Drop for Step<'_> {
    fn drop(&mut self) {
        self.log.line(&format!(
            "{}: done in {:.2} s",
            self.name,
            self.started.elapsed().as_secs_f64()
        ));
    }
}
