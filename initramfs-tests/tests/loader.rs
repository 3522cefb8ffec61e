//! The first kernel armed by rkdump itself, with no kexec-tools in the guest: `rkdump start`
//! loads the capture kernel, a real sysrq crash boots it, and the dump is checked from outside
//! the guest (the disk image, crash and drgn reading the vmcore with the kernel's debug vmlinux).
//! Also what `start`, `status` and `stop` say when loading cannot work (lockdown, no
//! reservation).
//!
//! The guests are the idle generic 6.1 kernel of the runtime scenarios (2 vCPUs,
//! crashkernel=256M, the crash on CPU 0); the capture image is the lab's (rkdump as `/init`).

use std::path::{Path, PathBuf};
use std::process::Command;

use initramfs_tests::guest::{boot_to_capture, until_exit};
use initramfs_tests::{crash, drgn_crashed_stack, rkdump, run_ok, sorted_names};
use rkdump_lab::kernels::Kernel;
use rkdump_lab::scenario::{self, Disk, Prepared, Scenario};
use rkdump_lab::variants::{RUNTIME, Variant};

const UUID: &str = "5e1f0000-aaaa-bbbb-cccc-000011112222";

fn kernel() -> Kernel {
    Kernel::fetch(RUNTIME.flavor).expect("fetching the kernel")
}

fn dir(name: &str) -> PathBuf {
    rkdump_lab::cache::root().join("lab/loader").join(name)
}

/// A scenario dumping to an ext4 disk found by UUID, loaded in the first kernel by `commands`.
fn scenario(variant: Variant, commands: &str) -> Scenario {
    let mut scenario = Scenario::new(
        variant,
        &format!("ext4 UUID={UUID}\nfinal_action poweroff\n"),
    )
    .first_loader(commands);
    scenario.disks = vec![Disk::Ext4 {
        size_mib: 512,
        label: "dumps".into(),
        uuid: Some(UUID.into()),
    }];
    scenario
}

/// The dump directory on the scenario's disk.
fn dump_dir(prepared: &Prepared) -> PathBuf {
    let into = prepared.dir.join("out");
    let _ = std::fs::remove_dir_all(&into);
    let base = scenario::read_ext4_dir(&prepared.disks[0], "/var/crash", &into).unwrap();
    scenario::dump_dir(&base).unwrap()
}

/// The complete dump layout, `rkdump info` accepting it, and crash and drgn finding the sysrq
/// panic in it.
fn assert_readable_crash_dump(dir: &Path) {
    assert_eq!(
        sorted_names(dir),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    let vmcore = dir.join("vmcore");
    let info = run_ok(Command::new(rkdump()).arg("info").arg(&vmcore));
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().eq(["Complete:", "yes"])),
        "{info}"
    );
    let vmlinux = kernel().vmlinux();
    let bt = crash(&vmlinux, &vmcore, &["bt"]);
    assert!(bt.contains("sysrq_handle_crash"), "crash's bt:\n{bt}");
    let stack = drgn_crashed_stack(&vmlinux, &vmcore);
    assert!(
        stack.contains("sysrq_handle_crash"),
        "drgn's stack:\n{stack}"
    );
}

/// `rkdump info --vmlinux`: the dump's build id is the one binutils' `readelf -n` reads from
/// the kernel's debug vmlinux, which matches; the cloud kernel's vmlinux does not (crash refuses
/// that pair too).
fn assert_vmlinux_check(vmcore: &Path) {
    let vmlinux = kernel().vmlinux();
    let notes = run_ok(Command::new("readelf").arg("-n").arg(&vmlinux));
    let build_id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build id in readelf -n:\n{notes}"))
        .to_owned();
    let info = run_ok(
        Command::new(rkdump())
            .arg("info")
            .arg(vmcore)
            .arg("--vmlinux")
            .arg(&vmlinux),
    );
    assert!(
        info.contains(&format!("Build id:     {build_id}")),
        "{info}"
    );
    assert!(info.contains("matches"), "{info}");
    let other = Kernel::fetch(rkdump_lab::kernels::Flavor::Cloud61)
        .unwrap()
        .vmlinux();
    let output = Command::new(rkdump())
        .arg("info")
        .arg(vmcore)
        .arg("--vmlinux")
        .arg(&other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not match the dump: the dump is of 6.1.0-")
            && stderr.contains("the vmlinux is 6.1.0-")
            && stderr.contains("cloud-amd64"),
        "{stderr}"
    );
    let refused = crash(&other, vmcore, &["sys"]);
    assert!(
        refused.contains("do not match"),
        "crash with the wrong vmlinux:\n{refused}"
    );
}

