//! rkdump as a user meets it: the Debian package installed with `dpkg -i` on a real installed
//! Debian 12 system ([`debian`](crate::debian)), the service armed at boot, a crash, the capture
//! kernel's dump in /var/crash, the reboot, and `rkdump status` reporting the dump. The README's
//! demo runs this flow and prints it; the package tests assert on it.
//!
//! # How a flow runs
//!
//! The guest follows a *plan*: line N of `/var/lib/lab/plan` names the phases of its Nth boot
//! (the shell functions of [`SCRIPT`], run by a oneshot unit after multi-user.target), and the
//! last phase of a boot ends it: a crash, `rkdump test --force` or a power-off. Every command's
//! output goes to [`LOG`] as `== <boot>.<step>: <command>` ... `== <boot>.<step>: exit <status>`
//! and every finished step is announced on the console. A boot counter on the disk says which
//! line comes next, so one QEMU process ([`Flow::run`]) can go through several boots (the
//! capture kernel reboots into the system), and a later process can boot another kernel from
//! the disk's own /boot ([`Flow::boot_installed_kernel`]) as a reboot into an upgraded kernel
//! does. The host follows the console and reports [`Event`]s with their times since the flow
//! started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::debian::{BootOptions, DebianDisk, DebianSystem};
use crate::vm::Vm;

/// Where the guest logs every step.
pub const LOG: &str = "/var/lib/lab/flow.log";

/// Where the package is put on the guest's disk.
pub const DEB: &str = "/root/rkdump.deb";

/// Where a second kernel package is put on the guest's disk (phase `upgrade`).
pub const KERNEL_DEB: &str = "/root/linux-image.deb";

/// The README demo's plan: install on a system booted with crashkernel= (the package starts
/// the service), look, crash; after the capture kernel's reboot, look again and power off.
pub const DEMO_PLAN: &[&str] = &["install armed crash", "armed power_off"];

/// A system's life with the package: installed on a system booted without crashkernel= (the
/// service does not run; `rkdump crashkernel --set` writes the value), booted with it (the
/// service arms at boot), a crash, `rkdump test --force`, a second kernel installed and booted
/// (the host boots it from the disk: [`Flow::boot_installed_kernel`]), a crash on it, then
/// removal and purge. Boot 3 also replays the boot's udev coldplug (no reload may follow). Three QEMU runs: boot 1, boots 2-4, boots 5-6.
pub const LIFECYCLE_PLAN: &[&str] = &[
    "install unreserved power_off",
    "armed crash",
    "armed coldplug test_force",
    "armed upgrade power_off",
    "armed crash",
    "armed remove power_off",
];

/// The guest's side: one shell function per phase.
pub const SCRIPT: &str = r#"#!/bin/sh
# The lab's installed flow: run this boot's phases (line N of /var/lib/lab/plan at boot N).
log=/var/lib/lab/flow.log
boot=$(cat /var/lib/lab/boot 2>/dev/null || echo 0)
boot=$((boot + 1))
echo $boot > /var/lib/lab/boot
sync
stage() { echo "RKDUMP-LAB: $*" > /dev/console; }
step() {
  name=$boot.$1; shift
  { echo "== $name: $*"; "$@"; echo "== $name: exit $?"; } >> $log 2>&1
  stage "$name"
}
# The package as a user installs it.
install() {
  step dpkg-install dpkg -i /root/rkdump.deb
  step enabled systemctl is-enabled rkdump.service
}
# Booted without crashkernel=: nothing to arm; the value to set, and setting it.
unreserved() {
  step inactive systemctl is-active rkdump.service
  step status rkdump status
  step crashkernel rkdump crashkernel
  step crashkernel-set rkdump crashkernel --set
  step grub-cfg cat /etc/default/grub.d/rkdump.cfg
}
# What a user looks at on an armed system.
armed() {
  step active systemctl is-active rkdump.service
  step journal journalctl -b -u rkdump.service --no-pager -o cat
  step status rkdump status
  step images ls /var/lib/rkdump
}
# The boot's coldplug again: the synthetic "add" events udev replays for every CPU and memory
# block (and synthetic "online" ones for memory) are no hotplug, and must not reload the service.
coldplug() {
  step coldplug udevadm trigger --settle --action=add --subsystem-match=cpu --subsystem-match=memory
  step memory-online udevadm trigger --settle --action=online --subsystem-match=memory
  sleep 3
  step after-coldplug systemctl is-active rkdump.service
  step reloads sh -c 'journalctl -b -u rkdump.service -o cat | grep -c Reloading'
}
crash() {
  sync
  stage "$boot.crashing"
  sleep 1
  echo c > /proc/sysrq-trigger
}
test_force() {
  sync
  stage "$boot.testing"
  rkdump test --force >> $log 2>&1
  stage "$boot.test-returned"
}
# What the refusal beside kdump-tools tells the user to do.
takeover() {
  step disable-other systemctl disable --now kdump-tools.service
  step start rkdump start
  step status-after rkdump status
}
# A second kernel package, booted next (the host boots the disk's /boot).
upgrade() {
  step kernel-install dpkg -i /root/linux-image.deb
  step boot-dir ls /boot
}
# Removal keeps images, configuration and dumps; purge removes rkdump's state and
# configuration, never the dumps.
remove() {
  step remove dpkg -r rkdump
  step after-remove ls /var/lib/rkdump /var/crash /etc/kdump.conf
  step purge dpkg --purge rkdump
  step after-purge ls -d /var/lib/rkdump /etc/kdump.conf /var/crash
}
power_off() {
  sync
  stage "$boot.done"
  systemctl poweroff
}
phases=$(sed -n "${boot}p" /var/lib/lab/plan)
[ -n "$phases" ] || { stage "fail no plan for boot $boot"; exit 1; }
for phase in $phases; do
  "$phase"
