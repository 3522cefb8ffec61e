//! Real crashes in QEMU, captured by rkdump in the capture kernel, checked against the
//! reference tools on the host.
//!
//! Each variant crashes once (`rkdump_lab::crash::crash` caches the run); every check below
//! reads that one run. The guest writes rkdump's dump and `vmcore-dmesg.txt`, then a raw copy
//! of `/proc/vmcore`, which is the reference input for makedumpfile.
//!
//! Variants whose module name starts with `long_` are slow (3 GiB, 5-level paging); they run in
//! the whole suite, CI included (`RKDUMP_LAB_QUICK=1 bash .ci/test` leaves them out).

use std::process::Command;

use initramfs_tests::{
    Report, compare_kdump_pages, crash, drgn_crashed_stack, makedumpfile, makedumpfile_report,
    rkdump, rkdump_report, run_ok,
};
use rkdump_lab::crash::CrashRun;
use rkdump_lab::kernels::Flavor;
use rkdump_lab::variants;

fn crash_run(name: &str) -> CrashRun {
    let variant = variants::by_name(name).expect("variant exists");
    let run = rkdump_lab::crash::crash(variant)
        .unwrap_or_else(|e| panic!("lab run of {name} failed: {e:#}"));
    for (stage, at, detail) in &run.stages {
        println!("{name}: {stage:<15} {at:7.1} s  {detail}");
    }
    run
}

/// The capture log rkdump left next to the dump.
fn capture_log(run: &CrashRun) -> String {
    std::fs::read_to_string(run.capture_dir().join("kexec-dmesg.log")).expect("kexec-dmesg.log")
}

