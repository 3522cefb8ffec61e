//! rkdump's SFTP against OpenSSH's: the ssh target sending to OpenSSH's own `sftp-server` (what
//! a stock dump server runs for the sftp subsystem, not `rkdump receive`), and `rkdump receive`
//! driven by OpenSSH's own `sftp` client the way a user does by hand. Everything runs on
//! 127.0.0.1 through the lab's sshd ([`rkdump_lab::sshd`]), with its own keys and known_hosts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use initramfs_tests::{
    assert_complete_ssh_dump, assert_verified, capture_command, rkdump, run, run_ok, sorted_names,
};
use rkdump_lab::sshd::{CuttingProxy, SshServer};
use rkdump_testkit::{Builder, Generation};

const COLLECTOR: &str = "makedumpfile -l --message-level 7 -d 31";

/// A synthetic vmcore, an sshd on 127.0.0.1 with clients forced into `rkdump receive`, and one
/// client whose key is forced into OpenSSH's `sftp-server` started in `store` (the server's side
/// of the ssh target's dumps).
struct Setup {
    dir: tempfile::TempDir,
    server: SshServer,
    /// Index of the `sftp-server` client.
    client: usize,
}

impl Setup {
    fn new(receive_clients: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vmcore"),
            Builder::new(Generation::V6_1).with_every_kind().build(),
        )
        .unwrap();
        for sub in ["pre.d", "post.d", "store"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let mut server = SshServer::start(
            &dir.path().join("sshd"),
            &rkdump(),
            receive_clients,
            "--reserve 0",
        )
        .unwrap();
        let client = server
            .add_sftp_server_client("stock", &dir.path().join("store"))
            .unwrap();
        Self {
            dir,
            server,
            client,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server's side of the dumps: `sftp-server`'s starting directory.
    fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// kdump.conf's `path`: absolute, inside the store (`-d` is not a jail).
    fn dump_path(&self) -> PathBuf {
        self.store().join("var/crash")
    }

    /// Runs `rkdump capture` (for at most 300 s) with an ssh target reaching the server
    /// through `port`, pinning the server's key; the log is in `client/log`.
    fn capture(&self, port: u16) -> Output {
        let own = self.path("client");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(
            own.join("known_hosts"),
            self.server.known_hosts_line("127.0.0.1", port),
        )
        .unwrap();
        std::fs::write(
            own.join("ssh_config"),
            format!(
                "Host 127.0.0.1\n  Port {port}\n  UserKnownHostsFile {}\n",
                own.join("known_hosts").display()
            ),
        )
        .unwrap();
        std::fs::write(
            own.join("kdump.conf"),
            format!(
                "ssh root@127.0.0.1\nsshkey {}\npath {}\ncore_collector {COLLECTOR}\n",
                self.server.clients[self.client].key.display(),
                self.dump_path().display()
            ),
        )
        .unwrap();
        let mut capture = capture_command(
            &own.join("kdump.conf"),
            &self.path("vmcore"),
            &own.join("log"),
            self.dir.path(),
        );
        capture
            .arg("--ssh-config")
            .arg(own.join("ssh_config"))
            .args(["--network-timeout", "20"]);
        // Bounded in time whatever happens to the connection.
        let output = Command::new("timeout")
            .args(["-k", "10", "300"])
            .arg(capture.get_program())
            .args(capture.get_args())
            .output()
            .unwrap();
        println!("{}", String::from_utf8_lossy(&output.stderr));
        output
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("client/log")).unwrap_or_default()
    }

    /// The one dump directory the capture left on the server.
    fn dump_dir(&self) -> PathBuf {
        let base = self.dump_path();
        let names = sorted_names(&base);
        assert_eq!(names.len(), 1, "{names:?}");
        // Named after the client's address on the route to the server, as kdump-utils does.
        assert!(names[0].starts_with("127.0.0.1-"), "{names:?}");
        base.join(&names[0])
    }

    /// What `rkdump save` writes locally with the collector's options: the reference.
    fn local_dump(&self) -> Vec<u8> {
        initramfs_tests::local_dump(&self.path("vmcore"), &self.path("local-vmcore"))
    }

    /// The dump went through OpenSSH's sftp-server, not rkdump receive: the receiver's root
    /// is untouched.
    fn assert_receive_unused(&self) {
        assert!(sorted_names(&self.server.root).is_empty());
    }
}

/// Reference: the same vmcore written locally by `rkdump save` with the collector's options,
/// and OpenSSH 9.2's `sftp-server` as the server. The dump arrives byte-identical, with the
/// kernel log, the capture log and the manifest, all renamed from `-incomplete` (sftp-server's
/// plain rename), and `rkdump verify` on the server accepts it; the same directory with one
/// byte of the dump changed is refused.
#[test]
fn a_dump_sent_to_openssh_sftp_server_is_identical_and_verifies() {
    let setup = Setup::new(&[]);
    let port = setup.server.port;
    let output = setup.capture(port);
    let log = setup.log();
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("capture complete"), "{log}");
    let dir = setup.dump_dir();
    assert_complete_ssh_dump(&dir, &setup.path("vmcore"), &setup.local_dump());
    setup.assert_receive_unused();

