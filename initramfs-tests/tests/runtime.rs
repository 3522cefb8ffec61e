//! rkdump as PID 1 of the capture kernel, on real crashes: targets, hooks, the watchdog,
//! failures and what the machine does afterwards, each observed from outside the guest (QEMU's
//! exit, the console, the disks).
//!
//! Every scenario crashes an idle generic 6.1 guest and boots the capture kernel with rkdump as
//! `/init` and the scenario's kdump.conf.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use initramfs_tests::guest::{self, until_exit};
use initramfs_tests::{crash, makedumpfile, rkdump, run_ok, sorted_names};
use rkdump_lab::kernels::Kernel;
use rkdump_lab::scenario::{self, Disk, Prepared, Scenario};
use rkdump_lab::variants::RUNTIME;
use rkdump_lab::vm::Vm;

const UUID: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const ABSENT_UUID: &str = "deadbeef-0000-0000-0000-000000000000";

fn kernel() -> Kernel {
    Kernel::fetch(RUNTIME.flavor).expect("fetching the kernel")
}

fn ext4(label: &str, size_mib: u64) -> Disk {
    Disk::Ext4 {
        size_mib,
        label: label.into(),
        uuid: None,
    }
}

/// Prepares `scenario` in its own directory, boots it and waits until the capture kernel
/// runs rkdump.
fn boot(name: &str, scenario: &Scenario) -> (Prepared, Vm) {
    let dir = rkdump_lab::cache::root().join("lab/runtime").join(name);
    guest::boot_to_capture(scenario, &kernel(), &dir)
}

/// The dump directory under `/var/crash` of an ext4 disk image.
fn ext4_dump_dir(image: &Path, path: &str) -> PathBuf {
    let into = image.with_extension("out");
    let _ = std::fs::remove_dir_all(&into);
    let base = scenario::read_ext4_dir(image, path, &into).unwrap();
    scenario::dump_dir(&base).unwrap()
}

fn assert_complete_dump(dir: &Path) {
    assert_eq!(
        sorted_names(dir),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    run_ok(Command::new(rkdump()).arg("info").arg(dir.join("vmcore")));
}

/// ext4 found by UUID; kdump_pre, pre.d, post.d and kdump_post in order with the dump's status;
/// a hook past its time limit is killed; only the configured disk is written; power-off.
#[test]
fn ext4_by_uuid_with_hooks_in_order() {
    let trace = "echo \"HOOK $0 $1\"";
    let config = format!(
        "ext4 UUID={UUID}\nkdump_pre /bin/pre\nkdump_post /bin/post\nfinal_action poweroff\n"
    );
    let mut scenario = Scenario::new(RUNTIME, &config)
        .script("/bin/pre", trace)
        .script("/etc/kdump/pre.d/10-first", trace)
        .script("/etc/kdump/pre.d/20-slow", &format!("{trace}; sleep 60"))
        .script("/etc/kdump/post.d/10-first", trace)
        .script("/bin/post", trace);
    scenario.capture_cmdline = "rkdump.hook_timeout=3".into();
    scenario.disks = vec![
        ext4("decoy", 64),
        Disk::Ext4 {
            size_mib: 512,
            label: "dumps".into(),
            uuid: Some(UUID.into()),
        },
    ];
    let (prepared, mut vm) = boot("ext4-uuid-hooks", &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("reboot: Power down"),
        "final_action poweroff"
    );
    let dir = ext4_dump_dir(&prepared.disks[1], "/var/crash");
    assert_complete_dump(&dir);
    let log = std::fs::read_to_string(dir.join("kexec-dmesg.log")).unwrap();
    let hooks: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("HOOK ").map(|(_, h)| h))
        .collect();
    assert_eq!(
        hooks,
        [
            "/bin/pre ",
            "/etc/kdump/pre.d/10-first ",
            "/etc/kdump/pre.d/20-slow ",
            "/etc/kdump/post.d/10-first 0",
            "/bin/post 0"
        ],
        "{log}"
    );
    assert!(log.contains("/etc/kdump/pre.d/20-slow: TimedOut"), "{log}");
    // The other disk is left alone.
    let decoy = Command::new("debugfs")
        .args(["-R", "ls -l /"])
        .arg(&prepared.disks[0])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&decoy.stdout).contains("var"),
        "the decoy disk was written"
    );
}

