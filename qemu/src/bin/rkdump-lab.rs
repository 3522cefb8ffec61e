//! `rkdump-lab`: run the crash lab by hand, and the README's demo.

use std::process::Command as Process;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rkdump::format::time::UtcTime;
use rkdump_lab::kernels::Kernel;
use rkdump_lab::{build, cache, crash, debian, installed, reference, variants};

/// The rkdump crash lab: real Debian kernels crashed in QEMU and captured with rkdump.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Crash one variant (or reuse its cached run) and print where its files are.
    Crash {
        /// Variant name (see `variants`).
        variant: String,
    },
    /// List the variants.
    Variants,
    /// Build the Debian package (rkdump_<version>_amd64.deb, in target/debian/) and print its
    /// path.
    Package,
    /// The README's main job: install the package in an installed Debian 12 guest booted with
    /// crashkernel=, let the service arm, crash it, and show the dump after the reboot.
    Demo,
    /// Print the per-variant record (timings, dump size, capture memory) as a markdown table.
    Report {
        /// Variants to include (default: all).
        variants: Vec<String>,
    },
    /// Find the smallest crashkernel= reservation that captures a variant.
    Crashkernel {
        /// Variant to crash.
        variant: String,
        /// Reservations to try, largest first (e.g. 128M 112M 96M).
        sizes: Vec<String>,
    },
    /// Benchmark rkdump's package against Debian's kdump-tools on one installed Debian 12
    /// guest: image sizes, build times, the smallest working crashkernel= (bisection), the
    /// capture time, the dump's size, crash reading it (prints BENCHMARKS.md tables).
    BenchImage {
        /// crashkernel= sizes to try instead of the bisection, largest first; each tool stops
        /// at its first failure.
        #[arg(long, num_args = 1..)]
        sizes: Vec<String>,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Memory filled with data before each crash, in percent (0: idle).
        #[arg(long, default_value_t = 0)]
        fill: u32,
        /// Bound of every wait (a boot, a load, a capture), in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Build (or find in the cache) the installed Debian 12 tree of a variant and print where
    /// it is.
    DebianTree {
        /// `default` (cloud kernel), `generic` (generic 6.1 kernel) or `kdump-tools`.
        #[arg(default_value = "default")]
        variant: String,
    },
    /// Benchmark rkdump against makedumpfile on lab vmcores (prints BENCHMARKS.md tables).
    Bench {
        /// Variants whose raw vmcores to use.
        #[arg(long = "variant", default_values_t = ["cloud-nokaslr-idle".to_owned(), "3g".to_owned()])]
        variants: Vec<String>,
        /// Runs per command (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Measure the ssh target (against makedumpfile piped into ssh) instead.
        #[arg(long, conflicts_with = "nfs")]
        network: bool,
        /// Measure the NFS target (against makedumpfile writing to the same mount, in the
        /// capture kernel) instead.
        #[arg(long)]
        nfs: bool,
        /// Measure makedumpfile's codecs (-c, -l, -p) against rkdump's, 1 and 2 threads.
        #[arg(long, conflicts_with_all = ["nfs", "network"])]
        codecs: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Crash { variant } => {
            let variant = variants::by_name(&variant)
                .with_context(|| format!("no variant named {variant:?}"))?;
            let run = crash::crash(variant)?;
            println!("run directory: {}", run.dir.display());
            for (stage, at, detail) in &run.stages {
                println!("  {stage:<15} {at:>7.1} s  {detail}");
            }
        }
        Command::Variants => {
            for v in variants::ALL {
                let mode = if v.long { "long" } else { "default" };
                println!(
                    "{:<20} {:<8} {:?} {} MiB",
                    v.name, mode, v.flavor, v.memory_mib
                );
            }
        }
        Command::Demo => demo()?,
        Command::Package => println!("{}", rkdump_lab::package::build()?.display()),
        Command::Report { variants: names } => report(&names)?,
        Command::Crashkernel { variant, sizes } => crashkernel(&variant, &sizes)?,
        Command::BenchImage {
            sizes,
            memory,
            fill,
            timeout,
        } => bench_image(&sizes, memory, fill, timeout)?,
        Command::DebianTree { variant } => {
            let variant = match variant.as_str() {
                "default" => debian::Variant::DEFAULT,
                "generic" => debian::Variant::GENERIC,
                "kdump-tools" => debian::Variant::KDUMP_TOOLS,
                other => bail!("no Debian variant {other:?} (default, generic, kdump-tools)"),
            };
            let system = debian::DebianSystem::get_variant(&variant)?;
            println!(
                "{} ({}): {}",
                system.variant,
                system.release,
                system.root().display()
            );
        }
        Command::Bench {
            variants: names,
            repeats,
            network,
            nfs,
            codecs,
        } => {
            if nfs {
                bench_nfs(&names, repeats)?;
            } else {
                bench(&names, repeats, network, codecs)?;
            }
        }
    }
    Ok(())
}

