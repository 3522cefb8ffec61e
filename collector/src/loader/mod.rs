//! The kexec loader: puts the capture kernel and its initramfs into the crash region of the
//! running kernel, so that a panic boots them.
//!
//! Two ways in, as kexec-tools has them:
//!
//! * `kexec_file_load(2)`, the default: the running kernel reads the kernel and initramfs files
//!   itself, verifies their signature where it is configured to, builds the ELF core header and
//!   the capture kernel's boot parameters, and adds `elfcorehdr=` to its command line.
//! * `kexec_load(2)`, the fallback ([`native`]): rkdump builds every segment itself (the ELF core
//!   header from `/proc/iomem` and sysfs, `boot_params` with an e820 map of the crash region,
//!   the protected-mode kernel, the initramfs and a purgatory of its own) and hands the kernel
//!   raw memory to copy.
//!
//! Which one is used, why a load failed (from the errno the kernel really returned, see
//! `errno`), and when falling back can help, is decided here.
//!
//! * [`state`] reads what the kernel says (reservation, loaded, lockdown, signatures).
//! * [`errno`] explains a refusal and decides whether the fallback can help.
//! * [`cmdline`] builds the capture kernel's command line as kdumpctl does.

pub(crate) mod cmdline;
pub(crate) mod errno;
pub(crate) mod native;
pub(crate) mod state;

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys;
pub(crate) use errno::{Explanation, Syscall};
pub(crate) use state::KexecState;

/// Which syscall to load with (`--syscall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Method {
    /// `kexec_file_load`, and `kexec_load` when that fails for a reason it can overcome.
    #[default]
    Auto,
    /// `kexec_file_load` only.
    File,
    /// `kexec_load` only.
    Load,
}

/// What to load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The capture kernel's bzImage.
    pub kernel: &'a Path,
    /// Its initramfs.
    pub initrd: &'a Path,
    /// Its command line (without `elfcorehdr=`, which the loader adds).
    pub cmdline: &'a str,
    /// Which syscall.
    pub method: Method,
    /// The running kernel's kexec state, read before loading.
    pub state: &'a KexecState,
    /// The reservation the capture needs (`rkdump estimate`), for the message when the crash
    /// region is too small; `None`: the kernel and image sizes, a lower bound.
    pub needed: Option<u64>,
}

/// A refused load: which syscall, its errno, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The syscall that failed.
    pub syscall: Syscall,
    /// Its errno.
    pub errno: i32,
    /// Cause and fix.
    pub explanation: Explanation,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed with {}: {}",
            self.syscall.name(),
            errno::errno_name(self.errno),
            self.explanation.cause
        )
    }
}

/// A successful load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The syscall that loaded it.
    pub syscall: Syscall,
    /// Why `kexec_file_load` was not used, when the fallback loaded it.
    pub fallback_from: Option<Refusal>,
    /// The capture kernel's whole command line, when rkdump built it (kexec_load: with
    /// `elfcorehdr=` and `acpi_rsdp=`); `kexec_file_load` adds its own `elfcorehdr=`.
    pub cmdline: Option<String>,
}

/// Why nothing was loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command line has a NUL byte.
    #[error("the capture kernel's command line contains a NUL byte")]
    CommandLine,
    /// The kernel refused the load (after the fallback, when there was one).
    #[error("{refusal}; to fix: {}{}", refusal.explanation.fix,
        first.as_ref().map(|f| format!(" (before that: {f})")).unwrap_or_default())]
    Refused {
        /// The last refusal.
        refusal: Refusal,
        /// `kexec_file_load`'s refusal, when the fallback was tried after it.
        first: Option<Refusal>,
    },
    /// The native segments could not be built.
    #[error("cannot build the kexec_load segments: {error}{}",
        first.as_ref().map(|f| format!(" (tried after: {f}; to load with kexec_file_load: {})", f.explanation.fix)).unwrap_or_default())]
    Native {
        /// Why.
        error: native::NativeError,
        /// `kexec_file_load`'s refusal, when this was the fallback.
        first: Option<Refusal>,
    },
}

