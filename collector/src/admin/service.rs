//! `rkdump start`, `stop`, `reload`, `restart` and `showmem`: arming the running system.
//!
//! `start` follows kdumpctl's order: is crash kexec possible here (the kernel has it, memory is
//! reserved), is the configuration valid, is a capture kernel already loaded (a warning, not an
//! error), where are the kernel and the image, then the command line and the load. One
//! `flock(2)` on `/run/lock/rkdump` serializes the verbs, as kdumpctl's `/run/lock/kdump` does.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::bootinfo::{self, BootInfoError};
use crate::config::kdump_conf::{Config, Diagnostic, Severity};
use crate::config::sysconfig::{FirstKernel, KDUMP_TOOLS_FILE, SYSCONFIG_FILE};
use crate::loader::{self, KexecState, LoadError, Loaded, Method, cmdline};

/// The lock file of the service verbs.
const LOCK_FILE: &str = "/run/lock/rkdump";

/// What the verbs are given.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The system's root (`/`; a recorded tree in tests).
    pub root: PathBuf,
    /// kdump.conf.
    pub config: PathBuf,
    /// The kernel to load instead of the one found.
    pub kernel: Option<PathBuf>,
    /// The capture image to load instead of rkdump's own.
    pub initrd: Option<PathBuf>,
    /// `--syscall`; `None` takes `KEXEC_ARGS`, else auto.
    pub method: Option<Method>,
    /// Parameters added to the capture kernel's command line (`rkdump.test_id=`).
    pub extra_cmdline: Vec<String>,
    /// Rebuild rkdump's own image first when it no longer matches the system (`start`,
    /// `restart`; not `reload`, as kdumpctl).
    pub check_image: bool,
}

/// Why a verb failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// The kernel has no crash kexec.
    #[error(
        "kdump is not supported on this kernel (no /sys/kernel/kexec_crash_loaded: built without CONFIG_CRASH_DUMP)"
    )]
    NotSupported,
    /// Nothing reserved.
    #[error("no memory is reserved for the capture kernel: add crashkernel={} to the kernel command line and reboot",
        estimate.map_or_else(|| "SIZE (`rkdump estimate` gives it)".to_owned(), |n| format!("{}M (rkdump estimate's value for this kernel and image)", n >> 20)))]
    NotReserved {
        /// `rkdump estimate`'s value, when the kernel and image were found.
        estimate: Option<u64>,
    },
    /// A configuration file is invalid.
    #[error("{}", diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config {
        /// Its errors.
        diagnostics: Vec<Diagnostic>,
    },
    /// A configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadConfig {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel or the image is missing.
    #[error(transparent)]
    BootInfo(#[from] BootInfoError),
    /// The load failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The unload failed.
    #[error("cannot unload the capture kernel: {0}")]
    Unload(std::io::Error),
    /// The capture image cannot be built or checked.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// dracut could not build it.
    #[error("{0}")]
    Dracut(String),
    /// The estimate cannot be made.
    #[error("cannot estimate the reservation: {0}")]
    Estimate(super::estimate::EstimateError),
    /// Another kdump service is enabled: rkdump does not load over it.
    #[error(
        "{} is enabled: only one kdump service can own the crash kernel, and rkdump does not load \
         over it (to use rkdump: systemctl disable --now {}; then rkdump start)",
        units.join(" and "), units.join(" ")
    )]
    OtherService {
        /// Which units.
        units: Vec<&'static str>,
    },
    /// Another verb holds the lock, or it cannot be taken.
    #[error("cannot lock {LOCK_FILE}: {0}")]
    Lock(std::io::Error),
}

/// What `start` did.
#[derive(Debug)]
pub(crate) enum Started {
    /// A capture kernel was loaded already; nothing was done.
    AlreadyLoaded,
    /// Loaded now.
    Loaded {
        /// How.
        loaded: Loaded,
        /// Which kernel.
        kernel: PathBuf,
        /// Which image.
        initrd: PathBuf,
        /// With which command line.
        cmdline: String,
        /// Warnings about the configuration.
        warnings: Vec<String>,
        /// Why rkdump's image was rebuilt first, and what was built.
        rebuilt: Option<Box<(Vec<String>, crate::image::Built)>>,
    },
}

