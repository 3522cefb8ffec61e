//! Network targets from a real capture kernel: rkdump as `/init` brings the network up itself
//! (DHCP from QEMU's slirp, or dracut's static `ip=` with `ifname=`), then sends the dump to
//! a real OpenSSH server (keys forcing `rkdump receive`) or a real NFS server (nfs-ganesha).
//!
//! All traffic stays on the host's loopback: QEMU user networking with `restrict=on` and one
//! `guestfwd` per service, in the command form that opens a host connection per guest
//! connection, from 10.0.2.100 to the server's port on 127.0.0.1. The references: `crash` with
//! the kernel's dbg vmlinux must read the dump that arrived, and `rkdump verify` checks an ssh
//! dump against the manifest written with it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use initramfs_tests::guest::{self, until_exit};
use initramfs_tests::{crash, rkdump, sorted_names};
use rkdump_lab::kernels::Kernel;
use rkdump_lab::nfsd::NfsServer;
use rkdump_lab::scenario::{Forward, Network, Prepared, SERVER_ADDRESS, Scenario};
use rkdump_lab::sshd::SshServer;
use rkdump_lab::variants::RUNTIME;
use rkdump_lab::vm::Vm;

const COLLECTOR: &str = "makedumpfile -l --message-level 7 -d 31";
/// The guest NIC's MAC address, which `ifname=` refers to.
const MAC: &str = "52:54:00:12:34:56";
/// The address slirp's DHCP server hands out first.
const GUEST_ADDRESS: &str = "10.0.2.15";

fn kernel() -> Kernel {
    Kernel::fetch(RUNTIME.flavor).expect("fetching the kernel")
}

fn run_dir(name: &str) -> PathBuf {
    let dir = rkdump_lab::cache::root().join("lab/network").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Boots `scenario` in `dir/guest` and waits until the capture kernel runs rkdump.
fn boot(dir: &Path, scenario: &Scenario) -> (Prepared, Vm) {
    guest::boot_to_capture(scenario, &kernel(), &dir.join("guest"))
}

/// The only dump directory under `base`, which must be named after the guest's address.
fn only_dump_dir(base: &Path) -> PathBuf {
    let names = sorted_names(base);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with(&format!("{GUEST_ADDRESS}-")),
        "dump directory {} is not named after the guest's address",
        names[0]
    );
    base.join(&names[0])
}

fn assert_crash_reads(vmcore: &Path) {
    let output = crash(&kernel().vmlinux(), vmcore, &["sys", "log", "bt"]);
    assert!(output.contains("PANIC:"), "{output}");
    assert!(output.contains("sysrq_handle_crash"), "{output}");
}

fn network(forward_to: u16, guest_port: u16) -> Network {
    Network {
        mac: MAC.into(),
        forwards: vec![Forward {
            guest_port,
            host_port: forward_to,
        }],
    }
}

/// `ssh root@10.0.2.100` with no `ip=`: DHCP on the NIC coldplug found, a pinned host key, the
/// dump written through SFTP, verified on arrival and readable by crash without
/// `makedumpfile -R`.
#[test]
fn ssh_target_over_dhcp_arrives_verified_and_crash_reads_it() {
    let dir = run_dir("ssh-dhcp");
    let server = SshServer::start(&dir.join("sshd"), &rkdump(), &["guest"], "").unwrap();
    let key = std::fs::read(&server.clients[0].key).unwrap();
    let mut scenario = Scenario::new(
        RUNTIME,
        &format!(
            "ssh root@{SERVER_ADDRESS}\nsshkey /root/.ssh/kdump_id_ed25519\npath /var/crash\n\
             core_collector {COLLECTOR}\n"
        ),
    )
    .file("/root/.ssh/kdump_id_ed25519", 0o600, &key)
    .file(
        "/root/.ssh/known_hosts",
        0o644,
        server.known_hosts_line(SERVER_ADDRESS, 22).as_bytes(),
    );
    scenario.network = Some(network(server.port, 22));
    let (prepared, mut vm) = boot(&dir, &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains(&format!("DHCP lease {GUEST_ADDRESS} from")),
        "{console}"
    );
    assert!(console.contains("no default gateway"), "{console}");
    assert!(console.contains("capture complete"), "{console}");

    let dump = only_dump_dir(&server.root.join("guest/var/crash"));
    assert_eq!(
        sorted_names(&dump),
        [
            "kexec-dmesg.log",
            "rkdump-manifest.json",
            "vmcore",
            "vmcore-dmesg.txt"
        ]
    );
    let verify = Command::new(rkdump())
        .arg("verify")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let index = std::fs::read_to_string(server.root.join("index.jsonl")).unwrap();
    assert!(index.contains("\"verified\""), "{index}");
    // sshd sees the forward's loopback connection; the directory carries the guest's address.
    assert!(
        index.contains(&format!("\"dump\":\"guest/var/crash/{GUEST_ADDRESS}-")),
        "{index}"
    );
    let dmesg = std::fs::read_to_string(dump.join("vmcore-dmesg.txt")).unwrap();
    assert!(dmesg.contains("sysrq: Trigger a crash"), "{dmesg}");
    assert_crash_reads(&dump.join("vmcore"));
}

