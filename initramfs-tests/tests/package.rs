//! The Debian package, installed as a user installs it: `rkdump_<version>_amd64.deb` built by
//! the README's package command, then in a real installed Debian 12 guest (systemd, Debian's
//! cloud kernel with initramfs-tools, root on ext4 by UUID, no kexec-tools, makedumpfile or
//! dracut), through the lab's installed flow (`rkdump_lab::installed`, the README demo's):
//! `dpkg -i`, the service armed by the package, a sysrq crash, the capture kernel's dump in
//! /var/crash on the root filesystem, the reboot, and the next boot's `rkdump status` reporting
//! that dump complete. A second test goes through a system's life: installed before
//! crashkernel= is set, `rkdump crashkernel --set`, udev's coldplug replayed (no reload),
//! `rkdump test --force`, a kernel upgrade, removal and purge. The dumps are opened with crash
//! and drgn (the reference readers) and the kernels' debug vmlinux.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use initramfs_tests::{
    crash, drgn_crashed_stack, exit_status, log_step as step, rkdump, run_ok, sorted_names,
};
use rkdump_lab::debian::{BootOptions, DebianSystem};
use rkdump_lab::installed::{DEMO_PLAN, EventKind, Flow, LIFECYCLE_PLAN};
use rkdump_lab::kernels::{Flavor, Kernel};

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

/// Checks one dump the capture kernel wrote: its files, complete by rkdump's own reader, the
/// sysrq panic by crash and drgn with `kernel`'s debug vmlinux, and the panic in its
/// vmcore-dmesg.txt.
fn check_dump(dump: &Path, kernel: &Kernel) {
    assert_eq!(
        sorted_names(dump),
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
    let stack = drgn_crashed_stack(&kernel.vmlinux(), &dump.join("vmcore"));
    assert!(
        stack.contains("sysrq_handle_crash"),
        "drgn's crashed-thread stack:\n{stack}"
    );
    let dmesg = std::fs::read_to_string(dump.join("vmcore-dmesg.txt")).unwrap();
    assert!(dmesg.contains("sysrq: Trigger a crash"), "{dmesg}");
    assert!(
        dmesg.contains(&format!("Linux version {} ", kernel.release)),
        "{dmesg}"
    );
}

/// The dump directory (`/var/crash/127.0.0.1-<date>`) of the last dump a `rkdump status`
/// output names, which it must report complete.
fn last_dump(status: &str) -> PathBuf {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("rkdump: last dump: "))
        .unwrap_or_else(|| panic!("no last dump in {status}"));
    assert!(line.ends_with(", complete"), "{status}");
    let path = Path::new(line.split(',').next().unwrap());
    let name = path
        .strip_prefix("/var/crash")
        .ok()
        .and_then(|p| p.iter().next())
        .unwrap_or_else(|| panic!("not in /var/crash: {status}"));
    assert!(name.to_string_lossy().starts_with("127.0.0.1-"), "{status}");
    Path::new("/var/crash").join(name)
}

