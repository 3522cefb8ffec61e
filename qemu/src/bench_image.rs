//! `rkdump-lab bench-image`: rkdump's Debian package against Debian's kdump-tools, each with
//! its defaults, on the same installed Debian 12 guest, in one run: the capture images, the
//! smallest working `crashkernel=`, the time from the crash to the capture kernel's reboot, the
//! dump's size and whether crash reads it.
//!
//! The guest is [`Variant::KDUMP_TOOLS`] (the cloud kernel, kdump-tools with `USE_KDUMP=1`),
//! [`Options::memory_mib`] and 2 vCPUs, with rkdump's package in /root and the lab's memory
//! workload. `kdump-tools.service` is disabled on the disk, so that nothing arms at boot: the
//! guest's oneshot unit does everything, in the mode `lab.bench=` on the command line names.
//!
//! 1. `build`: the first `kdump-config load` on the fresh system builds kdump-tools' image
//!    (`/var/lib/kdump/initrd.img-<release>`: its kernel hook, mkinitramfs with `MODULES=dep`)
//!    and loads it; a second load after an unload only loads, so the build time is the
//!    difference. Then `dpkg -i rkdump.deb` (its default kdump.conf: no target line, so
//!    /var/crash on the root, `makedumpfile -z -d 31`); its service arms at once and is
//!    disabled again, `rkdump mkinitrd` builds rkdump's image
//!    (`/var/lib/rkdump/initrd-<release>.img`), then `rkdump start` loads it. The guest powers
//!    off; the host reads both images from the disk with debugfs and unpacks them itself: a
//!    `newc` cpio possibly followed by a compressed one (mkinitramfs' early microcode part, then
//!    the main archive), decompressed with the host's zstd/gzip/xz/lz4, entries counted without
//!    trailers, unpacked size the sum of file data and symlink targets (what `rkdump estimate`
//!    counts).
//! 2. For each tool, a copy of that disk (both images already built, so arming does not
//!    rebuild) boots with `crashkernel=` [`REFERENCE_MIB`], arms (`kdump-config load`, or
//!    `rkdump start`: what each tool's unit runs), fills [`Options::fill_percent`] of memory
//!    with mixed data (page cache and anonymous pages), and crashes with sysrq-c. Then a
//!    bisection ([`next_size`]) finds the smallest reservation that works, down to
//!    [`FLOOR_MIB`] in steps of [`STEP_MIB`] (or [`Options::sizes_mib`], largest first, each
//!    tool stopping at its first failure). The capture works when the capture kernel reboots
//!    (QEMU exits) and the disk then holds a complete dump in `/var/crash`: kdump-tools' a
//!    `dump.<stamp>` flattened file whose records run to the end marker, rkdump's a directory
//!    with `vmcore` and a dump summary saying `"complete":true`. At [`REFERENCE_MIB`] crash
//!    opens each dump with the kernel's debug vmlinux and must show the sysrq backtrace. The
//!    capture time is from the first kernel's panic line on the console to QEMU's exit. A
//!    second kernel panic (the capture kernel's) ends a run at once; every wait is bounded.
//! 3. [`markdown`] prints the tables for BENCHMARKS.md.
//!
//! Under TCG on two cores an idle 1 GiB run takes about 20 minutes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rkdump::format::cpio;

use crate::debian::{BootOptions, DebianDisk, DebianSystem, Variant};
use crate::vm::{Ended, Vm};

/// The reservation the capture time is compared at, tried first; the search for the smallest
/// working one starts from it.
pub const REFERENCE_MIB: u32 = 256;
/// The search's floor: it assumes nothing below works (the capture kernel alone needs 72M on
/// the lab's guest) and never tries it.
pub const FLOOR_MIB: u32 = 56;
/// The search's resolution.
pub const STEP_MIB: u32 = 8;
/// The root filesystem's UUID on the benchmark's disk.
const UUID: &str = "be4c0000-1111-4222-8333-1a9e00000001";
/// Where the guest records its figures.
const RECORD: &str = "/var/lib/lab/bench.txt";
/// Where the guest logs its commands' output.
const LOG: &str = "/var/lib/lab/bench.log";