/// ext4 on a GPT partition found by PARTLABEL, and the same disk by PARTUUID.
#[test]
fn gpt_partition_by_partlabel_and_partuuid() {
    for (name, spec) in [
        ("partlabel", "PARTLABEL=dump-part"),
        ("partuuid", &*format!("PARTUUID={UUID}")),
    ] {
        let mut scenario = Scenario::new(RUNTIME, &format!("ext4 {spec}\nfinal_action poweroff\n"));
        scenario.disks = vec![
            ext4("decoy", 64),
            Disk::GptExt4 {
                size_mib: 256,
                partlabel: "dump-part".into(),
                partuuid: UUID.into(),
            },
        ];
        let (prepared, mut vm) = boot(&format!("gpt-{name}"), &scenario);
        let console = until_exit(&prepared, &mut vm);
        assert!(
            console.contains(&format!("{spec} is /dev/vdb1")),
            "{console}"
        );
        let into = prepared.dir.join("out");
        let base =
            scenario::read_ext4_dir_at(&prepared.disks[1], 1 << 20, "/var/crash", &into).unwrap();
        assert_complete_dump(&scenario::dump_dir(&base).unwrap());
    }
}

/// xfs found by LABEL.
#[test]
fn xfs_by_label() {
    let mut scenario = Scenario::new(RUNTIME, "xfs LABEL=xdumps\nfinal_action poweroff\n");
    scenario.disks = vec![Disk::Xfs {
        size_mib: 512,
        label: "xdumps".into(),
    }];
    let (prepared, mut vm) = boot("xfs-label", &scenario);
    until_exit(&prepared, &mut vm);
    let into = prepared.dir.join("out");
    let base = scenario::read_mounted(&prepared.disks[0], "/var/crash", &into).unwrap();
    assert_complete_dump(&scenario::dump_dir(&base).unwrap());
}

/// `dracut_args --mount "dev mnt fstype opts"` is the target; `path` is relative to it.
#[test]
fn dracut_args_mount() {
    let config = "dracut_args --mount \"LABEL=mounted /srv/dumps ext4 defaults,noatime\"\npath /kdump\nfinal_action poweroff\n";
    let mut scenario = Scenario::new(RUNTIME, config);
    scenario.disks = vec![ext4("mounted", 512)];
    let (prepared, mut vm) = boot("dracut-mount", &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("on /kdumproot/srv/dumps"),
        "mounted where --mount says"
    );
    assert_complete_dump(&ext4_dump_dir(&prepared.disks[0], "/kdump"));
}

/// `raw /dev/vdb`: the flattened stream on the device, recovered on the host by `rkdump
/// restore-raw` and by `makedumpfile -R`, and opened by crash.
#[test]
fn raw_device_recovered_on_the_host() {
    let mut scenario = Scenario::new(RUNTIME, "raw /dev/vdb\nfinal_action poweroff\n");
    scenario.disks = vec![ext4("unused", 64), Disk::Blank { size_mib: 256 }];
    let (prepared, mut vm) = boot("raw", &scenario);
    until_exit(&prepared, &mut vm);
    let device = &prepared.disks[1];
    let theirs = prepared.dir.join("vmcore.mdf");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "{} -R {} < {}",
        makedumpfile().display(),
        theirs.display(),
        device.display()
    )));
    let restored = prepared.dir.join("restored");
    run_ok(
        Command::new(rkdump())
            .arg("restore-raw")
            .arg(device)
            .arg(&restored),
    );
    let vmcore = scenario::dump_dir(&restored).unwrap().join("vmcore");
    assert!(
        std::fs::read(&vmcore).unwrap() == std::fs::read(&theirs).unwrap(),
        "restore-raw and makedumpfile -R differ"
    );
    let output = crash(&kernel().vmlinux(), &vmcore, &["bt"]);
    assert!(output.contains("sysrq_handle_crash"), "{output}");
    // The stream header is cleared: the same dump is not recovered twice.
    let again = Command::new(rkdump())
        .arg("restore-raw")
        .arg(device)
        .arg(&restored)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no flattened dump on the device"));
}

/// A failing `kdump_pre`: no dump, straight to the final action.
#[test]
fn failing_kdump_pre_skips_the_dump() {
    let mut scenario = Scenario::new(
        RUNTIME,
        "ext4 LABEL=dumps\nkdump_pre /bin/pre\nfinal_action poweroff\n",
    )
    .script("/bin/pre", "echo not today; exit 7");
    scenario.disks = vec![ext4("dumps", 256)];
    let (prepared, mut vm) = boot("failing-pre", &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("kdump_pre /bin/pre: Exited(7); no dump is taken"),
        "{console}"
    );
    assert!(console.contains("final action: poweroff") && console.contains("reboot: Power down"));
    let dir = ext4_dump_dir(&prepared.disks[0], "/var/crash");
    assert!(
        sorted_names(&dir).is_empty(),
        "no dump: {:?}",
        sorted_names(&dir)
    );
}

