//! The ssh target against a real OpenSSH server on 127.0.0.1 whose keys force
//! `rkdump receive`: `rkdump capture` on the host, on a synthetic vmcore, as the capture kernel
//! runs it. The dump that arrives must be byte-identical to the one `rkdump save` writes
//! locally with the same options, and verify against its manifest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use initramfs_tests::{
    assert_complete_ssh_dump, assert_verified, capture_command, makedumpfile, rkdump, run_ok,
    sorted_names,
};
use rkdump_lab::sshd::{CuttingProxy, SshServer};
use rkdump_testkit::{Builder, Generation};

const COLLECTOR: &str = "makedumpfile -l --message-level 7 -d 31";

struct Setup {
    dir: tempfile::TempDir,
    server: SshServer,
}

/// kdump-utils' ssh form (it requires -F): the stream piped into `dd` on a stock server.
#[test]
fn a_collector_with_f_streams_vmcore_flat_through_dd_as_kdump_utils_does() {
    let mut setup = Setup::new(&[], "");
    let index = setup.server.add_shell_client("stock").unwrap();
    let port = setup.server.port;
    let path = setup.path("stock-server").display().to_string();
    let output = setup.capture_with(
        index,
        port,
        &setup.known_hosts(port),
        &path,
        "makedumpfile -F -l --message-level 7 -d 31",
    );
    let log = setup.log(index);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("vmcore.flat piped to dd"), "{log}");
    let names = sorted_names(Path::new(&path));
    assert_eq!(names.len(), 1, "{names:?}");
    let dir = Path::new(&path).join(&names[0]);
    let files = sorted_names(&dir);
    assert!(files.contains(&"vmcore.flat".to_owned()), "{files:?}");
    assert!(files.contains(&"vmcore-dmesg.txt".to_owned()), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("incomplete")), "{files:?}");
    // The reference: makedumpfile -R rebuilds what rkdump writes locally.
    let rebuilt = setup.path("rebuilt");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "{} -R {} < {}",
        makedumpfile().display(),
        rebuilt.display(),
        dir.join("vmcore.flat").display()
    )));
    assert!(std::fs::read(&rebuilt).unwrap() == setup.local_dump());
}

impl Setup {
    fn new(clients: &[&str], receive_args: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vmcore"),
            Builder::new(Generation::V6_1).with_every_kind().build(),
        )
        .unwrap();
        for sub in ["pre.d", "post.d"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let server =
            SshServer::start(&dir.path().join("sshd"), &rkdump(), clients, receive_args).unwrap();
        Self { dir, server }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `rkdump capture` as client `index`, reaching the server through `port`, with
    /// `known_hosts` as the pinned keys.
    fn capture(&self, index: usize, port: u16, known_hosts: &str, path: &str) -> Output {
        self.capture_with(index, port, known_hosts, path, COLLECTOR)
    }

    /// [`Setup::capture`] with another `core_collector`.
    fn capture_with(
        &self,
        index: usize,
        port: u16,
        known_hosts: &str,
        path: &str,
        collector: &str,
    ) -> Output {
        let client = &self.server.clients[index];
        let own = self.path(&client.name);
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("known_hosts"), known_hosts).unwrap();
        self.write_config(&own, port, &client.key, path, collector);
        self.run_capture(&own)
    }

