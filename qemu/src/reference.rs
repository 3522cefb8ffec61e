//! The reference tools rkdump is compared with, run from the lab and the tests.
//!
//! * upstream makedumpfile (built by `../shared/tools/build-makedumpfile` into the cache): the
//!   reference for excluded-page counts and `--dump-dmesg` output;
//! * Debian's `crash` with the kernel's debug vmlinux: must run `sys`, `log` and `bt`;
//! * `drgn` from PyPI (with libkdumpfile), in the cache's virtualenv: must show the crashed
//!   thread's stack.
//!
//! `qemu/install-deps` installs all of them; a missing one fails the test that needs it with a
//! message saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Upstream makedumpfile.
pub fn makedumpfile() -> PathBuf {
    let path = crate::cache::root().join("makedumpfile");
    assert!(
        path.is_file(),
        "{} (upstream makedumpfile, the reference) is missing: qemu/install-deps builds it with \
         ../shared/tools/build-makedumpfile, which must be beside the checkout (or set \
         RKDUMP_SHARED)",
        path.display()
    );
    path
}

/// The static rkdump binary.
pub fn rkdump() -> PathBuf {
    crate::build::rkdump().expect("building the static rkdump")
}

/// Runs a command and returns its output, failing the test if it cannot start.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs a command that must succeed and returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The counts of a makedumpfile-shaped "Excluded pages" report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Original pages.
    pub original: u64,
    /// Pages filled with zero.
    pub zero: u64,
    /// Non-private cache pages.
    pub cache: u64,
    /// Private cache pages.
    pub cache_private: u64,
    /// User process data pages.
    pub user: u64,
    /// Free pages.
    pub free: u64,
    /// Hwpoison pages.
    pub hwpoison: u64,
    /// Offline pages.
    pub offline: u64,
    /// Remaining pages.
    pub remaining: u64,
    /// Memory Hole.
    pub memory_hole: u64,
    /// Total pages.
    pub total: u64,
}

impl Report {
    /// Parses the report lines out of `text` (makedumpfile's or rkdump's).
    pub fn parse(text: &str) -> Self {
        let mut report = Self::default();
        let mut seen = 0;
        for line in text.lines() {
            let Some((label, value)) = line.split_once(':') else {
                continue;
            };
            let Some(hex) = value.trim().strip_prefix("0x") else {
                continue;
            };
            let Ok(value) = u64::from_str_radix(hex, 16) else {
                continue;
            };
            let field = match label.trim() {
                "Original pages" => &mut report.original,
                "Pages filled with zero" => &mut report.zero,
                "Non-private cache pages" => &mut report.cache,
                "Private cache pages" => &mut report.cache_private,
                "User process data pages" => &mut report.user,
                "Free pages" => &mut report.free,
                "Hwpoison pages" => &mut report.hwpoison,
                "Offline pages" => &mut report.offline,
                "Remaining pages" => &mut report.remaining,
                "Memory Hole" => &mut report.memory_hole,
                "Total pages" => &mut report.total,
                _ => continue,
            };
            *field = value;
            seen += 1;
        }
        assert!(seen >= 11, "no complete Excluded pages report in:\n{text}");
        report
    }
}

/// makedumpfile's report for `-d level` on `vmcore` (kdump format with zstd, written to
/// `output`).
pub fn makedumpfile_report(vmcore: &Path, level: u8, output: &Path) -> Report {
    let stdout = run_ok(
        Command::new(makedumpfile())
            .args([
                "-z",
                "-f",
                "--message-level",
                "16",
                "-d",
                &level.to_string(),
            ])
            .arg(vmcore)
            .arg(output),
    );
    Report::parse(&stdout)
}

/// rkdump's report for `rkdump save -d level <extra> vmcore output`.
pub fn rkdump_report(vmcore: &Path, level: u8, extra: &[&str], output: &Path) -> Report {
    let stdout = run_ok(
        Command::new(rkdump())
            .args([
                "save",
                "-f",
                "--message-level",
                "16",
                "-d",
                &level.to_string(),
            ])
            .args(extra)
            .arg(vmcore)
            .arg(output),
    );
    Report::parse(&stdout)
}

