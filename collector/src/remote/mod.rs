//! Dumps sent to other machines, and the server side that receives them.
//!
//! * [`verify`] checks a dump directory against the manifest sent with it.
//! * [`receive`] is `rkdump receive`, the restricted SFTP server a central dump server runs as
//!   the forced command of its clients' keys.
//! * [`propagate`] is `rkdump propagate`, the first kernel's one-time ssh setup.

pub mod propagate;
pub mod receive;
pub mod sftp;
pub mod ssh;
pub mod ssh_config;
pub mod upload;
pub mod verify;

/// `text` quoted for a POSIX shell.
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
