//! The capture kernel's command line, built as kdumpctl's `prepare_cmdline` builds it.
//!
//! From the base (`KDUMP_COMMANDLINE`, else the running kernel's `/proc/cmdline`): remove
//! `crashkernel` and `panic_on_warn`, the user's `KDUMP_COMMANDLINE_REMOVE`, `root` and the
//! dracut parameters of the first kernel's storage (`rd.lvm.lv`, `rd.luks.uuid`, `rd.dm.uuid`,
//! `rd.md.uuid`, `fcoe`, `netroot`, `rd.iscsi.initiator`, `iscsi_initiator`); append
//! `KDUMP_COMMANDLINE_APPEND` (kdump-utils' x86_64 defaults when unset), then
//! `disable_cpu_apicid=` the boot CPU's APIC id and `<driver>.pretimeout=0` for each active
//! watchdog whose driver has a pretimeout, each only when not already given. kdumpctl's
//! `rd.systemd.gpt_auto=no` is left out: rkdump's image has no systemd.
//!
//! rkdump also chooses `nr_cpus` ([`capture_cpus`]) unless the user's append list sets it.

/// Parameters kdumpctl always removes.
const ALWAYS_REMOVED: &[&str] = &[
    "crashkernel",
    "panic_on_warn",
    "root",
    "rd.lvm.lv",
    "rd.luks.uuid",
    "rd.dm.uuid",
    "rd.md.uuid",
    "fcoe",
    "netroot",
    "rd.iscsi.initiator",
    "iscsi_initiator",
];

/// kdump-utils' default `KDUMP_COMMANDLINE_REMOVE` (gen-kdump-sysconfig.sh, x86_64).
pub(crate) const DEFAULT_REMOVE: &str =
    "hugepages hugepagesz slub_debug quiet log_buf_len swiotlb hugetlb_cma ignition.firstboot cma";

/// kdump-utils' default `KDUMP_COMMANDLINE_APPEND` for x86_64 (the architecture's list, then the
/// common part). `nr_cpus=1` in it is replaced by rkdump's choice.
pub(crate) const DEFAULT_APPEND: &str = "irqpoll nr_cpus=1 reset_devices cgroup_disable=memory \
     mce=off numa=off udev.children-max=2 panic=10 acpi_no_memhotplug transparent_hugepage=never \
     nokaslr hest_disable cma=0 pcie_ports=compat novmcoredd hugetlb_cma=0 \
     kfence.sample_interval=0 initramfs_options=size=90%";

/// What the capture command line is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Inputs {
    /// `KDUMP_COMMANDLINE`, or the running kernel's `/proc/cmdline`.
    pub base: String,
    /// `KDUMP_COMMANDLINE_REMOVE` (parameter names).
    pub remove: String,
    /// `KDUMP_COMMANDLINE_APPEND`.
    pub append: String,
    /// The boot CPU's APIC id (`apicid` of processor 0 in `/proc/cpuinfo`).
    pub boot_cpu_apicid: Option<u32>,
    /// Drivers of the active watchdogs that have a `pretimeout` parameter.
    pub pretimeout_watchdogs: Vec<String>,
    /// The capture kernel's CPU count; `None` keeps whatever the append list says.
    pub nr_cpus: Option<u32>,
    /// rkdump's own parameters for the capture (`rkdump.test_id=`, ...).
    pub extra: Vec<String>,
}

/// The parameter's name: what comes before `=`.
fn key(parameter: &str) -> &str {
    parameter.split_once('=').map_or(parameter, |(key, _)| key)
}

/// Splits a command line into parameters, keeping double-quoted values whole as the kernel does.
pub(crate) fn split(cmdline: &str) -> Vec<String> {
    let mut parameters = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    parameters.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        parameters.push(current);
    }
    parameters
}

/// Builds the capture kernel's command line.
pub(crate) fn build(inputs: &Inputs) -> String {
    let user_remove = split(&inputs.remove);
    let removed = |parameter: &str| {
        let name = key(parameter);
        ALWAYS_REMOVED.contains(&name) || user_remove.iter().any(|r| r == name)
    };
    // rkdump's nr_cpus replaces the base's too (kdumpctl's appended one would come last and
    // win over it).
    let ours = |p: &str| inputs.nr_cpus.is_some() && key(p) == "nr_cpus";
    let mut parameters: Vec<String> = split(&inputs.base)
        .into_iter()
        .filter(|p| !removed(p) && !ours(p))
        .collect();
    for parameter in split(&inputs.append) {
        if inputs.nr_cpus.is_some() && key(&parameter) == "nr_cpus" {
            continue;
        }
        parameters.push(parameter);
    }
    let mut append_once = |name: &str, value: String| {
        if !parameters.iter().any(|p| key(p) == name) {
            parameters.push(format!("{name}={value}"));
        }
    };
    if let Some(cpus) = inputs.nr_cpus {
        append_once("nr_cpus", cpus.to_string());
    }
    if let Some(id) = inputs.boot_cpu_apicid {
        append_once("disable_cpu_apicid", id.to_string());
    }
    for driver in &inputs.pretimeout_watchdogs {
        append_once(&format!("{driver}.pretimeout"), "0".to_owned());
    }
    for parameter in &inputs.extra {
        parameters.push(parameter.clone());
    }
    parameters.join(" ")
}