/// A target that never appears: the log says why, then the failure action.
#[test]
fn missing_target_device_runs_the_failure_action() {
    let config = format!("ext4 UUID={ABSENT_UUID}\nfailure_action poweroff\nfinal_action reboot\n");
    let mut scenario = Scenario::new(RUNTIME, &config);
    scenario.capture_cmdline = "rkdump.device_timeout=5".into();
    scenario.disks = vec![ext4("other", 64)];
    let (prepared, mut vm) = boot("missing-target", &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains(&format!(
            "no block device UUID={ABSENT_UUID} appeared within 5 s"
        )),
        "{console}"
    );
    assert!(console.contains("failure action: poweroff") && console.contains("reboot: Power down"));
}

/// A full target: `vmcore-incomplete` and `vmcore-dmesg.txt` stay, the log says so, then the
/// failure action.
#[test]
fn full_target_keeps_the_partial_dump() {
    let config = "ext4 LABEL=tiny\ncore_collector makedumpfile -d 0\nfailure_action poweroff\n";
    let mut scenario = Scenario::new(RUNTIME, config);
    scenario.disks = vec![ext4("tiny", 16)];
    let (prepared, mut vm) = boot("full-disk", &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("the target is full; vmcore-incomplete and vmcore-dmesg.txt are kept"),
        "{console}"
    );
    assert!(console.contains("failure action: poweroff"));
    let dir = ext4_dump_dir(&prepared.disks[0], "/var/crash");
    let found = sorted_names(&dir);
    assert!(
        found.contains(&"vmcore-incomplete".to_owned())
            && found.contains(&"vmcore-dmesg.txt".to_owned()),
        "{found:?}"
    );
    assert!(!found.contains(&"vmcore".to_owned()));
}

/// The capture child killed (as the OOM killer would): the supervisor notices and carries out
/// the failure action.
#[test]
fn a_killed_capture_process_runs_the_failure_action() {
    let mut scenario = Scenario::new(RUNTIME, "ext4 LABEL=dumps\nfailure_action poweroff\n")
        .script("/etc/kdump/pre.d/kill", "kill -9 $PPID; sleep 5");
    scenario.disks = vec![ext4("dumps", 256)];
    let (prepared, mut vm) = boot("worker-killed", &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("the capture was killed by signal 9"),
        "{console}"
    );
    assert!(console.contains("failure action: poweroff") && console.contains("reboot: Power down"));
}

fn watchdog_scenario(pet: bool) -> Scenario {
    // A pre hook makes the capture last longer than two watchdog timeouts.
    let mut scenario = Scenario::new(RUNTIME, "ext4 LABEL=dumps\nfinal_action poweroff\n")
        .script("/etc/kdump/pre.d/slow", "sleep 20");
    scenario.capture_cmdline = format!(
        "rkdump.watchdog_timeout=5{}",
        if pet { "" } else { " rkdump.watchdog=nopet" }
    );
    scenario.disks = vec![ext4("dumps", 256)];
    scenario.qemu_args = vec![
        "-device".into(),
        "i6300esb".into(),
        "-action".into(),
        "watchdog=reset".into(),
    ];
    scenario
}

/// The i6300esb watchdog armed with a 5 s timeout: a 20 s capture completes because rkdump
/// pets it, and it is disarmed at the end.
#[test]
fn watchdog_petted_through_a_long_capture() {
    let (prepared, mut vm) = boot("watchdog-pet", &watchdog_scenario(true));
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("timeout 5 s, petted every 1 s"),
        "{console}"
    );
    assert!(console.contains("disarmed (magic close)") && console.contains("reboot: Power down"));
    assert_complete_dump(&ext4_dump_dir(&prepared.disks[0], "/var/crash"));
}

/// The same without petting: the watchdog resets the guest before the capture ends.
#[test]
fn watchdog_not_petted_resets_the_guest() {
    let (prepared, mut vm) = boot("watchdog-nopet", &watchdog_scenario(false));
    let console = until_exit(&prepared, &mut vm);
    assert!(console.contains("NOT petted"), "{console}");
    assert!(
        !console.contains("dump: done") && !console.contains("final action"),
        "the reset came first:\n{console}"
    );
}

