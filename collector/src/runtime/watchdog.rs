//! The hardware watchdog, petted from its own thread for the whole capture.
//!
//! If a capture kernel hangs, a hardware watchdog (the i6300esb in the lab, iTCO or IPMI on
//! servers) resets the machine. The capture itself must not be reset while it is working, so
//! rkdump opens the device, sets its timeout and writes to it every third of that timeout.
//! After a successful capture it closes the device with the magic 'V', which stops drivers
//! without `nowayout`; after a failure it keeps petting until the final action resets the
//! machine anyway.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::log::Log;

/// A running watchdog keeper.
#[derive(Debug)]
pub struct Watchdog {
    path: PathBuf,
    file: Arc<File>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The first watchdog device present.
pub fn find() -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir("/dev")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("watchdog") && n != "watchdog")
        .collect();
    names.sort();
    names
        .first()
        .map(|n| Path::new("/dev").join(n))
        .or_else(|| {
            let legacy = Path::new("/dev/watchdog");
            legacy.exists().then(|| legacy.to_owned())
        })
}

impl Watchdog {
    /// Opens `path`, sets its timeout to `timeout` seconds and, unless `pet` is false (a
    /// diagnostic mode proving the reset works), starts petting it.
    pub fn start(path: &Path, timeout: i32, pet: bool, log: &Log) -> std::io::Result<Self> {
        let file = OpenOptions::new().write(true).open(path)?;
        let actual = match crate::sys::watchdog_set_timeout(&file, timeout) {
            Ok(actual) => actual,
            Err(e) => {
                log.line(&format!(
                    "{}: cannot set the timeout ({e}); keeping the driver's",
                    path.display()
                ));
                timeout
            }
        };
        let file = Arc::new(file);
        let stop = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_secs(u64::try_from(actual.max(3) / 3).unwrap_or(1));
        let thread = if pet {
            let (file, stop) = (Arc::clone(&file), Arc::clone(&stop));
            Some(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = (&*file).write_all(b"\0");
                    // Sleep in short slices so that stopping is prompt.
                    let mut slept = Duration::ZERO;
                    while slept < interval && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        slept += Duration::from_millis(100);
                    }
                }
            }))
        } else {
            None
        };
        log.line(&format!(
            "watchdog {}: timeout {actual} s, {}",
            path.display(),
            if pet {
                format!("petted every {} s", interval.as_secs())
            } else {
                "NOT petted (rkdump.watchdog=nopet)".into()
            }
        ));
        Ok(Self {
            path: path.to_owned(),
            file,
            stop,
            thread,
        })
    }

    /// Stops petting and disarms the watchdog with the magic close.
    pub fn disarm(mut self, log: &Log) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        match (&*self.file).write_all(b"V") {
            Ok(()) => log.line(&format!(
                "watchdog {}: disarmed (magic close)",
                self.path.display()
            )),
            Err(e) => log.line(&format!(
                "watchdog {}: magic close failed: {e}",
                self.path.display()
            )),
        }
    }
}