/// What the demo prints for a guest event (nothing for the steps it does not narrate).
fn narrate(event: &installed::EventKind, crashkernel_mib: u32) -> Option<String> {
    use installed::EventKind;
    Some(match event {
        EventKind::KernelBooting { capture: false } => {
            format!("the installed Debian 12 system boots (crashkernel={crashkernel_mib}M)")
        }
        EventKind::KernelBooting { capture: true } => {
            "the panic kexecs the capture kernel loaded by rkdump.service".into()
        }
        EventKind::Crashed => "kernel panic (sysrq: Trigger a crash)".into(),
        EventKind::CaptureStarted => "rkdump runs as the capture kernel's /init".into(),
        EventKind::DumpWritten(summary) => {
            let summary: serde_json::Value = serde_json::from_str(summary).unwrap_or_default();
            format!(
                "dump written: {} of {} pages kept, {:.1} MiB, complete: {}",
                summary["dumped_pages"],
                summary["total_pages"],
                summary["bytes_written"].as_f64().unwrap_or(0.0) / f64::from(1 << 20),
                summary["complete"]
            )
        }
        EventKind::FinalAction(action) => format!("the capture kernel's final action: {action}"),
        EventKind::Step(step) => {
            let (boot, name) = step.split_once('.')?;
            let text = match name {
                "dpkg-install" => {
                    "dpkg -i rkdump.deb: installed, rkdump.service enabled and started"
                }
                "status" => "rkdump status",
                "crashing" => "echo c > /proc/sysrq-trigger",
                "done" => "powering off",
                _ => return None,
            };
            format!("{text} (boot {boot})")
        }
    })
}

/// The output of step `name` in an installed flow's log, without its framing lines.
fn step_output<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("== {name}: ");
    log.lines()
        .skip_while(|l| !l.starts_with(&start))
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

