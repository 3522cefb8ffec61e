//! ssh connections to a dump server, through libssh2 (the `ssh2` crate, OpenSSL built in).
//!
//! Batch mode only: public-key authentication with the configured key, and the server's host
//! key checked against the known_hosts files baked into the image. A key that is missing from
//! them or differs is refused, never trusted on first use. Connection attempts are retried
//! with a growing pause until a deadline; refusals of the host key or the key pair are not
//! retried, since waiting does not change them.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use ssh2::{CheckResult, ErrorCode, KnownHostFileKind, MethodType, Session};

use super::ssh_config::{self, ROOT_HOME};
use crate::format::bytes;

/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why an ssh connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host name does not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The ssh protocol failed (handshake, channel, lost connection).
    #[error("ssh to {target}: {source}")]
    Protocol {
        /// `user@host:port`.
        target: String,
        /// libssh2's error.
        source: ssh2::Error,
    },
    /// The server's host key is not the pinned one.
    #[error("{0}")]
    HostKey(String),
    /// The server refused the key pair.
    #[error("{0}")]
    Auth(String),
    /// The key pair cannot be used here (missing, unreadable, passphrase-protected, not a key).
    #[error("{0}")]
    Identity(String),
    /// No attempt succeeded before the deadline.
    #[error("gave up after {attempts} attempts in {seconds} s; last error: {last}")]
    Deadline {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        seconds: u64,
        /// The last attempt's error.
        last: Box<SshError>,
    },
}

impl SshError {
    /// Whether trying again later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Self::Resolve { .. } | Self::Connect { .. } | Self::Protocol { .. }
        )
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Remote user.
    pub user: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Private key file.
    pub identity: PathBuf,
    /// known_hosts files, checked in order.
    pub known_hosts: Vec<PathBuf>,
    /// Limit for one TCP connection attempt.
    pub connect_timeout: Duration,
    /// Limit for any single ssh operation once connected.
    pub io_timeout: Duration,
}

impl SshTarget {
    /// The target of kdump.conf's `ssh user@host` (`destination`), completed from the
    /// `ssh_config` text as ssh would: `HostName`, `Port`, `UserKnownHostsFile` (default: the
    /// files under [`ROOT_HOME`] and the system's), `ConnectTimeout`. `identity` is the key to
    /// log in with.
    pub fn from_destination(
        destination: &str,
        ssh_config: &str,
        identity: PathBuf,
    ) -> Result<Self, String> {
        let (user, host) = split_destination(destination)?;
        let settings = ssh_config::settings_for(ssh_config, host);
        Ok(Self {
            user: user.to_owned(),
            host: settings.hostname.unwrap_or_else(|| host.to_owned()),
            port: settings.port.unwrap_or(22),
            identity,
            known_hosts: if settings.known_hosts.is_empty() {
                default_known_hosts()
            } else {
                settings.known_hosts
            },
            connect_timeout: settings.connect_timeout.unwrap_or(Duration::from_secs(10)),
            io_timeout: Duration::from_secs(60),
        })
    }

    /// `user@host:port`, for messages.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// The host without the brackets of an IPv6 literal.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    fn protocol(&self, source: ssh2::Error) -> SshError {
        SshError::Protocol {
            target: self.label(),
            source,
        }
    }
}

/// Splits kdump.conf's `user@host`.
pub fn split_destination(destination: &str) -> Result<(&str, &str), String> {
    destination
        .rsplit_once('@')
        .filter(|(user, host)| !user.is_empty() && !host.is_empty())
        .ok_or_else(|| format!("ssh {destination}: expected user@host"))
}

/// The identity kdump.conf's `sshkey` names when that file exists, else ssh_config's
/// `IdentityFile` for the host, else kdump's default key; `note` hears about a fallback.
pub fn identity_for(
    configured: &Path,
    destination: &str,
    ssh_config: &str,
    note: &mut dyn FnMut(&str),
) -> PathBuf {
    if configured.exists() {
        return configured.to_owned();
    }
    let host = split_destination(destination).map_or("", |(_, host)| host);
    let fallback = ssh_config::settings_for(ssh_config, host)
        .identity
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_SSHKEY));
    note(&format!(
        "sshkey {} does not exist; using {}",
        configured.display(),
        fallback.display()
    ));
    fallback
}

