//! Reading a vmcore: the dead kernel's memory as an ELF core file.
//!
//! [`Vmcore`] opens `/proc/vmcore` (or a saved copy), validates its program headers against the
//! file, and reads physical memory through its PT_LOAD segments. [`translate`] walks the dead
//! kernel's page tables to turn kernel virtual addresses into physical ones, and
//! [`KernelMemory`] combines the two so the layers above can read kernel data structures by
//! virtual address. [`window`] maps ranges of pages for the bulk page pipeline (mmap where the
//! kernel allows it, `pread` where it does not).

pub mod translate;
pub mod window;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::bytes::to_usize;
use crate::format::elf::{self, ElfError, FileHeader, ProgramHeader};
use crate::format::note::{self, NoteError};
use crate::format::vmcoreinfo::VmcoreInfo;

pub use translate::{KernelMemory, PageTables, TranslateError};

/// Page size of the dumped machine (x86_64).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Start of the x86_64 kernel text mapping (`__START_KERNEL_map`).
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// End of the x86_64 physical address space (52 bits, with 5-level paging).
const MAX_PHYSICAL_ADDRESS: u64 = 1 << 52;
/// Largest notes segment accepted (real ones are a few KiB per CPU).
const MAX_NOTES_SIZE: u64 = 64 << 20;

/// Why a vmcore cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum VmcoreError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The vmcore's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The ELF headers are invalid.
    #[error("{path}: {source}")]
    Elf {
        /// The vmcore's path.
        path: PathBuf,
        /// What is wrong.
        source: ElfError,
    },
    /// The notes segment is invalid.
    #[error("{path}: {source}")]
    Notes {
        /// The vmcore's path.
        path: PathBuf,
        /// What is wrong.
        source: NoteError,
    },
    /// The file is not shaped like a vmcore.
    #[error("{path}: {what}")]
    Invalid {
        /// The vmcore's path.
        path: PathBuf,
        /// What is wrong, and where.
        what: String,
    },
    /// A physical address lies in no PT_LOAD segment.
    #[error("physical address {0:#x} is not in the vmcore")]
    NotPresent(u64),
    /// Reading memory failed.
    #[error("reading {len} bytes at file offset {offset:#x}: {source}")]
    Read {
        /// File offset of the read.
        offset: u64,
        /// Bytes requested.
        len: usize,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One PT_LOAD segment: a range of the dead machine's physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index of the program header.
    pub index: usize,
    /// First physical address.
    pub phys_start: u64,
    /// End of the segment in memory (`p_paddr + p_memsz`).
    pub phys_end: u64,
    /// Virtual address of the segment.
    pub virt_start: u64,
    /// File offset of the segment's data.
    pub file_offset: u64,
    /// Bytes present in the file (`p_filesz`; the rest up to `p_memsz` reads as zeros).
    pub file_size: u64,
    /// `p_flags` and `p_align` of the program header, copied into ELF dumps.
    pub flags_align: (u32, u64),
}

impl Segment {
    /// Whether this is the x86_64 kernel-text alias (a second mapping of memory that another
    /// segment also covers).
    pub fn is_kernel_text(&self) -> bool {
        self.virt_start >= START_KERNEL_MAP
    }

    /// First page frame of the segment (a partial first page counts).
    pub fn first_pfn(&self) -> u64 {
        self.phys_start >> PAGE_SHIFT
    }

    /// End page frame (exclusive); a partial last page does not count.
    pub fn end_pfn(&self) -> u64 {
        self.phys_end >> PAGE_SHIFT
    }

    /// End of the file-backed part, as a physical address.
    pub fn file_phys_end(&self) -> u64 {
        self.phys_start + self.file_size
    }
}

/// An open vmcore.
#[derive(Debug)]
pub struct Vmcore {
    file: File,
    path: PathBuf,
    file_len: u64,
    segments: Vec<Segment>,
    notes: Vec<u8>,
    notes_offset: u64,
    notes_header: ProgramHeader,
    info: VmcoreInfo,
    vmcoreinfo_range: Option<(u64, u64)>,
    cpus: u32,
    elf_flags: u32,
}