done
"#;

/// What the host saw on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A kernel started (`Linux version` line): the system's, or the capture kernel after a
    /// crash.
    KernelBooting {
        /// The capture kernel (the first boot after a crash), not the system's.
        capture: bool,
    },
    /// A step of the plan finished (`<boot>.<step>`), or a phase announced itself
    /// (`<boot>.crashing`, `<boot>.testing`, `<boot>.done`).
    Step(String),
    /// The kernel took the sysrq crash.
    Crashed,
    /// rkdump started as the capture kernel's /init.
    CaptureStarted,
    /// rkdump wrote the dump (its summary line).
    DumpWritten(String),
    /// rkdump's final action (reboot, poweroff, ...).
    FinalAction(String),
}

/// One [`EventKind`] and when it came, from the flow's start.
#[derive(Debug, Clone)]
pub struct Event {
    /// Time since [`Flow::create`].
    pub at: Duration,
    /// What happened.
    pub kind: EventKind,
}

/// One guest disk going through a plan.
pub struct Flow {
    /// Where the disk, the serial logs and copies of the guest's files are.
    pub dir: PathBuf,
    /// The disk (its kernel and initrd are the ones [`Flow::run`] boots).
    pub disk: DebianDisk,
    started: Instant,
    sessions: usize,
}

impl Flow {
    /// A fresh disk of `system` in `dir` (emptied first) holding the package `deb`, the plan
    /// (one line of phases per boot) and `files` (guest path, host file).
    pub fn create(
        system: &DebianSystem,
        dir: &Path,
        deb: &Path,
        plan: &[&str],
        files: &[(&str, &Path)],
    ) -> Result<Self> {
        let started = Instant::now();
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut builder = system
            .disk()
            .host_file(DEB, 0o644, deb)?
            .file(
                "/var/lib/lab/plan",
                0o644,
                (plan.join("\n") + "\n").as_bytes(),
            )
            .lab_script(
                "lab-flow",
                "the installed flow's phases for this boot",
                SCRIPT,
            );
        for (path, host) in files {
            builder = builder.host_file(path, 0o644, host)?;
        }
        let disk = builder.create(&dir.join("root.img"))?;
        Ok(Self {
            dir: dir.to_owned(),
            disk,
            started,
            sessions: 0,
        })
    }

