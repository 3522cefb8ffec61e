//! The dump drivers against synthetic vmcores.
//!
//! The reference is the builder's own description, never rkdump's decoders: which page frames
//! are dumped follows from the kinds the builder gave them (and, for zero pages, from the bytes
//! it wrote), each page's expected bytes come from the builder's file read with the testkit's
//! own ELF reader, ELF output is read with the `object` crate, and kdump-compressed output is
//! walked from the format's documented layout and decompressed with `zstd` directly.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::LittleEndian as LE;
use object::elf::{self as oelf, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader as _, ProgramHeader as _};
use rkdump_testkit::{Builder, Generation, Kind, PAGE, elf as tk};

use super::*;
use crate::filter::DumpLevel;
use crate::output::{FileSink, OpenSink, Opened, OutputError, Sink, incomplete_name};
use crate::pipeline::Codec;
use crate::vmcore::window::Access;

const PAGE_BYTES: usize = 4096;
/// kdump header status bits (makedumpfile's `DUMP_DH_COMPRESSED_INCOMPLETE` and zstd).
const KDUMP_INCOMPLETE: u32 = 0x8;
const KDUMP_ZSTD: u32 = 0x20;
/// makedumpfile's `DUMP_DH_COMPRESSED_ZLIB`, `_LZO` and `_SNAPPY`.
const KDUMP_ZLIB: u32 = 0x1;
const KDUMP_LZO: u32 = 0x2;
const KDUMP_SNAPPY: u32 = 0x4;
/// The ELF header's incomplete flag (makedumpfile sets bit 0 of `e_flags`).
const ELF_INCOMPLETE: u32 = 1;

// ---------------------------------------------------------------------------------------------
// The reference: what the builder made.
// ---------------------------------------------------------------------------------------------

/// A built vmcore, on disk, with the builder's view of every page frame.
struct Input {
    dir: tempfile::TempDir,
    builder: Builder,
    bytes: Vec<u8>,
    path: PathBuf,
}

impl Input {
    fn new(builder: Builder) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bytes = builder.build();
        let path = dir.path().join("input.vmcore");
        std::fs::write(&path, &bytes).unwrap();
        Self {
            dir,
            builder,
            bytes,
            path,
        }
    }

    /// A 32 MiB V6_12 vmcore with every kind of page, a run of zero pages long enough to
    /// split an ELF segment, and one hole.
    fn every_kind() -> Self {
        let mut builder = Builder::new(Generation::V6_12).with_every_kind();
        let end = builder.kinds.last().unwrap().0.end;
        assert!(end <= 5632, "with_every_kind ends at {end}");
        builder.kinds.push((5632..6144, Kind::Zero));
        builder.holes = std::iter::once(7000..7100).collect();
        Self::new(builder)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The builder's PT_LOADs (the kernel-text alias, then RAM), as the testkit reads them.
    fn loads(&self) -> Vec<tk::ProgramHeader> {
        tk::program_headers(&self.bytes)
            .into_iter()
            .filter(|h| h.p_type == 1)
            .collect()
    }

    /// The builder's PT_NOTE segment, verbatim.
    fn notes(&self) -> &[u8] {
        let notes = tk::program_headers(&self.bytes)[0];
        assert_eq!(notes.p_type, 4, "the builder writes PT_NOTE first");
        &self.bytes[usize::try_from(notes.p_offset).unwrap()..]
            [..usize::try_from(notes.p_filesz).unwrap()]
    }

    /// Whether page frame `pfn` is in a RAM PT_LOAD (not in a hole).
    fn in_ram(&self, pfn: u64) -> bool {
        self.builder.ram().iter().any(|r| r.contains(&pfn))
    }

    /// The bytes the builder wrote for page frame `pfn` (which must be in RAM).
    fn page(&self, pfn: u64) -> &[u8] {
        let paddr = pfn * PAGE;
        let ram = self.loads()[1..]
            .iter()
            .copied()
            .find(|h| h.p_paddr <= paddr && paddr < h.p_paddr + h.p_filesz)
            .unwrap_or_else(|| panic!("pfn {pfn:#x} is not in RAM"));
        let at = usize::try_from(ram.p_offset + paddr - ram.p_paddr).unwrap();
        &self.bytes[at..at + PAGE_BYTES]
    }

    /// Whether the builder left page frame `pfn` all zeros.
    fn is_zero(&self, pfn: u64) -> bool {
        self.page(pfn).iter().all(|&b| b == 0)
    }

    /// The builder's kind of each page frame (kernel memory where it said nothing).
    fn kind(&self, pfn: u64) -> Kind {
        self.builder
            .kinds
            .iter()
            .rev()
            .find(|(range, _)| range.contains(&pfn))
            .map_or(Kind::Kernel, |(_, kind)| *kind)
    }

    /// Whether a page of `kind` is left out at `level` for its kind (makedumpfile's rules;
    /// hwpoison and offline pages always are, order-10 free blocks are the largest there are).
    fn excluded_kind(kind: Kind, level: u8) -> bool {
        let has = |bit: u8| level & bit != 0;
        match kind {
            Kind::Kernel | Kind::Zero | Kind::Slab => false,
            Kind::Free { order } => has(16) && order < 11,
            Kind::Cache => has(2) || has(4),
            Kind::CachePrivate => has(4),
            Kind::Anon | Kind::CompoundAnon { .. } | Kind::Hugetlb { .. } => has(8),
            Kind::Hwpoison | Kind::Offline => true,
        }
    }

    /// Page frames the filter keeps at `level` (the 2nd bitmap of a kdump file): in RAM and
    /// not excluded for their kind. Zero pages are among them.
    fn kept(&self, level: u8) -> Vec<bool> {
        (0..self.builder.pages)
            .map(|pfn| self.in_ram(pfn) && !Self::excluded_kind(self.kind(pfn), level))
            .collect()
    }

    /// Page frames whose data a dump at `level` holds: kept, and not zero when level bit 1
    /// leaves zero pages out.
    fn with_data(&self, level: u8) -> Vec<bool> {
        let kept = self.kept(level);
        (0..self.builder.pages)
            .map(|pfn| {
                let p = usize::try_from(pfn).unwrap();
                kept[p] && !(level & 1 != 0 && self.is_zero(pfn))
            })
            .collect()
    }
}