/// Holds the service lock while alive.
pub(crate) struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// Takes the service lock, waiting for another verb to finish.
pub(crate) fn lock() -> Result<Lock, ServiceError> {
    nix::fcntl::Flock::lock(lock_file()?, nix::fcntl::FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, errno)| ServiceError::Lock(errno.into()))
}

/// Takes the service lock if a `start`, `stop` or `reload` holding it finishes within
/// `timeout`; `None` when it is still held then (`status` reports what it sees anyway).
pub(crate) fn lock_within(timeout: std::time::Duration) -> Result<Option<Lock>, ServiceError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut file = lock_file()?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(Lock(lock))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() >= deadline => {
                return Ok(None);
            }
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err((_, errno)) => return Err(ServiceError::Lock(errno.into())),
        }
    }
}

fn lock_file() -> Result<File, ServiceError> {
    let path = Path::new(LOCK_FILE);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(ServiceError::Lock)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(ServiceError::Lock)
}

/// The other kdump services: Debian's kdump-tools and kdump-utils' kdumpctl.
pub(crate) const OTHER_SERVICES: &[&str] = &["kdump-tools.service", "kdump.service"];

/// The [`OTHER_SERVICES`] enabled under `root`: linked from a `.wants` or `.requires`
/// directory of `/etc/systemd/system` (kdump-tools is wanted by basic.target, kdump.service by
/// multi-user.target). A masked or disabled unit has no such link.
pub(crate) fn other_services_enabled(root: &Path) -> Vec<&'static str> {
    let dir = root.join("etc/systemd/system");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let wants: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "wants" || e == "requires")
        })
        .collect();
    OTHER_SERVICES
        .iter()
        .copied()
        .filter(|unit| {
            wants
                .iter()
                .any(|w| std::fs::symlink_metadata(w.join(unit)).is_ok())
        })
        .collect()
}

/// The running kernel's release.
pub(crate) fn running_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| String::new(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}

/// The settings of `/etc/default/kdump-tools` then `/etc/sysconfig/kdump` (which wins).
pub(crate) fn first_kernel_settings(root: &Path) -> Result<FirstKernel, ServiceError> {
    let mut settings = FirstKernel::default();
    let mut diagnostics = Vec::new();
    for file in [KDUMP_TOOLS_FILE, SYSCONFIG_FILE] {
        let path = root.join(file.trim_start_matches('/'));
        match std::fs::read_to_string(&path) {
            Ok(text) => diagnostics.extend(settings.parse_into(file, &text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ServiceError::ReadConfig { path, source }),
        }
    }
    if diagnostics.is_empty() {
        Ok(settings)
    } else {
        Err(ServiceError::Config { diagnostics })
    }
}

/// kdump.conf, checked: errors fail, warnings are returned. A missing file is kdump-utils'
/// defaults.
pub(crate) fn kdump_conf(path: &Path) -> Result<(Config, Vec<String>), ServiceError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((
                Config::default(),
                vec![format!(
                    "{} does not exist: dumping to /var/crash on the root filesystem",
                    path.display()
                )],
            ));
        }
        Err(source) => {
            return Err(ServiceError::ReadConfig {
                path: path.to_owned(),
                source,
            });
        }
    };
    let (config, diagnostics) = Config::parse(&path.display().to_string(), &text);
    let (errors, warnings): (Vec<_>, Vec<_>) = diagnostics
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if errors.is_empty() {
        Ok((config, warnings.iter().map(ToString::to_string).collect()))
    } else {
        Err(ServiceError::Config {
            diagnostics: errors,
        })
    }
}

