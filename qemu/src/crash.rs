//! One real crash, end to end: boot the first kernel, load the capture kernel, run the workload,
//! panic, capture with rkdump in the capture kernel, copy the raw vmcore, reboot.
//!
//! A finished run is cached under `$RKDUMP_CACHE/lab/<variant>/<key>/`, where the key hashes
//! everything that shapes the run (variant, kernel, the rkdump and workload binaries, the guest
//! scripts). Every check that needs a crash of that variant shares the one run; a change to any
//! input makes a new one. Only the newest run of each variant is kept.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::build;
use crate::images::{ImageBuilder, env_file};
use crate::kernels::Kernel;
use crate::variants::Variant;
use crate::vm::{Stage, Vm, VmConfig};

const FIRST_INIT: &str = include_str!("../guest/first-init");
const CAPTURE_INIT: &str = include_str!("../guest/capture-init");
/// Modules the guests need for their disks (names; built-ins are skipped).
const DISK_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4"];
/// The dump level and options rkdump uses in the capture kernel (kdump-utils' default level).
pub const SAVE_ARGS: &str = "-d 31";
/// Bumped when the run procedure changes in a way the hashed inputs do not show.
const PROCEDURE_VERSION: u32 = 2;

/// The stages of a run, in order, with how long each may take under TCG.
pub const STAGES: &[(&str, u64)] = &[
    ("first-boot", 180),
    ("capture-loaded", 120),
    ("panic", 900),
    ("capture-boot", 300),
    ("dump-done", 1200),
    ("raw-done", 1200),
];

/// A finished crash run.
#[derive(Debug, Clone)]
pub struct CrashRun {
    /// The variant that crashed.
    pub variant: Variant,
    /// Its kernel.
    pub kernel: Kernel,
    /// The run's directory.
    pub dir: PathBuf,
    /// Each stage: name, seconds from QEMU start, and the rest of its console line.
    pub stages: Vec<(String, f64, String)>,
}

impl CrashRun {
    /// The raw ELF vmcore copied from `/proc/vmcore` (the reference input).
    pub fn raw_vmcore(&self) -> PathBuf {
        self.dir.join("vmcore.raw")
    }

    /// What the capture kernel wrote (the target disk's `/crash`).
    pub fn capture_dir(&self) -> PathBuf {
        self.dir.join("crash")
    }

    /// rkdump's dump file written in the capture kernel.
    pub fn dump(&self) -> PathBuf {
        self.capture_dir().join("vmcore")
    }

    /// The serial console log.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// Seconds from QEMU start to `stage`.
    pub fn stage(&self, stage: &str) -> Option<f64> {
        self.stages
            .iter()
            .find(|(name, ..)| name == stage)
            .map(|(_, at, _)| *at)
    }

    /// The console line's text after the name of `stage`.
    pub fn stage_detail(&self, stage: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|(name, ..)| name == stage)
            .map(|(.., detail)| detail.as_str())
    }
}

