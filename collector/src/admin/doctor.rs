//! `rkdump doctor`: every known reason a crash would leave no dump, checked on the running
//! system, one line each (ok, warn or fail) with the fix.
//!
//! The checks follow the failures users meet (docs/loader.md maps each to its check): no or a
//! failed `crashkernel=` reservation, one smaller than the capture needs, signatures enforced,
//! lockdown, `kexec_load_disabled`, KASLR with `kptr_restrict=2`, a missing or outdated capture
//! image, an active watchdog whose driver the image lacks, a dump target that is missing or whose
//! drivers the image lacks, too little free space, an incomplete dump left behind, another kdump
//! service, and dracut's squashfs image on a kernel without squashfs. `start` runs them when
//! loading fails.
//!
//! Every check reads under a root directory, so tests run them on recorded trees.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::estimate;
use super::initramfs::{self, Initramfs};
use super::service::{self, Options, ServiceError};
use super::status::{self, LastDump};
use crate::config::kdump_conf::{Config, Target};
use crate::config::sysconfig::FirstKernel;
use crate::image::sysfs;
use crate::loader::KexecState;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    /// Nothing to do.
    Ok,
    /// A dump may be lost or incomplete.
    Warn,
    /// No dump will be taken.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    /// Its name (stable, for scripts).
    pub check: &'static str,
    /// The verdict.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// What to do, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(check: &'static str, level: Level, message: String, fix: Option<&str>) -> Check {
    Check {
        check,
        level,
        message,
        fix: fix.map(str::to_owned),
    }
}

/// What the checks look at.
pub(crate) struct Inputs<'a> {
    /// The system's root.
    pub root: &'a Path,
    /// kdump.conf.
    pub config: &'a Config,
    /// The first-kernel settings.
    pub settings: &'a FirstKernel,
    /// The kexec state.
    pub state: &'a KexecState,
    /// The kernel and image `start` would load, or why they were not found.
    pub files: Result<(PathBuf, PathBuf), String>,
    /// The files whose change makes the image outdated (kdump.conf, settings, fstab, hooks,
    /// the rkdump binary): the check of an image given by `--initrd` or `KDUMP_INITRD`.
    pub inputs_of_image: Vec<PathBuf>,
    /// For rkdump's own image, its manifest compared with the system ([`crate::image::check`]):
    /// why `start` would rebuild it, or why it cannot be built.
    pub own_image: Option<Result<Option<Vec<String>>, String>>,
    /// The kernel's log.
    pub kernel_log: &'a str,
}

const MIB: u64 = 1 << 20;

/// Runs every check.
pub(crate) fn run(inputs: &Inputs<'_>) -> Vec<Check> {
    let image = inputs
        .files
        .as_ref()
        .ok()
        .and_then(|(_, image)| std::fs::read(image).ok())
        .and_then(|bytes| initramfs::read(&bytes).ok());
    let mut checks = vec![
        reservation(inputs),
        estimate_check(inputs),
        signatures(inputs.state),
        lockdown(inputs.state),
        kexec_disabled(inputs.state),
        kernel_text(inputs.root),
        image_check(inputs),
        watchdog(inputs.root, image.as_ref()),
        target(inputs, image.as_ref()),
    ];
    checks.extend(space_and_leftovers(inputs));
    checks.push(other_services(inputs.root));
    checks.push(squashfs(inputs.root, &service::running_release()));
    checks
}