impl Vmcore {
    /// Opens and validates a vmcore.
    pub fn open(path: &Path) -> Result<Self, VmcoreError> {
        let io = |source| VmcoreError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        Self::from_file(file, path, file_len)
    }

    fn from_file(file: File, path: &Path, file_len: u64) -> Result<Self, VmcoreError> {
        let invalid = |what: String| VmcoreError::Invalid {
            path: path.to_owned(),
            what,
        };
        let elf_err = |source| VmcoreError::Elf {
            path: path.to_owned(),
            source,
        };
        let read = |offset: u64, len: usize| -> Result<Vec<u8>, VmcoreError> {
            if offset.saturating_add(len as u64) > file_len {
                return Err(invalid(format!(
                    "truncated: needs {len} bytes at offset {offset:#x}, file has {file_len} bytes"
                )));
            }
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)
                .map_err(|source| VmcoreError::Read {
                    offset,
                    len,
                    source,
                })?;
            Ok(buf)
        };

        let header = FileHeader::parse(&read(0, elf::HEADER_SIZE)?).map_err(elf_err)?;
        if header.e_type != elf::ET_CORE {
            return Err(invalid(format!(
                "ELF type {} is not a core file",
                header.e_type
            )));
        }
        let count = if header.phnum == elf::PN_XNUM {
            let section0 = read(header.shoff, elf::SECTION_HEADER_SIZE)?;
            elf::extended_program_header_count(&section0).map_err(elf_err)? as usize
        } else {
            usize::from(header.phnum)
        };
        let table = read(header.phoff, count * elf::PROGRAM_HEADER_SIZE)?;
        let headers = ProgramHeader::parse_table(&table, count).map_err(elf_err)?;

        let mut segments = Vec::new();
        let mut notes_header = None;
        for (index, ph) in headers.iter().enumerate() {
            match ph.p_type {
                elf::PT_NOTE => notes_header = Some(*ph),
                elf::PT_LOAD => {
                    let end_in_file = ph.offset.checked_add(ph.filesz);
                    if ph.filesz > ph.memsz {
                        return Err(invalid(format!(
                            "PT_LOAD #{index} has p_filesz {:#x} larger than p_memsz {:#x}",
                            ph.filesz, ph.memsz
                        )));
                    }
                    let phys_end = ph.paddr.saturating_add(ph.memsz);
                    if phys_end > MAX_PHYSICAL_ADDRESS {
                        return Err(invalid(format!(
                            "PT_LOAD #{index} (physical {:#x}, {:#x} bytes) reaches beyond x86_64's \
                             52-bit physical address space",
                            ph.paddr, ph.memsz
                        )));
                    }
                    match end_in_file {
                        Some(end) if end <= file_len => {}
                        _ => {
                            return Err(invalid(format!(
                                "truncated: PT_LOAD #{index} (physical {:#x}-{phys_end:#x}) ends at \
                                 file offset {:#x}, but the file has {file_len:#x} bytes",
                                ph.paddr,
                                ph.offset.saturating_add(ph.filesz)
                            )));
                        }
                    }
                    segments.push(Segment {
                        index,
                        phys_start: ph.paddr,
                        phys_end,
                        virt_start: ph.vaddr,
                        file_offset: ph.offset,
                        file_size: ph.filesz,
                        flags_align: (ph.flags, ph.align),
                    });
                }
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(invalid(
                "no PT_LOAD segments: the file holds no memory".to_owned(),
            ));
        }
        check_overlaps(&segments).map_err(invalid)?;

        let Some(notes_header) = notes_header else {
            return Err(invalid(
                "no PT_NOTE segment (no VMCOREINFO, no CPU registers)".to_owned(),
            ));
        };
        if notes_header.filesz > MAX_NOTES_SIZE {
            return Err(invalid(format!(
                "PT_NOTE segment of {} bytes is implausibly large",
                notes_header.filesz
            )));
        }
        let notes = read(notes_header.offset, to_usize(notes_header.filesz))?;
        let parsed = note::parse(&notes).map_err(|source| VmcoreError::Notes {
            path: path.to_owned(),
            source,
        })?;
        // Bounded by the notes' size (MAX_NOTES_SIZE), so this fails only on a broken bound.
        let cpus = u32::try_from(note::cpu_count(&parsed))
            .map_err(|_| invalid("more than 2^32 CPU notes".to_owned()))?;
        let (info, vmcoreinfo_range) = match note::find_vmcoreinfo(&parsed) {
            Some(n) => (
                VmcoreInfo::parse(n.desc),
                Some((n.desc_offset as u64, n.desc.len() as u64)),
            ),
            None => (VmcoreInfo::default(), None),
        };
        check_physmem_bits(&segments, &info).map_err(invalid)?;
        Ok(Self {
            file,
            path: path.to_owned(),
            file_len,
            segments,
            notes,
            notes_offset: notes_header.offset,
            notes_header,
            info,
            vmcoreinfo_range,
            cpus,
            elf_flags: header.flags,
        })
    }

