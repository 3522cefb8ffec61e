//! The end of a capture: reboot, halt or power off, as kdump.conf's `final_action` or
//! `failure_action` says.

use nix::sys::reboot::{RebootMode, reboot};

use super::log::Log;
use crate::config::Action;

/// Carries out a final `action` (reboot, halt or power-off): sync, then `reboot(2)`. Never
/// returns; if the kernel refuses, it says so and waits.
pub fn finish(action: Action, log: &Log) -> ! {
    log.line(&format!("final action: {action}"));
    nix::unistd::sync();
    let mode = match action {
        Action::Halt => RebootMode::RB_HALT_SYSTEM,
        Action::Poweroff => RebootMode::RB_POWER_OFF,
        Action::Reboot | Action::Shell | Action::DumpToRootfs => RebootMode::RB_AUTOBOOT,
    };
    let error = reboot(mode).err();
    log.line(&format!("reboot(2) failed: {error:?}; waiting"));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
