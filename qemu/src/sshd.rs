//! A real OpenSSH server on 127.0.0.1 for the ssh target's tests: its own configuration, host
//! key and port, one key pair per client, each key's forced command an `rkdump receive` into one
//! dump root. Further clients can get an ordinary shell ([`SshServer::add_shell_client`]) or
//! OpenSSH's own `sftp-server`, the SFTP server of a stock installation
//! ([`SshServer::add_sftp_server_client`]). Nothing listens beyond the loopback.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rkdump::format::bytes::to_usize;

/// The sshd binary.
const SSHD: &str = "/usr/sbin/sshd";
/// OpenSSH's SFTP server: the `Subsystem sftp` of a stock sshd (which sshd needs to accept the
/// sftp subsystem before running a forced command), and the forced command of
/// [`SshServer::add_sftp_server_client`].
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// A client allowed to send dumps.
#[derive(Debug, Clone)]
pub struct Client {
    /// Name (its directory under the root).
    pub name: String,
    /// Private key file.
    pub key: PathBuf,
}

/// A running sshd; stopped when dropped.
#[derive(Debug)]
pub struct SshServer {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Dump root of `rkdump receive`.
    pub root: PathBuf,
    /// The clients, in the order given.
    pub clients: Vec<Client>,
    /// The server's host key, as a known_hosts key field (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// sshd's log (`-E`).
    pub log: PathBuf,
    /// sshd's `AuthorizedKeysFile` (every client's line).
    pub authorized_keys: PathBuf,
    dir: PathBuf,
    child: Child,
}

/// Runs `ssh-keygen` to make an ed25519 key pair at `path` (and `path.pub`).
pub fn make_key(path: &Path) -> Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "rkdump-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .context("running ssh-keygen")?;
    ensure!(status.success(), "ssh-keygen failed for {}", path.display());
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl SshServer {
    /// Starts sshd in `dir` with one key per client name; `receive_args` are added to every
    /// forced `rkdump receive` (a quota, a reserve).
    pub fn start(dir: &Path, rkdump: &Path, names: &[&str], receive_args: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let root = dir.join("dumps");
        std::fs::create_dir_all(&root)?;
        let host_key = dir.join("host_key");
        if !host_key.exists() {
            make_key(&host_key)?;
        }
        let mut authorized = String::new();
        let mut clients = Vec::new();
        for name in names {
            let key = dir.join(format!("id_{name}"));
            if !key.exists() {
                make_key(&key)?;
            }
            let public = std::fs::read_to_string(format!("{}.pub", key.display()))?;
            authorized.push_str(&format!(
                "command=\"{} receive --root {} --client {name} {receive_args}\",restrict {}",
                rkdump.display(),
                root.display(),
                public.trim()
            ));
            authorized.push('\n');
            clients.push(Client {
                name: (*name).to_owned(),
                key,
            });
        }
        let authorized_keys = dir.join("authorized_keys");
        std::fs::write(&authorized_keys, authorized)?;
        let port = free_port()?;
        let log = dir.join("sshd.log");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\n\
                 AuthorizedKeysFile {}\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nMaxStartups 64:30:100\nMaxSessions 64\n\
                 Subsystem sftp {SFTP_SERVER}\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized_keys.display()
            ),
        )?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting sshd")?;
        let public = std::fs::read_to_string(format!("{}.pub", host_key.display()))?;
        let host_key_field = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let server = Self {
            port,
            root,
            clients,
            host_key: host_key_field,
            log,
            authorized_keys,
            dir: dir.to_owned(),
            child,
        };
        server.wait_listening(Duration::from_secs(20))?;
        Ok(server)
    }

    fn wait_listening(&self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "sshd did not listen on 127.0.0.1:{} within {limit:?}: {}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Adds a client whose key logs in to an ordinary shell, without a forced command: the
    /// stock server that kdump-utils' `dd` streams need. Returns its index in `clients`.
    pub fn add_shell_client(&mut self, name: &str) -> Result<usize> {
        self.add_client(name, None)
    }

    /// Adds a client whose key is forced into OpenSSH's own [`SFTP_SERVER`] instead of
    /// `rkdump receive`: what a stock server runs for the sftp subsystem, started in `start`
    /// (`sftp-server -d`), so that relative paths land there. `-d` is a starting directory, not
    /// a jail: tests keep the client inside `start` by giving it absolute paths under it.
    /// Returns its index in `clients`.
    pub fn add_sftp_server_client(&mut self, name: &str, start: &Path) -> Result<usize> {
        let start = start.display().to_string();
        ensure!(
            !start.contains(['"', '\\', '\'', '\n']),
            "{start}: not usable in a forced command"
        );
        self.add_client(
            name,
            Some(format!("command=\"{SFTP_SERVER} -d '{start}'\",restrict")),
        )
    }

    /// Makes `name`'s key and authorizes it with `options` (an `authorized_keys` options field).
    fn add_client(&mut self, name: &str, options: Option<String>) -> Result<usize> {
        let key = self.dir.join(format!("id_{name}"));
        if !key.exists() {
            make_key(&key)?;
        }
        let public = std::fs::read_to_string(format!("{}.pub", key.display()))?;
        let mut authorized = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)?;
        match options {
            Some(options) => writeln!(authorized, "{options} {}", public.trim())?,
            None => writeln!(authorized, "{}", public.trim())?,
        }
        self.clients.push(Client {
            name: name.to_owned(),
            key,
        });
        Ok(self.clients.len() - 1)
    }

    /// A known_hosts line for this server as reached at `host:port` (OpenSSH writes the bare
    /// host for port 22).
    pub fn known_hosts_line(&self, host: &str, port: u16) -> String {
        if port == 22 {
            format!("{host} {}\n", self.host_key)
        } else {
            format!("[{host}]:{port} {}\n", self.host_key)
        }
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder on 127.0.0.1 that cuts its first connection after `cut_after` bytes from
/// the client, then forwards later connections whole: a link that drops mid-transfer.
#[derive(Debug)]
pub struct CuttingProxy {
    /// Port to connect to.
    pub port: u16,
    cut: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    /// Starts forwarding to 127.0.0.1:`target`.
    pub fn start(target: u16, cut_after: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let cut = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (cut2, forwarded2, stop2) = (cut.clone(), forwarded.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut first = true;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let limit = if first { Some(cut_after) } else { None };
                first = false;
                let (cut3, forwarded3) = (cut2.clone(), forwarded2.clone());
                std::thread::spawn(move || pump(client, server, limit, &cut3, &forwarded3));
            }
        });
        Ok(Self {
            port,
            cut,
            forwarded,
            stop,
        })
    }

    /// Whether the first connection was cut.
    pub fn was_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Client bytes forwarded in all.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies both ways; the client-to-server direction stops after `limit` bytes, and then both
/// sockets are shut.
fn pump(
    client: TcpStream,
    server: TcpStream,
    limit: Option<u64>,
    cut: &AtomicBool,
    forwarded: &AtomicU64,
) {
    let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let (mut from, mut to) = (server, client);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
    });
    let (mut from, mut to) = (client_read, server_write);
    let mut buffer = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(limit) if total + n as u64 >= limit => {
                let keep = to_usize(limit - total); // at most n
                let _ = to.write_all(&buffer[..keep]);
                forwarded.fetch_add(keep as u64, Ordering::Relaxed);
                cut.store(true, Ordering::Relaxed);
                break;
            }
            _ => n,
        };
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
        total += n as u64;
        forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    let _ = back.join();
}
