//! Sending a dump directory to an ssh server over SFTP, resuming after dropped connections.
//!
//! [`RemoteDir`] is the dump directory on the server. Small files (the kernel log, the capture
//! log, the manifest) go up whole, each as `<name>-incomplete` renamed into place. The dump
//! itself is written by the engine through [`RemoteSink`], a [`Sink`] whose positioned writes
//! become pipelined SFTP writes. The sink keeps every write the server has not confirmed yet
//! (at most [`WINDOW`] bytes); when the connection drops it reconnects, reopens the file and
//! sends those writes again, so the transfer continues from the last byte the server
//! confirmed rather than from zero. Each file's CRC-32 per chunk is computed from the writes
//! as they pass ([`ContentCrcs`]) and listed in the manifest, written last, which the server
//! (`rkdump receive`) or `rkdump verify` checks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ssh2::{Channel, Session};

use super::sftp::{SftpClient, SftpClientError, WRITE_SIZE};
use super::shell_quote;
use super::ssh::{SshError, SshTarget, connect_with_retries};
use crate::format::manifest::{
    ContentCrcs, DEFAULT_CHUNK_SIZE, FileEntry, MANIFEST_NAME, Manifest,
};
use crate::format::sftp::{OPEN_CREATE, OPEN_READ, OPEN_TRUNCATE, OPEN_WRITE, StatusCode};
use crate::output::{DestinationError, OpenRequest, OpenSink, Opened, incomplete_name};
use crate::output::{OutputError, Sink};

/// Unconfirmed bytes kept for resending (and in flight) at most.
pub const WINDOW: usize = 4 << 20;

/// Why sending failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No connection could be made.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The server refused an operation, or the connection failed.
    #[error(transparent)]
    Sftp(#[from] SftpClientError),
    /// The server refused a write with a bare failure, and says less than that write is free.
    #[error(
        "write of {len} bytes at offset {offset:#x} refused, {available} bytes free on the server"
    )]
    Full {
        /// Offset of the refused write.
        offset: u64,
        /// Its length.
        len: usize,
        /// Bytes free on the server's file system (`statvfs@openssh.com`).
        available: u64,
    },
    /// Opening the SFTP channel failed.
    #[error("opening the SFTP channel on {target}: {source}")]
    Channel {
        /// `user@host:port`.
        target: String,
        /// libssh2's error.
        source: ssh2::Error,
    },
}

impl UploadError {
    fn is_connection(&self) -> bool {
        match self {
            Self::Sftp(e) => e.is_connection(),
            Self::Channel { .. } => true,
            Self::Ssh(_) | Self::Full { .. } => false,
        }
    }
}

/// Something to tell the capture log.
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

/// An SFTP session that is re-established when it drops.
pub struct Connection {
    target: SshTarget,
    retry_for: Duration,
    log: LogFn,
    client: Option<SftpClient<Channel>>,
    session: Option<Session>,
    local: Option<std::net::IpAddr>,
    reconnects: u32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target.label())
            .field("connected", &self.client.is_some())
            .field("reconnects", &self.reconnects)
            .finish()
    }
}

impl Connection {
    /// Connects (retrying for up to `retry_for`) and starts SFTP.
    pub fn open(target: SshTarget, retry_for: Duration, log: LogFn) -> Result<Self, UploadError> {
        let mut connection = Self {
            target,
            retry_for,
            log,
            client: None,
            session: None,
            local: None,
            reconnects: 0,
        };
        connection.client()?;
        Ok(connection)
    }

    /// Times the connection was re-established after a drop.
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    /// This machine's address on the connection (see [`super::ssh::Connected::local`]).
    pub fn local_address(&self) -> Option<std::net::IpAddr> {
        self.local
    }

