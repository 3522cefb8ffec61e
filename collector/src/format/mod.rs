//! Pure encoders and decoders for the byte formats rkdump reads and writes.
//!
//! Nothing here does I/O or uses `unsafe`: every function takes bytes (or values) and returns values
//! (or bytes), so each format can be unit- and property-tested on its own and fuzzed with arbitrary
//! input. Multi-byte integers of the dumped machine are little-endian (x86_64); the flattened
//! stream's record headers are big-endian, as makedumpfile writes them.
//!
//! * [`elf`]: ELF64 core files (`/proc/vmcore`, ELF dumps): header and program headers.
//! * [`note`]: the PT_NOTE segment (PRSTATUS, VMCOREINFO).
//! * [`vmcoreinfo`]: the dead kernel's `KEY=VALUE` description of itself.
//! * [`kdump`]: the kdump-compressed (`KDUMP   `) header, sub header and page descriptors.
//! * [`lzo1x`]: the LZO1X-1 page codec of makedumpfile's `-l`.
//! * [`flat`]: makedumpfile's flattened stream (`-F`).
//! * [`manifest`]: per-chunk CRC-32 of a dump directory's files, sent with remote dumps.
//! * [`sftp`]: SFTP version 3 packets, for the ssh target and `rkdump receive`.
//! * [`time`]: UTC calendar dates from Unix time.
//! * [`cpio`]: the `newc` archives that initramfs images are made of.
//! * [`executable`]: what a program or kernel module needs beside itself (ELF interpreter,
//!   `DT_NEEDED`, `#!`, `.modinfo`).

pub mod bytes;
pub mod cpio;
pub mod elf;
pub(crate) mod executable;
pub(crate) mod flat;
pub(crate) mod kdump;
pub mod lzo1x;
pub(crate) mod manifest;
pub mod note;
pub(crate) mod sftp;
pub mod time;
pub mod vmcoreinfo;