/// The capture kernel's command line, from its log in kexec-dmesg.log.
fn capture_cmdline(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("kexec-dmesg.log")).unwrap();
    log.lines()
        .find_map(|l| {
            l.split_once("Kernel command line: ")
                .map(|(_, c)| c.to_owned())
        })
        .unwrap_or_else(|| panic!("no kernel command line in the capture log:\n{log}"))
}

/// `rkdump start` with kexec_file_load: loaded, the crash captured on both CPUs (nr_cpus=2 for
/// 256M, the boot CPU's APIC id disabled as kdumpctl does), the dump readable by crash and drgn.
#[test]
fn start_loads_with_kexec_file_load_and_the_crash_is_captured() {
    let scenario = scenario(
        RUNTIME,
        &format!(
            "rkdump start --initrd /boot/capture.img && mark started\n\
         rkdump status; mark status $?\n\
         mkdir -p /data /dev/disk/by-uuid && mount -t ext4 /dev/vda /data\n\
         ln -sf /dev/vda /dev/disk/by-uuid/{UUID}\n\
         rkdump doctor --initrd /boot/capture.img; mark doctor $?\n\
         umount /data"
        ),
    );
    let (prepared, mut vm) = boot_to_capture(&scenario, &kernel(), &dir("file"));
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("rkdump: loaded the capture kernel (kexec_file_load)"),
        "{console}"
    );
    assert!(console.contains("RKDUMP-LAB: started"), "{console}");
    assert!(console.contains("RKDUMP-LAB: status 0"), "{console}");
    // The doctor finds nothing wrong on this guest.
    assert!(console.contains("RKDUMP-LAB: doctor 0"), "{console}");
    for line in [
        "rkdump doctor: ok   crashkernel: 256 MiB reserved",
        "rkdump doctor: ok   lockdown: no lockdown",
        "rkdump doctor: ok   watchdog: no active watchdog with a loadable driver",
        "rkdump doctor: ok   kexec_load_disabled: kexec loads are allowed",
        "rkdump doctor: ok   target: /dev/disk/by-uuid/5e1f0000-aaaa-bbbb-cccc-000011112222 is \
         present, its drivers (virtio_blk, virtio_pci) in the image",
        // kdumpctl's rule: a 512 MiB target for a 1 GiB machine may be too small.
        "rkdump doctor: warn space: /data",
        "rkdump doctor: ok   last_dump: no dump yet",
    ] {
        assert!(console.contains(line), "{line} missing:\n{console}");
    }
    assert!(!console.contains("rkdump doctor: FAIL"), "{console}");
    let dir = dump_dir(&prepared);
    assert_readable_crash_dump(&dir);
    assert_vmlinux_check(&dir.join("vmcore"));
    // kdumpctl's prepare_cmdline: crashkernel= gone, the append list, disable_cpu_apicid of
    // the boot CPU (APIC id 0 on QEMU), and rkdump's nr_cpus for 256M.
    let cmdline = capture_cmdline(&dir);
    assert!(!cmdline.contains("crashkernel="), "{cmdline}");
    for parameter in [
        "irqpoll",
        "reset_devices",
        "disable_cpu_apicid=0",
        "nr_cpus=2",
        "novmcoredd",
    ] {
        assert!(
            cmdline.split(' ').any(|p| p == parameter),
            "{parameter} missing: {cmdline}"
        );
    }
    // Both CPUs online in the capture kernel, and the engine used both.
    let log = std::fs::read_to_string(dir.join("kexec-dmesg.log")).unwrap();
    assert!(log.contains("smp: Brought up 1 node, 2 CPUs"), "{log}");
    assert!(log.contains("\"threads\":2"), "{log}");
}

/// Boots a first kernel with `cmdline` that runs `commands` and powers off without crashing;
/// returns the console.
fn first_kernel_only(name: &str, cmdline: &str, commands: &str) -> String {
    first_kernel_of(RUNTIME, name, cmdline, commands)
}

/// [`first_kernel_only`] for another guest.
fn first_kernel_of(variant: Variant, name: &str, cmdline: &str, commands: &str) -> String {
    let mut scenario = scenario(variant, &format!("{commands}\npoweroff -f"));
    scenario.first_cmdline = Some(cmdline.to_owned());
    let prepared = scenario.prepare(&kernel(), &dir(name)).unwrap();
    let mut vm = prepared.start().unwrap();
    until_exit(&prepared, &mut vm)
}

