//! The SSH File Transfer Protocol, version 3 (draft-ietf-secsh-filexfer-02, the version
//! OpenSSH speaks), both directions.
//!
//! rkdump's ssh target is an SFTP client ([`Request`] out, [`Response`] in) and
//! `rkdump receive` an SFTP server (the reverse), so both ends share this codec. Every packet
//! is `uint32 length, byte type, payload`, big-endian; strings are `uint32 length, bytes`.
//! Besides the base protocol, the OpenSSH extensions `fsync@openssh.com`,
//! `posix-rename@openssh.com` and `statvfs@openssh.com` travel as [`Request::Extended`].

/// Largest packet accepted (OpenSSH's sftp-server limit, `SFTP_MAX_MSG_LENGTH`).
pub const MAX_PACKET: usize = 256 * 1024;
/// Protocol version spoken.
pub const VERSION: u32 = 3;

/// `SSH_FXF_READ`.
pub const OPEN_READ: u32 = 0x01;
/// `SSH_FXF_WRITE`.
pub const OPEN_WRITE: u32 = 0x02;
/// `SSH_FXF_APPEND`.
pub const OPEN_APPEND: u32 = 0x04;
/// `SSH_FXF_CREAT`.
pub const OPEN_CREATE: u32 = 0x08;
/// `SSH_FXF_TRUNC`.
pub const OPEN_TRUNCATE: u32 = 0x10;

/// The `fsync@openssh.com` extension: `string handle`.
pub const EXT_FSYNC: &str = "fsync@openssh.com";
/// The `posix-rename@openssh.com` extension: `string old, string new`.
pub const EXT_POSIX_RENAME: &str = "posix-rename@openssh.com";
/// The `statvfs@openssh.com` extension: `string path`.
pub const EXT_STATVFS: &str = "statvfs@openssh.com";

/// Why bytes are not an SFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SftpError {
    /// The length field exceeds [`MAX_PACKET`].
    #[error("SFTP packet of {0} bytes is larger than the {MAX_PACKET} accepted")]
    TooLarge(usize),
    /// A field runs past the end of the packet.
    #[error("SFTP packet type {0} is truncated")]
    Truncated(u8),
    /// Bytes left over after the last field.
    #[error("SFTP packet type {0} has {1} bytes after its last field")]
    Trailing(u8, usize),
    /// A packet type this side does not expect.
    #[error("unexpected SFTP packet type {0}")]
    UnknownType(u8),
    /// An empty packet (no type byte).
    #[error("empty SFTP packet")]
    Empty,
}

/// `SSH_FX_*` status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum StatusCode {
    /// Success.
    Ok = 0,
    /// End of file.
    Eof = 1,
    /// No such file or directory.
    NoSuchFile = 2,
    /// Permission denied.
    PermissionDenied = 3,
    /// Any other failure.
    Failure = 4,
    /// A malformed packet.
    BadMessage = 5,
    /// No connection.
    NoConnection = 6,
    /// Connection lost.
    ConnectionLost = 7,
    /// Operation not supported.
    OpUnsupported = 8,
}

impl StatusCode {
    /// The code of a raw value; unknown values read as `Failure`.
    pub fn from_u32(value: u32) -> Self {
        match value {
            0 => Self::Ok,
            1 => Self::Eof,
            2 => Self::NoSuchFile,
            3 => Self::PermissionDenied,
            5 => Self::BadMessage,
            6 => Self::NoConnection,
            7 => Self::ConnectionLost,
            8 => Self::OpUnsupported,
            _ => Self::Failure,
        }
    }
}

