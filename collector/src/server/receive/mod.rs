//! `rkdump receive`: the receiving end of ssh dumps on a central dump server.
//!
//! Stock OpenSSH runs it as the forced command of the key each machine sends dumps with
//! (`command="rkdump receive --root /srv/crash --client web01",restrict ssh-ed25519 ...` in
//! `authorized_keys`, or `ForceCommand`). It speaks SFTP version 3 on standard input and output,
//! so the rkdump ssh target and stock `sftp` clients talk to it unchanged, but it only lets a
//! client do what sending dumps needs:
//!
//! * every path is inside the client's own directory `<root>/<client>/`: `..` is refused, and so
//!   are symbolic links on the way;
//! * directories can be listed (entries as what they are: a symbolic link is shown, never
//!   followed);
//! * directories and new files can be created; an existing file can be opened for writing only
//!   while its name says it is incomplete (`vmcore-incomplete`, to resume a dropped transfer);
//!   renames never replace an existing file; nothing can be removed;
//! * writes stop with a clear error at the client's quota and before the file system's free
//!   space falls below the reserve;
//! * when a dump's manifest is renamed into place, the files it lists are verified on arrival;
//! * one JSON line per dump directory touched goes to `<root>/index.jsonl`: when, who, from
//!   where, how many bytes, and whether it was verified, failed verification or stayed
//!   incomplete.
//!
//! This module is the serve loop and the dispatch of SFTP requests; each rule above has its own
//! module: `jail` resolves paths inside the client's directory, `quota` accounts for the
//! quota and the free-space reserve, and `index` writes the index lines.

mod index;
mod jail;
mod quota;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions, ReadDir};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use self::index::Index;
pub use self::index::IndexEntry;
use self::jail::{Jail, JailError, Resolved};
use self::quota::{QuotaError, Space};
use super::verify::verify_dir;
use crate::format::manifest::{MANIFEST_NAME, is_plain_name};
use crate::format::sftp::{
    self, Attrs, EXT_FSYNC, EXT_POSIX_RENAME, EXT_STATVFS, HandleRequest, Listed, NameEntry,
    OPEN_APPEND, OPEN_CREATE, OPEN_READ, OPEN_TRUNCATE, OPEN_WRITE, PathRequest, Request, Response,
    SftpError, StatusCode, TwoPathRequest,
};

/// Most files open at once in one session.
const MAX_HANDLES: usize = 64;
/// Most directories open at once in one session (each holds a directory stream).
const MAX_DIR_HANDLES: usize = 16;
/// Largest read answered.
const MAX_READ: u32 = 64 * 1024;
/// Most entries in one answer to `SSH_FXP_READDIR` (as OpenSSH's sftp-server sends).
const READDIR_BATCH: usize = 100;

/// Why a receiving session ended in error.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The options are unusable.
    #[error("{0}")]
    Setup(String),
    /// Standard input or output failed.
    #[error("the ssh channel failed: {0}")]
    Channel(#[from] io::Error),
    /// The client sent bytes that are not SFTP.
    #[error("the client is not speaking SFTP: {0}")]
    Protocol(#[from] SftpError),
}

/// What a receiving session may do.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// Directory holding one subdirectory per client, and the index.
    pub root: PathBuf,
    /// The client's name (its subdirectory).
    pub client: String,
    /// Where the client connects from, for the index (`SSH_CONNECTION`'s first field).
    pub from: String,
    /// Free space, in bytes, that writes must leave on the root's file system.
    pub reserve: u64,
    /// Bytes the client may hold under its directory, if limited.
    pub quota: Option<u64>,
}

/// A refusal or failure sent back as an SFTP status.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl Refusal {
    fn denied(message: String) -> Self {
        Self(StatusCode::PermissionDenied, message)
    }

    fn failure(message: String) -> Self {
        Self(StatusCode::Failure, message)
    }

    fn io(what: &str, error: &io::Error) -> Self {
        let code = match error.kind() {
            io::ErrorKind::NotFound => StatusCode::NoSuchFile,
            io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
            _ => StatusCode::Failure,
        };
        Self(code, format!("{what}: {error}"))
    }
}

impl From<JailError> for Refusal {
    fn from(error: JailError) -> Self {
        Self(error.code(), error.to_string())
    }
}

impl From<QuotaError> for Refusal {
    fn from(error: QuotaError) -> Self {
        match error {
            QuotaError::Statvfs(e) => Self::io("statvfs", &e),
            other => Self::failure(other.to_string()),
        }
    }
}

type Answer = Result<Response, Refusal>;

/// An open file.
#[derive(Debug)]
struct Handle {
    file: File,
    path: Resolved,
    size: u64,
    writable: bool,
}

/// An open directory, read a batch at a time.
#[derive(Debug)]
struct DirHandle {
    entries: ReadDir,
}

/// One client connection.
#[derive(Debug)]
struct Session {
    /// The client's directory.
    jail: Jail,
    /// Its quota and the reserve.
    space: Space,
    /// The dump directories written to, for the index.
    index: Index,
    handles: HashMap<Vec<u8>, Handle>,
    dirs: HashMap<Vec<u8>, DirHandle>,
    next_handle: u64,
}