fn options(input: &Input, destination: Destination, format: Format, level: u8) -> SaveOptions {
    SaveOptions {
        vmcore: input.path.clone(),
        destination,
        format,
        flattened: false,
        lz4: false,
        codec: Codec::Zstd(1),
        level: DumpLevel::new(level).unwrap(),
        threads: 2,
        access: Access::Mmap,
        cycle_pfns: DEFAULT_CYCLE_PFNS,
        overwrite: false,
    }
}

/// Runs `save`, collecting every progress report.
fn save_collecting(options: &SaveOptions) -> (Result<Summary, SaveError>, Vec<Progress>) {
    let mut reports = Vec::new();
    let result = save(options, &mut |p| reports.push(p));
    (result, reports)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap()
}

// ---------------------------------------------------------------------------------------------
// ELF output, read with the `object` crate.
// ---------------------------------------------------------------------------------------------

/// An ELF dump as `object` reads it: `e_flags` and the program headers.
struct ElfDump<'a> {
    bytes: &'a [u8],
    flags: u32,
    notes: &'a [u8],
    loads: Vec<&'a ProgramHeader64<LE>>,
}

fn parse_elf(bytes: &[u8]) -> ElfDump<'_> {
    let header = FileHeader64::<LE>::parse(bytes).expect("object parses the dump's ELF header");
    let endian = header.endian().expect("a known byte order");
    assert!(header.is_class_64() && header.is_little_endian());
    assert_eq!(header.e_type(endian), oelf::ET_CORE);
    assert_eq!(header.e_machine(endian), oelf::EM_X86_64);
    let headers = header
        .program_headers(endian, bytes)
        .expect("object reads the program headers");
    let notes: Vec<_> = headers
        .iter()
        .filter(|h| h.p_type(endian) == oelf::PT_NOTE)
        .collect();
    assert_eq!(notes.len(), 1, "one PT_NOTE");
    let loads: Vec<_> = headers
        .iter()
        .filter(|h| h.p_type(endian) == oelf::PT_LOAD)
        .collect();
    assert_eq!(loads.len() + 1, headers.len(), "only PT_NOTE and PT_LOADs");
    ElfDump {
        bytes,
        flags: header.e_flags(endian).0,
        notes: notes[0]
            .data(endian, bytes)
            .expect("the notes are in the file"),
        loads,
    }
}

/// `(paddr, vaddr, memsz, filesz)` of a program header.
fn geometry(h: &ProgramHeader64<LE>) -> (u64, u64, u64, u64) {
    (h.p_paddr(LE), h.p_vaddr(LE), h.p_memsz(LE), h.p_filesz(LE))
}

