//! Writing dump files.
//!
//! A [`Sink`] receives positioned writes: [`FileSink`] turns them into `pwrite`s on a file or
//! block device, [`FlatSink`] into makedumpfile's flattened records on a stream (a pipe, an ssh
//! channel, a raw device read back later). The format writers ([`kdump`], [`elf`]) only ever
//! call [`Sink::write_at`], so every format works on every sink, and replaying a flattened
//! stream (`rkdump reassemble`, `makedumpfile -R`) rebuilds exactly the file the same dump
//! writes directly.

pub mod elf;
pub mod kdump;
pub mod sink;

pub use sink::{FileSink, FlatSink, OutputError, Sink};
