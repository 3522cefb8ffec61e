//! Where a dump goes: opening a [`Destination`] into a [`Sink`].
//!
//! A local path is written as its incomplete name and renamed at the end (see
//! [`super::durable`]); a block or character device is written in place; standard output
//! carries a flattened stream; any other destination (the ssh target's remote file) brings its
//! own [`OpenSink`]. The format writers never know which of these they write to.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::durable::{Existing, existing, incomplete_name, sync_in_place};
use super::sink::Stream;
use super::{FileSink, FlatSink, OutputError, Sink};

/// Where the dump goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A file (written as `<file>-incomplete`, then renamed) or a device (written in place).
    Path(PathBuf),
    /// Standard output (flattened format only).
    Stdout,
    /// A sink of the caller's (a file on another machine).
    Custom(Arc<dyn OpenSink>),
}

/// How the output is to be written, as far as opening it is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenRequest {
    /// A flattened stream instead of a seekable file.
    pub flattened: bool,
    /// The flattened stream inside an LZ4 frame.
    pub lz4: bool,
    /// Replace an existing file.
    pub overwrite: bool,
}

/// Opens a destination that is not a local path: the ssh target's remote file.
pub trait OpenSink: std::fmt::Debug + Send + Sync {
    /// Opens the sink for an output written as `request` says. The sink's `finish` makes the
    /// output durable under its final name.
    fn open(&self, request: &OpenRequest) -> Result<Opened, DestinationError>;
}

/// Why a destination could not be opened; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The request does not suit the destination.
    #[error("{0}")]
    Usage(String),
    /// The output file cannot be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The output file exists.
    #[error("{0} already exists (use -f to overwrite it)")]
    Exists(PathBuf),
    /// The destination refused the first bytes (a stream's header, a remote file's creation).
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// An opened destination: the sink and how to finalise it.
pub struct Opened {
    /// Where the bytes go.
    pub sink: Box<dyn Sink>,
    /// `(incomplete name, final name)` of a local file to rename at the end.
    pub rename: Option<(PathBuf, PathBuf)>,
    /// The name of the output while it is incomplete, reported if the dump fails.
    pub partial: Option<PathBuf>,
    /// The output's name for messages and the summary.
    pub label: String,
}

/// Starts a flattened stream on `out`, inside an LZ4 frame when asked.
pub fn flat_sink<W: Stream + 'static>(
    out: W,
    lz4: bool,
    label: &str,
) -> Result<Box<dyn Sink>, OutputError> {
    Ok(if lz4 {
        Box::new(FlatSink::new(
            lz4_flex::frame::FrameEncoder::new(out),
            label,
        )?)
    } else {
        Box::new(FlatSink::new(out, label)?)
    })
}

/// Opens `destination` for an output written as `request` says.
pub fn open(destination: &Destination, request: &OpenRequest) -> Result<Opened, DestinationError> {
    if let Destination::Custom(opener) = destination {
        return opener.open(request);
    }
    if request.lz4 && !request.flattened {
        return Err(DestinationError::Usage(
            "--lz4 frames a flattened stream: it needs -F".into(),
        ));
    }
    let path = match destination {
        Destination::Stdout => {
            if !request.flattened {
                return Err(DestinationError::Usage(
                    "writing to standard output needs -F (flattened format)".into(),
                ));
            }
            let out = BufWriter::with_capacity(1 << 20, io::stdout());
            return Ok(Opened {
                sink: flat_sink(out, request.lz4, "standard output")?,
                rename: None,
                partial: None,
                label: "-".into(),
            });
        }
        Destination::Path(path) => path,
        Destination::Custom(_) => unreachable!("handled above"),
    };
    if let Existing::Stream(kind) = existing(path) {
        return open_stream(path, kind, request);
    }
    let create = |p: &Path, regular: bool| -> Result<File, DestinationError> {
        let mut open = OpenOptions::new();
        open.write(true);
        if regular {
            open.create(true).truncate(true).mode(0o600);
        }
        open.open(p).map_err(|source| DestinationError::Create {
            path: p.to_owned(),
            source,
        })
    };
    let device = existing(path) == Existing::BlockDevice;
    let (file, rename, written_as) = if device {
        (create(path, false)?, None, path.clone())
    } else {
        if path.exists() && !request.overwrite {
            return Err(DestinationError::Exists(path.clone()));
        }
        let temporary = incomplete_name(path);
        (
            create(&temporary, true)?,
            Some((temporary.clone(), path.clone())),
            temporary,
        )
    };
    let label = written_as.display().to_string();
    let sink = if request.flattened {
        flat_sink(BufWriter::with_capacity(1 << 20, file), request.lz4, &label)?
    } else {
        Box::new(FileSink::new(file, &label))
    };
    Ok(Opened {
        partial: rename.as_ref().map(|(temporary, _)| temporary.clone()),
        sink,
        rename,
        label,
    })
}

/// A character device, FIFO or socket that already exists at `path`: a flattened stream is
/// written into it in place; a seekable format cannot be.
fn open_stream(path: &Path, kind: &str, request: &OpenRequest) -> Result<Opened, DestinationError> {
    if !request.flattened {
        return Err(DestinationError::Usage(format!(
            "{} is a {kind}: a kdump-compressed or ELF dump needs a regular file or a block \
             device; -F writes a flattened stream into it",
            path.display()
        )));
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| DestinationError::Create {
            path: path.to_owned(),
            source,
        })?;
    let label = path.display().to_string();
    let out = BufWriter::with_capacity(1 << 20, InPlace(file));
    Ok(Opened {
        sink: flat_sink(out, request.lz4, &label)?,
        rename: None,
        partial: None,
        label,
    })
}

/// A device or pipe written in place: completing it flushes and syncs where it can.
struct InPlace(File);

impl io::Write for InPlace {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Stream for InPlace {
    fn complete(&mut self) -> io::Result<()> {
        sync_in_place(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_under_its_incomplete_name_and_never_over_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmcore");
        let opened = open(&Destination::Path(path.clone()), &OpenRequest::default()).unwrap();
        let temporary = dir.path().join("vmcore-incomplete");
        assert_eq!(opened.partial.as_deref(), Some(temporary.as_path()));
        assert_eq!(opened.rename, Some((temporary.clone(), path.clone())));
        assert!(temporary.exists() && !path.exists());
        std::fs::write(&path, b"old").unwrap();
        let refused = open(&Destination::Path(path.clone()), &OpenRequest::default());
        assert!(matches!(refused, Err(DestinationError::Exists(p)) if p == path));
    }

    #[test]
    fn standard_output_and_lz4_need_a_flattened_stream() {
        for (destination, request) in [
            (Destination::Stdout, OpenRequest::default()),
            (
                Destination::Path("/nonexistent/x".into()),
                OpenRequest {
                    lz4: true,
                    ..OpenRequest::default()
                },
            ),
        ] {
            assert!(matches!(
                open(&destination, &request),
                Err(DestinationError::Usage(_))
            ));
        }
    }
}