/// The dump's summary, which rkdump logs as JSON.
fn summary(run: &CrashRun) -> serde_json::Value {
    let log = capture_log(run);
    let json = log
        .lines()
        .find_map(|l| l.split_once("dump summary: ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no dump summary in kexec-dmesg.log:\n{log}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("the summary is not JSON ({e}): {json}"))
}

fn check_capture_completed(run: &CrashRun) {
    let log = capture_log(run);
    let summary = summary(run);
    assert_eq!(summary["complete"], true);
    // One worker per CPU the capture kernel has online. That is nr_cpus, except on kernels that
    // keep the real boot CPU offline when another CPU panicked (6.12: "Crash kernel detected.
    // Disabling real BSP to prevent machine INIT").
    let online: u64 = log
        .lines()
        .find_map(|l| {
            l.split_once(" CPUs online")
                .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no CPU count in the log:\n{log}"));
    assert!(
        (1..=u64::from(run.variant.capture_cpus)).contains(&online),
        "{online} CPUs online"
    );
    assert_eq!(
        summary["threads"], online,
        "threads = online CPUs of the capture kernel"
    );
    // The layout kdump-utils users expect, and nothing else on the target.
    let mut names: Vec<String> = std::fs::read_dir(run.capture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]);
    assert!(run.dump().is_file() && !run.capture_dir().join("vmcore-incomplete").exists());
    let dump_size = std::fs::metadata(run.dump()).unwrap().len();
    assert_eq!(summary["bytes_written"], dump_size);
    if run.variant.cpu_model == Some("max") {
        // -cpu max offers la57 and the generic 6.1 kernel turns 5-level paging on.
        let vmcore = rkdump::vmcore::Vmcore::open(&run.raw_vmcore()).unwrap();
        assert_eq!(
            vmcore.info().number("pgtable_l5_enabled"),
            Ok(Some(1)),
            "5-level paging is off"
        );
    }
    let panic_to_dump = run.stage("dump-done").unwrap() - run.stage("panic").unwrap();
    println!(
        "{}: panic to dump complete {panic_to_dump:.1} s, dump {dump_size} bytes, rkdump peak RSS {} KiB",
        run.variant.name, summary["peak_rss_kib"]
    );
}

fn check_drgn(run: &CrashRun) {
    let stack = drgn_crashed_stack(&run.kernel.vmlinux(), &run.dump());
    assert!(
        stack.contains("sysrq_handle_crash"),
        "drgn's crashed-thread stack:\n{stack}"
    );
}

fn check_crash(run: &CrashRun) {
    let output = crash(&run.kernel.vmlinux(), &run.dump(), &["sys", "log", "bt"]);
    if run.kernel.flavor == Flavor::Generic612 {
        // bookworm's crash 8.0.2 predates 6.12: it must fail on makedumpfile's dump of the same
        // vmcore too, or this variant has to be checked with crash as well.
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("vmcore.mdf");
        makedumpfile_report(&run.raw_vmcore(), 31, &reference);
        let theirs = crash(&run.kernel.vmlinux(), &reference, &["sys", "bt"]);
        assert!(
            !theirs.contains("sysrq_handle_crash"),
            "crash now reads 6.12:\n{theirs}"
        );
        assert!(!output.contains("sysrq_handle_crash"));
        return;
    }
    assert!(
        output.contains("PANIC: \"Kernel panic - not syncing: sysrq triggered crash"),
        "sys:\n{output}"
    );
    assert!(output.contains("sysrq: Trigger a crash"), "log:\n{output}");
    assert!(output.contains("sysrq_handle_crash"), "bt:\n{output}");
    assert!(
        !output.contains("read error"),
        "crash reported read errors:\n{output}"
    );
}

fn check_dmesg(run: &CrashRun) {
    let ours = std::fs::read(run.capture_dir().join("vmcore-dmesg.txt")).unwrap();
    // vmcore-dmesg.txt is written before the dump, so that it survives a failed dump.
    let log = capture_log(run);
    let dmesg_at = log.find("vmcore-dmesg.txt: done").expect("the log step");
    let dump_at = log.find("dump: started").expect("the dump step");
    assert!(dmesg_at < dump_at, "vmcore-dmesg.txt must come first");
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("dmesg");
    run_ok(
        Command::new(makedumpfile())
            .arg("--dump-dmesg")
            .arg(run.raw_vmcore())
            .arg(&theirs),
    );
    let theirs = std::fs::read(theirs).unwrap();
    assert!(
        ours == theirs,
        "vmcore-dmesg.txt differs from makedumpfile --dump-dmesg"
    );
    assert!(String::from_utf8_lossy(&ours).contains("sysrq: Trigger a crash"));
}

fn check_counts_in_guest(run: &CrashRun) {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("vmcore.mdf");
    let theirs = makedumpfile_report(&run.raw_vmcore(), 31, &reference);
    let ours = summary(run);
    let excluded = &ours["excluded"];
    let field = |name: &str| excluded[name].as_u64().unwrap();
    assert_eq!(
        (
            field("zero"),
            field("cache"),
            field("cache_private"),
            field("user"),
            field("free")
        ),
        (
            theirs.zero,
            theirs.cache,
            theirs.cache_private,
            theirs.user,
            theirs.free
        ),
        "in-guest counts differ from makedumpfile on the raw vmcore"
    );
    assert_eq!(
        (field("hwpoison"), field("offline")),
        (theirs.hwpoison, theirs.offline)
    );
    assert_eq!(ours["total_pages"], theirs.total);
    assert_eq!(ours["memory_hole"], theirs.memory_hole);
    // The lab's kdump.conf has kdump-utils' line (`-l`): the capture wrote LZO pages, which
    // must be makedumpfile -l's pages of the same vmcore.
    assert_eq!(ours["compression"], "lzo");
    let lzo = dir.path().join("vmcore.mdf.lzo");
    run_ok(
        Command::new(makedumpfile())
            .args(["-l", "-d", "31"])
            .arg(run.raw_vmcore())
            .arg(&lzo),
    );
    assert_same_pages("-l", &run.dump(), &lzo, false);
}

/// `ours` holds the pages of `theirs` (makedumpfile's dump of the same vmcore with the same
/// codec), compared page by page with the C decoders: the same bitmaps and header codec, every
/// page decoding to the same bytes, page data within 1% of makedumpfile's; `identical` when the
/// codec is deterministic enough for the files to be byte-identical.
fn assert_same_pages(
    codec: &str,
    ours: &std::path::Path,
    theirs: &std::path::Path,
    identical: bool,
) {
    let cmp = compare_kdump_pages(ours, theirs);
    println!("{codec}: {cmp:?}");
    assert!(cmp.bitmaps_equal, "{codec}: the bitmaps differ");
    assert_eq!(cmp.status[0], cmp.status[1], "{codec}: header status");
    assert!(
        cmp.pages > 0 && cmp.differences.is_empty(),
        "{codec}: {:?}",
        cmp.differences
    );
    assert_eq!(
        cmp.same_page, cmp.pages,
        "{codec}: pages that decode the same"
    );
    let [our_bytes, their_bytes] = cmp.stored_bytes.map(|b| b as f64);
    assert!(
        our_bytes <= their_bytes * 1.01,
        "{codec}: {our_bytes} bytes of page data, makedumpfile {their_bytes}"
    );
    if identical {
        assert_eq!(cmp.same_stored_bytes, cmp.pages, "{codec}: stored forms");
        assert!(
            std::fs::read(ours).unwrap() == std::fs::read(theirs).unwrap(),
            "{codec}: rkdump's dump differs from makedumpfile's of the same vmcore"
        );
    }
}

/// `rkdump save CODEC EXTRA -d 31` of the run's raw vmcore into `out`.
fn save_d31(run: &CrashRun, codec: &str, extra: &[&str], out: &std::path::Path) {
    run_ok(
        Command::new(rkdump())
            .args(["save", codec, "--message-level", "0", "-d", "31"])
            .args(extra)
            .arg(run.raw_vmcore())
            .arg(out),
    );
}

/// `-z`, `-c` and `-p` on the host from the raw vmcore, against makedumpfile with the same
/// option: zstd level 1 and zlib level 1 are deterministic (the same libraries), so the files
/// are byte-identical; snappy's encoder is the `snap` crate's, so its pages are compared.
fn check_codecs(run: &CrashRun) {
    let dir = tempfile::tempdir().unwrap();
    for (codec, identical) in [("-z", true), ("-c", true), ("-p", false)] {
        let ours = dir.path().join(format!("rkdump{codec}"));
        let theirs = dir.path().join(format!("mdf{codec}"));
        save_d31(run, codec, &[], &ours);
        run_ok(
            Command::new(makedumpfile())
                .args([codec, "-d", "31"])
                .arg(run.raw_vmcore())
                .arg(&theirs),
        );
        assert_same_pages(codec, &ours, &theirs, identical);
    }
}

fn check_counts_on_host(run: &CrashRun) {
    let dir = tempfile::tempdir().unwrap();
    for level in [0, 1, 2, 4, 8, 16, 31] {
        let theirs = makedumpfile_report(&run.raw_vmcore(), level, &dir.path().join("mdf"));
        let ours = rkdump_report(&run.raw_vmcore(), level, &[], &dir.path().join("rk"));
        assert_eq!(ours, theirs, "-d {level}: rkdump and makedumpfile disagree");
    }
}

fn check_flattened(run: &CrashRun) {
    let dir = tempfile::tempdir().unwrap();
    for codec in ["-z", "-c", "-l", "-p"] {
        let direct = dir.path().join(format!("direct{codec}"));
        let stream = dir.path().join(format!("stream{codec}"));
        save_d31(run, codec, &[], &direct);
        save_d31(run, codec, &["-F"], &stream);
        let rebuilt = dir.path().join(format!("rebuilt{codec}"));
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "{} -R {} < {}",
            makedumpfile().display(),
            rebuilt.display(),
            stream.display()
        )));
        assert!(
            std::fs::read(&direct).unwrap() == std::fs::read(&rebuilt).unwrap(),
            "{codec}: makedumpfile -R of rkdump -F differs from the direct file"
        );
    }
}

