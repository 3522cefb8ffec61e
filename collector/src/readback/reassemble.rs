//! Replaying a flattened stream into a seekable dump file (`makedumpfile -R`).

use std::io::{self, BufReader, Read};

use super::{DumpFileError, LZ4_FRAME_MAGIC};
use crate::format::bytes::to_usize;
use crate::format::flat::{self, FlatError, Record};
use crate::output::{OutputError, Sink};

/// Why a stream could not be reassembled.
#[derive(Debug, thiserror::Error)]
pub enum ReassembleError {
    /// The stream is not a flattened dump, or a record header is invalid.
    #[error("{what} at stream offset {offset:#x}: {source}")]
    Format {
        /// Which part.
        what: &'static str,
        /// Where in the stream.
        offset: u64,
        /// Why.
        source: FlatError,
    },
    /// The stream ended before its end marker.
    #[error(
        "the stream ends at offset {offset:#x} without its end marker (the dump is incomplete)"
    )]
    Truncated {
        /// Where the stream ended.
        offset: u64,
    },
    /// Reading the stream failed.
    #[error("reading the stream at offset {offset:#x}: {source}")]
    Read {
        /// Where in the stream.
        offset: u64,
        /// Why.
        source: io::Error,
    },
    /// The destination exists and is not a regular file: a dump file needs one.
    #[error("{} is a {kind}: the reassembled dump is a seekable file; give a file name", .path.display())]
    NotAFile {
        /// The destination.
        path: std::path::PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Writing the dump failed.
    #[error(transparent)]
    Write(#[from] OutputError),
    /// The dump file's own checks failed.
    #[error(transparent)]
    File(#[from] DumpFileError),
    /// The output file cannot be created or sized.
    #[error("{path}: {source}")]
    Create {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Counts of what a reassembly did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reassembled {
    /// Records replayed.
    pub records: u64,
    /// Bytes of the stream read.
    pub stream_bytes: u64,
    /// Size of the rebuilt file (end of the furthest record).
    pub file_size: u64,
}

struct Counting<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ended first.
fn read_full<R: Read>(reader: &mut Counting<R>, buf: &mut [u8]) -> Result<bool, ReassembleError> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            // A cut LZ4 frame reports the end of its input as UnexpectedEof.
            Ok(0) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ReassembleError::Read {
                    offset: reader.offset,
                    source,
                });
            }
        }
    }
    Ok(true)
}

/// Replays the flattened stream `input` (optionally inside an LZ4 frame) into `sink`.
pub fn reassemble<R: Read, S: Sink + ?Sized>(
    input: R,
    sink: &mut S,
) -> Result<Reassembled, ReassembleError> {
    let mut buffered = BufReader::with_capacity(1 << 20, input);
    let mut peek = [0u8; 4];
    let mut raw = Counting {
        inner: &mut buffered,
        offset: 0,
    };
    if !read_full(&mut raw, &mut peek)? {
        return Err(ReassembleError::Truncated { offset: raw.offset });
    }
    let chained = io::Cursor::new(peek).chain(raw.inner);
    if peek == LZ4_FRAME_MAGIC {
        let decoder = lz4_flex::frame::FrameDecoder::new(chained);
        replay(
            Counting {
                inner: decoder,
                offset: 0,
            },
            sink,
        )
    } else {
        replay(
            Counting {
                inner: chained,
                offset: 0,
            },
            sink,
        )
    }
}

fn replay<R: Read, S: Sink + ?Sized>(
    mut stream: Counting<R>,
    sink: &mut S,
) -> Result<Reassembled, ReassembleError> {
    let mut header = vec![0u8; flat::HEADER_SIZE];
    if !read_full(&mut stream, &mut header)? {
        return Err(ReassembleError::Truncated {
            offset: stream.offset,
        });
    }
    flat::decode_header(&header).map_err(|source| ReassembleError::Format {
        what: "stream header",
        offset: 0,
        source,
    })?;
    let mut done = Reassembled::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let at = stream.offset;
        let mut record = [0u8; flat::RECORD_HEADER_SIZE];
        if !read_full(&mut stream, &mut record)? {
            return Err(ReassembleError::Truncated { offset: at });
        }
        let (offset, size) = match flat::decode_record(&record) {
            Ok(Record::End) => break,
            Ok(Record::Data { offset, size }) => (offset, size),
            Err(source) => {
                return Err(ReassembleError::Format {
                    what: "record header",
                    offset: at,
                    source,
                });
            }
        };
        let mut written = 0;
        while written < size {
            let n = to_usize((size - written).min(buf.len() as u64));
            if !read_full(&mut stream, &mut buf[..n])? {
                return Err(ReassembleError::Truncated {
                    offset: stream.offset,
                });
            }
            sink.write_at(offset + written, &buf[..n])?;
            written += n as u64;
        }
        done.records += 1;
        done.file_size = done.file_size.max(offset + size);
    }
    done.stream_bytes = stream.offset;
    Ok(done)
}