/// Checks an ELF dump of `input` at `level` against the builder.
fn check_elf(input: &Input, bytes: &[u8], level: u8) {
    let dump = parse_elf(bytes);
    assert_eq!(dump.flags & ELF_INCOMPLETE, 0, "-d {level}: complete dump");
    assert!(dump.notes == input.notes(), "-d {level}: notes verbatim");

    // Every output PT_LOAD belongs to one input PT_LOAD (same virtual-physical offset, inside
    // its physical range), and those of each input cover it exactly, in order, without gaps.
    let inputs = input.loads();
    let mut claimed = vec![false; dump.loads.len()];
    for load in &inputs {
        let delta = load.p_vaddr.wrapping_sub(load.p_paddr);
        let end = load.p_paddr + load.p_memsz;
        let mut at = load.p_paddr;
        for (i, out) in dump.loads.iter().enumerate() {
            let (paddr, vaddr, memsz, filesz) = geometry(out);
            if vaddr.wrapping_sub(paddr) != delta || paddr < load.p_paddr || paddr >= end {
                continue;
            }
            assert!(!claimed[i], "-d {level}: output load {i} claimed twice");
            claimed[i] = true;
            assert_eq!(
                paddr, at,
                "-d {level}: output loads of {load:?} in order, no gap"
            );
            assert!(filesz <= memsz, "-d {level}: load {i}");
            at = paddr + memsz;
        }
        assert_eq!(at, end, "-d {level}: output loads cover {load:?}");
    }
    assert!(
        claimed.iter().all(|&c| c),
        "-d {level}: no stray output load"
    );

    // Every page the builder made: its bytes where dumped, absent or zeros where excluded,
    // in every output load that maps it (the kernel-text alias included).
    let with_data = input.with_data(level);
    let mut dumped_pages = 0u64;
    for pfn in (0..input.builder.pages).filter(|&p| input.in_ram(p)) {
        let paddr = pfn * PAGE;
        let dumped = with_data[to_usize(pfn)];
        let mut present = false;
        for out in &dump.loads {
            let (start, _, memsz, filesz) = geometry(out);
            if paddr < start || paddr >= start + memsz {
                continue;
            }
            if paddr + PAGE > start + filesz {
                assert!(
                    !dumped,
                    "-d {level}: pfn {pfn:#x} is dumped but not in the file"
                );
                continue;
            }
            let at = to_usize(out.p_offset(LE) + paddr - start);
            let page = &dump.bytes[at..at + PAGE_BYTES];
            if dumped {
                assert!(page == input.page(pfn), "-d {level}: pfn {pfn:#x} differs");
                present = true;
                dumped_pages += 1;
            } else {
                assert!(
                    page.iter().all(|&b| b == 0),
                    "-d {level}: excluded pfn {pfn:#x} has data"
                );
            }
        }
        assert_eq!(present, dumped, "-d {level}: pfn {pfn:#x}");
    }
    assert!(dumped_pages > 0);
}

#[test]
fn elf_dumps_hold_the_builder_pages_at_their_physical_addresses() {
    let input = Input::every_kind();
    for level in [0, 1, 8, 18, 31] {
        let path = input.out(&format!("vmcore-{level}.elf"));
        let (result, _) = save_collecting(&options(
            &input,
            Destination::Path(path.clone()),
            Format::Elf,
            level,
        ));
        let summary = result.unwrap_or_else(|e| panic!("-d {level}: {e}"));
        assert!(summary.complete);
        assert_eq!(summary.format, "elf");
        assert_eq!(summary.dump_level, level);
        assert!(!incomplete_name(&path).exists());
        let bytes = read(&path);
        assert_eq!(summary.bytes_written, bytes.len() as u64);
        check_elf(&input, &bytes, level);

        // The exclusion counts are the builder's, zero pages included when bit 1 is set.
        let kept = input.kept(level);
        let excluded = (0..input.builder.pages)
            .filter(|&p| input.in_ram(p) && !kept[to_usize(p)])
            .count() as u64;
        let zero = if level & 1 != 0 {
            (0..input.builder.pages)
                .filter(|&p| kept[to_usize(p)] && input.is_zero(p))
                .count() as u64
        } else {
            0
        };
        assert_eq!(summary.excluded.zero, zero, "-d {level}");
        assert_eq!(summary.excluded.excluded(), excluded + zero, "-d {level}");
    }
}

// ---------------------------------------------------------------------------------------------
// kdump-compressed output, walked from the documented layout.
// ---------------------------------------------------------------------------------------------

/// A kdump-compressed file's regions, from its header (format/kdump.rs's layout).
struct KdumpLayout {
    status: u32,
    max_mapnr: u64,
    first_bitmap: usize,
    second_bitmap: usize,
    descriptors: usize,
}

