//! What a failed kexec load means, from the errno the kernel returned, and whether the other
//! syscall can overcome it.
//!
//! The table follows what the kernel really returns: `kernel/kexec_file.c`
//! (`kimage_validate_signature`: the verifier's errno only when signatures are enforced, EPERM
//! when lockdown refuses an unverifiable image), `kernel/kexec.c` (`kexec_load_check`: EPERM for
//! the capability, `kexec_load_disabled` and lockdown) and `arch/x86/kernel/kexec-bzimage64.c`
//! (ENOEXEC for what is not a loadable bzImage). Each explanation is one cause and one fix, read
//! against the machine's [`KexecState`] so that EPERM says which of its causes applies.

use super::state::KexecState;

/// Which syscall failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syscall {
    /// `kexec_file_load(2)`.
    File,
    /// `kexec_load(2)`, rkdump's native segments.
    Load,
}

impl Syscall {
    /// The syscall's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::File => "kexec_file_load",
            Self::Load => "kexec_load",
        }
    }
}

/// Why a load failed and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Explanation {
    /// The cause, as the kernel means it.
    pub cause: String,
    /// What the user can do.
    pub fix: String,
}

/// What is known when a load fails, besides the errno.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The running kernel's kexec state.
    pub state: &'a KexecState,
    /// Bytes the capture kernel and its image need in the crash region, at least.
    pub needed: u64,
}

/// `ENOTSUPP`: the kernel-internal errno some signature verifiers return (printed by libc as
/// "Unknown error 524").
pub(crate) const ENOTSUPP: i32 = 524;

/// The errnos of a signature the kernel refused because it enforces signatures.
const SIGNATURE_ERRNOS: &[i32] = &[
    libc::ENOKEY,
    libc::EKEYREJECTED,
    libc::EBADMSG,
    libc::ENODATA,
    libc::ELIBBAD,
    libc::ENOPKG,
    libc::EMSGSIZE,
    ENOTSUPP,
];

use nix::libc;

/// Whether `errno` from `kexec_file_load` is a signature refusal.
pub(crate) fn is_signature_refusal(errno: i32) -> bool {
    SIGNATURE_ERRNOS.contains(&errno)
}

/// Whether `kexec_load` may succeed where `kexec_file_load` failed with `errno`.
///
/// kexec-tools' `-a` falls back on ENOSYS, EINVAL and ENOEXEC. rkdump also falls back on a
/// signature refusal when lockdown is off: the kernel then enforces signatures only for file
/// loads (`CONFIG_KEXEC_SIG_FORCE`), and `kexec_load` is allowed. Under lockdown `kexec_load`
/// is refused as well, so there is nothing to fall back to.
pub(crate) fn fallback_may_help(errno: i32, state: &KexecState) -> bool {
    if state.locked_down() || state.kexec_load_disabled == Some(true) {
        return false;
    }
    matches!(errno, libc::ENOSYS | libc::EINVAL | libc::ENOEXEC) || is_signature_refusal(errno)
}

