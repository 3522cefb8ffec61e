//! The capture image built by rkdump itself, inside a real installed Debian 12 (systemd, Debian's
//! cloud kernel package, root on ext4, udev): `rkdump start` finds no image and builds one with
//! `rkdump mkinitrd`'s builder, rebuilds it when kdump.conf changes or a hook appears (and says
//! why), not when nothing changed; then a real sysrq crash boots the capture kernel with that
//! image, which dumps to /var/crash on the root filesystem with no target line in kdump.conf.
//! The dump is read from the disk image afterwards and opened with crash and the kernel's
//! debug vmlinux.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use initramfs_tests::{crash, exit_status, log_step as step, rkdump, run_ok, sorted_names};
use rkdump_lab::debian::{BootOptions, DebianSystem, Variant};
use rkdump_lab::kernels::Kernel;
use rkdump_lab::nfsd::NfsServer;
use rkdump_lab::scenario;
use rkdump_lab::scenario::{Forward, Network, SERVER_ADDRESS};
use rkdump_lab::sshd::SshServer;
use rkdump_lab::vm::Vm;

const UUID: &str = "0dd5e111-2222-4333-8444-555566667777";

/// The first kernel's steps, each command's output in the log on the disk; the stage lines on
/// the console let the test follow.
const SCRIPT_HEAD: &str = r#"#!/bin/sh
log=/var/lib/lab/image.log
mkdir -p /var/lib/lab
stage() { echo "RKDUMP-LAB: $*" > /dev/console; }
step() {
  name=$1; shift
  { echo "== $name: $*"; "$@"; echo "== $name: exit $?"; } >> $log 2>&1
  stage "$name"
}
stage steps
"#;

/// Crashes the system once the steps are done.
const SCRIPT_TAIL: &str = "sync\nstage crashing\nsleep 1\necho c > /proc/sysrq-trigger\n";

/// The steps of the first test: build, keep, rebuild twice, then arm.
const REBUILDS: &str = r#"step start-missing rkdump start
step stop-1 rkdump stop
step start-unchanged rkdump start
step stop-2 rkdump stop
echo '# edited by the test' >> /etc/kdump.conf
step start-edited rkdump start
step stop-3 rkdump stop
mkdir -p /etc/kdump/post.d
printf '#!/bin/sh\necho "rkdump-lab post.d hook ran with status $1"\n' > /etc/kdump/post.d/10-mark
chmod 755 /etc/kdump/post.d/10-mark
step start-hook rkdump start
step status rkdump status
"#;

/// What kdump.conf says: kdump-utils' default collector, no target line (the root filesystem).
const KDUMP_CONF: &str = "core_collector makedumpfile -l --message-level 7 -d 31\n";

/// The modules of a virtio disk on the cloud kernel, as measured for the lab's own images
/// (`../shared/reference/qemu-lab.md`: `virtio_ring virtio virtio_pci_modern_dev
/// virtio_pci_legacy_dev virtio_pci virtio_blk`); ext4 is built in.
const VIRTIO_DISK_MODULES: &[&str] = &[
    "virtio",
    "virtio_blk",
    "virtio_pci",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_ring",
];

fn dir(name: &str) -> PathBuf {
    rkdump_lab::cache::root().join("lab/image").join(name)
}

fn module_list(output: &str) -> Vec<String> {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("rkdump: modules: "))
        .unwrap_or_else(|| panic!("no module list in:\n{output}"));
    let mut modules: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    modules.sort();
    modules
}

/// One guest run: the Debian system with `kdump_conf`, `files` and `disks` attached (vdb, ...),
/// running `steps` then crashing; returns the log of the steps once QEMU is gone.
struct Run {
    dir: PathBuf,
    disk: rkdump_lab::debian::DebianDisk,
    disks: Vec<PathBuf>,
    log: String,
    serial: String,
}

fn run(
    name: &str,
    kdump_conf: &str,
    files: &[(&str, u32, Vec<u8>)],
    disks: &[scenario::Disk],
    steps: &str,
    qemu_args: Vec<String>,
) -> Run {
    run_on(
        &Variant::DEFAULT,
        name,
        kdump_conf,
        files,
        disks,
        steps,
        qemu_args,
    )
}