/// File attributes (`ATTRS`); absent fields are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Owner and group ids.
    pub uid_gid: Option<(u32, u32)>,
    /// Mode bits (type and permissions).
    pub permissions: Option<u32>,
    /// Access and modification times.
    pub times: Option<(u32, u32)>,
    /// Extended attributes.
    pub extended: Vec<(Vec<u8>, Vec<u8>)>,
}

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// A packet from client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `SSH_FXP_INIT`.
    Init {
        /// Highest version the client speaks.
        version: u32,
    },
    /// `SSH_FXP_OPEN`.
    Open {
        /// Request id.
        id: u32,
        /// Path.
        path: Vec<u8>,
        /// `OPEN_*` flags.
        flags: u32,
        /// Attributes for a created file.
        attrs: Attrs,
    },
    /// `SSH_FXP_CLOSE`.
    Close {
        /// Request id.
        id: u32,
        /// Handle.
        handle: Vec<u8>,
    },
    /// `SSH_FXP_READ`.
    Read {
        /// Request id.
        id: u32,
        /// Handle.
        handle: Vec<u8>,
        /// File offset.
        offset: u64,
        /// Bytes wanted.
        len: u32,
    },
    /// `SSH_FXP_WRITE`.
    Write {
        /// Request id.
        id: u32,
        /// Handle.
        handle: Vec<u8>,
        /// File offset.
        offset: u64,
        /// Bytes to write.
        data: Vec<u8>,
    },
    /// `SSH_FXP_LSTAT`, `SSH_FXP_STAT`, `SSH_FXP_OPENDIR`, `SSH_FXP_REMOVE`, `SSH_FXP_RMDIR`,
    /// `SSH_FXP_REALPATH` or `SSH_FXP_READLINK`: one path.
    Path {
        /// Which of them.
        kind: PathRequest,
        /// Request id.
        id: u32,
        /// Path.
        path: Vec<u8>,
    },
    /// `SSH_FXP_FSTAT` or `SSH_FXP_READDIR`: one handle.
    Handle {
        /// Which of them (`Fstat` or `Readdir`).
        kind: HandleRequest,
        /// Request id.
        id: u32,
        /// Handle.
        handle: Vec<u8>,
    },
    /// `SSH_FXP_SETSTAT`.
    Setstat {
        /// Request id.
        id: u32,
        /// Path.
        path: Vec<u8>,
        /// Attributes to set.
        attrs: Attrs,
    },
    /// `SSH_FXP_FSETSTAT`.
    Fsetstat {
        /// Request id.
        id: u32,
        /// Handle.
        handle: Vec<u8>,
        /// Attributes to set.
        attrs: Attrs,
    },
    /// `SSH_FXP_MKDIR`.
    Mkdir {
        /// Request id.
        id: u32,
        /// Path.
        path: Vec<u8>,
        /// Attributes of the new directory.
        attrs: Attrs,
    },
    /// `SSH_FXP_RENAME` or `SSH_FXP_SYMLINK`: two paths.
    TwoPaths {
        /// Which of them.
        kind: TwoPathRequest,
        /// Request id.
        id: u32,
        /// First path (rename: old; symlink: link path as OpenSSH orders it).
        first: Vec<u8>,
        /// Second path.
        second: Vec<u8>,
    },
    /// `SSH_FXP_EXTENDED`.
    Extended {
        /// Request id.
        id: u32,
        /// Extension name.
        name: Vec<u8>,
        /// The rest of the packet.
        data: Vec<u8>,
    },
}

/// Requests made of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRequest {
    /// `SSH_FXP_LSTAT`.
    Lstat,
    /// `SSH_FXP_OPENDIR`.
    Opendir,
    /// `SSH_FXP_REMOVE`.
    Remove,
    /// `SSH_FXP_RMDIR`.
    Rmdir,
    /// `SSH_FXP_REALPATH`.
    Realpath,
    /// `SSH_FXP_STAT`.
    Stat,
    /// `SSH_FXP_READLINK`.
    Readlink,
}

/// Requests made of one handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleRequest {
    /// `SSH_FXP_FSTAT`.
    Fstat,
    /// `SSH_FXP_READDIR`.
    Readdir,
}

/// Requests made of two paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwoPathRequest {
    /// `SSH_FXP_RENAME`.
    Rename,
    /// `SSH_FXP_SYMLINK`.
    Symlink,
}

/// One entry of a `SSH_FXP_NAME` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// File name.
    pub filename: Vec<u8>,
    /// `ls -l` style line.
    pub longname: Vec<u8>,
    /// Attributes.
    pub attrs: Attrs,
}

/// A packet from server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `SSH_FXP_VERSION`.
    Version {
        /// Version the server speaks.
        version: u32,
        /// Extensions: name and data.
        extensions: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// `SSH_FXP_STATUS`.
    Status {
        /// Request id.
        id: u32,
        /// Status code.
        code: StatusCode,
        /// Message for humans.
        message: String,
    },
    /// `SSH_FXP_HANDLE`.
    Handle {
        /// Request id.
        id: u32,
        /// Handle.
        handle: Vec<u8>,
    },
    /// `SSH_FXP_DATA`.
    Data {
        /// Request id.
        id: u32,
        /// Bytes read.
        data: Vec<u8>,
    },
    /// `SSH_FXP_NAME`.
    Name {
        /// Request id.
        id: u32,
        /// Entries.
        entries: Vec<NameEntry>,
    },
    /// `SSH_FXP_ATTRS`.
    Attrs {
        /// Request id.
        id: u32,
        /// Attributes.
        attrs: Attrs,
    },
    /// `SSH_FXP_EXTENDED_REPLY`.
    ExtendedReply {
        /// Request id.
        id: u32,
        /// Extension-specific data.
        data: Vec<u8>,
    },
}