/// Loads the capture kernel into the crash region.
pub(crate) fn load(request: &Request<'_>) -> Result<Loaded, LoadError> {
    let open = |path: &Path| {
        File::open(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let kernel = open(request.kernel)?;
    let initrd = open(request.initrd)?;
    let needed = request.needed.unwrap_or_else(|| {
        [&kernel, &initrd]
            .iter()
            .map(|file| file.metadata().map_or(0, |m| m.len()))
            .sum()
    });
    let context = errno::Context {
        state: request.state,
        needed,
    };
    let refusal = |syscall, error: std::io::Error| {
        let errno = error.raw_os_error().unwrap_or(0);
        Refusal {
            syscall,
            errno,
            explanation: errno::explain(syscall, errno, context),
        }
    };
    let native = |first: Option<Refusal>| match load_native(request) {
        Ok(loaded) => Ok(Loaded {
            syscall: Syscall::Load,
            fallback_from: first,
            cmdline: Some(loaded.cmdline),
        }),
        Err(NativeFailure::Syscall(error)) => Err(LoadError::Refused {
            refusal: refusal(Syscall::Load, error),
            first,
        }),
        Err(NativeFailure::Build(error)) => Err(LoadError::Native { error, first }),
        Err(NativeFailure::Read(error)) => Err(error),
    };
    if request.method == Method::Load {
        return native(None);
    }
    let cmdline = CString::new(request.cmdline).map_err(|_| LoadError::CommandLine)?;
    let result = retry_syscall(|| {
        sys::kexec_file_load(&kernel, Some(&initrd), &cmdline, sys::KEXEC_FILE_ON_CRASH)
    });
    let Err(error) = result else {
        return Ok(Loaded {
            syscall: Syscall::File,
            fallback_from: None,
            cmdline: None,
        });
    };
    let first = refusal(Syscall::File, error);
    if request.method == Method::File || !errno::fallback_may_help(first.errno, request.state) {
        return Err(LoadError::Refused {
            refusal: first,
            first: None,
        });
    }
    native(Some(first))
}

/// How the native path failed.
enum NativeFailure {
    /// `kexec_load(2)` itself refused (its errno is explained like kexec_file_load's).
    Syscall(std::io::Error),
    /// The segments could not be built.
    Build(native::NativeError),
    /// The kernel or image could not be read.
    Read(LoadError),
}

/// Reads the files and loads them with rkdump's own segments, retrying while EBUSY.
fn load_native(request: &Request<'_>) -> Result<native::Loaded, NativeFailure> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| {
            NativeFailure::Read(LoadError::Read {
                path: path.to_owned(),
                source,
            })
        })
    };
    let kernel = read(request.kernel)?;
    let initrd = read(request.initrd)?;
    if initrd.is_empty() {
        return Err(NativeFailure::Read(LoadError::Read {
            path: request.initrd.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the image is empty"),
        }));
    }
    let native = native::Request {
        kernel: &kernel,
        initrd: &initrd,
        cmdline: request.cmdline,
    };
    retry_busy(|| match native::load(&native) {
        Err(native::NativeError::Syscall(error)) => Err(Busy::Io(error)),
        Err(other) => Err(Busy::Other(other)),
        Ok(loaded) => Ok(loaded),
    })
    .map_err(|error| match error {
        Busy::Io(error) => NativeFailure::Syscall(error),
        Busy::Other(error) => NativeFailure::Build(error),
    })
}

/// A failure that may be a busy kexec lock.
enum Busy<E> {
    /// A syscall's error; EBUSY is retried.
    Io(std::io::Error),
    /// Anything else, never retried.
    Other(E),
}

/// How many times a load is tried while the kexec lock is busy, and how long apart.
const BUSY_ATTEMPTS: u32 = 5;
/// The pause between two tries.
const BUSY_PAUSE: Duration = Duration::from_millis(400);

/// Runs `call` again while it fails with EBUSY, [`BUSY_ATTEMPTS`] times at most.
fn retry_busy<T, E>(mut call: impl FnMut() -> Result<T, Busy<E>>) -> Result<T, Busy<E>> {
    let mut attempt = 1;
    loop {
        match call() {
            Err(Busy::Io(error))
                if attempt < BUSY_ATTEMPTS
                    && error.raw_os_error().is_some_and(errno::is_transient) =>
            {
                attempt += 1;
                std::thread::sleep(BUSY_PAUSE);
            }
            other => return other,
        }
    }
}

/// [`retry_busy`] for a plain syscall.
fn retry_syscall(mut call: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    retry_busy(|| call().map_err(Busy::<std::convert::Infallible>::Io)).map_err(|error| match error
    {
        Busy::Io(error) => error,
        Busy::Other(never) => match never {},
    })
}

/// Unloads the capture kernel: `kexec_file_load`'s unload (which lockdown allows), else
/// `kexec_load` with no segments.
pub(crate) fn unload() -> Result<(), std::io::Error> {
    match retry_syscall(sys::kexec_file_unload_crash) {
        Err(error) if matches!(error.raw_os_error(), Some(nix::libc::ENOSYS)) => {
            retry_syscall(|| sys::kexec_load(0, &[], sys::KEXEC_ON_CRASH | sys::KEXEC_ARCH_X86_64))
        }
        other => other,
    }
}
