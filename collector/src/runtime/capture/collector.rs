//! The dump step: kdump.conf's `core_collector` carried out by the engine (`makedumpfile`
//! options) or as an unfiltered copy (`cp`, `cat`, `scp`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::target::DumpDir;
use super::{Capture, CaptureError};
use crate::config::collector::{CoreCollector, collector_options};
use crate::dump::{self, SaveError};
use crate::output::{self, Destination, OpenRequest};

impl Capture<'_> {
    /// Writes the dump to the raw `device` or into `dir`.
    pub(super) fn dump(
        &self,
        device: Option<&Path>,
        dir: Option<&DumpDir>,
    ) -> Result<(), CaptureError> {
        let line = self.config.core_collector_line;
        let Some(collector) = CoreCollector::parse(&self.config.core_collector) else {
            return Err(CaptureError::Collector("core_collector is empty".into()));
        };
        let makedumpfile = collector.name() == "makedumpfile";
        let (destination, flattened) = match (device, dir) {
            (Some(device), _) => (Destination::Path(device.to_owned()), true),
            // kdump-utils' ssh form (its ssh targets require -F): vmcore.flat through dd.
            (None, Some(DumpDir::Remote(remote))) if makedumpfile && collector.asks_flattened() => {
                self.log.line(
                    "core_collector has -F: vmcore.flat piped to dd on the server, as \
                     kdump-utils does (drop -F for a seekable vmcore written over SFTP, which \
                     resumes after a dropped connection)",
                );
                (remote.stream_destination("vmcore.flat"), true)
            }
            (None, Some(dir)) => (dir.destination("vmcore"), false),
            (None, None) => unreachable!("every target has a device or a dump directory"),
        };
        match collector.name() {
            "makedumpfile" => {
                let vmcore = self.vmcore.display().to_string();
                let options = collector.options_for(flattened);
                let (mut save, _, notes) =
                    collector_options(&options, &vmcore, "vmcore").map_err(|e| {
                        CaptureError::Collector(format!("core_collector (line {line}): {e}"))
                    })?;
                for note in notes {
                    self.log.line(&format!("core_collector: {note}"));
                }
                save.destination = destination;
                self.log.line(&format!(
                    "dump level {}, {} worker thread(s), {}",
                    save.level.bits(),
                    save.threads,
                    if flattened {
                        "flattened stream"
                    } else {
                        "kdump-compressed file"
                    }
                ));
                self.save(&save)
            }
            "cp" | "cat" | "scp" if !flattened => Ok(copy_file(&self.vmcore, &destination)?),
            other => Err(CaptureError::Collector(format!(
                "core_collector (line {line}): {other} is not supported (makedumpfile, cp, cat or \
                 scp)"
            ))),
        }
    }

    /// Runs the engine, logging progress every 5 s and the summary at the end.
    fn save(&self, save: &dump::SaveOptions) -> Result<(), CaptureError> {
        let mut last = Instant::now();
        let result = self.guarded(|| {
            dump::save(save, &mut |p| {
                if last.elapsed() >= Duration::from_secs(5) {
                    last = Instant::now();
                    self.log
                        .line(&format!("dump: {} of {} pages", p.done, p.total));
                }
            })
        });
        match result {
            Ok(summary) => {
                for warning in &summary.warnings {
                    self.log.line(&format!("dump: warning: {warning}"));
                }
                self.log
                    .line(&format!("dump summary: {}", summary.to_json_line()));
                self.log.line(&format!(
                    "dump: {} bytes, {} of {} pages in {:.1} s",
                    summary.bytes_written,
                    summary.dumped_pages,
                    summary.original_pages(),
                    summary.seconds
                ));
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                self.log.line(&format!("dump: {message}"));
                if let SaveError::Output { source, .. } = &error
                    && source.is_no_space()
                {
                    self.log.line(
                        "dump: the target is full; vmcore-incomplete and vmcore-dmesg.txt are \
                         kept",
                    );
                }
                Err(error.into())
            }
        }
    }
}

/// Why an unfiltered copy failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// The destination cannot be opened.
    #[error(transparent)]
    Destination(#[from] output::DestinationError),
    /// Writing failed.
    #[error(transparent)]
    Output(#[from] output::OutputError),
    /// The vmcore cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The vmcore.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// `core_collector cp` (and `scp` on an ssh target): an unfiltered copy of the vmcore, still
/// written as `-incomplete` and renamed.
fn copy_file(source: &Path, destination: &Destination) -> Result<(), CopyError> {
    let mut opened = output::destination::open(destination, &OpenRequest::default())?;
    let read_error = |e| CopyError::Read {
        path: source.to_owned(),
        source: e,
    };
    let mut input = std::fs::File::open(source).map_err(read_error)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = std::io::Read::read(&mut input, &mut buffer).map_err(read_error)?;
        if n == 0 {
            break;
        }
        opened.sink.write_at(offset, &buffer[..n])?;
        offset += n as u64;
    }
    opened.sink.finish()?;
    if let Some((temporary, target)) = &opened.rename {
        output::finalize(temporary, target)?;
    }
    Ok(())
}