    /// Boots the disk with `options` and follows the guest through its boots until QEMU exits
    /// (a `power_off` phase, or a reboot when `options.allow_reboot` is false), at most
    /// `timeout`; every event goes to `on_event` as it happens and all are returned. An error
    /// when QEMU fails or is killed at the timeout.
    pub fn run(
        &mut self,
        options: &BootOptions,
        timeout: Duration,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Vec<Event>> {
        self.sessions += 1;
        let log = self.dir.join(format!("serial-{}.log", self.sessions));
        let mut vm = Vm::start(&self.disk.vm_config(options), &log)?;
        let offset = self.started.elapsed();
        let mut events = Vec::new();
        let mut crashed = false;
        let (status, _) = vm.follow(timeout, &mut |line, at| {
            let Some(kind) = classify(line, &mut crashed) else {
                return;
            };
            let event = Event {
                at: offset + at,
                kind,
            };
            on_event(&event);
            events.push(event);
        })?;
        if !status.success() {
            bail!("QEMU failed ({status}); serial log {}", log.display());
        }
        Ok(events)
    }

    /// Makes the next [`Flow::run`] boot kernel `release` as installed on the disk
    /// (`/boot/vmlinuz-<release>` and `/boot/initrd.img-<release>`, copied out): a reboot into
    /// an upgraded kernel.
    pub fn boot_installed_kernel(&mut self, release: &str) -> Result<()> {
        let copy = |name: String| -> Result<PathBuf> {
            let copy = self.dir.join(&name);
            std::fs::write(&copy, self.disk.read_file(&format!("/boot/{name}"))?)
                .with_context(|| format!("writing {}", copy.display()))?;
            Ok(copy)
        };
        let vmlinuz = copy(format!("vmlinuz-{release}"))?;
        let initrd = copy(format!("initrd.img-{release}"))?;
        self.disk.vmlinuz = vmlinuz;
        self.disk.initrd = initrd;
        Ok(())
    }

    /// The guest's step log ([`LOG`]); only while QEMU is not running.
    pub fn log(&self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.disk.read_file(LOG)?).into_owned())
    }

    /// The dump directories in the guest's /var/crash (copied out, sorted by name, which is by
    /// time); only while QEMU is not running.
    pub fn dumps(&self) -> Result<Vec<PathBuf>> {
        let into = self.dir.join("var-crash");
        if into.exists() {
            std::fs::remove_dir_all(&into)?;
        }
        let copy = self.disk.read_dir("/var/crash", &into)?;
        let mut dumps = Vec::new();
        for entry in std::fs::read_dir(&copy)? {
            let path = entry?.path();
            if path.is_dir() {
                dumps.push(path);
            }
        }
        dumps.sort();
        Ok(dumps)
    }
}

/// The event a console line is, if any; `crashed` tells a capture kernel's boot from the
/// system's.
fn classify(line: &str, crashed: &mut bool) -> Option<EventKind> {
    if let Some((_, rest)) = line.split_once(crate::vm::MARKER) {
        return Some(EventKind::Step(rest.trim().to_owned()));
    }
    if line.contains("] Linux version ") {
        let capture = std::mem::take(crashed);
        return Some(EventKind::KernelBooting { capture });
    }
    if line.contains("sysrq: Trigger a crash") {
        *crashed = true;
        return Some(EventKind::Crashed);
    }
    if line.contains("capture runtime starting") {
        return Some(EventKind::CaptureStarted);
    }
    if let Some((_, summary)) = line.split_once("dump summary: ") {
        return Some(EventKind::DumpWritten(summary.trim().to_owned()));
    }
    if let Some((_, action)) = line.split_once("final action: ") {
        return Some(EventKind::FinalAction(action.trim().to_owned()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_become_events_and_a_boot_after_a_crash_is_the_capture_kernel() {
        let mut crashed = false;
        let mut events = Vec::new();
        for line in [
            "[    0.000000] Linux version 6.1.0-44-cloud-amd64 (debian-kernel@lists.debian.org)",
            "RKDUMP-LAB: 1.dpkg-install",
            "[   80.1] sysrq: Trigger a crash",
            "[    0.000000] Linux version 6.1.0-44-cloud-amd64 (debian-kernel@lists.debian.org)",
            "rkdump: rkdump 0.1.0 capture runtime starting",
            "rkdump: dump summary: {\"complete\":true}",
            "rkdump: final action: reboot",
            "[    0.000000] Linux version 6.1.0-44-cloud-amd64 (debian-kernel@lists.debian.org)",
            "[    3.2] EXT4-fs (vda): mounted filesystem",
        ] {
            events.extend(classify(line, &mut crashed));
        }
        assert_eq!(
            events,
            [
                EventKind::KernelBooting { capture: false },
                EventKind::Step("1.dpkg-install".into()),
                EventKind::Crashed,
                EventKind::KernelBooting { capture: true },
                EventKind::CaptureStarted,
                EventKind::DumpWritten("{\"complete\":true}".into()),
                EventKind::FinalAction("reboot".into()),
                EventKind::KernelBooting { capture: false },
            ]
        );
    }

    #[test]
    fn the_script_defines_every_phase_a_plan_names() {
        let defined: Vec<&str> = SCRIPT
            .lines()
            .filter_map(|l| l.strip_suffix("() {"))
            .collect();
        assert_eq!(
            defined,
            [
                "step",
                "install",
                "unreserved",
                "armed",
                "coldplug",
                "crash",
                "test_force",
                "takeover",
                "upgrade",
                "remove",
                "power_off"
            ]
        );
        for phase in DEMO_PLAN
            .iter()
            .chain(LIFECYCLE_PLAN)
            .flat_map(|boot| boot.split_whitespace())
        {
            assert!(defined.contains(&phase), "{phase}");
        }
    }
}
