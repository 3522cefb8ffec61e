//! The capture-time client: sending a dump to a server over ssh.
//!
//! From the bottom up (each module uses only those above it in this list):
//!
//! * [`ssh_config`] reads the part of OpenSSH's `ssh_config` a transfer uses, and knows where
//!   root's keys and known_hosts are.
//! * [`ssh`] opens the ssh session: batch-mode public-key authentication, the host key checked
//!   against the pinned known_hosts, retries until a deadline.
//! * [`sftp`] is an SFTP client over any byte stream, with pipelined, acknowledged writes (the
//!   wire format is [`crate::format::sftp`]).
//! * [`upload`] sends a dump directory with resumption after dropped connections and a CRC
//!   manifest, through the dump engine's sinks.
//!
//! The server side is [`crate::server`]; the first kernel's setup (`rkdump propagate`) is
//! [`crate::admin`].

pub mod sftp;
pub mod ssh;
pub mod ssh_config;
pub mod upload;

/// `text` quoted for a POSIX shell.
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn shell_quoting_survives_any_text(text in "\\PC{0,40}") {
            let output = Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", shell_quote(&text)))
                .output()
                .unwrap();
            prop_assert_eq!(String::from_utf8(output.stdout).unwrap(), text);
        }
    }
}
