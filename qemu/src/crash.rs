//! One real crash, end to end: boot the first kernel, load the capture kernel, run the workload,
//! panic; in the capture kernel rkdump is `/init` and saves the dump onto an ext4 disk as
//! kdump.conf says, and a `kdump_post` hook copies the raw vmcore onto a second disk (the
//! reference input for makedumpfile, crash and drgn on the host); reboot.
//!
//! A finished run is cached under `$RKDUMP_CACHE/lab/<variant>/<key>/`, where the key hashes
//! everything that shapes the run (variant, kernel, the rkdump and workload binaries, the guest
//! scripts). Every check that needs a crash of that variant shares the one run; a change to any
//! input makes a new one. Only the newest run of each variant is kept.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::build;
use crate::kernels::Kernel;
use crate::scenario::{self, Disk, Scenario};
use crate::variants::Variant;
use crate::vm::Stage;

/// The capture image's kdump.conf: kdump-utils' defaults, an ext4 target by label.
pub const KDUMP_CONF: &str = "\
ext4 LABEL=rkdump-lab
path /var/crash
core_collector makedumpfile -l --message-level 7 -d 31
kdump_post /bin/lab-raw-copy
";
/// [`KDUMP_CONF`] without the hook: what a capture needs and nothing else.
pub const KDUMP_CONF_WITHOUT_HOOKS: &str = "\
ext4 LABEL=rkdump-lab
path /var/crash
core_collector makedumpfile -l --message-level 7 -d 31
";
/// The post hook copying the raw vmcore onto the second disk.
const RAW_COPY: &str =
    "dd if=/proc/vmcore of=/dev/vdb bs=1M 2>/dev/null && sync && echo 'RKDUMP-LAB: raw-done'";
/// Bumped when the run procedure changes in a way the hashed inputs do not show.
const PROCEDURE_VERSION: u32 = 3;

/// The capture kernel's stages: console text and time limit under TCG.
pub const CAPTURE_STAGES: &[(&str, &str, u64)] = &[
    ("capture-boot", "capture runtime starting", 300),
    ("dump-done", "dump: done in", 1200),
    ("raw-done", "RKDUMP-LAB: raw-done", 1200),
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
        "{PROCEDURE_VERSION}\n{variant:?}\n{}\n{KDUMP_CONF}{RAW_COPY}",
        kernel.release
    ));
    hasher.update(include_str!("../guest/first-init"));
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
    let memory = u64::from(variant.memory_mib);
    let mut scenario = Scenario::new(*variant, KDUMP_CONF).script("/bin/lab-raw-copy", RAW_COPY);
    scenario.disks = vec![
        Disk::Ext4 {
            size_mib: 2 * memory + 256,
            label: "rkdump-lab".into(),
            uuid: None,
        },
        Disk::Blank {
            size_mib: memory + 64,
        },
    ];
    let prepared = scenario.prepare(kernel, dir)?;
    let mut vm = prepared.start()?;
    let mut seen = scenario::wait_for_crash(&mut vm, on_stage)?;
    for (name, pattern, limit) in CAPTURE_STAGES {
        let stage = vm.wait_for_text(name, pattern, Duration::from_secs(*limit))?;
        on_stage(&stage);
        seen.push(stage);
    }
    let (_, exit_at) = vm.wait_exit(Duration::from_secs(120))?;
    let exit = Stage {
        name: "exit".to_owned(),
        detail: String::new(),
        at: exit_at,
    };
    on_stage(&exit);
    seen.push(exit);

    let extracted = scenario::read_ext4_dir(&prepared.disks[0], "/var/crash", &dir.join("target"))?;
    std::fs::rename(scenario::dump_dir(&extracted)?, dir.join("crash"))?;
    std::fs::remove_dir_all(dir.join("target"))?;
    std::fs::rename(&prepared.disks[1], dir.join("vmcore.raw"))?;
    truncate_to_elf_end(&dir.join("vmcore.raw"))?;
    std::fs::remove_file(&prepared.disks[0])?;
    std::fs::remove_file(dir.join("first.img"))?;

    let stages: Vec<(String, f64, String)> = seen
        .into_iter()
        .map(|s| (s.name, s.at.as_secs_f64(), s.detail))
        .collect();
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