/// failure_action dump_to_rootfs: the target is missing, so the dump goes to the first
/// kernel's root (`root=`).
#[test]
fn dump_to_rootfs_after_a_failure() {
    let config =
        format!("ext4 UUID={ABSENT_UUID}\nfailure_action dump_to_rootfs\nfinal_action poweroff\n");
    let mut scenario = Scenario::new(RUNTIME, &config);
    scenario.capture_cmdline = "rkdump.device_timeout=5 root=LABEL=rootfs".into();
    scenario.disks = vec![ext4("rootfs", 512)];
    let (prepared, mut vm) = boot("dump-to-rootfs", &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("failure action: dump_to_rootfs"),
        "{console}"
    );
    assert!(console.contains("mounted the first kernel's root"));
    assert_complete_dump(&ext4_dump_dir(&prepared.disks[0], "/var/crash"));
}

/// A small reservation is enough: `crashkernel=112M` captures the 1 GiB guest with mixed data,
/// and (long mode) `crashkernel=128M` the 3 GiB one. 104M was the smallest that worked for
/// both when measured; 96M runs out of memory while the capture kernel unpacks its initramfs
/// (docs/lab.md).
fn small_reservation(variant: rkdump_lab::variants::Variant, crashkernel: &'static str) {
    let variant = rkdump_lab::variants::Variant {
        crashkernel,
        ..variant
    };
    let mut scenario = Scenario::new(variant, rkdump_lab::crash::KDUMP_CONF_WITHOUT_HOOKS);
    scenario.disks = vec![ext4("rkdump-lab", 2 * u64::from(variant.memory_mib) + 256)];
    let (prepared, mut vm) = boot(
        &format!("crashkernel-{}-{crashkernel}", variant.name),
        &scenario,
    );
    let console = until_exit(&prepared, &mut vm);
    assert!(console.contains("\"complete\":true"), "{console}");
    assert_complete_dump(&ext4_dump_dir(&prepared.disks[0], "/var/crash"));
}

#[test]
fn crashkernel_112m_captures_a_1_gib_guest() {
    small_reservation(rkdump_lab::variants::DEFAULT, "112M");
}

#[test]
fn long_crashkernel_128m_captures_a_3_gib_guest() {
    small_reservation(*rkdump_lab::variants::by_name("3g").unwrap(), "128M");
}

/// final_action reboot, with reboots allowed: the machine comes back into the first kernel.
#[test]
fn final_action_reboot_boots_the_first_kernel_again() {
    let mut scenario = Scenario::new(RUNTIME, "ext4 LABEL=dumps\nfinal_action reboot\n");
    scenario.disks = vec![ext4("dumps", 256)];
    scenario.allow_reboot = true;
    let (_prepared, mut vm) = boot("final-reboot", &scenario);
    vm.wait_for_text("final", "final action: reboot", Duration::from_secs(300))
        .unwrap();
    vm.wait_for_text(
        "first-boot again",
        "RKDUMP-LAB: first-boot",
        Duration::from_secs(300),
    )
    .unwrap();
}

/// final_action halt: the kernel halts and QEMU keeps running.
#[test]
fn final_action_halt_halts() {
    let mut scenario = Scenario::new(RUNTIME, "ext4 LABEL=dumps\nfinal_action halt\n");
    scenario.disks = vec![ext4("dumps", 256)];
    let (_prepared, mut vm) = boot("final-halt", &scenario);
    vm.wait_for_text("halted", "reboot: System halted", Duration::from_secs(300))
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(vm.running(), "a halted machine stays on");
}

/// failure_action shell: a shell prompt on the console; leaving it continues with the final
/// action.
#[test]
fn failure_action_shell_gives_a_console_shell() {
    let config = format!("ext4 UUID={ABSENT_UUID}\nfailure_action shell\nfinal_action poweroff\n");
    let mut scenario = Scenario::new(RUNTIME, &config).script("/bin/unused-hook", "true");
    scenario.capture_cmdline = "rkdump.device_timeout=5".into();
    scenario.disks = vec![ext4("other", 64)];
    let (prepared, mut vm) = boot("failure-shell", &scenario);
    vm.wait_for_text(
        "emergency",
        "Entering kdump emergency mode",
        Duration::from_secs(120),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    vm.send("echo shell-$((6*7))\n").unwrap();
    vm.wait_for_text("shell output", "shell-42", Duration::from_secs(60))
        .unwrap();
    vm.send("exit\n").unwrap();
    let console = until_exit(&prepared, &mut vm);
    assert!(console.contains("final action: poweroff"), "{console}");
}