    /// The path the vmcore was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file (for mapping page windows).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Size of the vmcore file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The PT_LOAD segments, in file order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The raw PT_NOTE segment.
    pub fn notes(&self) -> &[u8] {
        &self.notes
    }

    /// File offset of the PT_NOTE segment.
    pub fn notes_offset(&self) -> u64 {
        self.notes_offset
    }

    /// The PT_NOTE program header.
    pub fn notes_header(&self) -> &ProgramHeader {
        &self.notes_header
    }

    /// VMCOREINFO (empty if the vmcore has none).
    pub fn info(&self) -> &VmcoreInfo {
        &self.info
    }

    /// Offset and size of the VMCOREINFO text within [`Vmcore::notes`].
    pub fn vmcoreinfo_range(&self) -> Option<(u64, u64)> {
        self.vmcoreinfo_range
    }

    /// Whether the ELF header carries the incomplete-dump flag (an interrupted `-E` dump).
    pub fn elf_incomplete(&self) -> bool {
        self.elf_flags & elf::EF_DUMP_INCOMPLETE != 0
    }

    /// Number of CPUs with register notes.
    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// Number of page frames up to the end of the highest segment (`max_mapnr` before sections
    /// are considered).
    pub fn max_pfn(&self) -> u64 {
        let max = self.segments.iter().map(|s| s.phys_end).max().unwrap_or(0);
        max.div_ceil(PAGE_SIZE)
    }

    /// The segment whose file-backed part holds `paddr` (the first in file order).
    pub fn segment_of(&self, paddr: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| s.phys_start <= paddr && paddr < s.file_phys_end())
    }

    /// Reads physical memory. Parts of a page inside a segment's memory but beyond its file
    /// data read as zeros, as makedumpfile's `readpage_elf` does; an address in no segment at
    /// all is an error.
    pub fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), VmcoreError> {
        let mut done = 0;
        while done < buf.len() {
            let addr = paddr + done as u64;
            let rest = &mut buf[done..];
            if let Some(segment) = self.segment_of(addr) {
                let len = rest.len().min(to_usize(segment.file_phys_end() - addr));
                let offset = segment.file_offset + (addr - segment.phys_start);
                self.file
                    .read_exact_at(&mut rest[..len], offset)
                    .map_err(|source| VmcoreError::Read {
                        offset,
                        len,
                        source,
                    })?;
                done += len;
            } else if let Some(segment) = self
                .segments
                .iter()
                .find(|s| s.phys_start <= addr && addr < s.phys_end)
            {
                let len = rest.len().min(to_usize(segment.phys_end - addr));
                rest[..len].fill(0);
                done += len;
            } else {
                return Err(VmcoreError::NotPresent(addr));
            }
        }
        Ok(())
    }
}