/// The README's main job: the package installed in a real Debian 12 guest, armed at boot, a
/// crash, and the dump after the reboot.
fn demo() -> Result<()> {
    use rkdump_lab::debian::{BootOptions, DebianSystem};
    use rkdump_lab::installed::{DEMO_PLAN, EventKind, Flow};
    let started = Instant::now();
    let say = |at: f64, text: &str| println!("[{at:6.1} s] {text}");
    let kernel = Kernel::fetch(debian::FLAVOR)?;
    let deb = rkdump_lab::package::build()?;
    say(
        started.elapsed().as_secs_f64(),
        &format!(
            "built {} ({:.1} MB)",
            deb.display(),
            std::fs::metadata(&deb)?.len() as f64 / 1e6
        ),
    );
    let system = DebianSystem::get()?;
    say(
        started.elapsed().as_secs_f64(),
        &format!(
            "installed Debian 12 system ready (mmdebstrap: systemd, {} {}, root on ext4; no \
             kexec-tools, makedumpfile or dracut)",
            debian::FLAVOR.meta_package(),
            kernel.release
        ),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let dir = cache::root()
        .join("demo")
        .join(UtcTime::from_unix(now.cast_signed()).dump_dir_stamp());
    let options = BootOptions {
        allow_reboot: true,
        ..BootOptions::default()
    };
    let crashkernel_mib = options.crashkernel_mib.unwrap_or(0);
    let flow_started = started.elapsed().as_secs_f64();
    let mut flow = Flow::create(&system, &dir, &deb, DEMO_PLAN, &[])?;
    say(
        started.elapsed().as_secs_f64(),
        &format!(
            "guest disk made with rkdump.deb in /root; booting it under QEMU ({} MiB, {} CPUs)",
            options.memory_mib, options.cpus
        ),
    );
    let mut crashed_at = None;
    let mut rebooted_at = None;
    flow.run(
        &options,
        std::time::Duration::from_secs(1800),
        &mut |event| {
            let at = flow_started + event.at.as_secs_f64();
            match event.kind {
                EventKind::Crashed => crashed_at = Some(at),
                EventKind::KernelBooting { capture: false } if crashed_at.is_some() => {
                    rebooted_at.get_or_insert(at);
                }
                _ => {}
            }
            if let Some(text) = narrate(&event.kind, crashkernel_mib) {
                say(at, &text);
            }
        },
    )?;
    say(started.elapsed().as_secs_f64(), "the guest powered off");
    let log = flow.log()?;
    println!("\nAfter dpkg -i, `rkdump status` said:");
    for line in step_output(&log, "1.status") {
        println!("  {line}");
    }
    println!("and rkdump.service's journal:");
    for line in step_output(&log, "1.journal") {
        println!("  {line}");
    }
    println!("After the crash and the reboot, `rkdump status` said:");
    for line in step_output(&log, "2.status") {
        println!("  {line}");
    }
    let dumps = flow.dumps()?;
    let [dump] = dumps.as_slice() else {
        bail!(
            "the guest's /var/crash holds {} dumps, not one: {dumps:?}",
            dumps.len()
        );
    };
    let vmcore = dump.join("vmcore");
    println!(
        "\nThe dump: /var/crash/{} in the guest, copied out to {}",
        dump.file_name().unwrap_or_default().to_string_lossy(),
        dump.display()
    );
    for name in ["vmcore", "vmcore-dmesg.txt", "kexec-dmesg.log"] {
        println!(
            "  {name:<17} {:>10} bytes",
            std::fs::metadata(dump.join(name))?.len()
        );
    }
    if let (Some(crashed), Some(rebooted)) = (crashed_at, rebooted_at) {
        println!(
            "Crash to the system's reboot: {:.1} s (under TCG emulation)",
            rebooted - crashed
        );
    }
    let rkdump = build::rkdump()?;
    let info = Process::new(&rkdump).arg("info").arg(&vmcore).output()?;
    print!("\n{}", String::from_utf8_lossy(&info.stdout));
    let version = Process::new("crash").arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout);
    println!(
        "\ncrash's view ({}, with the -dbg vmlinux):",
        version
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("crash")
            .trim()
    );
    let output = reference::crash(&kernel.vmlinux(), &vmcore, &["sys", "bt"]);
    let panic_line = output
        .lines()
        .find(|l| l.trim_start().starts_with("PANIC:"));
    println!(
        "  {}",
        panic_line.context("crash printed no PANIC line")?.trim()
    );
    for line in output
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .take(8)
    {
        println!("  {line}");
    }
    println!(
        "\nDone in {:.0} s. Files of this run: {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

fn bench_image(sizes: &[String], memory: u32, fill: u32, timeout: u64) -> Result<()> {
    use rkdump_lab::bench_image;
    let sizes_mib = sizes
        .iter()
        .map(|size| {
            size.strip_suffix(['M', 'm'])
                .unwrap_or(size)
                .parse::<u32>()
                .with_context(|| format!("crashkernel size {size:?} is not <N>M"))
        })
        .collect::<Result<Vec<u32>>>()?;
    let mut command = "cargo run --release -p rkdump-lab -- bench-image".to_owned();
    if !sizes_mib.is_empty() {
        command.push_str(" --sizes");
        for mib in &sizes_mib {
            command.push_str(&format!(" {mib}M"));
        }
    }
    if memory != 1024 {
        command.push_str(&format!(" --memory {memory}"));
    }
    if fill != 0 {
        command.push_str(&format!(" --fill {fill}"));
    }
    let options = bench_image::Options {
        sizes_mib,
        memory_mib: memory,
        fill_percent: fill,
        timeout: std::time::Duration::from_secs(timeout),
        ..bench_image::Options::default()
    };
    let report = bench_image::run(&options)?;
    print!("{}", bench_image::markdown(&report, &command));
    Ok(())
}

fn bench(names: &[String], repeats: usize, network: bool, codecs: bool) -> Result<()> {
    let rkdump = build::rkdump()?;
    let scratch = tempfile::Builder::new()
        .prefix("rkdump-bench")
        .tempdir_in("/dev/shm")?;
    for name in names {
        let variant =
            variants::by_name(name).with_context(|| format!("no variant named {name:?}"))?;
        let run = crash::crash(variant)?;
        let vmcore = run.raw_vmcore();
        let size = std::fs::metadata(&vmcore)?.len();
        println!(
            "\n### {} guest, {} ({:?}), vmcore {:.0} MiB\n",
            name,
            run.kernel.release,
            variant.workload,
            size as f64 / f64::from(1 << 20)
        );
        if network {
            let rows = rkdump_lab::bench::network(&vmcore, scratch.path(), &rkdump, repeats)?;
            print!("{}", rkdump_lab::bench::table(&rows));
            continue;
        }
        if codecs {
            let rows = rkdump_lab::bench::codecs(&vmcore, scratch.path(), &rkdump, repeats)?;
            print!("{}", rkdump_lab::bench::table(&rows));
            println!();
            print!("{}", rkdump_lab::bench::codec_ratios(&rows));
            continue;
        }
        let rows = rkdump_lab::bench::run(&vmcore, scratch.path(), &rkdump, repeats)?;
        print!("{}", rkdump_lab::bench::table(&rows));
        println!();
        print!("{}", rkdump_lab::bench::ratios(&rows));
    }
    Ok(())
}

fn bench_nfs(names: &[String], repeats: usize) -> Result<()> {
    for name in names {
        let variant =
            variants::by_name(name).with_context(|| format!("no variant named {name:?}"))?;
        let dir = rkdump_lab::cache::root().join("lab/bench-nfs").join(name);
        let (rows, cpus) = rkdump_lab::bench::nfs(variant, &dir, repeats)?;
        println!(
            "\n### {name} guest ({:?}), capture kernel CPUs online: {cpus}, median of {repeats}\n",
            variant.workload
        );
        print!("{}", rkdump_lab::bench::nfs_table(&rows));
    }
    Ok(())
}

fn report(names: &[String]) -> Result<()> {
    let selected: Vec<&variants::Variant> = if names.is_empty() {
        variants::ALL.iter().collect()
    } else {
        names
            .iter()
            .map(|n| variants::by_name(n).with_context(|| format!("no variant {n:?}")))
            .collect::<Result<_>>()?
    };
    println!(
        "| Variant | Kernel | Guest | Workload | Capture CPUs | Panic to dump complete (s) | Dump (MiB) | vmcore (MiB) | rkdump peak RSS (MiB) | Capture kernel memory after the dump |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---|");
    for variant in selected {
        let run = crash::crash(variant)?;
        let log = std::fs::read_to_string(run.capture_dir().join("kexec-dmesg.log"))?;
        let summary: serde_json::Value = log
            .lines()
            .find_map(|l| l.split_once("dump summary: ").map(|(_, j)| j))
            .map(serde_json::from_str)
            .transpose()?
            .context("no dump summary in kexec-dmesg.log")?;
        let memory = log.lines().find_map(|l| {
            l.split_once("after the dump: memory ")
                .map(|(_, m)| m.to_owned())
        });
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        let panic_to_dump =
            run.stage("dump-done").unwrap_or(0.0) - run.stage("panic").unwrap_or(0.0);
        println!(
            "| {} | {} | {} MiB, {} CPUs{}{} | {:?} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {} |",
            variant.name,
            run.kernel.release,
            variant.memory_mib,
            variant.cpus,
            variant
                .cpu_model
                .map(|m| format!(", -cpu {m}"))
                .unwrap_or_default(),
            if variant.kaslr { "" } else { ", nokaslr" },
            variant.workload,
            summary["threads"],
            panic_to_dump,
            mib(std::fs::metadata(run.dump())?.len()),
            mib(std::fs::metadata(run.raw_vmcore())?.len()),
            summary["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
            memory.unwrap_or_default(),
        );
    }
    Ok(())
}

fn crashkernel(name: &str, sizes: &[String]) -> Result<()> {
    let base = variants::by_name(name).with_context(|| format!("no variant named {name:?}"))?;
    let kernel = Kernel::fetch(base.flavor)?;
    println!("| Variant | crashkernel= | Result | Capture kernel memory |");
    println!("|---|---|---|---|");
    for size in sizes {
        let size: &'static str = Box::leak(size.clone().into_boxed_str());
        let variant = variants::Variant {
            crashkernel: size,
            ..*base
        };
        let dir = cache::root()
            .join("lab/crashkernel")
            .join(format!("{name}-{size}"));
        let mut scenario =
            rkdump_lab::scenario::Scenario::new(variant, crash::KDUMP_CONF_WITHOUT_HOOKS);
        let memory = u64::from(variant.memory_mib);
        scenario.disks = vec![rkdump_lab::scenario::Disk::Ext4 {
            size_mib: 2 * memory + 256,
            label: "rkdump-lab".into(),
            uuid: None,
        }];
        let prepared = scenario.prepare(&kernel, &dir)?;
        let mut vm = prepared.start()?;
        rkdump_lab::scenario::wait_for_crash(&mut vm, &mut |_| {})?;
        let _ = vm.wait_exit(std::time::Duration::from_secs(900));
        let console = prepared.serial();
        let memory = console
            .lines()
            .find_map(|l| l.split_once("CPUs online; ").map(|(_, m)| m.to_owned()))
            .unwrap_or_else(|| "-".into());
        let result = if console.contains("\"complete\":true") {
            "dump complete"
        } else if console.contains("Out of memory") || console.contains("oom-kill") {
            "out of memory"
        } else if !console.contains("capture runtime starting") {
            "capture kernel did not start"
        } else {
            "failed"
        };
        println!("| {name} | {size} | {result} | {memory} |");
        if result == "dump complete" {
            std::fs::remove_dir_all(&dir)?;
        } else {
            println!("(console: {})", prepared.serial_log().display());
        }
    }
    Ok(())
}