    /// The SFTP client, connecting first if the last connection dropped.
    fn client(&mut self) -> Result<&mut SftpClient<Channel>, UploadError> {
        if self.client.is_none() {
            let deadline = Instant::now() + self.retry_for;
            let log = self.log.clone();
            let connected = connect_with_retries(&self.target, deadline, &mut |m| log(m))?;
            let session = connected.session;
            self.local = Some(connected.local);
            let channel_error = |source| UploadError::Channel {
                target: self.target.label(),
                source,
            };
            let mut channel = session.channel_session().map_err(channel_error)?;
            channel.subsystem("sftp").map_err(channel_error)?;
            self.client = Some(SftpClient::start(channel)?);
            self.session = Some(session);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Starts `command` on the server in a new exec channel of the session (connecting first
    /// if the last connection dropped).
    fn exec(&mut self, command: &str) -> Result<Channel, UploadError> {
        self.client()?;
        let session = self.session.as_ref().expect("connected above");
        let channel_error = |source| UploadError::Channel {
            target: self.target.label(),
            source,
        };
        let mut channel = session.channel_session().map_err(channel_error)?;
        channel.exec(command).map_err(channel_error)?;
        Ok(channel)
    }

    /// Forgets a broken connection; the next use reconnects.
    fn drop_connection(&mut self, why: &UploadError) {
        (self.log)(&format!(
            "connection to {} lost ({why}); reconnecting",
            self.target.label()
        ));
        self.client = None;
        self.session = None;
        self.reconnects += 1;
    }

    /// Runs `op`, reconnecting and running it again if the connection drops (up to 5 times).
    /// `op` must be safe to repeat.
    fn retrying<T>(
        &mut self,
        mut op: impl FnMut(&mut SftpClient<Channel>) -> Result<T, SftpClientError>,
    ) -> Result<T, UploadError> {
        let mut drops = 0;
        loop {
            let result = self.client().and_then(|c| op(c).map_err(UploadError::from));
            match result {
                Err(e) if e.is_connection() && drops < 5 => {
                    drops += 1;
                    self.drop_connection(&e);
                }
                other => return other,
            }
        }
    }
}

/// A dump directory on the server.
#[derive(Debug, Clone)]
pub struct RemoteDir {
    connection: Arc<Mutex<Connection>>,
    dir: String,
    manifest: Arc<Mutex<Manifest>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RemoteDir {
    /// Creates `dir` (and its parents) on the server.
    pub fn create(connection: Connection, dir: &str) -> Result<Self, UploadError> {
        let connection = Arc::new(Mutex::new(connection));
        lock(&connection).retrying(|c| c.mkdir_all(dir))?;
        Ok(Self {
            connection,
            dir: dir.trim_end_matches('/').to_owned(),
            manifest: Arc::new(Mutex::new(Manifest::new(DEFAULT_CHUNK_SIZE))),
        })
    }

    /// `user@host:port:/dir`, for messages.
    pub fn label(&self) -> String {
        format!("{}:{}", lock(&self.connection).target.label(), self.dir)
    }

    /// The path of `name` in the directory.
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    /// Writes a whole small file: as `<name>-incomplete`, flushed, then renamed to `name`; it
    /// joins the manifest.
    pub fn put(&self, name: &str, data: &[u8]) -> Result<(), UploadError> {
        let final_path = self.path(name);
        let temporary = incomplete_path(&final_path);
        lock(&self.connection).retrying(|c| {
            // Renamed already before a drop: done.
            if c.stat(&final_path)?
                .is_some_and(|a| a.size == Some(data.len() as u64))
                && c.stat(&temporary)?.is_none()
            {
                return Ok(());
            }
            let handle = c.open(&temporary, OPEN_WRITE | OPEN_CREATE | OPEN_TRUNCATE)?;
            c.write_all(&handle, data)?;
            c.fsync(&handle)?;
            c.close(&handle)?;
            c.rename(&temporary, &final_path)
        })?;
        if name != MANIFEST_NAME {
            lock(&self.manifest).add_bytes(name, data);
        }
        Ok(())
    }

    /// Writes the manifest of every file sent so far, last.
    pub fn finish(&self) -> Result<(), UploadError> {
        let manifest = lock(&self.manifest).encode();
        self.put(MANIFEST_NAME, &manifest)
    }

    /// A destination for the dump engine: the file `name` in this directory.
    pub fn destination(&self, name: &str) -> crate::output::Destination {
        crate::output::Destination::Custom(Arc::new(RemoteFile {
            dir: self.clone(),
            name: name.to_owned(),
        }))
    }

    /// Times the connection had to be re-established.
    pub fn reconnects(&self) -> u32 {
        lock(&self.connection).reconnects()
    }

    /// A destination for a flattened stream written as kdump-utils writes it: piped into
    /// `dd` on the server as `vmcore-incomplete`, then renamed to `name` (`vmcore.flat`). A
    /// stream cannot resume: a dropped connection fails the dump. Needs a server that runs
    /// commands (not `rkdump receive`).
    pub fn stream_destination(&self, name: &str) -> crate::output::Destination {
        crate::output::Destination::Custom(Arc::new(RemoteStreamFile {
            dir: self.clone(),
            name: name.to_owned(),
        }))
    }
}

/// Opens [`ExecStream`]s for the dump engine.
#[derive(Debug)]
struct RemoteStreamFile {
    dir: RemoteDir,
    name: String,
}

impl OpenSink for RemoteStreamFile {
    fn open(&self, options: &OpenRequest) -> Result<Opened, DestinationError> {
        if !options.flattened {
            return Err(DestinationError::Usage(
                "a dump piped to dd on the server must be a flattened stream (-F)".to_owned(),
            ));
        }
        let temporary = self.dir.path("vmcore-incomplete");
        let final_path = self.dir.path(&self.name);
        let label = format!("{}:{temporary}", lock(&self.dir.connection).target.label());
        let failed = |e: UploadError| DestinationError::Output(remote_error(&label, 0, 0, &e));
        let channel = lock(&self.dir.connection)
            .exec(&format!(
                "umask 0077 && dd bs=512 of={} 2>/dev/null",
                shell_quote(&temporary)
            ))
            .map_err(failed)?;
        let stream = ExecStream {
            channel,
            connection: self.dir.connection.clone(),
            rename: (temporary.clone(), final_path),
        };
        let sink = crate::output::destination::flat_sink(
            std::io::BufWriter::with_capacity(1 << 20, stream),
            options.lz4,
            &label,
        )
        .map_err(DestinationError::Output)?;
        Ok(Opened {
            sink,
            rename: None,
            partial: Some(temporary.into()),
            label,
        })
    }
}

/// The standard input of a command on the server; completing it waits for the command's
/// success and renames its output into place.
struct ExecStream {
    channel: Channel,
    connection: Arc<Mutex<Connection>>,
    rename: (String, String),
}

impl std::fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStream")
            .field("output", &self.rename.0)
            .finish_non_exhaustive()
    }
}

impl std::io::Write for ExecStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.channel.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Not `Channel::flush`: libssh2_channel_flush discards pending incoming data.
        Ok(())
    }
}

