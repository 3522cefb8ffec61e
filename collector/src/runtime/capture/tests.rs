//! Unit tests of the capture steps against synthetic vmcores, with `--target-dir` (no device,
//! mount or network): the dump directory's files, the outcome and exit status, the
//! `core_collector` forms, and the hooks.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rkdump_testkit::{Builder, Generation};

use super::*;
use crate::config::Severity;

/// A vmcore, a target directory, a log and a place for hooks, in one temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    vmcore: PathBuf,
    vmcore_bytes: Vec<u8>,
    target: PathBuf,
    log: Log,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vmcore = dir.path().join("vmcore.in");
        let vmcore_bytes = Builder::new(Generation::V6_12).with_every_kind().build();
        std::fs::write(&vmcore, &vmcore_bytes).unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let log = Log::with_file(&dir.path().join("run/rkdump/log"));
        Self {
            dir,
            vmcore,
            vmcore_bytes,
            target,
            log,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An executable `/bin/sh` script.
    fn script(&self, path: &Path, body: &str) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn capture<'a>(&'a self, config: &'a Config) -> Capture<'a> {
        Capture {
            config,
            vmcore: self.vmcore.clone(),
            log: &self.log,
            target_dir: Some(self.target.clone()),
            to_rootfs: false,
            cmdline: String::new(),
            device_timeout: Duration::from_secs(1),
            hook_timeout: Duration::from_secs(20),
            stall_timeout: None,
            host_ip: "127.0.0.1".into(),
            pre_dir: self.path("pre.d"),
            post_dir: self.path("post.d"),
            ssh_config: self.path("no-ssh_config"),
            network_timeout: Duration::from_secs(1),
            network: false,
        }
    }

    /// The one dump directory under `base` (relative to the target), checked to be named
    /// `127.0.0.1-YYYY-MM-DD-HH:MM:SS`.
    fn dump_dir(&self, base: &str) -> PathBuf {
        let base = self.target.join(base);
        let entries: Vec<PathBuf> = std::fs::read_dir(&base)
            .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "one dump directory: {entries:?}");
        let name = entries[0].file_name().unwrap().to_str().unwrap().to_owned();
        let stamp = name
            .strip_prefix("127.0.0.1-")
            .unwrap_or_else(|| panic!("{name}: named after the local address"));
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99-99:99:99", "{name}");
        entries[0].clone()
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A kdump.conf parsed without errors.
fn config(text: &str) -> Config {
    let (config, diagnostics) = Config::parse("kdump.conf", text);
    assert!(
        diagnostics.iter().all(|d| d.severity != Severity::Error),
        "{diagnostics:?}"
    );
    config
}

fn failed_dump(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed {
            step: "dump",
            error,
        } => error,
        other => panic!("expected a failed dump step, got {other:?}"),
    }
}

#[test]
fn a_capture_saves_the_dump_the_kernel_log_and_the_capture_log() {
    let setup = Setup::new();
    let config = config("path /var/crash\ncore_collector makedumpfile -l -d 31\n");
    let outcome = setup.capture(&config).run();
    assert_eq!(outcome, Outcome::Saved);
    assert_eq!(outcome.exit_code(), 0);
    let dir = setup.dump_dir("var/crash");
    assert_eq!(
        names(&dir),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"],
        "no -incomplete names"
    );
    let vmcore = std::fs::read(dir.join("vmcore")).unwrap();
    assert_eq!(&vmcore[..8], b"KDUMP   ");
    let status = u32::from_le_bytes(vmcore[424..428].try_into().unwrap());
    assert_eq!(status & 0x8, 0, "the header's incomplete flag is clear");
    // The builder's last printk record.
    let dmesg = std::fs::read_to_string(dir.join("vmcore-dmesg.txt")).unwrap();
    assert!(dmesg.contains("sysrq: Trigger a crash"), "{dmesg}");
    let log = std::fs::read_to_string(dir.join("kexec-dmesg.log")).unwrap();
    assert!(log.contains("rkdump: dump summary: {"), "{log}");
    assert!(log.contains("--- kernel log of the capture kernel ---"));
}