/// Replays `input` into the file `dumpfile`, written as `<dumpfile>-incomplete` and renamed
/// once the end marker was read and the file synced. On a cut stream the partial file is kept
/// under its incomplete name.
pub fn reassemble_to_file<R: Read>(
    input: R,
    dumpfile: &std::path::Path,
) -> Result<Reassembled, ReassembleError> {
    use std::os::unix::fs::OpenOptionsExt;

    use crate::output::durable::{Existing, existing};
    match existing(dumpfile) {
        Existing::File => {}
        Existing::BlockDevice => {
            return Err(ReassembleError::NotAFile {
                path: dumpfile.to_owned(),
                kind: "block device",
            });
        }
        Existing::Stream(kind) => {
            return Err(ReassembleError::NotAFile {
                path: dumpfile.to_owned(),
                kind,
            });
        }
    }
    let temporary = crate::output::incomplete_name(dumpfile);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|source| ReassembleError::Create {
            path: temporary.clone(),
            source,
        })?;
    let mut sink = crate::output::FileSink::new(file, &temporary.display().to_string());
    let done = reassemble(input, &mut sink)?;
    // Bytes no record wrote (sparse regions) are still part of the file.
    sink.file()
        .set_len(done.file_size)
        .map_err(|source| ReassembleError::Create {
            path: temporary.clone(),
            source,
        })?;
    sink.finish()?;
    crate::output::finalize(&temporary, dumpfile)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::FlatSink;

    /// An in-memory seekable file.
    #[derive(Default)]
    struct Memory(Vec<u8>);

    impl Sink for Memory {
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), OutputError> {
            let end = to_usize(offset) + data.len();
            if self.0.len() < end {
                self.0.resize(end, 0);
            }
            self.0[to_usize(offset)..end].copy_from_slice(data);
            Ok(())
        }
        fn finish(&mut self) -> Result<(), OutputError> {
            Ok(())
        }
        fn bytes_written(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn stream(writes: &[(u64, &[u8])], end: bool) -> Vec<u8> {
        let mut sink = FlatSink::new(Vec::new(), "test").unwrap();
        for (offset, data) in writes {
            sink.write_at(*offset, data).unwrap();
        }
        if end {
            sink.finish().unwrap();
        }
        sink.into_inner()
    }

    #[test]
    fn later_records_win_and_offsets_may_go_backwards() {
        let bytes = stream(&[(8, b"world"), (0, b"hello..."), (8, b"WORLD")], true);
        let mut file = Memory::default();
        let done = reassemble(&bytes[..], &mut file).unwrap();
        assert_eq!(file.0, b"hello...WORLD");
        assert_eq!((done.records, done.file_size), (3, 13));
    }

    #[test]
    fn a_stream_without_end_marker_is_incomplete() {
        let bytes = stream(&[(0, b"abc")], false);
        let err = reassemble(&bytes[..], &mut Memory::default()).unwrap_err();
        assert!(
            matches!(err, ReassembleError::Truncated { offset } if offset == 4096 + 16 + 3),
            "{err}"
        );
        let cut = &bytes[..4096 + 10];
        assert!(matches!(
            reassemble(cut, &mut Memory::default()),
            Err(ReassembleError::Truncated { .. })
        ));
    }

    #[test]
    fn lz4_framed_streams_are_unwrapped() {
        use std::io::Write;
        let bytes = stream(&[(0, b"inside lz4")], true);
        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
        encoder.write_all(&bytes).unwrap();
        let framed = encoder.finish().unwrap();
        let mut file = Memory::default();
        reassemble(&framed[..], &mut file).unwrap();
        assert_eq!(file.0, b"inside lz4");
    }

    #[test]
    fn garbage_is_not_a_stream() {
        let err = reassemble(&[0u8; 5000][..], &mut Memory::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ReassembleError::Format {
                    what: "stream header",
                    ..
                }
            ),
            "{err}"
        );
    }
}
