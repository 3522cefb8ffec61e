//! Integration scenarios for rkdump. The tests live in `tests/`; what they share is here: the
//! lab's reference tools (makedumpfile, crash, drgn) are re-exported, and [`guest`] runs one
//! scenario guest. Small vmcores with exactly the kernel state a test needs come from the
//! `rkdump-testkit` crate.

pub mod guest;

pub use rkdump_lab::reference::*;

use std::path::Path;
use std::process::Command;

/// The names of the entries of `dir`, sorted.
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// What `rkdump save` writes locally from `vmcore` to `out` with kdump-utils' default
/// collector options (`-l -d 31`): the reference a dump sent over ssh must equal. Written once.
pub fn local_dump(vmcore: &Path, out: &Path) -> Vec<u8> {
    if !out.exists() {
        run_ok(
            Command::new(rkdump())
                .args(["save", "-l", "--message-level", "0", "-d", "31"])
                .arg(vmcore)
                .arg(out),
        );
    }
    std::fs::read(out).unwrap()
}

/// `rkdump verify` accepts `dir`: the kernel log, the dump and the capture log (the manifest
/// does not list itself).
pub fn assert_verified(dir: &Path) {
    let report = run_ok(Command::new(rkdump()).arg("verify").arg(dir));
    assert!(report.contains(": 3 files"), "{report}");
}

/// A dump directory a capture sent over SFTP holds what a local capture would: the four files,
/// the dump byte-identical to `local_dump` (the same vmcore written locally), and
/// `vmcore-dmesg.txt` equal to `rkdump dmesg` of `vmcore`; `rkdump verify` accepts it.
pub fn assert_complete_ssh_dump(dir: &Path, vmcore: &Path, local_dump: &[u8]) {
    assert_eq!(
        sorted_names(dir),
        [
            "kexec-dmesg.log",
            "rkdump-manifest.json",
            "vmcore",
            "vmcore-dmesg.txt"
        ]
    );
    assert!(std::fs::read(dir.join("vmcore")).unwrap() == local_dump);
    let dmesg = run_ok(Command::new(rkdump()).arg("dmesg").arg(vmcore));
    assert_eq!(
        std::fs::read_to_string(dir.join("vmcore-dmesg.txt")).unwrap(),
        dmesg
    );
    assert_verified(dir);
}

/// `rkdump capture` reading `config` and `vmcore`, logging to `log`, with its hook directories
/// `pre.d` and `post.d` in `hooks`; callers add the target's own arguments.
pub fn capture_command(config: &Path, vmcore: &Path, log: &Path, hooks: &Path) -> Command {
    let mut command = Command::new(rkdump());
    command
        .arg("capture")
        .arg("--config")
        .arg(config)
        .arg("--vmcore")
        .arg(vmcore)
        .arg("--log")
        .arg(log)
        .arg("--pre-dir")
        .arg(hooks.join("pre.d"))
        .arg("--post-dir")
        .arg(hooks.join("post.d"));
    command
}

/// The output of step `name` in a guest script's log, whose steps are written as
/// `== NAME: COMMAND`, the output, then `== NAME: exit STATUS` (the Debian guest tests).
pub fn log_step<'a>(log: &'a str, name: &str) -> &'a str {
    let start = format!("== {name}: ");
    let from = log
        .find(&start)
        .unwrap_or_else(|| panic!("no step {name} in the log:\n{log}"));
    let rest = &log[from..];
    let end = rest
        .find(&format!("== {name}: exit"))
        .unwrap_or_else(|| panic!("step {name} did not finish:\n{rest}"));
    &rest[..end + rest[end..].find('\n').unwrap_or(rest.len() - end)]
}

/// The exit status a [`log_step`] output ends with.
pub fn exit_status(output: &str) -> &str {
    output
        .rsplit(": exit ")
        .next()
        .map(str::trim)
        .unwrap_or_default()
}