    // The check can fail: a copy with one byte of the dump flipped does not verify.
    let copy = setup.path("corrupted");
    std::fs::create_dir(&copy).unwrap();
    for name in sorted_names(&dir) {
        std::fs::copy(dir.join(&name), copy.join(&name)).unwrap();
    }
    let mut dump = std::fs::read(copy.join("vmcore")).unwrap();
    let middle = dump.len() / 2;
    dump[middle] ^= 0x40;
    std::fs::write(copy.join("vmcore"), dump).unwrap();
    let output = run(Command::new(rkdump()).arg("verify").arg(&copy));
    assert!(!output.status.success(), "{output:?}");
}

/// Reference: as above (a local `rkdump save`, OpenSSH's `sftp-server`), with the TCP link cut
/// after 6 MiB from the client, in the middle of the dump's page data. The capture reconnects,
/// reopens `vmcore-incomplete` on the stock server without truncating it and sends again only
/// what the server had not confirmed (the log says so, with at most the 4 MiB window resent;
/// less than a whole second copy crosses the link); the dump is byte-identical and verifies.
#[test]
fn a_cut_link_to_openssh_sftp_server_resumes_and_verifies() {
    let setup = Setup::new(&[]);
    let cut_after = 6 << 20;
    let proxy = CuttingProxy::start(setup.server.port, cut_after).unwrap();
    let output = setup.capture(proxy.port);
    let log = setup.log();
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(proxy.was_cut(), "the link was never cut");
    assert!(log.contains("connection to root@127.0.0.1"), "{log}");
    let resumed = log
        .lines()
        .find(|l| l.contains("resumed"))
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    assert!(resumed.contains("vmcore-incomplete"), "{resumed}");
    // "resumed <file>: <confirmed> bytes were confirmed, <resent> unconfirmed bytes sent again"
    let numbers: Vec<u64> = resumed
        .rsplit(": ")
        .next()
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [confirmed, resent] = numbers[..] else {
        panic!("{resumed}")
    };
    assert!(confirmed > 0 && resent <= 4 << 20, "{resumed}");
    assert!(
        !log.contains("re-established 0 time(s)") && log.contains("re-established"),
        "{log}"
    );
    let dir = setup.dump_dir();
    let dump = std::fs::read(dir.join("vmcore")).unwrap();
    assert!(dump == setup.local_dump());
    assert!(
        proxy.forwarded() < cut_after + dump.len() as u64,
        "{} bytes forwarded: restarted rather than resumed",
        proxy.forwarded()
    );
    assert_verified(&dir);
    setup.assert_receive_unused();
}

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        run_ok(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir),
        );
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // An sftp-server still closing its files keeps the mount busy for a moment.
        for _ in 0..50 {
            if run(Command::new("umount").arg(&self.0)).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = run(Command::new("umount").arg("-l").arg(&self.0));
    }
}

