//! NFS targets: `nfs server:/export`, `nfs4 ...` and `dracut_args --mount "server:/export ...
//! nfs ..."`, mounted with mount(2) alone — no mount.nfs, rpcbind or statd in the image.
//!
//! The kernel's NFS client takes text options and speaks to the server itself; it needs the
//! server's address (`addr=`) and, for NFSv4.0 callbacks, ours (`clientaddr=`). Versions are
//! tried newest first (4.2, 4.1, 4.0, then 3 for `nfs`), as mount.nfs negotiates, unless the
//! options name one. NFSv3 is mounted with `nolock`: nothing in the image runs statd.
//!
//! Unless the options say otherwise the mount is `soft,timeo=100,retrans=2`: an operation the
//! server does not answer fails after about a minute (10, 20, then 30 s over TCP) with EIO,
//! which fails the dump and leads to the failure action, instead of hanging the capture kernel
//! on a dead server forever. While the server cannot be reached at all (or its name does not
//! resolve yet), the mount is retried until the network deadline; a refusal fails at once.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::log::Log;
use super::{kernel, mounts};

/// NFS's port, which NFSv4 always uses.
const NFS_PORT: u16 = 2049;
/// Timeouts when the user gives none (tenths of a second; see the module docs).
const DEFAULT_TIMEOUTS: &str = "soft,timeo=100,retrans=2";

/// Why an export could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The export is not `host:/path`.
    #[error("{0:?} is not an NFS export (expected server:/path)")]
    NotAnExport(String),
    /// The server's name did not resolve to an IPv4 address.
    #[error("{host}: cannot resolve the NFS server: {reason}")]
    Resolve {
        /// The server as written.
        host: String,
        /// Why.
        reason: String,
    },
    /// Every version was refused, or the server stayed unreachable until the deadline.
    #[error("mounting {export} on {mountpoint}: {source} (tried NFS {versions} for {seconds} s)")]
    Mount {
        /// The export.
        export: String,
        /// Where.
        mountpoint: String,
        /// The last error.
        source: std::io::Error,
        /// The versions tried.
        versions: String,
        /// How long it kept trying.
        seconds: u64,
    },
}

/// An export, `host:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The server's name or address.
    pub host: String,
    /// The exported path.
    pub path: String,
}

