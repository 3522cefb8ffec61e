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

use nix::libc;

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
    libc::c_int
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

/// A socket to address interface ioctls to (any IPv4 socket will do).
fn inet_socket() -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// An `ifreq` naming `interface`, every other byte zero.
fn ifreq_for(interface: &str) -> io::Result<libc::ifreq> {
    let name = interface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{interface:?} is not an interface name"),
        ));
    }
    // SAFETY: `ifreq` is a C struct of a byte array and a union of plain integers, sockaddrs,
    // byte arrays and one pointer; all zero bytes is a valid value of each (the pointer is null
    // and never read here).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(name) {
        *to = libc::c_char::from_ne_bytes([*from]);
    }
    Ok(request)
}

/// Issues an interface ioctl whose argument is an `ifreq`.
fn ifreq_ioctl(request_code: libc::c_ulong, request: &mut libc::ifreq) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = inet_socket()?;
    // SAFETY: the socket is open for the call's duration; every SIOC*IF* request used here reads
    // and/or writes one `struct ifreq`, and `request` points at one that lives across the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), request_code, &raw mut *request) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An IPv4 `sockaddr` (port zero), built field by field so no `unsafe` is needed.
fn sockaddr_v4(address: std::net::Ipv4Addr) -> libc::sockaddr {
    let mut data = [0 as libc::c_char; 14];
    for (to, from) in data[2..6].iter_mut().zip(address.octets()) {
        *to = libc::c_char::from_ne_bytes([from]);
    }
    libc::sockaddr {
        sa_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET is 2"),
        sa_data: data,
    }
}

/// An interface's flags (`IFF_UP`, `IFF_RUNNING`, ...).
///
/// `ioctl(fd, SIOCGIFFLAGS, &ifreq)`.
///
/// # References
/// - [netdevice(7)](https://man7.org/linux/man-pages/man7/netdevice.7.html)
pub fn interface_flags(interface: &str) -> io::Result<i16> {
    let mut request = ifreq_for(interface)?;
    ifreq_ioctl(libc::SIOCGIFFLAGS, &mut request)?;
    // SAFETY: SIOCGIFFLAGS filled in `ifru_flags`, and every bit pattern is a valid `c_short`.
    Ok(unsafe { request.ifr_ifru.ifru_flags })
}

/// Sets an interface's flags.
///
/// `ioctl(fd, SIOCSIFFLAGS, &ifreq)`.
///
/// # References
/// - [netdevice(7)](https://man7.org/linux/man-pages/man7/netdevice.7.html)
pub fn set_interface_flags(interface: &str, flags: i16) -> io::Result<()> {
    let mut request = ifreq_for(interface)?;
    request.ifr_ifru.ifru_flags = flags;
    ifreq_ioctl(libc::SIOCSIFFLAGS, &mut request)
}

/// Gives an interface an IPv4 address and netmask; the kernel adds the route to its subnet.
///
/// `ioctl(fd, SIOCSIFADDR, &ifreq)` then `ioctl(fd, SIOCSIFNETMASK, &ifreq)`.
///
/// # References
/// - [netdevice(7)](https://man7.org/linux/man-pages/man7/netdevice.7.html)
pub fn set_interface_ipv4(
    interface: &str,
    address: std::net::Ipv4Addr,
    prefix: u8,
) -> io::Result<()> {
    let mut request = ifreq_for(interface)?;
    request.ifr_ifru.ifru_addr = sockaddr_v4(address);
    ifreq_ioctl(libc::SIOCSIFADDR, &mut request)?;
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    let mut request = ifreq_for(interface)?;
    request.ifr_ifru.ifru_netmask = sockaddr_v4(mask.into());
    ifreq_ioctl(libc::SIOCSIFNETMASK, &mut request)
}

/// Sets an interface's MTU.
///
/// `ioctl(fd, SIOCSIFMTU, &ifreq)`.
///
/// # References
/// - [netdevice(7)](https://man7.org/linux/man-pages/man7/netdevice.7.html)
pub fn set_interface_mtu(interface: &str, mtu: u32) -> io::Result<()> {
    let mut request = ifreq_for(interface)?;
    request.ifr_ifru.ifru_mtu = i32::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU out of range"))?;
    ifreq_ioctl(libc::SIOCSIFMTU, &mut request)
}

/// Sets an interface's (Ethernet) hardware address; the interface must be down.
///
/// `ioctl(fd, SIOCSIFHWADDR, &ifreq)`.
///
/// # References
/// - [netdevice(7)](https://man7.org/linux/man-pages/man7/netdevice.7.html)
pub fn set_interface_mac(interface: &str, mac: [u8; 6]) -> io::Result<()> {
    let mut request = ifreq_for(interface)?;
    let mut data = [0 as libc::c_char; 14];
    for (to, from) in data.iter_mut().zip(mac) {
        *to = libc::c_char::from_ne_bytes([from]);
    }
    request.ifr_ifru.ifru_hwaddr = libc::sockaddr {
        sa_family: libc::ARPHRD_ETHER,
        sa_data: data,
    };
    ifreq_ioctl(libc::SIOCSIFHWADDR, &mut request)
}