/// Resolves the target's address. Numeric addresses need no resolver (the capture kernel has
/// none); names go through the C library.
fn resolve(target: &SshTarget) -> Result<SocketAddr, SshError> {
    let host = target.bare_host();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let fail = |reason: String| SshError::Resolve {
        host: target.host.clone(),
        reason,
    };
    (host, target.port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".to_owned()))
}

/// An authenticated session.
pub struct Connected {
    /// The session.
    pub session: Session,
    /// This machine's address on the connection: the source address of the route to the
    /// server, which names kdump's dump directories.
    pub local: IpAddr,
}

/// A TCP connection with the ssh handshake done: the server's host key is known, nothing is
/// checked or authenticated yet.
pub struct Handshaken {
    /// The session.
    pub session: Session,
    /// This machine's address on the connection.
    pub local: IpAddr,
}

/// TCP connection and ssh handshake, without checks.
pub fn handshake(target: &SshTarget) -> Result<Handshaken, SshError> {
    let addr = resolve(target)?;
    let tcp = TcpStream::connect_timeout(&addr, target.connect_timeout)
        .map_err(|source| SshError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .map_err(|source| SshError::Connect { addr, source })?
        .ip();
    let mut session = Session::new().map_err(|source| target.protocol(source))?;
    if let Some(algorithms) = pinned_algorithms(&session, target) {
        // Unsupported names are skipped; if none is left, libssh2's default order stays.
        let _ = session.method_pref(MethodType::HostKey, &algorithms);
    }
    session.set_tcp_stream(tcp);
    session.set_timeout(u32::try_from(target.io_timeout.as_millis()).unwrap_or(u32::MAX));
    session
        .handshake()
        .map_err(|source| target.protocol(source))?;
    Ok(Handshaken { session, local })
}

/// One connection attempt: TCP, handshake, host key check, authentication.
pub fn connect(target: &SshTarget) -> Result<Connected, SshError> {
    let Handshaken { session, local } = handshake(target)?;
    check_host_key(&session, target)?;
    session
        .userauth_pubkey_file(&target.user, None, &target.identity, None)
        .map_err(|e| match e.code() {
            // LIBSSH2_ERROR_FILE: the key file, not the server, is the problem.
            ErrorCode::Session(-16) => SshError::Identity(format!(
                "cannot use the key {}: {e}",
                target.identity.display()
            )),
            _ => SshError::Auth(format!(
                "{} refused the key {}: {e}",
                target.label(),
                target.identity.display()
            )),
        })?;
    if !session.authenticated() {
        return Err(SshError::Auth(format!(
            "{} did not accept the key {}",
            target.label(),
            target.identity.display()
        )));
    }
    session.set_keepalive(true, 15);
    Ok(Connected { session, local })
}

/// Connects, retrying retriable failures with a pause that doubles up to 10 s, until
/// `deadline`. `log` hears about every failed attempt.
pub fn connect_with_retries(
    target: &SshTarget,
    deadline: Instant,
    log: &mut dyn FnMut(&str),
) -> Result<Connected, SshError> {
    let started = Instant::now();
    let mut pause = Duration::from_secs(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match connect(target) {
            Ok(connected) => return Ok(connected),
            Err(e) if !e.is_retriable() => return Err(e),
            Err(e) => {
                let now = Instant::now();
                if now + pause >= deadline {
                    return Err(SshError::Deadline {
                        attempts,
                        seconds: started.elapsed().as_secs(),
                        last: Box::new(e),
                    });
                }
                log(&format!(
                    "attempt {attempts} to reach {} failed ({e}); retrying in {} s",
                    target.label(),
                    pause.as_secs()
                ));
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What the known_hosts files say about the server's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A line for the host has this key.
    Known,
    /// The host has lines, none with this key.
    Changed,
    /// No line names the host, or no known_hosts file exists.
    Unknown,
}

/// Looks the server's host key up in the target's known_hosts files (those that exist).
pub fn host_key_status(session: &Session, target: &SshTarget) -> Result<HostKeyStatus, SshError> {
    let Some((key, _)) = session.host_key() else {
        return Err(SshError::HostKey(format!(
            "{} sent no host key",
            target.label()
        )));
    };
    let mut known = session
        .known_hosts()
        .map_err(|source| target.protocol(source))?;
    for file in target.known_hosts.iter().filter(|file| file.exists()) {
        known
            .read_file(file, KnownHostFileKind::OpenSSH)
            .map_err(|e| SshError::HostKey(format!("{}: {e}", file.display())))?;
    }
    match known.check_port(target.bare_host(), target.port, key) {
        CheckResult::Match => Ok(HostKeyStatus::Known),
        CheckResult::Mismatch => Ok(HostKeyStatus::Changed),
        CheckResult::NotFound => Ok(HostKeyStatus::Unknown),
        CheckResult::Failure => Err(SshError::HostKey(format!(
            "cannot check the host key of {}",
            target.label()
        ))),
    }
}

/// Checks the server's host key against the target's known_hosts files.
fn check_host_key(session: &Session, target: &SshTarget) -> Result<(), SshError> {
    let refuse = |why: String| Err(SshError::HostKey(why));
    if !target.known_hosts.iter().any(|file| file.exists()) {
        return refuse(format!(
            "no known_hosts file ({}): the host key of {} cannot be checked (run `rkdump propagate`)",
            shown(&target.known_hosts),
            target.label()
        ));
    }
    match host_key_status(session, target)? {
        HostKeyStatus::Known => Ok(()),
        HostKeyStatus::Changed => refuse(format!(
            "the host key of {} differs from the one in {}: refusing to send the dump (possible man-in-the-middle)",
            target.label(),
            shown(&target.known_hosts)
        )),
        HostKeyStatus::Unknown => refuse(format!(
            "the host key of {} is not in {}: refusing to trust it on first use (run `rkdump propagate`)",
            target.label(),
            shown(&target.known_hosts)
        )),
    }
}

/// The host key algorithms of the keys pinned for the target under its plain (unhashed) name,
/// as a libssh2 preference list: a server with several host keys then shows one we know, as
/// OpenSSH arranges. `None` when nothing is pinned by name.
fn pinned_algorithms(session: &Session, target: &SshTarget) -> Option<String> {
    let mut known = session.known_hosts().ok()?;
    for file in target.known_hosts.iter().filter(|file| file.exists()) {
        let _ = known.read_file(file, KnownHostFileKind::OpenSSH);
    }
    let name = known_hosts_name(target.bare_host(), target.port);
    let mut algorithms: Vec<&str> = Vec::new();
    for host in known.hosts().ok()? {
        if host.name() != Some(name.as_str()) {
            continue;
        }
        let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(host.key()) else {
            continue;
        };
        let methods: &[&str] = match key_algorithm(&blob) {
            // An RSA key signs with any of these; prefer the SHA-2 ones.
            Some("ssh-rsa") => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            Some("ssh-ed25519") => &["ssh-ed25519"],
            Some("ecdsa-sha2-nistp256") => &["ecdsa-sha2-nistp256"],
            Some("ecdsa-sha2-nistp384") => &["ecdsa-sha2-nistp384"],
            Some("ecdsa-sha2-nistp521") => &["ecdsa-sha2-nistp521"],
            Some("ssh-dss") => &["ssh-dss"],
            _ => &[],
        };
        for method in methods {
            if !algorithms.contains(method) {
                algorithms.push(method);
            }
        }
    }
    (!algorithms.is_empty()).then(|| algorithms.join(","))
}

/// The algorithm name at the start of an ssh public key blob (a length-prefixed string).
pub fn key_algorithm(blob: &[u8]) -> Option<&str> {
    let length = usize::try_from(bytes::u32_be(blob, 0).ok()?).ok()?;
    std::str::from_utf8(bytes::slice(blob, 4, length).ok()?).ok()
}

/// How known_hosts names a server: the bare host on port 22, `[host]:port` elsewhere.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The files, comma-separated, for messages.
pub fn shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known_hosts line for the server's host key as this session saw it (`[host]:port` for
/// ports other than 22), for `rkdump propagate`.
pub fn known_hosts_line(session: &Session, host: &str, port: u16) -> Result<String, SshError> {
    let (key, kind) = session
        .host_key()
        .ok_or_else(|| SshError::HostKey(format!("{host} sent no host key")))?;
    let entry = known_hosts_name(host, port);
    let protocol = |source| SshError::Protocol {
        target: entry.clone(),
        source,
    };
    let mut known = session.known_hosts().map_err(protocol)?;
    known.add(&entry, key, "", kind.into()).map_err(protocol)?;
    let hosts = known.hosts().map_err(protocol)?;
    let host_entry = hosts
        .first()
        .ok_or_else(|| SshError::HostKey(format!("{entry}: host key not recorded")))?;
    known
        .write_string(host_entry, KnownHostFileKind::OpenSSH)
        .map(|line| line.trim_end().to_owned())
        .map_err(protocol)
}

/// The default files of an image: root's and the system's known_hosts.
pub fn default_known_hosts() -> Vec<PathBuf> {
    vec![
        Path::new(ROOT_HOME).join(".ssh/known_hosts"),
        PathBuf::from("/etc/ssh/ssh_known_hosts"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCUPyISo5GXDOMUwuyYqC1v0zp0UGyZXutPqj98pZftwhAwpZmS5jF+tIXLCbWxOLBaWERx1YydwFPge6mTsKVLBnUPx15NnLXRt/vSHxDf+FexWKj0A9U5orKvhpAUqHK2pwwMoYK5MPVrmLshp6rmJpbZFkC400YQfXVbTMR6IY2zt7eMsgTJybK07pWvq1Da2XleqJIH7KzVtb3/pPkbaRqFYVPm5P3JdotVnuWo+G/qnxoWuEQEBHlLxRqLcHYvGm9Ot9F7QqD2VLJGcyQDpBzuDmxCwpKm0elfFt31dsaiy+IylWX0rLZd2zVzKxMD0wGeuO7iSGz9SGB1W70V";
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJSJNFLFIpUrJY3/C0wZnrrAZbmVl5f8t/wReRS/EZZL";

    fn target(known_hosts: Vec<PathBuf>, port: u16) -> SshTarget {
        SshTarget::from_destination(
            "root@dumps",
            &format!("Host dumps\n  Port {port}\n"),
            PathBuf::from("/nonexistent"),
        )
        .map(|t| SshTarget { known_hosts, ..t })
        .unwrap()
    }

    #[test]
    fn key_blobs_name_their_algorithm() {
        for line in [RSA, ED25519] {
            let (kind, blob) = line.split_once(' ').unwrap();
            let blob = base64::engine::general_purpose::STANDARD
                .decode(blob)
                .unwrap();
            assert_eq!(key_algorithm(&blob), Some(kind));
        }
        assert_eq!(key_algorithm(&[0, 0, 0, 9, b's']), None);
        assert_eq!(key_algorithm(&[]), None);
    }

    /// A server with several host keys must show the one pinned for it, as OpenSSH arranges:
    /// only the types pinned under the server's own name are offered.
    #[test]
    fn only_the_pinned_host_key_types_are_offered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            format!("[dumps]:2222 {RSA}\nother {ED25519}\n[dumps]:2223 {ED25519}\n"),
        )
        .unwrap();
        let session = Session::new().unwrap();
        assert_eq!(
            pinned_algorithms(&session, &target(vec![file.clone()], 2222)).as_deref(),
            Some("rsa-sha2-512,rsa-sha2-256,ssh-rsa")
        );
        assert_eq!(
            pinned_algorithms(&session, &target(vec![file.clone()], 2223)).as_deref(),
            Some("ssh-ed25519")
        );
        assert_eq!(pinned_algorithms(&session, &target(vec![file], 22)), None);
        assert_eq!(pinned_algorithms(&session, &target(Vec::new(), 2222)), None);
    }
}
