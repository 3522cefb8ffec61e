//! `rkdump propagate`: the first kernel's one-time setup of the ssh target.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use super::{ExitStatus, report_error};
use crate::admin::propagate::{Request, propagate};
use crate::config::{CONFIG_FILE, Config, Severity, Target};
use crate::transport::ssh::SshTarget;

/// Prepare the ssh dump target of kdump.conf from the first kernel: create the kdump key
/// (`sshkey`) if it is missing, pin the server's host key into the known_hosts file the
/// capture reads (after its fingerprint is confirmed), authorize the key on the server through
/// ssh, and check that the capture's own login works.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 the capture kernel can log in to the server, 1 a step \
failed (the message names it; nothing is trusted that was not confirmed), 2 invalid command \
line or kdump.conf."
)]
pub struct PropagateArgs {
    /// The kdump configuration naming `ssh user@host` and `sshkey`.
    #[arg(long, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// The ssh client configuration the capture image carries (HostName, Port,
    /// UserKnownHostsFile of the server).
    #[arg(long, default_value = "/etc/ssh/ssh_config")]
    ssh_config: PathBuf,
    /// Pin the server's host key only if it has this fingerprint (`SHA256:...`, as
    /// `ssh-keygen -lf` prints it on the server). Without it an unknown key is shown and must
    /// be confirmed on the terminal.
    #[arg(long, value_name = "SHA256:...")]
    fingerprint: Option<String>,
    /// The key to log in with while authorizing the kdump key (default: whatever ssh would
    /// use: agent, ~/.ssh keys, password).
    #[arg(long, value_name = "FILE")]
    login_key: Option<PathBuf>,
    /// The server's authorized_keys file, relative to the user's home unless absolute.
    #[arg(long, value_name = "PATH", default_value = ".ssh/authorized_keys")]
    authorized_keys: String,
    /// Let the kdump key run only this command on the server (with OpenSSH's `restrict`), for
    /// a central server: for example `rkdump receive --root /srv/dumps --client web01`.
    #[arg(long, value_name = "COMMAND")]
    forced_command: Option<String>,
}

/// Runs `rkdump propagate`.
pub fn run(args: &PropagateArgs) -> ExitStatus {
    if !nix::unistd::geteuid().is_root() {
        report_error(
            "propagate must run as root: the capture uses root's key and known_hosts (/root/.ssh)",
        );
        return ExitStatus::Failure;
    }
    let (destination, sshkey) = match ssh_destination(&args.config) {
        Ok(found) => found,
        Err(message) => {
            report_error(&message);
            return ExitStatus::Usage;
        }
    };
    let ssh_config = std::fs::read_to_string(&args.ssh_config).unwrap_or_default();
    let target = match SshTarget::from_destination(&destination, &ssh_config, sshkey) {
        Ok(target) => target,
        Err(message) => {
            report_error(&message);
            return ExitStatus::Usage;
        }
    };
    let request = Request {
        target: &target,
        fingerprint: args.fingerprint.as_deref(),
        login_key: args.login_key.as_deref(),
        authorized_keys: &args.authorized_keys,
        forced_command: args.forced_command.as_deref(),
    };
    match propagate(&request, &mut confirm_on_terminal, &mut |line| {
        println!("{line}");
    }) {
        Ok(()) => ExitStatus::Success,
        Err(e) => {
            report_error(&e.to_string());
            ExitStatus::Failure
        }
    }
}

/// The `ssh` target and `sshkey` of the configuration; errors name the file and line.
fn ssh_destination(path: &Path) -> Result<(String, PathBuf), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (config, diagnostics) = Config::parse(&path.display().to_string(), &text);
    if let Some(error) = diagnostics.iter().find(|d| d.severity == Severity::Error) {
        return Err(error.to_string());
    }
    match config.target {
        Target::Ssh(destination) => Ok((destination, PathBuf::from(config.sshkey))),
        _ => Err(format!(
            "{}: no `ssh user@host` target: nothing to propagate",
            path.display()
        )),
    }
}

/// Asks on the terminal, as ssh does: `yes` or the fingerprint itself confirms, `no` refuses,
/// anything else asks again (three times at most). Without a terminal nobody can confirm.
fn confirm_on_terminal(question: &str, fingerprint: &str) -> bool {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return false;
    }
    eprint!("{question}\nType 'yes', 'no' or the fingerprint: [yes/no] ");
    for _ in 0..3 {
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer).unwrap_or(0) == 0 {
            return false;
        }
        match answer.trim() {
            "yes" => return true,
            "no" => return false,
            typed if typed == fingerprint => return true,
            _ => eprint!("Please type 'yes', 'no' or the fingerprint: "),
        }
    }
    false
}
