//! Running one scenario guest: boot it, crash it, and wait until the capture kernel runs
//! rkdump; later wait for QEMU to end. Shared by the runtime and network scenarios.

use std::path::Path;
use std::time::Duration;

use rkdump_lab::kernels::Kernel;
use rkdump_lab::scenario::{self, Prepared, Scenario};
use rkdump_lab::vm::Vm;

/// Prepares `scenario` in `dir`, boots it, crashes it and waits until the capture kernel runs
/// rkdump.
pub fn boot_to_capture(scenario: &Scenario, kernel: &Kernel, dir: &Path) -> (Prepared, Vm) {
    let prepared = scenario.prepare(kernel, dir).unwrap();
    let mut vm = prepared.start().unwrap();
    scenario::wait_for_crash(&mut vm, &mut |_| {}).unwrap();
    vm.wait_for_text(
        "capture-boot",
        "capture runtime starting",
        Duration::from_secs(300),
    )
    .unwrap();
    (prepared, vm)
}

/// Waits for QEMU to exit (power-off, or a reboot with `-no-reboot`) and returns the console.
pub fn until_exit(prepared: &Prepared, vm: &mut Vm) -> String {
    vm.wait_exit(Duration::from_secs(600)).unwrap();
    prepared.serial()
}
