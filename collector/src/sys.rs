//! The only module allowed to use `unsafe`: thin wrappers over system interfaces that neither
//! std nor nix offers safely.
//!
//! Every wrapper is safe to call; every `unsafe` block states the invariant it relies on.
//!
//! # Safety
//!
//! Callers get ordinary Rust values back; no raw pointer or borrowed kernel memory escapes.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

/// Maps `len` bytes of `file` at `offset` read-only.
///
/// `mmap(2)` with `PROT_READ` and `MAP_PRIVATE`; the offset need not be page-aligned (memmap2
/// aligns it and adjusts the slice).
///
/// # References
/// - [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html)
pub fn map_readonly(file: &File, offset: u64, len: usize) -> io::Result<memmap2::Mmap> {
    // SAFETY: memmap2 requires that the mapped file is not modified or truncated while the
    // mapping lives, or reads may see changing data or fault with SIGBUS. The files mapped here
    // are vmcores: /proc/vmcore is immutable for the life of the capture kernel, and a saved
    // vmcore is an input rkdump only reads; the mapping is read-only and dropped when the
    // window of pages it covers has been processed.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)
    }
}

nix::ioctl_readwrite!(
    /// `WDIOC_SETTIMEOUT`: `_IOWR('W', 6, int)` of `<linux/watchdog.h>`.
    wdioc_settimeout,
    b'W',
    6,
    nix::libc::c_int
);

/// Sets a watchdog's timeout in seconds and returns the timeout the driver chose.
///
/// `ioctl(fd, WDIOC_SETTIMEOUT, &seconds)`.
///
/// # References
/// - [Linux watchdog API](https://docs.kernel.org/watchdog/watchdog-api.html)
pub fn watchdog_set_timeout(watchdog: &File, seconds: i32) -> io::Result<i32> {
    use std::os::fd::AsRawFd;
    let mut value = seconds;
    // SAFETY: `watchdog` is an open file descriptor for the call's duration, and the driver
    // reads and writes exactly one `int` through the pointer, which points at `value`.
    unsafe { wdioc_settimeout(watchdog.as_raw_fd(), &raw mut value) }.map_err(io::Error::from)?;
    Ok(value)
}
