//! Synthetic vmcores with every kind of page, each kernel generation's encoding, 5-level paging,
//! memory holes and both printk formats, compared with upstream makedumpfile on the same file.
//!
//! The lab's real crashes show rkdump right on what those kernels had in memory; these show it
//! right on what they rarely have (hugetlb pages, hwpoison, offline memory, wrapped log
//! records) and on kernel generations the lab does not boot.

use std::path::Path;
use std::process::Command;

use initramfs_tests::{Report, makedumpfile, makedumpfile_report, rkdump, rkdump_report, run_ok};
use rkdump_testkit::{Builder, Generation, Kind, Log, Record};

const GENERATIONS: [Generation; 3] = [Generation::V6_1, Generation::V6_6, Generation::V6_12];

fn write(builder: &Builder, dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, builder.build()).unwrap();
    path
}

/// Every dump level: the counts match, and so do the files (same layout, same zstd frames).
fn assert_matches_makedumpfile(builder: &Builder, levels: impl IntoIterator<Item = u8>) {
    let dir = tempfile::tempdir().unwrap();
    let vmcore = write(builder, dir.path(), "vmcore");
    for level in levels {
        let ours = dir.path().join("rk");
        let theirs = dir.path().join("mdf");
        let report = rkdump_report(&vmcore, level, &[], &ours);
        let expected = makedumpfile_report(&vmcore, level, &theirs);
        assert_eq!(report, expected, "-d {level}");
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "-d {level}: files differ"
        );
    }
}

#[test]
fn every_page_kind_of_every_generation_matches_makedumpfile_at_every_level() {
    for generation in GENERATIONS {
        assert_matches_makedumpfile(&Builder::new(generation).with_every_kind(), 0..=31);
    }
}

#[test]
fn the_categories_are_the_ones_built() {
    let dir = tempfile::tempdir().unwrap();
    let vmcore = write(
        &Builder::new(Generation::V6_12).with_every_kind(),
        dir.path(),
        "vmcore",
    );
    let report = rkdump_report(&vmcore, 31, &[], &dir.path().join("rk"));
    // with_every_kind(): 16 zero pages; 12 + 512... see its layout.
    assert_eq!(report.cache, 12);
    assert_eq!(report.cache_private, 4);
    assert_eq!(report.user, 10 + 8 + 512, "anon, compound anon, hugetlb");
    assert_eq!(report.free, 16 + 1024);
    assert_eq!((report.hwpoison, report.offline), (3, 5));
    assert_eq!(report.zero, 16, "only the zero pages built as such");
}

#[test]
fn five_level_paging_matches_makedumpfile() {
    for generation in [Generation::V6_1, Generation::V6_12] {
        let mut builder = Builder::new(generation).with_every_kind();
        builder.five_level = true;
        assert_matches_makedumpfile(&builder, [1, 31]);
    }
}

#[test]
fn memory_holes_and_absent_sections_match_makedumpfile() {
    let mut builder = Builder::new(Generation::V6_1).with_every_kind();
    builder.pages = 16384;
    // A hole inside a section, and a whole section (1024 pages) missing.
    builder.holes = vec![5000..5100, 7168..8192];
    builder.kinds.push((12288..12800, Kind::Free { order: 9 }));
    assert_matches_makedumpfile(&builder, [0, 1, 16, 31]);
}

#[test]
fn sparsemem_without_vmemmap_or_extreme_matches_makedumpfile() {
    for (extreme, vmemmap) in [(true, false), (false, true), (false, false)] {
        let mut builder = Builder::new(Generation::V6_1).with_every_kind();
        builder.extreme = extreme;
        builder.vmemmap = vmemmap;
        assert_matches_makedumpfile(&builder, [1, 31]);
    }
}

#[test]
fn output_does_not_depend_on_the_cycle_size() {
    let dir = tempfile::tempdir().unwrap();
    let builder = Builder::new(Generation::V6_12).with_every_kind();
    let vmcore = write(&builder, dir.path(), "vmcore");
    let whole = dir.path().join("whole");
    let expected = rkdump_report(&vmcore, 31, &[], &whole);
    // 1 KiB of bitmap per cycle: 8192 page frames, so the 1024-page free block at 7168..8192
    // of with_every_kind() and the hugetlb page stay inside, and 4 cycles are needed.
    for kib in ["1", "2", "3"] {
        let cycled = dir.path().join(format!("cycled-{kib}"));
        let report = rkdump_report(&vmcore, 31, &["--cyclic-buffer", kib], &cycled);
        assert_eq!(report, expected, "--cyclic-buffer {kib}");
        assert!(std::fs::read(&cycled).unwrap() == std::fs::read(&whole).unwrap());
    }
}

fn dmesg_pair(builder: &Builder) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let vmcore = write(builder, dir.path(), "vmcore");
    let ours = dir.path().join("rk.txt");
    let theirs = dir.path().join("mdf.txt");
    run_ok(Command::new(rkdump()).arg("dmesg").arg(&vmcore).arg(&ours));
    run_ok(
        Command::new(makedumpfile())
            .arg("--dump-dmesg")
            .arg(&vmcore)
            .arg(&theirs),
    );
    (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap())
}

#[test]
fn lockless_log_with_wrapped_and_empty_records_matches_makedumpfile() {
    let (ours, theirs) = dmesg_pair(&Builder::new(Generation::V6_1));
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs)
    );
    let text = String::from_utf8_lossy(&ours);
    assert!(
        text.contains("[  123.456789] [   T4242] sysrq: Trigger a crash\n"),
        "{text}"
    );
    assert!(
        text.contains("\\xffffffc3"),
        "high bytes escaped as makedumpfile does:\n{text}"
    );
}

#[test]
fn legacy_printk_log_matches_makedumpfile() {
    for caller_id in [false, true] {
        let mut builder = Builder::new(Generation::V6_1);
        let records = (0..40u32)
            .map(|i| Record {
                ts_nsec: u64::from(i) * 1_000_123,
                caller_id: i,
                text: format!("legacy record {i}\nwith a second line").into_bytes(),
            })
            .collect();
        builder.log = Log::Legacy { records, caller_id };
        let (ours, theirs) = dmesg_pair(&builder);
        assert!(!ours.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "caller_id: {caller_id}"
        );
    }
}

#[test]
fn report_parser_reads_makedumpfile_output() {
    let text = "\nOriginal pages  : 0x00000000000333a8\n  Excluded pages   : 0x000000000002992b\n\
    Pages filled with zero  : 0x000000000000177e\n    Non-private cache pages : 0x000000000000164a\n\
    Private cache pages     : 0x000000000000482b\n    User process data pages : 0x000000000000d7f0\n\
    Free pages              : 0x0000000000014b48\n    Hwpoison pages          : 0x0000000000000000\n\
    Offline pages           : 0x0000000000000000\n    Extension filter pages  : 0x0000000000000000\n\
  Remaining pages  : 0x0000000000009a7d\nMemory Hole     : 0x000000000000cc32\nTotal pages     : 0x000000000003ffda\n";
    let report = Report::parse(text);
    assert_eq!(
        (report.original, report.free, report.total),
        (0x333a8, 0x14b48, 0x3ffda)
    );
}
