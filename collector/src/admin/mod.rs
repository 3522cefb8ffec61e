//! First-kernel administration: what is run on the running system to arm it for a crash and to
//! check what happened after one.
//!
//! * [`service`] is `rkdump start`, `stop`, `reload`, `restart` and `showmem`: the checks,
//!   the capture kernel's command line and the load through [`crate::loader`].
//! * [`status`] is `rkdump status`: armed or not, the last dump and the last `rkdump test`.
//! * [`doctor`] is `rkdump doctor`: every known reason a crash would leave no dump, checked.
//! * [`crashkernel`] is `rkdump crashkernel`: the reservation against the estimate, and the
//!   GRUB snippet `--set` writes.
//! * [`units`] is what the Debian package's systemd integration asks of rkdump: the generator
//!   that makes `rkdump.service` wait for the network when the dump target is on it.
//! * [`estimate`] is `rkdump estimate`: the `crashkernel=` the capture needs, from its files.
//! * [`initramfs`] reads a capture image's archives (plain or zstd) for both.
//! * [`bootinfo`] finds the kernel and the capture image to load.
//! * [`propagate`] is `rkdump propagate`, the one-time ssh setup: the kdump key made, the dump
//!   server's host key pinned after a person confirms it, the key authorized on the server, and
//!   the capture's own login tried.
//!
//! * [`image`] is `rkdump mkinitrd` and `rkdump rebuild`, and `start`'s check that rkdump's own
//!   image still matches the system (built by [`crate::image`]).

pub(crate) mod bootinfo;
pub(crate) mod crashkernel;
pub(crate) mod doctor;
pub(crate) mod estimate;
pub(crate) mod image;
pub(crate) mod initramfs;
pub mod propagate;
pub(crate) mod service;
pub(crate) mod status;
pub(crate) mod units;
