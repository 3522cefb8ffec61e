//! rkdump's own settings on the capture kernel's command line: `rkdump.KEY=VALUE`.
//!
//! kdump.conf says *what* to capture and where; these say how long to wait and what the
//! capture kernel may do to the hardware. The first kernel puts them on the capture kernel's
//! command line; PID 1 and `rkdump capture` read them through [`Settings::from_cmdline`], the
//! one place where their names and defaults are written down:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rkdump.timeout=SECONDS` | 3600 | deadline of the whole capture |
//! | `rkdump.device_timeout=SECONDS` | 90 | wait for the target's block device |
//! | `rkdump.hook_timeout=SECONDS` | 300 | time limit of each hook |
//! | `rkdump.watchdog=on\|off\|nopet` | on | pet an active hardware watchdog, ignore it, or open it without petting (a test of the reset) |
//! | `rkdump.watchdog_timeout=SECONDS` | 60 | timeout set on the watchdog |
//! | `rkdump.network_timeout=SECONDS` | 180 | bring-up and reaching a network target |
//! | `rkdump.stall_timeout=SECONDS` | 120 | an NFS dump writing nothing that long is abandoned (0: never) |
//!
//! A value that is not a number keeps the default, with a warning.

use std::time::Duration;

/// Deadline of the whole capture.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Wait for the target's block device.
pub const DEFAULT_DEVICE_TIMEOUT: Duration = Duration::from_secs(90);
/// Time limit of each hook.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// Timeout set on an active hardware watchdog.
pub const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(60);
/// Network bring-up and reaching a network target.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(180);
/// An NFS dump that writes nothing for this long is abandoned.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What to do with an active hardware watchdog (`rkdump.watchdog=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogMode {
    /// Pet it for the whole capture (`on`, the default).
    Pet,
    /// Leave it alone (`off`).
    Off,
    /// Open and arm it but never pet it (`nopet`): shows that a hung capture is reset.
    NoPet,
}

/// The `rkdump.*` settings of one capture kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `rkdump.timeout=`.
    pub timeout: Duration,
    /// `rkdump.device_timeout=`.
    pub device_timeout: Duration,
    /// `rkdump.hook_timeout=`.
    pub hook_timeout: Duration,
    /// `rkdump.watchdog=`.
    pub watchdog: WatchdogMode,
    /// `rkdump.watchdog_timeout=`.
    pub watchdog_timeout: Duration,
    /// `rkdump.network_timeout=`.
    pub network_timeout: Duration,
    /// `rkdump.stall_timeout=`; `None` when 0 turns the guard off.
    pub stall_timeout: Option<Duration>,
    /// Values that could not be used, one line each.
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            device_timeout: DEFAULT_DEVICE_TIMEOUT,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            watchdog: WatchdogMode::Pet,
            watchdog_timeout: DEFAULT_WATCHDOG_TIMEOUT,
            network_timeout: DEFAULT_NETWORK_TIMEOUT,
            stall_timeout: Some(DEFAULT_STALL_TIMEOUT),
            warnings: Vec::new(),
        }
    }
}

impl Settings {
    /// The settings `cmdline` gives (the last value of a key wins), defaults for the rest.
    pub fn from_cmdline(cmdline: &str) -> Self {
        let mut settings = Self::default();
        let seconds = |key: &str, default: Duration, warnings: &mut Vec<String>| {
            let Some(value) = cmdline_value(cmdline, key) else {
                return default;
            };
            value.parse().map_or_else(
                |_| {
                    warnings.push(format!(
                        "{key}={value} is not a number of seconds; using {}",
                        default.as_secs()
                    ));
                    default
                },
                Duration::from_secs,
            )
        };
        let mut warnings = Vec::new();
        settings.timeout = seconds("rkdump.timeout", DEFAULT_TIMEOUT, &mut warnings);
        settings.device_timeout = seconds(
            "rkdump.device_timeout",
            DEFAULT_DEVICE_TIMEOUT,
            &mut warnings,
        );
        settings.hook_timeout = seconds("rkdump.hook_timeout", DEFAULT_HOOK_TIMEOUT, &mut warnings);
        settings.watchdog_timeout = seconds(
            "rkdump.watchdog_timeout",
            DEFAULT_WATCHDOG_TIMEOUT,
            &mut warnings,
        );
        // WDIOC_SETTIMEOUT takes an int.
        if i32::try_from(settings.watchdog_timeout.as_secs()).is_err() {
            warnings.push(format!(
                "rkdump.watchdog_timeout={} is too large for a watchdog; using {}",
                settings.watchdog_timeout.as_secs(),
                DEFAULT_WATCHDOG_TIMEOUT.as_secs()
            ));
            settings.watchdog_timeout = DEFAULT_WATCHDOG_TIMEOUT;
        }
        settings.network_timeout = seconds(
            "rkdump.network_timeout",
            DEFAULT_NETWORK_TIMEOUT,
            &mut warnings,
        );
        let stall = seconds("rkdump.stall_timeout", DEFAULT_STALL_TIMEOUT, &mut warnings);
        settings.stall_timeout = (!stall.is_zero()).then_some(stall);
        settings.watchdog = match cmdline_value(cmdline, "rkdump.watchdog") {
            None | Some("on") => WatchdogMode::Pet,
            Some("off") => WatchdogMode::Off,
            Some("nopet") => WatchdogMode::NoPet,
            Some(other) => {
                warnings.push(format!(
                    "rkdump.watchdog={other} is not on, off or nopet; using on"
                ));
                WatchdogMode::Pet
            }
        };
        settings.warnings = warnings;
        settings
    }
}