#[test]
fn dpkg_i_arms_the_system_and_the_crash_is_in_var_crash_after_the_reboot() {
    let kernel = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    let deb = rkdump_lab::package::build().unwrap();
    let system = DebianSystem::get().expect("the Debian 12 tree");
    let dir = rkdump_lab::cache::root().join("lab/package/install");
    let mut flow = Flow::create(&system, &dir, &deb, DEMO_PLAN, &[]).unwrap();
    let options = BootOptions {
        allow_reboot: true,
        ..BootOptions::default()
    };
    let events = flow
        .run(&options, Duration::from_secs(1500), &mut |_| {})
        .unwrap();
    let kinds: Vec<&EventKind> = events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| !matches!(k, EventKind::Step(_)))
        .collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [
                EventKind::KernelBooting { capture: false },
                EventKind::Crashed,
                EventKind::KernelBooting { capture: true },
                EventKind::CaptureStarted,
                EventKind::DumpWritten(summary),
                EventKind::FinalAction(action),
                EventKind::KernelBooting { capture: false },
            ] if summary.contains("\"complete\":true") && action == "reboot"
        ),
        "{kinds:?}"
    );
    let log = flow.log().unwrap();

    // Installed: enabled, started by the package (crashkernel= is reserved), armed.
    let install = step(&log, "1.dpkg-install");
    assert_eq!(exit_status(install), "0", "{install}");
    assert_eq!(exit_status(step(&log, "1.enabled")), "0", "{log}");
    assert!(step(&log, "1.active").contains("\nactive\n"), "{log}");
    let status_1 = step(&log, "1.status");
    assert_eq!(exit_status(status_1), "0", "{status_1}");
    assert!(status_1.contains("kdump is operational"), "{status_1}");
    let journal_1 = step(&log, "1.journal");
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
    assert!(step(&log, "2.active").contains("\nactive\n"), "{log}");
    let journal_2 = step(&log, "2.journal");
    assert!(
        journal_2.contains("loaded the capture kernel"),
        "{journal_2}"
    );
    assert!(!journal_2.contains("rebuilding"), "{journal_2}");
    let status_2 = step(&log, "2.status");
    assert_eq!(exit_status(status_2), "0", "{status_2}");
    let reported = last_dump(status_2);
    let images = step(&log, "2.images");
    assert!(
        images.contains(&format!("initrd-{}.img\n", kernel.release)),
        "{images}"
    );

    // The dump on the disk, read without mounting it: the one status reported.
    let dumps = flow.dumps().unwrap();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    assert_eq!(dumps[0].file_name(), reported.file_name());
    check_dump(&dumps[0], &kernel);
}

/// The crashkernel= value in MiB that the GRUB snippet of `rkdump crashkernel --set` sets.
fn grub_crashkernel_mib(snippet: &str) -> u32 {
    let value = snippet
        .split_once("crashkernel=")
        .and_then(|(_, rest)| rest.split_once("M\""))
        .unwrap_or_else(|| panic!("no crashkernel=<N>M in {snippet}"))
        .0;
    value.parse().unwrap()
}

