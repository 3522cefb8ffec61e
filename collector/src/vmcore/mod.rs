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
    cpus: usize,
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
        let notes = read(notes_header.offset, notes_header.filesz as usize)?;
        let parsed = note::parse(&notes).map_err(|source| VmcoreError::Notes {
            path: path.to_owned(),
            source,
        })?;
        let cpus = note::cpu_count(&parsed);
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
    pub fn cpus(&self) -> usize {
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
                let len = rest.len().min((segment.file_phys_end() - addr) as usize);
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
                let len = rest.len().min((segment.phys_end - addr) as usize);
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
