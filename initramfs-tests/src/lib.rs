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