fn kdump_layout(bytes: &[u8]) -> KdumpLayout {
    assert_eq!(&bytes[..8], b"KDUMP   ");
    assert_eq!(u32_at(bytes, 8), 6, "header version");
    let block = to_usize(u32_at(bytes, 428).into());
    assert_eq!(block, PAGE_BYTES);
    let sub_blocks = to_usize(u32_at(bytes, 432).into());
    let bitmap_blocks = to_usize(u32_at(bytes, 436).into());
    let max_mapnr = u64_at(bytes, block + 96);
    let first_bitmap = (1 + sub_blocks) * block;
    let second_bitmap = first_bitmap + bitmap_blocks / 2 * block;
    KdumpLayout {
        status: u32_at(bytes, 424),
        max_mapnr,
        first_bitmap,
        second_bitmap,
        descriptors: second_bitmap + bitmap_blocks / 2 * block,
    }
}

fn bit(bytes: &[u8], at: usize, pfn: u64) -> bool {
    bytes[at + to_usize(pfn / 8)] & (1 << (pfn % 8)) != 0
}

/// `(offset, size, flags)` of each page descriptor, by page frame (the set bits of the 2nd
/// bitmap, in order), for the descriptors within `bytes`.
fn descriptors(bytes: &[u8], layout: &KdumpLayout) -> Vec<(u64, (u64, u32, u32))> {
    let mut out = Vec::new();
    let mut at = layout.descriptors;
    for pfn in 0..layout.max_mapnr {
        if !bit(bytes, layout.second_bitmap, pfn) {
            continue;
        }
        if at + 24 > bytes.len() {
            break;
        }
        out.push((
            pfn,
            (
                u64_at(bytes, at),
                u32_at(bytes, at + 8),
                u32_at(bytes, at + 12),
            ),
        ));
        at += 24;
    }
    out
}

/// The page a descriptor points at, decoded; `None` if its data is not in `bytes`.
fn decode(bytes: &[u8], (offset, size, flags): (u64, u32, u32)) -> Option<Vec<u8>> {
    let start = to_usize(offset);
    let data = bytes.get(start..start + to_usize(size.into()))?;
    Some(match flags {
        0 => data.to_vec(),
        KDUMP_ZSTD => zstd::bulk::decompress(data, PAGE_BYTES).ok()?,
        KDUMP_ZLIB => {
            let mut page = Vec::with_capacity(PAGE_BYTES);
            flate2::Decompress::new(true)
                .decompress_vec(data, &mut page, flate2::FlushDecompress::Finish)
                .ok()?;
            page
        }
        KDUMP_LZO => crate::format::lzo1x::tests::decode(data).ok()?,
        KDUMP_SNAPPY => snap::raw::Decoder::new().decompress_vec(data).ok()?,
        other => panic!("unexpected page flags {other:#x}"),
    })
}

/// Checks a kdump-compressed dump of `input` at `level` against the builder; returns the
/// number of descriptors.
fn check_kdump(input: &Input, bytes: &[u8], level: u8, summary: &Summary) -> u64 {
    let layout = kdump_layout(bytes);
    assert_eq!(layout.status & KDUMP_INCOMPLETE, 0, "-d {level}: complete");
    assert_eq!(layout.max_mapnr, input.builder.pages);
    let kept = input.kept(level);
    for pfn in 0..input.builder.pages {
        assert_eq!(
            bit(bytes, layout.first_bitmap, pfn),
            input.in_ram(pfn),
            "-d {level}: 1st bitmap, pfn {pfn:#x}"
        );
        assert_eq!(
            bit(bytes, layout.second_bitmap, pfn),
            kept[to_usize(pfn)],
            "-d {level}: 2nd bitmap, pfn {pfn:#x}"
        );
    }
    let descs = descriptors(bytes, &layout);
    let want = kept.iter().filter(|&&k| k).count() as u64;
    assert_eq!(
        descs.len() as u64,
        want,
        "-d {level}: a descriptor per kept page"
    );
    assert_eq!(summary.dumped_pages, want, "-d {level}");

    // Zero pages share the one zero block at the start of the data area when bit 1 is set;
    // otherwise they are stored like any page.
    let data_start = layout.descriptors as u64 + 24 * want;
    let mut zero = 0u64;
    let mut offsets = std::collections::HashSet::new();
    for &(pfn, desc) in &descs {
        let page = decode(bytes, desc).unwrap_or_else(|| panic!("-d {level}: pfn {pfn:#x}"));
        assert!(page == input.page(pfn), "-d {level}: pfn {pfn:#x} differs");
        if level & 1 != 0 && input.is_zero(pfn) {
            zero += 1;
            assert_eq!(desc, (data_start, 4096, 0), "-d {level}: zero pfn {pfn:#x}");
        } else {
            assert!(desc.0 > data_start || level & 1 == 0 && desc.0 == data_start);
            assert!(
                offsets.insert(desc.0),
                "-d {level}: pfn {pfn:#x} shares data"
            );
        }
    }
    assert_eq!(summary.excluded.zero, zero, "-d {level}");
    assert_eq!(summary.stored_pages, want - zero, "-d {level}");
    if level & 1 != 0 {
        assert!(zero > 0, "the builder makes zero pages");
    }
    want
}