/// Renames an interface; it must be down.
///
/// `ioctl(fd, SIOCSIFNAME, &ifreq)`.
///
/// # References
/// - [netdevice(7)](https://man7.org/linux/man-pages/man7/netdevice.7.html)
pub fn rename_interface(interface: &str, new_name: &str) -> io::Result<()> {
    let mut request = ifreq_for(interface)?;
    request.ifr_ifru.ifru_newname = ifreq_for(new_name)?.ifr_name;
    ifreq_ioctl(libc::SIOCSIFNAME, &mut request)
}

/// `struct rtentry` of `<linux/route.h>` (the libc crate has it for musl only).
#[repr(C)]
struct RouteEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// Adds a default route through `gateway` on `interface`.
///
/// `ioctl(fd, SIOCADDRT, &rtentry)` with `RTF_UP | RTF_GATEWAY` and destination and mask
/// `0.0.0.0`.
///
/// # References
/// - [route(8)'s ioctl interface](https://man7.org/linux/man-pages/man8/route.8.html),
///   `include/uapi/linux/route.h`
pub fn add_default_route(gateway: std::net::Ipv4Addr, interface: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let device = std::ffi::CString::new(interface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    let any = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
    let mut entry = RouteEntry {
        rt_pad1: 0,
        rt_dst: any,
        rt_gateway: sockaddr_v4(gateway),
        rt_genmask: any,
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: device.as_ptr().cast_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    let socket = inet_socket()?;
    // SAFETY: the socket is open for the call's duration; SIOCADDRT reads one `struct rtentry`,
    // which `entry` matches field for field, and the kernel only reads the NUL-terminated
    // device name behind `rt_dev`, which `device` keeps alive until after the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCADDRT, &raw mut entry) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `kexec_file_load(2)` flag: unload the loaded image instead of loading one.
pub const KEXEC_FILE_UNLOAD: u64 = 0x1;
/// `kexec_file_load(2)` flag: load into the crash region, to run when the kernel panics.
pub const KEXEC_FILE_ON_CRASH: u64 = 0x2;
/// `kexec_load(2)` flag: load into the crash region.
pub const KEXEC_ON_CRASH: u64 = 0x1;
/// `kexec_load(2)` architecture field for x86_64 (`KEXEC_ARCH_X86_64`, `EM_X86_64 << 16`).
pub const KEXEC_ARCH_X86_64: u64 = 62 << 16;

/// Loads a kernel (and initramfs) for kexec from open files, the kernel parsing and, where
/// configured, verifying them itself.
///
/// `kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)`; `cmdline_len` counts the
/// terminating NUL, as the kernel requires. With `initrd` `None`, pass
/// `KEXEC_FILE_NO_INITRAMFS` in `flags`.
///
/// # References
/// - [kexec_file_load(2)](https://man7.org/linux/man-pages/man2/kexec_file_load.2.html)
pub fn kexec_file_load(
    kernel: &File,
    initrd: Option<&File>,
    cmdline: &std::ffi::CStr,
    flags: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let initrd_fd = initrd.map_or(-1, AsRawFd::as_raw_fd);
    let bytes = cmdline.to_bytes_with_nul();
    // SAFETY: the file descriptors are open for the call's duration (borrowed `File`s, or -1
    // which the kernel ignores with NO_INITRAMFS); `cmdline` points at `bytes.len()` readable
    // bytes ending in NUL, which the kernel copies before returning; no pointer is kept.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            libc::c_long::from(kernel.as_raw_fd()),
            libc::c_long::from(initrd_fd),
            bytes.len(),
            bytes.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unloads the crash kernel, whichever syscall loaded it.
///
/// `kexec_file_load(-1, -1, 0, NULL, KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH)`: the unload path
/// skips the lockdown and signature checks, so it works where `kexec_load` is refused.
///
/// # References
/// - [kexec_file_load(2)](https://man7.org/linux/man-pages/man2/kexec_file_load.2.html)
pub fn kexec_file_unload_crash() -> io::Result<()> {
    // SAFETY: no pointer is passed (NULL with length 0) and the file descriptors are -1, which
    // the unload path never looks at.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1 as libc::c_long,
            -1 as libc::c_long,
            0usize,
            std::ptr::null::<u8>(),
            KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One segment of a `kexec_load(2)` image: `buf` is copied to physical address `mem`, and the
/// rest of `memsz` is zeroed.
#[derive(Debug, Clone, Copy)]
pub struct KexecSegment<'a> {
    /// The bytes to copy.
    pub buf: &'a [u8],
    /// Physical load address (page-aligned).
    pub mem: u64,
    /// Size in memory (page-aligned, at least `buf.len()`).
    pub memsz: u64,
}

/// The kernel's `struct kexec_segment` of `<linux/kexec.h>`.
#[repr(C)]
struct RawKexecSegment {
    buf: *const libc::c_void,
    bufsz: libc::size_t,
    mem: *const libc::c_void,
    memsz: libc::size_t,
}

/// Loads a kexec image made of raw segments, starting at physical address `entry`.
///
/// `kexec_load(entry, nr_segments, segments, flags)`; with no segments it unloads (refused under
/// lockdown, unlike [`kexec_file_unload_crash`]).
///
/// # References
/// - [kexec_load(2)](https://man7.org/linux/man-pages/man2/kexec_load.2.html)
pub fn kexec_load(entry: u64, segments: &[KexecSegment<'_>], flags: u64) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "segment size overflows size_t");
    let raw = segments
        .iter()
        .map(|segment| {
            Ok(RawKexecSegment {
                buf: segment.buf.as_ptr().cast(),
                bufsz: segment.buf.len(),
                // The kernel reads `mem` as a physical address, never dereferenced here.
                mem: std::ptr::without_provenance(
                    usize::try_from(segment.mem).map_err(|_| too_big())?,
                ),
                memsz: usize::try_from(segment.memsz).map_err(|_| too_big())?,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    // SAFETY: `raw` holds `raw.len()` initialized segment descriptors, each `buf` pointing at
    // `bufsz` readable bytes borrowed from `segments` for the call's duration; the kernel copies
    // the descriptors and the bytes before it returns and keeps no pointer into them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            entry,
            raw.len(),
            if raw.is_empty() {
                std::ptr::null()
            } else {
                raw.as_ptr()
            },
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// The purgatory of `loader::native::purgatory` (its bytes, and the digest routine it runs)
// is reached through the wrappers below.

/// The size in bytes of the purgatory blob, its stack included. The assembler of
/// `loader::native::purgatory` places its stack with `.org` relative to this length, and fails
/// the build if the code does not fit in front of it.
pub const PURGATORY_LEN: usize = 0xa40;

// SAFETY: the symbols are defined by the `global_asm!` of `loader::native::purgatory`, with these
// types: `rkdump_purgatory_start` labels the first of exactly `PURGATORY_LEN` bytes (the `.org`
// and `.fill` there make the distance to `rkdump_purgatory_end` that length), in a section the
// program only reads and executes; `rkdump_purgatory_sha256` is a SysV function that reads
// `count` descriptors at `regions`, reads `len` bytes at each `start`, writes 32 bytes at `out`,
// touches no other memory but the stack it is called on (at most 600 bytes of it), and
// preserves the callee-saved registers.
unsafe extern "C" {
    static rkdump_purgatory_start: [u8; PURGATORY_LEN];
    fn rkdump_purgatory_sha256(regions: *const [u64; 2], count: u64, out: *mut [u8; 32]);
}

/// The purgatory's bytes as assembled, parameter block zeroed: what
/// `loader::native::purgatory::image` copies and patches.
pub fn purgatory_blob() -> &'static [u8] {
    // SAFETY: the static is `PURGATORY_LEN` initialized bytes of the program image, valid and
    // immutable for the life of the process (nothing writes to the section: it is mapped
    // read-only and execute).
    unsafe { &rkdump_purgatory_start }
}

/// SHA-256 of `data`, computed by the purgatory's own routine running on the host (the tests
/// compare it with the `sha2` crate).
#[cfg_attr(not(test), allow(dead_code))]
pub fn purgatory_sha256(data: &[u8]) -> [u8; 32] {
    purgatory_sha256_parts(&[data])
}

/// SHA-256 of the concatenation of `parts`, through the purgatory routine's region table (one
/// region per part, addresses being the host's virtual ones).
#[cfg_attr(not(test), allow(dead_code))]
pub fn purgatory_sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let regions: Vec<[u64; 2]> = parts
        .iter()
        .map(|part| [part.as_ptr().expose_provenance() as u64, part.len() as u64])
        .collect();
    let mut out = [0u8; 32];
    // SAFETY: `regions` holds `regions.len()` descriptors, each the address and length of a part
    // borrowed for the call (the routine only reads them; their provenance is exposed above), and
    // `out` is 32 writable bytes. The routine follows the SysV ABI (callee-saved registers kept,
    // direction flag clear on return) and uses at most 600 bytes of the caller's stack.
    unsafe { rkdump_purgatory_sha256(regions.as_ptr(), regions.len() as u64, &raw mut out) };
    out
}