/// Reference: OpenSSH's `sftp-server` writing to a 2 MiB tmpfs, far less than the dump (which
/// `rkdump save` writes locally at 16 MB). The kernel log, sent first, arrives whole; the
/// dump cannot fit: the capture fails with exit status 1 (`rkdump capture --help`: "1 failed";
/// 3 is `rkdump save`'s and `info`'s), the log names the remote write of `vmcore-incomplete`
/// and the kept partial file; on the server the partial dump stays as `vmcore-incomplete`,
/// its header still flagged incomplete (`rkdump info` exits 3), and nothing but the kernel log
/// is complete: no `vmcore`, no manifest (every other name says `incomplete`).
#[test]
fn a_full_disk_on_openssh_sftp_server_fails_the_capture_and_keeps_it_incomplete() {
    let setup = Setup::new(&[]);
    let dump_size = setup.local_dump().len();
    let (_tmpfs, output, log) = capture_to_a_full_disk(&setup);
    assert_eq!(output.status.code(), Some(1), "{log}");
    let failed = log
        .lines()
        .find(|l| l.contains("capture failed at dump"))
        .unwrap_or_else(|| panic!("no failed dump in the log:\n{log}"));
    assert!(failed.contains("vmcore-incomplete"), "{failed}");
    assert!(failed.contains("incomplete dump kept as"), "{failed}");
    assert!(!log.contains("capture complete"), "{log}");
    let dir = setup.dump_dir();
    let names = sorted_names(&dir);
    assert!(names.contains(&"vmcore-incomplete".to_owned()), "{names:?}");
    // Only the kernel log is complete (the capture log and the manifest did not fit either).
    assert!(
        names
            .iter()
            .all(|n| n == "vmcore-dmesg.txt" || n.contains("incomplete")),
        "{names:?}"
    );
    assert!(
        std::fs::read_to_string(dir.join("vmcore-dmesg.txt")).unwrap()
            == run_ok(
                Command::new(rkdump())
                    .arg("dmesg")
                    .arg(setup.path("vmcore"))
            )
    );
    let partial = std::fs::read(dir.join("vmcore-incomplete")).unwrap();
    assert!(
        !partial.is_empty() && partial.len() < dump_size,
        "{}",
        partial.len()
    );
    assert_eq!(&partial[..8], b"KDUMP   ");
    let info = run(Command::new(rkdump())
        .arg("info")
        .arg(dir.join("vmcore-incomplete")));
    assert_eq!(info.status.code(), Some(3), "{info:?}");
    setup.assert_receive_unused();
}

/// Runs a capture to OpenSSH's `sftp-server` writing to a 2 MiB tmpfs; returns the mount (the
/// dump directory is on it until it is dropped), the output and the log.
fn capture_to_a_full_disk(setup: &Setup) -> (Tmpfs, Output, String) {
    let dump_size = setup.local_dump().len();
    assert!(dump_size > 4 << 20, "{dump_size}");
    let tmpfs = Tmpfs::mount(&setup.dump_path(), "2m");
    let started = Instant::now();
    let output = setup.capture(setup.server.port);
    let log = setup.log();
    assert!(started.elapsed() < Duration::from_secs(120), "{log}");
    (tmpfs, output, log)
}

/// Reference: as above, and the capture's own wording for a local target that fills up
/// (`OutputError::NoSpace`: "<target> is full", and "dump: the target is full"). OpenSSH's
/// sftp-server answers a write that hits ENOSPC with a bare `SSH_FX_FAILURE` ("Failure"); the
/// sink then asks `statvfs@openssh.com` and names the full target, where the log once said only
/// "write 54: Failure (Failure)".
#[test]
fn a_full_disk_on_openssh_sftp_server_is_named_in_the_log() {
    let setup = Setup::new(&[]);
    let (_tmpfs, output, log) = capture_to_a_full_disk(&setup);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("dump: the target is full"), "{log}");
}

