//! makedumpfile's flattened format (`-F`): a dump file as a stream of positioned writes.
//!
//! A seekable dump cannot be written to a pipe, an ssh channel or a raw device read back later, so
//! `-F` turns every `pwrite(offset, data)` into a record on a stream:
//!
//! ```text
//! 4096-byte header: "makedumpfile" NUL-padded to 16 bytes, type = 1, version = 1 (i64 big-endian)
//! records:          offset (i64 BE), size (i64 BE), then `size` bytes of data
//! end marker:       offset = -1, size = -1
//! ```
//!
//! Replaying the records in order (later writes win) rebuilds the file; `makedumpfile -R` and
//! `rkdump reassemble` do that.

use super::bytes::{self, OutOfBounds};

/// Size of the stream header.
pub const HEADER_SIZE: usize = 4096;
/// Size of a record header.
pub const RECORD_HEADER_SIZE: usize = 16;
/// The stream signature, NUL-padded.
pub const SIGNATURE: &[u8; 16] = b"makedumpfile\0\0\0\0";
/// The only stream type (a flattened dump).
pub const TYPE_FLATTENED: i64 = 1;
/// The stream format version.
pub const VERSION: i64 = 1;

/// Why bytes are not a flattened stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlatError {
    /// The stream does not start with the makedumpfile signature.
    #[error("not a flattened dump stream (bad signature)")]
    BadSignature,
    /// The stream type is not a flattened dump.
    #[error("unsupported flattened stream type {0}")]
    BadType(i64),
    /// A record header holds a negative or overflowing offset or size.
    #[error("invalid flattened record: offset {offset}, size {size}")]
    BadRecord {
        /// The record's offset field.
        offset: i64,
        /// The record's size field.
        size: i64,
    },
    /// A header is cut short.
    #[error("truncated flattened stream: {0}")]
    Truncated(#[from] OutOfBounds),
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// `size` bytes follow, to be written at `offset`.
    Data {
        /// Destination offset in the rebuilt file.
        offset: u64,
        /// Number of data bytes following the header.
        size: u64,
    },
    /// The end marker: the stream is complete.
    End,
}

/// Encodes the stream header.
pub fn encode_header() -> [u8; HEADER_SIZE] {
    let mut out = [0u8; HEADER_SIZE];
    out[..16].copy_from_slice(SIGNATURE);
    out[16..24].copy_from_slice(&TYPE_FLATTENED.to_be_bytes());
    out[24..32].copy_from_slice(&VERSION.to_be_bytes());
    out
}

/// Checks a stream header.
pub fn decode_header(raw: &[u8]) -> Result<(), FlatError> {
    if bytes::slice(raw, 0, 16)? != SIGNATURE {
        return Err(FlatError::BadSignature);
    }
    match bytes::i64_be(raw, 16)? {
        TYPE_FLATTENED => Ok(()),
        other => Err(FlatError::BadType(other)),
    }
}

/// Encodes a record header.
pub fn encode_record(record: Record) -> [u8; RECORD_HEADER_SIZE] {
    let (offset, size) = match record {
        Record::Data { offset, size } => (
            i64::try_from(offset).expect("file offsets fit in i64"),
            i64::try_from(size).expect("record sizes fit in i64"),
        ),
        Record::End => (-1, -1),
    };
    let mut out = [0u8; RECORD_HEADER_SIZE];
    out[..8].copy_from_slice(&offset.to_be_bytes());
    out[8..].copy_from_slice(&size.to_be_bytes());
    out
}

/// Decodes a record header.
pub fn decode_record(raw: &[u8]) -> Result<Record, FlatError> {
    let offset = bytes::i64_be(raw, 0)?;
    let size = bytes::i64_be(raw, 8)?;
    match (u64::try_from(offset), u64::try_from(size)) {
        _ if offset == -1 && size == -1 => Ok(Record::End),
        (Ok(o), Ok(s)) if o.checked_add(s).is_some_and(|end| end <= i64::MAX as u64) => {
            Ok(Record::Data { offset: o, size: s })
        }
        _ => Err(FlatError::BadRecord { offset, size }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn header_is_makedumpfiles() {
        let header = encode_header();
        assert_eq!(&header[..12], b"makedumpfile");
        assert_eq!(
            header[16..32],
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(decode_header(&header), Ok(()));
        let mut bad = header;
        bad[23] = 2;
        assert_eq!(decode_header(&bad), Err(FlatError::BadType(2)));
        assert_eq!(decode_header(&[0; 32]), Err(FlatError::BadSignature));
    }

    #[test]
    fn end_marker_and_bad_records() {
        assert_eq!(decode_record(&encode_record(Record::End)), Ok(Record::End));
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&(-5i64).to_be_bytes());
        assert_eq!(
            decode_record(&raw),
            Err(FlatError::BadRecord {
                offset: -5,
                size: 0
            })
        );
        raw[..8].copy_from_slice(&i64::MAX.to_be_bytes());
        raw[8..].copy_from_slice(&1i64.to_be_bytes());
        assert!(decode_record(&raw).is_err());
    }

    proptest! {
        #[test]
        fn records_round_trip(offset in 0u64..(1 << 62), size in 0u64..(1 << 40)) {
            let record = Record::Data { offset, size };
            prop_assert_eq!(decode_record(&encode_record(record)), Ok(record));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_header(&raw);
            let _ = decode_record(&raw);
        }
    }
}
