//! Guest helper of the crash lab: runs a command with one syscall made to fail with a chosen
//! errno, through a seccomp filter (as `systemd-run -p SystemCallFilter=~NAME:ERRNO` does).
//!
//! It makes a stock kernel answer like one that enforces kexec signatures
//! (`kexec_file_load` -> ENOKEY) or lacks a syscall (ENOSYS), so that rkdump's fallback and
//! explanations run against a real kernel otherwise.
//!
//! `lab-seccomp SYSCALL ERRNO COMMAND [ARGS...]`, SYSCALL `kexec_file_load` or `kexec_load`,
//! ERRNO a number.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;

use anyhow::{Context, Result, bail};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [syscall, errno, command, rest @ ..] = args.as_slice() else {
        bail!("usage: lab-seccomp SYSCALL ERRNO COMMAND [ARGS...]");
    };
    let number = match syscall.as_str() {
        "kexec_file_load" => nix::libc::SYS_kexec_file_load,
        "kexec_load" => nix::libc::SYS_kexec_load,
        other => bail!("unknown syscall {other}"),
    };
    let errno: u32 = errno.parse().context("ERRNO must be a number")?;
    let filter = SeccompFilter::new(
        BTreeMap::from([(number, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        TargetArch::x86_64,
    )?;
    let program: BpfProgram = filter.try_into()?;
    seccompiler::apply_filter(&program)?;
    Err(std::process::Command::new(command).args(rest).exec())
        .with_context(|| format!("running {command}"))
}