impl Response {
    /// The request id answered (0 for `Version`).
    pub fn id(&self) -> u32 {
        match self {
            Self::Version { .. } => 0,
            Self::Status { id, .. }
            | Self::Handle { id, .. }
            | Self::Data { id, .. }
            | Self::Name { id, .. }
            | Self::Attrs { id, .. }
            | Self::ExtendedReply { id, .. } => *id,
        }
    }
}

mod ty {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// Splits the first whole packet off `buffer`: `Ok(Some((payload, consumed)))` once its bytes
/// are all there, `Ok(None)` while more are needed.
pub fn split_packet(buffer: &[u8]) -> Result<Option<(&[u8], usize)>, SftpError> {
    let Some(len) = buffer.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > MAX_PACKET + 1024 {
        return Err(SftpError::TooLarge(len));
    }
    if len == 0 {
        return Err(SftpError::Empty);
    }
    Ok(buffer.get(4..4 + len).map(|payload| (payload, 4 + len)))
}

/// Reads big-endian fields off a packet payload.
struct Fields<'a> {
    bytes: &'a [u8],
    kind: u8,
}

impl<'a> Fields<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], SftpError> {
        if self.bytes.len() < len {
            return Err(SftpError::Truncated(self.kind));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, SftpError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, SftpError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<Vec<u8>, SftpError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    fn attrs(&mut self) -> Result<Attrs, SftpError> {
        let flags = self.u32()?;
        let mut attrs = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            attrs.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            attrs.uid_gid = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            attrs.permissions = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            attrs.times = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            let count = self.u32()?;
            for _ in 0..count {
                attrs.extended.push((self.string()?, self.string()?));
            }
        }
        Ok(attrs)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn end(self) -> Result<(), SftpError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(SftpError::Trailing(self.kind, self.bytes.len()))
        }
    }
}

/// Builds one packet: the length is filled in by [`Packet::finish`].
struct Packet(Vec<u8>);

