//! A minimal ELF64 core-file writer (and reader of its own headers), written from the ELF
//! specification (System V gABI, "ELF-64 Object File Format" 1.5) rather than shared with rkdump.
//!
//! Only little-endian x86_64 core files: the file header, the program header table and ELF
//! notes. [`program_headers`] and [`set_program_header`] read and patch the table of a file
//! already written, which is how tests locate segments and damage vmcores on purpose.

use crate::to_usize;

/// Size of the ELF64 file header (`e_ehsize`).
pub const FILE_HEADER_SIZE: usize = EHSIZE as usize;
/// Size of one ELF64 program header (`e_phentsize`).
pub const PROGRAM_HEADER_SIZE: usize = PHENTSIZE as usize;
/// Size of one ELF64 section header (`e_shentsize`).
pub const SECTION_HEADER_SIZE: usize = SHENTSIZE as usize;
/// [`FILE_HEADER_SIZE`] as `e_ehsize` holds it.
const EHSIZE: u16 = 64;
/// [`PROGRAM_HEADER_SIZE`] as `e_phentsize` holds it.
const PHENTSIZE: u16 = 56;
/// [`SECTION_HEADER_SIZE`] as `e_shentsize` holds it.
const SHENTSIZE: u16 = 64;
/// `e_type` of a core file.
pub const ET_CORE: u16 = 4;
/// `e_machine` of AMD x86-64.
pub const EM_X86_64: u16 = 62;
/// `p_type` of an unused program header entry.
pub const PT_NULL: u32 = 0;
/// `p_type` of a loadable segment (in a core file: a range of memory).
pub const PT_LOAD: u32 = 1;
/// `p_type` of a notes segment.
pub const PT_NOTE: u32 = 4;
/// `e_phnum` meaning "the real count is in `sh_info` of section header 0".
pub const PN_XNUM: u16 = 0xffff;
/// Note type of a CPU's `struct elf_prstatus`.
pub const NT_PRSTATUS: u32 = 1;
/// Size of x86_64's `struct elf_prstatus`.
pub const PRSTATUS_SIZE: usize = 336;

/// The fields of an ELF64 file header a core file sets (the rest are fixed or zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// `e_type`.
    pub e_type: u16,
    /// `e_machine`.
    pub e_machine: u16,
    /// `e_flags`.
    pub e_flags: u32,
    /// `e_phoff`: file offset of the program header table.
    pub e_phoff: u64,
    /// `e_shoff`: file offset of the section header table (0: none).
    pub e_shoff: u64,
    /// `e_phnum`: program header count, or [`PN_XNUM`].
    pub e_phnum: u16,
    /// `e_shnum`: section header count.
    pub e_shnum: u16,
}

impl FileHeader {
    /// An x86_64 core file header with `phnum` program headers right after it.
    pub fn core(phnum: u16) -> Self {
        Self {
            e_type: ET_CORE,
            e_machine: EM_X86_64,
            e_flags: 0,
            e_phoff: FILE_HEADER_SIZE as u64,
            e_shoff: 0,
            e_phnum: phnum,
            e_shnum: 0,
        }
    }

    /// The header's 64 bytes: `e_ident` is `\x7fELF`, ELFCLASS64, ELFDATA2LSB, EV_CURRENT,
    /// ELFOSABI_NONE; `e_entry` and `e_shstrndx` are 0.
    pub fn to_bytes(&self) -> [u8; FILE_HEADER_SIZE] {
        let mut out = [0u8; FILE_HEADER_SIZE];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // EI_CLASS: ELFCLASS64
        out[5] = 1; // EI_DATA: ELFDATA2LSB
        out[6] = 1; // EI_VERSION: EV_CURRENT
        put(&mut out, 16, &self.e_type.to_le_bytes());
        put(&mut out, 18, &self.e_machine.to_le_bytes());
        put(&mut out, 20, &1u32.to_le_bytes()); // e_version
        put(&mut out, 32, &self.e_phoff.to_le_bytes());
        put(&mut out, 40, &self.e_shoff.to_le_bytes());
        put(&mut out, 48, &self.e_flags.to_le_bytes());
        put(&mut out, 52, &EHSIZE.to_le_bytes());
        put(&mut out, 54, &PHENTSIZE.to_le_bytes());
        put(&mut out, 56, &self.e_phnum.to_le_bytes());
        let shentsize = if self.e_shnum > 0 { SHENTSIZE } else { 0 };
        put(&mut out, 58, &shentsize.to_le_bytes());
        put(&mut out, 60, &self.e_shnum.to_le_bytes());
        out
    }