/// Waits for a command that got end-of-file and returns its exit status.
fn wait_for_exit(channel: &mut Channel) -> std::io::Result<i32> {
    let io = |e: ssh2::Error| std::io::Error::other(e.to_string());
    channel.send_eof().map_err(io)?;
    channel.wait_eof().map_err(io)?;
    channel.wait_close().map_err(io)?;
    // libssh2 reports status 0 when no exit status came: a command killed by a signal.
    if let Some(signal) = channel.exit_signal().map_err(io)?.exit_signal {
        return Err(std::io::Error::other(format!(
            "the command on the server was killed by SIG{signal}"
        )));
    }
    channel.exit_status().map_err(io)
}

impl crate::output::sink::Stream for ExecStream {
    fn complete(&mut self) -> std::io::Result<()> {
        let status = wait_for_exit(&mut self.channel)?;
        if status != 0 {
            return Err(std::io::Error::other(format!(
                "dd on the server exited with status {status}"
            )));
        }
        let (from, to) = &self.rename;
        let mut rename = lock(&self.connection)
            .exec(&format!("mv -f {} {}", shell_quote(from), shell_quote(to)))
            .map_err(std::io::Error::other)?;
        match wait_for_exit(&mut rename)? {
            0 => Ok(()),
            status => Err(std::io::Error::other(format!(
                "renaming {from} to {to} on the server: mv exited with status {status}"
            ))),
        }
    }
}

