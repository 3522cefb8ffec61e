//! The lab's guest variants: which kernel, how much memory, which CPU, what workload.
//!
//! This table is the lab's data; scenarios pick variants by name. Command lines are built from
//! the `*_CMDLINE` templates below, never spelled out per variant.

use crate::kernels::Flavor;

/// What the first kernel does before it crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Nothing: crash right after boot.
    Idle,
    /// Fill memory to `fill_percent` of MemTotal with page-cache files and mixed anonymous data.
    Mixed {
        /// Target share of MemTotal in use.
        fill_percent: u32,
    },
}

/// One guest configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    /// Name used by tests and the `rkdump-lab` command.
    pub name: &'static str,
    /// Kernel flavour (first and capture kernel are the same build).
    pub flavor: Flavor,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs of the first kernel.
    pub cpus: u32,
    /// QEMU CPU model (`max` exposes la57 for 5-level paging).
    pub cpu_model: Option<&'static str>,
    /// Whether the first kernel randomises its base address.
    pub kaslr: bool,
    /// What runs before the crash.
    pub workload: Workload,
    /// CPU that triggers the panic.
    pub panic_cpu: u32,
    /// `nr_cpus=` of the capture kernel.
    pub capture_cpus: u32,
    /// `crashkernel=` reservation of the first kernel.
    pub crashkernel: &'static str,
    /// Slow variant: its tests are named `long_*`, which `RKDUMP_LAB_QUICK=1 bash .ci/test`
    /// leaves out.
    pub long: bool,
}

/// First-kernel command line; `{crashkernel}` and `{kaslr}` are filled in.
pub const FIRST_CMDLINE: &str = "console=ttyS0 edd=off crashkernel={crashkernel} panic=-1 {kaslr}";
/// Capture-kernel command line, as kdump-utils builds it for x86_64; `{cpus}` is filled in.
pub const CAPTURE_CMDLINE: &str =
    "console=ttyS0 irqpoll nr_cpus={cpus} reset_devices edd=off panic=-1 novmcoredd";

/// The default guest: generic 6.1, KASLR, 1 GiB with mixed data, panic on CPU 1.
pub const DEFAULT: Variant = Variant {
    name: "default",
    flavor: Flavor::Generic61,
    memory_mib: 1024,
    cpus: 2,
    cpu_model: None,
    kaslr: true,
    workload: Workload::Mixed { fill_percent: 60 },
    panic_cpu: 1,
    capture_cpus: 2,
    crashkernel: "256M",
    long: false,
};

/// The guest of the capture-runtime scenarios: generic 6.1 (it has the i6300esb watchdog and
/// xfs as modules), idle, one capture CPU.
pub const RUNTIME: Variant = Variant {
    name: "runtime",
    workload: Workload::Idle,
    panic_cpu: 0,
    capture_cpus: 1,
    ..DEFAULT
};

/// Every variant.
pub const ALL: &[Variant] = &[
    DEFAULT,
    Variant {
        name: "cloud-nokaslr-idle",
        flavor: Flavor::Cloud61,
        kaslr: false,
        workload: Workload::Idle,
        panic_cpu: 0,
        capture_cpus: 1,
        ..DEFAULT
    },
    Variant {
        name: "6.12",
        flavor: Flavor::Generic612,
        ..DEFAULT
    },
    Variant {
        name: "la57",
        cpu_model: Some("max"),
        capture_cpus: 1,
        long: true,
        ..DEFAULT
    },
    Variant {
        name: "3g",
        memory_mib: 3072,
        workload: Workload::Mixed { fill_percent: 75 },
        long: true,
        ..DEFAULT
    },
];

/// Looks a variant up by name.
pub fn by_name(name: &str) -> Option<&'static Variant> {
    ALL.iter().find(|v| v.name == name)
}

impl Variant {
    /// The first kernel's command line.
    pub fn first_cmdline(&self) -> String {
        FIRST_CMDLINE
            .replace("{crashkernel}", self.crashkernel)
            .replace("{kaslr}", if self.kaslr { "" } else { "nokaslr" })
            .trim_end()
            .to_owned()
    }

    /// The capture kernel's command line.
    pub fn capture_cmdline(&self) -> String {
        CAPTURE_CMDLINE.replace("{cpus}", &self.capture_cpus.to_string())
    }

    /// Arguments of the guest workload.
    pub fn workload_args(&self) -> String {
        match self.workload {
            Workload::Idle => format!("--panic-cpu {}", self.panic_cpu),
            Workload::Mixed { fill_percent } => format!(
                "--fill-percent {fill_percent} --files-dir /mnt/workload --panic-cpu {}",
                self.panic_cpu
            ),
        }
    }
}
