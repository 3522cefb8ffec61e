//! The Debian package, installed as a user installs it: `rkdump_<version>_amd64.deb` built by
//! the README's package command, then in a real installed Debian 12 guest (systemd, Debian's
//! cloud kernel with initramfs-tools, root on ext4 by UUID, no kexec-tools, makedumpfile or
//! dracut) booted with crashkernel=: `dpkg -i`, the service armed by the package, a sysrq
//! crash, the capture kernel's dump in /var/crash on the root filesystem, the reboot, and the
//! next boot's `rkdump status` reporting that dump complete; then purge. The dump is opened
//! with crash (the reference reader) and the kernel's debug vmlinux.

use std::process::Command;
use std::time::Duration;

use initramfs_tests::{crash, exit_status, log_step as step, rkdump, run_ok, sorted_names};
use rkdump_lab::debian::{BootOptions, DebianSystem};
use rkdump_lab::kernels::Kernel;
use rkdump_lab::scenario;
use rkdump_lab::vm::Vm;

const UUID: &str = "0dd5e111-2222-4333-8444-5555666677aa";

/// What the guest does at each boot (a counter on the disk says which), every command's
/// output in /var/lib/lab/package.log.
const SCRIPT: &str = r#"#!/bin/sh
log=/var/lib/lab/package.log
mkdir -p /var/lib/lab
stage() { echo "RKDUMP-LAB: $*" > /dev/console; }
step() {
  name=$1; shift
  { echo "== $name: $*"; "$@"; echo "== $name: exit $?"; } >> $log 2>&1
  stage "$name"
}
boot=$(cat /var/lib/lab/boot 2>/dev/null || echo 0)
boot=$((boot + 1))
echo $boot > /var/lib/lab/boot
sync
case $boot in
1)
  step dpkg-install dpkg -i /root/rkdump.deb
  step enabled systemctl is-enabled rkdump.service
  step active-1 systemctl is-active rkdump.service
  step status-1 rkdump status
  step journal-1 journalctl -b -u rkdump.service --no-pager -o cat
  sync
  stage crashing
  sleep 1
  echo c > /proc/sysrq-trigger
  ;;
2)
  step active-2 systemctl is-active rkdump.service
  step journal-2 journalctl -b -u rkdump.service --no-pager -o cat
  step status-2 rkdump status
  step images ls /var/lib/rkdump
  step remove dpkg -r rkdump
  step after-remove ls /var/lib/rkdump /var/crash /etc/kdump.conf
  step purge dpkg --purge rkdump
  step after-purge ls -d /var/lib/rkdump /etc/kdump.conf /var/crash
  sync
  stage done
  systemctl poweroff
  ;;
esac
"#;

const UNIT: &str = "\
[Unit]
Description=rkdump lab: install the package, crash, check
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lab-package
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
";

#[test]
fn the_package_holds_the_binary_unit_rules_config_dracut_module_and_man_pages() {
    let deb = rkdump_lab::package::build().unwrap();
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        name,
        format!("rkdump_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
    );
    let (control, files) = rkdump_lab::package::contents(&deb).unwrap();
    // Static: no dependencies at all.
    assert!(
        !control
            .lines()
            .any(|l| l.starts_with("Depends:") && !l.trim_end().eq("Depends:")),
        "{control}"
    );
    for path in [
        "./usr/sbin/rkdump",
        "./usr/lib/systemd/system/rkdump.service",
        "./usr/lib/systemd/system-generators/rkdump-generator",
        "./usr/lib/udev/rules.d/98-rkdump.rules",
        "./etc/kdump.conf",
        "./etc/kernel/postrm.d/rkdump",
        "./usr/lib/dracut/modules.d/99rkdump/module-setup.sh",
        "./usr/share/man/man8/rkdump.8.gz",
        "./usr/share/man/man8/rkdump-start.8.gz",
        "./usr/share/man/man8/rkdump-crashkernel.8.gz",
        "./usr/share/doc/rkdump/README.md",
    ] {
        assert!(files.iter().any(|f| f == path), "{path} not in {files:?}");
    }
    // The hidden generator subcommand has no page.
    assert!(
        !files.iter().any(|f| f.contains("systemd-generator")),
        "{files:?}"
    );
    // The packaged binary is the one the tests run.
    let extracted = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(extracted.path()),
    );
    assert_eq!(
        std::fs::read(extracted.path().join("usr/sbin/rkdump")).unwrap(),
        std::fs::read(rkdump_lab::build::rkdump().unwrap()).unwrap()
    );
    // The man pages render (man's own renderer, not ours).
    let man = run_ok(
        Command::new("man").env("MANWIDTH", "100").arg("-l").arg(
            extracted
                .path()
                .join("usr/share/man/man8/rkdump-crashkernel.8.gz"),
        ),
    );
    assert!(man.contains("--set"), "{man}");
}

