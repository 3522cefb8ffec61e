//! `rkdump receive`: the receiving end of ssh dumps on a dump server (an SFTP server limited
//! to what sending dumps needs; see `crate::server::receive`).

use std::path::PathBuf;

use clap::Args;

use super::{ExitStatus, report_error};
use crate::server::receive::{ReceiveOptions, client_address, serve};

/// Receive dumps over ssh: run as the forced command of the sending machines' keys.
#[derive(Debug, Args)]
#[command(after_help = "\
In ~dumps/.ssh/authorized_keys on the dump server, one line per machine:
  command=\"rkdump receive --root /srv/crash --client web01\",restrict ssh-ed25519 AAAA... root@web01
(sshd must have a `Subsystem sftp` line: the client asks for the sftp subsystem and sshd runs the
forced command instead.) Each client writes only under <root>/<client>/, cannot overwrite or
remove anything, and stops at its quota or before the free-space reserve; each dump is verified
against its manifest on arrival and logged in <root>/index.jsonl.

Exit status: 0 the session ended normally, 1 it failed (the reason is on standard error).")]
pub struct ReceiveArgs {
    /// Directory holding one subdirectory per client, and index.jsonl.
    #[arg(long)]
    root: PathBuf,
    /// The client's name (default: its address from SSH_CONNECTION).
    #[arg(long)]
    client: Option<String>,
    /// Free space to leave on the root's file system (bytes, or with K, M, G, T).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    reserve: u64,
    /// Most bytes one client may hold under its directory (bytes, or with K, M, G, T).
    #[arg(long, value_parser = parse_size)]
    quota: Option<u64>,
}

/// `123`, `64K`, `10M`, `2G`, `1T` (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{text}: unknown unit {c} (K, M, G or T)")),
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let value: u64 = digits.parse().map_err(|_| format!("{text}: not a size"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text}: too large"))
}

/// Runs `rkdump receive` on standard input and output.
pub fn run(args: &ReceiveArgs) -> ExitStatus {
    let from = client_address(std::env::var("SSH_CONNECTION").ok().as_deref());
    let options = ReceiveOptions {
        root: args.root.clone(),
        client: args.client.clone().unwrap_or_else(|| from.clone()),
        from,
        reserve: args.reserve,
        quota: args.quota,
    };
    match serve(&options, std::io::stdin().lock(), std::io::stdout().lock()) {
        Ok(_) => ExitStatus::Success,
        Err(e) => {
            report_error(&e.to_string());
            ExitStatus::Failure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1X").is_err() && parse_size("G").is_err());
        assert!(
            parse_size("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }
}
