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

use ssh2::{CheckResult, KnownHostFileKind, Session};

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
    /// The key pair was refused.
    #[error("{0}")]
    Auth(String),
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
    /// `user@host:port`, for messages.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Resolves the target's address. Numeric addresses need no resolver (the capture kernel has
/// none); names go through the C library.
fn resolve(target: &SshTarget) -> Result<SocketAddr, SshError> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
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

/// One connection attempt: TCP, handshake, host key check, authentication.
pub fn connect(target: &SshTarget) -> Result<Connected, SshError> {
    let addr = resolve(target)?;
    let tcp = TcpStream::connect_timeout(&addr, target.connect_timeout)
        .map_err(|source| SshError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .map_err(|source| SshError::Connect { addr, source })?
        .ip();
    let protocol = |source| SshError::Protocol {
        target: target.label(),
        source,
    };
    let mut session = Session::new().map_err(protocol)?;
    session.set_tcp_stream(tcp);
    session.set_timeout(u32::try_from(target.io_timeout.as_millis()).unwrap_or(u32::MAX));
    session.handshake().map_err(protocol)?;
    check_host_key(&session, target)?;
    session
        .userauth_pubkey_file(&target.user, None, &target.identity, None)
        .map_err(|e| {
            SshError::Auth(format!(
                "{} refused the key {}: {e}",
                target.label(),
                target.identity.display()
            ))
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

/// Checks the server's host key against the target's known_hosts files.
fn check_host_key(session: &Session, target: &SshTarget) -> Result<(), SshError> {
    let refuse = |why: String| Err(SshError::HostKey(why));
    let Some((key, _)) = session.host_key() else {
        return refuse(format!("{} sent no host key", target.label()));
    };
    let mut known = session.known_hosts().map_err(|source| SshError::Protocol {
        target: target.label(),
        source,
    })?;
    let mut read_any = false;
    for file in &target.known_hosts {
        if file.exists() {
            known
                .read_file(file, KnownHostFileKind::OpenSSH)
                .map_err(|e| SshError::HostKey(format!("{}: {e}", file.display())))?;
            read_any = true;
        }
    }
    if !read_any {
        return refuse(format!(
            "no known_hosts file ({}): the host key of {} cannot be checked (run `rkdump propagate`)",
            shown(&target.known_hosts),
            target.label()
        ));
    }
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    match known.check_port(host, target.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => refuse(format!(
            "the host key of {} differs from the one in {}: refusing to send the dump (possible man-in-the-middle)",
            target.label(),
            shown(&target.known_hosts)
        )),
        CheckResult::NotFound => refuse(format!(
            "the host key of {} is not in {}: refusing to trust it on first use (run `rkdump propagate`)",
            target.label(),
            shown(&target.known_hosts)
        )),
        CheckResult::Failure => refuse(format!("cannot check the host key of {}", target.label())),
    }
}

fn shown(paths: &[PathBuf]) -> String {
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
    let entry = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
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

/// The default files of an image: the user's and the system's known_hosts.
pub fn default_known_hosts(home: &Path) -> Vec<PathBuf> {
    vec![
        home.join(".ssh/known_hosts"),
        PathBuf::from("/etc/ssh/ssh_known_hosts"),
    ]
}
