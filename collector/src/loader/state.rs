//! What the running kernel says about kexec: whether crash kexec exists here, how much memory
//! is reserved for it, whether a capture kernel is loaded, and what restricts loading one
//! (lockdown, `kexec_load_disabled`, Secure Boot, forced signatures).
//!
//! [`KexecState::read`] does the reading, under a root directory so that tests can point it at
//! recorded trees; the parsers of the individual files are pure.

use std::path::Path;

/// `/sys/kernel/security/lockdown`'s selected mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lockdown {
    /// `none`: nothing is restricted.
    None,
    /// `integrity`: unsigned kexec images and `kexec_load` are refused.
    Integrity,
    /// `confidentiality`: as integrity, and `/proc/kcore` is gone.
    Confidentiality,
}

impl Lockdown {
    /// Parses the file's text, e.g. `none [integrity] confidentiality`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let selected = text
            .split_whitespace()
            .find_map(|word| word.strip_prefix('[')?.strip_suffix(']'))?;
        match selected {
            "none" => Some(Self::None),
            "integrity" => Some(Self::Integrity),
            "confidentiality" => Some(Self::Confidentiality),
            _ => None,
        }
    }

    /// Whether this mode refuses `kexec_load` and unsigned `kexec_file_load` images.
    pub(crate) fn restricts_kexec(self) -> bool {
        self != Self::None
    }

    /// The mode's name as the kernel spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Integrity => "integrity",
            Self::Confidentiality => "confidentiality",
        }
    }
}

/// The kexec-related state of the running kernel. `None` fields could not be read (the file is
/// missing, or reading needs root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KexecState {
    /// `/sys/kernel/kexec_crash_loaded`: a capture kernel is loaded. `None`: the kernel has no
    /// crash kexec (CONFIG_CRASH_DUMP off).
    pub crash_loaded: Option<bool>,
    /// `/sys/kernel/kexec_crash_size`: bytes reserved by `crashkernel=`.
    pub crash_size: Option<u64>,
    /// Reading `kexec_crash_size` failed with `EBUSY`: a load or unload holds the kernel's kexec
    /// lock right now (kernels before 6.10 do not wait for it), so `crash_size` and
    /// `crash_loaded` say nothing lasting.
    pub kexec_busy: bool,
    /// `/sys/kernel/security/lockdown`.
    pub lockdown: Option<Lockdown>,
    /// `/proc/sys/kernel/kexec_load_disabled`: both syscalls are refused until reboot.
    pub kexec_load_disabled: Option<bool>,
    /// UEFI Secure Boot is enforcing (efivarfs `SecureBoot` = 1 and `SetupMode` = 0).
    pub secure_boot: Option<bool>,
    /// The kernel was built with `CONFIG_KEXEC_SIG_FORCE=y` (from its config file).
    pub sig_force: Option<bool>,
}

const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

impl KexecState {
    /// Reads the state under `root` (`/` on a real system) for the kernel release `release`
    /// (whose `/boot/config-<release>` tells about forced signatures).
    pub(crate) fn read(root: &Path, release: &str) -> Self {
        let text = |path: &str| std::fs::read_to_string(root.join(path)).ok();
        let number = |path: &str| text(path).and_then(|t| t.trim().parse::<u64>().ok());
        let efivar = |name: &str| {
            std::fs::read(root.join(format!("sys/firmware/efi/efivars/{name}-{EFI_GLOBAL_GUID}")))
                .ok()
                // Four attribute bytes, then the value.
                .and_then(|bytes| bytes.get(4).copied())
        };
        let secure_boot = if root.join("sys/firmware/efi").exists() {
            match (efivar("SecureBoot"), efivar("SetupMode")) {
                (Some(secure), setup) => Some(secure == 1 && setup.unwrap_or(0) == 0),
                (None, _) => None,
            }
        } else {
            Some(false)
        };
        let crash_size = std::fs::read_to_string(root.join("sys/kernel/kexec_crash_size"));
        Self {
            crash_loaded: number("sys/kernel/kexec_crash_loaded").map(|n| n == 1),
            kexec_busy: crash_size
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(nix::libc::EBUSY)),
            crash_size: crash_size.ok().and_then(|t| t.trim().parse::<u64>().ok()),
            lockdown: text("sys/kernel/security/lockdown")
                .as_deref()
                .and_then(Lockdown::parse),
            kexec_load_disabled: number("proc/sys/kernel/kexec_load_disabled").map(|n| n == 1),
            secure_boot,
            sig_force: text(&format!("boot/config-{release}"))
                .map(|config| kernel_config_enabled(&config, "CONFIG_KEXEC_SIG_FORCE")),
        }
    }

    /// Whether lockdown is known to refuse unsigned images and `kexec_load`.
    pub(crate) fn locked_down(&self) -> bool {
        self.lockdown.is_some_and(Lockdown::restricts_kexec)
    }
}

/// Whether `option` is `=y` in a kernel `.config` text.
pub(crate) fn kernel_config_enabled(config: &str, option: &str) -> bool {
    config
        .lines()
        .any(|line| line.strip_prefix(option) == Some("=y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_modes_as_the_kernel_prints_them() {
        // security/lockdown/lockdown.c lockdown_read(): every mode, the active one in brackets.
        assert_eq!(
            Lockdown::parse("[none] integrity confidentiality\n"),
            Some(Lockdown::None)
        );
        assert_eq!(
            Lockdown::parse("none [integrity] confidentiality\n"),
            Some(Lockdown::Integrity)
        );
        assert_eq!(
            Lockdown::parse("none integrity [confidentiality]"),
            Some(Lockdown::Confidentiality)
        );
        assert_eq!(Lockdown::parse("none integrity"), None);
        assert!(!Lockdown::None.restricts_kexec());
        assert!(Lockdown::Integrity.restricts_kexec());
    }

    #[test]
    fn state_from_a_recorded_tree() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, bytes: &[u8]| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        write("sys/kernel/kexec_crash_loaded", b"0\n");
        write("sys/kernel/kexec_crash_size", b"268435456\n");
        write(
            "sys/kernel/security/lockdown",
            b"[none] integrity confidentiality\n",
        );
        write("proc/sys/kernel/kexec_load_disabled", b"0\n");
        write(
            &format!("sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL_GUID}"),
            &[6, 0, 0, 0, 1],
        );
        write(
            &format!("sys/firmware/efi/efivars/SetupMode-{EFI_GLOBAL_GUID}"),
            &[6, 0, 0, 0, 0],
        );
        write(
            "boot/config-6.1.0-test",
            b"CONFIG_KEXEC_SIG=y\n# CONFIG_KEXEC_SIG_FORCE is not set\n",
        );
        let state = KexecState::read(root.path(), "6.1.0-test");
        assert_eq!(
            state,
            KexecState {
                crash_loaded: Some(false),
                crash_size: Some(256 << 20),
                kexec_busy: false,
                lockdown: Some(Lockdown::None),
                kexec_load_disabled: Some(false),
                secure_boot: Some(true),
                sig_force: Some(false),
            }
        );
        let empty = tempfile::tempdir().unwrap();
        let state = KexecState::read(empty.path(), "x");
        assert_eq!(state.crash_loaded, None);
        assert_eq!(state.secure_boot, Some(false), "no /sys/firmware/efi: BIOS");
    }
}
