//! One QEMU guest under TCG, watched through its serial console.
//!
//! The guest's scripts print `RKDUMP-LAB: <stage> ...` lines; [`Vm::wait_for`] waits for the next
//! one with a deadline. Every line is also appended to the run's serial log, and a failure names
//! the stage that did not arrive and quotes the log's tail, so a broken run says where it broke.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Prefix of the stage lines the guest scripts print.
pub const MARKER: &str = "RKDUMP-LAB: ";

/// How to start a guest.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel image.
    pub kernel: PathBuf,
    /// initramfs image.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Number of vCPUs.
    pub cpus: u32,
    /// CPU model (`-cpu`), QEMU's default when `None`.
    pub cpu_model: Option<String>,
    /// Raw disk images, attached as virtio disks vda, vdb, ...
    pub disks: Vec<PathBuf>,
    /// Further QEMU arguments (devices, networking).
    pub extra_args: Vec<String>,
    /// Let a guest reboot restart the machine (without it, QEMU exits: `-no-reboot`).
    pub allow_reboot: bool,
}

/// A stage line seen on the console.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The stage name (first word after the marker).
    pub name: String,
    /// The rest of the line.
    pub detail: String,
    /// When it arrived, from QEMU's start.
    pub at: Duration,
}

/// How [`Vm::wait_exit_or_text`] ended.
#[derive(Debug)]
pub enum Ended {
    /// QEMU exited (the guest rebooted or powered off), this long after its start.
    Exited(ExitStatus, Duration),
    /// A console line with the pattern came first (the guest is still running).
    Text(Stage),
}

/// A running guest.
pub struct Vm {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Receiver<String>,
    log_path: PathBuf,
    started: Instant,
}

impl Vm {
    /// Starts QEMU; the serial console is logged to `log_path`.
    pub fn start(config: &VmConfig, log_path: &Path) -> Result<Self> {
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-accel", "tcg", "-nodefaults", "-display", "none"])
            .args(["-serial", "stdio", "-monitor", "none"])
            .args(["-m", &config.memory_mib.to_string()])
            .args(["-smp", &config.cpus.to_string()])
            .arg("-kernel")
            .arg(&config.kernel)
            .arg("-initrd")
            .arg(&config.initrd)
            .args(["-append", &config.cmdline]);
        if !config.allow_reboot {
            command.arg("-no-reboot");
        }
        if let Some(model) = &config.cpu_model {
            command.args(["-cpu", model]);
        }
        for disk in &config.disks {
            command
                .arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", disk.display()));
        }
        command.args(&config.extra_args);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let log = std::fs::File::create(log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || forward_console(stdout, log, &sender));
        Ok(Self {
            child,
            stdin,
            lines,
            log_path: log_path.to_owned(),
            started: Instant::now(),
        })
    }

    /// Waits up to `timeout` for the stage line `name`, skipping other stage lines.
    pub fn wait_for(&mut self, name: &str, timeout: Duration) -> Result<Stage> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(stage) = self.parse_stage(&line) {
                        if stage.name == name {
                            return Ok(stage);
                        }
                        if stage.name == "fail" {
                            self.kill();
                            bail!(self.failure(name, &format!("guest reported: {}", stage.detail)));
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!(self.failure(name, &format!("no sign of it within {timeout:?}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!(self.failure(name, &format!("QEMU exited first ({status})")));
                }
            }
        }
    }

    /// Waits up to `timeout` for a console line containing `pattern`, reported as stage
    /// `name` (the line is its detail).
    pub fn wait_for_text(&mut self, name: &str, pattern: &str, timeout: Duration) -> Result<Stage> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(pattern) => {
                    return Ok(Stage {
                        name: name.to_owned(),
                        detail: line.trim().to_owned(),
                        at: self.started.elapsed(),
                    });
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!(self.failure(
                        name,
                        &format!("no console line with {pattern:?} within {timeout:?}")
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!(self.failure(
                        name,
                        &format!("QEMU exited first ({status}) before {pattern:?}")
                    ));
                }
            }
        }
    }

    /// Waits up to `timeout` for QEMU to exit or a console line containing `pattern` (a
    /// panic of the capture kernel), whichever comes first; QEMU is killed at the timeout.
    pub fn wait_exit_or_text(
        &mut self,
        name: &str,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Ended> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(pattern) => {
                    return Ok(Ended::Text(Stage {
                        name: name.to_owned(),
                        detail: line.trim().to_owned(),
                        at: self.started.elapsed(),
                    }));
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!(self.failure(
                        name,
                        &format!("neither an exit nor {pattern:?} within {timeout:?}")
                    ));
                }
                // The console closes when QEMU exits.
                Err(RecvTimeoutError::Disconnected) => {
                    let at = self.started.elapsed();
                    return Ok(Ended::Exited(self.child.wait()?, at));
                }
            }
        }
    }

    /// Follows the console until QEMU exits (the guest powered off, or rebooted without
    /// [`VmConfig::allow_reboot`]), calling `on_line` with every line and the time since QEMU's
    /// start; QEMU is killed after `timeout`, and a stage line `fail` ends the wait with an
    /// error.
    pub fn follow(
        &mut self,
        timeout: Duration,
        on_line: &mut dyn FnMut(&str, Duration),
    ) -> Result<(ExitStatus, Duration)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(stage) = self.parse_stage(&line)
                        && stage.name == "fail"
                    {
                        self.kill();
                        bail!(self.failure("exit", &format!("guest reported: {}", stage.detail)));
                    }
                    on_line(&line, self.started.elapsed());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!(self.failure("exit", &format!("QEMU still running after {timeout:?}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let at = self.started.elapsed();
                    return Ok((self.child.wait()?, at));
                }
            }
        }
    }

    /// Types `text` on the guest's serial console.
    pub fn send(&mut self, text: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the console input is closed")?;
        stdin.write_all(text.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Whether QEMU is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for QEMU to exit (the guest rebooted or powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, self.started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        bail!(self.failure("exit", &format!("QEMU still running after {timeout:?}")))
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn parse_stage(&self, line: &str) -> Option<Stage> {
        let rest = &line[line.find(MARKER)? + MARKER.len()..];
        let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(Stage {
            name: name.trim().to_owned(),
            detail: detail.trim().to_owned(),
            at: self.started.elapsed(),
        })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn failure(&self, stage: &str, why: &str) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "stage '{stage}' failed: {why}\nserial log {} (last 40 lines):\n{tail}",
            self.log_path.display()
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

fn forward_console(stdout: ChildStdout, mut log: std::fs::File, sender: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(stdout);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let _ = log.write_all(&raw);
                let line = String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                if sender.send(line).is_err() {
                    return;
                }
            }
        }
    }
}
