//! First-kernel administration: what is run on the running system, once, to prepare captures.
//!
//! * [`propagate`] is `rkdump propagate`, the one-time ssh setup: the kdump key made, the dump
//!   server's host key pinned after a person confirms it, the key authorized on the server, and
//!   the capture's own login tried.
//!
//! The first-kernel modules to come (the kexec loader, the capture image builder, the doctor
//! that checks a configuration) get rooms beside it.

pub mod propagate;