#[test]
fn a_system_s_life_crashkernel_set_test_force_a_kernel_upgrade_and_purge() {
    let cloud = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    let generic = Kernel::fetch(Flavor::Generic61).unwrap();
    assert_ne!(cloud.release, generic.release);
    let deb = rkdump_lab::package::build().unwrap();
    let system = DebianSystem::get().expect("the Debian 12 tree");
    let dir = rkdump_lab::cache::root().join("lab/package/lifecycle");
    let kernel_deb = generic.image_deb().unwrap();
    let mut flow = Flow::create(
        &system,
        &dir,
        &deb,
        LIFECYCLE_PLAN,
        &[(rkdump_lab::installed::KERNEL_DEB, &kernel_deb)],
    )
    .unwrap();
    let mut crashes = 0;
    let mut complete = 0;
    let mut count = |event: &rkdump_lab::installed::Event| match &event.kind {
        EventKind::Crashed => crashes += 1,
        EventKind::DumpWritten(summary) if summary.contains("\"complete\":true") => complete += 1,
        _ => {}
    };

    // Boot 1, no crashkernel=: the package installs, says what is missing and what to set;
    // the service does not run; `rkdump crashkernel --set` writes GRUB's snippet (the guest
    // has no GRUB: it says where the value goes instead).
    let unreserved = BootOptions {
        crashkernel_mib: None,
        ..BootOptions::default()
    };
    flow.run(&unreserved, Duration::from_secs(600), &mut count)
        .unwrap();
    let log = flow.log().unwrap();
    let install = step(&log, "1.dpkg-install");
    assert_eq!(exit_status(install), "0", "{install}");
    assert!(
        install.contains("crashkernel= is not on the kernel command line"),
        "{install}"
    );
    assert!(install.contains("rkdump crashkernel --set"), "{install}");
    let inactive = step(&log, "1.inactive");
    assert!(inactive.contains("\ninactive\n"), "{inactive}");
    let status = step(&log, "1.status");
    assert_ne!(exit_status(status), "0", "{status}");
    assert!(status.contains("kdump is not operational"), "{status}");
    let suggested = step(&log, "1.crashkernel");
    assert_eq!(exit_status(suggested), "3", "{suggested}");
    let set = step(&log, "1.crashkernel-set");
    assert_eq!(exit_status(set), "0", "{set}");
    assert!(set.contains("update-grub is not installed"), "{set}");
    let mib = grub_crashkernel_mib(step(&log, "1.grub-cfg"));
    assert!(
        suggested.contains(&format!("this system needs crashkernel={mib}M")),
        "{suggested}"
    );

    // Boots 2-4 with the value it set, as the boot loader would pass it: armed at boot, a
    // crash captured; `rkdump test --force`, its dump reported by the next boot's status;
    // then the generic kernel package installed.
    let reserved = BootOptions {
        crashkernel_mib: Some(mib),
        allow_reboot: true,
        ..BootOptions::default()
    };
    flow.run(&reserved, Duration::from_secs(1800), &mut count)
        .unwrap();
    let log = flow.log().unwrap();
    for boot in 2..=4 {
        let active = step(&log, &format!("{boot}.active"));
        assert!(active.contains("\nactive\n"), "{active}");
        let status = step(&log, &format!("{boot}.status"));
        assert_eq!(exit_status(status), "0", "{status}");
        assert!(status.contains("kdump is operational"), "{status}");
    }
    let first = last_dump(step(&log, "3.status"));
    // udev's coldplug replayed: the hotplug rule ignores synthetic events (no reload).
    assert_eq!(exit_status(step(&log, "3.coldplug")), "0", "{log}");
    assert_eq!(exit_status(step(&log, "3.memory-online")), "0", "{log}");
    let after_coldplug = step(&log, "3.after-coldplug");
    assert!(after_coldplug.contains("\nactive\n"), "{after_coldplug}");
    let reloads = step(&log, "3.reloads");
    assert!(reloads.contains("\n0\n"), "{reloads}");
    let test_line = log
        .lines()
        .find(|l| l.starts_with("rkdump: kdump test ") && l.ends_with(": crashing the machine now"))
        .unwrap_or_else(|| panic!("rkdump test did not crash the machine:\n{log}"));
    let id = test_line
        .strip_prefix("rkdump: kdump test ")
        .and_then(|rest| rest.split_once(':'))
        .unwrap()
        .0;
    let status_4 = step(&log, "4.status");
    let tested = last_dump(status_4);
    assert_ne!(tested, first);
    assert!(
        status_4.contains(&format!(
            "rkdump: last kdump test {id}: its dump arrived: {}",
            tested.display()
        )),
        "{status_4}"
    );
    let kernel_install = step(&log, "4.kernel-install");
    assert_eq!(exit_status(kernel_install), "0", "{kernel_install}");
    assert!(
        step(&log, "4.boot-dir").contains(&format!("vmlinuz-{}\n", generic.release)),
        "{log}"
    );

    // Boots 5-6 on the new kernel: the service builds its capture image at boot, a crash is
    // captured; then removal and purge.
    flow.boot_installed_kernel(&generic.release).unwrap();
    flow.run(&reserved, Duration::from_secs(900), &mut count)
        .unwrap();
    let log = flow.log().unwrap();
    let journal_5 = step(&log, "5.journal");
    assert!(
        journal_5.contains(&format!(
            "rebuilding the capture image: no capture image at /var/lib/rkdump/initrd-{}.img",
            generic.release
        )),
        "{journal_5}"
    );
    assert!(
        journal_5.contains("loaded the capture kernel"),
        "{journal_5}"
    );
    let status_6 = step(&log, "6.status");
    assert_eq!(exit_status(status_6), "0", "{status_6}");
    let upgraded = last_dump(status_6);
    let images = step(&log, "6.images");
    for release in [&cloud.release, &generic.release] {
        assert!(
            images.contains(&format!("initrd-{release}.img\n")),
            "{images}"
        );
    }
    assert_eq!(exit_status(step(&log, "6.remove")), "0", "{log}");
    let after_remove = step(&log, "6.after-remove");
    assert_eq!(exit_status(after_remove), "0", "{after_remove}");
    assert!(
        after_remove.contains("\n/etc/kdump.conf\n"),
        "{after_remove}"
    );
    assert!(after_remove.contains("127.0.0.1-"), "{after_remove}");
    assert_eq!(exit_status(step(&log, "6.purge")), "0", "{log}");
    let after_purge = step(&log, "6.after-purge");
    assert!(
        after_purge.contains("'/var/lib/rkdump': No such file or directory"),
        "{after_purge}"
    );
    assert!(
        after_purge.contains("'/etc/kdump.conf': No such file or directory"),
        "{after_purge}"
    );
    assert!(after_purge.contains("\n/var/crash\n"), "{after_purge}");

    // Three crashes, three complete dumps, each read by crash and drgn with its kernel's
    // debug vmlinux.
    assert_eq!((crashes, complete), (3, 3));
    let dumps = flow.dumps().unwrap();
    let names: Vec<_> = dumps.iter().map(|d| d.file_name().unwrap()).collect();
    assert_eq!(
        names,
        [&first, &tested, &upgraded].map(|d| d.file_name().unwrap())
    );
    check_dump(&dumps[0], &cloud);
    check_dump(&dumps[1], &cloud);
    check_dump(&dumps[2], &generic);
}