/// The guest's steps, by `lab.bench=` on the command line.
const SCRIPT: &str = r#"#!/bin/sh
# lab-bench: the bench-image guest's steps (qemu/src/bench_image.rs); the mode is lab.bench=.
record=/var/lib/lab/bench.txt
log=/var/lib/lab/bench.log
mkdir -p /var/lib/lab
stage() { echo "RKDUMP-LAB: $*" > /dev/console; }
now() { date +%s.%N; }
# timed NAME COMMAND...: its output goes to the log, "NAME STATUS START END" to the record.
timed() {
  name=$1; shift
  echo "== $name: $*" >> $log
  start=$(now)
  "$@" >> $log 2>&1
  status=$?
  end=$(now)
  echo "== $name: exit $status" >> $log
  echo "$name $status $start $end" >> $record
  sync
  stage "$name" "$status"
}
loaded() { cat /sys/kernel/kexec_crash_loaded; }
mode=$(sed -n 's/.*lab\.bench=\([a-z-]*\).*/\1/p' /proc/cmdline)
release=$(uname -r)
stage mode "$mode"
case "$mode" in
build)
  timed kdump-tools-first-load kdump-config load
  echo "kdump-tools-loaded - $(loaded)" >> $record
  timed kdump-tools-unload kdump-config unload
  timed kdump-tools-load kdump-config load
  timed kdump-tools-unload-2 kdump-config unload
  # rkdump from its package (its default kdump.conf); its service armed at once (crashkernel=
  # is reserved) and is disabled again: the runs arm with what the unit runs, `rkdump start`.
  timed rkdump-install dpkg -i /root/rkdump.deb
  systemctl disable --now rkdump.service >> $log 2>&1
  timed rkdump-mkinitrd rkdump mkinitrd
  timed rkdump-start rkdump start
  echo "rkdump-loaded - $(loaded)" >> $record
  timed rkdump-stop rkdump stop
  echo "kdump-tools-image /var/lib/kdump/initrd.img-$release" >> $record
  echo "rkdump-image /var/lib/rkdump/initrd-$release.img" >> $record
  sync
  stage built
  systemctl --no-block poweroff
  ;;
kdump-tools|rkdump)
  if [ "$mode" = kdump-tools ]; then
    timed arm kdump-config load
  else
    timed arm rkdump start
  fi
  if [ "$(loaded)" != 1 ]; then
    stage armed 0
    systemctl --no-block poweroff
    exit 0
  fi
  stage armed 1
  sync
  fill=$(sed -n 's/.*lab\.fill=\([0-9]*\).*/\1/p' /proc/cmdline)
  stage crashing
  if [ "${fill:-0}" -gt 0 ]; then
    # Data in memory: page cache and anonymous pages of mixed content up to fill% of
    # MemTotal, then the workload crashes the kernel with sysrq-c itself.
    mkdir -p /var/tmp/lab-fill
    /usr/local/sbin/lab-workload --fill-percent "$fill" --files-dir /var/tmp/lab-fill >> $log 2>&1
  fi
  # The console's output drains before the panic (a line written just before can be lost).
  sleep 1
  echo c > /proc/sysrq-trigger
  ;;
*)
  stage fail "unknown lab.bench mode '$mode'"
  ;;
esac
"#;

/// One of the two tools compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Debian's kdump-tools (mkinitramfs' image, the whole system booted to its dump unit).
    KdumpTools,
    /// rkdump (`rkdump mkinitrd`'s image, rkdump as `/init`).
    Rkdump,
}

impl Tool {
    /// The name in tables and in `lab.bench=`.
    pub fn name(self) -> &'static str {
        match self {
            Self::KdumpTools => "kdump-tools",
            Self::Rkdump => "rkdump",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The reservations to try, in MiB, largest first, each tool stopping at its first
    /// failure; empty: [`REFERENCE_MIB`], then a bisection down to [`FLOOR_MIB`] in steps of
    /// [`STEP_MIB`] ([`next_size`]).
    pub sizes_mib: Vec<u32>,
    /// Guest memory.
    pub memory_mib: u32,
    /// Memory filled with data before the crash, in percent of MemTotal (0: idle).
    pub fill_percent: u32,
    /// The bound of each wait: a boot to the unit, the first load, a capture.
    pub timeout: Duration,
    /// The run's directory (disks, serial logs, what was read back).
    pub dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sizes_mib: Vec::new(),
            memory_mib: 1024,
            fill_percent: 0,
            timeout: Duration::from_secs(300),
            dir: crate::cache::root().join("lab/bench-image"),
        }
    }
}

/// One tool's image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Whose.
    pub tool: Tool,
    /// Its path in the guest.
    pub path: String,
    /// Bytes as loaded.
    pub packed: u64,
    /// Bytes of file data once unpacked.
    pub unpacked: u64,
    /// Entries (directories, files, links, nodes; no trailers).
    pub entries: u64,
    /// How the image is laid out (`cpio 12 entries + zstd: cpio 900 entries`).
    pub layout: String,
    /// Seconds the build took in the guest.
    pub build_seconds: f64,
    /// Seconds the load alone took (with the image current).
    pub load_seconds: f64,
}

/// One capture attempt.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Whose.
    pub tool: Tool,
    /// The reservation.
    pub crashkernel_mib: u32,
    /// Whether a complete dump was written and the capture kernel rebooted.
    pub works: bool,
    /// What happened (the dump file and its size, or why it failed).
    pub detail: String,
    /// Seconds from the crash to the capture kernel's reboot (QEMU's exit).
    pub capture_seconds: Option<f64>,
    /// Bytes of the dump file.
    pub dump_bytes: Option<u64>,
    /// Whether crash (with the kernel's debug vmlinux) shows the sysrq panic's backtrace in
    /// the dump; checked at [`REFERENCE_MIB`] only.
    pub crash_reads: Option<bool>,
    /// The run's serial log (kept for failures).
    pub serial_log: PathBuf,
}

