//! rkdump: a Linux crash-dump capture agent.
//!
//! # Brief overview
//!
//! When a kernel panics, kexec boots a small *capture kernel* whose `/proc/vmcore` exposes the dead
//! kernel's memory as an ELF core. rkdump turns that memory into a small dump file that `crash`,
//! `drgn` and `makedumpfile` read, and gets it somewhere safe.
//!
//! The library is layered so that each layer only knows the one below it:
//!
//! * [`format`] encodes and decodes the byte formats (ELF, notes, VMCOREINFO, kdump-compressed,
//!   flattened, cpio) with no I/O.
//! * [`kmod`] reads depmod's module index and orders modules for loading.
//! * [`vmcore`], [`filter`], [`pipeline`], [`output`] and [`dump`] read the vmcore, choose
//!   pages, compress them on every CPU and write the dump; [`dmesg`] extracts the dead
//!   kernel's log; [`dumpfile`] reads dumps back (`info`, `reassemble`).
//! * [`transport`] moves dumps over ssh at capture time: the ssh session, `ssh_config`, the
//!   SFTP client of the ssh target, and the upload with resumption and a CRC manifest.
//! * [`server`] is the dump server's side: `rkdump receive`, the restricted SFTP server that
//!   confines, limits, verifies and indexes what clients send, and `rkdump verify`.
//! * [`admin`] is first-kernel administration: `rkdump propagate`, the one-time ssh setup.
//! * [`runtime`] is PID 1 of the capture kernel: configuration, modules, network bring-up,
//!   targets (local, raw, NFS, ssh), hooks, watchdog, failure and final actions.
//! * [`cli`] parses the command line and reports errors with documented exit codes.
//!
//! Everything that touches the kernel through `unsafe` lives in one `sys` module; every other
//! module is built with `unsafe_code` denied.

pub mod admin;
pub mod cli;
pub mod config;
pub mod dmesg;
pub mod dump;
pub mod filter;
pub mod format;
pub mod kmod;
pub mod output;
pub mod pipeline;
pub mod readback;
pub mod runtime;
pub mod server;
pub mod sys;
pub mod transport;
pub mod vmcore;
