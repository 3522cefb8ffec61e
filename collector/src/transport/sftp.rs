//! An SFTP client over any byte stream (an ssh channel in practice), with pipelined writes
//! whose acknowledgements are reported one by one, so that the caller knows exactly which bytes
//! the server has confirmed.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};

use crate::format::sftp::{
    self, EXT_FSYNC, EXT_STATVFS, PathRequest, Request, Response, SftpError, StatusCode,
    TwoPathRequest,
};

/// Why an SFTP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SftpClientError {
    /// The channel failed (the connection dropped or timed out).
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The server sent something that is not SFTP.
    #[error("protocol: {0}")]
    Protocol(#[from] SftpError),
    /// The server refused an operation.
    #[error("{what}: {message} ({code:?})")]
    Status {
        /// The operation.
        what: String,
        /// The status code.
        code: StatusCode,
        /// The server's message.
        message: String,
    },
    /// The server refused a pipelined write (see [`SftpClient::next_ack`]).
    #[error("write of {len} bytes at offset {offset:#x}: {message} ({code:?})")]
    WriteRefused {
        /// Offset of the refused write.
        offset: u64,
        /// Its length.
        len: usize,
        /// The status code.
        code: StatusCode,
        /// The server's message.
        message: String,
    },
    /// The server answered with the wrong kind of packet.
    #[error("{0}: unexpected answer from the server")]
    Unexpected(String),
}

impl SftpClientError {
    /// Whether the failure is the connection's (worth reconnecting), not the server's refusal.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Protocol(_))
    }
}

type Result<T> = std::result::Result<T, SftpClientError>;

/// An SFTP session.
#[derive(Debug)]
pub struct SftpClient<S> {
    stream: S,
    next_id: u32,
    buffer: Vec<u8>,
    extensions: Vec<Vec<u8>>,
    /// Writes sent and not acknowledged yet: request id, and the write's offset and length.
    in_flight: BTreeMap<u32, (u64, usize)>,
    /// Write acknowledgements that arrived while waiting for another answer: the write's id,
    /// or its refusal.
    acked: VecDeque<std::result::Result<u32, SftpClientError>>,
}

impl<S: Read + Write> SftpClient<S> {
    /// Starts a session: `SSH_FXP_INIT`, then the server's version and extensions.
    pub fn start(stream: S) -> Result<Self> {
        let mut client = Self {
            stream,
            next_id: 0,
            buffer: Vec::new(),
            extensions: Vec::new(),
            in_flight: BTreeMap::new(),
            acked: VecDeque::new(),
        };
        client.send(&Request::Init {
            version: sftp::VERSION,
        })?;
        match client.receive()? {
            Response::Version { extensions, .. } => {
                client.extensions = extensions.into_iter().map(|(name, _)| name).collect();
                Ok(client)
            }
            _ => Err(SftpClientError::Unexpected("SSH_FXP_INIT".to_owned())),
        }
    }