#[test]
fn kdump_pages_decompress_to_the_builder_pages() {
    let input = Input::every_kind();
    for level in [0, 1, 2, 20, 31] {
        let path = input.out(&format!("vmcore-{level}"));
        let (result, reports) = save_collecting(&options(
            &input,
            Destination::Path(path.clone()),
            Format::Kdump,
            level,
        ));
        let summary = result.unwrap_or_else(|e| panic!("-d {level}: {e}"));
        assert!(summary.complete);
        assert_eq!(
            (summary.format, summary.compression),
            ("kdump-compressed", "zstd")
        );
        assert_eq!(summary.total_pages, input.builder.pages);
        let bytes = read(&path);
        assert_eq!(summary.bytes_written, bytes.len() as u64);
        assert!(!incomplete_name(&path).exists());
        assert_eq!(u32_at(&bytes, 424) & KDUMP_ZSTD, KDUMP_ZSTD);
        let dumped = check_kdump(&input, &bytes, level, &summary);

        // Progress ends with every page written.
        let last = reports.last().expect("progress is reported");
        assert_eq!((last.done, last.total), (dumped, dumped), "-d {level}");
        assert!(reports.windows(2).all(|w| w[0].done <= w[1].done));
    }
}

#[test]
fn kdump_without_compression_stores_raw_pages() {
    let input = Input::every_kind();
    let path = input.out("vmcore");
    let mut options = options(&input, Destination::Path(path.clone()), Format::Kdump, 31);
    options.codec = Codec::None;
    let (result, _) = save_collecting(&options);
    let summary = result.unwrap();
    assert_eq!(summary.compression, "none");
    let bytes = read(&path);
    assert_eq!(u32_at(&bytes, 424), 0, "no compression flag, complete");
    check_kdump(&input, &bytes, 31, &summary);
    let layout = kdump_layout(&bytes);
    assert!(
        descriptors(&bytes, &layout)
            .iter()
            .all(|(_, (_, size, flags))| (*size, *flags) == (4096, 0))
    );
}