/// `KEXEC_ARGS` as a method: `-c` is kexec_load, `-s` and `-a` are rkdump's default (file
/// first, the fallback when it can help: kdump-utils writes `-s` by default, and its users
/// want a working kdump rather than none); anything else is ignored with a warning.
fn method_from_kexec_args(args: &str, warnings: &mut Vec<String>) -> Method {
    let mut method = Method::Auto;
    for arg in args.split_whitespace() {
        match arg {
            "-c" | "--kexec-syscall" => method = Method::Load,
            "-s" | "--kexec-file-syscall" | "-a" | "--kexec-syscall-auto" => method = Method::Auto,
            other => warnings.push(format!(
                "KEXEC_ARGS: {other} is a kexec-tools option rkdump does not use"
            )),
        }
    }
    method
}

/// `start`: check, locate, build the command line, load.
pub(crate) fn start(options: &Options) -> Result<Started, ServiceError> {
    let release = running_release();
    let root = &options.root;
    let state = KexecState::read(root, &release);
    if state.crash_loaded.is_none() {
        return Err(ServiceError::NotSupported);
    }
    let unreserved = state.crash_size.unwrap_or(0) == 0;
    let (_config, mut warnings) = kdump_conf(&options.config)?;
    let settings = first_kernel_settings(root)?;
    let others = other_services_enabled(root);
    if !others.is_empty() {
        return Err(ServiceError::OtherService { units: others });
    }
    let found = locate(options, &settings, &release);
    if unreserved {
        let estimate = found.as_ref().ok().and_then(|(kernel, initrd)| {
            super::estimate::estimate_files(kernel, initrd, 1)
                .ok()
                .map(|e| e.needed)
        });
        return Err(ServiceError::NotReserved { estimate });
    }
    if state.crash_loaded == Some(true) {
        return Ok(Started::AlreadyLoaded);
    }
    let rebuilt = match found {
        // The kernel is missing: nothing to build an image for.
        Err(ServiceError::BootInfo(BootInfoError::NoKernel { .. })) => None,
        _ if !options.check_image => None,
        _ => {
            let explicit = options.initrd.is_some() || settings.initrd.is_some();
            let kernel_release = settings.kernel_version.as_deref().unwrap_or(&release);
            match super::image::prepare(options, explicit, kernel_release)? {
                super::image::Prepared::AsIs => None,
                super::image::Prepared::Rebuilt(reasons, built) => {
                    Some(Box::new((reasons, *built)))
                }
            }
        }
    };
    let found = if rebuilt.is_some() {
        locate(options, &settings, &release)
    } else {
        found
    };
    let (kernel, initrd) = found?;
    let proc_cmdline = std::fs::read_to_string(root.join("proc/cmdline")).unwrap_or_default();
    // The reservation the capture needs, for the message when it is too small.
    let needed = super::estimate::estimate_files(&kernel, &initrd, capture_cpus(&state))
        .map(|e| e.needed)
        .ok();
    let method = options.method.unwrap_or_else(|| {
        settings.kexec_args.as_deref().map_or(Method::Auto, |args| {
            method_from_kexec_args(args, &mut warnings)
        })
    });
    let cmdline = capture_cmdline(
        root,
        &settings,
        &state,
        &proc_cmdline,
        &options.extra_cmdline,
    );
    let loaded = loader::load(&loader::Request {
        kernel: &kernel,
        initrd: &initrd,
        cmdline: &cmdline,
        method,
        state: &state,
        needed,
    })?;
    Ok(Started::Loaded {
        loaded,
        kernel,
        initrd,
        cmdline,
        warnings,
        rebuilt,
    })
}

/// The kernel and the capture image to load.
pub(crate) fn locate(
    options: &Options,
    settings: &FirstKernel,
    release: &str,
) -> Result<(PathBuf, PathBuf), ServiceError> {
    let root = &options.root;
    let release = settings.kernel_version.as_deref().unwrap_or(release);
    let proc_cmdline = std::fs::read_to_string(root.join("proc/cmdline")).unwrap_or_default();
    let kernel = match &options.kernel {
        Some(kernel) => kernel.clone(),
        None => bootinfo::kernel(root, settings, release, &proc_cmdline)?,
    };
    let initrd = bootinfo::image(root, settings, release, options.initrd.as_deref())?;
    Ok((kernel, initrd))
}