impl Export {
    /// Parses `host:/path`.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let (host, path) = spec
            .split_once(':')
            .filter(|(host, path)| !host.is_empty() && !host.contains('[') && path.starts_with('/'))
            .ok_or_else(|| Error::NotAnExport(spec.to_owned()))?;
        Ok(Self {
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// The version an option names (`vers=4.1`, `nfsvers=3`, `v4`, `v4.2`), if it names one.
fn named_version(option: &str) -> Option<&str> {
    option
        .strip_prefix("vers=")
        .or_else(|| option.strip_prefix("nfsvers="))
        .or_else(|| {
            option
                .strip_prefix('v')
                .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// The versions to try: the one the options name, else newest first (`nfs4`: 4.x only).
pub fn versions(options: &str, v4_only: bool) -> Vec<String> {
    if let Some(version) = options.split(',').find_map(named_version) {
        return vec![version.to_owned()];
    }
    let mut all = vec!["4.2".to_owned(), "4.1".to_owned(), "4.0".to_owned()];
    if !v4_only {
        all.push("3".to_owned());
    }
    all
}

/// The mount(2) data for one attempt: version, addresses, transport, timeouts (unless the user
/// set them) and the user's own options (minus those mount(2) takes as flags).
pub fn mount_data(version: &str, server: Ipv4Addr, client: Ipv4Addr, options: &str) -> String {
    let user: Vec<&str> = options
        .split(',')
        .filter(|o| {
            !o.is_empty()
                && named_version(o).is_none()
                && !o.starts_with("addr=")
                && !o.starts_with("clientaddr=")
        })
        .collect();
    let mut data = vec![
        format!("vers={version}"),
        format!("addr={server}"),
        format!("clientaddr={client}"),
    ];
    if !user.iter().any(|o| o.starts_with("proto=")) {
        data.push("proto=tcp".into());
    }
    if version.starts_with('4') && !user.iter().any(|o| o.starts_with("port=")) {
        data.push(format!("port={NFS_PORT}"));
    }
    if version == "3" && !user.contains(&"lock") {
        data.push("nolock".into());
    }
    let chose_timeouts = user.iter().any(|o| {
        ["soft", "hard", "softerr"].contains(o)
            || o.starts_with("timeo=")
            || o.starts_with("retrans=")
    });
    if !chose_timeouts {
        data.push(DEFAULT_TIMEOUTS.into());
    }
    data.extend(user.iter().map(|o| (*o).to_owned()));
    data.join(",")
}

/// The server's IPv4 address.
fn resolve(host: &str) -> Result<Ipv4Addr, Error> {
    if let Ok(address) = host.parse() {
        return Ok(address);
    }
    let resolve_error = |reason: String| Error::Resolve {
        host: host.to_owned(),
        reason,
    };
    (host, NFS_PORT)
        .to_socket_addrs()
        .map_err(|e| resolve_error(e.to_string()))?
        .find_map(|a| match a {
            SocketAddr::V4(a) => Some(*a.ip()),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| resolve_error("no IPv4 address".into()))
}

/// Our address on the way to `server` (no packet is sent).
pub fn local_address_towards(server: Ipv4Addr) -> std::io::Result<Ipv4Addr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect((server, NFS_PORT))?;
    match socket.local_addr()? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => Err(std::io::Error::other("no IPv4 route")),
    }
}

/// Whether a mount error may pass with another version, as mount.nfs falls back: the version
/// is not spoken, or (NFSv4) the export is not in the server's pseudo-root.
fn try_next_version(error: &std::io::Error) -> bool {
    use nix::libc::{EINVAL, ENODEV, ENOENT, EPERM, EPROTONOSUPPORT};
    matches!(
        error.raw_os_error(),
        Some(EPROTONOSUPPORT | EINVAL | ENODEV | ENOENT | EPERM)
    )
}

/// Whether a mount error means the server cannot be reached yet (worth retrying until the
/// deadline) rather than that it refuses.
fn unreachable(error: &std::io::Error) -> bool {
    use nix::libc::{EAGAIN, ECONNREFUSED, ECONNRESET, EHOSTUNREACH, EIO, ENETUNREACH, ETIMEDOUT};
    matches!(
        error.raw_os_error(),
        Some(ECONNREFUSED | ETIMEDOUT | EHOSTUNREACH | ENETUNREACH | ECONNRESET | EIO | EAGAIN)
    )
}

/// Mounts `export` on `mountpoint`; returns our address towards the server (the dump
/// directory is named after it).
pub fn mount(
    export: &str,
    mountpoint: &Path,
    v4_only: bool,
    options: &str,
    deadline: Instant,
    log: &Log,
) -> Result<Ipv4Addr, Error> {
    let parsed = Export::parse(export)?;
    let started = Instant::now();
    let versions = versions(options, v4_only);
    loop {
        let attempt = resolve(&parsed.host).and_then(|server| {
            mount_once(&parsed, export, server, mountpoint, &versions, options, log).map_err(
                |(source, tried)| Error::Mount {
                    export: export.to_owned(),
                    mountpoint: mountpoint.display().to_string(),
                    source,
                    versions: tried.join(", "),
                    seconds: started.elapsed().as_secs(),
                },
            )
        });
        let retry = match &attempt {
            Ok(_) => false,
            Err(Error::Resolve { .. }) => true,
            Err(Error::Mount { source, .. }) => unreachable(source),
            Err(Error::NotAnExport(_)) => false,
        };
        if !retry || Instant::now() >= deadline {
            return attempt;
        }
        if let Err(e) = &attempt {
            log.line(&format!("{e}; retrying"));
        }
        std::thread::sleep(Duration::from_secs(2).min(deadline - Instant::now()));
    }
}

/// One round: every version in turn. On failure, the last error and the versions tried.
fn mount_once(
    parsed: &Export,
    export: &str,
    server: Ipv4Addr,
    mountpoint: &Path,
    versions: &[String],
    options: &str,
    log: &Log,
) -> Result<Ipv4Addr, (std::io::Error, Vec<String>)> {
    let client = local_address_towards(server).map_err(|e| (e, Vec::new()))?;
    let mut tried = Vec::new();
    for version in versions {
        tried.push(version.clone());
        let fstype = if version.starts_with('4') {
            "nfs4"
        } else {
            "nfs"
        };
        let data = mount_data(version, server, client, options);
        let source = format!("{server}:{}", parsed.path);
        match mounts::mount(Path::new(&source), mountpoint, fstype, &data) {
            Ok(()) => {
                log.line(&format!(
                    "mounted {export} on {} (NFS {version}: {data})",
                    mountpoint.display()
                ));
                return Ok(client);
            }
            Err(e) if try_next_version(&e) && tried.len() < versions.len() => {
                log.line(&format!(
                    "{export}: NFS {version}: {e}; trying the next version"
                ));
            }
            Err(e) => return Err((e, tried)),
        }
    }
    Err((std::io::Error::other("no version to try"), tried))
}

/// Exit status of a capture ended by [`guard_against_stalls`] (a failed capture, as PID 1
/// judges it).
pub const EXIT_STALLED: i32 = 1;

/// Watches a dump to the NFS export on `mountpoint` until `finished`: when this process wrote
/// nothing for `limit` (`rkdump.stall_timeout=`; `wchar` of /proc/self/io, which counts every
/// byte handed to write(2)), the server is taken for dead and its pending requests are aborted
/// (`umount -f`), which fails the write or sync the dump is blocked in (a soft mount alone can
/// take many minutes to give up while it keeps reconnecting). If the dump is still blocked
/// `limit` later, the process exits with [`EXIT_STALLED`]: a fatal signal is the one thing
/// that ends a task waiting for a dead server, and PID 1 then runs the failure action.
pub fn guard_against_stalls(mountpoint: &Path, limit: Duration, finished: &AtomicBool, log: &Log) {
    let mut written = kernel::bytes_written();
    let mut since = Instant::now();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let now = kernel::bytes_written();
        if now != written {
            written = now;
            since = Instant::now();
        } else if since.elapsed() >= limit {
            log.line(&format!(
                "dump: nothing written for {} s: the NFS server is not answering; aborting \
                 its requests on {}",
                since.elapsed().as_secs(),
                mountpoint.display()
            ));
            // Every round aborts the requests pending then; write-back issues new ones
            // until the dump gives up.
            let aborting = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                mounts::abort_nfs_requests(mountpoint);
                std::thread::sleep(Duration::from_secs(2));
                if aborting.elapsed() >= limit {
                    // Last resort: PID 1 sees the capture fail and runs the failure action;
                    // a fatal signal ends even a task waiting for the server.
                    log.line(
                        "dump: still blocked on the NFS server; ending the capture (no post \
                         hooks)",
                    );
                    #[allow(clippy::exit, reason = "the dump thread cannot be unblocked")]
                    std::process::exit(EXIT_STALLED);
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_parse() {
        assert_eq!(
            Export::parse("10.0.2.100:/export/dumps").unwrap(),
            Export {
                host: "10.0.2.100".into(),
                path: "/export/dumps".into()
            }
        );
        for bad in ["/export", "host:export", ":/export", "[fd00::1]:/x", "host"] {
            assert!(Export::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_newest_first_unless_named() {
        assert_eq!(versions("", false), ["4.2", "4.1", "4.0", "3"]);
        assert_eq!(versions("defaults", true), ["4.2", "4.1", "4.0"]);
        assert_eq!(versions("rw,nfsvers=3", false), ["3"]);
        assert_eq!(versions("vers=4.1", true), ["4.1"]);
        assert_eq!(versions("rw,v3", false), ["3"]);
        assert_eq!(versions("v4.2", true), ["4.2"]);
        // `vers=` is ours to set; the user's shorthand is not passed twice.
        let data = mount_data("3", Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, "v3,hard");
        assert_eq!(data.matches("vers=").count(), 1, "{data}");
        assert!(!data.contains(",v3"), "{data}");
    }

    #[test]
    fn data_has_addresses_and_bounded_timeouts() {
        let server = Ipv4Addr::new(10, 0, 2, 100);
        let client = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(
            mount_data("4.1", server, client, "defaults"),
            "vers=4.1,addr=10.0.2.100,clientaddr=10.0.2.15,proto=tcp,port=2049,\
             soft,timeo=100,retrans=2,defaults"
        );
        // The user's timeouts and transport win; v3 needs nolock without statd.
        assert_eq!(
            mount_data("3", server, client, "vers=3,hard,proto=udp"),
            "vers=3,addr=10.0.2.100,clientaddr=10.0.2.15,nolock,hard,proto=udp"
        );
    }
}
