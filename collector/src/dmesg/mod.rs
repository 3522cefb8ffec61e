//! The dead kernel's log (`vmcore-dmesg.txt`), byte for byte as `makedumpfile --dump-dmesg`
//! writes it.
//!
//! Kernels from 5.10 keep the log in the lockless ring buffer `prb` ([`lockless`]); kernels
//! 3.5 to 5.9 in the variable-length `printk_log` records of `log_buf` ([`legacy`]). Both give
//! records of (timestamp, caller, text), formatted by [`format_record`]. Extracting the log
//! needs only address translation and the printk symbols, not `mem_map`, so it works when page
//! filtering is impossible.

pub mod legacy;
pub mod lockless;

use crate::format::vmcoreinfo::VmcoreInfoError;
use crate::vmcore::{KernelMemory, TranslateError, Vmcore};

/// Largest ring buffer (and descriptor array) accepted. Kernels default to 128 KiB to a few
/// MiB (`CONFIG_LOG_BUF_SHIFT` is at most 25, 32 MiB); this bounds what corrupt metadata can make
/// us allocate in a capture kernel with little memory.
pub const MAX_RING_BYTES: u64 = 64 << 20;

/// Why the log cannot be extracted.
#[derive(Debug, thiserror::Error)]
pub enum DmesgError {
    /// The vmcore cannot be opened.
    #[error("{0}")]
    Vmcore(Box<crate::vmcore::VmcoreError>),
    /// VMCOREINFO lacks the printk symbols and offsets.
    #[error("{0}")]
    Info(#[from] VmcoreInfoError),
    /// Kernel memory could not be read.
    #[error("{0}")]
    Memory(#[from] TranslateError),
    /// The ring buffer's metadata is implausible.
    #[error("corrupt printk ring buffer: {0}")]
    Corrupt(String),
}

/// Opens the vmcore at `path` and extracts its kernel log.
pub fn extract_path(path: &std::path::Path) -> Result<Vec<u8>, DmesgError> {
    let vmcore = Vmcore::open(path).map_err(|e| DmesgError::Vmcore(Box::new(e)))?;
    extract(&vmcore)
}

/// Extracts the kernel log from `vmcore`.
pub fn extract(vmcore: &Vmcore) -> Result<Vec<u8>, DmesgError> {
    let mut memory = KernelMemory::new(vmcore)?;
    if vmcore.info().symbol("prb")?.is_some() {
        lockless::extract(&mut memory)
    } else {
        legacy::extract(&mut memory)
    }
}

/// Appends one record as makedumpfile prints it:
/// `[ssssss.uuuuuu] [  T1234] text`, continuation lines indented to the text column, bytes
/// that are neither printable nor whitespace escaped (`\xNN`; `\xffffffNN` for bytes from
/// 0x80, as C's sign-extended `char` prints them), and a final newline.
pub fn format_record(out: &mut Vec<u8>, ts_nsec: u64, caller_id: Option<u32>, text: &[u8]) {
    let start = out.len();
    out.extend_from_slice(
        format!(
            "[{:5}.{:06}] ",
            ts_nsec / 1_000_000_000,
            ts_nsec % 1_000_000_000 / 1000
        )
        .as_bytes(),
    );
    if let Some(id) = caller_id {
        let kind = if id & 0x8000_0000 != 0 { 'C' } else { 'T' };
        out.extend_from_slice(
            format!("[{:>8}] ", format!("{kind}{}", id & 0x7fff_ffff)).as_bytes(),
        );
    }
    let indent = out.len() - start;
    for &byte in text {
        match byte {
            b'\n' => {
                out.push(b'\n');
                out.resize(out.len() + indent, b' ');
            }
            0x20..=0x7e | b'\t' | 0x0b | 0x0c | b'\r' => out.push(byte),
            0x80..=0xff => out.extend_from_slice(format!("\\xffffff{byte:02x}").as_bytes()),
            _ => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
        }
    }
    out.push(b'\n');
}

/// Reads a little-endian integer of `width` bytes at `offset` of `bytes`, or reports where the
/// structure is cut.
fn field(bytes: &[u8], offset: u64, width: usize, what: &str) -> Result<u64, DmesgError> {
    let at = usize::try_from(offset)
        .map_err(|_| DmesgError::Corrupt(format!("{what}: offset {offset}")))?;
    let raw = bytes.get(at..at + width).ok_or_else(|| {
        DmesgError::Corrupt(format!(
            "{what} at offset {at} is outside its {}-byte structure",
            bytes.len()
        ))
    })?;
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(raw);
    Ok(u64::from_le_bytes(buf))
}

/// Reads the 4-byte little-endian field at `offset` of `bytes`, as [`field`] does.
fn field_u32(bytes: &[u8], offset: u64, what: &str) -> Result<u32, DmesgError> {
    let value = field(bytes, offset, 4, what)?;
    Ok(u32::try_from(value).expect("a 4-byte field fits in a u32"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_caller_and_continuation_lines() {
        let mut out = Vec::new();
        format_record(&mut out, 1_234_567_891_234, Some(1), b"first\nsecond");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[ 1234.567891] [      T1] first\n                          second\n"
        );
        let mut out = Vec::new();
        format_record(&mut out, 5_000, Some(0x8000_0003), b"x");
        assert_eq!(out, b"[    0.000005] [      C3] x\n");
        let mut out = Vec::new();
        format_record(&mut out, 123_456_789_000_000_000, None, b"");
        assert_eq!(out, b"[123456789.000000] \n");
    }

    #[test]
    fn escapes_like_c_with_signed_char() {
        let mut out = Vec::new();
        format_record(&mut out, 0, None, b"a\tb\x01\x7f\x1b\r\x0b\x0c\xc3\xa9");
        assert_eq!(
            out,
            b"[    0.000000] a\tb\\x01\\x7f\\x1b\r\x0b\x0c\\xffffffc3\\xffffffa9\n"
        );
    }
}
