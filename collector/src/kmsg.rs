//! The kernel's log, read from `/dev/kmsg` as `dmesg` prints it. Both kernels read it: the
//! capture saves its own into `kexec-dmesg.log`, the first kernel's `doctor` looks in it for
//! what the kernel said about the `crashkernel=` reservation.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// The kernel's ring buffer as `dmesg` prints it (from `/dev/kmsg`).
pub fn kernel_log() -> String {
    let Ok(mut kmsg) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return String::new();
    };
    let mut out = String::new();
    let mut record = vec![0u8; 8192];
    // Each read returns one record: "prio,seq,usec,flags;text\n"; EAGAIN ends the buffer.
    for _ in 0..100_000 {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(&record[..n]);
                if let Some((header, message)) = text.split_once(';') {
                    let usec: u64 = header
                        .split(',')
                        .nth(2)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let message = message.lines().next().unwrap_or("");
                    out.push_str(&format!(
                        "[{:5}.{:06}] {message}\n",
                        usec / 1_000_000,
                        usec % 1_000_000
                    ));
                }
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => {}
            Err(_) => break,
        }
    }
    out
}