/// The lines the guest printed after `RKDUMP-LAB: <marker>` lines, by marker.
fn marked(console: &str, marker: &str) -> String {
    console
        .lines()
        .find_map(|l| {
            l.split_once(&format!("RKDUMP-LAB: {marker} "))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {marker} mark:\n{console}"))
}

const START_STATUS_STOP: &str = "rkdump start --initrd /boot/capture.img; mark start $?\n\
     mark loaded $(cat /sys/kernel/kexec_crash_loaded)\n\
     rkdump status; mark status $?\n\
     rkdump stop; mark stop $?";

/// `lockdown=integrity`: start exits 1 naming lockdown and the way out, without trying
/// kexec_load (lockdown refuses it too); nothing is loaded; status exits 3; stop works.
#[test]
fn lockdown_refuses_with_the_reason_and_nothing_is_loaded() {
    let cmdline = format!("{} lockdown=integrity", RUNTIME.first_cmdline());
    let console = first_kernel_only("lockdown", &cmdline, START_STATUS_STOP);
    assert_eq!(marked(&console, "start"), "1", "{console}");
    assert!(
        console.contains("kexec_file_load failed with EPERM")
            && console.contains("locked down (integrity: /sys/kernel/security/lockdown)")
            && console.contains("to fix: load a capture kernel signed by a key the kernel trusts"),
        "{console}"
    );
    assert!(!console.contains("kexec_load instead"), "{console}");
    assert_eq!(marked(&console, "loaded"), "0");
    assert_eq!(marked(&console, "status"), "3");
    assert!(console.contains("rkdump: kdump is not operational: no capture kernel is loaded"));
    assert_eq!(marked(&console, "stop"), "0");
}

/// No crashkernel= at all, and one too small for the kernel and its image: start says which,
/// with the size to set; status exits 3.
#[test]
fn no_or_too_small_reservation_is_explained() {
    let without = RUNTIME.first_cmdline().replace("crashkernel=256M", "");
    let commands = format!(
        "{START_STATUS_STOP}\nrkdump estimate --initrd /boot/capture.img; mark estimate $?"
    );
    let console = first_kernel_only("no-crashkernel", &without, &commands);
    assert_eq!(marked(&console, "start"), "1", "{console}");
    // The estimate, for this 1 GiB guest and the lab's image, lies between the smallest
    // reservation that works (104M, measured by bisection: docs/lab.md) and 1.5 times it.
    let estimate = estimate_of(&console);
    assert!((104..=156).contains(&estimate), "estimate {estimate}M");
    assert_eq!(marked(&console, "estimate"), "0");
    assert!(
        console.contains("rkdump: WARNING: nothing is reserved"),
        "{console}"
    );
    assert!(
        console.contains(&format!(
            "no memory is reserved for the capture kernel: add crashkernel={estimate}M (rkdump \
             estimate's value for this kernel and image)"
        )),
        "{console}"
    );
    assert_eq!(marked(&console, "status"), "3");
    assert!(
        console.contains("kdump is not operational: no memory is reserved"),
        "{console}"
    );
    // start shows what the doctor finds wrong.
    assert!(
        console.contains(
            "rkdump doctor: FAIL crashkernel: no crashkernel= on the kernel command line"
        ),
        "{console}"
    );

    let small = RUNTIME
        .first_cmdline()
        .replace("crashkernel=256M", "crashkernel=24M");
    let console = first_kernel_only("small-crashkernel", &small, START_STATUS_STOP);
    assert_eq!(marked(&console, "start"), "1", "{console}");
    assert!(
        console.contains("the crashkernel= reservation is too small: 24 MiB reserved, ")
            && console.contains(" MiB needed for the capture kernel and its image"),
        "{console}"
    );
    assert_eq!(marked(&console, "loaded"), "0");
    assert_eq!(marked(&console, "status"), "3");
    assert!(
        console.contains("rkdump doctor: FAIL estimate: 24 MiB reserved, the capture needs"),
        "{console}"
    );
}

/// The MiB of `rkdump estimate`'s first line.
fn estimate_of(console: &str) -> u64 {
    console
        .lines()
        .find_map(|l| {
            l.strip_prefix("rkdump: crashkernel=")?
                .strip_suffix("M is needed here")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no estimate:\n{console}"))
}

/// The estimate for the 3 GiB guest lies between the smallest reservation that captures it
/// (104M, docs/lab.md) and 1.5 times it, as for the 1 GiB guest.
#[test]
fn long_estimate_of_a_3_gib_guest() {
    let variant = *rkdump_lab::variants::by_name("3g").unwrap();
    let console = first_kernel_of(
        variant,
        "estimate-3g",
        &variant.first_cmdline(),
        "rkdump estimate --initrd /boot/capture.img; mark estimate $?",
    );
    assert_eq!(marked(&console, "estimate"), "0", "{console}");
    let estimate = estimate_of(&console);
    assert!((104..=156).contains(&estimate), "estimate {estimate}M");
    assert!(console.contains("MiB reserved: enough"), "{console}");
}

/// kexec_file_load refused with ENOKEY, as a kernel enforcing signatures refuses an image it
/// cannot verify (a seccomp filter answers for the kernel; lockdown is off): rkdump says why,
/// loads with its own kexec_load segments, and the crash is captured and readable.
#[test]
fn signature_refusal_falls_back_to_kexec_load_and_the_crash_is_captured() {
    // ENOKEY of <asm-generic/errno.h>.
    let enokey = 126;
    let scenario = scenario(
        RUNTIME,
        &format!(
            "lab-seccomp kexec_file_load {enokey} rkdump start --initrd /boot/capture.img; \
             mark start $?"
        ),
    );
    let (prepared, mut vm) = boot_to_capture(&scenario, &kernel(), &dir("enokey"));
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("rkdump: kexec_file_load failed with ENOKEY")
            && console.contains("the kernel enforces kexec image signatures")
            && console
                .contains("loaded with kexec_load instead. To load with kexec_file_load: sign"),
        "{console}"
    );
    assert!(
        console.contains("rkdump: loaded the capture kernel (kexec_load)"),
        "{console}"
    );
    assert_readable_crash_dump(&dump_dir(&prepared));
}

/// kexec_load with KASLR on and `kernel.kptr_restrict=2` (kallsyms shows zeros, where
/// kexec-tools fails with "Can't find kernel text map area from kcore"): loaded, captured, and
/// crash and drgn find the panic through the ELF core header rkdump built.
#[test]
fn kexec_load_with_kaslr_and_kptr_restrict_2() {
    const { assert!(RUNTIME.kaslr, "the runtime guest randomizes its base") };
    let scenario = scenario(
        RUNTIME,
        "echo 2 > /proc/sys/kernel/kptr_restrict\n\
         mark kallsyms $(grep -m1 ' _stext$' /proc/kallsyms)\n\
         rkdump start --syscall load --initrd /boot/capture.img; mark start $?",
    );
    let (prepared, mut vm) = boot_to_capture(&scenario, &kernel(), &dir("kaslr-kptr"));
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("RKDUMP-LAB: kallsyms 0000000000000000 T _stext"),
        "kallsyms must hide the text: {console}"
    );
    assert!(
        console.contains("rkdump: loaded the capture kernel (kexec_load)"),
        "{console}"
    );
    let dir = dump_dir(&prepared);
    assert_readable_crash_dump(&dir);
    // The capture kernel booted from rkdump's boot_params with elfcorehdr= on its line.
    assert!(
        capture_cmdline(&dir).contains("elfcorehdr="),
        "{}",
        capture_cmdline(&dir)
    );
}

/// The same two loads under UEFI (OVMF): file mode, and the kexec_load fallback after ENOKEY,
/// whose capture kernel boots with the EFI state rkdump passes (EFI, SMBIOS, no `acpi_rsdp=`).
#[test]
fn uefi_file_load_and_kexec_load_are_captured() {
    for (name, commands, syscall) in [
        (
            "uefi-file",
            "rkdump start --initrd /boot/capture.img; mark start $?",
            "kexec_file_load",
        ),
        (
            "uefi-load",
            // The fallback, as on a kernel that enforces signatures (ENOKEY, 126).
            "lab-seccomp kexec_file_load 126 rkdump start --initrd /boot/capture.img; \
             mark start $?",
            "kexec_load",
        ),
    ] {
        let mut scenario = scenario(RUNTIME, commands);
        scenario.qemu_args = vec!["-bios".into(), "/usr/share/ovmf/OVMF.fd".into()];
        let (prepared, mut vm) = boot_to_capture(&scenario, &kernel(), &dir(name));
        let console = until_exit(&prepared, &mut vm);
        assert!(console.contains("efi: EFI v"), "not an EFI boot: {console}");
        assert!(
            console.contains(&format!("rkdump: loaded the capture kernel ({syscall})")),
            "{console}"
        );
        let dir = dump_dir(&prepared);
        assert_readable_crash_dump(&dir);
        // Two CPUs in the capture kernel under EFI firmware, whichever loader built it.
        let log = std::fs::read_to_string(dir.join("kexec-dmesg.log")).unwrap();
        assert!(
            log.contains("smp: Brought up 1 node, 2 CPUs"),
            "{name}:\n{log}"
        );
        if syscall == "kexec_load" {
            // rkdump's own loader passes the EFI state (efi_info, the runtime map, SETUP_EFI):
            // the capture kernel boots with EFI and finds SMBIOS through its configuration
            // table (without EFI it said "DMI not present or invalid").
            assert!(log.contains("efi: EFI v"), "{name}: no EFI:\n{log}");
            assert!(log.contains("SMBIOS 2.8 present."), "{name}:\n{log}");
            assert!(log.contains("DMI: QEMU Standard PC"), "{name}:\n{log}");
            assert!(
                !log.contains("DMI not present or invalid"),
                "{name}:\n{log}"
            );
            assert!(
                !log.contains("acpi_rsdp="),
                "{name}: acpi_rsdp= given:\n{log}"
            );
        }
    }
}

/// `rkdump test --force` records a test id and crashes the machine; after the reboot `status`
/// finds that test's dump complete on the target; `stop` unloads (the kernel then reports
/// nothing loaded) and `status` exits 3. Observed from outside: two boots of the same disk.
///
/// The first kernel keeps `/var/lib/rkdump` and mounts the dump filesystem on that disk, as an
/// installed system has them (the lab's first kernel runs from an initramfs and has no udev:
/// the by-uuid link is made by hand).
#[test]
fn test_crash_is_found_by_status_after_the_reboot_and_stop_unloads() {
    let commands = format!(
        "mkdir -p /data /var/lib /dev/disk/by-uuid && mount -t ext4 /dev/vda /data\n\
         mkdir -p /data/state && ln -sfn /data/state /var/lib/rkdump\n\
         ln -sf /dev/vda /dev/disk/by-uuid/{UUID}\n\
         if [ -f /data/state/test-status ]; then\n\
           rkdump start --initrd /boot/capture.img; mark start $?\n\
           rkdump status; mark status $?\n\
           rkdump stop; mark stop $?\n\
           mark loaded $(cat /sys/kernel/kexec_crash_loaded)\n\
           rkdump status; mark status-after-stop $?\n\
           umount /data; poweroff -f\n\
         fi\n\
         rkdump test --force --initrd /boot/capture.img; mark test $?"
    );
    let scenario = scenario(RUNTIME, &commands);
    let prepared = scenario.prepare(&kernel(), &dir("test-status")).unwrap();
    let mut vm = prepared.start().unwrap();
    let first = until_exit(&prepared, &mut vm);
    let id = first
        .lines()
        .find_map(|l| {
            l.strip_prefix("rkdump: kdump test ")?
                .strip_suffix(": crashing the machine now")
        })
        .unwrap_or_else(|| panic!("no test crash:\n{first}"))
        .to_owned();
    assert!(first.contains("sysrq: Trigger a crash"), "{first}");
    assert!(first.contains("rkdump: capture complete"), "{first}");

    let mut vm = prepared.start().unwrap();
    let second = until_exit(&prepared, &mut vm);
    assert_eq!(marked(&second, "start"), "0", "{second}");
    let report = second
        .lines()
        .find_map(|l| l.strip_prefix(&format!("rkdump: last kdump test {id}: ")))
        .unwrap_or_else(|| panic!("status says nothing of test {id}:\n{second}"));
    assert!(
        report.starts_with("its dump arrived: /data/var/crash/127.0.0.1-")
            && report.contains("/vmcore, ")
            && report.ends_with(" bytes, complete"),
        "{report}"
    );
    assert!(second.contains("rkdump: kdump is operational"), "{second}");
    assert_eq!(marked(&second, "status"), "0");
    assert_eq!(marked(&second, "stop"), "0");
    assert!(
        second.contains("rkdump: unloaded the capture kernel"),
        "{second}"
    );
    assert_eq!(marked(&second, "loaded"), "0");
    assert_eq!(marked(&second, "status-after-stop"), "3");
    // The dump the status named is there, readable, and the capture's log carries the id.
    let dir = dump_dir(&prepared);
    assert_readable_crash_dump(&dir);
    assert!(
        capture_cmdline(&dir)
            .split(' ')
            .any(|p| p == format!("rkdump.test_id={id}")),
        "{}",
        capture_cmdline(&dir)
    );
}