/// Whether `errno` is worth retrying after a pause (another load holds the kexec lock).
pub(crate) fn is_transient(errno: i32) -> bool {
    errno == libc::EBUSY
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Explains `errno` returned by `syscall`.
pub(crate) fn explain(syscall: Syscall, errno: i32, context: Context<'_>) -> Explanation {
    let state = context.state;
    let explanation = |cause: String, fix: &str| Explanation {
        cause,
        fix: fix.to_owned(),
    };
    match errno {
        e if syscall == Syscall::File && is_signature_refusal(e) => explanation(
            format!(
                "the kernel enforces kexec image signatures ({}) and this kernel image is not signed \
                 by a key it trusts ({})",
                if state.secure_boot == Some(true) {
                    "Secure Boot with the IMA architecture policy"
                } else if state.sig_force == Some(true) {
                    "CONFIG_KEXEC_SIG_FORCE"
                } else {
                    "CONFIG_KEXEC_SIG_FORCE or Secure Boot"
                },
                errno_name(e)
            ),
            "sign the capture kernel with a key in the kernel's keyrings (sbsign, and enroll the \
             key with mokutil --import), or use a kernel your distribution signed",
        ),
        libc::EPERM | libc::EACCES => explain_permission(syscall, errno, state),
        libc::EADDRNOTAVAIL | libc::ENOMEM => match state.crash_size {
            None | Some(0) => explanation(
                "no memory is reserved for the capture kernel (no crashkernel= on the kernel \
                 command line, or the reservation failed at boot)"
                    .to_owned(),
                "add crashkernel= to the kernel command line (`rkdump estimate` gives the size) \
                 and reboot; if the kernel log says the reservation failed, try crashkernel=SIZE,high",
            ),
            Some(reserved) if context.needed > 0 && context.needed <= reserved => explanation(
                format!(
                    "the kernel found no room for the capture kernel in the crash region ({} MiB \
                     reserved, {} MiB estimated: fragmented, or the estimate is low for this \
                     kernel)",
                    mib(reserved),
                    mib(context.needed)
                ),
                "raise crashkernel= by 64M on the kernel command line and reboot",
            ),
            Some(reserved) => explanation(
                format!(
                    "the crashkernel= reservation is too small: {} MiB reserved, {} MiB needed \
                     for the capture kernel and its image",
                    mib(reserved),
                    mib(context.needed)
                ),
                "raise crashkernel= on the kernel command line (`rkdump estimate` gives the size) \
                 and reboot",
            ),
        },
        libc::EBUSY => explanation(
            "another kexec load or unload is in progress (or a CPU/memory hotplug update)"
                .to_owned(),
            "try again in a moment; check that no other kdump service runs at the same time",
        ),
        libc::ENOEXEC => explanation(
            "the kernel image is not a bzImage this kernel can load (not 64-bit, boot protocol \
             older than 2.12, not loadable above 4 GiB, or truncated)"
                .to_owned(),
            "use the running kernel's own image (/boot/vmlinuz-$(uname -r)) or a newer one",
        ),
        libc::ENOSYS => explanation(
            format!(
                "{} is not available (kernel built without it, or a seccomp filter refuses it)",
                syscall.name()
            ),
            "use a kernel with CONFIG_KEXEC_FILE and CONFIG_KEXEC, or lift the seccomp filter",
        ),
        libc::EINVAL => explanation(
            "the kernel rejected the load's parameters (command line too long, an empty or \
             special file, or overlapping segments)"
                .to_owned(),
            "shorten KDUMP_COMMANDLINE_APPEND, and check that the kernel and initramfs are regular, \
             non-empty files",
        ),
        libc::ETXTBSY => explanation(
            "the kernel or initramfs file is open for writing".to_owned(),
            "wait for whatever writes it (a package upgrade, an image rebuild) to finish",
        ),
        libc::EFBIG => explanation(
            "the kernel or initramfs file is too large for the kernel to read".to_owned(),
            "build a smaller capture image",
        ),
        other => explanation(
            format!("{} failed: {}", syscall.name(), errno_name(other)),
            "see the kernel log (dmesg) for the kexec message",
        ),
    }
}

/// EPERM and EACCES: which of their causes applies here.
fn explain_permission(syscall: Syscall, errno: i32, state: &KexecState) -> Explanation {
    let explanation = |cause: String, fix: &str| Explanation {
        cause,
        fix: fix.to_owned(),
    };
    if state.kexec_load_disabled == Some(true) {
        return explanation(
            "kexec is disabled until the next boot (/proc/sys/kernel/kexec_load_disabled is 1)"
                .to_owned(),
            "remove whatever sets kernel.kexec_load_disabled=1 (sysctl.d) and reboot",
        );
    }
    if let Some(mode) = state.lockdown.filter(|mode| mode.restricts_kexec()) {
        let cause = match syscall {
            Syscall::File => format!(
                "the kernel is locked down ({}: /sys/kernel/security/lockdown) and cannot \
                 verify this kernel image's signature against its keyrings",
                mode.name()
            ),
            Syscall::Load => format!(
                "the kernel is locked down ({}: /sys/kernel/security/lockdown), which refuses \
                 kexec_load entirely",
                mode.name()
            ),
        };
        return explanation(
            cause,
            "load a capture kernel signed by a key the kernel trusts (the distribution's signed \
             kernel, or enroll your key with mokutil), or boot without lockdown",
        );
    }
    if state.lockdown.is_none() {
        return explanation(
            format!(
                "{} was refused, and the lockdown state is unknown (securityfs is not mounted \
                 on /sys/kernel/security): lockdown, or no CAP_SYS_BOOT",
                syscall.name()
            ),
            "mount -t securityfs securityfs /sys/kernel/security and run rkdump doctor; run \
             rkdump as root",
        );
    }
    if errno == libc::EACCES {
        return explanation(
            "an IMA appraisal policy refuses this kexec image".to_owned(),
            "sign the image for IMA, or change the IMA policy",
        );
    }
    explanation(
        format!(
            "{} was refused: rkdump lacks CAP_SYS_BOOT (run it as root), or the kexec load \
             limit (kernel.kexec_load_limit_*) is used up",
            syscall.name()
        ),
        "run rkdump as root; check sysctl kernel.kexec_load_limit_panic",
    )
}

/// The symbolic name of an errno, with its text (`ENOKEY (Required key not available)`).
pub(crate) fn errno_name(errno: i32) -> String {
    if errno == ENOTSUPP {
        return "ENOTSUPP (operation not supported, errno 524)".to_owned();
    }
    let name = nix::errno::Errno::from_raw(errno);
    format!("{name:?} ({})", name.desc())
}

#[cfg(test)]
mod tests {
    use super::super::state::Lockdown;
    use super::*;

    fn state(lockdown: Lockdown) -> KexecState {
        KexecState {
            crash_loaded: Some(false),
            crash_size: Some(128 << 20),
            kexec_busy: false,
            lockdown: Some(lockdown),
            kexec_load_disabled: Some(false),
            secure_boot: Some(false),
            sig_force: Some(true),
        }
    }

    #[test]
    fn fallback_follows_kexec_tools_and_adds_signatures_without_lockdown() {
        let open = state(Lockdown::None);
        // kexec-tools' -a: ENOSYS, EINVAL, ENOEXEC.
        for errno in [libc::ENOSYS, libc::EINVAL, libc::ENOEXEC] {
            assert!(fallback_may_help(errno, &open), "{errno}");
        }
        // rkdump: the signature refusals too (kexec-loading.md's list: ENOKEY, EKEYREJECTED,
        // EBADMSG, ENODATA, ELIBBAD, ENOPKG, EMSGSIZE, 524; seed 000: kexec -s -p failed with
        // ENOKEY).
        for errno in [
            libc::ENOKEY,
            libc::EKEYREJECTED,
            libc::EBADMSG,
            libc::ENODATA,
            libc::ELIBBAD,
            libc::ENOPKG,
            libc::EMSGSIZE,
            524,
        ] {
            assert!(fallback_may_help(errno, &open), "{errno}");
            assert!(is_signature_refusal(errno), "{errno}");
        }
        // kexec_load_disabled refuses both syscalls.
        let disabled = KexecState {
            kexec_load_disabled: Some(true),
            ..state(Lockdown::None)
        };
        assert!(!fallback_may_help(libc::ENOKEY, &disabled));
        // Not: memory, permission, busy.
        for errno in [libc::ENOMEM, libc::EADDRNOTAVAIL, libc::EPERM, libc::EBUSY] {
            assert!(!fallback_may_help(errno, &open), "{errno}");
        }
        // Under lockdown kexec_load is refused too: never fall back.
        let locked = state(Lockdown::Integrity);
        for errno in [libc::ENOKEY, libc::ENOSYS, libc::EPERM] {
            assert!(!fallback_may_help(errno, &locked), "{errno}");
        }
    }

    #[test]
    fn each_errno_gets_its_cause() {
        // The cause `explain` gives for `errno` from `syscall` on a machine in `state`.
        fn cause_in(state: &KexecState, needed: u64, syscall: Syscall, errno: i32) -> String {
            explain(syscall, errno, Context { state, needed }).cause
        }
        let open = state(Lockdown::None);
        let cause = |syscall, errno| cause_in(&open, 300 << 20, syscall, errno);
        assert!(cause(Syscall::File, libc::ENOKEY).contains("(CONFIG_KEXEC_SIG_FORCE)"));
        let secure = KexecState {
            secure_boot: Some(true),
            ..state(Lockdown::None)
        };
        assert!(
            cause_in(&secure, 0, Syscall::File, libc::ENOKEY)
                .contains("(Secure Boot with the IMA architecture policy)")
        );
        assert!(cause_in(&open, 100 << 20, Syscall::File, libc::ENOMEM).contains("found no room"));
        assert!(cause(Syscall::File, libc::ENOKEY).contains("ENOKEY"));
        assert!(cause(Syscall::File, ENOTSUPP).contains("524"));
        assert!(cause(Syscall::File, libc::ENOMEM).contains("128 MiB reserved, 300 MiB needed"));
        assert!(cause(Syscall::Load, libc::EADDRNOTAVAIL).contains("too small"));
        assert!(cause(Syscall::File, libc::ENOEXEC).contains("bzImage"));
        assert!(cause(Syscall::File, libc::EBUSY).contains("in progress"));
        assert!(cause(Syscall::File, libc::EPERM).contains("CAP_SYS_BOOT"));
        let locked = state(Lockdown::Integrity);
        assert!(
            cause_in(&locked, 0, Syscall::File, libc::EPERM).contains("locked down (integrity")
        );
        assert!(
            cause_in(&locked, 0, Syscall::Load, libc::EPERM)
                .contains("refuses kexec_load entirely")
        );
        let disabled = KexecState {
            kexec_load_disabled: Some(true),
            ..state(Lockdown::None)
        };
        assert!(
            cause_in(&disabled, 0, Syscall::File, libc::EPERM).contains("kexec_load_disabled is 1")
        );
        let unreserved = KexecState {
            crash_size: Some(0),
            ..state(Lockdown::None)
        };
        assert!(
            cause_in(&unreserved, 0, Syscall::File, libc::EADDRNOTAVAIL)
                .contains("no memory is reserved")
        );
    }
}