fn reservation(inputs: &Inputs<'_>) -> Check {
    let state = inputs.state;
    let asked = std::fs::read_to_string(inputs.root.join("proc/cmdline"))
        .unwrap_or_default()
        .split_whitespace()
        .find(|w| w.starts_with("crashkernel="))
        .map(str::to_owned);
    let failure = inputs
        .kernel_log
        .lines()
        .find(|l| l.contains("crashkernel") && (l.contains("failed") || l.contains("cannot")))
        .map(|l| l.split_once("] ").map_or(l, |(_, m)| m).trim().to_owned());
    match (state.crash_loaded, state.crash_size, asked, failure) {
        (None, ..) => check(
            "crashkernel",
            Level::Fail,
            "the kernel has no crash kexec (no /sys/kernel/kexec_crash_loaded)".into(),
            Some("use a kernel built with CONFIG_CRASH_DUMP and CONFIG_KEXEC_FILE"),
        ),
        (_, Some(size), ..) if size > 0 => check(
            "crashkernel",
            Level::Ok,
            format!("{} MiB reserved", size / MIB),
            None,
        ),
        (_, _, Some(asked), Some(failure)) => check(
            "crashkernel",
            Level::Fail,
            format!("{asked} is set but the reservation failed: \"{failure}\""),
            Some(
                "low memory (below 4 GiB) is short: use crashkernel=SIZE,high (and \
                 crashkernel=SIZE,low for the DMA buffers), SIZE from `rkdump estimate`",
            ),
        ),
        (_, _, Some(asked), None) => check(
            "crashkernel",
            Level::Fail,
            format!("{asked} is set but nothing is reserved"),
            Some("check the kernel log for the reservation; try crashkernel=SIZE,high"),
        ),
        (_, _, None, _) => check(
            "crashkernel",
            Level::Fail,
            "no crashkernel= on the kernel command line: nothing is reserved".into(),
            Some("add crashkernel= (the size `rkdump estimate` gives) and reboot"),
        ),
    }
}

fn estimate_check(inputs: &Inputs<'_>) -> Check {
    let Ok((kernel, image)) = &inputs.files else {
        return check(
            "estimate",
            Level::Warn,
            "no estimate: the kernel or the capture image is missing".into(),
            None,
        );
    };
    let cpus = service::capture_cpus(inputs.state);
    match estimate::estimate_files(kernel, image, cpus) {
        Err(error) => check("estimate", Level::Warn, error.to_string(), None),
        Ok(estimate) => match inputs.state.crash_size {
            Some(reserved) if reserved > 0 && reserved < estimate.needed => check(
                "estimate",
                Level::Fail,
                format!(
                    "{} MiB reserved, the capture needs {} MiB: it would run out of memory",
                    reserved / MIB,
                    estimate.needed / MIB
                ),
                Some(&format!("raise crashkernel= to {}M", estimate.needed / MIB)),
            ),
            _ => check(
                "estimate",
                Level::Ok,
                format!("the capture needs {} MiB", estimate.needed / MIB),
                None,
            ),
        },
    }
}

fn signatures(state: &KexecState) -> Check {
    let enforced = state.secure_boot == Some(true) || state.sig_force == Some(true);
    if !enforced {
        return check(
            "signatures",
            Level::Ok,
            "kexec image signatures are not enforced".into(),
            None,
        );
    }
    let why = if state.secure_boot == Some(true) {
        "Secure Boot is on"
    } else {
        "the kernel has CONFIG_KEXEC_SIG_FORCE"
    };
    if state.secure_boot == Some(true) && !state.locked_down() {
        return check(
            "signatures",
            Level::Warn,
            format!(
                "{why}: kexec_file_load loads only images signed by a trusted key, and the IMA architecture policy of Secure Boot refuses kexec_load too (EACCES)"
            ),
            Some(
                "use a kernel signed by your distribution, or sign it and enroll the key (mokutil --import)",
            ),
        );
    }
    if state.locked_down() || state.lockdown.is_none() {
        check(
            "signatures",
            Level::Warn,
            format!(
                "{why}: kexec_file_load loads only images signed by a trusted key, and lockdown rules out the kexec_load fallback"
            ),
            Some(
                "use a kernel signed by your distribution, or sign it and enroll the key (mokutil --import)",
            ),
        )
    } else {
        check(
            "signatures",
            Level::Ok,
            format!(
                "{why}: an unsigned image is refused by kexec_file_load, and rkdump falls back to kexec_load (lockdown is off)"
            ),
            None,
        )
    }
}