    /// Whether the server offers extension `name`.
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name.as_bytes())
    }

    /// Writes in flight (sent, not yet acknowledged).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn send(&mut self, request: &Request) -> Result<()> {
        // No `flush`: on an ssh2 channel it is `libssh2_channel_flush`, which discards the
        // *incoming* data not read yet (here: acknowledgements). Channel writes are sent as
        // they are made.
        self.stream.write_all(&request.encode())?;
        Ok(())
    }

    fn receive(&mut self) -> Result<Response> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((payload, consumed)) = sftp::split_packet(&self.buffer)? {
                let response = Response::decode(payload)?;
                self.buffer.drain(..consumed);
                return Ok(response);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the channel",
                )
                .into());
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `request` and waits for its answer, noting write acknowledgements on the way.
    fn call(&mut self, request: &Request) -> Result<Response> {
        let id = request.id();
        self.send(request)?;
        loop {
            let response = self.receive()?;
            if response.id() == id {
                return Ok(response);
            }
            self.note_ack(response)?;
        }
    }

    fn note_ack(&mut self, response: Response) -> Result<()> {
        let id = response.id();
        let Some((offset, len)) = self.in_flight.remove(&id) else {
            return Err(SftpClientError::Unexpected(format!(
                "answer to request {id}"
            )));
        };
        let refused = |code, message| SftpClientError::WriteRefused {
            offset,
            len,
            code,
            message,
        };
        self.acked.push_back(match response {
            Response::Status {
                code: StatusCode::Ok,
                ..
            } => Ok(id),
            Response::Status { code, message, .. } => Err(refused(code, message)),
            _ => Err(refused(StatusCode::BadMessage, "not a status".to_owned())),
        });
        Ok(())
    }

    /// Sends `request` and expects `SSH_FX_OK`.
    fn call_ok(&mut self, what: &str, request: &Request) -> Result<()> {
        match self.call(request)? {
            Response::Status {
                code: StatusCode::Ok,
                ..
            } => Ok(()),
            Response::Status { code, message, .. } => Err(SftpClientError::Status {
                what: what.to_owned(),
                code,
                message,
            }),
            _ => Err(SftpClientError::Unexpected(what.to_owned())),
        }
    }

    /// Opens `path` with `flags` (`sftp::OPEN_*`); returns the handle.
    pub fn open(&mut self, path: &str, flags: u32) -> Result<Vec<u8>> {
        let id = self.id();
        match self.call(&Request::Open {
            id,
            path: path.as_bytes().to_vec(),
            flags,
            attrs: sftp::Attrs {
                permissions: Some(0o600),
                ..sftp::Attrs::default()
            },
        })? {
            Response::Handle { handle, .. } => Ok(handle),
            Response::Status { code, message, .. } => Err(SftpClientError::Status {
                what: format!("opening {path}"),
                code,
                message,
            }),
            _ => Err(SftpClientError::Unexpected(format!("opening {path}"))),
        }
    }

    /// Closes a handle.
    pub fn close(&mut self, handle: &[u8]) -> Result<()> {
        let id = self.id();
        self.call_ok(
            "closing a file",
            &Request::Close {
                id,
                handle: handle.to_vec(),
            },
        )
    }

    /// The size of `path`, or `None` if it does not exist.
    pub fn stat(&mut self, path: &str) -> Result<Option<sftp::Attrs>> {
        let id = self.id();
        match self.call(&Request::Path {
            kind: PathRequest::Stat,
            id,
            path: path.as_bytes().to_vec(),
        })? {
            Response::Attrs { attrs, .. } => Ok(Some(attrs)),
            Response::Status {
                code: StatusCode::NoSuchFile,
                ..
            } => Ok(None),
            Response::Status { code, message, .. } => Err(SftpClientError::Status {
                what: format!("stat {path}"),
                code,
                message,
            }),
            _ => Err(SftpClientError::Unexpected(format!("stat {path}"))),
        }
    }

    /// Creates `path` and any missing parents (`mkdir -p`).
    pub fn mkdir_all(&mut self, path: &str) -> Result<()> {
        let absolute = path.starts_with('/');
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if absolute || !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.stat(&prefix)?.is_some() {
                continue;
            }
            let id = self.id();
            let made = self.call_ok(
                &format!("creating directory {prefix}"),
                &Request::Mkdir {
                    id,
                    path: prefix.as_bytes().to_vec(),
                    attrs: sftp::Attrs {
                        permissions: Some(0o700),
                        ..sftp::Attrs::default()
                    },
                },
            );
            // Another session may have made it in between.
            if let Err(e) = made
                && self.stat(&prefix)?.is_none()
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Renames `from` to `to`, never replacing an existing `to` where the server can tell
    /// (`posix-rename@openssh.com` replaces; plain `SSH_FXP_RENAME` refuses, so that is used).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let id = self.id();
        self.call_ok(
            &format!("renaming {from} to {to}"),
            &Request::TwoPaths {
                kind: TwoPathRequest::Rename,
                id,
                first: from.as_bytes().to_vec(),
                second: to.as_bytes().to_vec(),
            },
        )
    }

    /// Flushes a file to the server's disk (`fsync@openssh.com`). Returns `false` if the server
    /// does not offer it.
    pub fn fsync(&mut self, handle: &[u8]) -> Result<bool> {
        if !self.has_extension(EXT_FSYNC) {
            return Ok(false);
        }
        let id = self.id();
        self.call_ok(
            "fsync",
            &Request::Extended {
                id,
                name: EXT_FSYNC.as_bytes().to_vec(),
                data: sftp::extension_args(&[handle]),
            },
        )?;
        Ok(true)
    }

    /// Bytes available at `path` on the server (`statvfs@openssh.com`), if it says.
    pub fn available(&mut self, path: &str) -> Result<Option<u64>> {
        if !self.has_extension(EXT_STATVFS) {
            return Ok(None);
        }
        let id = self.id();
        match self.call(&Request::Extended {
            id,
            name: EXT_STATVFS.as_bytes().to_vec(),
            data: sftp::extension_args(&[path.as_bytes()]),
        })? {
            Response::ExtendedReply { data, .. } => Ok(Some(sftp::statvfs_available(&data)?)),
            _ => Ok(None),
        }
    }

    /// Reads up to `len` bytes at `offset` (fewer at the end of the file).
    pub fn read(&mut self, handle: &[u8], offset: u64, len: u32) -> Result<Vec<u8>> {
        let id = self.id();
        match self.call(&Request::Read {
            id,
            handle: handle.to_vec(),
            offset,
            len,
        })? {
            Response::Data { data, .. } => Ok(data),
            Response::Status {
                code: StatusCode::Eof,
                ..
            } => Ok(Vec::new()),
            Response::Status { code, message, .. } => Err(SftpClientError::Status {
                what: "reading back".to_owned(),
                code,
                message,
            }),
            _ => Err(SftpClientError::Unexpected("reading back".to_owned())),
        }
    }

    /// Sends a write without waiting for it; returns its request id, which
    /// [`SftpClient::next_ack`] reports once the server confirms it.
    pub fn send_write(&mut self, handle: &[u8], offset: u64, data: &[u8]) -> Result<u32> {
        let id = self.id();
        self.send(&Request::Write {
            id,
            handle: handle.to_vec(),
            offset,
            data: data.to_vec(),
        })?;
        self.in_flight.insert(id, (offset, data.len()));
        Ok(id)
    }

    /// Waits for the next write acknowledgement and returns its id; a write the server refused
    /// is [`SftpClientError::WriteRefused`], which names that write's offset and length (not
    /// those of the writes sent since).
    pub fn next_ack(&mut self) -> Result<u32> {
        loop {
            if let Some(ack) = self.acked.pop_front() {
                return ack;
            }
            if self.in_flight.is_empty() {
                return Err(SftpClientError::Unexpected(
                    "waiting for a write that was not sent".to_owned(),
                ));
            }
            let response = self.receive()?;
            self.note_ack(response)?;
        }
    }

    /// Writes a whole small file's contents at offset 0 and waits for every acknowledgement.
    pub fn write_all(&mut self, handle: &[u8], data: &[u8]) -> Result<()> {
        for (i, piece) in data.chunks(WRITE_SIZE).enumerate() {
            self.send_write(handle, (i * WRITE_SIZE) as u64, piece)?;
        }
        while self.in_flight() > 0 || !self.acked.is_empty() {
            self.next_ack()?;
        }
        Ok(())
    }
}