impl Packet {
    fn new(kind: u8) -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&[0, 0, 0, 0, kind]);
        Self(bytes)
    }

    fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn string(self, value: &[u8]) -> Self {
        let mut packet = self.u32(field_len(value.len()));
        packet.0.extend_from_slice(value);
        packet
    }

    fn raw(mut self, value: &[u8]) -> Self {
        self.0.extend_from_slice(value);
        self
    }

    fn attrs(self, attrs: &Attrs) -> Self {
        let flags = [
            (attrs.size.is_some(), ATTR_SIZE),
            (attrs.uid_gid.is_some(), ATTR_UIDGID),
            (attrs.permissions.is_some(), ATTR_PERMISSIONS),
            (attrs.times.is_some(), ATTR_ACMODTIME),
            (!attrs.extended.is_empty(), ATTR_EXTENDED),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .fold(0, |flags, (_, bit)| flags | bit);
        let mut packet = self.u32(flags);
        if let Some(size) = attrs.size {
            packet = packet.u64(size);
        }
        if let Some((uid, gid)) = attrs.uid_gid {
            packet = packet.u32(uid).u32(gid);
        }
        if let Some(mode) = attrs.permissions {
            packet = packet.u32(mode);
        }
        if let Some((atime, mtime)) = attrs.times {
            packet = packet.u32(atime).u32(mtime);
        }
        if !attrs.extended.is_empty() {
            packet = packet.u32(field_len(attrs.extended.len()));
            for (name, data) in &attrs.extended {
                packet = packet.string(name).string(data);
            }
        }
        packet
    }

    fn finish(mut self) -> Vec<u8> {
        let len = field_len(self.0.len() - 4);
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

impl Request {
    /// The request id (0 for `Init`).
    pub fn id(&self) -> u32 {
        match self {
            Self::Init { .. } => 0,
            Self::Open { id, .. }
            | Self::Close { id, .. }
            | Self::Read { id, .. }
            | Self::Write { id, .. }
            | Self::Path { id, .. }
            | Self::Handle { id, .. }
            | Self::Setstat { id, .. }
            | Self::Fsetstat { id, .. }
            | Self::Mkdir { id, .. }
            | Self::TwoPaths { id, .. }
            | Self::Extended { id, .. } => *id,
        }
    }

    /// The packet, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Init { version } => Packet::new(ty::INIT).u32(*version),
            Self::Open {
                id,
                path,
                flags,
                attrs,
            } => Packet::new(ty::OPEN)
                .u32(*id)
                .string(path)
                .u32(*flags)
                .attrs(attrs),
            Self::Close { id, handle } => Packet::new(ty::CLOSE).u32(*id).string(handle),
            Self::Read {
                id,
                handle,
                offset,
                len,
            } => Packet::new(ty::READ)
                .u32(*id)
                .string(handle)
                .u64(*offset)
                .u32(*len),
            Self::Write {
                id,
                handle,
                offset,
                data,
            } => Packet::new(ty::WRITE)
                .u32(*id)
                .string(handle)
                .u64(*offset)
                .string(data),
            Self::Path { kind, id, path } => {
                let kind = match kind {
                    PathRequest::Lstat => ty::LSTAT,
                    PathRequest::Opendir => ty::OPENDIR,
                    PathRequest::Remove => ty::REMOVE,
                    PathRequest::Rmdir => ty::RMDIR,
                    PathRequest::Realpath => ty::REALPATH,
                    PathRequest::Stat => ty::STAT,
                    PathRequest::Readlink => ty::READLINK,
                };
                Packet::new(kind).u32(*id).string(path)
            }
            Self::Handle { kind, id, handle } => {
                let kind = match kind {
                    HandleRequest::Fstat => ty::FSTAT,
                    HandleRequest::Readdir => ty::READDIR,
                };
                Packet::new(kind).u32(*id).string(handle)
            }
            Self::Setstat { id, path, attrs } => {
                Packet::new(ty::SETSTAT).u32(*id).string(path).attrs(attrs)
            }
            Self::Fsetstat { id, handle, attrs } => Packet::new(ty::FSETSTAT)
                .u32(*id)
                .string(handle)
                .attrs(attrs),
            Self::Mkdir { id, path, attrs } => {
                Packet::new(ty::MKDIR).u32(*id).string(path).attrs(attrs)
            }
            Self::TwoPaths {
                kind,
                id,
                first,
                second,
            } => {
                let kind = match kind {
                    TwoPathRequest::Rename => ty::RENAME,
                    TwoPathRequest::Symlink => ty::SYMLINK,
                };
                Packet::new(kind).u32(*id).string(first).string(second)
            }
            Self::Extended { id, name, data } => {
                Packet::new(ty::EXTENDED).u32(*id).string(name).raw(data)
            }
        }
        .finish()
    }

    /// Decodes a packet payload (type byte first, length prefix removed).
    pub fn decode(payload: &[u8]) -> Result<Self, SftpError> {
        let (&kind, rest) = payload.split_first().ok_or(SftpError::Empty)?;
        let mut f = Fields { bytes: rest, kind };
        let path_kind = |kind| match kind {
            ty::LSTAT => Some(PathRequest::Lstat),
            ty::OPENDIR => Some(PathRequest::Opendir),
            ty::REMOVE => Some(PathRequest::Remove),
            ty::RMDIR => Some(PathRequest::Rmdir),
            ty::REALPATH => Some(PathRequest::Realpath),
            ty::STAT => Some(PathRequest::Stat),
            ty::READLINK => Some(PathRequest::Readlink),
            _ => None,
        };
        let request = match kind {
            ty::INIT => {
                let version = f.u32()?;
                // Extension pairs may follow; version 3 clients send none that matter here.
                f.rest();
                Self::Init { version }
            }
            ty::OPEN => Self::Open {
                id: f.u32()?,
                path: f.string()?,
                flags: f.u32()?,
                attrs: f.attrs()?,
            },
            ty::CLOSE => Self::Close {
                id: f.u32()?,
                handle: f.string()?,
            },
            ty::READ => Self::Read {
                id: f.u32()?,
                handle: f.string()?,
                offset: f.u64()?,
                len: f.u32()?,
            },
            ty::WRITE => Self::Write {
                id: f.u32()?,
                handle: f.string()?,
                offset: f.u64()?,
                data: f.string()?,
            },
            ty::FSTAT | ty::READDIR => Self::Handle {
                kind: if kind == ty::FSTAT {
                    HandleRequest::Fstat
                } else {
                    HandleRequest::Readdir
                },
                id: f.u32()?,
                handle: f.string()?,
            },
            ty::SETSTAT => Self::Setstat {
                id: f.u32()?,
                path: f.string()?,
                attrs: f.attrs()?,
            },
            ty::FSETSTAT => Self::Fsetstat {
                id: f.u32()?,
                handle: f.string()?,
                attrs: f.attrs()?,
            },
            ty::MKDIR => Self::Mkdir {
                id: f.u32()?,
                path: f.string()?,
                attrs: f.attrs()?,
            },
            ty::RENAME | ty::SYMLINK => Self::TwoPaths {
                kind: if kind == ty::RENAME {
                    TwoPathRequest::Rename
                } else {
                    TwoPathRequest::Symlink
                },
                id: f.u32()?,
                first: f.string()?,
                second: f.string()?,
            },
            ty::EXTENDED => Self::Extended {
                id: f.u32()?,
                name: f.string()?,
                data: f.rest().to_vec(),
            },
            other => match path_kind(other) {
                Some(kind) => Self::Path {
                    kind,
                    id: f.u32()?,
                    path: f.string()?,
                },
                None => return Err(SftpError::UnknownType(other)),
            },
        };
        f.end()?;
        Ok(request)
    }
}