fn lockdown(state: &KexecState) -> Check {
    match state.lockdown {
        Some(mode) if mode.restricts_kexec() => check(
            "lockdown",
            Level::Warn,
            format!(
                "the kernel is locked down ({}): kexec_load is refused, kexec_file_load needs a \
                 signed kernel{}",
                mode.name(),
                if mode.name() == "confidentiality" {
                    "; /proc/kcore is gone"
                } else {
                    ""
                }
            ),
            Some("load a kernel signed by a key the kernel trusts (the distribution's)"),
        ),
        Some(_) => check("lockdown", Level::Ok, "no lockdown".into(), None),
        None => check(
            "lockdown",
            Level::Ok,
            "no lockdown information (/sys/kernel/security not mounted or no LSM)".into(),
            None,
        ),
    }
}

fn kexec_disabled(state: &KexecState) -> Check {
    if state.kexec_load_disabled == Some(true) {
        check(
            "kexec_load_disabled",
            Level::Fail,
            "kernel.kexec_load_disabled is 1: no kexec load is possible until reboot".into(),
            Some("remove the sysctl that sets it and reboot"),
        )
    } else {
        check(
            "kexec_load_disabled",
            Level::Ok,
            "kexec loads are allowed".into(),
            None,
        )
    }
}

fn kernel_text(root: &Path) -> Check {
    let restrict = std::fs::read_to_string(root.join("proc/sys/kernel/kptr_restrict"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    let kcore = root.join("proc/kcore").exists();
    match (restrict, kcore) {
        (_, false) => check(
            "kernel_text",
            Level::Warn,
            "/proc/kcore is missing: the kexec_load fallback cannot find the kernel text (kexec_file_load is unaffected)".into(),
            Some("enable CONFIG_PROC_KCORE, or rely on kexec_file_load"),
        ),
        (Some(2), true) => check(
            "kernel_text",
            Level::Ok,
            "kptr_restrict=2 hides /proc/kallsyms (kexec-tools' kexec_load then fails with \"Can't find kernel text map area from kcore\"); rkdump reads the text from /proc/kcore's headers".into(),
            None,
        ),
        _ => check(
            "kernel_text",
            Level::Ok,
            "the kernel text is found in /proc/kcore".into(),
            None,
        ),
    }
}

fn image_check(inputs: &Inputs<'_>) -> Check {
    match &inputs.own_image {
        Some(Err(why)) => {
            return check(
                "image",
                Level::Fail,
                format!("the capture image cannot be built: {why}"),
                Some("fix kdump.conf (or install what it names)"),
            );
        }
        Some(Ok(Some(reasons))) => {
            return check(
                "image",
                Level::Warn,
                format!(
                    "`rkdump start` will rebuild the capture image: {}",
                    reasons.join("; ")
                ),
                Some("rkdump rebuild (start does it too)"),
            );
        }
        Some(Ok(None)) => {
            if let Ok((_, image)) = &inputs.files {
                return check(
                    "image",
                    Level::Ok,
                    format!("{} matches the system (its manifest)", image.display()),
                    None,
                );
            }
        }
        None => {}
    }
    let (kernel, image) = match &inputs.files {
        Ok(files) => files,
        Err(why) => {
            return check(
                "image",
                Level::Fail,
                why.clone(),
                Some(
                    "install the kernel image (or pass --kernel) and build the capture image (or pass --initrd)",
                ),
            );
        }
    };
    let mtime = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(built) = mtime(image) else {
        return check(
            "image",
            Level::Fail,
            format!("cannot read {}", image.display()),
            None,
        );
    };
    let newer: Vec<String> = std::iter::once(kernel.clone())
        .chain(inputs.inputs_of_image.iter().cloned())
        .filter(|path| mtime(path).is_some_and(|t| t > built))
        .map(|path| path.display().to_string())
        .collect();
    if newer.is_empty() {
        check(
            "image",
            Level::Ok,
            format!("{} is newer than its inputs", image.display()),
            None,
        )
    } else {
        check(
            "image",
            Level::Warn,
            format!(
                "{} is older than {}: it may not match the configuration",
                image.display(),
                newer.join(", ")
            ),
            Some("rebuild the capture image"),
        )
    }
}

/// Why the image's modules cannot be checked, when they cannot.
fn unreadable(image: Option<&Initramfs>) -> Option<String> {
    match image {
        None => Some("the capture image could not be read".into()),
        Some(image) => image.note.clone(),
    }
}

fn watchdog(root: &Path, image: Option<&Initramfs>) -> Check {
    let active: Vec<String> = super::bootinfo::active_watchdog_drivers(root)
        .into_iter()
        .filter(|m| root.join("sys/module").join(m).join("initstate").exists())
        .collect();
    if active.is_empty() {
        return check(
            "watchdog",
            Level::Ok,
            "no active watchdog with a loadable driver".into(),
            None,
        );
    }
    let (Some(image), None) = (image, unreadable(image)) else {
        return check(
            "watchdog",
            Level::Warn,
            format!(
                "active watchdog driver(s) {}: not checked against the image ({})",
                active.join(", "),
                unreadable(image).unwrap_or_default()
            ),
            None,
        );
    };
    let missing: Vec<&String> = active.iter().filter(|m| !image.has_module(m)).collect();
    if missing.is_empty() {
        check(
            "watchdog",
            Level::Ok,
            format!(
                "active watchdog driver(s) {} in the image",
                active.join(", ")
            ),
            None,
        )
    } else {
        check(
            "watchdog",
            Level::Fail,
            format!(
                "an active watchdog's driver ({}) is not in the capture image: it resets the \
                 machine during the dump",
                missing
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("rebuild the capture image with the driver (extra_modules in kdump.conf)"),
        )
    }
}

/// The loadable drivers of a block device node's stack.
fn block_stack_modules(root: &Path, device: &Path) -> Vec<String> {
    sysfs::block_name(device)
        .map(|name| sysfs::block_stack_modules(root, &name))
        .unwrap_or_default()
}

fn target(inputs: &Inputs<'_>, image: Option<&Initramfs>) -> Check {
    let device = match &inputs.config.target {
        Target::Filesystem { device, .. } | Target::Raw(device) => {
            status::device_path(inputs.root, device)
        }
        Target::RootFs => {
            return check(
                "target",
                Level::Ok,
                "the root filesystem (its drivers are those the first kernel booted with)".into(),
                None,
            );
        }
        Target::Nfs { export, .. } => {
            return check(
                "target",
                Level::Ok,
                format!("NFS {export}: checked by the capture"),
                None,
            );
        }
        Target::Ssh(server) => {
            return check(
                "target",
                Level::Ok,
                format!("ssh {server}: checked by the capture"),
                None,
            );
        }
        Target::Mount { device, .. } => PathBuf::from(device),
    };
    if !device.exists() {
        return check(
            "target",
            Level::Fail,
            format!("the dump device {} does not exist", device.display()),
            Some("fix the target line of kdump.conf, or attach the disk"),
        );
    }
    let modules = block_stack_modules(inputs.root, &device);
    let image = match (image, unreadable(image)) {
        (Some(image), None) => image,
        (_, why) => {
            return check(
                "target",
                Level::Warn,
                format!(
                    "{} is present; its drivers ({}) not checked against the image ({})",
                    device.display(),
                    modules.join(", "),
                    why.unwrap_or_default()
                ),
                None,
            );
        }
    };
    let missing: Vec<&String> = modules.iter().filter(|m| !image.has_module(m)).collect();
    if missing.is_empty() {
        check(
            "target",
            Level::Ok,
            format!(
                "{} is present{}",
                device.display(),
                if modules.is_empty() {
                    String::new()
                } else {
                    format!(", its drivers ({}) in the image", modules.join(", "))
                }
            ),
            None,
        )
    } else {
        check(
            "target",
            Level::Fail,
            format!(
                "the drivers of {} ({}) are not in the capture image: the capture kernel will not \
                 see the disk",
                device.display(),
                missing
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("rebuild the capture image (extra_modules in kdump.conf)"),
        )
    }
}

fn mem_total(root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(root.join("proc/meminfo")).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn space_and_leftovers(inputs: &Inputs<'_>) -> Vec<Check> {
    let mountinfo =
        std::fs::read_to_string(inputs.root.join("proc/self/mountinfo")).unwrap_or_default();
    let dir = match status::dump_directory(
        inputs.root,
        inputs.config,
        inputs.settings.coredir.as_deref(),
        &mountinfo,
    ) {
        Ok(dir) => dir,
        Err(why) => {
            return vec![check(
                "space",
                Level::Ok,
                format!("not checked: {why}"),
                None,
            )];
        }
    };
    let mut checks = Vec::new();
    // kdumpctl's rule: warn when the target has less free space than the machine has memory.
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(inputs.root)
        .to_owned();
    match (
        nix::sys::statvfs::statvfs(&existing),
        mem_total(inputs.root),
    ) {
        (Ok(fs), Some(memory)) => {
            let free = fs.blocks_available() * fs.fragment_size();
            checks.push(if free < memory {
                check(
                    "space",
                    Level::Warn,
                    format!(
                        "{} has {} MiB free, less than the {} MiB of memory: a dump of a busy \
                         machine may not fit",
                        existing.display(),
                        free / MIB,
                        memory / MIB
                    ),
                    Some("free space on the target, or raise the dump level (-d 31)"),
                )
            } else {
                check(
                    "space",
                    Level::Ok,
                    format!("{} has {} MiB free", existing.display(), free / MIB),
                    None,
                )
            });
        }
        _ => checks.push(check(
            "space",
            Level::Warn,
            format!("cannot measure the free space of {}", existing.display()),
            None,
        )),
    }
    checks.push(match status::last_dump(&dir) {
        LastDump::Found(report) if !report.complete => check(
            "last_dump",
            Level::Warn,
            format!(
                "the last dump in {} is incomplete: {}",
                report.dir.display(),
                report.reason.unwrap_or_default()
            ),
            Some("the capture did not finish: see its kexec-dmesg.log; the partial dump is still readable"),
        ),
        LastDump::Found(report) => check(
            "last_dump",
            Level::Ok,
            format!("the last dump ({}) is complete", report.dir.display()),
            None,
        ),
        _ => check("last_dump", Level::Ok, "no dump yet".into(), None),
    });
    checks
}

fn other_services(root: &Path) -> Check {
    let others = super::service::other_services_enabled(root);
    if others.is_empty() {
        check(
            "other_kdump",
            Level::Ok,
            "no other kdump service is enabled".into(),
            None,
        )
    } else {
        check(
            "other_kdump",
            Level::Fail,
            format!(
                "{} is enabled too: only one service can own the crash kernel, and rkdump start \
                 does not load over it",
                others.join(", ")
            ),
            Some("disable it (systemctl disable --now ...)"),
        )
    }
}

fn squashfs(root: &Path, release: &str) -> Check {
    let filesystems = std::fs::read_to_string(root.join("proc/filesystems")).unwrap_or_default();
    let module_dir = root.join(format!("lib/modules/{release}/kernel/fs/squashfs"));
    let has = filesystems.split_whitespace().any(|w| w == "squashfs") || module_dir.is_dir();
    check(
        "squashfs",
        Level::Ok,
        if has {
            "rkdump's image needs no squashfs, loop or overlay".into()
        } else {
            "this kernel lacks squashfs (dracut's squash module fails here); rkdump's image needs \
             no squashfs, loop or overlay"
                .into()
        },
        None,
    )
}

/// Gathers this system's inputs for `options` (kdump.conf, the settings files, the kexec
/// state, the kernel and image `start` would load, the kernel log) and runs every check.
pub(crate) fn check_system(options: &Options) -> Result<Vec<Check>, ServiceError> {
    use crate::config::sysconfig::{KDUMP_TOOLS_FILE, SYSCONFIG_FILE};
    let release = service::running_release();
    let (config, _) = service::kdump_conf(&options.config)?;
    let settings = service::first_kernel_settings(&options.root)?;
    let state = KexecState::read(&options.root, &release);
    let files = service::locate(options, &settings, &release).map_err(|e| e.to_string());
    let mut inputs_of_image = vec![
        options.config.clone(),
        PathBuf::from(SYSCONFIG_FILE),
        PathBuf::from(KDUMP_TOOLS_FILE),
        PathBuf::from("/etc/fstab"),
    ];
    inputs_of_image.extend(
        [
            &config.kdump_pre,
            &config.kdump_post,
            &config.kdump_emergency,
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::from),
    );
    inputs_of_image.extend(config.extra_bins.iter().map(PathBuf::from));
    inputs_of_image.extend(std::env::current_exe().ok());
    let explicit = options.initrd.is_some() || settings.initrd.is_some();
    let own_image = (!explicit).then(|| {
        let request = super::image::Request {
            root: options.root.clone(),
            config: options.config.clone(),
            release: settings.kernel_version.clone(),
            output: None,
            all_drivers: false,
            how: super::image::How::Archive,
        };
        super::image::options(&request)
            .map_err(|e| e.to_string())
            .and_then(|o| crate::image::check(&o).map_err(|e| e.to_string()))
    });
    let kernel_log = crate::kmsg::kernel_log();
    Ok(run(&Inputs {
        root: &options.root,
        config: &config,
        settings: &settings,
        state: &state,
        files,
        inputs_of_image,
        own_image,
        kernel_log: &kernel_log,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kdump_conf::DeviceSpec;
    use crate::loader::state::Lockdown;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn by_name<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.check == name).unwrap()
    }

    #[test]
    fn rkdump_s_own_image_is_judged_by_its_manifest() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let state = KexecState::default();
        let config = Config::default();
        let settings = FirstKernel::default();
        let inputs = |own_image| Inputs {
            root,
            config: &config,
            settings: &settings,
            state: &state,
            files: Err("no capture image at /var/lib/rkdump/initrd-6.1.img".into()),
            inputs_of_image: vec![],
            own_image: Some(own_image),
            kernel_log: "",
        };
        let rebuild = image_check(&inputs(Ok(Some(vec!["/etc/kdump.conf changed".into()]))));
        assert_eq!(rebuild.level, Level::Warn);
        assert!(
            rebuild
                .message
                .contains("will rebuild the capture image: /etc/kdump.conf changed")
        );
        let broken = image_check(&inputs(Err("kdump_post /x does not exist".into())));
        assert_eq!(broken.level, Level::Fail);
        assert!(broken.message.contains("kdump_post /x does not exist"));
    }

    #[test]
    fn a_failed_reservation_suggests_high_memory() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // The messages of arch/x86/kernel/setup.c reserve_crashkernel().
        write(root, "proc/cmdline", "root=/dev/vda ro crashkernel=2G\n");
        let state = KexecState {
            crash_loaded: Some(false),
            crash_size: Some(0),
            ..KexecState::default()
        };
        let log = "[    0.000000] crashkernel reservation failed - No suitable area found.\n";
        let config = Config::default();
        let settings = FirstKernel::default();
        let inputs = Inputs {
            root,
            config: &config,
            settings: &settings,
            state: &state,
            files: Err("no capture image".into()),
            inputs_of_image: vec![],
            own_image: None,
            kernel_log: log,
        };
        let checks = run(&inputs);
        let reservation = by_name(&checks, "crashkernel");
        assert_eq!(reservation.level, Level::Fail);
        assert!(
            reservation.message.contains("No suitable area found"),
            "{reservation:?}"
        );
        assert!(reservation.fix.as_deref().unwrap().contains(",high"));
        assert_eq!(by_name(&checks, "image").level, Level::Fail);
        // One line per check, each named.
        let names: Vec<&str> = checks.iter().map(|c| c.check).collect();
        for name in [
            "crashkernel",
            "estimate",
            "signatures",
            "lockdown",
            "kexec_load_disabled",
            "kernel_text",
            "image",
            "watchdog",
            "target",
            "space",
            "last_dump",
            "other_kdump",
            "squashfs",
        ] {
            assert!(names.contains(&name), "{name} missing: {names:?}");
        }
    }

    #[test]
    fn watchdog_and_target_drivers_against_the_image() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // sysfs as a virtio disk and the i6300esb watchdog show it.
        let pci_disk = "sys/devices/pci0000:00/0000:00:04.0";
        std::fs::create_dir_all(root.join(pci_disk).join("virtio1/block/vdb")).unwrap();
        // Loadable modules have an initstate; built-in ones do not.
        write(root, "sys/module/virtio_blk/initstate", "live\n");
        write(root, "sys/module/virtio_pci/initstate", "live\n");
        std::fs::create_dir_all(root.join("sys/bus/virtio/drivers/virtio_blk")).unwrap();
        std::fs::create_dir_all(root.join("sys/bus/pci/drivers/virtio-pci")).unwrap();
        let link = |target: &str, at: &str| {
            let at = root.join(at);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(root.join(target), at).unwrap();
        };
        link(
            "sys/module/virtio_blk",
            "sys/bus/virtio/drivers/virtio_blk/module",
        );
        link(
            "sys/module/virtio_pci",
            "sys/bus/pci/drivers/virtio-pci/module",
        );
        link(
            "sys/bus/virtio/drivers/virtio_blk",
            &format!("{pci_disk}/virtio1/driver"),
        );
        link(
            "sys/bus/pci/drivers/virtio-pci",
            &format!("{pci_disk}/driver"),
        );
        link(
            &format!("{pci_disk}/virtio1/block/vdb"),
            "sys/class/block/vdb",
        );
        write(root, "dev/vdb", "");
        link("dev/vdb", "dev/disk/by-uuid/1234");
        // The watchdog.
        let wdt = "sys/devices/pci0000:00/0000:00:05.0";
        std::fs::create_dir_all(root.join(wdt)).unwrap();
        write(root, "sys/module/i6300esb/initstate", "live\n");
        std::fs::create_dir_all(root.join("sys/bus/pci/drivers/i6300ESB timer")).unwrap();
        link(
            "sys/module/i6300esb",
            "sys/bus/pci/drivers/i6300ESB timer/module",
        );
        link(
            "sys/bus/pci/drivers/i6300ESB timer",
            &format!("{wdt}/driver"),
        );
        write(root, "sys/class/watchdog/watchdog0/state", "active\n");
        link(wdt, "sys/class/watchdog/watchdog0/device");

        let mut archive = crate::format::cpio::Archive::new();
        archive.file(
            "/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko",
            0o644,
            b"x",
        );
        let image = initramfs::read(&archive.finish()).unwrap();
        assert_eq!(
            watchdog(root, Some(&image)).level,
            Level::Fail,
            "i6300esb is not in the image"
        );
        let config = Config {
            target: Target::Filesystem {
                fstype: "ext4".into(),
                device: DeviceSpec::Uuid("1234".into()),
            },
            ..Config::default()
        };
        let settings = FirstKernel::default();
        let state = KexecState::default();
        let inputs = Inputs {
            root,
            config: &config,
            settings: &settings,
            state: &state,
            files: Err(String::new()),
            inputs_of_image: vec![],
            own_image: None,
            kernel_log: "",
        };
        let target_check = target(&inputs, Some(&image));
        assert_eq!(target_check.level, Level::Fail, "{target_check:?}");
        assert!(
            target_check.message.contains("virtio_pci"),
            "{target_check:?}"
        );
        assert!(
            !target_check.message.contains("virtio_blk,"),
            "{target_check:?}"
        );
        let missing = Config {
            target: Target::Filesystem {
                fstype: "ext4".into(),
                device: DeviceSpec::Uuid("9999".into()),
            },
            ..Config::default()
        };
        let inputs = Inputs {
            config: &missing,
            ..inputs
        };
        assert!(
            target(&inputs, Some(&image))
                .message
                .contains("does not exist")
        );
    }

    #[test]
    fn signatures_and_lockdown() {
        let forced = KexecState {
            sig_force: Some(true),
            lockdown: Some(Lockdown::None),
            ..KexecState::default()
        };
        let check = signatures(&forced);
        assert_eq!(check.level, Level::Ok);
        assert!(check.message.contains("falls back to kexec_load"));
        let locked = KexecState {
            secure_boot: Some(true),
            lockdown: Some(Lockdown::Integrity),
            ..KexecState::default()
        };
        assert_eq!(signatures(&locked).level, Level::Warn);
        assert_eq!(lockdown(&locked).level, Level::Warn);
        // Secure Boot without lockdown: the IMA architecture policy refuses kexec_load too.
        let secure = KexecState {
            secure_boot: Some(true),
            lockdown: Some(Lockdown::None),
            ..KexecState::default()
        };
        assert!(signatures(&secure).message.contains("EACCES"));
    }
}