/// Whether a failure's message says nothing more than its code: empty, or OpenSSH's text for
/// `SSH_FX_FAILURE`.
fn is_bare_failure(message: &str) -> bool {
    let message = message.trim();
    message.is_empty() || message.eq_ignore_ascii_case("failure")
}

/// The incomplete name of a remote path (`/d/vmcore` → `/d/vmcore-incomplete`).
fn incomplete_path(path: &str) -> String {
    incomplete_name(std::path::Path::new(path))
        .display()
        .to_string()
}

/// Opens [`RemoteSink`]s for the dump engine.
#[derive(Debug)]
struct RemoteFile {
    dir: RemoteDir,
    name: String,
}

impl OpenSink for RemoteFile {
    fn open(&self, options: &OpenRequest) -> Result<Opened, DestinationError> {
        if options.flattened {
            return Err(DestinationError::Usage(
                "the ssh target writes a seekable file over SFTP; -F is not used".to_owned(),
            ));
        }
        let final_path = self.dir.path(&self.name);
        let temporary = incomplete_path(&final_path);
        let label = format!("{}:{temporary}", lock(&self.dir.connection).target.label());
        let handle = lock(&self.dir.connection)
            .retrying(|c| {
                c.open(
                    &temporary,
                    OPEN_WRITE | OPEN_READ | OPEN_CREATE | OPEN_TRUNCATE,
                )
            })
            .map_err(|e| DestinationError::Output(remote_error(&label, 0, 0, &e)))?;
        Ok(Opened {
            sink: Box::new(RemoteSink {
                dir: self.dir.clone(),
                name: self.name.clone(),
                temporary: temporary.clone(),
                final_path,
                label: label.clone(),
                handle,
                unconfirmed: VecDeque::new(),
                unconfirmed_bytes: 0,
                sent: 0,
                confirmed: 0,
                crcs: ContentCrcs::new(DEFAULT_CHUNK_SIZE),
            }),
            rename: None,
            partial: Some(temporary.into()),
            label,
        })
    }
}

/// A write the server has not confirmed yet.
#[derive(Debug)]
struct Unconfirmed {
    /// Request id of its last sending (`None` until sent).
    id: Option<u32>,
    offset: u64,
    data: Vec<u8>,
}

/// The dump file on the server, written by pipelined SFTP writes (see the module docs).
#[derive(Debug)]
pub struct RemoteSink {
    dir: RemoteDir,
    name: String,
    temporary: String,
    final_path: String,
    label: String,
    handle: Vec<u8>,
    unconfirmed: VecDeque<Unconfirmed>,
    unconfirmed_bytes: usize,
    sent: u64,
    confirmed: u64,
    crcs: ContentCrcs,
}

/// The output error of `error`, met while writing `len` bytes at `offset`: a refused write
/// names its own offset and length (its refusal arrives up to [`WINDOW`] bytes later), and a
/// server out of space is [`OutputError::NoSpace`].
fn remote_error(label: &str, offset: u64, len: usize, error: &UploadError) -> OutputError {
    let (offset, len) = match error {
        UploadError::Full { offset, len, .. } => {
            return OutputError::NoSpace {
                target: label.to_owned(),
                offset: *offset,
                len: *len,
            };
        }
        UploadError::Sftp(SftpClientError::WriteRefused { offset, len, .. }) => (*offset, *len),
        _ => (offset, len),
    };
    OutputError::Io {
        target: label.to_owned(),
        offset,
        len,
        source: std::io::Error::other(error.to_string()),
    }
}

impl RemoteSink {
    /// Reconnects after `why`, reopens the file and sends every unconfirmed write again.
    fn resume(&mut self, why: &UploadError) -> Result<(), UploadError> {
        let mut connection = lock(&self.dir.connection);
        connection.drop_connection(why);
        let confirmed = self.confirmed;
        let pending = self.unconfirmed_bytes;
        let client = connection.client()?;
        // Not created again: the file exists since the first open, and its bytes are kept.
        self.handle = client.open(&self.temporary, OPEN_WRITE | OPEN_READ)?;
        for write in &mut self.unconfirmed {
            write.id = Some(client.send_write(&self.handle, write.offset, &write.data)?);
        }
        (connection.log)(&format!(
            "resumed {}: {confirmed} bytes were confirmed, {pending} unconfirmed bytes sent again",
            self.temporary
        ));
        Ok(())
    }