    /// Reads the header at the start of `file` (no validation: tests feed it their own files).
    pub fn from_bytes(file: &[u8]) -> Self {
        Self {
            e_type: u16_at(file, 16),
            e_machine: u16_at(file, 18),
            e_flags: u32_at(file, 48),
            e_phoff: u64_at(file, 32),
            e_shoff: u64_at(file, 40),
            e_phnum: u16_at(file, 56),
            e_shnum: u16_at(file, 60),
        }
    }
}

/// One ELF64 program header (`Elf64_Phdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramHeader {
    /// `p_type`.
    pub p_type: u32,
    /// `p_flags` (`PF_X` 1, `PF_W` 2, `PF_R` 4).
    pub p_flags: u32,
    /// `p_offset`: file offset of the segment's data.
    pub p_offset: u64,
    /// `p_vaddr`.
    pub p_vaddr: u64,
    /// `p_paddr`.
    pub p_paddr: u64,
    /// `p_filesz`: bytes in the file.
    pub p_filesz: u64,
    /// `p_memsz`: bytes in memory.
    pub p_memsz: u64,
    /// `p_align`.
    pub p_align: u64,
}

impl ProgramHeader {
    /// The header's 56 bytes.
    pub fn to_bytes(&self) -> [u8; PROGRAM_HEADER_SIZE] {
        let mut out = [0u8; PROGRAM_HEADER_SIZE];
        put(&mut out, 0, &self.p_type.to_le_bytes());
        put(&mut out, 4, &self.p_flags.to_le_bytes());
        put(&mut out, 8, &self.p_offset.to_le_bytes());
        put(&mut out, 16, &self.p_vaddr.to_le_bytes());
        put(&mut out, 24, &self.p_paddr.to_le_bytes());
        put(&mut out, 32, &self.p_filesz.to_le_bytes());
        put(&mut out, 40, &self.p_memsz.to_le_bytes());
        put(&mut out, 48, &self.p_align.to_le_bytes());
        out
    }

    /// Reads a header from its 56 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            p_type: u32_at(bytes, 0),
            p_flags: u32_at(bytes, 4),
            p_offset: u64_at(bytes, 8),
            p_vaddr: u64_at(bytes, 16),
            p_paddr: u64_at(bytes, 24),
            p_filesz: u64_at(bytes, 32),
            p_memsz: u64_at(bytes, 40),
            p_align: u64_at(bytes, 48),
        }
    }
}