    /// Writes `own`'s kdump.conf and ssh_config: the server at 127.0.0.1:`port`, its pinned
    /// keys in `own/known_hosts`.
    fn write_config(&self, own: &Path, port: u16, key: &Path, path: &str, collector: &str) {
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
                "ssh root@127.0.0.1\nsshkey {}\npath {path}\ncore_collector {collector}\n",
                key.display()
            ),
        )
        .unwrap();
    }

    /// Runs `rkdump capture` with the configuration in `own`, logging to `own/log`.
    fn run_capture(&self, own: &Path) -> Output {
        let output = capture_command(
            &own.join("kdump.conf"),
            &self.path("vmcore"),
            &own.join("log"),
            self.dir.path(),
        )
        .arg("--ssh-config")
        .arg(own.join("ssh_config"))
        .args(["--network-timeout", "20"])
        .output()
        .unwrap();
        println!("{}", String::from_utf8_lossy(&output.stderr));
        output
    }

    fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.path(&self.server.clients[index].name).join("log"))
            .unwrap_or_default()
    }

    fn known_hosts(&self, port: u16) -> String {
        self.server.known_hosts_line("127.0.0.1", port)
    }

    /// The one dump directory a client left under `<root>/<client>/<path>`.
    fn dump_dir(&self, index: usize, path: &str) -> PathBuf {
        self.dump_dir_of(&self.server.clients[index].name, path)
    }

    /// [`Setup::dump_dir`] by the client's name in the forced command.
    fn dump_dir_of(&self, client: &str, path: &str) -> PathBuf {
        let base = self
            .server
            .root
            .join(client)
            .join(path.trim_start_matches('/'));
        let names = sorted_names(&base);
        assert_eq!(names.len(), 1, "{names:?}");
        base.join(&names[0])
    }

    /// What `rkdump save` writes locally with the collector's options.
    fn local_dump(&self) -> Vec<u8> {
        initramfs_tests::local_dump(&self.path("vmcore"), &self.path("local-vmcore"))
    }

    fn index(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.server.root.join("index.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The index once it has `lines` lines: a dump that ends without a manifest is indexed
    /// when the server's session ends, which may be just after the client exits.
    fn index_with(&self, lines: usize) -> Vec<serde_json::Value> {
        let started = std::time::Instant::now();
        loop {
            let index = self.index();
            if index.len() >= lines || started.elapsed() > std::time::Duration::from_secs(20) {
                return index;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn a_dump_arrives_over_sftp_complete_and_verified() {
    let setup = Setup::new(&["web01"], "");
    let port = setup.server.port;
    let output = setup.capture(0, port, &setup.known_hosts(port), "/var/crash");
    assert_eq!(output.status.code(), Some(0), "{}", setup.log(0));
    let dir = setup.dump_dir(0, "/var/crash");
    let name = dir.file_name().unwrap().to_str().unwrap();
    // Named after the client's address on the route to the server, as kdump-utils does.
    assert!(name.starts_with("127.0.0.1-"), "{name}");
    assert_complete_ssh_dump(&dir, &setup.path("vmcore"), &setup.local_dump());
    let index = setup.index();
    assert_eq!(index.len(), 1, "{index:?}");
    assert_eq!(index[0]["status"], "verified");
    assert_eq!(index[0]["client"], "web01");
    assert_eq!(index[0]["from"], "127.0.0.1");
}

#[test]
fn a_connection_cut_mid_transfer_resumes_and_verifies() {
    let setup = Setup::new(&["web01"], "");
    // The first connection dies after 6 MiB from the client: in the middle of the dump's page
    // data (17 MB), with more sent than the sender keeps unconfirmed (4 MiB).
    let cut_after = 6 << 20;
    let proxy = CuttingProxy::start(setup.server.port, cut_after).unwrap();
    let output = setup.capture(0, proxy.port, &setup.known_hosts(proxy.port), "/var/crash");
    let log = setup.log(0);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(proxy.was_cut(), "the link was never cut");
    assert!(log.contains("connection to root@127.0.0.1"), "{log}");
    let resumed = log
        .lines()
        .find(|l| l.contains("resumed"))
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
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
    let dir = setup.dump_dir(0, "/var/crash");
    let dump = std::fs::read(dir.join("vmcore")).unwrap();
    assert!(dump == setup.local_dump());
    // Continued, not restarted: what crossed the link (ssh framing included) is less than the
    // cut connection's bytes plus a whole second copy.
    assert!(
        proxy.forwarded() < cut_after + dump.len() as u64,
        "{} bytes forwarded",
        proxy.forwarded()
    );
    assert_verified(&dir);
}

#[test]
fn a_host_key_that_is_not_pinned_is_refused() {
    let setup = Setup::new(&["web01"], "");
    let port = setup.server.port;
    // A key of another server under this server's name, then no entry at all.
    let other = setup.path("other_host_key");
    rkdump_lab::sshd::make_key(&other).unwrap();
    let public = std::fs::read_to_string(format!("{}.pub", other.display())).unwrap();
    let field: Vec<&str> = public.split_whitespace().take(2).collect();
    let wrong = format!("[127.0.0.1]:{port} {}\n", field.join(" "));
    for (known_hosts, expected) in [(wrong.as_str(), "differs"), ("", "not in")] {
        let output = setup.capture(0, port, known_hosts, "/var/crash");
        assert_eq!(output.status.code(), Some(1));
        let log = setup.log(0);
        assert!(log.contains(expected), "{log}");
        assert!(log.contains("capture failed at target"), "{log}");
    }
    assert!(!setup.server.root.join("web01/var").exists());
}

#[test]
fn traversal_and_an_exhausted_quota_are_refused() {
    let setup = Setup::new(&["web01"], "--quota 300K");
    let port = setup.server.port;
    let output = setup.capture(0, port, &setup.known_hosts(port), "/../../etc");
    assert_eq!(output.status.code(), Some(1));
    let log = setup.log(0);
    assert!(log.contains("would leave the client's directory"), "{log}");

    let output = setup.capture(0, port, &setup.known_hosts(port), "/var/crash");
    assert_eq!(output.status.code(), Some(1));
    let log = setup.log(0);
    assert!(
        log.contains("quota of 307200 bytes for client web01"),
        "{log}"
    );
    let dir = setup.dump_dir(0, "/var/crash");
    // The kernel log went first and is complete; the dump is kept, marked incomplete.
    assert!(sorted_names(&dir).contains(&"vmcore-dmesg.txt".to_owned()));
    assert!(sorted_names(&dir).contains(&"vmcore-incomplete".to_owned()));
    let index = setup.index_with(1);
    assert_eq!(index.last().unwrap()["status"], "incomplete", "{index:?}");
}

#[test]
fn twenty_clients_at_once_all_arrive_verified() {
    let names: Vec<String> = (0..20).map(|i| format!("host{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let setup = Setup::new(&names, "");
    let port = setup.server.port;
    let known_hosts = setup.known_hosts(port);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..names.len())
            .map(|i| {
                let setup = &setup;
                let known_hosts = &known_hosts;
                scope.spawn(move || setup.capture(i, port, known_hosts, "/var/crash"))
            })
            .collect();
        for (i, run) in runs.into_iter().enumerate() {
            let output = run.join().unwrap();
            assert_eq!(output.status.code(), Some(0), "{}", setup.log(i));
        }
    });
    let local = setup.local_dump();
    for i in 0..names.len() {
        let dir = setup.dump_dir(i, "/var/crash");
        assert!(std::fs::read(dir.join("vmcore")).unwrap() == local, "{i}");
        assert_verified(&dir);
    }
    let index = setup.index();
    assert_eq!(index.len(), 20);
    assert!(index.iter().all(|e| e["status"] == "verified"), "{index:?}");
}

/// OpenSSH's own fingerprint of a known_hosts key field (the reference for `--fingerprint`).
fn ssh_keygen_fingerprint(dir: &Path, key_field: &str) -> String {
    let file = dir.join("fingerprinted.pub");
    std::fs::write(&file, format!("{key_field}\n")).unwrap();
    let listed = run_ok(Command::new("ssh-keygen").arg("-lf").arg(&file));
    // "256 SHA256:... comment (ED25519)"
    listed.split_whitespace().nth(1).unwrap().to_owned()
}

/// `rkdump propagate` from nothing, as an administrator sets up a new client of a central
/// server: the kdump key is made; the host key is pinned only once it is confirmed, by a "yes"
/// on a terminal or by the fingerprint OpenSSH's `ssh-keygen -lf` shows (no terminal, a "no"
/// or another fingerprint pin nothing); the key is authorized restricted to `rkdump receive`
/// through the administrator's own login; a capture with exactly that configuration then
/// arrives verified. Running it again changes nothing; a changed host key is refused.
#[test]
fn propagate_sets_up_a_client_whose_dump_then_arrives_verified() {
    let mut setup = Setup::new(&[], "");
    let admin = setup.server.add_shell_client("admin").unwrap();
    let admin_key = setup.server.clients[admin].key.clone();
    let port = setup.server.port;
    let own = setup.path("db01");
    std::fs::create_dir_all(&own).unwrap();
    // kdump-utils' default name: an RSA key, signed with rsa-sha2 by the trimmed OpenSSL.
    let kdump_key = own.join("ssh/kdump_id_rsa");
    setup.write_config(&own, port, &kdump_key, "/var/crash", COLLECTOR);
    let known_hosts = own.join("known_hosts");
    let fingerprint = ssh_keygen_fingerprint(setup.dir.path(), &setup.server.host_key);
    // Shell code with quotes and spaces: OpenSSH must read the line back as written, and
    // the capture only arrives if it did.
    let forced = format!(
        "RKDUMP_NOTE=\"propagated key\" exec {} receive --root {} --client db01",
        rkdump().display(),
        setup.server.root.display()
    );
    let args_with = |forced: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec![rkdump().display().to_string(), "propagate".into()];
        for (option, value) in [
            ("--config", own.join("kdump.conf")),
            ("--ssh-config", own.join("ssh_config")),
            ("--login-key", admin_key.clone()),
            ("--authorized-keys", setup.server.authorized_keys.clone()),
        ] {
            args.push(option.into());
            args.push(value.display().to_string());
        }
        args.push("--forced-command".into());
        args.push(forced.to_owned());
        args.extend(extra.iter().map(|e| (*e).to_owned()));
        args
    };
    let args = |extra: &[&str]| args_with(&forced, extra);
    // (exit status, stdout, stderr) without a terminal.
    let run = |args: Vec<String>| {
        let output = Command::new(&args[0]).args(&args[1..]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), stdout, stderr)
    };
    let propagate = |extra: &[&str]| run(args(extra));
    // (exit status, what the terminal showed) on a terminal (util-linux `script`) where the
    // user types `answer`.
    let on_terminal = |answer: &str| {
        let line: Vec<String> = args(&[])
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let mut child = Command::new("script")
            .arg("-qec")
            .arg(line.join(" "))
            .arg("/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{answer}").unwrap();
        let output = child.wait_with_output().unwrap();
        let shown = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), shown)
    };

    // Nobody at a terminal and no fingerprint: the key is shown, nothing is trusted.
    let (code, _, stderr) = propagate(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&fingerprint) && stderr.contains("nobody confirmed"),
        "{stderr}"
    );
    assert!(!known_hosts.exists());
    // Another key's fingerprint: refused.
    let (code, _, stderr) = propagate(&[
        "--fingerprint",
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not pinned"), "{stderr}");
    assert!(!known_hosts.exists());
    // Asked on a terminal, the user says no: refused.
    let (code, shown) = on_terminal("no");
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("[yes/no]"), "{shown}");
    assert!(shown.contains(&format!("is {fingerprint}")), "{shown}");
    assert!(!known_hosts.exists());

    // The user says yes.
    let (code, shown) = on_terminal("yes");
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("[yes/no]"), "{shown}");
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        setup.server.known_hosts_line("127.0.0.1", port)
    );
    // The key ssh-keygen made (it reads it back) is the one authorized, restricted.
    let public = run_ok(
        Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&kdump_key),
    );
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    assert_eq!(public[0], "ssh-rsa");
    let authorized = std::fs::read_to_string(&setup.server.authorized_keys).unwrap();
    let line = authorized
        .lines()
        .find(|l| l.contains(public[1]))
        .unwrap_or_else(|| panic!("{authorized}"));
    assert!(line.starts_with("restrict,command=\""), "{line}");
    assert!(
        line.contains(&format!("\" {} {}", public[0], public[1])),
        "{line}"
    );

    // Again: nothing to do, nothing written twice.
    let (code, stdout, stderr) = propagate(&[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("pinned already"), "{stdout}");
    assert!(stdout.contains("authorized already"), "{stdout}");
    // On a new image without the pin: the fingerprint OpenSSH shows on the server is accepted.
    std::fs::remove_file(&known_hosts).unwrap();
    let (code, stdout, stderr) = propagate(&["--fingerprint", &fingerprint]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("authorized already"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        setup.server.known_hosts_line("127.0.0.1", port)
    );
    assert_eq!(
        std::fs::read_to_string(&setup.server.authorized_keys).unwrap(),
        authorized
    );

    let output = setup.run_capture(&own);
    let log = std::fs::read_to_string(own.join("log")).unwrap_or_default();
    assert_eq!(output.status.code(), Some(0), "{log}");
    let dir = setup.dump_dir_of("db01", "/var/crash");
    assert!(std::fs::read(dir.join("vmcore")).unwrap() == setup.local_dump());
    assert_verified(&dir);

    // Another forced command for a key listed already: reported, nothing changed.
    let (code, _, stderr) = run(args_with("rkdump receive --root /elsewhere", &[]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("other options"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&setup.server.authorized_keys).unwrap(),
        authorized
    );

    // A key the capture could not use (protected by a passphrase) is named as the problem;
    // the server is not touched.
    let locked = own.join("ssh/locked_id_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&locked),
    );
    setup.write_config(&own, port, &locked, "/var/crash", COLLECTOR);
    let (code, _, stderr) = propagate(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot use the key"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&setup.server.authorized_keys).unwrap(),
        authorized
    );
    setup.write_config(&own, port, &kdump_key, "/var/crash", COLLECTOR);

    // The server's key changed (or someone is in the middle): refused, the pin stays.
    let other = setup.path("other_host_key");
    rkdump_lab::sshd::make_key(&other).unwrap();
    let other = std::fs::read_to_string(format!("{}.pub", other.display())).unwrap();
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    let pinned = format!("[127.0.0.1]:{port} {}\n", other.join(" "));
    std::fs::write(&known_hosts, &pinned).unwrap();
    let (code, _, stderr) = propagate(&["--fingerprint", &fingerprint]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not changed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), pinned);
}

/// `core_collector scp`: the unfiltered vmcore, byte for byte, through the same resumable,
/// verified transfer.
#[test]
fn core_collector_scp_sends_the_unfiltered_vmcore() {
    let setup = Setup::new(&["web01"], "");
    let port = setup.server.port;
    let output = setup.capture_with(0, port, &setup.known_hosts(port), "/var/crash", "scp");
    assert_eq!(output.status.code(), Some(0), "{}", setup.log(0));
    let dir = setup.dump_dir(0, "/var/crash");
    assert!(
        std::fs::read(dir.join("vmcore")).unwrap() == std::fs::read(setup.path("vmcore")).unwrap()
    );
    assert_verified(&dir);
}