/// Reference: as above, and the size of what the stock server kept: a write at `offset` that
/// failed for want of space is at most one write (64 KiB) past the end of the partial file.
/// The error names the refused write itself, not the piece the sink was queueing when the
/// refusal came back (once up to the 4 MiB window later: "offset 0x613bc3" for a 2 MiB file).
#[test]
fn a_full_disk_on_openssh_sftp_server_is_reported_where_the_write_failed() {
    let setup = Setup::new(&[]);
    let (_tmpfs, output, log) = capture_to_a_full_disk(&setup);
    assert_eq!(output.status.code(), Some(1), "{log}");
    let failed = log
        .lines()
        .find(|l| l.contains("capture failed at dump"))
        .unwrap_or_else(|| panic!("no failed dump in the log:\n{log}"));
    let offset = failed
        .split("at offset 0x")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no offset in {failed}"));
    let partial = std::fs::metadata(setup.dump_dir().join("vmcore-incomplete"))
        .unwrap()
        .len();
    assert!(
        offset <= partial + (64 << 10),
        "reported at {offset:#x}, the partial file has {partial:#x} bytes: {failed}"
    );
}

/// Every file under `dir` (relative path, contents; directories with no contents), sorted.
fn tree(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    let mut guard = 0;
    while let Some(at) = pending.pop() {
        guard += 1;
        assert!(guard < 10_000, "runaway walk under {}", dir.display());
        for name in sorted_names(&at) {
            let path = at.join(&name);
            let shown = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                found.push((shown, None));
                pending.push(path);
            } else {
                found.push((shown, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    found.sort();
    found
}

/// OpenSSH's `sftp` client in batch mode against the server as client `index`: its exit
/// status, stdout and stderr. Only the given key, known_hosts and 127.0.0.1 are used (no
/// ssh_config, nothing of root's ~/.ssh).
fn sftp_batch(setup: &Setup, index: usize, batch: &str) -> (Option<i32>, String, String) {
    let file = setup.path("batch");
    std::fs::write(&file, batch).unwrap();
    let known_hosts = setup.path("sftp_known_hosts");
    std::fs::write(
        &known_hosts,
        setup
            .server
            .known_hosts_line("127.0.0.1", setup.server.port),
    )
    .unwrap();
    let output = Command::new("timeout")
        .arg("60")
        .arg("sftp")
        .arg("-b")
        .arg(&file)
        .arg("-i")
        .arg(&setup.server.clients[index].key)
        .arg("-F")
        .arg("/dev/null")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-P",
        ])
        .arg(setup.server.port.to_string())
        .arg("root@127.0.0.1")
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reference: OpenSSH 9.2's own `sftp` client in batch mode (which stops at the first failed
/// command and then exits 1) against `rkdump receive` as the forced command of its key.
/// What a user does by hand works: `mkdir` of a dump directory, `put` of a file as
/// `-incomplete`, `ls` of it, `rename` to its final name (posix-rename, which the receiver
/// makes non-replacing), `get` back byte-identical. What the receiver forbids fails in the
/// client: `put` with `..` out of the client's directory, `put` over a finished file, `rm` and
/// `rmdir`, `rename` over an existing file, `symlink`, `ln`; afterwards nothing was created
/// outside, nothing removed or changed inside.
#[test]
fn openssh_sftp_client_does_what_receive_allows_and_nothing_else() {
    let setup = Setup::new(&["web01"]);
    let web = 0;
    let root = setup.server.root.clone();
    let local = setup.local_dump();
    let upload = setup.path("upload");
    std::fs::write(&upload, &local).unwrap();
    std::fs::write(setup.path("note.txt"), b"written by hand\n").unwrap();
    let back = setup.path("back");

    let dump = "/var/crash/by-hand";
    let batch = format!(
        "mkdir /var\nmkdir /var/crash\nmkdir {dump}\n\
         put {} {dump}/vmcore-incomplete\n\
         ls -l {dump}/vmcore-incomplete\n\
         rename {dump}/vmcore-incomplete {dump}/vmcore\n\
         put {} {dump}/note.txt\n\
         get {dump}/vmcore {}\n\
         df /\n",
        upload.display(),
        setup.path("note.txt").display(),
        back.display()
    );
    let (code, stdout, stderr) = sftp_batch(&setup, web, &batch);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // `ls -l` shows the file with its size (batch mode echoes each command after "sftp>").
    let listed = stdout
        .lines()
        .find(|l| !l.starts_with("sftp>") && l.contains("vmcore-incomplete"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        listed
            .split_whitespace()
            .any(|w| w == local.len().to_string()),
        "{listed}"
    );
    let home = root.join("web01");
    assert!(std::fs::read(home.join("var/crash/by-hand/vmcore")).unwrap() == local);
    assert!(std::fs::read(&back).unwrap() == local);
    assert!(!home.join("var/crash/by-hand/vmcore-incomplete").exists());
    // The receiver indexes the directory when the session ends, maybe after sftp exits.
    let started = Instant::now();
    while !root.join("index.jsonl").exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let index = std::fs::read_to_string(root.join("index.jsonl")).unwrap();
    assert!(index.contains("\"status\":\"incomplete\""), "{index}");

    // Each refused command alone (batch mode stops at the first failure): sftp exits 1 and
    // the server's files are as they were, inside the root and around it.
    let inside = tree(&root);
    let around = tree(setup.dir.path().join("sshd").as_path())
        .into_iter()
        .filter(|(name, _)| name != "sshd.log")
        .collect::<Vec<_>>();
    let note = setup.path("note.txt").display().to_string();
    // (command, what sftp prints: the server's SSH_FX_PERMISSION_DENIED, or for `ln` the
    // extension the receiver does not offer).
    let denied = "Permission denied";
    let refused = [
        (format!("put {note} /../escaped"), denied),
        (format!("put {note} ../../../escaped"), denied),
        (format!("put {note} {dump}/../../../../escaped"), denied),
        (format!("put {note} {dump}/vmcore"), denied),
        (format!("rm {dump}/vmcore"), denied),
        (format!("rm {dump}/note.txt"), denied),
        (format!("rmdir {dump}"), denied),
        (format!("rename {dump}/note.txt {dump}/vmcore"), denied),
        (format!("symlink {dump}/vmcore /var/crash/link"), denied),
        (format!("symlink /etc/passwd {dump}/passwd"), denied),
        (
            format!("ln {dump}/vmcore /var/crash/hardlink"),
            "does not support hardlink@openssh.com",
        ),
        ("mkdir /../escaped".to_owned(), denied),
    ];
    for (command, expected) in &refused {
        let (code, stdout, stderr) = sftp_batch(&setup, web, &format!("{command}\n"));
        assert_eq!(code, Some(1), "{command}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{command}: {stderr}");
        assert_eq!(tree(&root), inside, "{command}");
    }
    let around_after = tree(setup.dir.path().join("sshd").as_path())
        .into_iter()
        .filter(|(name, _)| name != "sshd.log")
        .collect::<Vec<_>>();
    assert_eq!(around_after, around);
    for escaped in [
        setup.path("escaped"),
        setup.path("sshd/escaped"),
        PathBuf::from("/escaped"),
    ] {
        assert!(!escaped.exists(), "{}", escaped.display());
    }
}

/// Reference: OpenSSH's `sftp` client, `ls` of a dump directory: the first thing a user does
/// by hand to see what arrived (and what sftp does to expand `get dir/*`). `rkdump receive`
/// answers `SSH_FXP_OPENDIR` with "listing directories is not supported", so sftp prints
/// `remote readdir("/d/"): Operation unsupported` and the batch fails.
#[test]
fn openssh_sftp_client_lists_a_dump_directory_on_receive() {
    let setup = Setup::new(&["web01"]);
    std::fs::write(setup.path("note.txt"), b"written by hand\n").unwrap();
    let batch = format!(
        "mkdir /d\nput {} /d/note.txt\nls -l /d\n",
        setup.path("note.txt").display()
    );
    let (code, stdout, stderr) = sftp_batch(&setup, 0, &batch);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| !l.starts_with("sftp>") && l.contains("note.txt")),
        "{stdout}"
    );
}
