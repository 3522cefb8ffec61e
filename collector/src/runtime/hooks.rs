//! `kdump_pre`, `kdump_post` and the `pre.d`/`post.d` directories.
//!
//! Order (as kdump-utils): `kdump_pre`, then `/etc/kdump/pre.d/*` in lexical order; after the
//! dump, `/etc/kdump/post.d/*`, then `kdump_post`, each post hook with the dump's exit status
//! as `$1`. Every hook runs with a time limit; its output goes into the log.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::log::Log;
use crate::config::Config;

/// Directory of hooks run before the dump.
pub const PRE_DIR: &str = crate::config::PRE_HOOK_DIR;
/// Directory of hooks run after the dump.
pub const POST_DIR: &str = crate::config::POST_HOOK_DIR;

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResult {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// It ran past its time limit and was killed.
    TimedOut,
    /// It could not be started.
    NotStarted(String),
}

impl HookResult {
    /// Whether the hook exited with status 0.
    pub fn success(&self) -> bool {
        *self == Self::Exited(0)
    }
}

/// The executable files of `dir`, in lexical order.
pub fn directory(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut hooks: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    std::fs::metadata(p)
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
                .collect()
        })
        .unwrap_or_default();
    hooks.sort();
    hooks
}

/// Runs `command` (a program path and arguments, split like a shell's words) with `args`
/// appended, killing it after `limit`. Its output is copied into the log line by line.
pub fn run(command: &str, args: &[String], limit: Duration, log: &Log) -> HookResult {
    let words: Vec<&str> = command.split_whitespace().collect();
    let Some((program, fixed)) = words.split_first() else {
        return HookResult::NotStarted("empty command".into());
    };
    // Its own process group, so that a time limit kills whatever it started too.
    let mut child = match Command::new(program)
        .process_group(0)
        .args(fixed)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return HookResult::NotStarted(e.to_string()),
    };
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut stream| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stream.read_to_end(&mut text);
            text
        })
    })
    .collect();
    let started = Instant::now();
    let result = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::os::unix::process::ExitStatusExt;
                break match (status.code(), status.signal()) {
                    (Some(code), _) => HookResult::Exited(code),
                    (None, Some(signal)) => HookResult::Signaled(signal),
                    (None, None) => HookResult::Exited(-1),
                };
            }
            Ok(None) if started.elapsed() > limit => {
                let group =
                    nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                break HookResult::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break HookResult::NotStarted(e.to_string()),
        }
    };
    for reader in readers {
        // The streams close when the hook (and anything it left running with them) exits;
        // after a kill, an orphan keeping them open must not block the capture.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if reader.is_finished()
            && let Ok(text) = reader.join()
        {
            for line in String::from_utf8_lossy(&text).lines() {
                log.line(&format!("  {program}: {line}"));
            }
        }
    }
    result
}

/// `kdump_pre` then `pre.d`; false if `kdump_pre` failed.
pub fn run_pre(config: &Config, pre_dir: &Path, limit: Duration, log: &Log) -> bool {
    if let Some(command) = &config.kdump_pre {
        let _step = log.step("kdump_pre");
        let result = run(command, &[], limit, log);
        if !result.success() {
            log.line(&format!(
                "kdump_pre {command}: {result:?}; no dump is taken"
            ));
            return false;
        }
    }
    for hook in directory(pre_dir) {
        let _step = log.step(&format!("pre hook {}", hook.display()));
        let result = run(&hook.display().to_string(), &[], limit, log);
        if !result.success() {
            log.line(&format!("pre hook {}: {result:?}", hook.display()));
        }
    }
    true
}

/// `post.d` then `kdump_post`, with the dump's status as `$1`.
pub fn run_post(config: &Config, post_dir: &Path, status: i32, limit: Duration, log: &Log) {
    let args = [status.to_string()];
    let mut commands: Vec<String> = directory(post_dir)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    commands.extend(config.kdump_post.clone());
    for command in commands {
        let _step = log.step(&format!("post hook {command}"));
        let result = run(&command, &args, limit, log);
        if !result.success() {
            log.line(&format!("post hook {command}: {result:?}"));
        }
    }
}
