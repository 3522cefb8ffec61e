//! ELF64 core files: the layout of `/proc/vmcore` and of rkdump's `-E` dumps.
//!
//! Only what a crash dump needs: the file header, the program header table (including the
//! `PN_XNUM` extension for more than 65534 segments, whose real count lives in section header 0),
//! and encoders for writing the same structures back. Only little-endian x86_64 ELF64 is
//! accepted; anything else is rejected with the field that says so.

use super::bytes::{self, OutOfBounds};

/// Size of an ELF64 file header.
pub const HEADER_SIZE: usize = EHSIZE as usize;
/// Size of one ELF64 program header.
pub const PROGRAM_HEADER_SIZE: usize = PHENTSIZE as usize;
/// Size of one ELF64 section header.
pub const SECTION_HEADER_SIZE: usize = SHENTSIZE as usize;
/// [`HEADER_SIZE`] as `e_ehsize` holds it.
const EHSIZE: u16 = 64;
/// [`PROGRAM_HEADER_SIZE`] as `e_phentsize` holds it.
const PHENTSIZE: u16 = 56;
/// [`SECTION_HEADER_SIZE`] as `e_shentsize` holds it.
const SHENTSIZE: u16 = 64;
/// `e_type` of a core file.
pub const ET_CORE: u16 = 4;
/// `e_machine` of x86_64.
pub const EM_X86_64: u16 = 62;
/// Program header type of a loadable segment (a range of the dead machine's memory).
pub const PT_LOAD: u32 = 1;
/// Program header type of the notes segment.
pub const PT_NOTE: u32 = 4;
/// `e_phnum` value meaning "the count is in section header 0's `sh_info`".
pub const PN_XNUM: u16 = 0xffff;
/// `e_flags` bit rkdump and makedumpfile set while an ELF dump is incomplete.
pub const EF_DUMP_INCOMPLETE: u32 = 1;

/// Why bytes are not a supported ELF core file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// The file does not start with `\x7fELF`.
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    /// Only 64-bit ELF is supported.
    #[error("unsupported ELF class {0} (only ELF64 is supported)")]
    UnsupportedClass(u8),
    /// Only little-endian ELF is supported.
    #[error("unsupported ELF data encoding {0} (only little-endian is supported)")]
    UnsupportedEncoding(u8),
    /// Only x86_64 dumps are supported.
    #[error("unsupported ELF machine {0} (only x86_64 is supported)")]
    UnsupportedMachine(u16),
    /// The program header entry size is not the ELF64 one.
    #[error("program header entry size is {0}, expected 56")]
    BadProgramHeaderSize(u16),
    /// A structure is cut short.
    #[error("truncated ELF structure: {0}")]
    Truncated(#[from] OutOfBounds),
}

/// The fields of an ELF64 file header that a core file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileHeader {
    /// Object file type (`ET_CORE` for dumps).
    pub e_type: u16,
    /// Target machine (`EM_X86_64`).
    pub machine: u16,
    /// Flags (`EF_DUMP_INCOMPLETE` in incomplete dumps).
    pub flags: u32,
    /// File offset of the program header table.
    pub phoff: u64,
    /// File offset of the section header table (0 if none).
    pub shoff: u64,
    /// Raw program header count; `PN_XNUM` means the count is in section header 0.
    pub phnum: u16,
    /// Number of section headers.
    pub shnum: u16,
}

impl FileHeader {
    /// Parses and validates the first [`HEADER_SIZE`] bytes of a file.
    pub fn parse(bytes: &[u8]) -> Result<Self, ElfError> {
        let ident = bytes::slice(bytes, 0, 16)?;
        if &ident[..4] != b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        if ident[4] != 2 {
            return Err(ElfError::UnsupportedClass(ident[4]));
        }
        if ident[5] != 1 {
            return Err(ElfError::UnsupportedEncoding(ident[5]));
        }
        let machine = bytes::u16_le(bytes, 18)?;
        if machine != EM_X86_64 {
            return Err(ElfError::UnsupportedMachine(machine));
        }
        let phentsize = bytes::u16_le(bytes, 54)?;
        if phentsize as usize != PROGRAM_HEADER_SIZE {
            return Err(ElfError::BadProgramHeaderSize(phentsize));
        }
        Ok(Self {
            e_type: bytes::u16_le(bytes, 16)?,
            machine,
            flags: bytes::u32_le(bytes, 48)?,
            phoff: bytes::u64_le(bytes, 32)?,
            shoff: bytes::u64_le(bytes, 40)?,
            phnum: bytes::u16_le(bytes, 56)?,
            shnum: bytes::u16_le(bytes, 60)?,
        })
    }

    /// Encodes the header of a core file with `phnum` program headers following it directly.
    ///
    /// From `PN_XNUM` program headers on, the count goes into a single section header placed by
    /// the caller at `shoff` (see [`encode_extended_count_section`]).
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        out[16..18].copy_from_slice(&self.e_type.to_le_bytes());
        out[18..20].copy_from_slice(&self.machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
        out[32..40].copy_from_slice(&self.phoff.to_le_bytes());
        out[40..48].copy_from_slice(&self.shoff.to_le_bytes());
        out[48..52].copy_from_slice(&self.flags.to_le_bytes());
        out[52..54].copy_from_slice(&EHSIZE.to_le_bytes());
        out[54..56].copy_from_slice(&PHENTSIZE.to_le_bytes());
        out[56..58].copy_from_slice(&self.phnum.to_le_bytes());
        let shentsize = if self.shnum > 0 { SHENTSIZE } else { 0 };
        out[58..60].copy_from_slice(&shentsize.to_le_bytes());
        out[60..62].copy_from_slice(&self.shnum.to_le_bytes());
        out
    }
}