/// Output of `crash` running `commands` non-interactively on `dump`.
pub fn crash(vmlinux: &Path, dump: &Path, commands: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let script = dir.path().join("commands");
    let mut text = commands.join("\n");
    text.push_str("\nquit\n");
    std::fs::write(&script, text).expect("writing the crash script");
    let output = run(Command::new("timeout")
        .args(["300", "crash", "-s"])
        .arg(vmlinux)
        .arg(dump)
        .arg("-i")
        .arg(&script));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// The crashed thread's stack trace as drgn shows it.
pub fn drgn_crashed_stack(vmlinux: &Path, dump: &Path) -> String {
    let python = crate::cache::root().join("venv/bin/python3");
    assert!(
        python.is_file(),
        "{} is missing: run qemu/install-deps",
        python.display()
    );
    const SCRIPT: &str = "import sys, drgn\n\
prog = drgn.Program()\n\
prog.set_core_dump(sys.argv[1])\n\
prog.load_debug_info([sys.argv[2]])\n\
print(prog.crashed_thread().stack_trace())\n";
    run_ok(
        Command::new(python)
            .args(["-c", SCRIPT])
            .arg(dump)
            .arg(vmlinux),
    )
}

/// Two kdump-compressed dumps compared page by page by [`compare_kdump_pages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageComparison {
    /// Each file's size in bytes.
    pub sizes: [u64; 2],
    /// Each header's `status` (the dump's codec flag, incomplete bit).
    pub status: [u64; 2],
    /// Whether both bitmaps (and `max_mapnr`) are identical.
    pub bitmaps_equal: bool,
    /// Descriptors by page flags (0 raw, 0x1 zlib, 0x2 LZO, 0x4 snappy, 0x20 zstd), per file.
    pub flag_counts: [std::collections::BTreeMap<u32, u64>; 2],
    /// Descriptors compared.
    pub pages: u64,
    /// Pages both files decode to the same 4096 bytes.
    pub same_page: u64,
    /// Pages whose stored forms (bytes and flags) are identical.
    pub same_stored_bytes: u64,
    /// Page data stored by each file (the shared zero page once).
    pub stored_bytes: [u64; 2],
    /// The first differences found, in words.
    pub differences: Vec<String>,
}

/// Compares the dumps `a` and `b` page by page with the C libraries makedumpfile and crash use
/// (zlib, liblzo2, libsnappy, libzstd, through Python's ctypes), reading the layout from the
/// format's description: nothing of rkdump decides what the pages are.
pub fn compare_kdump_pages(a: &Path, b: &Path) -> PageComparison {
    const SCRIPT: &str = include_str!("kdump_pages.py");
    let stdout = run_ok(Command::new("python3").args(["-c", SCRIPT]).arg(a).arg(b));
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("kdump_pages.py printed no JSON ({e}): {stdout}"));
    let pair = |name: &str| -> [u64; 2] {
        let value = |i: usize| {
            json[name][i]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {json}"))
        };
        [value(0), value(1)]
    };
    let counts = |i: usize| {
        json["flag_counts"][i]
            .as_object()
            .expect("flag counts")
            .iter()
            .map(|(flags, n)| (flags.parse().expect("a flag"), n.as_u64().expect("a count")))
            .collect()
    };
    let number = |name: &str| {
        json[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {json}"))
    };
    PageComparison {
        sizes: pair("sizes"),
        status: pair("status"),
        bitmaps_equal: json["bitmaps_equal"] == true,
        flag_counts: [counts(0), counts(1)],
        pages: number("pages"),
        same_page: number("same_page"),
        same_stored_bytes: number("same_stored_bytes"),
        stored_bytes: pair("stored_bytes"),
        differences: json["differences"]
            .as_array()
            .expect("differences")
            .iter()
            .map(|d| d.as_str().expect("text").to_owned())
            .collect(),
    }
}
