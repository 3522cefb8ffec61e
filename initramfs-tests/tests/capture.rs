//! The capture steps (`rkdump capture`, what PID 1 runs in its child) on the host, on a
//! synthetic vmcore, with an already-mounted target directory: directory layout, file names,
//! the order of the steps, hooks and their time limits.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use initramfs_tests::{capture_command, rkdump, sorted_names};
use rkdump_testkit::{Builder, Generation};

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vmcore"),
            Builder::new(Generation::V6_1).with_every_kind().build(),
        )
        .unwrap();
        std::fs::write(dir.path().join("kdump.conf"), config).unwrap();
        for sub in ["target", "pre.d", "post.d"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable shell script.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn capture(&self) -> Output {
        self.capture_with(&[])
    }

    /// Runs `rkdump capture` on this setup, with `extra` arguments after the usual ones.
    fn capture_with(&self, extra: &[&str]) -> Output {
        let output = capture_command(
            &self.path("kdump.conf"),
            &self.path("vmcore"),
            &self.path("log"),
            self.dir.path(),
        )
        .arg("--target-dir")
        .arg(self.path("target"))
        .args(extra)
        .output()
        .unwrap();
        println!("{}", String::from_utf8_lossy(&output.stderr));
        output
    }

    /// The one dump directory under `<target>/<path>`.
    fn dump_dir(&self, path: &str) -> PathBuf {
        let base = self.path("target").join(path.trim_start_matches('/'));
        let entries: Vec<PathBuf> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.into_iter().next().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap()
    }
}

#[test]
fn a_capture_leaves_kdump_utils_layout() {
    let setup =
        Setup::new("path /var/crash\ncore_collector makedumpfile -l --message-level 7 -d 31\n");
    let output = setup.capture();
    assert_eq!(output.status.code(), Some(0));
    let dir = setup.dump_dir("/var/crash");
    let name = dir.file_name().unwrap().to_str().unwrap();
    // 127.0.0.1-YYYY-MM-DD-HH:MM:SS
    assert!(
        name.starts_with("127.0.0.1-") && name.len() == "127.0.0.1-2026-11-25-14:09:12".len(),
        "{name}"
    );
    assert_eq!(
        sorted_names(&dir),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    let info = Command::new(rkdump())
        .arg("info")
        .arg(dir.join("vmcore"))
        .output()
        .unwrap();
    assert!(info.status.success());
    assert!(String::from_utf8_lossy(&info.stdout).contains("Dump level:   31"));
    let saved_log = std::fs::read_to_string(dir.join("kexec-dmesg.log")).unwrap();
    assert!(saved_log.contains("dump: done in"), "{saved_log}");
    assert!(saved_log.contains("dump summary: {"), "{saved_log}");
    let dmesg = std::fs::read_to_string(dir.join("vmcore-dmesg.txt")).unwrap();
    assert!(dmesg.contains("sysrq: Trigger a crash"));
}

#[test]
fn steps_run_in_kdump_utils_order_and_post_hooks_get_the_status() {
    let setup = Setup::new("");
    let trace = setup.path("trace");
    let record = |tag: &str| {
        format!(
            "echo \"{tag} $1 $(ls {}/*/* 2>/dev/null | xargs -n1 basename | tr '\\n' ' ')\" >> {}",
            setup.path("target/var/crash").display(),
            trace.display()
        )
    };
    let pre = setup.script("pre", &record("kdump_pre"));
    setup.script("pre.d/10-first", &record("pre.d/10"));
    setup.script("pre.d/20-second", &record("pre.d/20"));
    setup.script("post.d/10-first", &record("post.d/10"));
    let post = setup.script("post", &record("kdump_post"));
    std::fs::write(
        setup.path("kdump.conf"),
        format!(
            "kdump_pre {}\nkdump_post {}\n",
            pre.display(),
            post.display()
        ),
    )
    .unwrap();
    assert_eq!(setup.capture().status.code(), Some(0));
    let trace = std::fs::read_to_string(trace).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    assert_eq!(
        lines,
        [
            "kdump_pre  ",
            "pre.d/10  ",
            "pre.d/20  ",
            // After the dump: the log and the dump are there, the capture log not yet.
            "post.d/10 0 vmcore vmcore-dmesg.txt ",
            "kdump_post 0 vmcore vmcore-dmesg.txt ",
        ],
        "{trace}"
    );
}

#[test]
fn a_failing_kdump_pre_means_no_dump() {
    let setup = Setup::new("");
    let pre = setup.script("pre", "echo refusing; exit 3");
    std::fs::write(
        setup.path("kdump.conf"),
        format!("kdump_pre {}\n", pre.display()),
    )
    .unwrap();
    let output = setup.capture();
    assert_eq!(
        output.status.code(),
        Some(10),
        "exit status 10: kdump_pre failed"
    );
    let dir = setup.dump_dir("/var/crash");
    assert!(
        sorted_names(&dir).is_empty(),
        "no dump after a failing kdump_pre: {:?}",
        sorted_names(&dir)
    );
    let log = setup.log();
    assert!(
        log.contains("pre: refusing") && log.contains("Exited(3)"),
        "{log}"
    );
}

#[test]
fn a_hook_past_its_time_limit_is_killed_and_the_capture_goes_on() {
    let setup = Setup::new("");
    setup.script("pre.d/slow", "echo sleeping; sleep 30");
    let started = std::time::Instant::now();
    let output = setup.capture_with(&["--hook-timeout", "2"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "the hook was not killed at its limit"
    );
    let log = setup.log();
    assert!(log.contains("TimedOut"), "{log}");
    assert!(sorted_names(&setup.dump_dir("/var/crash")).contains(&"vmcore".to_owned()));
}

#[test]
fn a_dump_that_fails_keeps_dmesg_and_says_so() {
    let setup = Setup::new("core_collector makedumpfile -d 31 --frobnicate\n");
    let output = setup.capture();
    assert_eq!(output.status.code(), Some(1));
    let dir = setup.dump_dir("/var/crash");
    assert_eq!(sorted_names(&dir), ["kexec-dmesg.log", "vmcore-dmesg.txt"]);
    let log = setup.log();
    assert!(
        log.contains("core_collector (line 1): unexpected argument '--frobnicate'"),
        "{log}"
    );
}