#[test]
fn dpkg_i_arms_the_system_and_the_crash_is_in_var_crash_after_the_reboot() {
    let kernel = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    let deb = rkdump_lab::package::build().unwrap();
    let system = DebianSystem::get().expect("the Debian 12 tree");
    let dir = rkdump_lab::cache::root().join("lab/package/install");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = system
        .disk()
        .uuid(UUID)
        .host_file("/root/rkdump.deb", 0o644, &deb)
        .unwrap()
        .file("/usr/local/sbin/lab-package", 0o755, SCRIPT.as_bytes())
        .unit("lab-package.service", UNIT)
        .create(&dir.join("root.img"))
        .unwrap();
    let options = BootOptions {
        allow_reboot: true,
        ..BootOptions::default()
    };
    let mut vm = Vm::start(&disk.vm_config(&options), &dir.join("serial.log")).unwrap();
    vm.wait_for("dpkg-install", Duration::from_secs(420))
        .unwrap();
    vm.wait_for("crashing", Duration::from_secs(300)).unwrap();
    vm.wait_for("done", Duration::from_secs(900)).unwrap();
    let (status, _) = vm.wait_exit(Duration::from_secs(300)).unwrap();
    assert!(status.success(), "QEMU: {status}");
    let log = String::from_utf8(disk.read_file("/var/lib/lab/package.log").unwrap()).unwrap();

    // Installed: enabled, started by the package (crashkernel= is reserved), armed.
    let install = step(&log, "dpkg-install");
    assert_eq!(exit_status(install), "0", "{install}");
    assert_eq!(exit_status(step(&log, "enabled")), "0", "{log}");
    assert!(step(&log, "active-1").contains("\nactive\n"), "{log}");
    let status_1 = step(&log, "status-1");
    assert_eq!(exit_status(status_1), "0", "{status_1}");
    assert!(status_1.contains("kdump is operational"), "{status_1}");
    let journal_1 = step(&log, "journal-1");
    assert!(
        journal_1.contains("rebuilding the capture image: no capture image at"),
        "{journal_1}"
    );
    assert!(
        journal_1.contains("loaded the capture kernel"),
        "{journal_1}"
    );

    // After the crash and the reboot: armed again at boot (the image kept, not rebuilt), and
    // status reports the dump.
    assert!(step(&log, "active-2").contains("\nactive\n"), "{log}");
    let journal_2 = step(&log, "journal-2");
    assert!(
        journal_2.contains("loaded the capture kernel"),
        "{journal_2}"
    );
    assert!(!journal_2.contains("rebuilding"), "{journal_2}");
    let status_2 = step(&log, "status-2");
    assert_eq!(exit_status(status_2), "0", "{status_2}");
    assert!(
        status_2.lines().any(
            |l| l.starts_with("rkdump: last dump: /var/crash/127.0.0.1-")
                && l.ends_with(", complete")
        ),
        "{status_2}"
    );
    let images = step(&log, "images");
    assert!(
        images.contains(&format!("initrd-{}.img\n", kernel.release)),
        "{images}"
    );
    // Removal keeps images, configuration and dumps; purge removes rkdump's state and its
    // configuration, never the dumps.
    assert_eq!(exit_status(step(&log, "remove")), "0", "{log}");
    let after_remove = step(&log, "after-remove");
    assert!(after_remove.contains("/etc/kdump.conf"), "{after_remove}");
    assert!(after_remove.contains("127.0.0.1-"), "{after_remove}");
    assert_eq!(exit_status(after_remove), "0", "{after_remove}");
    assert_eq!(exit_status(step(&log, "purge")), "0", "{log}");
    let after_purge = step(&log, "after-purge");
    assert!(
        after_purge.contains("'/var/lib/rkdump': No such file or directory"),
        "{after_purge}"
    );
    assert!(
        after_purge.contains("'/etc/kdump.conf': No such file or directory"),
        "{after_purge}"
    );
    assert!(after_purge.contains("\n/var/crash\n"), "{after_purge}");

    // The dump on the disk, read without mounting it.
    let base = disk.read_dir("/var/crash", &dir.join("out")).unwrap();
    let dump = scenario::dump_dir(&base).unwrap();
    assert_eq!(
        sorted_names(&dump),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    let info = run_ok(Command::new(rkdump()).arg("info").arg(dump.join("vmcore")));
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().eq(["Complete:", "yes"])),
        "{info}"
    );
    let bt = crash(&kernel.vmlinux(), &dump.join("vmcore"), &["bt"]);
    assert!(bt.contains("sysrq_handle_crash"), "crash's bt:\n{bt}");
    let dmesg = std::fs::read_to_string(dump.join("vmcore-dmesg.txt")).unwrap();
    assert!(dmesg.contains("sysrq: Trigger a crash"), "{dmesg}");
}