    /// Runs `op` on the connection; on a dropped connection, resumes and runs it again.
    fn with_resume<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, UploadError>,
    ) -> Result<T, UploadError> {
        let mut drops = 0;
        loop {
            match op(self) {
                Err(e) if e.is_connection() && drops < 5 => {
                    drops += 1;
                    // A failed resume is retried by the loop too, within its limit.
                    if let Err(again) = self.resume(&e)
                        && !again.is_connection()
                    {
                        return Err(again);
                    }
                }
                other => return other,
            }
        }
    }

    /// Waits for the oldest acknowledgement and forgets the write it confirms; a refused write
    /// is an error naming it (see [`RemoteSink::refused`]).
    fn confirm_one(&mut self) -> Result<(), UploadError> {
        let ack = lock(&self.dir.connection).client()?.next_ack();
        let id = match ack {
            Ok(id) => id,
            Err(refused @ SftpClientError::WriteRefused { .. }) => {
                return Err(self.refused(refused));
            }
            Err(e) => return Err(e.into()),
        };
        let index = self
            .unconfirmed
            .iter()
            .position(|w| w.id == Some(id))
            .ok_or_else(|| {
                UploadError::Sftp(SftpClientError::Unexpected(format!(
                    "acknowledgement of unknown write {id}"
                )))
            })?;
        let write = self.unconfirmed.remove(index).expect("found above");
        self.unconfirmed_bytes -= write.data.len();
        self.confirmed += write.data.len() as u64;
        Ok(())
    }

    /// What a refused write means. A server that says why (`rkdump receive`'s quota and
    /// reserve) is reported as it said. A bare `SSH_FX_FAILURE` is all OpenSSH's sftp-server
    /// answers a write that hits `ENOSPC` with, so then the server is asked for its free space
    /// (`statvfs@openssh.com`): less than the refused write free is [`UploadError::Full`].
    fn refused(&mut self, refused: SftpClientError) -> UploadError {
        let SftpClientError::WriteRefused {
            offset,
            len,
            code: StatusCode::Failure,
            message,
        } = &refused
        else {
            return refused.into();
        };
        let (offset, len) = (*offset, *len);
        if !is_bare_failure(message) {
            return refused.into();
        }
        let available = lock(&self.dir.connection)
            .client()
            .ok()
            .and_then(|c| c.available(&self.temporary).ok().flatten());
        match available {
            Some(available) if available < len as u64 => UploadError::Full {
                offset,
                len,
                available,
            },
            // No answer, or room enough: the failure was something else.
            _ => refused.into(),
        }
    }

    /// Queues a write and sends it; if sending fails, the write stays queued and
    /// [`RemoteSink::resume`] sends it with the others.
    fn send(&mut self, offset: u64, data: Vec<u8>) -> Result<(), UploadError> {
        self.unconfirmed_bytes += data.len();
        self.unconfirmed.push_back(Unconfirmed {
            id: None,
            offset,
            data,
        });
        let write = self.unconfirmed.back().expect("pushed above");
        let id = lock(&self.dir.connection).client()?.send_write(
            &self.handle,
            write.offset,
            &write.data,
        )?;
        self.unconfirmed.back_mut().expect("pushed above").id = Some(id);
        Ok(())
    }

    fn drain(&mut self) -> Result<(), UploadError> {
        while !self.unconfirmed.is_empty() {
            self.confirm_one()?;
        }
        Ok(())
    }

    /// The checksums of the finished file (conflicted ranges read back from the server).
    fn checksums(&mut self) -> Result<FileEntry, UploadError> {
        let handle = self.handle.clone();
        let crcs = self.crcs.clone();
        let mut connection = lock(&self.dir.connection);
        let client = connection.client()?;
        let crc32 = crcs.finish(|range| {
            let mut hasher = crc32fast::Hasher::new();
            let mut at = range.start;
            while at < range.end {
                let want = u32::try_from((range.end - at).min(WRITE_SIZE as u64))
                    .expect("bounded by WRITE_SIZE");
                let data = client.read(&handle, at, want)?;
                if data.is_empty() {
                    break;
                }
                hasher.update(&data);
                at += data.len() as u64;
            }
            Ok::<u32, SftpClientError>(hasher.finalize())
        })?;
        Ok(FileEntry {
            name: self.name.clone(),
            size: crcs.size(),
            crc32,
        })
    }
}

