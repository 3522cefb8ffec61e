//! Writing dump files: where the bytes go and how they become durable.
//!
//! A [`Sink`] receives positioned writes: [`FileSink`] turns them into `pwrite`s on a file or
//! block device, [`FlatSink`] into makedumpfile's flattened records on a stream (a pipe, an ssh
//! channel, a raw device read back later). [`destination`] opens a path, standard output or a
//! caller's remote file into a sink; [`durable`] names files `-incomplete` until they are
//! complete and synced. The format writers ([`kdump_writer`], [`elf_writer`]) only ever call
//! [`Sink::write_at`], so every format works on every sink, and replaying a flattened stream
//! (`rkdump reassemble`, `makedumpfile -R`) rebuilds exactly the file the same dump writes
//! directly. Which pages to write, and when, is the dump engine's business ([`crate::dump`]).

pub mod destination;
pub mod durable;
pub mod elf_writer;
pub mod kdump_writer;
pub mod sink;

pub use destination::{Destination, DestinationError, OpenRequest, OpenSink, Opened};
pub use durable::{finalize, incomplete_name, write_file_atomically};
pub use sink::{FileSink, FlatSink, OutputError, Sink};
