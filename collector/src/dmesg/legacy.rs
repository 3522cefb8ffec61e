//! The `printk_log` ring (Linux 3.5 to 5.9).
//!
//! `log_buf` points at `log_buf_len` bytes of variable-length records: a `struct printk_log`
//! header (`len`, `text_len`, `ts_nsec`, optionally `caller_id`) followed by the text. Records
//! run from `log_first_idx` to `log_next_idx`; a record with `len == 0` means the rest of the
//! buffer is unused and the next record is at its start. Kernels 3.5 to 3.10 call the
//! structure `log` instead of `printk_log`.

use super::{DmesgError, MAX_RING_BYTES, field, field_u32, format_record};
use crate::format::bytes::to_usize;
use crate::format::vmcoreinfo::{VmcoreInfo, VmcoreInfoError, require};
use crate::vmcore::KernelMemory;

/// Reads `OFFSET(printk_log.<member>)`, falling back to `OFFSET(log.<member>)`.
fn member(info: &VmcoreInfo, name: &str) -> Result<Option<u64>, VmcoreInfoError> {
    match info.offset(&format!("printk_log.{name}"))? {
        Some(offset) => Ok(Some(offset)),
        None => info.offset(&format!("log.{name}")),
    }
}

fn required_member(info: &VmcoreInfo, name: &str) -> Result<u64, VmcoreInfoError> {
    require(member(info, name), &format!("OFFSET(printk_log.{name})"))
}

/// Extracts the log from `log_buf`.
pub fn extract(memory: &mut KernelMemory<'_>) -> Result<Vec<u8>, DmesgError> {
    let info = memory.vmcore().info().clone();
    if info.symbol("log_end")?.is_some() {
        return Err(DmesgError::Corrupt(
            "kernels before 3.5 (log_end) are not supported".into(),
        ));
    }
    let log_buf = memory.read_u64(require(info.symbol("log_buf"), "SYMBOL(log_buf)")?)?;
    let len =
        u64::from(memory.read_u32(require(info.symbol("log_buf_len"), "SYMBOL(log_buf_len)")?)?);
    let first = u64::from(memory.read_u32(require(
        info.symbol("log_first_idx"),
        "SYMBOL(log_first_idx)",
    )?)?);
    let next = u64::from(memory.read_u32(require(
        info.symbol("log_next_idx"),
        "SYMBOL(log_next_idx)",
    )?)?);
    let header = match info.size("printk_log")? {
        Some(size) => size,
        None => require(info.size("log"), "SIZE(printk_log)")?,
    };
    let len_at = required_member(&info, "len")?;
    let text_len_at = required_member(&info, "text_len")?;
    let ts_at = required_member(&info, "ts_nsec")?;
    let caller_at = member(&info, "caller_id")?;
    if len > MAX_RING_BYTES || header == 0 || len < header {
        return Err(DmesgError::Corrupt(format!(
            "log_buf_len {len} with {header}-byte records"
        )));
    }
    let buf = memory.read_vec(log_buf, to_usize(len))?;

    let record_len = |at: u64| field(&buf, at + len_at, 2, "printk_log.len");
    let mut out = Vec::new();
    let mut at = if record_len(first)? == 0 { 0 } else { first };
    // Each step moves to another record, so a well-formed buffer ends within len/header steps.
    for _ in 0..=len / header {
        if at == next {
            return Ok(out);
        }
        if at > len - header {
            return Err(DmesgError::Corrupt(format!(
                "record index {at:#x} outside log_buf"
            )));
        }
        let text_len = field(&buf, at + text_len_at, 2, "printk_log.text_len")?;
        let ts_nsec = field(&buf, at + ts_at, 8, "printk_log.ts_nsec")?;
        let caller = caller_at
            .map(|c| field_u32(&buf, at + c, "printk_log.caller_id"))
            .transpose()?;
        let text_start = to_usize(at + header);
        let text = buf
            .get(text_start..(text_start + to_usize(text_len)).min(buf.len()))
            .unwrap_or_default();
        format_record(&mut out, ts_nsec, caller, text);
        at = match record_len(at)? {
            0 => record_len(0)?,
            step => at + step,
        };
    }
    Err(DmesgError::Corrupt("records form a cycle".into()))
}