/// `nfs 10.0.2.100:/export` with kdump-utils' static `ip=` (in /etc/cmdline.d, as it writes it)
/// on an interface `ifname=` renames:
/// the export is mounted with mount(2) alone and gets the usual directory layout.
#[test]
fn nfs_target_with_static_ip_and_ifname() {
    let dir = run_dir("nfs-static");
    let server = NfsServer::start(&dir.join("nfs")).unwrap();
    let scenario = Scenario::new(
        RUNTIME,
        &format!("nfs {SERVER_ADDRESS}:/export\npath /var/crash\ncore_collector {COLLECTOR}\n"),
    );
    // Where kdump-utils puts them: the image's /etc/cmdline.d, not the kernel command line.
    let mut scenario = scenario.file(
        "/etc/cmdline.d/40ip.conf",
        0o644,
        format!(
            "ip={GUEST_ADDRESS}::10.0.2.2:255.255.255.0::kdump-eth0:none\nifname=kdump-eth0:{MAC}\n"
        )
        .as_bytes(),
    );
    scenario.network = Some(network(server.port, 2049));
    let (prepared, mut vm) = boot(&dir, &scenario);
    let console = until_exit(&prepared, &mut vm);
    assert!(console.contains("to kdump-eth0"), "{console}");
    assert!(
        console.contains(&format!("kdump-eth0: {GUEST_ADDRESS}/24 via 10.0.2.2")),
        "{console}"
    );
    assert!(
        console.contains(&format!("mounted {SERVER_ADDRESS}:/export on")),
        "{console}"
    );
    assert!(console.contains("capture complete"), "{console}");
    let dump = only_dump_dir(&server.export.join("var/crash"));
    assert_eq!(
        sorted_names(&dump),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    assert_crash_reads(&dump.join("vmcore"));
}

/// The NFS server dies while the dump is written: the soft mount gives up, the capture fails
/// with the partial dump marked incomplete, and the failure action runs — nothing hangs.
#[test]
fn nfs_server_dying_mid_dump_leads_to_the_failure_action() {
    let dir = run_dir("nfs-dies");
    let mut server = NfsServer::start(&dir.join("nfs")).unwrap();
    // An unfiltered, uncompressed ELF dump: long enough to stop the server in the middle.
    let mut scenario = Scenario::new(
        RUNTIME,
        &format!(
            "nfs {SERVER_ADDRESS}:/export\npath /var/crash\ncore_collector makedumpfile -E -d 0\n\
             failure_action poweroff\n"
        ),
    );
    scenario.network = Some(network(server.port, 2049));
    // Forty-five seconds without a byte written mean a dead server (the default is 120).
    scenario.capture_cmdline = "rkdump.stall_timeout=45".into();
    let (prepared, mut vm) = boot(&dir, &scenario);
    vm.wait_for_text("dump", "dump: started", Duration::from_secs(300))
        .unwrap();
    // Let some of the dump reach the server first.
    let incomplete = |server: &NfsServer| {
        let base = server.export.join("var/crash");
        std::fs::read_dir(&base)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("vmcore-incomplete"))
            .filter(|p| p.exists())
    };
    let started = std::time::Instant::now();
    while incomplete(&server)
        .and_then(|p| std::fs::metadata(p).ok())
        .is_none_or(|m| m.len() < 32 << 20)
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no dump data arrived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.stop();
    let console = until_exit(&prepared, &mut vm);
    assert!(
        console.contains("the NFS server is not answering"),
        "{console}"
    );
    assert!(console.contains("capture failed at dump"), "{console}");
    assert!(console.contains("failure action: poweroff"), "{console}");
    assert!(!console.contains("capture complete"), "{console}");
    let dump = only_dump_dir(&server.export.join("var/crash"));
    let names = sorted_names(&dump);
    assert!(names.contains(&"vmcore-incomplete".to_owned()), "{names:?}");
    assert!(names.contains(&"vmcore-dmesg.txt".to_owned()), "{names:?}");
    assert!(!names.contains(&"vmcore".to_owned()), "{names:?}");
}
