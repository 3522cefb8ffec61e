//! What the capture kernel tells about itself: its command line (with dracut's
//! `/etc/cmdline.d`), its memory, and what this process has written. Its log is
//! [`crate::kmsg`].

use std::path::Path;

/// Where dracut images keep command-line parameters of their own (kdump-utils writes its
/// `ip=`, `ifname=` and `nameserver=` there).
pub const CMDLINE_D: &str = "/etc/cmdline.d";

/// The kernel command line followed by the words of `/etc/cmdline.d/*.conf` in name order, as
/// dracut's `getcmdline` reads them (`#` starts a comment).
pub fn cmdline() -> String {
    let kernel = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline_with(&kernel, Path::new(CMDLINE_D))
}

/// [`cmdline`] from a given kernel command line and `cmdline.d` directory.
pub fn cmdline_with(kernel: &str, cmdline_d: &Path) -> String {
    let mut words = kernel.to_owned();
    let mut files: Vec<_> = std::fs::read_dir(cmdline_d)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let line = line.split('#').next().unwrap_or_default();
            words.push(' ');
            words.push_str(line.trim());
        }
    }
    words.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `MemTotal` and `MemAvailable`, for the log (the capture kernel's memory decides the
/// crashkernel= reservation).
pub fn memory() -> String {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or_else(|| "?".to_owned(), |kib| format!("{} MiB", kib / 1024))
    };
    format!(
        "memory {} total, {} available",
        field("MemTotal"),
        field("MemAvailable")
    )
}

/// Bytes this process has handed to write(2) and friends so far (`wchar` of /proc/self/io;
/// 0 when unreadable).
pub fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cmdline_value;

    #[test]
    fn cmdline_d_files_follow_the_kernel_command_line_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("40ip.conf"),
            "ip=kdump-eth0:dhcp # kdump-utils\nifname=kdump-eth0:52:54:00:12:34:56\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("10first.conf"), "rd.neednet=1\n").unwrap();
        std::fs::write(dir.path().join("README"), "not=read\n").unwrap();
        let line = cmdline_with("console=ttyS0  irqpoll\n", dir.path());
        assert_eq!(
            line,
            "console=ttyS0 irqpoll rd.neednet=1 ip=kdump-eth0:dhcp \
             ifname=kdump-eth0:52:54:00:12:34:56"
        );
        assert_eq!(cmdline_value(&line, "ip"), Some("kdump-eth0:dhcp"));
        assert_eq!(cmdline_with("a b", &dir.path().join("missing")), "a b");
    }

    #[test]
    fn command_line_values() {
        let line = "console=ttyS0 root=UUID=abcd rkdump.watchdog=nopet root=/dev/vda2";
        assert_eq!(cmdline_value(line, "root"), Some("/dev/vda2"));
        assert_eq!(cmdline_value(line, "rkdump.watchdog"), Some("nopet"));
        assert_eq!(cmdline_value(line, "ip"), None);
    }
}