#[test]
fn core_collector_cp_copies_the_vmcore_byte_for_byte() {
    let setup = Setup::new();
    let config = config("path /\ncore_collector cp\n");
    let outcome = setup.capture(&config).run();
    assert_eq!(outcome, Outcome::Saved);
    let dir = setup.dump_dir("");
    assert_eq!(
        names(&dir),
        ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    );
    let copy = std::fs::read(dir.join("vmcore")).unwrap();
    assert!(
        copy == setup.vmcore_bytes,
        "the copy differs from the vmcore"
    );
}

#[test]
fn an_unsupported_core_collector_fails_the_dump_naming_its_line() {
    let setup = Setup::new();
    let config = config("path /\n\ncore_collector gzip -9\n");
    let outcome = setup.capture(&config).run();
    let error = failed_dump(&outcome);
    assert!(
        error.contains("line 3") && error.contains("gzip"),
        "{error}"
    );
    assert_eq!(outcome.exit_code(), 1);
    // As kdump-utils: the kernel log is saved first and kept; no dump.
    let dir = setup.dump_dir("");
    assert_eq!(names(&dir), ["kexec-dmesg.log", "vmcore-dmesg.txt"]);
}

#[test]
fn bad_makedumpfile_options_fail_the_dump_naming_the_line() {
    let setup = Setup::new();
    let config = config("path /\ncore_collector makedumpfile --no-such-option\n");
    let outcome = setup.capture(&config).run();
    let error = failed_dump(&outcome);
    assert!(error.contains("core_collector (line 2)"), "{error}");
    assert!(!setup.dump_dir("").join("vmcore").exists());
}

#[test]
fn an_empty_core_collector_fails_the_dump() {
    let setup = Setup::new();
    // kdump.conf cannot say it (a directive needs a value); a configuration can.
    let config = Config {
        path: "/".into(),
        core_collector: "  ".into(),
        ..Config::default()
    };
    let outcome = setup.capture(&config).run();
    assert_eq!(failed_dump(&outcome), "core_collector is empty");
    assert_eq!(outcome.exit_code(), 1);
    assert!(!setup.dump_dir("").join("vmcore").exists());
}

#[test]
fn a_failing_kdump_pre_takes_no_dump_and_runs_no_post_hook() {
    let setup = Setup::new();
    let status = setup.path("post-status");
    let post = setup.path("post.sh");
    setup.script(&post, &format!("echo \"$1\" >> {}", status.display()));
    let config = config(&format!(
        "path /\nkdump_pre /bin/false\nkdump_post {}\n",
        post.display()
    ));
    let outcome = setup.capture(&config).run();
    assert_eq!(outcome, Outcome::PreHookFailed);
    assert_eq!(outcome.exit_code(), EXIT_PRE_HOOK_FAILED);
    assert_eq!(EXIT_PRE_HOOK_FAILED, 10);
    assert_eq!(names(&setup.dump_dir("")), [] as [String; 0], "no dump");
    assert!(!status.exists(), "no post hook after a failed kdump_pre");
}

#[test]
fn a_failing_pre_d_hook_does_not_stop_the_dump() {
    let setup = Setup::new();
    setup.script(&setup.path("pre.d/10-fails"), "exit 3");
    let config = config("path /\ncore_collector makedumpfile -d 31\n");
    assert_eq!(setup.capture(&config).run(), Outcome::Saved);
    assert!(setup.dump_dir("").join("vmcore").exists());
}

/// `post.d/*` then `kdump_post`, each with the dump's status as `$1`: 0 after a dump, 1 after
/// a failed one.
#[test]
fn post_hooks_get_the_dump_status() {
    for (collector, want) in [("makedumpfile -d 31", "0"), ("gzip", "1")] {
        let setup = Setup::new();
        let status = setup.path("post-status");
        setup.script(
            &setup.path("post.d/10-record"),
            &format!("echo \"post.d $1\" >> {}", status.display()),
        );
        let post = setup.path("post.sh");
        setup.script(
            &post,
            &format!("echo \"kdump_post $1 $#\" >> {}", status.display()),
        );
        let config = config(&format!(
            "path /\ncore_collector {collector}\nkdump_post {}\n",
            post.display()
        ));
        let outcome = setup.capture(&config).run();
        assert_eq!(
            outcome.exit_code(),
            want.parse::<u8>().unwrap(),
            "{outcome:?}"
        );
        let lines = std::fs::read_to_string(&status).unwrap();
        assert_eq!(
            lines,
            format!("post.d {want}\nkdump_post {want} 1\n"),
            "{collector}"
        );
    }
}
