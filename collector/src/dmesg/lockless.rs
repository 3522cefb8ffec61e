//! The lockless printk ring buffer (Linux 5.10 and later).
//!
//! `prb` points at a `printk_ringbuffer`: a descriptor ring (`descs`, `infos`, `head_id`,
//! `tail_id`, `2^count_bits` entries) and a text data ring (`2^size_bits` bytes). Records from
//! `tail_id` to `head_id` whose descriptor state is committed or finalized are printed; a data
//! block starts with the 8-byte descriptor id, and a block whose `begin` is past its `next`
//! wrapped to the start of the ring.

use super::{DmesgError, MAX_RING_BYTES, field, field_u32, format_record};
use crate::format::bytes::to_usize;
use crate::format::vmcoreinfo::{VmcoreInfo, VmcoreInfoError, require};
use crate::vmcore::KernelMemory;

/// The two state bits at the top of `state_var` and the id below them.
const DESC_ID_MASK: u64 = !(3 << 62);
const DESC_COMMITTED: u64 = 1;
const DESC_FINALIZED: u64 = 2;
/// Largest descriptor ring accepted (`count_bits`).
const MAX_COUNT_BITS: u32 = 24;

struct Layout {
    desc_size: u64,
    state_var: u64,
    lpos_begin: u64,
    lpos_next: u64,
    info_size: u64,
    ts_nsec: u64,
    text_len: u64,
    caller_id: Option<u64>,
}

fn offset(info: &VmcoreInfo, member: &str) -> Result<u64, VmcoreInfoError> {
    require(info.offset(member), &format!("OFFSET({member})"))
}

fn size(info: &VmcoreInfo, name: &str) -> Result<u64, VmcoreInfoError> {
    require(info.size(name), &format!("SIZE({name})"))
}

/// Extracts the log from the lockless ring buffer.
pub fn extract(memory: &mut KernelMemory<'_>) -> Result<Vec<u8>, DmesgError> {
    let info = memory.vmcore().info().clone();
    let counter = offset(&info, "atomic_long_t.counter")?;
    let desc_ring = offset(&info, "printk_ringbuffer.desc_ring")?;
    let text_ring = offset(&info, "printk_ringbuffer.text_data_ring")?;
    let layout = Layout {
        desc_size: size(&info, "prb_desc")?,
        state_var: offset(&info, "prb_desc.state_var")? + counter,
        lpos_begin: offset(&info, "prb_desc.text_blk_lpos")?
            + offset(&info, "prb_data_blk_lpos.begin")?,
        lpos_next: offset(&info, "prb_desc.text_blk_lpos")?
            + offset(&info, "prb_data_blk_lpos.next")?,
        info_size: size(&info, "printk_info")?,
        ts_nsec: offset(&info, "printk_info.ts_nsec")?,
        text_len: offset(&info, "printk_info.text_len")?,
        caller_id: info.offset("printk_info.caller_id")?,
    };

    let prb = memory.read_u64(require(info.symbol("prb"), "SYMBOL(prb)")?)?;
    let ring = memory.read_vec(prb, to_usize(size(&info, "printk_ringbuffer")?))?;
    let count_bits = field_u32(
        &ring,
        desc_ring + offset(&info, "prb_desc_ring.count_bits")?,
        "count_bits",
    )?;
    if count_bits > MAX_COUNT_BITS {
        return Err(DmesgError::Corrupt(format!(
            "descriptor ring of 2^{count_bits} entries"
        )));
    }
    let count = 1u64 << count_bits;
    let descs_at = field(
        &ring,
        desc_ring + offset(&info, "prb_desc_ring.descs")?,
        8,
        "descs",
    )?;
    let infos_at = field(
        &ring,
        desc_ring + offset(&info, "prb_desc_ring.infos")?,
        8,
        "infos",
    )?;
    let head_id = field(
        &ring,
        desc_ring + offset(&info, "prb_desc_ring.head_id")? + counter,
        8,
        "head_id",
    )?;
    let tail_id = field(
        &ring,
        desc_ring + offset(&info, "prb_desc_ring.tail_id")? + counter,
        8,
        "tail_id",
    )?;
    let size_bits = field_u32(
        &ring,
        text_ring + offset(&info, "prb_data_ring.size_bits")?,
        "size_bits",
    )?;
    let data_at = field(
        &ring,
        text_ring + offset(&info, "prb_data_ring.data")?,
        8,
        "data",
    )?;
    if size_bits >= 63 || (1u64 << size_bits) > MAX_RING_BYTES {
        return Err(DmesgError::Corrupt(format!(
            "text ring of 2^{size_bits} bytes"
        )));
    }
    let data_size = 1u64 << size_bits;
    if count * layout.desc_size.max(layout.info_size) > MAX_RING_BYTES {
        return Err(DmesgError::Corrupt(format!(
            "{count} descriptors of implausible size"
        )));
    }
    let descs = memory.read_vec(descs_at, to_usize(count * layout.desc_size))?;
    let infos = memory.read_vec(infos_at, to_usize(count * layout.info_size))?;
    let data = memory.read_vec(data_at, to_usize(data_size))?;

    // The valid records lie between tail and head; never walk more than the ring holds, even
    // when corrupt ids put them far apart.
    let span = head_id.wrapping_sub(tail_id) & DESC_ID_MASK;
    let first = if span >= count {
        head_id.wrapping_sub(count - 1) & DESC_ID_MASK
    } else {
        tail_id
    };
    let mut out = Vec::new();
    let mut id = first;
    loop {
        record(&layout, id, count, &descs, &infos, &data, &mut out)?;
        if id == head_id {
            break;
        }
        id = id.wrapping_add(1) & DESC_ID_MASK;
    }
    Ok(out)
}

fn record(
    layout: &Layout,
    id: u64,
    count: u64,
    descs: &[u8],
    infos: &[u8],
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DmesgError> {
    let desc = (id % count) * layout.desc_size;
    let state_var = field(descs, desc + layout.state_var, 8, "state_var")?;
    let state = if state_var & DESC_ID_MASK == id {
        state_var >> 62
    } else {
        u64::MAX
    };
    if state != DESC_COMMITTED && state != DESC_FINALIZED {
        return Ok(());
    }
    let size = data.len() as u64;
    let mut begin = field(descs, desc + layout.lpos_begin, 8, "text_blk_lpos.begin")? % size;
    let next = field(descs, desc + layout.lpos_next, 8, "text_blk_lpos.next")? % size;
    if begin == next {
        return Ok(());
    }
    let info = (id % count) * layout.info_size;
    let mut text_len = field(infos, info + layout.text_len, 2, "text_len")?;
    if begin > next {
        begin = 0;
    }
    begin += 8;
    if let Some(room) = next.checked_sub(begin)
        && room < text_len
    {
        text_len = room;
    }
    // makedumpfile would read past the ring here; stay inside it.
    let end = (begin + text_len).min(size);
    let text = data.get(to_usize(begin)..to_usize(end)).unwrap_or_default();
    let ts_nsec = field(infos, info + layout.ts_nsec, 8, "ts_nsec")?;
    let caller = layout
        .caller_id
        .map(|at| field_u32(infos, info + at, "caller_id"))
        .transpose()?;
    format_record(out, ts_nsec, caller, text);
    Ok(())
}