/// The value of `key=` on the kernel command line (the last one wins).
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_command_line_gives_the_documented_defaults() {
        let settings = Settings::from_cmdline("root=/dev/vda1 console=ttyS0");
        assert_eq!(settings.timeout, Duration::from_secs(3600));
        assert_eq!(settings.device_timeout, Duration::from_secs(90));
        assert_eq!(settings.hook_timeout, Duration::from_secs(300));
        assert_eq!(settings.watchdog, WatchdogMode::Pet);
        assert_eq!(settings.watchdog_timeout, Duration::from_secs(60));
        assert_eq!(settings.network_timeout, Duration::from_secs(180));
        assert_eq!(settings.stall_timeout, Some(Duration::from_secs(120)));
        assert!(settings.warnings.is_empty());
    }

    #[test]
    fn every_key_is_read_and_the_last_value_wins() {
        let settings = Settings::from_cmdline(
            "rkdump.timeout=5 rkdump.timeout=7 rkdump.device_timeout=8 rkdump.hook_timeout=9 \
             rkdump.watchdog=nopet rkdump.watchdog_timeout=10 rkdump.network_timeout=11 \
             rkdump.stall_timeout=0",
        );
        assert_eq!(settings.timeout, Duration::from_secs(7));
        assert_eq!(settings.device_timeout, Duration::from_secs(8));
        assert_eq!(settings.hook_timeout, Duration::from_secs(9));
        assert_eq!(settings.watchdog, WatchdogMode::NoPet);
        assert_eq!(settings.watchdog_timeout, Duration::from_secs(10));
        assert_eq!(settings.network_timeout, Duration::from_secs(11));
        assert_eq!(settings.stall_timeout, None);
        assert_eq!(
            Settings::from_cmdline("rkdump.watchdog=off").watchdog,
            WatchdogMode::Off
        );
    }

    #[test]
    fn bad_values_keep_the_default_and_say_so() {
        let settings = Settings::from_cmdline("rkdump.timeout=1h rkdump.watchdog=maybe");
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.watchdog, WatchdogMode::Pet);
        assert_eq!(
            settings.warnings,
            [
                "rkdump.timeout=1h is not a number of seconds; using 3600",
                "rkdump.watchdog=maybe is not on, off or nopet; using on"
            ]
        );
    }

    #[test]
    fn a_watchdog_timeout_beyond_an_int_keeps_the_default() {
        let settings = Settings::from_cmdline("rkdump.watchdog_timeout=4294967296");
        assert_eq!(settings.watchdog_timeout, DEFAULT_WATCHDOG_TIMEOUT);
        assert_eq!(
            settings.warnings,
            ["rkdump.watchdog_timeout=4294967296 is too large for a watchdog; using 60"]
        );
    }

    #[test]
    fn a_key_is_matched_whole() {
        // `rkdump.timeout_x=` is not `rkdump.timeout=`, and `root=` is not `rootfstype=`.
        assert_eq!(cmdline_value("rkdump.timeout_x=5", "rkdump.timeout"), None);
        assert_eq!(
            cmdline_value("rootfstype=ext4 root=/dev/vda", "root"),
            Some("/dev/vda")
        );
    }
}