/// makedumpfile's `-c`, `-l` and `-p`: the header names the codec, each page is stored with it
/// or raw, decodes to the builder's page (zlib's own inflate, snap's decoder, an LZO decoder
/// written from the format's description), and the file is the same with 1, 2 and 3 threads.
#[test]
fn zlib_lzo_and_snappy_dumps_decode_and_do_not_depend_on_the_threads() {
    let input = Input::every_kind();
    for (codec, flag, name) in [
        (Codec::Zlib, KDUMP_ZLIB, "zlib"),
        (Codec::Lzo, KDUMP_LZO, "lzo"),
        (Codec::Snappy, KDUMP_SNAPPY, "snappy"),
    ] {
        let mut first: Option<Vec<u8>> = None;
        for threads in [1, 2, 3] {
            let path = input.out(&format!("vmcore-{name}-{threads}"));
            let mut options = options(&input, Destination::Path(path.clone()), Format::Kdump, 1);
            options.codec = codec;
            options.threads = threads;
            let (result, _) = save_collecting(&options);
            let summary = result.unwrap_or_else(|e| panic!("{name}, {threads} threads: {e}"));
            assert_eq!(summary.compression, name);
            let bytes = read(&path);
            match &first {
                None => {
                    assert_eq!(u32_at(&bytes, 424), flag, "{name}: header status");
                    check_kdump(&input, &bytes, 1, &summary);
                    let layout = kdump_layout(&bytes);
                    let flags: Vec<u32> = descriptors(&bytes, &layout)
                        .iter()
                        .map(|(_, (_, _, flags))| *flags)
                        .collect();
                    assert!(flags.iter().all(|&f| f == 0 || f == flag), "{name}");
                    assert!(flags.contains(&flag), "{name}: some page compresses");
                    first = Some(bytes);
                }
                Some(first) => assert!(*first == bytes, "{name}: {threads} threads differ"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism.
// ---------------------------------------------------------------------------------------------

/// The same dump with 1, 2 and 3 threads and cycles smaller than memory: identical files.
fn identical_whatever_the_threads_and_cycles(format: Format) {
    let input = Input::every_kind();
    let mut first: Option<Vec<u8>> = None;
    for (i, (threads, cycle)) in [
        (1, DEFAULT_CYCLE_PFNS),
        (2, DEFAULT_CYCLE_PFNS),
        (3, DEFAULT_CYCLE_PFNS),
        (3, 1000),
        (2, 4096),
        (1, 8),
    ]
    .into_iter()
    .enumerate()
    {
        let path = input.out(&format!("vmcore-{i}"));
        let mut options = options(&input, Destination::Path(path.clone()), format, 31);
        options.threads = threads;
        options.cycle_pfns = cycle;
        let (result, _) = save_collecting(&options);
        let summary = result.unwrap_or_else(|e| panic!("{threads} threads, cycle {cycle}: {e}"));
        assert_eq!(summary.threads, threads);
        // The page pass says where its time went: one figure per worker, each part within it.
        let times = summary
            .page_pass
            .as_ref()
            .expect("the page pass ran to its end");
        assert_eq!(times.workers.len(), threads, "{times:?}");
        assert!(
            [times.chunk_source, times.ordered]
                .iter()
                .chain(&times.workers)
                .all(|&t| (0.0..=times.wall).contains(&t)),
            "{times:?}"
        );
        assert!(times.wall <= summary.seconds, "{times:?}");
        assert!((0.0..1.0).contains(&times.serial_fraction), "{times:?}");
        let bytes = read(&path);
        match &first {
            None => {
                match format {
                    Format::Kdump => {
                        check_kdump(&input, &bytes, 31, &summary);
                    }
                    Format::Elf => check_elf(&input, &bytes, 31),
                }
                first = Some(bytes);
            }
            Some(first) => assert!(
                *first == bytes,
                "{format:?}: {threads} threads, cycles of {cycle} pfns differ from the first"
            ),
        }
    }
}

#[test]
fn kdump_files_are_identical_whatever_the_threads_and_cycles() {
    identical_whatever_the_threads_and_cycles(Format::Kdump);
}

#[test]
fn elf_files_are_identical_whatever_the_threads_and_cycles() {
    identical_whatever_the_threads_and_cycles(Format::Elf);
}

// ---------------------------------------------------------------------------------------------
// Failures.
// ---------------------------------------------------------------------------------------------

#[test]
fn an_existing_dump_is_kept_unless_overwrite_is_asked() {
    let input = Input::new(Builder::new(Generation::V6_1));
    for format in [Format::Kdump, Format::Elf] {
        let path = input.out(&format!("existing-{format:?}"));
        std::fs::write(&path, b"an earlier dump").unwrap();
        let options = options(&input, Destination::Path(path.clone()), format, 31);
        let (result, reports) = save_collecting(&options);
        let error = result.expect_err("the destination exists");
        assert!(
            matches!(&error, SaveError::Destination(DestinationError::Exists(p)) if *p == path),
            "{error:?}"
        );
        assert!(error.is_usage());
        assert!(error.summary().is_none() && error.partial().is_none());
        assert!(reports.is_empty());
        assert_eq!(read(&path), b"an earlier dump");
        assert!(!incomplete_name(&path).exists());

        let (result, _) = save_collecting(&SaveOptions {
            overwrite: true,
            ..options
        });
        assert!(result.unwrap().complete);
        assert_ne!(read(&path), b"an earlier dump");
    }
}

#[test]
fn a_missing_directory_fails_at_open_without_a_summary() {
    let input = Input::new(Builder::new(Generation::V6_1));
    for format in [Format::Kdump, Format::Elf] {
        let path = input.out("no-such-directory").join("vmcore");
        let (result, _) = save_collecting(&options(
            &input,
            Destination::Path(path.clone()),
            format,
            31,
        ));
        let error = result.expect_err("the directory does not exist");
        assert!(
            matches!(&error, SaveError::Destination(DestinationError::Create { path: p, .. })
                if *p == incomplete_name(&path)),
            "{error:?}"
        );
        assert!(!error.is_usage());
        assert!(error.summary().is_none() && error.partial().is_none());
    }
}

/// A file written as `<path>-incomplete` that refuses writes: every write once `budget` bytes
/// have gone through (a disk that filled up), or only writes reaching past `capacity` bytes of
/// the file (a device too small for the dump).
#[derive(Debug)]
struct FailingFile {
    path: PathBuf,
    budget: u64,
    capacity: u64,
}

struct FailingSink {
    inner: FileSink,
    budget: u64,
    capacity: u64,
    /// Once the budget is spent, nothing more goes through.
    full: bool,
}

impl Sink for FailingSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), OutputError> {
        let len = data.len() as u64;
        self.full |= self.inner.bytes_written() + len > self.budget;
        if self.full || offset + len > self.capacity {
            return Err(OutputError::NoSpace {
                target: "test sink".into(),
                offset,
                len: data.len(),
            });
        }
        self.inner.write_at(offset, data)
    }

    fn finish(&mut self) -> Result<(), OutputError> {
        self.inner.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}

impl OpenSink for FailingFile {
    fn open(&self, _: &crate::output::OpenRequest) -> Result<Opened, DestinationError> {
        let temporary = incomplete_name(&self.path);
        let file = File::create(&temporary).unwrap();
        Ok(Opened {
            sink: Box::new(FailingSink {
                inner: FileSink::new(file, "test sink"),
                budget: self.budget,
                capacity: self.capacity,
                full: false,
            }),
            rename: Some((temporary.clone(), self.path.clone())),
            partial: Some(temporary),
            label: "test sink".into(),
        })
    }
}

/// Runs a dump into a [`FailingFile`]; returns the error and the bytes left behind.
fn failed_dump(
    input: &Input,
    format: Format,
    budget: u64,
    capacity: u64,
) -> (SaveError, PathBuf, Vec<u8>) {
    let path = input.out(&format!("failing-{format:?}"));
    let opener = FailingFile {
        path: path.clone(),
        budget,
        capacity,
    };
    let (result, _) = save_collecting(&options(
        input,
        Destination::Custom(Arc::new(opener)),
        format,
        31,
    ));
    let error = result.expect_err("the sink fails");
    assert!(!path.exists(), "{format:?}: no final name");
    let partial = incomplete_name(&path);
    let bytes = read(&partial);
    (error, partial, bytes)
}

/// Checks the error of a dump whose sink failed midway: `SaveError::Output` with the
/// incomplete name and a summary of an incomplete dump that wrote something.
fn check_output_failure(error: &SaveError, partial: &Path, format: Format) {
    assert!(
        matches!(error, SaveError::Output { source, .. } if source.is_no_space()),
        "{format:?}: {error:?}"
    );
    assert!(!error.is_usage());
    assert_eq!(error.partial(), Some(partial));
    assert!(
        error.to_string().contains(&partial.display().to_string()),
        "{error}"
    );
    let summary = error
        .summary()
        .expect("a summary after the output was opened");
    assert!(!summary.complete);
    assert!(summary.bytes_written > 0, "{format:?}: {summary:?}");
}

#[test]
fn a_kdump_cut_short_by_a_full_disk_is_kept_marked_incomplete() {
    let input = Input::every_kind();
    // The disk fills up two thirds of the way through the dump.
    let complete = input.out("complete");
    let (result, _) = save_collecting(&options(
        &input,
        Destination::Path(complete.clone()),
        Format::Kdump,
        31,
    ));
    let budget = result.unwrap().bytes_written * 2 / 3;
    let (error, partial, bytes) = failed_dump(&input, Format::Kdump, budget, u64::MAX);
    check_output_failure(&error, &partial, Format::Kdump);
    let summary = error.summary().unwrap();
    assert!(summary.bytes_written <= budget);
    let layout = kdump_layout(&bytes);
    assert_eq!(layout.status & KDUMP_INCOMPLETE, KDUMP_INCOMPLETE);
    // What was written is readable: each descriptor on file is a missing page (zeros) or
    // points at the builder's page.
    let descs = descriptors(&bytes, &layout);
    let mut written = 0;
    for (pfn, desc) in descs {
        if desc == (0, 0, 0) {
            continue;
        }
        let page = decode(&bytes, desc).unwrap_or_else(|| panic!("pfn {pfn:#x}: {desc:?}"));
        assert!(page == input.page(pfn), "pfn {pfn:#x}");
        written += 1;
    }
    assert!(written > 0, "some pages were written before the failure");
    assert!(written < summary.total_pages);
}

#[test]
fn an_elf_dump_cut_short_by_a_full_disk_is_kept_marked_incomplete() {
    let input = Input::every_kind();
    let (error, partial, bytes) = failed_dump(&input, Format::Elf, 2 << 20, u64::MAX);
    check_output_failure(&error, &partial, Format::Elf);
    let dump = parse_elf(&bytes);
    assert_eq!(dump.flags & ELF_INCOMPLETE, ELF_INCOMPLETE);
    assert!(dump.notes == input.notes());
}

/// A device too small for the dump takes the writes that fit and refuses the others; the
/// writer documents that a dump cut short never has a descriptor pointing at unwritten bytes.
#[test]
fn a_kdump_cut_short_by_a_small_device_has_no_descriptor_to_unwritten_data() {
    let input = Input::every_kind();
    let (error, partial, bytes) = failed_dump(&input, Format::Kdump, u64::MAX, 3 << 20);
    check_output_failure(&error, &partial, Format::Kdump);
    let layout = kdump_layout(&bytes);
    assert_eq!(layout.status & KDUMP_INCOMPLETE, KDUMP_INCOMPLETE);
    let bad: Vec<_> = descriptors(&bytes, &layout)
        .into_iter()
        .filter(|&(pfn, desc)| {
            desc != (0, 0, 0) && decode(&bytes, desc).as_deref() != Some(input.page(pfn))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} descriptors point at unwritten or wrong data (file {} bytes), first {:?}",
        bad.len(),
        bytes.len(),
        bad.first()
    );
}

/// A character device cannot take a seekable dump: it is refused before anything is written,
/// naming -F; a flattened stream into it is written in place, and `/dev/full` fails at the
/// first write with a summary and no partial file (a device is never renamed over).
#[test]
fn a_full_device_takes_only_a_stream_which_fails_at_the_first_write() {
    let input = Input::new(Builder::new(Generation::V6_1));
    for format in [Format::Kdump, Format::Elf] {
        let mut seekable = options(&input, Destination::Path("/dev/full".into()), format, 31);
        let (result, reports) = save_collecting(&seekable);
        let error = result.expect_err("a character device is not seekable");
        assert!(error.is_usage(), "{format:?}: {error:?}");
        assert!(error.to_string().contains("-F"), "{error}");
        assert!(error.summary().is_none() && reports.is_empty());

        seekable.flattened = true;
        let (result, _) = save_collecting(&seekable);
        let error = result.expect_err("/dev/full takes nothing");
        assert!(
            matches!(&error, SaveError::Destination(DestinationError::Output(source)) if source.is_no_space())
                || matches!(&error, SaveError::Output { source, partial: None, .. } if source.is_no_space()),
            "{format:?}: {error:?}"
        );
        if let Some(summary) = error.summary() {
            assert!(!summary.complete);
            assert_eq!(summary.output, "/dev/full");
        }
    }
    assert!(
        Path::new("/dev/full")
            .metadata()
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

/// `save` reports progress "once when the last page is written".
#[test]
fn elf_progress_ends_with_every_page_written() {
    let input = Input::every_kind();
    let path = input.out("vmcore.elf");
    let (result, reports) =
        save_collecting(&options(&input, Destination::Path(path), Format::Elf, 31));
    let summary = result.unwrap();
    let last = reports.last().expect("progress is reported");
    assert_eq!(last.done, summary.dumped_pages, "{last:?}");
}

/// A panic in the ordered step (a bug in a sink) reaches the caller: the other workers, which
/// would otherwise wait for room behind a result that never goes through, stop.
#[test]
fn a_panicking_sink_ends_the_run_with_its_panic() {
    use crate::filter::Bitmap;
    use crate::pipeline::{self, ChunkResult, Settings};
    use crate::vmcore::window::PageMap;

    let input = Input::every_kind();
    let vmcore = crate::vmcore::Vmcore::open(&input.path).unwrap();
    let map = PageMap::new(vmcore.segments());
    let mut all = Bitmap::new(0..input.builder.pages);
    all.set_range(0..input.builder.pages);
    let chunks = chunks::chunks(&map, &all);
    assert!(chunks.len() > 20, "{} chunks", chunks.len());
    for threads in [1, 2, 4] {
        let mut seen = 0;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pipeline::run(
                &vmcore,
                Settings {
                    threads,
                    codec: Codec::None,
                    detect_zero: false,
                    access: Access::Mmap,
                },
                chunks.clone().into_iter(),
                |_: &ChunkResult| {
                    seen += 1;
                    assert!(seen < 3, "the sink's bug");
                    Ok::<(), OutputError>(())
                },
            )
        }));
        let message = outcome.expect_err("the sink panicked");
        let text = message
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| message.downcast_ref::<String>().cloned());
        assert_eq!(text.as_deref(), Some("the sink's bug"), "{threads} threads");
        assert_eq!(seen, 3, "{threads} threads");
    }
}