/// Rejects segments that reach beyond the physical address space the dead kernel declares
/// (`NUMBER(MAX_PHYSMEM_BITS)`): no such memory can exist, and a size taken at face value would
/// make the dump's bitmaps as large as that claim.
fn check_physmem_bits(segments: &[Segment], info: &VmcoreInfo) -> Result<(), String> {
    let Ok(Some(bits)) = info.number("MAX_PHYSMEM_BITS") else {
        return Ok(());
    };
    let Some(limit) = u32::try_from(bits)
        .ok()
        .filter(|b| (32..=52).contains(b))
        .map(|b| 1u64 << b)
    else {
        return Ok(());
    };
    match segments.iter().find(|s| s.phys_end > limit) {
        Some(s) => Err(format!(
            "PT_LOAD #{} (physical {:#x}-{:#x}) reaches beyond the dead kernel's \
             MAX_PHYSMEM_BITS={bits}",
            s.index, s.phys_start, s.phys_end
        )),
        None => Ok(()),
    }
}

/// Rejects overlapping segments, except for the kernel-text alias, which maps memory that a
/// RAM segment also covers (every x86_64 vmcore has one).
fn check_overlaps(segments: &[Segment]) -> Result<(), String> {
    let mut ram: Vec<&Segment> = segments.iter().filter(|s| !s.is_kernel_text()).collect();
    ram.sort_by_key(|s| s.phys_start);
    for pair in ram.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.phys_start < a.phys_end {
            return Err(format!(
                "PT_LOAD #{} (physical {:#x}-{:#x}) overlaps PT_LOAD #{} ({:#x}-{:#x})",
                a.index, a.phys_start, a.phys_end, b.index, b.phys_start, b.phys_end
            ));
        }
    }
    Ok(())
}

/// Opening synthetic vmcores, for the unit tests of this module and of `filter`.
#[cfg(test)]
pub(crate) mod testing {
    use rkdump_testkit::Builder;

    use super::{Vmcore, VmcoreError};

    /// Writes `bytes` to a temporary file and opens it as a vmcore (the file is unlinked when
    /// this returns; the open handle keeps its data).
    pub(crate) fn open(bytes: &[u8]) -> Result<Vmcore, VmcoreError> {
        let file = tempfile::NamedTempFile::new().expect("creating a temporary file");
        std::fs::write(file.path(), bytes).expect("writing the vmcore");
        Vmcore::open(file.path())
    }

    /// Builds `builder`'s vmcore and opens it, which must succeed.
    pub(crate) fn built(builder: &Builder) -> (Vec<u8>, Vmcore) {
        let bytes = builder.build();
        let vmcore = open(&bytes).expect("a synthetic vmcore opens");
        (bytes, vmcore)
    }
}

#[cfg(test)]
mod tests {
    use rkdump_testkit::elf::{self as tk, ProgramHeader};
    use rkdump_testkit::{Builder, Generation, KERNEL_PHYS, KERNEL_SIZE, PAGE};

    use super::testing::{built, open};
    use super::*;
    use crate::format::bytes::OutOfBounds;

    /// The `what` of an [`VmcoreError::Invalid`], or a panic naming what came instead.
    fn invalid(result: Result<Vmcore, VmcoreError>) -> String {
        match result {
            Err(VmcoreError::Invalid { what, .. }) => what,
            other => panic!("expected VmcoreError::Invalid, got {other:?}"),
        }
    }

    fn patch(bytes: &mut [u8], index: usize, edit: impl FnOnce(&mut ProgramHeader)) {
        let mut header = tk::program_headers(bytes)[index];
        edit(&mut header);
        tk::set_program_header(bytes, index, &header);
    }

