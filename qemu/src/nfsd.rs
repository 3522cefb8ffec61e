//! A real NFS server for network-target scenarios: nfs-ganesha with its VFS backend, NFSv4 over
//! TCP on one port of 127.0.0.1, no rpcbind, dbus or systemd. Guests reach it through a
//! `guestfwd` forward (see [`crate::scenario::Network`]).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sshd::free_port;

const GANESHA: &str = "/usr/bin/ganesha.nfsd";

/// A running nfs-ganesha exporting one directory as `/export`; stopped when dropped.
#[derive(Debug)]
pub struct NfsServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The exported directory.
    pub export: PathBuf,
    /// Its log.
    pub log: PathBuf,
    child: Option<Child>,
}

impl NfsServer {
    /// Starts ganesha in `dir` (created), exporting `dir/export` read-write without root
    /// squashing, and waits until it listens.
    pub fn start(dir: &Path) -> Result<Self> {
        let export = dir.join("export");
        let recovery = dir.join("recovery");
        std::fs::create_dir_all(&export)?;
        std::fs::create_dir_all(&recovery)?;
        let port = free_port()?;
        let config = dir.join("ganesha.conf");
        std::fs::write(
            &config,
            format!(
                "NFS_CORE_PARAM {{ Protocols = 4; Bind_addr = 127.0.0.1; NFS_Port = {port}; \
                 Enable_NLM = false; Enable_RQUOTA = false; }}\n\
                 NFSV4 {{ Graceless = true; RecoveryRoot = {}; }}\n\
                 EXPORT {{ Export_Id = 1; Path = {}; Pseudo = /export; Access_Type = RW; \
                 Protocols = 4; Transports = TCP; Squash = No_Root_Squash; SecType = sys; \
                 FSAL {{ Name = VFS; }} }}\n\
                 LOG {{ Default_Log_Level = WARN; }}\n",
                recovery.display(),
                export.display()
            ),
        )?;
        let log = dir.join("ganesha.log");
        let child = Command::new(GANESHA)
            .arg("-F")
            .arg("-f")
            .arg(&config)
            .arg("-L")
            .arg(&log)
            .arg("-p")
            .arg(dir.join("ganesha.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ganesha.nfsd")?;
        let mut server = Self {
            port,
            export,
            log,
            child: Some(child),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                server.stop();
                bail!(
                    "ganesha did not listen on 127.0.0.1:{port} within 30 s: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Kills the server (a server that dies mid-dump).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