/// [`run`] on another variant of the Debian system.
fn run_on(
    variant: &Variant<'_>,
    name: &str,
    kdump_conf: &str,
    files: &[(&str, u32, Vec<u8>)],
    disks: &[scenario::Disk],
    steps: &str,
    qemu_args: Vec<String>,
) -> Run {
    let system = DebianSystem::get_variant(variant).expect("the Debian 12 tree");
    let rkdump_static = rkdump_lab::build::rkdump().unwrap();
    let dir = dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!("{SCRIPT_HEAD}{steps}{SCRIPT_TAIL}");
    let mut builder = system
        .disk()
        .uuid(UUID)
        .host_file("/usr/sbin/rkdump", 0o755, &rkdump_static)
        .unwrap()
        .file("/etc/kdump.conf", 0o644, kdump_conf.as_bytes())
        .dir("/var/crash", 0o755)
        .lab_script("lab-image", "build the capture image, arm, crash", &script);
    for (path, mode, contents) in files {
        builder = builder.file(path, *mode, contents);
    }
    let disk = builder.create(&dir.join("root.img")).unwrap();
    let mut extra = Vec::new();
    for (i, spec) in disks.iter().enumerate() {
        let path = dir.join(format!("disk{i}.img"));
        scenario::create_disk(spec, &path).unwrap();
        extra.push(path);
    }
    let options = BootOptions {
        qemu_args,
        disks: extra.clone(),
        ..BootOptions::default()
    };
    let config = disk.vm_config(&options);
    let mut vm = Vm::start(&config, &dir.join("serial.log")).unwrap();
    vm.wait_for("steps", Duration::from_secs(300)).unwrap();
    vm.wait_for("crashing", Duration::from_secs(420)).unwrap();
    let (status, _) = vm.wait_exit(Duration::from_secs(600)).unwrap();
    assert!(status.success(), "QEMU: {status}");
    disk.replay_journal().unwrap();
    let log = String::from_utf8(disk.read_file("/var/lib/lab/image.log").unwrap()).unwrap();
    let serial = std::fs::read_to_string(dir.join("serial.log")).unwrap();
    Run {
        dir,
        disk,
        disks: extra,
        log,
        serial,
    }
}

/// A NIC (QEMU user networking, nothing reachable) that local targets must not bring into the
/// image.
fn idle_nic() -> Vec<String> {
    vec![
        "-nic".into(),
        "user,model=virtio-net-pci,restrict=on".into(),
    ]
}