impl Response {
    /// The packet, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Version {
                version,
                extensions,
            } => extensions
                .iter()
                .fold(Packet::new(ty::VERSION).u32(*version), |p, (name, data)| {
                    p.string(name).string(data)
                }),
            Self::Status { id, code, message } => Packet::new(ty::STATUS)
                .u32(*id)
                .u32(*code as u32)
                .string(message.as_bytes())
                .string(b""),
            Self::Handle { id, handle } => Packet::new(ty::HANDLE).u32(*id).string(handle),
            Self::Data { id, data } => Packet::new(ty::DATA).u32(*id).string(data),
            Self::Name { id, entries } => entries.iter().fold(
                Packet::new(ty::NAME).u32(*id).u32(field_len(entries.len())),
                |p, e| p.string(&e.filename).string(&e.longname).attrs(&e.attrs),
            ),
            Self::Attrs { id, attrs } => Packet::new(ty::ATTRS).u32(*id).attrs(attrs),
            Self::ExtendedReply { id, data } => Packet::new(ty::EXTENDED_REPLY).u32(*id).raw(data),
        }
        .finish()
    }

    /// Decodes a packet payload (type byte first, length prefix removed).
    pub fn decode(payload: &[u8]) -> Result<Self, SftpError> {
        let (&kind, rest) = payload.split_first().ok_or(SftpError::Empty)?;
        let mut f = Fields { bytes: rest, kind };
        let response = match kind {
            ty::VERSION => {
                let version = f.u32()?;
                let mut extensions = Vec::new();
                while !f.bytes.is_empty() {
                    extensions.push((f.string()?, f.string()?));
                }
                Self::Version {
                    version,
                    extensions,
                }
            }
            ty::STATUS => {
                let id = f.u32()?;
                let code = StatusCode::from_u32(f.u32()?);
                // Version 3 servers may omit message and language tag.
                let message = if f.bytes.is_empty() {
                    String::new()
                } else {
                    let message = String::from_utf8_lossy(&f.string()?).into_owned();
                    if !f.bytes.is_empty() {
                        f.string()?;
                    }
                    message
                };
                Self::Status { id, code, message }
            }
            ty::HANDLE => Self::Handle {
                id: f.u32()?,
                handle: f.string()?,
            },
            ty::DATA => Self::Data {
                id: f.u32()?,
                data: f.string()?,
            },
            ty::NAME => {
                let id = f.u32()?;
                let count = f.u32()?;
                let mut entries = Vec::new();
                for _ in 0..count {
                    entries.push(NameEntry {
                        filename: f.string()?,
                        longname: f.string()?,
                        attrs: f.attrs()?,
                    });
                }
                Self::Name { id, entries }
            }
            ty::ATTRS => Self::Attrs {
                id: f.u32()?,
                attrs: f.attrs()?,
            },
            ty::EXTENDED_REPLY => Self::ExtendedReply {
                id: f.u32()?,
                data: f.rest().to_vec(),
            },
            other => return Err(SftpError::UnknownType(other)),
        };
        f.end()?;
        Ok(response)
    }
}