impl Sink for RemoteSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), OutputError> {
        self.crcs.record(offset, data);
        for (i, piece) in data.chunks(WRITE_SIZE).enumerate() {
            let at = offset + (i * WRITE_SIZE) as u64;
            let len = piece.len();
            let mut piece = Some(piece.to_vec());
            let result = self.with_resume(|sink| {
                // Room first, so that at most WINDOW bytes are ever unconfirmed.
                while sink.unconfirmed_bytes + len > WINDOW && !sink.unconfirmed.is_empty() {
                    sink.confirm_one()?;
                }
                // Once queued, a piece is sent again by `resume`, not here.
                if let Some(piece) = piece.take() {
                    sink.send(at, piece)?;
                }
                Ok(())
            });
            // A refused write is named by its own offset (`remote_error`), not `at`.
            result.map_err(|e| remote_error(&self.label, at, len, &e))?;
            self.sent += len as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OutputError> {
        let label = self.label.clone();
        let failed = |e: UploadError| remote_error(&label, 0, 0, &e);
        self.with_resume(Self::drain).map_err(failed)?;
        let entry = self.with_resume(Self::checksums).map_err(failed)?;
        self.with_resume(|sink| {
            let mut connection = lock(&sink.dir.connection);
            let client = connection.client()?;
            client.fsync(&sink.handle)?;
            client.close(&sink.handle)?;
            Ok(())
        })
        .map_err(failed)?;
        let (temporary, final_path) = (&self.temporary, &self.final_path);
        lock(&self.dir.connection)
            .retrying(|c| {
                // A rename whose answer was lost with the connection is done already.
                if c.stat(final_path)?.is_some() && c.stat(temporary)?.is_none() {
                    return Ok(());
                }
                c.rename(temporary, final_path)
            })
            .map_err(failed)?;
        lock(&self.dir.manifest).add(entry);
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failure_that_says_nothing_more_is_a_question_for_statvfs() {
        assert!(is_bare_failure("Failure"));
        assert!(is_bare_failure(""));
        assert!(!is_bare_failure(
            "quota of 307200 bytes for client web01 reached (307200 bytes held)"
        ));
        assert!(!is_bare_failure(
            "free-space reserve of 1 bytes on /srv reached"
        ));
    }

    #[test]
    fn a_refused_write_is_reported_at_its_own_offset_and_a_full_server_as_full() {
        let refused = UploadError::Sftp(SftpClientError::WriteRefused {
            offset: 0x20_0000,
            len: 65536,
            code: StatusCode::Failure,
            message: "Failure".to_owned(),
        });
        // Met while queueing a write 4 MiB later.
        let error = remote_error("h:/d/vmcore-incomplete", 0x60_0000, 4096, &refused);
        assert!(!error.is_no_space());
        assert!(
            error
                .to_string()
                .starts_with("writing 65536 bytes at offset 0x200000 of h:/d/vmcore-incomplete"),
            "{error}"
        );
        let full = UploadError::Full {
            offset: 0x20_0000,
            len: 65536,
            available: 0,
        };
        let error = remote_error("h:/d/vmcore-incomplete", 0x60_0000, 4096, &full);
        assert!(error.is_no_space());
        assert_eq!(
            error.to_string(),
            "h:/d/vmcore-incomplete is full: 65536 bytes at offset 0x200000 could not be written"
        );
        // Any other error is where it was met.
        let other = UploadError::Sftp(SftpClientError::Unexpected("x".to_owned()));
        let error = remote_error("h:/f", 0x60_0000, 4096, &other);
        assert!(
            error.to_string().contains("4096 bytes at offset 0x600000"),
            "{error}"
        );
    }
}