    /// The segments, CPUs and VMCOREINFO are those the builder wrote: the kernel-text alias
    /// first, then RAM around the holes, at the file offsets the testkit's writer chose.
    #[test]
    fn a_synthetic_vmcore_opens_as_built() {
        let mut builder = Builder::new(Generation::V6_1);
        builder.cpus = 3;
        builder.holes = vec![3000..3100, 6144..7168];
        let (bytes, vmcore) = built(&builder);
        let headers = tk::program_headers(&bytes);
        let mut expected = vec![(builder.kernel_virt(), KERNEL_PHYS, KERNEL_SIZE)];
        for r in builder.ram() {
            let at = r.start * PAGE;
            expected.push((builder.page_offset() + at, at, (r.end - r.start) * PAGE));
        }
        assert_eq!(expected.len(), 4, "three RAM segments around two holes");
        let segments: Vec<Segment> = expected
            .iter()
            .enumerate()
            .map(|(i, &(virt_start, phys_start, size))| Segment {
                index: i + 1,
                phys_start,
                phys_end: phys_start + size,
                virt_start,
                file_offset: headers[i + 1].p_offset,
                file_size: size,
                flags_align: (7, 0),
            })
            .collect();
        assert_eq!(vmcore.segments(), &segments[..]);
        assert!(segments[0].is_kernel_text() && !segments[1].is_kernel_text());
        assert_eq!(vmcore.cpus(), 3);
        assert_eq!(vmcore.max_pfn(), builder.pages);
        assert_eq!(vmcore.file_len(), bytes.len() as u64);
        assert!(!vmcore.elf_incomplete());
        assert_eq!(vmcore.notes_offset(), 64 + 5 * 56);
        assert_eq!(
            vmcore.notes(),
            &bytes[64 + 5 * 56..][..vmcore.notes().len()]
        );
        assert_eq!(vmcore.info().os_release(), Some("6.1.0-synthetic"));
        let (at, len) = vmcore.vmcoreinfo_range().unwrap();
        let text = &vmcore.notes()[to_usize(at)..to_usize(at + len)];
        assert!(text.starts_with(b"OSRELEASE=6.1.0-synthetic\nPAGESIZE=4096\n"));
        assert!(text.ends_with(b"CRASHTIME=1764072000\n"));
        assert_eq!(vmcore.segment_of(3000 * PAGE - 1), Some(&segments[1]));
        assert_eq!(vmcore.segment_of(3000 * PAGE), None);
        assert_eq!(vmcore.segment_of(KERNEL_PHYS), Some(&segments[0]));
    }

    #[test]
    fn damaged_headers_are_refused_with_the_exact_error() {
        let good = Builder::new(Generation::V6_12).build();
        let phnum = tk::program_headers(&good).len();
        let edited = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = good.clone();
            edit(&mut bytes);
            open(&bytes)
        };

        let bad_magic = edited(&|b| b[1] = b'F');
        assert!(matches!(
            bad_magic,
            Err(VmcoreError::Elf {
                source: ElfError::BadMagic,
                ..
            })
        ));
        let elf32 = edited(&|b| b[4] = 1);
        assert!(matches!(
            elf32,
            Err(VmcoreError::Elf {
                source: ElfError::UnsupportedClass(1),
                ..
            })
        ));
        let aarch64 = edited(&|b| b[18..20].copy_from_slice(&183u16.to_le_bytes()));
        assert!(matches!(
            aarch64,
            Err(VmcoreError::Elf {
                source: ElfError::UnsupportedMachine(183),
                ..
            })
        ));
        let executable = edited(&|b| b[16..18].copy_from_slice(&2u16.to_le_bytes()));
        assert_eq!(invalid(executable), "ELF type 2 is not a core file");
        assert_eq!(
            invalid(open(&good[..40])),
            "truncated: needs 64 bytes at offset 0x0, file has 40 bytes"
        );
        assert_eq!(
            invalid(open(&good[..64 + 56])),
            format!(
                "truncated: needs {} bytes at offset 0x40, file has 120 bytes",
                phnum * 56
            )
        );

        let mut bytes = good.clone();
        patch(&mut bytes, 2, |h| h.p_memsz = h.p_filesz - 0x1000);
        assert_eq!(
            invalid(open(&bytes)),
            "PT_LOAD #2 has p_filesz 0x2000000 larger than p_memsz 0x1fff000"
        );

        let mut bytes = good.clone();
        patch(&mut bytes, 0, |h| h.p_type = tk::PT_NULL);
        assert_eq!(
            invalid(open(&bytes)),
            "no PT_NOTE segment (no VMCOREINFO, no CPU registers)"
        );