fn run_key(variant: &Variant, kernel: &Kernel, binaries: &[&Path]) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "{PROCEDURE_VERSION}\n{variant:?}\n{}\n",
        kernel.release
    ));
    hasher.update(FIRST_INIT);
    hasher.update(CAPTURE_INIT);
    for binary in binaries {
        hasher.update(std::fs::read(binary)?);
    }
    let digest = hasher.finalize();
    Ok(digest[..8].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Returns the crash run of `variant`, running it first unless an identical one is cached.
pub fn crash(variant: &Variant) -> Result<CrashRun> {
    let kernel = Kernel::fetch(variant.flavor)?;
    let rkdump = build::rkdump()?;
    let workload = build::static_binary("rkdump-lab", "lab-workload")?;
    let key = run_key(variant, &kernel, &[&rkdump, &workload])?;
    let variant_dir = crate::cache::root().join("lab").join(variant.name);
    let _lock = crate::cache::lock(&variant_dir.with_extension("lock"))?;
    let dir = variant_dir.join(&key);
    if let Ok(text) = std::fs::read_to_string(dir.join(STAGES_FILE)) {
        let stages = text
            .lines()
            .map(|line| {
                let mut parts = line.splitn(3, ' ');
                let name = parts.next().unwrap_or_default().to_owned();
                let at = parts.next().unwrap_or_default().parse()?;
                Ok((name, at, parts.next().unwrap_or_default().to_owned()))
            })
            .collect::<Result<_>>()?;
        return Ok(CrashRun {
            variant: *variant,
            kernel,
            dir,
            stages,
        });
    }
    if variant_dir.exists() {
        std::fs::remove_dir_all(&variant_dir)?;
    }
    crash_fresh(variant, &kernel, &dir, &mut |_| {})
}

/// File of a run directory listing its stages (written last: its presence means the run is
/// complete).
const STAGES_FILE: &str = "stages";

/// Crashes `variant` now, in the new directory `dir`, calling `on_stage` as each stage arrives.
pub fn crash_fresh(
    variant: &Variant,
    kernel: &Kernel,
    dir: &Path,
    on_stage: &mut dyn FnMut(&Stage),
) -> Result<CrashRun> {
    let rkdump = build::rkdump()?;
    let workload = build::static_binary("rkdump-lab", "lab-workload")?;
    std::fs::create_dir_all(dir)?;
    let stages = run(variant, kernel, &rkdump, &workload, dir, on_stage)?;
    let text: String = stages
        .iter()
        .map(|(name, at, detail)| format!("{name} {at:.1} {detail}\n"))
        .collect();
    std::fs::write(dir.join(STAGES_FILE), text)?;
    Ok(CrashRun {
        variant: *variant,
        kernel: kernel.clone(),
        dir: dir.to_owned(),
        stages,
    })
}

fn run(
    variant: &Variant,
    kernel: &Kernel,
    rkdump: &Path,
    workload: &Path,
    dir: &Path,
    on_stage: &mut dyn FnMut(&Stage),
) -> Result<Vec<(String, f64, String)>> {
    let mut capture = ImageBuilder::new();
    capture.busybox()?;
    capture.host_file("/bin/rkdump", 0o755, rkdump)?;
    let modules = capture.modules(kernel, DISK_MODULES)?;
    capture.file("/init", 0o755, CAPTURE_INIT.as_bytes());
    capture.file(
        "/etc/lab.env",
        0o644,
        &env_file(&[
            ("MODULES", modules.join(" ")),
            ("SAVE_ARGS", SAVE_ARGS.to_owned()),
        ]),
    );
    let capture_image = capture.finish();

    let mut first = ImageBuilder::new();
    first.busybox()?;
    first.dynamic_binary("/bin/kexec", Path::new("/usr/sbin/kexec"))?;
    first.host_file("/bin/lab-workload", 0o755, workload)?;
    first.host_file("/boot/vmlinuz", 0o644, &kernel.vmlinuz())?;
    first.file("/boot/capture.img", 0o644, &capture_image);
    let modules = first.modules(kernel, DISK_MODULES)?;
    first.file("/init", 0o755, FIRST_INIT.as_bytes());
    first.file(
        "/etc/lab.env",
        0o644,
        &env_file(&[
            ("MODULES", modules.join(" ")),
            ("CAPTURE_CMDLINE", variant.capture_cmdline()),
            ("WORKLOAD_ARGS", variant.workload_args()),
        ]),
    );
    let first_image = dir.join("first.img");
    std::fs::write(&first_image, first.finish())?;

    let memory = u64::from(variant.memory_mib) << 20;
    let dump_disk = dir.join("dump-disk.img");
    create_sparse(&dump_disk, 2 * memory + (256 << 20))?;
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rkdump-lab"])
        .arg(&dump_disk)
        .status()?;
    if !status.success() {
        bail!("mkfs.ext4 {} failed", dump_disk.display());
    }
    let raw_disk = dir.join("vmcore.raw");
    create_sparse(&raw_disk, memory + (64 << 20))?;

    let config = VmConfig {
        kernel: kernel.vmlinuz(),
        initrd: first_image,
        cmdline: variant.first_cmdline(),
        memory_mib: variant.memory_mib,
        cpus: variant.cpus,
        cpu_model: variant.cpu_model.map(str::to_owned),
        disks: vec![dump_disk.clone(), raw_disk.clone()],
        extra_args: Vec::new(),
    };
    let mut vm = Vm::start(&config, &dir.join("serial.log"))?;
    let mut stages = Vec::new();
    for (stage, limit) in STAGES {
        let seen = vm.wait_for(stage, Duration::from_secs(*limit))?;
        on_stage(&seen);
        stages.push((seen.name, seen.at.as_secs_f64(), seen.detail));
    }
    let (_, exit_at) = vm.wait_exit(Duration::from_secs(120))?;
    let exit = Stage {
        name: "exit".to_owned(),
        detail: String::new(),
        at: exit_at,
    };
    on_stage(&exit);
    stages.push((exit.name, exit.at.as_secs_f64(), exit.detail));

    extract_dir(&dump_disk, "/crash", dir)?;
    truncate_to_elf_end(&raw_disk)?;
    std::fs::remove_file(&dump_disk)?;
    std::fs::remove_file(dir.join("first.img"))?;
    Ok(stages)
}

fn create_sparse(path: &Path, size: u64) -> Result<()> {
    let file = std::fs::File::create(path)?;
    file.set_len(size)?;
    Ok(())
}

/// Copies a directory out of an ext4 image with debugfs (no mount needed).
fn extract_dir(image: &Path, path: &str, into: &Path) -> Result<()> {
    let output = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump {path} {}", into.display()))
        .arg(image)
        .output()
        .context("running debugfs")?;
    if !output.status.success() || !into.join(path.trim_start_matches('/')).is_dir() {
        bail!(
            "debugfs could not extract {path} from {}: {}",
            image.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Cuts the raw disk image down to the ELF file it holds (the end of the last segment).
fn truncate_to_elf_end(path: &Path) -> Result<()> {
    use rkdump::format::elf::{FileHeader, HEADER_SIZE, PROGRAM_HEADER_SIZE, ProgramHeader};
    use std::os::unix::fs::FileExt;

    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut header = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut header, 0)?;
    let header = FileHeader::parse(&header)
        .with_context(|| format!("{} does not hold an ELF vmcore", path.display()))?;
    let mut table = vec![0u8; usize::from(header.phnum) * PROGRAM_HEADER_SIZE];
    file.read_exact_at(&mut table, header.phoff)?;
    let end = ProgramHeader::parse_table(&table, header.phnum.into())?
        .iter()
        .map(|p| p.offset + p.filesz)
        .max()
        .unwrap_or(0);
    file.set_len(end)?;
    Ok(())
}
