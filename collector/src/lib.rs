//! rkdump: a Linux crash-dump capture agent.
//!
//! # Brief overview
//!
//! When a kernel panics, kexec boots a small *capture kernel* whose `/proc/vmcore` exposes the dead
//! kernel's memory as an ELF core. rkdump turns that memory into a small dump file that `crash`,
//! `drgn` and `makedumpfile` read, and gets it somewhere safe.
//!
//! # Data flow
//!
//! ```text
//! /proc/vmcore ─► vmcore ─► filter ─► pipeline ─► output ─► target
//!                 (ELF,     (which     (read,      (kdump or  (a mounted disk, a raw device,
//!                 pages,    pages)     compress    ELF writer, NFS: runtime::capture;
//!                 KASLR)               on every    sink,       ssh: transport)
//!                                      CPU)        -incomplete)
//! ```
//!
//! [`dump`] drives that path for one dump (`rkdump save`, the capture's dump step). Beside it:
//!
//! * [`mod@format`]: the byte formats (ELF, notes, VMCOREINFO, kdump-compressed, flattened,
//!   SFTP, the CRC manifest, cpio, DHCP through smoltcp) encoded and decoded with no I/O. Every
//!   module may use it; it uses nothing of the crate.
//! * [`config`]: what the user configured, for both kernels: kdump.conf, the `rkdump.*`
//!   settings of the capture kernel's command line, makedumpfile's options.
//! * [`dmesg`] extracts the dead kernel's log; [`readback`] reads dumps back (`info`,
//!   `reassemble`); [`kmod`] reads depmod's module index.
//! * [`runtime`] is PID 1 of the capture kernel: modules, network bring-up, watchdog, the
//!   capture steps (target, hooks, dmesg, dump, log) in a supervised child, failure and final
//!   actions.
//! * [`transport`] is the capture's ssh client (session, `ssh_config`, SFTP, upload with
//!   resumption and a CRC manifest); [`server`] is the dump server's side (`rkdump receive`,
//!   `rkdump verify`); [`admin`] is first-kernel administration (`start`, `status`, `doctor`,
//!   `propagate`...), which builds the capture image with [`image`] (`rkdump mkinitrd`) and
//!   loads it with [`loader`].
//! * [`cli`] parses the command line and reports errors with documented exit codes; the
//!   binary is a thin shell around it.
//!
//! Everything that touches the kernel through `unsafe` lives in [`sys`]; every other module is
//! built with `unsafe_code` denied. docs/design.md has the import rules between these modules,
//! and `initramfs-tests/tests/architecture.rs` checks them.

pub(crate) mod admin;
pub mod cli;
pub(crate) mod config;
pub(crate) mod dmesg;
pub(crate) mod dump;
pub(crate) mod filter;
pub mod format;
pub(crate) mod image;
pub mod kmod;
pub(crate) mod kmsg;
pub(crate) mod loader;
pub(crate) mod output;
pub(crate) mod pipeline;
pub(crate) mod readback;
pub(crate) mod runtime;
pub(crate) mod server;
pub(crate) mod sys;
pub(crate) mod transport;
pub mod vmcore;