/// The CPUs online here.
fn online_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// The capture kernel's CPUs for this reservation.
pub(crate) fn capture_cpus(state: &KexecState) -> u32 {
    cmdline::capture_cpus(online_cpus(), state.crash_size.unwrap_or(0))
}

/// The capture kernel's command line for this system.
fn capture_cmdline(
    root: &Path,
    settings: &FirstKernel,
    state: &KexecState,
    proc_cmdline: &str,
    extra: &[String],
) -> String {
    let append = settings
        .commandline_append
        .clone()
        .unwrap_or_else(|| cmdline::DEFAULT_APPEND.to_owned());
    // The user's own nr_cpus= wins; the default list's nr_cpus=1 is rkdump's to choose.
    let user_cpus = settings
        .commandline_append
        .as_deref()
        .is_some_and(|a| cmdline::split(a).iter().any(|p| p.starts_with("nr_cpus=")));
    let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    cmdline::build(&cmdline::Inputs {
        base: settings
            .commandline
            .clone()
            .unwrap_or_else(|| proc_cmdline.trim().to_owned()),
        remove: settings
            .commandline_remove
            .clone()
            .unwrap_or_else(|| cmdline::DEFAULT_REMOVE.to_owned()),
        append,
        boot_cpu_apicid: cmdline::boot_cpu_apicid(&cpuinfo),
        pretimeout_watchdogs: bootinfo::pretimeout_watchdogs(root),
        nr_cpus: (!user_cpus).then(|| capture_cpus(state)),
        extra: extra.to_vec(),
    })
}

/// What `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Nothing was loaded.
    NotLoaded,
    /// Unloaded now.
    Unloaded,
}

/// `stop`: unload the capture kernel.
pub(crate) fn stop(root: &Path) -> Result<Stopped, ServiceError> {
    let state = KexecState::read(root, &running_release());
    if state.crash_loaded.is_none() {
        return Err(ServiceError::NotSupported);
    }
    if state.crash_loaded == Some(false) {
        return Ok(Stopped::NotLoaded);
    }
    loader::unload().map_err(ServiceError::Unload)?;
    Ok(Stopped::Unloaded)
}

/// `showmem`: the bytes reserved for the capture kernel.
pub(crate) fn reserved(root: &Path) -> Result<u64, ServiceError> {
    let state = KexecState::read(root, &running_release());
    match state.crash_size {
        None => Err(ServiceError::NotSupported),
        Some(bytes) => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_kdump_services_count_when_linked_from_any_wants_directory() {
        let root = tempfile::tempdir().unwrap();
        let system = root.path().join("etc/systemd/system");
        std::fs::create_dir_all(system.join("multi-user.target.wants")).unwrap();
        assert!(other_services_enabled(root.path()).is_empty());
        // A masked kdump-tools (a link to /dev/null beside the wants directories) is not enabled.
        std::os::unix::fs::symlink("/dev/null", system.join("kdump-tools.service")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/rkdump.service",
            system.join("multi-user.target.wants/rkdump.service"),
        )
        .unwrap();
        assert!(other_services_enabled(root.path()).is_empty());
        // kdump-tools is wanted by basic.target; the link may dangle in a recorded tree.
        std::fs::create_dir_all(system.join("basic.target.wants")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/kdump-tools.service",
            system.join("basic.target.wants/kdump-tools.service"),
        )
        .unwrap();
        assert_eq!(other_services_enabled(root.path()), ["kdump-tools.service"]);
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/kdump.service",
            system.join("multi-user.target.wants/kdump.service"),
        )
        .unwrap();
        assert_eq!(
            other_services_enabled(root.path()),
            ["kdump-tools.service", "kdump.service"]
        );
        let message = ServiceError::OtherService {
            units: other_services_enabled(root.path()),
        }
        .to_string();
        assert!(message.contains("does not load over it"), "{message}");
        assert!(
            message.contains("systemctl disable --now kdump-tools.service kdump.service"),
            "{message}"
        );
    }
}
