//! The lab's installed Debian 12 guest (`rkdump_lab::debian`) boots: systemd reaches
//! multi-user on the lab's cloud kernel with the crashkernel= memory reserved, a oneshot unit
//! runs the static rkdump and records what it sees, and the record is read back from the disk
//! image with debugfs after the guest has powered off.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rkdump_lab::debian::{BootOptions, DEFAULT_CRASHKERNEL_MIB, DebianSystem};
use rkdump_lab::kernels::Kernel;
use rkdump_lab::vm::Vm;

/// The unit's record on the guest's disk.
const RECORD: &str = "/var/lib/lab/smoke.txt";

/// Records the system's view in [`RECORD`] and prints it on the console as `RKDUMP-LAB:` lines,
/// the last one `smoke-done`.
const SMOKE_SCRIPT: &str = r#"#!/bin/sh
mkdir -p /var/lib/lab
{
  echo "release $(uname -r)"
  echo "state $(systemctl is-system-running)"
  echo "failed $(systemctl list-units --failed --plain --no-legend | wc -l)"
  echo "root $(findmnt -no OPTIONS /)"
  echo "cmdline $(cat /proc/cmdline)"
  echo "crash-size $(cat /sys/kernel/kexec_crash_size)"
  echo "rkdump $(/usr/sbin/rkdump --version)"
} > /var/lib/lab/smoke.txt 2>&1
sync
sed 's/^/RKDUMP-LAB: /' /var/lib/lab/smoke.txt > /dev/console
echo "RKDUMP-LAB: smoke-done" > /dev/console
"#;

/// Runs the script once the system is up, then powers off.
const SMOKE_UNIT: &str = "\
[Unit]
Description=rkdump lab: record the booted system
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lab-smoke
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
";

const UUID: &str = "d3b1a012-5a0e-4e57-9000-00000000beef";

fn dir(name: &str) -> PathBuf {
    rkdump_lab::cache::root()
        .join("lab/debian_guest")
        .join(name)
}

/// The value after `key ` on the record's line for `key`.
fn field<'a>(record: &'a str, key: &str) -> &'a str {
    record
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key} in the record:\n{record}"))
}

#[test]
fn debian_guest_boots_the_lab_kernel_with_crashkernel_and_runs_a_unit() {
    let started = Instant::now();
    let system = DebianSystem::get().expect("the Debian 12 tree");
    let got = started.elapsed();
    let kernel = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    assert_eq!(system.release, kernel.release);
    assert!(
        std::fs::read(system.vmlinuz()).unwrap() == std::fs::read(kernel.vmlinuz()).unwrap(),
        "the tree's {} is not the lab kernel {}",
        system.vmlinuz().display(),
        kernel.vmlinuz().display()
    );
    let rkdump = rkdump_lab::build::rkdump().unwrap();

    let dir = dir("smoke");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let made = Instant::now();
    let disk = system
        .disk()
        .uuid(UUID)
        .host_file("/usr/sbin/rkdump", 0o755, &rkdump)
        .unwrap()
        .file("/usr/local/sbin/lab-smoke", 0o755, SMOKE_SCRIPT.as_bytes())
        .unit("lab-smoke.service", SMOKE_UNIT)
        .create(&dir.join("root.img"))
        .unwrap();
    let disk_time = made.elapsed();

    let options = BootOptions::default();
    let config = disk.vm_config(&options);
    assert_eq!(
        config.cmdline,
        format!("root=UUID={UUID} ro console=ttyS0 crashkernel={DEFAULT_CRASHKERNEL_MIB}M")
    );
    let mut vm = Vm::start(&config, &dir.join("serial.log")).unwrap();
    let release = vm.wait_for("release", Duration::from_secs(300)).unwrap();
    let done = vm.wait_for("smoke-done", Duration::from_secs(60)).unwrap();
    let (status, exit) = vm.wait_exit(Duration::from_secs(120)).unwrap();
    assert!(status.success(), "QEMU: {status}");
    let serial = std::fs::read_to_string(dir.join("serial.log")).unwrap();

    // The record on the disk, read without mounting it; the console said the same.
    let record = String::from_utf8(disk.read_file(RECORD).unwrap()).unwrap();
    let copied = disk.read_dir("/var/lib/lab", &dir.join("out")).unwrap();
    assert_eq!(
        std::fs::read_to_string(copied.join("smoke.txt")).unwrap(),
        record
    );
    for line in record.lines() {
        assert!(
            serial.contains(&format!("RKDUMP-LAB: {line}")),
            "{line:?} not on the console"
        );
    }
    assert_eq!(release.detail, kernel.release);
    assert_eq!(field(&record, "release"), kernel.release);
    // The unit is part of the boot: the system is still starting while it runs, with nothing
    // failed, the root writable as fstab says.
    assert!(
        ["starting", "running"].contains(&field(&record, "state")),
        "{record}"
    );
    assert_eq!(field(&record, "failed"), "0", "{record}");
    assert!(field(&record, "root").starts_with("rw,"), "{record}");
    assert_eq!(field(&record, "cmdline"), config.cmdline);
    let crash_size: u64 = field(&record, "crash-size").parse().unwrap();
    assert_eq!(crash_size, u64::from(DEFAULT_CRASHKERNEL_MIB) << 20);
    assert!(field(&record, "rkdump").starts_with("rkdump "), "{record}");
    // The initramfs checked the root with e2fsck, as an installed system's does.
    assert!(!serial.contains("fsck not present"), "{serial}");

    println!(
        "debian guest: tree {:.1} s, disk {:.1} s, boot to the unit {:.1} s, unit done {:.1} s, \
         QEMU exit {:.1} s, whole test {:.1} s",
        got.as_secs_f64(),
        disk_time.as_secs_f64(),
        release.at.as_secs_f64(),
        done.at.as_secs_f64(),
        exit.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