/// Serves one SFTP session on `input`/`output` until the client closes it, then writes the
/// index lines of the dumps it touched (also returned).
pub fn serve(
    options: &ReceiveOptions,
    input: impl Read,
    output: impl Write,
) -> Result<Vec<IndexEntry>, ReceiveError> {
    let mut session = Session::open(options)?;
    let result = session.run(input, output);
    let entries = session.close();
    result.map(|()| entries)
}

impl Session {
    fn open(options: &ReceiveOptions) -> Result<Self, ReceiveError> {
        if !is_plain_name(&options.client) || options.client.starts_with('.') {
            return Err(ReceiveError::Setup(format!(
                "client name {:?} is not a plain file name",
                options.client
            )));
        }
        let root_meta = std::fs::metadata(&options.root).map_err(|e| {
            ReceiveError::Setup(format!("dump root {}: {e}", options.root.display()))
        })?;
        if !root_meta.is_dir() {
            return Err(ReceiveError::Setup(format!(
                "dump root {} is not a directory",
                options.root.display()
            )));
        }
        let home = options.root.join(&options.client);
        match std::fs::DirBuilder::new().mode(0o700).create(&home) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(ReceiveError::Setup(format!("{}: {e}", home.display())));
            }
        }
        if std::fs::symlink_metadata(&home).is_ok_and(|m| !m.is_dir()) {
            return Err(ReceiveError::Setup(format!(
                "{} is not a directory",
                home.display()
            )));
        }
        let space = Space::open(
            &options.client,
            &options.root,
            &home,
            options.reserve,
            options.quota,
        )
        .map_err(|e| ReceiveError::Setup(format!("{}: {e}", home.display())))?;
        Ok(Self {
            jail: Jail::new(home),
            space,
            index: Index::new(&options.root, &options.client, &options.from),
            handles: HashMap::new(),
            dirs: HashMap::new(),
            next_handle: 0,
        })
    }

    fn run(&mut self, mut input: impl Read, mut output: impl Write) -> Result<(), ReceiveError> {
        let mut buffer = Vec::with_capacity(sftp::MAX_PACKET + 64);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some((payload, consumed)) = sftp::split_packet(&buffer)? {
                let request = Request::decode(payload);
                let reply = match request {
                    Ok(request) => self.handle(request),
                    // A malformed packet whose id can be read gets an answer; others end it.
                    Err(e) => match payload.get(1..5) {
                        Some(id) if payload[0] != 1 => Response::Status {
                            id: u32::from_be_bytes(id.try_into().expect("4 bytes")),
                            code: StatusCode::BadMessage,
                            message: e.to_string(),
                        },
                        _ => return Err(e.into()),
                    },
                };
                buffer.drain(..consumed);
                output.write_all(&reply.encode())?;
            }
            output.flush()?;
            let read = match input.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            buffer.extend_from_slice(&chunk[..read]);
        }
    }

    fn handle(&mut self, request: Request) -> Response {
        let id = request.id();
        let answer = match request {
            Request::Init { .. } => {
                return Response::Version {
                    version: sftp::VERSION,
                    extensions: [
                        (EXT_POSIX_RENAME, "1"),
                        (EXT_STATVFS, "2"),
                        (EXT_FSYNC, "1"),
                    ]
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
                };
            }
            Request::Open {
                id, path, flags, ..
            } => self.open_file(id, &path, flags),
            Request::Close { id, handle } => {
                if self.handles.remove(&handle).is_some() || self.dirs.remove(&handle).is_some() {
                    Ok(ok(id))
                } else {
                    Err(bad_handle())
                }
            }
            Request::Read {
                id,
                handle,
                offset,
                len,
            } => self.read(id, &handle, offset, len),
            Request::Write {
                id,
                handle,
                offset,
                data,
            } => self.write(id, &handle, offset, &data),
            Request::Path { kind, id, path } => self.path_request(kind, id, &path),
            Request::Handle {
                kind: HandleRequest::Fstat,
                id,
                handle,
            } => match self.handles.get(&handle) {
                Some(h) => h
                    .file
                    .metadata()
                    .map(|m| Response::Attrs {
                        id,
                        attrs: attrs_of(&m),
                    })
                    .map_err(|e| Refusal::io("fstat", &e)),
                None => Err(bad_handle()),
            },
            Request::Handle {
                kind: HandleRequest::Readdir,
                id,
                handle,
            } => self.read_dir(id, &handle),
            // Modes and times are the server's business; accept and ignore.
            Request::Setstat { id, .. } | Request::Fsetstat { id, .. } => Ok(ok(id)),
            Request::Mkdir { id, path, .. } => self.mkdir(id, &path),
            Request::TwoPaths {
                kind: TwoPathRequest::Rename,
                id,
                first,
                second,
            } => self.rename(id, &first, &second),
            Request::TwoPaths {
                kind: TwoPathRequest::Symlink,
                ..
            } => Err(Refusal::denied("symbolic links are not allowed".to_owned())),
            Request::Extended { id, name, data } => self.extended(id, &name, &data),
        };
        answer.unwrap_or_else(|Refusal(code, message)| Response::Status { id, code, message })
    }

    /// Maps a client path into the client's directory.
    fn resolve(&self, path: &[u8]) -> Result<Resolved, Refusal> {
        Ok(self.jail.resolve(path)?)
    }

    fn open_file(&mut self, id: u32, path: &[u8], flags: u32) -> Answer {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Refusal::failure(format!(
                "more than {MAX_HANDLES} open files"
            )));
        }
        if flags & OPEN_APPEND != 0 {
            return Err(unsupported("appending"));
        }
        let path = self.resolve(path)?;
        let shown = path.relative.display().to_string();
        let existing = std::fs::symlink_metadata(&path.absolute).ok();
        let writable = flags & OPEN_WRITE != 0;
        let mut options = OpenOptions::new();
        options
            .read(flags & OPEN_READ != 0 || !writable)
            .custom_flags(nix::libc::O_NOFOLLOW);
        match (&existing, writable) {
            (Some(meta), _) if !meta.is_file() => {
                return Err(Refusal::failure(format!("{shown} is not a regular file")));
            }
            (Some(_), true) if !is_incomplete(&path.relative) => {
                return Err(Refusal::denied(format!(
                    "{shown} exists: received files are never overwritten"
                )));
            }
            (Some(_), true) => {
                options.write(true).truncate(flags & OPEN_TRUNCATE != 0);
            }
            (Some(_), false) => {}
            (None, true) if flags & OPEN_CREATE != 0 => {
                options.write(true).create_new(true).mode(0o600);
            }
            (None, _) => {
                return Err(Refusal(
                    StatusCode::NoSuchFile,
                    format!("{shown}: no such file"),
                ));
            }
        }
        let file = options
            .open(&path.absolute)
            .map_err(|e| Refusal::io(&shown, &e))?;
        let size = file.metadata().map_err(|e| Refusal::io(&shown, &e))?.len();
        if writable {
            self.index.wrote(&path.relative, 0);
        }
        let handle = self.new_handle();
        self.handles.insert(
            handle.clone(),
            Handle {
                file,
                path,
                size,
                writable,
            },
        );
        Ok(Response::Handle { id, handle })
    }

    /// A handle never given out before in the session.
    fn new_handle(&mut self) -> Vec<u8> {
        self.next_handle += 1;
        self.next_handle.to_string().into_bytes()
    }

    /// `SSH_FXP_OPENDIR`: a directory inside the client's (no `..`, no symbolic link on the
    /// way or at the end: the jail refuses them).
    fn open_dir(&mut self, id: u32, path: &[u8]) -> Answer {
        if self.dirs.len() >= MAX_DIR_HANDLES {
            return Err(Refusal::failure(format!(
                "more than {MAX_DIR_HANDLES} open directories"
            )));
        }
        let path = self.resolve(path)?;
        let shown = format!("/{}", path.relative.display());
        match std::fs::symlink_metadata(&path.absolute) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(Refusal::failure(format!("{shown} is not a directory"))),
            Err(e) => return Err(Refusal::io(&shown, &e)),
        }
        let entries = std::fs::read_dir(&path.absolute).map_err(|e| Refusal::io(&shown, &e))?;
        let handle = self.new_handle();
        self.dirs.insert(handle.clone(), DirHandle { entries });
        Ok(Response::Handle { id, handle })
    }

    /// `SSH_FXP_READDIR`: the next [`READDIR_BATCH`] entries at most (`.` and `..` are not
    /// listed), each with its `lstat` attributes, then `SSH_FX_EOF`.
    fn read_dir(&mut self, id: u32, handle: &[u8]) -> Answer {
        let dir = self.dirs.get_mut(handle).ok_or_else(bad_handle)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut owners = Owners::default();
        let mut entries = Vec::new();
        while entries.len() < READDIR_BATCH {
            let Some(entry) = dir.entries.next() else {
                break;
            };
            let entry = entry.map_err(|e| Refusal::io("readdir", &e))?;
            // `DirEntry::metadata` is an lstat relative to the open directory: a symbolic link
            // is listed as one. An entry removed since it was read is skipped.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let filename = entry.file_name().into_vec();
            let (user, group) = owners.of(meta.uid(), meta.gid());
            let listed = Listed {
                mode: meta.mode(),
                nlink: meta.nlink(),
                user: &user,
                group: &group,
                size: meta.len(),
                mtime: meta.mtime(),
            };
            entries.push(NameEntry {
                longname: sftp::longname(&filename, &listed, now),
                filename,
                attrs: attrs_of(&meta),
            });
        }
        if entries.is_empty() {
            return Err(Refusal(StatusCode::Eof, "End of file".to_owned()));
        }
        Ok(Response::Name { id, entries })
    }

    fn read(&mut self, id: u32, handle: &[u8], offset: u64, len: u32) -> Answer {
        let handle = self.handles.get(handle).ok_or_else(bad_handle)?;
        let mut data = vec![0u8; len.min(MAX_READ) as usize];
        let n = handle
            .file
            .read_at(&mut data, offset)
            .map_err(|e| Refusal::io("read", &e))?;
        if n == 0 && len > 0 {
            return Err(Refusal(StatusCode::Eof, "end of file".to_owned()));
        }
        data.truncate(n);
        Ok(Response::Data { id, data })
    }

    fn write(&mut self, id: u32, handle: &[u8], offset: u64, data: &[u8]) -> Answer {
        let (size, relative) = match self.handles.get(handle) {
            Some(h) if h.writable => (h.size, h.path.relative.clone()),
            Some(_) => return Err(Refusal::denied("file not open for writing".to_owned())),
            None => return Err(bad_handle()),
        };
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Refusal::failure("offset overflows".to_owned()))?;
        let growth = end.saturating_sub(size);
        self.space.check(growth)?;
        let h = self.handles.get_mut(handle).expect("checked above");
        h.file
            .write_all_at(data, offset)
            .map_err(|e| Refusal::io(&relative.display().to_string(), &e))?;
        h.size = h.size.max(end);
        self.space.record(growth);
        self.index.wrote(&relative, growth);
        Ok(ok(id))
    }

    fn path_request(&mut self, kind: PathRequest, id: u32, path: &[u8]) -> Answer {
        match kind {
            PathRequest::Realpath => {
                let path = self.resolve(path)?;
                let mut shown = b"/".to_vec();
                shown.extend_from_slice(path.relative.as_os_str().as_bytes());
                Ok(Response::Name {
                    id,
                    entries: vec![NameEntry {
                        longname: shown.clone(),
                        filename: shown,
                        attrs: Attrs::default(),
                    }],
                })
            }
            PathRequest::Stat | PathRequest::Lstat => {
                let path = self.resolve(path)?;
                std::fs::symlink_metadata(&path.absolute)
                    .map(|m| Response::Attrs {
                        id,
                        attrs: attrs_of(&m),
                    })
                    .map_err(|e| Refusal::io(&path.relative.display().to_string(), &e))
            }
            PathRequest::Remove | PathRequest::Rmdir => Err(Refusal::denied(
                "received dumps cannot be removed by clients".to_owned(),
            )),
            PathRequest::Opendir => self.open_dir(id, path),
            PathRequest::Readlink => Err(unsupported("symbolic links")),
        }
    }

    fn mkdir(&mut self, id: u32, path: &[u8]) -> Answer {
        let path = self.resolve(path)?;
        if path.relative.as_os_str().is_empty() {
            return Err(Refusal::failure("/ exists".to_owned()));
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path.absolute)
            .map(|()| ok(id))
            .map_err(|e| Refusal::io(&path.relative.display().to_string(), &e))
    }

    fn rename(&mut self, id: u32, from: &[u8], to: &[u8]) -> Answer {
        let from = self.resolve(from)?;
        let to = self.resolve(to)?;
        let shown = from.relative.display().to_string();
        match std::fs::symlink_metadata(&from.absolute) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(Refusal::denied(format!("{shown} is not a regular file"))),
            Err(e) => return Err(Refusal::io(&shown, &e)),
        }
        renameat2(
            AT_FDCWD,
            &from.absolute,
            AT_FDCWD,
            &to.absolute,
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|errno| {
            if errno == nix::errno::Errno::EEXIST {
                Refusal::denied(format!(
                    "{} exists: received files are never overwritten",
                    to.relative.display()
                ))
            } else {
                Refusal::io(&shown, &io::Error::from(errno))
            }
        })?;
        if to.relative.file_name() == Some(OsStr::new(MANIFEST_NAME)) {
            let dir = to.relative.parent().unwrap_or(Path::new("")).to_owned();
            let status = match verify_dir(&self.jail.home().join(&dir)) {
                Ok(_) => "verified".to_owned(),
                Err(e) => format!("failed verification: {e}"),
            };
            self.index.settle(dir, status);
        }
        Ok(ok(id))
    }

    fn extended(&mut self, id: u32, name: &[u8], data: &[u8]) -> Answer {
        let args = |count| {
            sftp::parse_extension_args(data, count)
                .map_err(|e| Refusal(StatusCode::BadMessage, e.to_string()))
        };
        match name {
            n if n == EXT_FSYNC.as_bytes() => {
                let handle = args(1)?.remove(0);
                let handle = self.handles.get(&handle).ok_or_else(bad_handle)?;
                handle
                    .file
                    .sync_all()
                    .map(|()| ok(id))
                    .map_err(|e| Refusal::io("fsync", &e))
            }
            n if n == EXT_POSIX_RENAME.as_bytes() => {
                let paths = args(2)?;
                self.rename(id, &paths[0], &paths[1])
            }
            n if n == EXT_STATVFS.as_bytes() => {
                let data = self
                    .space
                    .statvfs_reply()
                    .map_err(|e| Refusal::io("statvfs", &e))?;
                Ok(Response::ExtendedReply { id, data })
            }
            other => Err(unsupported(&format!(
                "extension {}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// Ends the session: every dump directory written to without a verified manifest is
    /// indexed as incomplete. Returns every index line of the session.
    fn close(mut self) -> Vec<IndexEntry> {
        self.handles.clear();
        self.dirs.clear();
        self.index.close()
    }
}

fn ok(id: u32) -> Response {
    Response::Status {
        id,
        code: StatusCode::Ok,
        message: "Success".to_owned(),
    }
}

fn bad_handle() -> Refusal {
    Refusal::failure("invalid handle".to_owned())
}

fn unsupported(what: &str) -> Refusal {
    Refusal(
        StatusCode::OpUnsupported,
        format!("{what} is not supported by rkdump receive"),
    )
}

/// Whether a file name marks an unfinished transfer, which may be reopened to resume it.
fn is_incomplete(path: &Path) -> bool {
    path.file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| name.contains("-incomplete"))
}

fn attrs_of(meta: &std::fs::Metadata) -> Attrs {
    Attrs {
        size: Some(meta.len()),
        uid_gid: Some((meta.uid(), meta.gid())),
        permissions: Some(meta.mode()),
        times: Some((clamp_time(meta.atime()), clamp_time(meta.mtime()))),
        extended: Vec::new(),
    }
}

/// User and group names of the owners listed in one answer, looked up once each.
#[derive(Debug, Default)]
struct Owners {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Owners {
    /// The names of `uid` and `gid` (their numbers when they have none).
    fn of(&mut self, uid: u32, gid: u32) -> (String, String) {
        use nix::unistd::{Gid, Group, Uid, User};
        let user = self
            .users
            .entry(uid)
            .or_insert_with(|| match User::from_uid(Uid::from_raw(uid)) {
                Ok(Some(user)) => user.name,
                _ => uid.to_string(),
            })
            .clone();
        let group = self
            .groups
            .entry(gid)
            .or_insert_with(|| match Group::from_gid(Gid::from_raw(gid)) {
                Ok(Some(group)) => group.name,
                _ => gid.to_string(),
            })
            .clone();
        (user, group)
    }
}

/// A time for SFTP version 3's 32-bit fields.
fn clamp_time(seconds: i64) -> u32 {
    u32::try_from(seconds.max(0)).unwrap_or(u32::MAX)
}

/// Splits `SSH_CONNECTION` (`client-ip client-port server-ip server-port`) into the client's
/// address.
pub fn client_address(ssh_connection: Option<&str>) -> String {
    ssh_connection
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("unknown")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::index::INDEX_NAME;
    use super::*;
    use crate::format::manifest::Manifest;

    struct Client {
        session: Session,
        next_id: u32,
    }

    impl Client {
        fn new(options: &ReceiveOptions) -> Self {
            Self {
                session: Session::open(options).unwrap(),
                next_id: 0,
            }
        }

        fn id(&mut self) -> u32 {
            self.next_id += 1;
            self.next_id
        }

        fn status(&mut self, request: Request) -> (StatusCode, String) {
            match self.session.handle(request) {
                Response::Status { code, message, .. } => (code, message),
                other => panic!("not a status: {other:?}"),
            }
        }

        fn mkdir(&mut self, path: &str) -> (StatusCode, String) {
            let id = self.id();
            self.status(Request::Mkdir {
                id,
                path: path.as_bytes().to_vec(),
                attrs: Attrs::default(),
            })
        }

        fn open(&mut self, path: &str, flags: u32) -> Result<Vec<u8>, (StatusCode, String)> {
            let id = self.id();
            match self.session.handle(Request::Open {
                id,
                path: path.as_bytes().to_vec(),
                flags,
                attrs: Attrs::default(),
            }) {
                Response::Handle { handle, .. } => Ok(handle),
                Response::Status { code, message, .. } => Err((code, message)),
                other => panic!("{other:?}"),
            }
        }

        fn write(&mut self, handle: &[u8], offset: u64, data: &[u8]) -> (StatusCode, String) {
            let id = self.id();
            self.status(Request::Write {
                id,
                handle: handle.to_vec(),
                offset,
                data: data.to_vec(),
            })
        }

        fn rename(&mut self, from: &str, to: &str) -> (StatusCode, String) {
            let id = self.id();
            self.status(Request::TwoPaths {
                kind: TwoPathRequest::Rename,
                id,
                first: from.as_bytes().to_vec(),
                second: to.as_bytes().to_vec(),
            })
        }

        fn open_dir(&mut self, path: &str) -> Result<Vec<u8>, (StatusCode, String)> {
            let id = self.id();
            match self.session.handle(Request::Path {
                kind: PathRequest::Opendir,
                id,
                path: path.as_bytes().to_vec(),
            }) {
                Response::Handle { handle, .. } => Ok(handle),
                Response::Status { code, message, .. } => Err((code, message)),
                other => panic!("{other:?}"),
            }
        }

        /// One `SSH_FXP_READDIR`: its entries, or the status.
        fn read_dir(&mut self, handle: &[u8]) -> Result<Vec<NameEntry>, (StatusCode, String)> {
            let id = self.id();
            match self.session.handle(Request::Handle {
                kind: HandleRequest::Readdir,
                id,
                handle: handle.to_vec(),
            }) {
                Response::Name {
                    id: answered,
                    entries,
                } => {
                    assert_eq!(answered, id);
                    Ok(entries)
                }
                Response::Status { code, message, .. } => Err((code, message)),
                other => panic!("{other:?}"),
            }
        }

        fn close(&mut self, handle: &[u8]) -> (StatusCode, String) {
            let id = self.id();
            self.status(Request::Close {
                id,
                handle: handle.to_vec(),
            })
        }

        /// Every entry of `path` by READDIR until EOF (at most 100 batches), and the batch
        /// sizes; the handle is closed.
        fn list(&mut self, path: &str) -> (Vec<NameEntry>, Vec<usize>) {
            let handle = self.open_dir(path).unwrap();
            let (mut all, mut batches) = (Vec::new(), Vec::new());
            for _ in 0..100 {
                match self.read_dir(&handle) {
                    Ok(entries) => {
                        batches.push(entries.len());
                        all.extend(entries);
                    }
                    Err((code, _)) => {
                        assert_eq!(code, StatusCode::Eof);
                        assert_eq!(self.close(&handle).0, StatusCode::Ok);
                        all.sort_by(|a, b| a.filename.cmp(&b.filename));
                        return (all, batches);
                    }
                }
            }
            panic!("no end of {path}");
        }

        fn put(&mut self, path: &str, data: &[u8]) {
            let handle = self.open(path, OPEN_WRITE | OPEN_CREATE).unwrap();
            assert_eq!(self.write(&handle, 0, data).0, StatusCode::Ok);
        }
    }

    fn options(root: &Path) -> ReceiveOptions {
        ReceiveOptions {
            root: root.to_owned(),
            client: "web01".to_owned(),
            from: "192.0.2.7".to_owned(),
            reserve: 0,
            quota: None,
        }
    }

    #[test]
    fn a_dump_is_created_verified_and_indexed() {
        let root = tempfile::tempdir().unwrap();
        let options = options(root.path());
        let mut client = Client::new(&options);
        assert_eq!(client.mkdir("/d").0, StatusCode::Ok);
        client.put("/d/vmcore-incomplete", b"dump bytes");
        assert_eq!(
            client.rename("/d/vmcore-incomplete", "/d/vmcore").0,
            StatusCode::Ok
        );
        let mut manifest = Manifest::new(4096);
        manifest.add_bytes("vmcore", b"dump bytes");
        client.put("/d/rkdump-manifest-incomplete.json", &manifest.encode());
        assert_eq!(
            client
                .rename(
                    "/d/rkdump-manifest-incomplete.json",
                    "/d/rkdump-manifest.json"
                )
                .0,
            StatusCode::Ok
        );
        let entries = client.session.close();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].status, "verified");
        assert_eq!(entries[0].dump, "web01/d");
        let index = std::fs::read_to_string(root.path().join(INDEX_NAME)).unwrap();
        assert_eq!(index.lines().count(), 1);
        assert!(index.contains("\"status\":\"verified\""), "{index}");
    }

    #[test]
    fn complete_files_are_never_overwritten_or_removed() {
        let root = tempfile::tempdir().unwrap();
        let options = options(root.path());
        let mut client = Client::new(&options);
        client.put("/vmcore", b"first");
        let (code, message) = client
            .open("/vmcore", OPEN_WRITE | OPEN_TRUNCATE)
            .unwrap_err();
        assert_eq!(code, StatusCode::PermissionDenied);
        assert!(message.contains("never overwritten"), "{message}");
        client.put("/other", b"second");
        assert_eq!(
            client.rename("/other", "/vmcore").0,
            StatusCode::PermissionDenied
        );
        let id = client.id();
        let (code, _) = client.status(Request::Path {
            kind: PathRequest::Remove,
            id,
            path: b"/vmcore".to_vec(),
        });
        assert_eq!(code, StatusCode::PermissionDenied);
        assert_eq!(
            std::fs::read(root.path().join("web01/vmcore")).unwrap(),
            b"first"
        );
        // An incomplete file may be reopened to resume.
        client.put("/vmcore-incomplete", b"abc");
        let handle = client.open("/vmcore-incomplete", OPEN_WRITE).unwrap();
        assert_eq!(client.write(&handle, 3, b"def").0, StatusCode::Ok);
        assert_eq!(
            std::fs::read(root.path().join("web01/vmcore-incomplete")).unwrap(),
            b"abcdef"
        );
    }

    #[test]
    fn the_quota_stops_writes_with_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let mut options = options(root.path());
        options.quota = Some(10);
        let mut client = Client::new(&options);
        let handle = client
            .open("/vmcore-incomplete", OPEN_WRITE | OPEN_CREATE)
            .unwrap();
        assert_eq!(client.write(&handle, 0, b"12345678").0, StatusCode::Ok);
        let (code, message) = client.write(&handle, 8, b"90ab");
        assert_eq!(code, StatusCode::Failure);
        assert!(
            message.contains("quota of 10 bytes for client web01"),
            "{message}"
        );
        // Rewriting bytes already held does not grow the usage.
        assert_eq!(client.write(&handle, 0, b"xx").0, StatusCode::Ok);
        let entries = client.session.close();
        assert_eq!(entries[0].status, "incomplete");
        assert_eq!(entries[0].bytes, 8);
    }

    #[test]
    fn a_write_whose_growth_overflows_the_usage_is_over_quota() {
        let root = tempfile::tempdir().unwrap();
        let mut options = options(root.path());
        options.quota = Some(u64::MAX);
        let mut client = Client::new(&options);
        client.put("/other", b"12345678");
        let handle = client
            .open("/vmcore-incomplete", OPEN_WRITE | OPEN_CREATE)
            .unwrap();
        // 8 bytes held, and a write growing an empty file to u64::MAX - 2: together more
        // than a u64 (wrapped, they would be 5 bytes, within the quota).
        let (code, message) = client.write(&handle, u64::MAX - 6, b"abcd");
        assert_eq!(code, StatusCode::Failure);
        assert!(message.contains("quota of"), "{message}");
    }

    #[test]
    fn a_directory_is_listed_with_its_entries_then_eof() {
        let root = tempfile::tempdir().unwrap();
        let options = options(root.path());
        let mut client = Client::new(&options);
        assert_eq!(client.mkdir("/d").0, StatusCode::Ok);
        assert_eq!(client.mkdir("/d/sub").0, StatusCode::Ok);
        client.put("/d/vmcore-incomplete", b"dump bytes");
        client.put("/d/note.txt", b"x");
        let (entries, batches) = client.list("/d");
        assert_eq!(batches, [3]);
        let names: Vec<&[u8]> = entries.iter().map(|e| &e.filename[..]).collect();
        assert_eq!(names, [&b"note.txt"[..], b"sub", b"vmcore-incomplete"]);
        let dump = &entries[2];
        assert_eq!(dump.attrs.size, Some(10));
        assert_eq!(
            dump.attrs.permissions.map(|m| m & 0o170_777),
            Some(0o100_600)
        );
        let longname = String::from_utf8(dump.longname.clone()).unwrap();
        assert!(longname.starts_with("-rw------- "), "{longname}");
        assert!(longname.ends_with(" vmcore-incomplete"), "{longname}");
        assert!(longname.split_whitespace().any(|w| w == "10"), "{longname}");
        assert!(entries[1].longname.starts_with(b"drwx------ "));
        // The client's own directory is `/`; `.` and `..` are not listed.
        let (entries, _) = client.list("/");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].filename, b"d");
        // EOF again after the end; a closed handle is gone.
        let handle = client.open_dir("/d/sub").unwrap();
        assert_eq!(client.read_dir(&handle).unwrap_err().0, StatusCode::Eof);
        assert_eq!(client.read_dir(&handle).unwrap_err().0, StatusCode::Eof);
        assert_eq!(client.close(&handle).0, StatusCode::Ok);
        let (code, message) = client.read_dir(&handle).unwrap_err();
        assert_eq!(code, StatusCode::Failure);
        assert!(message.contains("invalid handle"), "{message}");
        assert_eq!(client.close(&handle).0, StatusCode::Failure);
        // A file is not a directory, a directory handle not a file.
        assert_eq!(
            client.open_dir("/d/note.txt").unwrap_err().0,
            StatusCode::Failure
        );
        assert_eq!(
            client.open_dir("/none").unwrap_err().0,
            StatusCode::NoSuchFile
        );
        let handle = client.open_dir("/d").unwrap();
        let id = client.id();
        assert!(matches!(
            client.session.handle(Request::Read {
                id,
                handle: handle.clone(),
                offset: 0,
                len: 10
            }),
            Response::Status {
                code: StatusCode::Failure,
                ..
            }
        ));
        assert_eq!(client.write(&handle, 0, b"x").0, StatusCode::Failure);
    }

    #[test]
    fn a_large_directory_comes_in_batches_of_100() {
        let root = tempfile::tempdir().unwrap();
        let options = options(root.path());
        let mut client = Client::new(&options);
        assert_eq!(client.mkdir("/d").0, StatusCode::Ok);
        for i in 0..250 {
            std::fs::write(root.path().join(format!("web01/d/f{i:03}")), b"").unwrap();
        }
        let (entries, batches) = client.list("/d");
        assert_eq!(batches, [100, 100, 50]);
        let names: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8(e.filename.clone()).unwrap())
            .collect();
        let expected: Vec<String> = (0..250).map(|i| format!("f{i:03}")).collect();
        assert_eq!(names, expected);
        // Every batch fits in a packet the client accepts.
        let handle = client.open_dir("/d").unwrap();
        let entries = client.read_dir(&handle).unwrap();
        let packet = Response::Name { id: 1, entries }.encode();
        assert!(packet.len() < sftp::MAX_PACKET, "{}", packet.len());
    }

    #[test]
    fn open_directories_are_limited_and_a_closed_one_frees_its_place() {
        let root = tempfile::tempdir().unwrap();
        let options = options(root.path());
        let mut client = Client::new(&options);
        let handles: Vec<Vec<u8>> = (0..MAX_DIR_HANDLES)
            .map(|_| client.open_dir("/").unwrap())
            .collect();
        let (code, message) = client.open_dir("/").unwrap_err();
        assert_eq!(code, StatusCode::Failure);
        assert!(
            message.contains("more than 16 open directories"),
            "{message}"
        );
        // Files are counted apart.
        client.put("/f", b"x");
        assert_eq!(client.close(&handles[3]).0, StatusCode::Ok);
        let again = client.open_dir("/").unwrap();
        assert!(!handles.contains(&again));
        assert!(client.open_dir("/").is_err());
    }

    #[test]
    fn listing_never_leaves_the_clients_directory_or_follows_a_link() {
        let root = tempfile::tempdir().unwrap();
        let options = options(root.path());
        let mut client = Client::new(&options);
        assert_eq!(client.mkdir("/d").0, StatusCode::Ok);
        std::fs::write(root.path().join("secret"), b"outside").unwrap();
        for path in ["/..", "/d/..", "../", "/d/../..", ".."] {
            let (code, message) = client.open_dir(path).unwrap_err();
            assert_eq!(code, StatusCode::PermissionDenied, "{path}");
            assert!(
                message.contains("leave the client's directory"),
                "{message}"
            );
        }
        // A link an administrator made, to outside and to inside: refused as a directory,
        // listed as the link it is (lstat), never as its target.
        std::os::unix::fs::symlink(root.path(), root.path().join("web01/out")).unwrap();
        std::os::unix::fs::symlink("d", root.path().join("web01/in")).unwrap();
        for path in ["/out", "/out/", "/in", "/out/web01"] {
            let (code, message) = client.open_dir(path).unwrap_err();
            assert_eq!(code, StatusCode::PermissionDenied, "{path}");
            assert!(message.contains("symbolic links"), "{message}");
        }
        let (entries, _) = client.list("/");
        let names: Vec<&[u8]> = entries.iter().map(|e| &e.filename[..]).collect();
        assert_eq!(names, [&b"d"[..], b"in", b"out"]);
        for link in &entries[1..] {
            assert_eq!(
                link.attrs.permissions.map(|m| m & 0o170_000),
                Some(0o120_000)
            );
            assert!(link.longname.starts_with(b"l"), "{:?}", link.longname);
        }
        assert!(!entries.iter().any(|e| e.filename == b"secret"));
    }

    #[test]
    fn the_free_space_reserve_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let mut options = options(root.path());
        options.reserve = u64::MAX / 2;
        let mut client = Client::new(&options);
        let handle = client
            .open("/vmcore-incomplete", OPEN_WRITE | OPEN_CREATE)
            .unwrap();
        let (code, message) = client.write(&handle, 0, b"x");
        assert_eq!(code, StatusCode::Failure);
        assert!(message.contains("free-space reserve"), "{message}");
    }

    #[test]
    fn a_session_over_a_byte_stream() {
        let root = tempfile::tempdir().unwrap();
        let options = options(root.path());
        let mut input = Request::Init { version: 3 }.encode();
        input.extend(
            Request::Mkdir {
                id: 1,
                path: b"/x".to_vec(),
                attrs: Attrs::default(),
            }
            .encode(),
        );
        let mut output = Vec::new();
        serve(&options, &input[..], &mut output).unwrap();
        let (first, used) = sftp::split_packet(&output).unwrap().unwrap();
        assert!(matches!(
            Response::decode(first).unwrap(),
            Response::Version { version: 3, .. }
        ));
        let (second, _) = sftp::split_packet(&output[used..]).unwrap().unwrap();
        assert!(matches!(
            Response::decode(second).unwrap(),
            Response::Status {
                id: 1,
                code: StatusCode::Ok,
                ..
            }
        ));
        assert!(root.path().join("web01/x").is_dir());
    }

    fn any_path() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![
                Just(b"..".to_vec()),
                Just(b".".to_vec()),
                Just(Vec::new()),
                Just(b"d".to_vec()),
                Just(b"vmcore-incomplete".to_vec()),
                Just(b"rkdump-manifest.json".to_vec()),
                proptest::collection::vec(any::<u8>(), 1..4),
            ],
            0..5,
        )
        .prop_map(|parts| parts.join(&b'/'))
    }

    proptest::proptest! {
        /// Whatever a client sends, the session answers without panicking and writes nothing
        /// outside the client's directory except the index.
        #[test]
        fn nothing_escapes_the_clients_directory(
            requests in proptest::collection::vec(
                (0u8..8, any_path(), any_path(), 0u64..64, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8)),
                0..30,
            ),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let root = tempfile::tempdir().unwrap();
            let options = options(root.path());
            let mut input = Request::Init { version: 3 }.encode();
            for (i, (kind, a, b, offset, data)) in requests.into_iter().enumerate() {
                let id = u32::try_from(i).unwrap();
                let request = match kind {
                    0 => Request::Mkdir { id, path: a, attrs: Attrs::default() },
                    1 => Request::Open { id, path: a, flags: OPEN_WRITE | OPEN_CREATE | u32::try_from(offset & u64::from(OPEN_TRUNCATE)).unwrap(), attrs: Attrs::default() },
                    2 => Request::Write { id, handle: (offset % 4).to_string().into_bytes(), offset, data },
                    3 => Request::TwoPaths { kind: TwoPathRequest::Rename, id, first: a, second: b },
                    4 => Request::Close { id, handle: (offset % 4).to_string().into_bytes() },
                    5 => Request::Path { kind: PathRequest::Opendir, id, path: a },
                    6 => Request::Handle { kind: HandleRequest::Readdir, id, handle: (offset % 4).to_string().into_bytes() },
                    _ => Request::Path { kind: PathRequest::Remove, id, path: a },
                };
                input.extend(request.encode());
            }
            input.extend(garbage);
            let mut output = Vec::new();
            let _ = serve(&options, &input[..], &mut output);
            for entry in std::fs::read_dir(root.path()).unwrap() {
                let name = entry.unwrap().file_name();
                proptest::prop_assert!(name == "web01" || name == INDEX_NAME, "{name:?}");
            }
        }
    }
}