#[test]
fn start_builds_and_rebuilds_the_image_and_it_captures_a_crash_to_the_root_filesystem() {
    let kernel = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    let run = run("root-fs", KDUMP_CONF, &[], &[], REBUILDS, idle_nic());
    let log = &run.log;

    // No image yet: start builds it, names why, and loads it.
    let missing = step(log, "start-missing");
    assert_eq!(exit_status(missing), "0", "{missing}");
    assert!(
        missing.contains(&format!(
            "rebuilding the capture image: no capture image at /var/lib/rkdump/initrd-{}.img",
            kernel.release
        )),
        "{missing}"
    );
    assert!(missing.contains("loaded the capture kernel"), "{missing}");
    // Hostonly: exactly the root disk's stack, no NIC driver, no filesystem module (built in).
    assert_eq!(module_list(missing), VIRTIO_DISK_MODULES, "{missing}");
    assert!(
        missing.contains(&format!(
            "dump target: ext4 UUID={UUID} (mounted on / here), directory /var/crash"
        )),
        "{missing}"
    );
    // Nothing changed: no rebuild.
    let unchanged = step(log, "start-unchanged");
    assert_eq!(exit_status(unchanged), "0", "{unchanged}");
    assert!(!unchanged.contains("rebuilding"), "{unchanged}");
    // kdump.conf edited: a rebuild, saying so.
    let edited = step(log, "start-edited");
    assert!(
        edited.contains("rebuilding the capture image: /etc/kdump.conf changed"),
        "{edited}"
    );
    // A post.d hook: the directory appeared and the hook is new; the shell came with it.
    let hook = step(log, "start-hook");
    assert!(hook.contains("/etc/kdump/post.d appeared"), "{hook}");
    assert!(hook.contains("/etc/kdump/post.d/10-mark is new"), "{hook}");
    assert!(
        hook.contains("program (post.d hook): /etc/kdump/post.d/10-mark"),
        "{hook}"
    );
    assert_eq!(exit_status(hook), "0", "{hook}");
    let status = step(log, "status");
    assert!(status.contains("operational"), "{status}");

    // The dump, on the first kernel's root filesystem.
    let base = run
        .disk
        .read_dir("/var/crash", &run.dir.join("out"))
        .unwrap();
    let dump = scenario::dump_dir(&base).unwrap();
    assert_eq!(
        sorted_names(&dump),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    let capture_log = std::fs::read_to_string(dump.join("kexec-dmesg.log")).unwrap();
    assert!(
        capture_log.contains("rkdump-lab post.d hook ran with status 0"),
        "{capture_log}"
    );
    assert_readable(&kernel, &dump.join("vmcore"));
}

/// `ext4 /dev/vdb`: the image names the disk by its UUID (kernel names can change), and the
/// capture dumps onto it; `xfs LABEL=...` on a third disk brings xfs into the image only when
/// it is the target.
#[test]
fn a_dump_disk_named_by_kernel_name_goes_in_by_uuid_and_captures_the_crash() {
    const DISK_UUID: &str = "d0d0d0d0-1111-4222-8333-444444444444";
    let kernel = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    let steps = "step mkinitrd-xfs rkdump mkinitrd --config /etc/kdump-xfs.conf -o /tmp/xfs.img\n\
                 step start rkdump start\n";
    let run = run(
        "uuid-disk",
        "ext4 /dev/vdb\npath /dumps\nfinal_action poweroff\n",
        &[(
            "/etc/kdump-xfs.conf",
            0o644,
            b"xfs LABEL=xdumps\npath /\n".to_vec(),
        )],
        &[
            scenario::Disk::Ext4 {
                size_mib: 512,
                label: "dumps".into(),
                uuid: Some(DISK_UUID.into()),
            },
            scenario::Disk::Xfs {
                size_mib: 512,
                label: "xdumps".into(),
            },
        ],
        steps,
        idle_nic(),
    );
    let xfs = step(&run.log, "mkinitrd-xfs");
    assert_eq!(exit_status(xfs), "0", "{xfs}");
    assert!(xfs.contains("dump target: xfs LABEL=xdumps (vdc)"), "{xfs}");
    let xfs_modules = module_list(xfs);
    assert!(xfs_modules.contains(&"xfs".to_owned()), "{xfs}");
    let start = step(&run.log, "start");
    assert_eq!(exit_status(start), "0", "{start}");
    assert!(
        start.contains(&format!(
            "dump target: ext4 UUID={DISK_UUID} (vdb), directory /dumps"
        )),
        "{start}"
    );
    // The ext4 disk needs the same virtio stack as the root, and no xfs.
    assert_eq!(module_list(start), VIRTIO_DISK_MODULES, "{start}");
    let base = scenario::read_ext4_dir(&run.disks[0], "/dumps", &run.dir.join("out")).unwrap();
    let dump = scenario::dump_dir(&base).unwrap();
    assert_eq!(
        sorted_names(&dump),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    assert_readable(&kernel, &dump.join("vmcore"));
    assert!(!run.serial.is_empty());
}

/// `xfs LABEL=xdumps`: xfs and its dependencies go into the image with the disk's stack, and
/// the capture finds the disk by its label and dumps onto it.
#[test]
fn an_xfs_disk_by_label_brings_xfs_and_receives_the_dump() {
    let kernel = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    let run = run(
        "xfs-label",
        "xfs LABEL=xdumps\npath /dumps\nfinal_action poweroff\n",
        &[],
        &[scenario::Disk::Xfs {
            size_mib: 512,
            label: "xdumps".into(),
        }],
        "step start rkdump start\n",
        idle_nic(),
    );
    let start = step(&run.log, "start");
    assert_eq!(exit_status(start), "0", "{start}");
    assert!(
        start.contains("dump target: xfs LABEL=xdumps (vdb), directory /dumps"),
        "{start}"
    );
    let modules = module_list(start);
    for needed in VIRTIO_DISK_MODULES.iter().chain(&["xfs", "libcrc32c"]) {
        assert!(modules.contains(&(*needed).to_owned()), "{needed}: {start}");
    }
    let base = scenario::read_mounted(&run.disks[0], "/dumps", &run.dir.join("out")).unwrap();
    let dump = scenario::dump_dir(&base).unwrap();
    assert_eq!(
        sorted_names(&dump),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    assert_readable(&kernel, &dump.join("vmcore"));
}

/// The guest's NIC with one forward to a service on the host.
fn nic_to(host_port: u16, guest_port: u16) -> Vec<String> {
    Network {
        mac: "52:54:00:12:34:56".into(),
        forwards: vec![Forward {
            guest_port,
            host_port,
        }],
    }
    .qemu_args()
}

/// The one dump directory under `base`.
fn only_dump(base: &Path) -> PathBuf {
    let names = sorted_names(base);
    assert_eq!(names.len(), 1, "{names:?} in {}", base.display());
    base.join(&names[0])
}

/// Network targets: the NIC's drivers go in (the first kernel's NIC is down: every NIC's), the
/// disk's do not; NFS brings nfs and nfsv4.
fn assert_network_modules(output: &str) {
    let modules = module_list(output);
    for needed in ["virtio_net", "virtio_pci"] {
        assert!(modules.contains(&needed.to_owned()), "{output}");
    }
    assert!(!modules.contains(&"virtio_blk".to_owned()), "{output}");
}

/// `nfs 10.0.2.100:/export`: an image with the NIC's and NFS's modules and no disk driver,
/// and the capture writes the dump to the export (nfs-ganesha on the host's loopback).
#[test]
fn an_nfs_target_gets_the_nic_and_nfs_modules_and_receives_the_dump() {
    let kernel = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    let server_dir = dir("nfs-server");
    let _ = std::fs::remove_dir_all(&server_dir);
    let server = NfsServer::start(&server_dir).unwrap();
    let run = run(
        "nfs",
        &format!("nfs {SERVER_ADDRESS}:/export\npath /var/crash\nfinal_action poweroff\n"),
        &[],
        &[],
        "step start rkdump start\n",
        nic_to(server.port, 2049),
    );
    let start = step(&run.log, "start");
    assert_eq!(exit_status(start), "0", "{start}");
    assert_network_modules(start);
    let modules = module_list(start);
    assert!(modules.contains(&"nfsv4".to_owned()), "{start}");
    let dump = only_dump(&server.export.join("var/crash"));
    assert_eq!(
        sorted_names(&dump),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    assert_readable(&kernel, &dump.join("vmcore"));
}

/// `ssh root@10.0.2.100`: the key and the pinned host key go in with the NIC's drivers, and the
/// capture uploads the dump to a real sshd running `rkdump receive`.
#[test]
fn an_ssh_target_carries_the_key_and_known_hosts_and_uploads_the_dump() {
    let kernel = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    let server_dir = dir("ssh-server");
    let _ = std::fs::remove_dir_all(&server_dir);
    let server = SshServer::start(&server_dir, &rkdump(), &["guest"], "").unwrap();
    let key = std::fs::read(&server.clients[0].key).unwrap();
    let run = run(
        "ssh",
        &format!(
            "ssh root@{SERVER_ADDRESS}\nsshkey /root/.ssh/kdump_id_ed25519\npath /var/crash\n\
             final_action poweroff\n"
        ),
        &[
            ("/root/.ssh/kdump_id_ed25519", 0o600, key),
            (
                "/root/.ssh/known_hosts",
                0o644,
                server.known_hosts_line(SERVER_ADDRESS, 22).into_bytes(),
            ),
        ],
        &[],
        "step start rkdump start\n",
        nic_to(server.port, 22),
    );
    let start = step(&run.log, "start");
    assert_eq!(exit_status(start), "0", "{start}");
    assert_network_modules(start);
    let dump = only_dump(&server.root.join("guest/var/crash"));
    assert_eq!(
        sorted_names(&dump),
        [
            "kexec-dmesg.log",
            "rkdump-manifest.json",
            "vmcore",
            "vmcore-dmesg.txt"
        ]
    );
    assert_readable(&kernel, &dump.join("vmcore"));
}

/// The generic kernel's Debian system with dracut-core (beside initramfs-tools, as Debian
/// allows) for the dracut module, and i6300esb for the watchdog.
const DRACUT_SYSTEM: Variant<'static> = Variant {
    extra_packages: &["dracut-core"],
    ..Variant::GENERIC
};

/// The image made by dracut with `dracut-module/99rkdump` (`rkdump mkinitrd --dracut`), on a
/// system whose i6300esb watchdog systemd keeps active: the module is taken only when asked
/// for, the image's /init is rkdump with the watchdog's driver, `start` loads it as current
/// (its manifest recorded), and it captures the crash while petting the watchdog.
#[test]
fn the_dracut_built_image_with_an_active_watchdog_captures_the_crash() {
    let kernel = Kernel::fetch(DRACUT_SYSTEM.flavor).unwrap();
    let module = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dracut-module/99rkdump/module-setup.sh"),
    )
    .unwrap();
    let steps = "step watchdog cat /sys/class/watchdog/watchdog0/state\n\
                 step watchdog-device readlink -f /sys/class/watchdog/watchdog0\n\
                 step dracut-default dracut --force --quiet --hostonly --no-kernel --no-compress /tmp/normal.img\n\
                 step dracut-modules sh -c 'lsinitrd /tmp/normal.img | grep -c rkdump'\n\
                 step mkinitrd-dracut rkdump mkinitrd --dracut\n\
                 step start rkdump start\n";
    let run = run_on(
        &DRACUT_SYSTEM,
        "dracut-watchdog",
        "core_collector makedumpfile -l --message-level 7 -d 31\n",
        &[
            (
                "/usr/lib/dracut/modules.d/99rkdump/module-setup.sh",
                0o755,
                module,
            ),
            (
                "/etc/systemd/system.conf.d/watchdog.conf",
                0o644,
                b"[Manager]\nRuntimeWatchdogSec=30\n".to_vec(),
            ),
        ],
        &[],
        steps,
        vec!["-device".into(), "i6300esb".into()],
    );
    let watchdog = step(&run.log, "watchdog");
    assert!(watchdog.contains("\nactive\n"), "{watchdog}");
    // i6300esb registers it without a parent device: no modalias to go by (kdumpctl's way).
    let device = step(&run.log, "watchdog-device");
    assert!(
        device.contains("/sys/devices/virtual/watchdog/watchdog0"),
        "{device}"
    );
    // A normal dracut run on this system does not take the module.
    let normal = step(&run.log, "dracut-modules");
    assert!(normal.contains("\n0\n"), "{normal}");
    let built = step(&run.log, "mkinitrd-dracut");
    assert_eq!(exit_status(built), "0", "{built}");
    let modules = module_list(built);
    assert!(modules.contains(&"i6300esb".to_owned()), "{built}");
    let start = step(&run.log, "start");
    assert_eq!(exit_status(start), "0", "{start}");
    assert!(!start.contains("rebuilding"), "{start}");
    // The image dracut wrote: rkdump as /init.
    let image = run
        .disk
        .read_file(&format!("/var/lib/rkdump/initrd-{}.img", kernel.release))
        .unwrap();
    let packed = run.dir.join("dracut.img");
    std::fs::write(&packed, &image).unwrap();
    let unpacked = run.dir.join("dracut.cpio");
    run_ok(
        Command::new("zstd")
            .args(["-q", "-d", "-f", "-o"])
            .arg(&unpacked)
            .arg(&packed),
    );
    let archive = std::fs::read(&unpacked).unwrap();
    let (entries, _) = rkdump::format::cpio::entries(&archive).unwrap();
    let init = entries.iter().find(|e| e.name == "init").expect("an /init");
    let static_size = std::fs::metadata(rkdump_lab::build::rkdump().unwrap())
        .unwrap()
        .len();
    assert_eq!(init.size, static_size);
    assert!(entries.iter().any(|e| e.name.ends_with("i6300esb.ko")));
    let base = run
        .disk
        .read_dir("/var/crash", &run.dir.join("out"))
        .unwrap();
    let dump = scenario::dump_dir(&base).unwrap();
    let capture_log = std::fs::read_to_string(dump.join("kexec-dmesg.log")).unwrap();
    // The capture loaded the driver from the image and petted the watchdog.
    assert!(
        capture_log.contains("loaded module i6300esb"),
        "{capture_log}"
    );
    assert!(
        capture_log.contains("watchdog /dev/watchdog0: timeout"),
        "{capture_log}"
    );
    assert_readable(&kernel, &dump.join("vmcore"));
}

/// A second kernel installed with its package: nothing to rebuild while the first one is the
/// capture kernel; once `KDUMP_KERNELVER` selects it, `start` builds its image, says why, and
/// the crash boots that kernel with it.
#[test]
fn a_second_kernel_selected_gets_its_own_image_and_captures_the_crash() {
    let second = Kernel::fetch(rkdump_lab::kernels::Flavor::Generic61).unwrap();
    let deb = second.image_deb().unwrap();
    let steps = format!(
        "step start-first rkdump start\n\
         step stop rkdump stop\n\
         step install env INITRD=No dpkg -i /root/second-kernel.deb\n\
         step start-installed rkdump start\n\
         step stop-2 rkdump stop\n\
         echo 'KDUMP_KERNELVER={}' >> /etc/default/kdump-tools\n\
         step start-selected rkdump start\n",
        second.release
    );
    let run = run(
        "second-kernel",
        KDUMP_CONF,
        &[(
            "/root/second-kernel.deb",
            0o644,
            std::fs::read(&deb).unwrap(),
        )],
        &[],
        &steps,
        idle_nic(),
    );
    assert_eq!(exit_status(step(&run.log, "install")), "0", "{}", run.log);
    let installed = step(&run.log, "start-installed");
    assert!(!installed.contains("rebuilding"), "{installed}");
    let selected = step(&run.log, "start-selected");
    assert_eq!(exit_status(selected), "0", "{selected}");
    assert!(
        selected.contains(&format!(
            "rebuilding the capture image: no capture image at /var/lib/rkdump/initrd-{}.img",
            second.release
        )),
        "{selected}"
    );
    assert!(
        selected.contains(&format!("/boot/vmlinuz-{}", second.release)),
        "{selected}"
    );
    assert!(
        run.serial
            .contains(&format!("Linux version {}", second.release))
    );
    let base = run
        .disk
        .read_dir("/var/crash", &run.dir.join("out"))
        .unwrap();
    let dump = scenario::dump_dir(&base).unwrap();
    // The dump is the first kernel's, written by the second.
    let first = Kernel::fetch(rkdump_lab::debian::FLAVOR).unwrap();
    assert_readable(&first, &dump.join("vmcore"));
}

/// `rkdump info` says complete; crash with the kernel's debug vmlinux finds the sysrq panic.
fn assert_readable(kernel: &Kernel, vmcore: &Path) {
    let info = run_ok(Command::new(rkdump()).arg("info").arg(vmcore));
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().eq(["Complete:", "yes"])),
        "{info}"
    );
    let bt = crash(&kernel.vmlinux(), vmcore, &["bt"]);
    assert!(bt.contains("sysrq_handle_crash"), "crash's bt:\n{bt}");
}
