//! Bad input gets a one-line error that says what and where, a non-zero status, no panic, and
//! any partial output is kept and marked incomplete.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use initramfs_tests::{rkdump, run_ok};
use proptest::prelude::*;
use rkdump_testkit::{Builder, Generation};

/// Exit statuses (see `rkdump --help`).
const FAILURE: i32 = 1;
const INCOMPLETE: i32 = 3;

fn vmcore_bytes() -> Vec<u8> {
    Builder::new(Generation::V6_1).with_every_kind().build()
}

fn save(vmcore: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(rkdump())
        .args(["save", "--message-level", "6"])
        .args(extra)
        .arg(vmcore)
        .arg(out)
        .output()
        .expect("running rkdump")
}

/// The process ended by itself with `status` and printed exactly one error line.
fn assert_one_line_error(output: &Output, status: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(status), "stderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("rkdump: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(
        errors[0].contains(needle),
        "error should mention {needle:?}: {}",
        errors[0]
    );
}

/// File offset of the PT_NOTE segment.
fn notes_offset(bytes: &[u8]) -> usize {
    use rkdump::format::bytes::to_usize;
    use rkdump::format::elf::{FileHeader, PT_NOTE, ProgramHeader};
    let header = FileHeader::parse(bytes).unwrap();
    let table = &bytes[to_usize(header.phoff)..];
    let headers = ProgramHeader::parse_table(table, usize::from(header.phnum)).unwrap();
    to_usize(headers.iter().find(|p| p.p_type == PT_NOTE).unwrap().offset)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn written(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("vmcore");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn truncated_vmcores_are_refused_naming_what_is_cut() {
    let bytes = vmcore_bytes();
    let dir = tempdir();
    let notes_at = notes_offset(&bytes);
    for (cut, needle) in [
        (10, "truncated"),
        (100, "truncated"),
        (notes_at + 40, "truncated"),
        (bytes.len() / 2, "PT_LOAD #"),
        (bytes.len() - 1, "PT_LOAD #"),
    ] {
        let vmcore = written(dir.path(), &bytes[..cut]);
        let out = dir.path().join("dump");
        assert_one_line_error(&save(&vmcore, &out, &[]), FAILURE, needle);
        assert!(
            !out.exists() && !dir.path().join("dump-incomplete").exists(),
            "no output for a bad vmcore"
        );
        let dmesg = Command::new(rkdump())
            .arg("dmesg")
            .arg(&vmcore)
            .output()
            .unwrap();
        assert_one_line_error(&dmesg, FAILURE, "truncated");
    }
}

#[test]
fn a_note_running_past_its_segment_is_reported_with_its_offset() {
    let mut bytes = vmcore_bytes();
    let notes_at = notes_offset(&bytes);
    bytes[notes_at..notes_at + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes()); // namesz
    let dir = tempdir();
    let vmcore = written(dir.path(), &bytes);
    assert_one_line_error(
        &save(&vmcore, &dir.path().join("dump"), &[]),
        FAILURE,
        "note at offset 0",
    );
}

#[test]
fn overlapping_pt_loads_are_refused() {
    let mut builder = Builder::new(Generation::V6_1);
    builder.holes = std::iter::once(4096..4608).collect();
    let mut bytes = builder.build();
    // Program header 3 is the RAM segment after the hole: move it back over the first one.
    let ph = 64 + 3 * 56;
    let paddr = u64::from_le_bytes(bytes[ph + 24..ph + 32].try_into().unwrap());
    assert_eq!(paddr, 4608 * 4096);
    bytes[ph + 24..ph + 32].copy_from_slice(&(4000u64 * 4096).to_le_bytes());
    let dir = tempdir();
    let vmcore = written(dir.path(), &bytes);
    assert_one_line_error(
        &save(&vmcore, &dir.path().join("dump"), &[]),
        FAILURE,
        "PT_LOAD #2 (physical 0x0-0x1000000) overlaps PT_LOAD #3",
    );
}

/// A segment claiming memory beyond the dead kernel's physical address space (here a p_memsz
/// with a flipped high byte: 110 TiB) is refused before any bitmap is sized from it.
#[test]
fn a_segment_beyond_max_physmem_bits_is_refused() {
    let mut bytes = vmcore_bytes();
    let ph = 64 + 56; // program header 1: the kernel-text alias
    bytes[ph + 40..ph + 48].copy_from_slice(&0x6e00_0020_0000u64.to_le_bytes());
    let dir = tempdir();
    let vmcore = written(dir.path(), &bytes);
    for extra in [&[][..], &["-E"][..]] {
        assert_one_line_error(
            &save(&vmcore, &dir.path().join("dump"), extra),
            FAILURE,
            "PT_LOAD #1 (physical 0x200000-0x6e0000400000) reaches beyond the dead kernel's \
             MAX_PHYSMEM_BITS=46",
        );
    }
}

/// Without the entries filtering needs, the dump is still written, at a lower level, with a
/// warning saying why; without those the log needs, `rkdump dmesg` says which is missing.
#[test]
fn missing_vmcoreinfo_entries_lower_the_level_instead_of_losing_the_dump() {
    let dir = tempdir();
    for (key, warning) in [
        ("SYMBOL(mem_section)", "SYMBOL(mem_section)"),
        ("SIZE(page)", "SIZE(page)"),
        ("OFFSET(page.flags)", "OFFSET(page.flags)"),
        ("SYMBOL(init_top_pgt)", "init_top_pgt"),
    ] {
        let mut builder = Builder::new(Generation::V6_12).with_every_kind();
        builder.omit_vmcoreinfo = vec![key.to_owned()];
        let vmcore = written(dir.path(), &builder.build());
        let out = dir
            .path()
            .join(format!("dump-{}", key.replace(['(', ')', '.'], "_")));
        let output = save(&vmcore, &out, &["--json"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{key}: {stderr}");
        assert!(
            stderr.contains("rkdump: warning:") && stderr.contains(warning),
            "{key}: {stderr}"
        );
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            (
                summary["requested_level"].as_u64(),
                summary["dump_level"].as_u64()
            ),
            (Some(31), Some(1)),
            "{key}"
        );
        assert_eq!(summary["complete"], true);
        run_ok(Command::new(rkdump()).arg("info").arg(&out));
    }
    // The log needs no mem_map: it is still extracted when filtering is impossible.
    let mut builder = Builder::new(Generation::V6_12);
    builder.omit_vmcoreinfo = vec!["SYMBOL(mem_section)".to_owned(), "SIZE(page)".to_owned()];
    let vmcore = written(dir.path(), &builder.build());
    let dmesg = Command::new(rkdump())
        .arg("dmesg")
        .arg(&vmcore)
        .output()
        .unwrap();
    assert!(
        dmesg.status.success(),
        "{}",
        String::from_utf8_lossy(&dmesg.stderr)
    );
    assert!(String::from_utf8_lossy(&dmesg.stdout).contains("sysrq: Trigger a crash"));

    let mut builder = Builder::new(Generation::V6_12);
    builder.omit_vmcoreinfo = vec!["OFFSET(prb_desc.state_var)".to_owned()];
    let vmcore = written(dir.path(), &builder.build());
    let dmesg = Command::new(rkdump())
        .arg("dmesg")
        .arg(&vmcore)
        .output()
        .unwrap();
    assert_one_line_error(
        &dmesg,
        FAILURE,
        "VMCOREINFO has no OFFSET(prb_desc.state_var)",
    );
}

#[test]
fn a_full_disk_keeps_the_partial_dump_marked_incomplete() {
    let dir = tempdir();
    let vmcore = written(dir.path(), &vmcore_bytes());
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a 1 MiB tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let out = small.join("vmcore");
    let output = save(&vmcore, &out, &["-d", "0", "--compress", "none"]);
    assert_one_line_error(&output, INCOMPLETE, "is full");
    let partial = small.join("vmcore-incomplete");
    assert!(!out.exists() && partial.exists());
    let info = Command::new(rkdump())
        .arg("info")
        .arg(&partial)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert_eq!(info.status.code(), Some(INCOMPLETE), "{text}");
    assert!(
        text.contains("Complete:     no (the header's incomplete flag is set"),
        "{text}"
    );
}

#[test]
fn cut_dump_files_are_reported_as_incomplete_with_the_missing_region() {
    let dir = tempdir();
    let vmcore = written(dir.path(), &vmcore_bytes());
    let dump = dir.path().join("dump");
    assert!(save(&vmcore, &dump, &[]).status.success());
    let bytes = std::fs::read(&dump).unwrap();
    for (cut, status, needle) in [
        (bytes.len() - 100, INCOMPLETE, "page data ends at offset"),
        (
            3 * 4096 + 10,
            FAILURE,
            "truncated to 0x300a bytes, but the bitmap area extends to offset 0x4000",
        ),
        (
            100,
            FAILURE,
            "truncated to 0x64 bytes, but the header extends to offset 0x1d0",
        ),
    ] {
        let cut_dump = dir.path().join("cut");
        std::fs::write(&cut_dump, &bytes[..cut]).unwrap();
        let info = Command::new(rkdump())
            .arg("info")
            .arg(&cut_dump)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&info.stdout),
            String::from_utf8_lossy(&info.stderr)
        );
        assert_eq!(info.status.code(), Some(status), "{all}");
        assert!(all.contains(needle), "cut at {cut}: {all}");
    }
}

#[test]
fn a_cut_flattened_stream_reassembles_into_a_kept_incomplete_file() {
    let dir = tempdir();
    let vmcore = written(dir.path(), &vmcore_bytes());
    let stream = dir.path().join("stream");
    assert!(save(&vmcore, &stream, &["-F"]).status.success());
    let bytes = std::fs::read(&stream).unwrap();
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = dir.path().join("rebuilt");
    let output = Command::new(rkdump())
        .arg("reassemble")
        .arg(&cut)
        .arg(&out)
        .output()
        .unwrap();
    assert_one_line_error(&output, INCOMPLETE, "without its end marker");
    assert!(dir.path().join("rebuilt-incomplete").exists() && !out.exists());
}

/// The regions of a synthetic vmcore that hold metadata rather than page data: ELF headers and
/// notes, then the "kernel image" (page tables, mem_section, printk) and the struct pages right
/// after it in the RAM segment.
fn metadata_regions(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    use rkdump::format::bytes::to_usize;
    use rkdump::format::elf::{FileHeader, PT_LOAD, ProgramHeader};
    let header = FileHeader::parse(bytes).unwrap();
    let headers =
        ProgramHeader::parse_table(&bytes[to_usize(header.phoff)..], usize::from(header.phnum))
            .unwrap();
    let notes_end = notes_offset(bytes) + 4096;
    let ram = headers
        .iter()
        .find(|p| p.p_type == PT_LOAD && p.paddr == 0)
        .unwrap();
    let kernel = to_usize(ram.offset) + (2 << 20);
    vec![0..notes_end, kernel..kernel + (2 << 20) + (8192 * 64)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any cut point and any corrupted metadata bytes: a clean status within a minute, never a
    /// crash or a hang.
    #[test]
    fn corrupt_vmcores_never_crash_rkdump(
        cut in proptest::option::of(0usize..1000),
        flips in proptest::collection::vec((any::<bool>(), any::<usize>(), any::<u8>()), 1..24),
    ) {
        let mut bytes = vmcore_bytes();
        let regions = metadata_regions(&bytes);
        for (first, at, value) in flips {
            let region = &regions[usize::from(!first)];
            bytes[region.start + at % region.len()] = value;
        }
        let len = cut.map_or(bytes.len(), |permille| bytes.len() * permille / 1000);
        let dir = tempdir();
        let vmcore = written(dir.path(), &bytes[..len]);
        for args in [&["save", "-f"][..], &["save", "-f", "-E"][..], &["dmesg"][..]] {
            // Bounded in time too: coreutils' timeout exits with 124, which fails below.
            let mut command = Command::new("timeout");
            command.arg("60").arg(rkdump()).args(args).arg(&vmcore);
            if args[0] == "save" {
                command.arg(dir.path().join("dump"));
            }
            let output = command.output().unwrap();
            prop_assert!(
                matches!(output.status.code(), Some(0 | 1 | 3)),
                "{args:?}: {:?}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Corrupt dump files and streams: `info` and `reassemble` answer, never crash.
    #[test]
    fn corrupt_dumps_never_crash_info_or_reassemble(
        flips in proptest::collection::vec((0usize..40_000, any::<u8>()), 1..24),
        flat in any::<bool>(),
    ) {
        let dir = tempdir();
        let vmcore = written(dir.path(), &vmcore_bytes());
        let dump = dir.path().join("dump");
        let args: &[&str] = if flat { &["-F"] } else { &[] };
        prop_assert!(save(&vmcore, &dump, args).status.success());
        let mut bytes = std::fs::read(&dump).unwrap();
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        std::fs::write(&dump, &bytes).unwrap();
        let info = Command::new(rkdump()).arg("info").arg(&dump).output().unwrap();
        prop_assert!(matches!(info.status.code(), Some(0 | 1 | 3)), "info: {:?}", info.status);
        let rebuilt = dir.path().join("rebuilt");
        let output = Command::new(rkdump()).arg("reassemble").arg(&dump).arg(&rebuilt).output().unwrap();
        prop_assert!(matches!(output.status.code(), Some(0 | 1 | 3)), "reassemble: {:?}", output.status);
    }
}