/// The whole benchmark's figures.
#[derive(Debug, Clone)]
pub struct Report {
    /// The kernel release of the guest.
    pub release: String,
    /// kdump-tools' image, then rkdump's.
    pub images: Vec<Image>,
    /// Every capture attempt, in order.
    pub captures: Vec<Capture>,
    /// The sizes tried.
    pub sizes_mib: Vec<u32>,
    /// Guest memory.
    pub memory_mib: u32,
    /// Memory filled with data before each crash, in percent.
    pub fill_percent: u32,
    /// What the first `kdump-config load` took in all (build and load).
    pub kdump_tools_first_load_seconds: f64,
    /// What `rkdump mkinitrd` said about its image.
    pub rkdump_said: String,
    /// Wall time of the whole benchmark.
    pub seconds: f64,
}

impl Report {
    /// The image of `tool`.
    pub fn image(&self, tool: Tool) -> Option<&Image> {
        self.images.iter().find(|i| i.tool == tool)
    }

    /// The smallest reservation whose capture worked, and whether a smaller one was tried
    /// and failed (otherwise the smallest working one is only an upper bound).
    pub fn smallest_working(&self, tool: Tool) -> (Option<u32>, bool) {
        let runs = self.captures.iter().filter(|c| c.tool == tool);
        let smallest = runs
            .clone()
            .filter(|c| c.works)
            .map(|c| c.crashkernel_mib)
            .min();
        let failed_below = runs
            .filter(|c| !c.works)
            .any(|c| smallest.is_none_or(|s| c.crashkernel_mib < s));
        (smallest, failed_below)
    }

    /// The capture at [`REFERENCE_MIB`], when it worked.
    pub fn reference(&self, tool: Tool) -> Option<&Capture> {
        self.captures
            .iter()
            .find(|c| c.tool == tool && c.crashkernel_mib == REFERENCE_MIB && c.works)
    }

    /// The capture time at `mib`, when that capture worked.
    pub fn capture_seconds(&self, tool: Tool, mib: u32) -> Option<f64> {
        self.captures
            .iter()
            .find(|c| c.tool == tool && c.crashkernel_mib == mib && c.works)
            .and_then(|c| c.capture_seconds)
    }
}