/// Reads the real program header count from section header 0 (`sh_info`), for `PN_XNUM` files.
pub fn extended_program_header_count(section0: &[u8]) -> Result<u32, ElfError> {
    Ok(bytes::u32_le(section0, 44)?)
}

/// Encodes section header 0 carrying a program header count of `PN_XNUM` or more.
pub fn encode_extended_count_section(phnum: u32) -> [u8; SECTION_HEADER_SIZE] {
    let mut out = [0u8; SECTION_HEADER_SIZE];
    out[44..48].copy_from_slice(&phnum.to_le_bytes());
    out
}

/// One ELF64 program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramHeader {
    /// Segment type (`PT_LOAD`, `PT_NOTE`, ...).
    pub p_type: u32,
    /// Segment permission flags.
    pub flags: u32,
    /// File offset of the segment's data.
    pub offset: u64,
    /// Virtual address of the segment.
    pub vaddr: u64,
    /// Physical address of the segment.
    pub paddr: u64,
    /// Bytes of the segment present in the file.
    pub filesz: u64,
    /// Bytes of the segment in memory (`filesz` plus a tail that is not in the file).
    pub memsz: u64,
    /// Alignment.
    pub align: u64,
}

impl ProgramHeader {
    /// Parses one program header.
    pub fn parse(bytes: &[u8]) -> Result<Self, ElfError> {
        Ok(Self {
            p_type: bytes::u32_le(bytes, 0)?,
            flags: bytes::u32_le(bytes, 4)?,
            offset: bytes::u64_le(bytes, 8)?,
            vaddr: bytes::u64_le(bytes, 16)?,
            paddr: bytes::u64_le(bytes, 24)?,
            filesz: bytes::u64_le(bytes, 32)?,
            memsz: bytes::u64_le(bytes, 40)?,
            align: bytes::u64_le(bytes, 48)?,
        })
    }

    /// Parses a table of `count` consecutive program headers.
    pub fn parse_table(bytes: &[u8], count: usize) -> Result<Vec<Self>, ElfError> {
        let table = bytes::slice(bytes, 0, count.saturating_mul(PROGRAM_HEADER_SIZE))?;
        table
            .chunks_exact(PROGRAM_HEADER_SIZE)
            .map(Self::parse)
            .collect()
    }

    /// Encodes the program header.
    pub fn encode(&self) -> [u8; PROGRAM_HEADER_SIZE] {
        let mut out = [0u8; PROGRAM_HEADER_SIZE];
        out[0..4].copy_from_slice(&self.p_type.to_le_bytes());
        out[4..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.vaddr.to_le_bytes());
        out[24..32].copy_from_slice(&self.paddr.to_le_bytes());
        out[32..40].copy_from_slice(&self.filesz.to_le_bytes());
        out[40..48].copy_from_slice(&self.memsz.to_le_bytes());
        out[48..56].copy_from_slice(&self.align.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn core_header() -> FileHeader {
        FileHeader {
            e_type: ET_CORE,
            machine: EM_X86_64,
            flags: 0,
            phoff: 64,
            shoff: 0,
            phnum: 3,
            shnum: 0,
        }
    }

    #[test]
    fn header_round_trips() {
        let header = core_header();
        assert_eq!(FileHeader::parse(&header.encode()), Ok(header));
    }

    #[test]
    fn rejects_what_is_not_x86_64_elf64_le() {
        let good = core_header().encode();
        let mut bad = good;
        bad[0] = b'X';
        assert_eq!(FileHeader::parse(&bad), Err(ElfError::BadMagic));
        let mut bad = good;
        bad[4] = 1;
        assert_eq!(FileHeader::parse(&bad), Err(ElfError::UnsupportedClass(1)));
        let mut bad = good;
        bad[5] = 2;
        assert_eq!(
            FileHeader::parse(&bad),
            Err(ElfError::UnsupportedEncoding(2))
        );
        let mut bad = good;
        bad[18] = 3;
        assert_eq!(
            FileHeader::parse(&bad),
            Err(ElfError::UnsupportedMachine(3))
        );
        assert!(matches!(
            FileHeader::parse(&good[..40]),
            Err(ElfError::Truncated(_))
        ));
    }

    #[test]
    fn extended_count_round_trips() {
        let section = encode_extended_count_section(70_000);
        assert_eq!(extended_program_header_count(&section), Ok(70_000));
    }

    proptest! {
        #[test]
        fn program_headers_round_trip(fields in any::<(u32, u32, [u64; 6])>()) {
            let (p_type, flags, [offset, vaddr, paddr, filesz, memsz, align]) = fields;
            let header = ProgramHeader { p_type, flags, offset, vaddr, paddr, filesz, memsz, align };
            prop_assert_eq!(ProgramHeader::parse(&header.encode()), Ok(header));
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FileHeader::parse(&bytes);
            let _ = ProgramHeader::parse_table(&bytes, 4);
        }
    }
}
