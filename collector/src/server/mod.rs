//! The dump server's side of ssh dumps.
//!
//! * [`receive`] is `rkdump receive`, the restricted SFTP server a central dump server runs as
//!   the forced command of its clients' keys: each client confined to its own directory, within
//!   its quota, every dump verified on arrival and indexed.
//! * [`verify`] checks a dump directory against the manifest sent with it (`rkdump verify`, and
//!   `rkdump receive` when a manifest arrives).
//!
//! The client it talks to is [`crate::transport`]; the wire format is [`crate::format::sftp`].

pub mod receive;
pub mod verify;