/// Runs the benchmark (see the module's documentation).
pub fn run(options: &Options) -> Result<Report> {
    let started = Instant::now();
    let system = DebianSystem::get_variant(&Variant::KDUMP_TOOLS)?;
    let kernel = crate::kernels::Kernel::fetch(Variant::KDUMP_TOOLS.flavor)?;
    let deb = crate::package::build()?;
    let workload = crate::build::static_binary("rkdump-lab", "lab-workload")?;
    let dir = &options.dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let base = system
        .disk()
        .uuid(UUID)
        // Room for the fill's files and a dump of each tool.
        .free_mib(u64::from(options.memory_mib) * 3 + 1024)
        .host_file("/root/rkdump.deb", 0o644, &deb)?
        .host_file("/usr/local/sbin/lab-workload", 0o755, &workload)?
        .dir("/var/crash", 0o755)
        // Nothing arms at boot: the unit does, in the mode the run asks for. (Disabled, not
        // masked: kdump-tools-dump.service runs /etc/init.d/kdump-tools, which exits at once
        // when kdump-tools.service is masked, and the capture would dump nothing.)
        .remove("/etc/systemd/system/basic.target.wants/kdump-tools.service")
        .lab_script("lab-bench", "bench-image steps", SCRIPT)
        .create(&dir.join("base.img"))?;

    eprintln!("bench-image: building both images in the guest");
    let (images, first_load, said) = build_images(&base, dir, options)?;
    for image in &images {
        eprintln!(
            "bench-image: {}: {} bytes packed, {} unpacked, {} entries ({}), built in {:.1} s",
            image.tool.name(),
            image.packed,
            image.unpacked,
            image.entries,
            image.layout,
            image.build_seconds
        );
    }

    let mut captures = Vec::new();
    for tool in [Tool::KdumpTools, Tool::Rkdump] {
        let mut attempt = |mib: u32| -> Result<bool> {
            let capture = capture(&base, tool, mib, &kernel.vmlinux(), options)?;
            eprintln!(
                "bench-image: {} crashkernel={mib}M: {} ({}){}",
                tool.name(),
                if capture.works { "works" } else { "FAILS" },
                capture.detail,
                if capture.works {
                    capture
                        .capture_seconds
                        .map(|s| format!(", crash to reboot {s:.1} s"))
                        .unwrap_or_default()
                } else {
                    // Its disk is kept beside it.
                    format!("; serial log {}", capture.serial_log.display())
                }
            );
            let works = capture.works;
            captures.push(capture);
            Ok(works)
        };
        if options.sizes_mib.is_empty() {
            if !attempt(REFERENCE_MIB)? {
                continue;
            }
            let (mut fails, mut works) = (FLOOR_MIB, REFERENCE_MIB);
            while let Some(mib) = next_size(fails, works, STEP_MIB) {
                if attempt(mib)? {
                    works = mib;
                } else {
                    fails = mib;
                }
            }
        } else {
            for &mib in &options.sizes_mib {
                if !attempt(mib)? {
                    break;
                }
            }
        }
    }
    let mut sizes_mib: Vec<u32> = captures.iter().map(|c| c.crashkernel_mib).collect();
    sizes_mib.sort_unstable_by(|a, b| b.cmp(a));
    sizes_mib.dedup();
    Ok(Report {
        release: system.release,
        images,
        captures,
        sizes_mib,
        memory_mib: options.memory_mib,
        fill_percent: options.fill_percent,
        kdump_tools_first_load_seconds: first_load,
        rkdump_said: said,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The bisection's next reservation: the midpoint of `fails` (the largest size known to fail,
/// or the floor) and `works` (the smallest known to work), rounded down to a multiple of
/// `step`; `None` once they are a step apart.
pub fn next_size(fails: u32, works: u32, step: u32) -> Option<u32> {
    if works <= fails + step {
        return None;
    }
    Some(((fails + works) / 2 / step * step).max(fails + step))
}

/// A line of the guest's record: `NAME STATUS START END`.
struct Timed {
    status: String,
    seconds: f64,
}

fn timed(record: &str, name: &str) -> Result<Timed> {
    let line = record
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .with_context(|| format!("no {name} in the guest's record:\n{record}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, status, start, end] = fields.as_slice() else {
        bail!("bad record line {line:?}");
    };
    Ok(Timed {
        status: (*status).to_owned(),
        seconds: end.parse::<f64>()? - start.parse::<f64>()?,
    })
}

fn field<'a>(record: &'a str, name: &str) -> Result<&'a str> {
    record
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(str::trim)
        .with_context(|| format!("no {name} in the guest's record:\n{record}"))
}

/// Step 1: boots `base` once to build both images; returns them, the first `kdump-config load`'s
/// whole time and rkdump mkinitrd's own summary line.
fn build_images(
    base: &DebianDisk,
    dir: &Path,
    bench: &Options,
) -> Result<(Vec<Image>, f64, String)> {
    let timeout = bench.timeout;
    let options = BootOptions {
        cmdline: "lab.bench=build".into(),
        memory_mib: bench.memory_mib,
        ..BootOptions::default()
    };
    let mut vm = Vm::start(&base.vm_config(&options), &dir.join("build-serial.log"))?;
    vm.wait_for("mode", timeout)?;
    // The first load builds kdump-tools' image (about 60 s under TCG).
    vm.wait_for("built", timeout * 2)?;
    let (status, _) = vm.wait_exit(timeout)?;
    drop(vm);
    if !status.success() {
        bail!("QEMU exited with {status} after the build");
    }
    let record = String::from_utf8(base.read_file(RECORD)?)?;
    let log = String::from_utf8_lossy(&base.read_file(LOG)?).into_owned();
    std::fs::write(dir.join("build-record.txt"), &record)?;
    std::fs::write(dir.join("build-log.txt"), &log)?;
    for name in [
        "kdump-tools-first-load",
        "kdump-tools-load",
        "rkdump-install",
        "rkdump-mkinitrd",
        "rkdump-start",
    ] {
        let step = timed(&record, name)?;
        if step.status != "0" {
            bail!(
                "{name} exited {} in the guest; its log:\n{log}",
                step.status
            );
        }
    }
    for name in ["kdump-tools-loaded", "rkdump-loaded"] {
        if field(&record, name)? != "- 1" {
            bail!("{name}: the capture kernel was not loaded; the guest's log:\n{log}");
        }
    }
    // The second load must not have built again (kdump-config rebuilds when its sysctl copy
    // differs), and rkdump start must have loaded rkdump's image.
    if log.matches("kdump-tools: Generating").count() != 1 {
        bail!("kdump-config built its image other than exactly once; the guest's log:\n{log}");
    }
    let rkdump_image = field(&record, "rkdump-image")?;
    if !log.contains(&format!("with {rkdump_image},")) {
        bail!("rkdump start did not load {rkdump_image}; the guest's log:\n{log}");
    }
    let first = timed(&record, "kdump-tools-first-load")?.seconds;
    let kdump_load = timed(&record, "kdump-tools-load")?.seconds;
    let said = log
        .lines()
        .find(|l| l.starts_with("rkdump: wrote "))
        .unwrap_or_default()
        .to_owned();
    let mut images = Vec::new();
    for (tool, name, build, load) in [
        (
            Tool::KdumpTools,
            "kdump-tools-image",
            first - kdump_load,
            kdump_load,
        ),
        (
            Tool::Rkdump,
            "rkdump-image",
            timed(&record, "rkdump-mkinitrd")?.seconds,
            timed(&record, "rkdump-start")?.seconds,
        ),
    ] {
        let path = field(&record, name)?.to_owned();
        let bytes = base.read_file(&path)?;
        std::fs::write(dir.join(format!("{}.img", tool.name())), &bytes)?;
        let unpacked = unpack(&bytes).with_context(|| format!("unpacking {path}"))?;
        images.push(Image {
            tool,
            path,
            packed: bytes.len() as u64,
            unpacked: unpacked.data_bytes,
            entries: unpacked.entries,
            layout: unpacked.layout,
            build_seconds: build,
            load_seconds: load,
        });
    }
    Ok((images, first, said))
}

/// What an image holds once unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Entries, trailers not counted.
    pub entries: u64,
    /// Bytes of file data and symlink targets.
    pub data_bytes: u64,
    /// Its parts (`cpio 3 entries + zstd: cpio 812 entries`).
    pub layout: String,
}

/// The decompressor of a compressed archive starting `data`, by its magic.
fn decompressor(data: &[u8]) -> Option<(&'static str, &'static str)> {
    const MAGICS: &[(&[u8], &str, &str)] = &[
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", "zstd"),
        (&[0x1f, 0x8b], "gzip", "gzip"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz", "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4", "lz4"),
        (&[0x04, 0x22, 0x4d, 0x18], "lz4", "lz4"),
        (b"BZh", "bzip2", "bzip2"),
    ];
    MAGICS
        .iter()
        .find(|(magic, ..)| data.starts_with(magic))
        .map(|&(_, name, program)| (name, program))
}

/// Unpacks an initramfs as the kernel does: plain `newc` archives (NUL padding between them),
/// and a compressed archive that runs to the end (decompressed with the host's tool).
pub fn unpack(image: &[u8]) -> Result<Unpacked> {
    let mut rest = image;
    let mut parts = Vec::new();
    let mut entries = 0u64;
    let mut data_bytes = 0u64;
    loop {
        let start = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
        rest = &rest[start..];
        if rest.is_empty() {
            break;
        }
        if rest.starts_with(b"070701") {
            let (found, end) = cpio::entries(rest)?;
            entries += found.len() as u64;
            data_bytes += found.iter().map(|e| e.size).sum::<u64>();
            parts.push(format!("cpio {} entries", found.len()));
            rest = &rest[end..];
            continue;
        }
        let Some((name, program)) = decompressor(rest) else {
            bail!(
                "{} bytes before the end: neither a cpio archive nor a known compression",
                rest.len()
            );
        };
        let packed = tempfile::NamedTempFile::new()?;
        std::fs::write(packed.path(), rest)?;
        let output = Command::new(program)
            .arg("-dc")
            .arg(packed.path())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} -dc failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let inner = unpack(&output.stdout)?;
        parts.push(format!("{name}: {}", inner.layout));
        entries += inner.entries;
        data_bytes += inner.data_bytes;
        break;
    }
    Ok(Unpacked {
        entries,
        data_bytes,
        layout: parts.join(" + "),
    })
}

/// Step 2, one run: a copy of `base` crashed with `tool` armed at `mib`.
fn capture(
    base: &DebianDisk,
    tool: Tool,
    mib: u32,
    vmlinux: &Path,
    bench: &Options,
) -> Result<Capture> {
    let (dir, timeout) = (&bench.dir, bench.timeout);
    let name = format!("{}-{mib}M", tool.name());
    let disk = DebianDisk {
        path: dir.join(format!("{name}.img")),
        ..base.clone()
    };
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(&base.path)
        .arg(&disk.path)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!("copying {} failed", base.path.display());
    }
    let serial_log = dir.join(format!("{name}-serial.log"));
    let options = BootOptions {
        crashkernel_mib: Some(mib),
        cmdline: format!("lab.bench={} lab.fill={}", tool.name(), bench.fill_percent),
        memory_mib: bench.memory_mib,
        ..BootOptions::default()
    };
    let mut capture = Capture {
        tool,
        crashkernel_mib: mib,
        works: false,
        detail: String::new(),
        capture_seconds: None,
        dump_bytes: None,
        crash_reads: None,
        serial_log: serial_log.clone(),
    };
    // A wait that fails (the guest hung or QEMU died) fails this run, not the benchmark.
    let first_line = |error: anyhow::Error| {
        error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let mut vm = Vm::start(&disk.vm_config(&options), &serial_log)?;
    let armed = match vm.wait_for("armed", timeout) {
        Ok(armed) => armed,
        Err(error) => {
            capture.detail = format!("the first kernel did not arm: {}", first_line(error));
            return Ok(capture);
        }
    };
    if armed.detail != "1" {
        let _ = vm.wait_exit(timeout);
        drop(vm);
        let log = String::from_utf8_lossy(&disk.read_file(LOG)?).into_owned();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        capture.detail = format!(
            "not armed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
        return Ok(capture);
    }
    // The first kernel's own panic (the crash's time: the console's `crashing` line may come
    // after it), then either the reboot or the capture kernel's panic.
    let waited = vm
        .wait_for_text("panic", "Kernel panic - not syncing", timeout)
        .and_then(|crashed| {
            let ended = vm.wait_exit_or_text("capture", "Kernel panic - not syncing", timeout)?;
            Ok((crashed, ended))
        });
    drop(vm);
    let (crashed, ended) = match waited {
        Ok(waited) => waited,
        Err(error) => {
            capture.detail = format!("no reboot: {}", first_line(error));
            return Ok(capture);
        }
    };
    let rebooted = match ended {
        Ended::Exited(_, at) => {
            capture.capture_seconds = Some((at - crashed.at).as_secs_f64());
            true
        }
        Ended::Text(stage) => {
            capture.detail = format!("the capture kernel panicked: {}", stage.detail);
            false
        }
    };
    let out = dir.join(format!("{name}-out"));
    let found = check_dump(tool, &disk, &out);
    if let Ok((_, dump)) = &found {
        capture.dump_bytes = Some(std::fs::metadata(dump)?.len());
        if rebooted && mib == REFERENCE_MIB {
            let bt = crate::reference::crash(vmlinux, dump, &["bt"]);
            capture.crash_reads = Some(bt.contains("sysrq_handle_crash"));
        }
    }
    // The reference dumps stay (`<tool>-256M-out/`) for a closer look; the others go.
    if mib != REFERENCE_MIB {
        let _ = std::fs::remove_dir_all(&out);
    }
    match found.map(|(what, _)| what) {
        Ok(what) if rebooted => {
            capture.works = true;
            capture.detail = what;
            std::fs::remove_file(&disk.path)?;
            std::fs::remove_file(&serial_log)?;
        }
        Ok(what) => write!(capture.detail, "; the dump: {what}")?,
        Err(why) if rebooted => capture.detail = format!("rebooted, but {why:#}"),
        Err(why) => write!(capture.detail, "; {why:#}")?,
    }
    Ok(capture)
}

/// The complete dump `tool` left in `/var/crash` of `disk`, described, and its copy under
/// `out`; an error says what is missing or incomplete.
fn check_dump(tool: Tool, disk: &DebianDisk, out: &Path) -> Result<(String, PathBuf)> {
    let crash = disk.read_dir("/var/crash", out)?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crash)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let [dump_dir] = dirs.as_slice() else {
        bail!("/var/crash holds {} dump directories, not one", dirs.len());
    };
    let names: Vec<String> = std::fs::read_dir(dump_dir)?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    match tool {
        Tool::KdumpTools => {
            let Some(dump) = names.iter().find(|n| n.starts_with("dump.")) else {
                bail!("no dump.* in {}: {names:?}", dump_dir.display());
            };
            let bytes = std::fs::read(dump_dir.join(dump))?;
            check_flattened(&bytes).with_context(|| format!("{dump} is not complete"))?;
            Ok((
                format!("{dump}, {} bytes, flattened", bytes.len()),
                dump_dir.join(dump),
            ))
        }
        Tool::Rkdump => {
            if !names.iter().any(|n| n == "vmcore") {
                bail!("no vmcore in {}: {names:?}", dump_dir.display());
            }
            let log = std::fs::read_to_string(dump_dir.join("kexec-dmesg.log")).unwrap_or_default();
            if !log.contains("\"complete\":true") {
                bail!("rkdump's dump summary does not say complete");
            }
            let bytes = std::fs::metadata(dump_dir.join("vmcore"))?.len();
            Ok((format!("vmcore, {bytes} bytes"), dump_dir.join("vmcore")))
        }
    }
}

/// Checks that a makedumpfile flattened stream is whole: the signature, then records up to the
/// end marker (offset and size -1) exactly at the end.
pub fn check_flattened(bytes: &[u8]) -> Result<()> {
    const HEADER: usize = 4096;
    if bytes.len() < HEADER || !bytes.starts_with(b"makedumpfile\0") {
        bail!("no flattened header");
    }
    let mut at = HEADER;
    let mut records = 0u64;
    loop {
        let Some(head) = bytes.get(at..at + 16) else {
            bail!("the stream ends after {records} records without the end marker");
        };
        let offset = i64::from_be_bytes(head[..8].try_into()?);
        let size = i64::from_be_bytes(head[8..].try_into()?);
        at += 16;
        if offset == -1 && size == -1 {
            if at != bytes.len() {
                bail!("{} bytes after the end marker", bytes.len() - at);
            }
            if records == 0 {
                bail!("no records");
            }
            return Ok(());
        }
        let size = usize::try_from(size).ok().filter(|_| offset >= 0);
        let Some(size) = size else {
            bail!("a bad record after {records} records");
        };
        at = at
            .checked_add(size)
            .filter(|&end| end <= bytes.len())
            .with_context(|| format!("record {records} runs past the end"))?;
        records += 1;
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn ratio(rkdump: f64, kdump_tools: f64) -> String {
    if kdump_tools > 0.0 {
        format!("{:.2}", rkdump / kdump_tools)
    } else {
        "-".to_owned()
    }
}

/// The smallest working reservation as the table shows it.
fn smallest_text(report: &Report, tool: Tool) -> String {
    match report.smallest_working(tool) {
        (Some(mib), true) => format!("{mib}M"),
        (Some(mib), false) => format!("≤ {mib}M (smallest tried)"),
        (None, _) => format!(
            "none (> {}M)",
            report.sizes_mib.iter().max().copied().unwrap_or(0)
        ),
    }
}

/// The tables for BENCHMARKS.md: the summary with the ratios, every capture run, the command.
pub fn markdown(report: &Report, command: &str) -> String {
    let mut out = String::new();
    let memory = if report.memory_mib.is_multiple_of(1024) {
        format!("{} GiB", report.memory_mib / 1024)
    } else {
        format!("{} MiB", report.memory_mib)
    };
    let fill = if report.fill_percent == 0 {
        "idle".to_owned()
    } else {
        format!("{}% of memory filled with data", report.fill_percent)
    };
    let _ = writeln!(
        out,
        "### rkdump's package against kdump-tools (Debian 12, {}, {memory}, {fill}, 2 vCPUs, TCG)\n",
        report.release
    );
    let _ = writeln!(out, "```\n{command}\n```\n");
    let capture_column = format!("Capture at {REFERENCE_MIB}M (crash to reboot)");
    let _ = writeln!(
        out,
        "| Tool | Image packed | Unpacked | Entries | Build time | Smallest working crashkernel= | {capture_column} | Dump | crash reads it |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for tool in [Tool::KdumpTools, Tool::Rkdump] {
        let Some(image) = report.image(tool) else {
            continue;
        };
        let capture = report
            .capture_seconds(tool, REFERENCE_MIB)
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
        let reference = report.reference(tool);
        let dump = reference
            .and_then(|c| c.dump_bytes)
            .map_or_else(|| "-".to_owned(), mib);
        let reads = match reference.and_then(|c| c.crash_reads) {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} s | {} | {capture} | {dump} | {reads} |",
            tool.name(),
            mib(image.packed),
            mib(image.unpacked),
            image.entries,
            image.build_seconds,
            smallest_text(report, tool)
        );
    }
    if let (Some(k), Some(r)) = (report.image(Tool::KdumpTools), report.image(Tool::Rkdump)) {
        let smallest = |tool| report.smallest_working(tool).0.map(f64::from);
        let crashkernel = match (smallest(Tool::Rkdump), smallest(Tool::KdumpTools)) {
            (Some(r), Some(k)) => ratio(r, k),
            _ => "-".to_owned(),
        };
        let capture = match (
            report.capture_seconds(Tool::Rkdump, REFERENCE_MIB),
            report.capture_seconds(Tool::KdumpTools, REFERENCE_MIB),
        ) {
            (Some(r), Some(k)) => ratio(r, k),
            _ => "-".to_owned(),
        };
        let dump = match (
            report.reference(Tool::Rkdump).and_then(|c| c.dump_bytes),
            report
                .reference(Tool::KdumpTools)
                .and_then(|c| c.dump_bytes),
        ) {
            (Some(r), Some(k)) => ratio(r as f64, k as f64),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| rkdump / kdump-tools | {} | {} | {} | {} | {crashkernel} | {capture} | {dump} | |",
            ratio(r.packed as f64, k.packed as f64),
            ratio(r.unpacked as f64, k.unpacked as f64),
            ratio(r.entries as f64, k.entries as f64),
            ratio(r.build_seconds, k.build_seconds),
        );
    }
    let _ = writeln!(
        out,
        "\n| Tool | crashkernel= | Capture | Crash to reboot | What was written |\n|---|---:|---|---:|---|"
    );
    for c in &report.captures {
        let _ = writeln!(
            out,
            "| {} | {}M | {} | {} | {} |",
            c.tool.name(),
            c.crashkernel_mib,
            if c.works { "works" } else { "fails" },
            c.capture_seconds
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")),
            c.detail.replace('|', "/")
        );
    }
    let _ = writeln!(out);
    for image in &report.images {
        let _ = writeln!(
            out,
            "- {}: `{}`, {} bytes packed, {} bytes unpacked, {} entries ({}); built in {:.1} s, \
             loaded in {:.1} s",
            image.tool.name(),
            image.path,
            image.packed,
            image.unpacked,
            image.entries,
            image.layout,
            image.build_seconds,
            image.load_seconds
        );
    }
    let _ = writeln!(
        out,
        "- kdump-tools' build time is its first `kdump-config load` ({:.1} s: the build and a \
         load) less a second load with the image current; rkdump's is `rkdump mkinitrd` \
         (installed from its package), and `rkdump start` then loads it.",
        report.kdump_tools_first_load_seconds
    );
    if !report.rkdump_said.is_empty() {
        let _ = writeln!(out, "- rkdump mkinitrd said: `{}`", report.rkdump_said);
    }
    let _ = writeln!(out, "- The whole run took {:.0} s.", report.seconds);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_a_plain_archive_followed_by_a_compressed_one() {
        let mut early = cpio::Archive::new();
        early.dir("/kernel").file("/kernel/x", 0o644, b"1234");
        let mut main = cpio::Archive::new();
        main.file("/init", 0o755, &[b'a'; 5000])
            .symlink("/bin", "usr/bin");
        let main = main.finish();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main"), &main).unwrap();
        let status = Command::new("zstd")
            .args(["-q", "-19"])
            .arg(dir.path().join("main"))
            .status()
            .unwrap();
        assert!(status.success());
        let mut image = early.finish();
        image.resize(image.len().next_multiple_of(512), 0);
        image.extend(std::fs::read(dir.path().join("main.zst")).unwrap());
        let unpacked = unpack(&image).unwrap();
        assert_eq!(
            unpacked,
            Unpacked {
                entries: 4,
                data_bytes: 4 + 5000 + 7,
                layout: "cpio 2 entries + zstd: cpio 2 entries".into(),
            }
        );
        assert!(unpack(b"070701-not-hex").is_err());
        assert!(unpack(b"garbage").is_err());
    }

    #[test]
    fn a_flattened_stream_is_complete_only_up_to_its_end_marker() {
        let mut stream = b"makedumpfile".to_vec();
        stream.resize(4096, 0);
        for (offset, data) in [(0i64, &b"head"[..]), (4096, &[7u8; 100][..])] {
            stream.extend(offset.to_be_bytes());
            stream.extend(i64::try_from(data.len()).unwrap().to_be_bytes());
            stream.extend(data);
        }
        let cut = stream.clone();
        stream.extend([0xff; 16]);
        assert!(check_flattened(&stream).is_ok());
        assert!(check_flattened(&cut).is_err());
        assert!(check_flattened(&cut[..cut.len() - 10]).is_err());
        let mut trailing = stream.clone();
        trailing.push(0);
        assert!(check_flattened(&trailing).is_err());
        assert!(check_flattened(&stream[1..]).is_err());
    }

    #[test]
    fn the_table_gives_the_ratios_and_bounds() {
        let image = |tool, packed, build_seconds| Image {
            tool,
            path: "/x".into(),
            packed,
            unpacked: packed * 3,
            entries: packed / 1000,
            layout: "zstd cpio".into(),
            build_seconds,
            load_seconds: 1.0,
        };
        let capture = |tool, crashkernel_mib, works| Capture {
            tool,
            crashkernel_mib,
            works,
            detail: "d".into(),
            capture_seconds: works.then_some(20.0),
            dump_bytes: works.then_some(if tool == Tool::Rkdump {
                1 << 20
            } else {
                4 << 20
            }),
            crash_reads: (works && crashkernel_mib == 256).then_some(true),
            serial_log: PathBuf::new(),
        };
        let report = Report {
            release: "6.1.0-test".into(),
            images: vec![
                image(Tool::KdumpTools, 8_000_000, 60.0),
                image(Tool::Rkdump, 2_000_000, 3.0),
            ],
            captures: vec![
                capture(Tool::KdumpTools, 256, true),
                capture(Tool::KdumpTools, 128, true),
                capture(Tool::KdumpTools, 64, false),
                capture(Tool::Rkdump, 256, true),
                capture(Tool::Rkdump, 64, true),
            ],
            sizes_mib: vec![256, 128, 64],
            memory_mib: 3072,
            fill_percent: 60,
            kdump_tools_first_load_seconds: 61.0,
            rkdump_said: String::new(),
            seconds: 1.0,
        };
        assert_eq!(report.smallest_working(Tool::KdumpTools), (Some(128), true));
        assert_eq!(report.smallest_working(Tool::Rkdump), (Some(64), false));
        let table = markdown(&report, "cargo run");
        assert!(
            table.contains(
                "| kdump-tools | 7.6 MiB | 22.9 MiB | 8000 | 60.0 s | 128M | 20.0 s | 4.0 MiB | yes |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| rkdump | 1.9 MiB | 5.7 MiB | 2000 | 3.0 s | ≤ 64M (smallest tried) | 20.0 s | 1.0 MiB | yes |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| rkdump / kdump-tools | 0.25 | 0.25 | 0.25 | 0.05 | 0.50 | 1.00 | 0.25 | |"
            ),
            "{table}"
        );
        assert!(
            table.contains("(Debian 12, 6.1.0-test, 3 GiB, 60% of memory filled with data,"),
            "{table}"
        );
    }

    #[test]
    fn the_bisection_halves_down_to_the_step() {
        // Everything down to 80M works: 256 (tried first), 152, 104, 80, then 64 fails.
        let mut tried = Vec::new();
        let (mut fails, mut works) = (FLOOR_MIB, REFERENCE_MIB);
        while let Some(mib) = next_size(fails, works, STEP_MIB) {
            tried.push(mib);
            if mib >= 80 {
                works = mib;
            } else {
                fails = mib;
            }
        }
        assert_eq!(tried, [152, 104, 80, 64, 72]);
        assert_eq!((fails, works), (72, 80));
        assert_eq!(next_size(88, 104, 8), Some(96));
        assert_eq!(next_size(96, 104, 8), None);
        assert_eq!(next_size(100, 96, 8), None);
    }
}