/// One ELF note (`Elf64_Nhdr`, then the name with its NUL and the descriptor, each padded to 4
/// bytes; x86_64 cores use 4-byte note alignment).
pub fn note(name: &[u8], note_type: u32, desc: &[u8]) -> Vec<u8> {
    let namesz = u32::try_from(name.len() + 1).expect("note name fits in u32");
    let descsz = u32::try_from(desc.len()).expect("note descriptor fits in u32");
    let mut out = Vec::new();
    out.extend_from_slice(&namesz.to_le_bytes());
    out.extend_from_slice(&descsz.to_le_bytes());
    out.extend_from_slice(&note_type.to_le_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// One memory segment of a core file: `data` is the memory at `paddr`, mapped at `vaddr`.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// The segment's bytes (`p_filesz` = `p_memsz` = their length).
    pub data: &'a [u8],
}

/// An x86_64 core file: the header, the program headers (PT_NOTE first, then one PT_LOAD per
/// `loads` entry, `p_flags` RWX, `p_align` 0), the notes right after the table, and the
/// segments' data back to back from the next multiple of `data_align` on.
pub fn core_file(notes: &[u8], loads: &[Load<'_>], data_align: u64) -> Vec<u8> {
    let phnum = 1 + loads.len();
    let notes_at = (FILE_HEADER_SIZE + phnum * PROGRAM_HEADER_SIZE) as u64;
    let mut data_at = (notes_at + notes.len() as u64).next_multiple_of(data_align);
    let mut headers = vec![ProgramHeader {
        p_type: PT_NOTE,
        p_offset: notes_at,
        p_filesz: notes.len() as u64,
        p_memsz: notes.len() as u64,
        ..ProgramHeader::default()
    }];
    for load in loads {
        let size = load.data.len() as u64;
        headers.push(ProgramHeader {
            p_type: PT_LOAD,
            p_flags: 7,
            p_offset: data_at,
            p_vaddr: load.vaddr,
            p_paddr: load.paddr,
            p_filesz: size,
            p_memsz: size,
            p_align: 0,
        });
        data_at += size;
    }
    let mut out = vec![0u8; to_usize(data_at)];
    let phnum = u16::try_from(phnum).expect("fewer than 65535 program headers");
    put(&mut out, 0, &FileHeader::core(phnum).to_bytes());
    for (i, header) in headers.iter().enumerate() {
        put(
            &mut out,
            FILE_HEADER_SIZE + i * PROGRAM_HEADER_SIZE,
            &header.to_bytes(),
        );
    }
    put(&mut out, to_usize(notes_at), notes);
    for (header, load) in headers[1..].iter().zip(loads) {
        put(&mut out, to_usize(header.p_offset), load.data);
    }
    out
}

/// The program header table of `file` (`e_phnum` entries at `e_phoff`).
pub fn program_headers(file: &[u8]) -> Vec<ProgramHeader> {
    let header = FileHeader::from_bytes(file);
    (0..usize::from(header.e_phnum))
        .map(|i| {
            let at = to_usize(header.e_phoff) + i * PROGRAM_HEADER_SIZE;
            ProgramHeader::from_bytes(&file[at..at + PROGRAM_HEADER_SIZE])
        })
        .collect()
}

/// Overwrites program header `index` of `file`.
pub fn set_program_header(file: &mut [u8], index: usize, header: &ProgramHeader) {
    let at = to_usize(FileHeader::from_bytes(file).e_phoff) + index * PROGRAM_HEADER_SIZE;
    put(file, at, &header.to_bytes());
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_padded_to_four_bytes() {
        let n = note(b"CORE", NT_PRSTATUS, &[1, 2, 3]);
        // namesz 5 ("CORE\0"), descsz 3, type 1; name padded to 8, desc to 4.
        assert_eq!(&n[..12], &[5, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&n[12..20], b"CORE\0\0\0\0");
        assert_eq!(&n[20..], &[1, 2, 3, 0]);
    }

    #[test]
    fn a_core_file_reads_back() {
        let data = [0xabu8; 8192];
        let notes = note(b"VMCOREINFO", 0, b"PAGESIZE=4096\n");
        let file = core_file(
            &notes,
            &[Load {
                vaddr: 0xffff_8880_0000_0000,
                paddr: 0,
                data: &data,
            }],
            4096,
        );
        assert_eq!(FileHeader::from_bytes(&file), FileHeader::core(2));
        let headers = program_headers(&file);
        assert_eq!(headers[0].p_type, PT_NOTE);
        assert_eq!(headers[0].p_offset, 64 + 2 * 56);
        assert_eq!(headers[1].p_offset, 4096);
        assert_eq!(file.len(), 4096 + 8192);
        let at = to_usize(headers[0].p_offset);
        assert_eq!(&file[at..at + notes.len()], &notes[..]);
    }
}