/// What a directory listing shows of one entry besides its name (from its `lstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed<'a> {
    /// Mode bits, file type included (`st_mode`).
    pub mode: u32,
    /// Hard links.
    pub nlink: u64,
    /// Owner's name (or number).
    pub user: &'a str,
    /// Group's name (or number).
    pub group: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// The `longname` of a `SSH_FXP_NAME` entry answering `SSH_FXP_READDIR`: the `ls -l` line
/// OpenSSH's sftp-server makes (`ls_file`), `mode links owner group size time name`, which
/// OpenSSH's `sftp` prints as it is for `ls -l`. The time is UTC (`now` decides, as `ls`
/// does, whether it shows the time of day, within the last six months, or the year).
pub fn longname(name: &[u8], listed: &Listed<'_>, now: i64) -> Vec<u8> {
    const HALF_YEAR: i64 = 365 * 24 * 60 * 60 / 2;
    let mtime = listed.mtime;
    let (year, month, day) = civil_date(mtime.div_euclid(86_400));
    let seconds = mtime.rem_euclid(86_400);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][month as usize - 1];
    let when = if now.saturating_sub(HALF_YEAR) < mtime && now >= mtime {
        format!(
            "{month} {day:>2} {:02}:{:02}",
            seconds / 3600,
            seconds % 3600 / 60
        )
    } else {
        format!("{month} {day:>2}  {year}")
    };
    let mut line = format!(
        "{} {:>3} {:<8} {:<8} {:>8} {when} ",
        mode_string(listed.mode),
        listed.nlink,
        listed.user,
        listed.group,
        listed.size
    )
    .into_bytes();
    line.extend_from_slice(name);
    line
}

