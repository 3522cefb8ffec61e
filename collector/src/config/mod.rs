//! What the user configured: kdump.conf, rkdump's kernel-command-line settings and the
//! `core_collector` options.
//!
//! Both kernels read these: the first kernel to decide what goes into the capture image and
//! onto the capture kernel's command line, the capture kernel to carry out the capture. Nothing
//! here does I/O beyond reading the text it is given.
//!
//! * [`kdump_conf`] parses `/etc/kdump.conf` in kdump-utils' syntax, with file:line
//!   diagnostics.
//! * [`settings`] reads the `rkdump.*` keys of the kernel command line, with their defaults.
//! * [`collector`] parses makedumpfile's options (`rkdump save`, `core_collector`).
//! * [`sysconfig`] reads the first-kernel settings of kdump-utils (`/etc/sysconfig/kdump`) and
//!   Debian's kdump-tools (`/etc/default/kdump-tools`).

pub mod collector;
pub mod kdump_conf;
pub mod settings;
pub mod sysconfig;

pub use kdump_conf::*;
pub use settings::{Settings, WatchdogMode, cmdline_value};

/// Where the configuration is.
pub const CONFIG_FILE: &str = "/etc/kdump.conf";
/// Directory of hooks run before the dump (kdump-utils').
pub const PRE_HOOK_DIR: &str = "/etc/kdump/pre.d";
/// Directory of hooks run after the dump.
pub const POST_HOOK_DIR: &str = "/etc/kdump/post.d";
