//! Destinations for positioned writes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use crate::format::flat::{self, Record};

/// Why a dump could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The destination is full.
    #[error("{target} is full: {len} bytes at offset {offset:#x} could not be written")]
    NoSpace {
        /// The destination.
        target: String,
        /// Offset of the failed write.
        offset: u64,
        /// Size of the failed write.
        len: usize,
    },
    /// Any other write failure.
    #[error("writing {len} bytes at offset {offset:#x} of {target}: {source}")]
    Io {
        /// The destination.
        target: String,
        /// Offset of the failed write.
        offset: u64,
        /// Size of the failed write.
        len: usize,
        /// The error.
        source: io::Error,
    },
}

impl OutputError {
    fn new(target: &str, offset: u64, len: usize, source: io::Error) -> Self {
        let target = target.to_owned();
        if source.raw_os_error() == Some(nix::libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            Self::NoSpace {
                target,
                offset,
                len,
            }
        } else {
            Self::Io {
                target,
                offset,
                len,
                source,
            }
        }
    }

    /// Whether the destination ran out of space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Self::NoSpace { .. })
    }
}

/// A destination for positioned writes.
pub trait Sink: Send {
    /// Writes `data` at `offset` of the dump file.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), OutputError>;

    /// Completes the output (end marker, flush, fsync).
    fn finish(&mut self) -> Result<(), OutputError>;

    /// Bytes handed to the destination so far, including any framing.
    fn bytes_written(&self) -> u64;
}

impl Sink for Box<dyn Sink> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), OutputError> {
        (**self).write_at(offset, data)
    }

    fn finish(&mut self) -> Result<(), OutputError> {
        (**self).finish()
    }

    fn bytes_written(&self) -> u64 {
        (**self).bytes_written()
    }
}

/// A [`FileSink`] makes its data durable (fdatasync) after this many bytes or [`SYNC_INTERVAL`],
/// whichever comes first. This bounds the dirty page cache of a small capture kernel and
/// surfaces write-back errors — an NFS server that died, a failing disk — while the dump runs
/// rather than at its very end: on a soft NFS mount write-back fails with EIO after the
/// mount's timeouts, but buffered writes keep "succeeding" at a crawl of a few pages a second.
const SYNC_EVERY: u64 = 64 << 20;
/// See [`SYNC_EVERY`].
const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Positioned writes to a file or block device.
#[derive(Debug)]
pub struct FileSink {
    file: File,
    target: String,
    written: u64,
    unsynced: u64,
    synced_at: std::time::Instant,
}

impl FileSink {
    /// Writes to `file`, named `target` in errors.
    pub fn new(file: File, target: &str) -> Self {
        Self {
            file,
            target: target.to_owned(),
            written: 0,
            unsynced: 0,
            synced_at: std::time::Instant::now(),
        }
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Sink for FileSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), OutputError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| OutputError::new(&self.target, offset, data.len(), e))?;
        self.written += data.len() as u64;
        self.unsynced += data.len() as u64;
        if self.unsynced >= SYNC_EVERY || self.synced_at.elapsed() >= SYNC_INTERVAL {
            // The error belongs to everything written since the last sync.
            let unsynced = usize::try_from(self.unsynced).unwrap_or(usize::MAX);
            let since = self.written - self.unsynced;
            self.file
                .sync_data()
                .map_err(|e| OutputError::new(&self.target, since, unsynced, e))?;
            self.unsynced = 0;
            self.synced_at = std::time::Instant::now();
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OutputError> {
        self.file
            .sync_all()
            .map_err(|e| OutputError::new(&self.target, self.written, 0, e))
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// A byte stream that can be completed: flushed, made durable where that means something,
/// and closed where the encoding has a trailer (an LZ4 frame's end mark).
pub trait Stream: Write + Send {
    /// Completes the stream.
    fn complete(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl Stream for Vec<u8> {}

impl Stream for io::Stdout {}

impl Stream for File {
    fn complete(&mut self) -> io::Result<()> {
        self.flush()?;
        self.sync_all()
    }
}

impl<W: Stream> Stream for BufWriter<W> {
    fn complete(&mut self) -> io::Result<()> {
        self.flush()?;
        self.get_mut().complete()
    }
}

impl<W: Stream> Stream for lz4_flex::frame::FrameEncoder<W> {
    fn complete(&mut self) -> io::Result<()> {
        self.try_finish().map_err(io::Error::other)?;
        self.get_mut().complete()
    }
}

/// Positioned writes as a makedumpfile flattened stream.
#[derive(Debug)]
pub struct FlatSink<W: Stream> {
    out: W,
    target: String,
    written: u64,
}

impl<W: Stream> FlatSink<W> {
    /// Starts a flattened stream on `out` (writes the stream header).
    pub fn new(mut out: W, target: &str) -> Result<Self, OutputError> {
        out.write_all(&flat::encode_header())
            .map_err(|e| OutputError::new(target, 0, flat::HEADER_SIZE, e))?;
        Ok(Self {
            out,
            target: target.to_owned(),
            written: flat::HEADER_SIZE as u64,
        })
    }

    /// Gives the stream back (after [`Sink::finish`]).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Stream> Sink for FlatSink<W> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), OutputError> {
        // makedumpfile -R takes a record of size 0 for the end of the stream.
        if data.is_empty() {
            return Ok(());
        }
        let header = flat::encode_record(Record::Data {
            offset,
            size: data.len() as u64,
        });
        let at = self.written;
        self.out
            .write_all(&header)
            .and_then(|()| self.out.write_all(data))
            .map_err(|e| OutputError::new(&self.target, at, data.len(), e))?;
        self.written += (header.len() + data.len()) as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OutputError> {
        let at = self.written;
        self.out
            .write_all(&flat::encode_record(Record::End))
            .and_then(|()| self.out.complete())
            .map_err(|e| OutputError::new(&self.target, at, flat::RECORD_HEADER_SIZE, e))?;
        self.written += flat::RECORD_HEADER_SIZE as u64;
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_records_carry_offsets_big_endian() {
        let mut sink = FlatSink::new(Vec::new(), "memory").unwrap();
        sink.write_at(0x1000, b"abc").unwrap();
        sink.finish().unwrap();
        let bytes = sink.into_inner();
        assert_eq!(bytes.len(), 4096 + 16 + 3 + 16);
        assert_eq!(
            &bytes[4096..4112],
            &[0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 3]
        );
        assert_eq!(&bytes[4112..4115], b"abc");
        assert_eq!(&bytes[4115..], &[0xff; 16]);
    }

    #[test]
    fn a_full_device_is_reported_as_no_space() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut sink = FlatSink::new(io::BufWriter::with_capacity(0, full), "/dev/full")
            .expect_err("writing to /dev/full fails");
        assert!(sink.is_no_space(), "{sink}");
        sink = OutputError::NoSpace {
            target: "x".into(),
            offset: 4096,
            len: 1,
        };
        assert_eq!(
            sink.to_string(),
            "x is full: 1 bytes at offset 0x1000 could not be written"
        );
    }
}