/// Bytes per write request (OpenSSH's sftp client uses 32 KiB; servers accept up to 256 KiB).
pub const WRITE_SIZE: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::receive::{ReceiveOptions, serve};

    /// Runs a client against an in-process `rkdump receive` over a socket pair.
    fn with_server<T>(
        test: impl FnOnce(SftpClient<std::os::unix::net::UnixStream>) -> T,
    ) -> (T, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let (client_end, server_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let options = ReceiveOptions {
            root: root.path().to_owned(),
            client: "c".to_owned(),
            from: "test".to_owned(),
            reserve: 0,
            quota: None,
        };
        let server = std::thread::spawn(move || {
            let reader = server_end.try_clone().unwrap();
            serve(&options, reader, server_end)
        });
        let result = test(SftpClient::start(client_end).unwrap());
        server.join().unwrap().unwrap();
        (result, root)
    }

    #[test]
    fn pipelined_writes_are_acknowledged_in_order() {
        let (_, root) = with_server(|mut client| {
            client.mkdir_all("/var/crash/d").unwrap();
            let handle = client
                .open(
                    "/var/crash/d/vmcore-incomplete",
                    sftp::OPEN_WRITE | sftp::OPEN_CREATE,
                )
                .unwrap();
            let ids: Vec<u32> = (0..10u64)
                .map(|i| client.send_write(&handle, i * 3, b"abc").unwrap())
                .collect();
            assert_eq!(client.in_flight(), 10);
            let acked: Vec<u32> = (0..10).map(|_| client.next_ack().unwrap()).collect();
            assert_eq!(acked, ids);
            assert!(client.fsync(&handle).unwrap());
            client.close(&handle).unwrap();
            client
                .rename("/var/crash/d/vmcore-incomplete", "/var/crash/d/vmcore")
                .unwrap();
            assert_eq!(
                client.stat("/var/crash/d/vmcore").unwrap().unwrap().size,
                Some(30)
            );
            assert!(client.stat("/nothing").unwrap().is_none());
        });
        assert_eq!(
            std::fs::read(root.path().join("c/var/crash/d/vmcore")).unwrap(),
            b"abc".repeat(10)
        );
    }

    #[test]
    fn a_refused_write_names_its_own_offset_not_the_later_ones() {
        with_server(|mut client| {
            let handle = client
                .open("/f-incomplete", sftp::OPEN_WRITE | sftp::OPEN_CREATE)
                .unwrap();
            let first = client.send_write(&handle, 0, b"abc").unwrap();
            // Refused (no such handle), with writes sent after it before its answer is read.
            client.send_write(b"nothing", 0x1234, b"defg").unwrap();
            let third = client.send_write(&handle, 0x10_0000, b"hi").unwrap();
            assert_eq!(client.next_ack().unwrap(), first);
            match client.next_ack().unwrap_err() {
                SftpClientError::WriteRefused {
                    offset, len, code, ..
                } => {
                    assert_eq!((offset, len, code), (0x1234, 4, StatusCode::Failure));
                }
                other => panic!("{other}"),
            }
            assert_eq!(client.next_ack().unwrap(), third);
            assert_eq!(client.in_flight(), 0);
            // Acknowledgements noted while waiting for another answer keep their writes too.
            client.send_write(b"nothing", 0x5678, b"x").unwrap();
            assert!(client.available("/").unwrap().is_some());
            let error = client.next_ack().unwrap_err().to_string();
            assert!(
                error.starts_with("write of 1 bytes at offset 0x5678: invalid handle"),
                "{error}"
            );
        });
    }

    #[test]
    fn a_refused_write_is_reported_with_the_servers_reason() {
        with_server(|mut client| {
            client.write_all(b"no-such-handle", b"x").unwrap_err();
            let handle = client
                .open("/f", sftp::OPEN_WRITE | sftp::OPEN_CREATE)
                .unwrap();
            client.close(&handle).unwrap();
            let err = client.open("/f", sftp::OPEN_WRITE).unwrap_err().to_string();
            assert!(err.contains("never overwritten"), "{err}");
        });
    }
}