#[test]
fn beside_an_enabled_kdump_tools_the_package_says_so_and_does_not_load_over_it_until_disabled() {
    // Debian's kdump-tools installed and enabled (USE_KDUMP=1): it arms at boot.
    let system = DebianSystem::get_variant(&rkdump_lab::debian::Variant::KDUMP_TOOLS)
        .expect("the Debian 12 tree with kdump-tools");
    let deb = rkdump_lab::package::build().unwrap();
    let dir = rkdump_lab::cache::root().join("lab/package/kdump-tools");
    let mut flow = Flow::create(
        &system,
        &dir,
        &deb,
        &["install armed takeover power_off"],
        &[],
    )
    .unwrap();
    flow.run(
        &BootOptions::default(),
        Duration::from_secs(900),
        &mut |_| {},
    )
    .unwrap();
    let log = flow.log().unwrap();
    // The installation succeeds and says why rkdump will not arm.
    let install = step(&log, "1.dpkg-install");
    assert_eq!(exit_status(install), "0", "{install}");
    assert!(
        install.contains(
            "kdump-tools.service is enabled too: only one kdump service can own the crash kernel"
        ),
        "{install}"
    );
    // The service refuses, naming kdump-tools and what to do; kdump-tools' kernel stays.
    let active = step(&log, "1.active");
    assert!(active.contains("\nfailed\n"), "{active}");
    let journal = step(&log, "1.journal");
    assert!(
        journal.contains(
            "kdump-tools.service is enabled: only one kdump service can own the crash kernel, \
             and rkdump does not load over it (to use rkdump: systemctl disable --now \
             kdump-tools.service; then rkdump start)"
        ),
        "{journal}"
    );
    assert!(!journal.contains("loaded the capture kernel"), "{journal}");
    assert!(!journal.contains("unloaded"), "{journal}");
    let status = step(&log, "1.status");
    assert_eq!(
        exit_status(status),
        "0",
        "kdump-tools' capture kernel is loaded: {status}"
    ); // Doing what it says: kdump-tools disabled and stopped (its kernel unloaded), rkdump
    // starts with its own image and the running kernel's image from /boot (not kdump-tools'
    // KDUMP_KERNEL link, which only kdump-tools' own load makes).
    assert_eq!(exit_status(step(&log, "1.disable-other")), "0", "{log}");
    let start = step(&log, "1.start");
    assert_eq!(exit_status(start), "0", "{start}");
    assert!(
        start.contains("rebuilding the capture image: no capture image at"),
        "{start}"
    );
    assert!(
        start.contains("loaded the capture kernel (kexec_file_load): /boot/vmlinuz-"),
        "{start}"
    );
    let after = step(&log, "1.status-after");
    assert_eq!(exit_status(after), "0", "{after}");
    assert!(after.contains("kdump is operational"), "{after}");
}