        let mut bytes = good.clone();
        for index in 1..phnum {
            patch(&mut bytes, index, |h| h.p_type = tk::PT_NULL);
        }
        assert_eq!(
            invalid(open(&bytes)),
            "no PT_LOAD segments: the file holds no memory"
        );

        let mut bytes = good.clone();
        patch(&mut bytes, 0, |h| h.p_filesz = 65 << 20);
        assert_eq!(
            invalid(open(&bytes)),
            format!("PT_NOTE segment of {} bytes is implausibly large", 65 << 20)
        );

        let mut bytes = good.clone();
        let len = bytes.len() as u64;
        patch(&mut bytes, 0, |h| h.p_offset = len - 100);
        let notes = tk::program_headers(&good)[0].p_filesz;
        assert_eq!(
            invalid(open(&bytes)),
            format!(
                "truncated: needs {notes} bytes at offset {:#x}, file has {len} bytes",
                len - 100
            )
        );
    }

    /// A file cut inside a PT_LOAD is refused naming that segment, its physical range and how
    /// far the file falls short; a file cut exactly at a segment's end is not.
    #[test]
    fn a_truncated_pt_load_is_named_with_its_range_and_the_file_size() {
        let mut builder = Builder::new(Generation::V6_1);
        builder.holes = std::iter::once(4096..4608).collect();
        let bytes = builder.build();
        let headers = tk::program_headers(&bytes);
        let last = headers[3];
        assert_eq!(last.p_paddr, 4608 * PAGE, "the RAM segment after the hole");
        let cut = to_usize(last.p_offset + 0x1234);
        assert_eq!(
            invalid(open(&bytes[..cut])),
            format!(
                "truncated: PT_LOAD #3 (physical 0x1200000-0x2000000) ends at file offset \
                 {:#x}, but the file has {cut:#x} bytes",
                last.p_offset + last.p_filesz
            )
        );
        // Cut between the last two segments: the last one is entirely missing.
        let cut = to_usize(last.p_offset);
        let error = invalid(open(&bytes[..cut]));
        assert!(error.starts_with("truncated: PT_LOAD #3 "), "{error}");
    }

    /// Notes cut short: a note that no longer fits in the PT_NOTE segment is reported at its
    /// own offset (here the VMCOREINFO note after the CPUs' notes) with the field that does not
    /// fit; a segment that ends exactly between two notes is fine, and then has no VMCOREINFO.
    #[test]
    fn notes_cut_short_name_the_note_that_no_longer_fits() {
        let builder = Builder::new(Generation::V6_6); // 2 CPUs
        let good = builder.build();
        let note_header = tk::program_headers(&good)[0];
        // Each CPU note: 12-byte header, "CORE\0" padded to 8, 336-byte prstatus.
        let cpu_notes = 2 * (12 + 8 + 336);
        let notes_at = to_usize(note_header.p_offset);
        let desc_len = u32::from_le_bytes(
            good[notes_at + cpu_notes + 4..][..4]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        assert_eq!(
            to_usize(note_header.p_filesz),
            cpu_notes + 12 + 12 + desc_len.next_multiple_of(4),
            "VMCOREINFO note: header, \"VMCOREINFO\\0\" padded to 12, text"
        );

        let mut bytes = good.clone();
        let cut = cpu_notes + 12 + 12 + desc_len / 2;
        patch(&mut bytes, 0, |h| h.p_filesz = cut as u64);
        match open(&bytes) {
            Err(VmcoreError::Notes {
                source: NoteError::Truncated { offset, source },
                ..
            }) => {
                assert_eq!(offset, cpu_notes);
                assert_eq!(
                    source,
                    OutOfBounds {
                        offset: cpu_notes + 24,
                        len: desc_len,
                        available: cut,
                    }
                );
            }
            other => panic!("expected a truncated note, got {other:?}"),
        }

        let mut bytes = good.clone();
        patch(&mut bytes, 0, |h| h.p_filesz = cpu_notes as u64);
        let vmcore = open(&bytes).unwrap();
        assert_eq!(vmcore.cpus(), 2);
        assert_eq!(vmcore.vmcoreinfo_range(), None);
        assert_eq!(vmcore.info(), &VmcoreInfo::default());
    }

    /// `e_phnum = PN_XNUM`: the real count comes from `sh_info` of section header 0.
    #[test]
    fn the_extended_program_header_count_is_read_from_section_zero() {
        let good = Builder::new(Generation::V6_1).build();
        let expected = open(&good).unwrap().segments().to_vec();
        let phnum = tk::program_headers(&good).len();
        let mut bytes = good.clone();
        let mut header = tk::FileHeader::from_bytes(&bytes);
        header.e_phnum = tk::PN_XNUM;
        header.e_shoff = bytes.len() as u64;
        header.e_shnum = 1;
        bytes[..64].copy_from_slice(&header.to_bytes());
        let mut section0 = [0u8; tk::SECTION_HEADER_SIZE];
        section0[44..48].copy_from_slice(&u32::try_from(phnum).unwrap().to_le_bytes()); // sh_info
        bytes.extend_from_slice(&section0);
        assert_eq!(open(&bytes).unwrap().segments(), &expected[..]);
    }

    /// Physical reads switch segments where one ends (the kernel-text alias, first in file
    /// order, into RAM: the same bytes), fail at the first byte of a hole, and read zeros past
    /// `p_filesz` up to `p_memsz`.
    #[test]
    fn physical_reads_cross_segments_and_stop_at_holes() {
        let mut builder = Builder::new(Generation::V6_12);
        builder.holes = std::iter::once(3000..3010).collect();
        let mut bytes = builder.build();
        let headers = tk::program_headers(&bytes);
        // The last RAM segment gets 2.5 pages of memory that are not in the file.
        let last = headers.len() - 1;
        patch(&mut bytes, last, |h| h.p_memsz += 0x2800);
        let vmcore = open(&bytes).unwrap();
        let file_bytes = |phys: u64, len: usize| {
            let h = headers[1..]
                .iter()
                .rev() // RAM, not the kernel-text alias
                .find(|h| h.p_paddr <= phys && phys < h.p_paddr + h.p_filesz)
                .unwrap();
            let at = to_usize(h.p_offset + phys - h.p_paddr);
            bytes[at..at + len].to_vec()
        };

        let mut buf = vec![0u8; 0x3000];
        let text_end = KERNEL_PHYS + KERNEL_SIZE;
        assert_eq!(vmcore.segment_of(text_end - 1).unwrap().index, 1);
        vmcore.read_phys(text_end - 0x1800, &mut buf).unwrap();
        assert!(buf == file_bytes(text_end - 0x1800, 0x3000));
        assert!(buf.iter().any(|&b| b != 0));

        let before_hole = 3000 * PAGE - 8;
        assert!(matches!(
            vmcore.read_phys(before_hole, &mut [0u8; 16]),
            Err(VmcoreError::NotPresent(a)) if a == 3000 * PAGE
        ));
        let mut eight = [0u8; 8];
        vmcore.read_phys(before_hole, &mut eight).unwrap();
        assert_eq!(eight.to_vec(), file_bytes(before_hole, 8));
        vmcore.read_phys(3010 * PAGE, &mut eight).unwrap();
        assert_eq!(eight.to_vec(), file_bytes(3010 * PAGE, 8));

        let end_of_file_data = builder.pages * PAGE;
        let mut tail = vec![0xffu8; 0x2000];
        vmcore
            .read_phys(end_of_file_data - 0x1000, &mut tail)
            .unwrap();
        assert!(tail[..0x1000] == file_bytes(end_of_file_data - 0x1000, 0x1000)[..]);
        assert!(
            tail[0x1000..].iter().all(|&b| b == 0),
            "zeros past p_filesz"
        );
        let end_of_memory = end_of_file_data + 0x2800;
        assert!(matches!(
            vmcore.read_phys(end_of_memory - 4, &mut eight),
            Err(VmcoreError::NotPresent(a)) if a == end_of_memory
        ));
        assert_eq!(vmcore.max_pfn(), builder.pages + 3, "a partial page counts");
    }
}