/// `strmode(3)`: the type letter, `rwx` thrice with set-id and sticky bits, and a space.
fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o100_000 => '-',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '?',
    };
    let mut out = String::with_capacity(11);
    out.push(kind);
    // (read bit, write bit, execute bit, special bit, letter with and without execute)
    for (shift, special, letters) in [
        (6, 0o4000, ('s', 'S')),
        (3, 0o2000, ('s', 'S')),
        (0, 0o1000, ('t', 'T')),
    ] {
        let bits = (mode >> shift) & 0o7;
        out.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        out.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        let execute = bits & 0o1 != 0;
        out.push(match (mode & special != 0, execute) {
            (true, true) => letters.0,
            (true, false) => letters.1,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out.push(' ');
    out
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): year, month 1-12, day 1-31.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Always 1-12 and 1-31.
    let small = |v: i64| u32::try_from(v).unwrap_or(1);
    (year, small(month), small(day))
}

/// A length or count as SFTP's 32-bit field. Everything encoded here is bounded far below
/// 4 GiB: packets by [`MAX_PACKET`]-sized reads and writes, names by `PATH_MAX`, listings by
/// their batch size; a longer one would be a bug here, not bad input.
fn field_len(len: usize) -> u32 {
    u32::try_from(len).expect("SFTP fields are bounded by the packet size")
}

/// Encodes an extension's arguments: each as an SFTP string.
pub fn extension_args(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for arg in args {
        out.extend_from_slice(&field_len(arg.len()).to_be_bytes());
        out.extend_from_slice(arg);
    }
    out
}

/// Decodes `count` SFTP strings from an extension's data, with nothing left over.
pub fn parse_extension_args(data: &[u8], count: usize) -> Result<Vec<Vec<u8>>, SftpError> {
    let mut f = Fields {
        bytes: data,
        kind: ty::EXTENDED,
    };
    let args = (0..count).map(|_| f.string()).collect::<Result<_, _>>()?;
    f.end()?;
    Ok(args)
}

/// A `statvfs@openssh.com` reply: the eleven `uint64`s `f_bsize, f_frsize, f_blocks, f_bfree,
/// f_bavail, f_files, f_ffree, f_favail, f_fsid, f_flag, f_namemax` (file counts left 0).
pub fn encode_statvfs(block_size: u64, blocks: u64, free: u64, available: u64) -> Vec<u8> {
    [
        block_size, block_size, blocks, free, available, 0, 0, 0, 0, 0, 255,
    ]
    .iter()
    .flat_map(|v| v.to_be_bytes())
    .collect()
}

/// Bytes available to unprivileged users from a `statvfs@openssh.com` reply.
pub fn statvfs_available(data: &[u8]) -> Result<u64, SftpError> {
    let mut f = Fields {
        bytes: data,
        kind: ty::EXTENDED_REPLY,
    };
    let _block_size = f.u64()?;
    let fragment_size = f.u64()?;
    let _blocks = f.u64()?;
    let _free = f.u64()?;
    let available = f.u64()?;
    Ok(fragment_size.saturating_mul(available))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn attrs() -> impl Strategy<Value = Attrs> {
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::option::of(any::<u32>()),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..8),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ),
                0..3,
            ),
        )
            .prop_map(|(size, uid_gid, permissions, times, extended)| Attrs {
                size,
                uid_gid,
                permissions,
                times,
                extended,
            })
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..40)
    }

    fn requests() -> impl Strategy<Value = Request> {
        prop_oneof![
            any::<u32>().prop_map(|version| Request::Init { version }),
            (any::<u32>(), bytes(), any::<u32>(), attrs()).prop_map(|(id, path, flags, attrs)| {
                Request::Open {
                    id,
                    path,
                    flags,
                    attrs,
                }
            }),
            (any::<u32>(), bytes()).prop_map(|(id, handle)| Request::Close { id, handle }),
            (any::<u32>(), bytes(), any::<u64>(), any::<u32>()).prop_map(
                |(id, handle, offset, len)| Request::Read {
                    id,
                    handle,
                    offset,
                    len
                }
            ),
            (any::<u32>(), bytes(), any::<u64>(), bytes()).prop_map(
                |(id, handle, offset, data)| Request::Write {
                    id,
                    handle,
                    offset,
                    data
                }
            ),
            (any::<u32>(), bytes(), 0usize..7).prop_map(|(id, path, k)| Request::Path {
                kind: [
                    PathRequest::Lstat,
                    PathRequest::Opendir,
                    PathRequest::Remove,
                    PathRequest::Rmdir,
                    PathRequest::Realpath,
                    PathRequest::Stat,
                    PathRequest::Readlink
                ][k],
                id,
                path
            }),
            (any::<u32>(), bytes(), any::<bool>()).prop_map(|(id, handle, f)| Request::Handle {
                kind: if f {
                    HandleRequest::Fstat
                } else {
                    HandleRequest::Readdir
                },
                id,
                handle
            }),
            (any::<u32>(), bytes(), attrs()).prop_map(|(id, path, attrs)| Request::Setstat {
                id,
                path,
                attrs
            }),
            (any::<u32>(), bytes(), attrs()).prop_map(|(id, handle, attrs)| Request::Fsetstat {
                id,
                handle,
                attrs
            }),
            (any::<u32>(), bytes(), attrs()).prop_map(|(id, path, attrs)| Request::Mkdir {
                id,
                path,
                attrs
            }),
            (any::<u32>(), bytes(), bytes(), any::<bool>()).prop_map(|(id, first, second, r)| {
                Request::TwoPaths {
                    kind: if r {
                        TwoPathRequest::Rename
                    } else {
                        TwoPathRequest::Symlink
                    },
                    id,
                    first,
                    second,
                }
            }),
            (any::<u32>(), bytes(), bytes()).prop_map(|(id, name, data)| Request::Extended {
                id,
                name,
                data
            }),
        ]
    }

    fn responses() -> impl Strategy<Value = Response> {
        prop_oneof![
            (
                any::<u32>(),
                proptest::collection::vec((bytes(), bytes()), 0..3)
            )
                .prop_map(|(version, extensions)| Response::Version {
                    version,
                    extensions
                }),
            (any::<u32>(), 0u32..9, "[a-z ]{0,20}").prop_map(|(id, code, message)| {
                Response::Status {
                    id,
                    code: StatusCode::from_u32(code),
                    message,
                }
            }),
            (any::<u32>(), bytes()).prop_map(|(id, handle)| Response::Handle { id, handle }),
            (any::<u32>(), bytes()).prop_map(|(id, data)| Response::Data { id, data }),
            (
                any::<u32>(),
                proptest::collection::vec((bytes(), bytes(), attrs()), 0..3)
            )
                .prop_map(|(id, entries)| Response::Name {
                    id,
                    entries: entries
                        .into_iter()
                        .map(|(filename, longname, attrs)| NameEntry {
                            filename,
                            longname,
                            attrs
                        })
                        .collect()
                }),
            (any::<u32>(), attrs()).prop_map(|(id, attrs)| Response::Attrs { id, attrs }),
            (any::<u32>(), bytes()).prop_map(|(id, data)| Response::ExtendedReply { id, data }),
        ]
    }

    fn payload(packet: &[u8]) -> &[u8] {
        let (payload, consumed) = split_packet(packet).unwrap().unwrap();
        assert_eq!(consumed, packet.len());
        payload
    }

    #[test]
    fn a_write_packet_has_the_draft_layout() {
        let packet = Request::Write {
            id: 7,
            handle: b"h1".to_vec(),
            offset: 0x1_0000_0000,
            data: b"abc".to_vec(),
        }
        .encode();
        assert_eq!(
            packet,
            [
                0, 0, 0, 26, 6, 0, 0, 0, 7, 0, 0, 0, 2, b'h', b'1', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                0, 3, b'a', b'b', b'c'
            ]
        );
    }

    #[test]
    fn split_waits_for_whole_packets_and_refuses_huge_ones() {
        let packet = Request::Init { version: 3 }.encode();
        assert_eq!(split_packet(&packet[..6]), Ok(None));
        assert_eq!(split_packet(&packet[..3]), Ok(None));
        assert!(matches!(split_packet(&packet), Ok(Some((_, 9)))));
        assert_eq!(
            split_packet(&[0x7f, 0, 0, 0, 1]),
            Err(SftpError::TooLarge(0x7f00_0000))
        );
    }

    #[test]
    fn longname_is_laid_out_as_openssh_sftp_server_does() {
        // 2026-12-01 21:29:00 UTC, listed a minute later.
        let mtime = 1_796_160_540;
        let file = Listed {
            mode: 0o100_644,
            nlink: 1,
            user: "root",
            group: "root",
            size: 16,
            mtime,
        };
        assert_eq!(
            String::from_utf8(longname(b"note.txt", &file, mtime + 60)).unwrap(),
            "-rw-r--r--    1 root     root           16 Dec  1 21:29 note.txt"
        );
        // Older than six months (or in the future): the year instead of the time.
        let dir = Listed {
            mode: 0o040_700,
            nlink: 12,
            user: "a-long-user-name",
            group: "0",
            size: 4096,
            mtime: 951_782_400,
        };
        assert_eq!(
            String::from_utf8(longname(b"d", &dir, mtime)).unwrap(),
            "drwx------   12 a-long-user-name 0            4096 Feb 29  2000 d"
        );
        let link = Listed {
            mode: 0o120_777,
            ..file
        };
        assert!(longname(b"l", &link, mtime - 1).starts_with(b"lrwxrwxrwx "));
        assert_eq!(mode_string(0o104_755), "-rwsr-xr-x ");
        assert_eq!(mode_string(0o102_640), "-rw-r-S--- ");
        assert_eq!(mode_string(0o041_777), "drwxrwxrwt ");
        assert_eq!(mode_string(0o041_776), "drwxrwxrwT ");
        assert_eq!(mode_string(0o010_600), "prw------- ");
        assert_eq!(mode_string(0), "?--------- ");
    }

    #[test]
    fn civil_dates_are_gregorian() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(20_788), (2026, 12, 1));
    }

    #[test]
    fn statvfs_reply_gives_available_bytes() {
        let reply = encode_statvfs(4096, 1000, 600, 500);
        assert_eq!(statvfs_available(&reply), Ok(500 * 4096));
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in requests()) {
            let packet = request.encode();
            prop_assert_eq!(Request::decode(payload(&packet)).unwrap(), request);
        }

        #[test]
        fn responses_round_trip(response in responses()) {
            let packet = response.encode();
            prop_assert_eq!(Response::decode(payload(&packet)).unwrap(), response);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = split_packet(&bytes);
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
            let _ = parse_extension_args(&bytes, 2);
            let _ = statvfs_available(&bytes);
        }

        /// Any entry's longname is one line: an 11-character mode, its fields, and the name
        /// last; and a `SSH_FXP_NAME` batch of such entries decodes as it was encoded.
        #[test]
        fn longnames_end_with_the_name_and_round_trip(
            name in proptest::collection::vec(any::<u8>(), 1..40),
            mode in any::<u32>(),
            nlink in any::<u64>(),
            size in any::<u64>(),
            mtime in any::<i64>(),
            now in any::<i64>(),
            attrs in attrs(),
        ) {
            let listed = Listed { mode, nlink, user: "u", group: "g", size, mtime };
            let line = longname(&name, &listed, now);
            prop_assert!(line.ends_with(&name));
            prop_assert_eq!(line[10], b' ');
            prop_assert!(!line[..line.len() - name.len()].contains(&b'\n'));
            let response = Response::Name {
                id: 1,
                entries: vec![NameEntry { filename: name, longname: line, attrs }; 3],
            };
            prop_assert_eq!(Response::decode(payload(&response.encode())).unwrap(), response);
        }
    }
}