/// The boot CPU's APIC id: the `apicid` line of `processor : 0` in `/proc/cpuinfo`, as
/// kdump-utils' `get_bootcpu_apicid` reads it.
pub(crate) fn boot_cpu_apicid(cpuinfo: &str) -> Option<u32> {
    let mut processor = None;
    for line in cpuinfo.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim() {
            "processor" => processor = value.trim().parse::<u32>().ok(),
            "apicid" if processor == Some(0) => return value.trim().parse().ok(),
            _ => {}
        }
    }
    None
}

/// The capture kernel's CPU count: one, plus one for every 64 MiB reserved beyond 192 MiB, at
/// most 4 and at most the CPUs online.
///
/// A second CPU makes the dump 1.4-1.8x faster (BENCHMARKS.md, "2 threads vs 1"); beyond four
/// the disk or the network is the limit for the dumps of `-d 31`. Each CPU costs the capture
/// kernel its per-CPU areas and rkdump one worker (about 4 MiB of buffers), which a reservation
/// sized for one CPU does not have: kdump-utils' default of 256M gets two.
pub(crate) fn capture_cpus(online: u32, reserved: u64) -> u32 {
    const BASE: u64 = 192 << 20;
    const PER_CPU: u64 = 64 << 20;
    let by_memory = 1 + reserved.saturating_sub(BASE) / PER_CPU;
    let by_memory = u32::try_from(by_memory).unwrap_or(u32::MAX);
    by_memory.min(4).min(online.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_kdumpctl_prepare_cmdline() {
        // kdumpctl's prepare_cmdline (kdump-utils, kdumpctl at 63f248c): the always-removed
        // parameters go, the user's remove list goes (by name, with or without a value), the
        // append list, the boot CPU's APIC id and the watchdog pretimeout come last.
        let inputs = Inputs {
            base: "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.1.0-56-amd64 root=UUID=1234 ro \
                   crashkernel=2G-64G:256M rd.lvm.lv=rhel/root quiet console=ttyS0 \
                   hugepages=16 panic_on_warn=1"
                .to_owned(),
            remove: DEFAULT_REMOVE.to_owned(),
            append: "irqpoll nr_cpus=1 reset_devices".to_owned(),
            boot_cpu_apicid: Some(0),
            pretimeout_watchdogs: vec!["i6300esb".to_owned()],
            nr_cpus: None,
            extra: vec![],
        };
        assert_eq!(
            build(&inputs),
            "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.1.0-56-amd64 ro console=ttyS0 irqpoll nr_cpus=1 \
             reset_devices disable_cpu_apicid=0 i6300esb.pretimeout=0"
        );
    }

    #[test]
    fn nr_cpus_replaces_the_default_and_given_values_win() {
        let inputs = Inputs {
            base: "console=ttyS0 crashkernel=256M nr_cpus=64".to_owned(),
            append: "irqpoll nr_cpus=1 disable_cpu_apicid=3".to_owned(),
            boot_cpu_apicid: Some(0),
            nr_cpus: Some(2),
            extra: vec!["rkdump.test_id=42".to_owned()],
            ..Inputs::default()
        };
        assert_eq!(
            build(&inputs),
            "console=ttyS0 irqpoll disable_cpu_apicid=3 nr_cpus=2 rkdump.test_id=42"
        );
    }

    #[test]
    fn quoted_values_stay_whole() {
        assert_eq!(
            split(r#"a=1 dyndbg="file x +p" b"#),
            ["a=1", r#"dyndbg="file x +p""#, "b"]
        );
    }

    #[test]
    fn boot_cpu_apicid_of_processor_zero() {
        // /proc/cpuinfo of a 2-vCPU QEMU guest, cut to the relevant lines.
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\napicid\t\t: 0\ninitial apicid\t: 0\n\n\
                       processor\t: 1\napicid\t\t: 1\n";
        assert_eq!(boot_cpu_apicid(cpuinfo), Some(0));
        let swapped = "processor\t: 1\napicid\t\t: 0\n\nprocessor\t: 0\napicid\t\t: 6\n";
        assert_eq!(boot_cpu_apicid(swapped), Some(6));
        assert_eq!(boot_cpu_apicid(""), None);
    }

    #[test]
    fn cpus_by_reservation() {
        assert_eq!(capture_cpus(8, 128 << 20), 1);
        assert_eq!(capture_cpus(8, 256 << 20), 2);
        assert_eq!(capture_cpus(8, 384 << 20), 4);
        assert_eq!(capture_cpus(8, 4 << 30), 4);
        assert_eq!(capture_cpus(1, 512 << 20), 1);
        assert_eq!(capture_cpus(0, 0), 1);
    }
}