/// Every codec's dump of the default crash opens in every reader: crash runs `bt`, drgn shows
/// the crashed stack, and makedumpfile reads the kernel log out of it (`--dump-dmesg`, equal to
/// the capture's vmcore-dmesg.txt). One variant is enough: the readers' decoders do not depend
/// on the kernel, and every variant's own LZO dump is read by crash and drgn above.
#[test]
fn every_codec_opens_in_crash_drgn_and_makedumpfile() {
    let run = crash_run("default");
    let dmesg = std::fs::read(run.capture_dir().join("vmcore-dmesg.txt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for codec in ["-c", "-l", "-p", "-z"] {
        let dump = dir.path().join(format!("vmcore{codec}"));
        save_d31(&run, codec, &[], &dump);
        let output = crash(&run.kernel.vmlinux(), &dump, &["bt"]);
        assert!(
            output.contains("sysrq_handle_crash"),
            "crash, {codec}:\n{output}"
        );
        assert!(!output.contains("read error"), "crash, {codec}:\n{output}");
        let stack = drgn_crashed_stack(&run.kernel.vmlinux(), &dump);
        assert!(
            stack.contains("sysrq_handle_crash"),
            "drgn, {codec}:\n{stack}"
        );
        let log = dir.path().join(format!("dmesg{codec}"));
        run_ok(
            Command::new(makedumpfile())
                .arg("--dump-dmesg")
                .arg(&dump)
                .arg(&log),
        );
        assert!(
            std::fs::read(&log).unwrap() == dmesg,
            "{codec}: makedumpfile --dump-dmesg from the dump differs from vmcore-dmesg.txt"
        );
        let info = run_ok(Command::new(rkdump()).arg("info").arg(&dump));
        let name = match codec {
            "-c" => "zlib",
            "-l" => "lzo",
            "-p" => "snappy",
            _ => "zstd",
        };
        assert!(info.contains(&format!("Compression:  {name}\n")), "{info}");
        assert!(
            info.contains(&format!(" {name}")) && info.contains("Stored as:"),
            "{info}"
        );
    }
}

/// rkdump's `-E` dump: the same program headers as makedumpfile's, readable by crash and drgn.
fn check_elf(run: &CrashRun) {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("vmcore.elf");
    let theirs = dir.path().join("vmcore.mdf.elf");
    run_ok(
        Command::new(rkdump())
            .args(["save", "--message-level", "0", "-E", "-d", "31"])
            .arg(run.raw_vmcore())
            .arg(&ours),
    );
    run_ok(
        Command::new(makedumpfile())
            .args(["-E", "-d", "31"])
            .arg(run.raw_vmcore())
            .arg(&theirs),
    );
    let headers =
        |path: &std::path::Path| run_ok(Command::new("readelf").args(["-l", "-W"]).arg(path));
    assert_eq!(
        headers(&ours),
        headers(&theirs),
        "program headers differ from makedumpfile -E"
    );
    assert_eq!(
        std::fs::metadata(&ours).unwrap().len(),
        std::fs::metadata(&theirs).unwrap().len()
    );
    let stack = drgn_crashed_stack(&run.kernel.vmlinux(), &ours);
    assert!(
        stack.contains("sysrq_handle_crash"),
        "drgn on the ELF dump:\n{stack}"
    );
    if run.kernel.flavor != Flavor::Generic612 {
        let output = crash(&run.kernel.vmlinux(), &ours, &["bt"]);
        assert!(
            output.contains("sysrq_handle_crash"),
            "crash on the ELF dump:\n{output}"
        );
    }
}

/// makedumpfile's `-E` statistics are kept per PT_LOAD and per cycle: pages of the kernel-text
/// alias are counted again, zero pages are counted per load, and the memory hole is rounded
/// per load. They disagree with its own kdump-format report of the same vmcore. rkdump reports
/// the same counts whatever the format: makedumpfile's kdump-format ones.
fn check_makedumpfile_elf_report_counts_per_pt_load(run: &CrashRun) {
    let dir = tempfile::tempdir().unwrap();
    let kdump = makedumpfile_report(&run.raw_vmcore(), 31, &dir.path().join("mdf"));
    let elf_report = Report::parse(&run_ok(
        Command::new(makedumpfile())
            .args(["-E", "-f", "--message-level", "16", "-d", "31"])
            .arg(run.raw_vmcore())
            .arg(dir.path().join("mdf.elf")),
    ));
    assert_ne!(
        elf_report, kdump,
        "makedumpfile's ELF and kdump reports now agree: drop this exception"
    );
    let ours = rkdump_report(&run.raw_vmcore(), 31, &["-E"], &dir.path().join("rk.elf"));
    assert_eq!(
        ours, kdump,
        "rkdump -E must report makedumpfile's kdump-format counts"
    );
}

/// 1, 2 and 3 worker threads write the same bytes from a real vmcore.
fn check_threads(run: &CrashRun) {
    let dir = tempfile::tempdir().unwrap();
    let dumps: Vec<Vec<u8>> = (1..=3)
        .map(|threads| {
            let out = dir.path().join(format!("t{threads}"));
            run_ok(
                Command::new(rkdump())
                    .args([
                        "save",
                        "--message-level",
                        "0",
                        "-d",
                        "1",
                        "--num-threads",
                        &threads.to_string(),
                    ])
                    .arg(run.raw_vmcore())
                    .arg(&out),
            );
            std::fs::read(out).unwrap()
        })
        .collect();
    assert!(
        dumps.windows(2).all(|pair| pair[0] == pair[1]),
        "thread counts changed the dump"
    );
}

macro_rules! lab_variant {
    ($module:ident, $name:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn capture_completed_in_the_capture_kernel() {
                check_capture_completed(&crash_run($name));
            }

            #[test]
            fn drgn_shows_the_sysrq_panic() {
                check_drgn(&crash_run($name));
            }

            #[test]
            fn crash_runs_sys_log_and_bt() {
                check_crash(&crash_run($name));
            }

            #[test]
            fn dmesg_matches_makedumpfile() {
                check_dmesg(&crash_run($name));
            }

            #[test]
            fn counts_match_makedumpfile_on_the_same_vmcore() {
                check_counts_in_guest(&crash_run($name));
            }

            #[test]
            fn counts_match_makedumpfile_at_each_dump_level() {
                check_counts_on_host(&crash_run($name));
            }

            #[test]
            fn each_codec_matches_makedumpfile_page_by_page() {
                check_codecs(&crash_run($name));
            }

            #[test]
            fn flattened_stream_rebuilds_with_makedumpfile_r() {
                check_flattened(&crash_run($name));
            }

            #[test]
            fn worker_threads_do_not_change_the_dump() {
                check_threads(&crash_run($name));
            }

            #[test]
            fn elf_dump_matches_makedumpfile_layout_and_opens() {
                check_elf(&crash_run($name));
            }

            #[test]
            fn makedumpfile_elf_report_counts_per_pt_load() {
                check_makedumpfile_elf_report_counts_per_pt_load(&crash_run($name));
            }
        }
    };
}

lab_variant!(default, "default");
lab_variant!(cloud_nokaslr_idle, "cloud-nokaslr-idle");
lab_variant!(v6_12, "6.12");
lab_variant!(long_la57, "la57");
lab_variant!(long_3g, "3g");
