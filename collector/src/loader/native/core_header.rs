//! The ELF64 core header the capture kernel reads through `elfcorehdr=`: the layout of the dead
//! kernel's `/proc/vmcore`.
//!
//! Built as the kernel's `crash_prepare_elf64_headers` (arch/x86/kernel/crash.c,
//! kernel/crash_core.c) and kexec-tools' `crash_create_elf64_headers` build it: the ELF header,
//! then one `PT_NOTE` per CPU (its `crash_notes` buffer), one `PT_NOTE` for VMCOREINFO, one
//! `PT_LOAD` for the kernel image (`_text.._end` at its `__START_KERNEL_map` address) and one
//! `PT_LOAD` per System RAM range outside the crash reservations and the low 1 MiB (virtual
//! address in the direct map). Notes have `p_offset = p_paddr`, `p_vaddr = 0`; loads have
//! `p_offset = p_paddr`; the capture kernel rewrites the offsets for `/proc/vmcore`.
//!
//! Where the kernel image and the direct map are comes from `/proc/kcore`'s program headers
//! ([`KernelMap::from_kcore`]), never from `/proc/kallsyms`, so it works with
//! `kernel.kptr_restrict=2` and wherever KASLR put the text in its 1 GiB window.

use crate::format::bytes::{self, to_usize};
use crate::format::elf::{self, ElfError, FileHeader, ProgramHeader};

use super::iomem::Range;

/// `__START_KERNEL_map`: the kernel image's virtual window starts here...
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// ...and spans `KERNEL_IMAGE_SIZE` (1 GiB with KASLR) bytes.
const KERNEL_IMAGE_SIZE: u64 = 1 << 30;
/// kexec-tools aligns the text's start down to this (`X86_64_KERN_VADDR_ALIGN`).
const TEXT_ALIGN: u64 = 1 << 20;
/// The direct map is aligned to a PUD (1 GiB); kexec-tools masks kcore addresses with it.
const PUD_SIZE: u64 = 1 << 30;
/// Lowest direct-map address of 4-level paging; below it lies 5-level's.
const FOUR_LEVEL_PAGE_OFFSET_MIN: u64 = 0xffff_8000_0000_0000;
/// The header is at least this large in memory (kexec-tools bloats it to 16 KiB).
pub(crate) const MIN_MEMSZ: u64 = 16 << 10;
/// Alignment of the header's size and address (`ELF_CORE_HEADER_ALIGN`).
pub(crate) const ALIGN: u64 = 1024;
/// `PF_R | PF_W | PF_X`.
const PF_RWX: u32 = 7;

/// Why the core header cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CoreHeaderError {
    /// `/proc/kcore` does not start with a readable ELF header and program header table.
    #[error("not an ELF core: {0}")]
    Elf(#[from] ElfError),
    /// No `PT_LOAD` lies within `[__START_KERNEL_map, +1 GiB)`.
    #[error("no PT_LOAD of the kernel image within [{START_KERNEL_MAP:#x}, +1 GiB)")]
    NoText,
    /// No `PT_LOAD` of the direct map (one with a physical address).
    #[error("no PT_LOAD of the direct map (with a physical address)")]
    NoDirectMap,
    /// More program headers than ELF64 without section headers can count.
    #[error("{0} program headers are more than a core header can hold")]
    TooManyHeaders(usize),
}

/// Where the running kernel's image and direct map are, from `/proc/kcore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelMap {
    /// Virtual address of the kernel image's `PT_LOAD` (`_text`, 1 MiB aligned down).
    pub text_vaddr: u64,
    /// Its size: kcore maps `_text.._end`, the kernel's own text extent; page-aligned.
    pub text_size: u64,
    /// The direct map's base (`page_offset_base`, randomized by KASLR).
    pub page_offset: u64,
}

impl KernelMap {
    /// Reads the map from the start of `/proc/kcore` (its ELF header and program headers).
    ///
    /// The text is the `PT_LOAD` lying wholly in `[__START_KERNEL_map, +KERNEL_IMAGE_SIZE)`
    /// (kexec-tools' fallback with the 1 GiB window of KASLR instead of its 512 MiB); the page
    /// offset is the lowest `PT_LOAD` address masked to 1 GiB, as kexec-tools takes it,
    /// considering only direct-map headers (those with a physical address).
    pub fn from_kcore(kcore: &[u8]) -> Result<Self, CoreHeaderError> {
        let header = FileHeader::parse(kcore)?;
        let table = kcore
            .get(to_usize(header.phoff)..)
            .ok_or(ElfError::Truncated(bytes::OutOfBounds {
                offset: to_usize(header.phoff),
                len: 0,
                available: kcore.len(),
            }))?;
        let phdrs = ProgramHeader::parse_table(table, usize::from(header.phnum))?;
        let loads = phdrs.iter().filter(|p| p.p_type == elf::PT_LOAD);
        let text = loads
            .clone()
            .find(|p| {
                p.vaddr >= START_KERNEL_MAP
                    && p.vaddr
                        .checked_add(p.memsz)
                        .is_some_and(|end| end <= START_KERNEL_MAP + KERNEL_IMAGE_SIZE)
            })
            .ok_or(CoreHeaderError::NoText)?;
        let page_offset = loads
            .filter(|p| p.paddr != u64::MAX && p.vaddr < START_KERNEL_MAP)
            .map(|p| p.vaddr.wrapping_sub(p.paddr) & !(PUD_SIZE - 1))
            .min()
            .ok_or(CoreHeaderError::NoDirectMap)?;
        let text_vaddr = text.vaddr & !(TEXT_ALIGN - 1);
        let text_size = (text.vaddr + text.memsz - text_vaddr).next_multiple_of(4096);
        Ok(Self {
            text_vaddr,
            text_size,
            page_offset,
        })
    }

    /// Whether the running kernel uses 5-level paging: its direct map lies below 4-level's.
    pub fn five_level(&self) -> bool {
        self.page_offset < FOUR_LEVEL_PAGE_OFFSET_MIN
    }
}

/// One note buffer of the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoteBuffer {
    /// Physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What the header describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CoreLayout {
    /// Per-CPU `crash_notes`, in CPU order.
    pub cpu_notes: Vec<NoteBuffer>,
    /// The VMCOREINFO note, if the kernel exports one.
    pub vmcoreinfo: Option<NoteBuffer>,
    /// The kernel image's map.
    pub kernel: KernelMap,
    /// Physical address of `_text` (`Kernel code` in `/proc/iomem`).
    pub text_paddr: u64,
    /// The RAM to dump: System RAM minus the crash reservations and the low 1 MiB.
    pub ram: Vec<Range>,
}

/// The RAM of the dead kernel the header lists: `system_ram` minus `crash` and `[0, 1 MiB)`,
/// as `elf_header_exclude_ranges` of arch/x86/kernel/crash.c has it.
pub(crate) fn dump_ranges(system_ram: &[Range], crash: &[Range]) -> Vec<Range> {
    let low = Range {
        start: 0,
        end: 1 << 20,
    };
    crash
        .iter()
        .fold(super::iomem::subtract(system_ram, low), |ranges, hole| {
            super::iomem::subtract(&ranges, *hole)
        })
}

/// Encodes the header; its length is a multiple of [`ALIGN`].
pub(crate) fn build(layout: &CoreLayout) -> Result<Vec<u8>, CoreHeaderError> {
    let mut phdrs = Vec::new();
    for note in layout.cpu_notes.iter().chain(&layout.vmcoreinfo) {
        phdrs.push(ProgramHeader {
            p_type: elf::PT_NOTE,
            flags: 0,
            offset: note.addr,
            vaddr: 0,
            paddr: note.addr,
            filesz: note.size,
            memsz: note.size,
            align: 0,
        });
    }
    phdrs.push(ProgramHeader {
        p_type: elf::PT_LOAD,
        flags: PF_RWX,
        offset: layout.text_paddr,
        vaddr: layout.kernel.text_vaddr,
        paddr: layout.text_paddr,
        filesz: layout.kernel.text_size,
        memsz: layout.kernel.text_size,
        align: 0,
    });
    for range in &layout.ram {
        phdrs.push(ProgramHeader {
            p_type: elf::PT_LOAD,
            flags: PF_RWX,
            offset: range.start,
            vaddr: layout.kernel.page_offset.wrapping_add(range.start),
            paddr: range.start,
            filesz: range.len(),
            memsz: range.len(),
            align: 0,
        });
    }
    let phnum = u16::try_from(phdrs.len())
        .ok()
        .filter(|&n| n < elf::PN_XNUM)
        .ok_or(CoreHeaderError::TooManyHeaders(phdrs.len()))?;
    let header = FileHeader {
        e_type: elf::ET_CORE,
        machine: elf::EM_X86_64,
        flags: 0,
        phoff: elf::HEADER_SIZE as u64,
        shoff: 0,
        phnum,
        shnum: 0,
    };
    let mut out = header.encode().to_vec();
    for phdr in &phdrs {
        out.extend_from_slice(&phdr.encode());
    }
    out.resize(out.len().next_multiple_of(to_usize(ALIGN)), 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Inputs recorded from the lab's Debian 6.1 cloud guests (SeaBIOS and OVMF, 2 CPUs, 1 GiB,
    //! `crashkernel=256M`, KASLR on): `/proc/kcore`'s ELF and program headers, `/proc/iomem`,
    //! the CPUs' `crash_notes` and `/sys/kernel/vmcoreinfo`. Expected values come from the
    //! kernel itself: in the same boot, `kexec -s -p` (kexec_file_load, the kernel's
    //! `prepare_elf_headers`) loaded a capture kernel, the guest crashed, and the capture
    //! kernel's `/proc/vmcore` program headers were recorded (`reference/vmcore-phdrs`: the
    //! notes merged into one, the loads as the kernel described them). The notes are checked
    //! against kexec-tools' `kexec -p --debug` printout of the same boot
    //! (`reference/kexec-p-debug.txt`).
    use super::*;
    use crate::loader::native::iomem;

    struct Case {
        kcore: &'static [u8],
        iomem: &'static str,
        vmcore: &'static [u8],
    }

    const BIOS: Case = Case {
        kcore: include_bytes!("testdata/bios/proc/kcore"),
        iomem: include_str!("testdata/bios/proc/iomem"),
        vmcore: include_bytes!("testdata/bios/reference/vmcore-phdrs"),
    };
    const OVMF: Case = Case {
        kcore: include_bytes!("testdata/ovmf/proc/kcore"),
        iomem: include_str!("testdata/ovmf/proc/iomem"),
        vmcore: include_bytes!("testdata/ovmf/reference/vmcore-phdrs"),
    };

    fn phdrs(core: &[u8]) -> Vec<ProgramHeader> {
        let header = FileHeader::parse(core).unwrap();
        ProgramHeader::parse_table(&core[64..], usize::from(header.phnum)).unwrap()
    }

    fn layout(case: &Case, notes: Vec<NoteBuffer>, vmcoreinfo: NoteBuffer) -> CoreLayout {
        let iomem = iomem::parse(case.iomem).unwrap();
        CoreLayout {
            cpu_notes: notes,
            vmcoreinfo: Some(vmcoreinfo),
            kernel: KernelMap::from_kcore(case.kcore).unwrap(),
            text_paddr: iomem.kernel_code_start().unwrap(),
            ram: dump_ranges(&iomem.system_ram(), &iomem.crash_kernel()),
        }
    }

    /// The loads of our header equal those of the kernel's own header for the same boot.
    fn loads_match_the_kernel(case: &Case, ours: &[u8]) {
        let kernel: Vec<_> = phdrs(case.vmcore)
            .into_iter()
            .filter(|p| p.p_type == elf::PT_LOAD)
            .map(|p| (p.vaddr, p.paddr, p.memsz, p.flags))
            .collect();
        let ours: Vec<_> = phdrs(ours)
            .into_iter()
            .filter(|p| p.p_type == elf::PT_LOAD)
            .map(|p| (p.vaddr, p.paddr, p.memsz, p.flags))
            .collect();
        assert_eq!(ours, kernel);
    }

    #[test]
    fn bios_header_matches_the_kernels() {
        // kexec -p --debug: "crash_notes addr = 3e839400, size = 368", "... 3e939400 ...",
        // "vmcoreinfo header: p_offset = 0x11e8000 ... p_filesz = 0x1024".
        let notes = vec![
            NoteBuffer {
                addr: 0x3e83_9400,
                size: 368,
            },
            NoteBuffer {
                addr: 0x3e93_9400,
                size: 368,
            },
        ];
        let vmcoreinfo = NoteBuffer {
            addr: 0x11e_8000,
            size: 0x1024,
        };
        let layout = layout(&BIOS, notes, vmcoreinfo);
        // kexec -p --debug: "kernel vaddr = 0xffffffff93a00000 size = 0x2830000"; the kernel's
        // vmcore: the direct map at 0xffff88d340000000.
        assert_eq!(
            layout.kernel,
            KernelMap {
                text_vaddr: 0xffff_ffff_93a0_0000,
                text_size: 0x283_0000,
                page_offset: 0xffff_88d3_4000_0000,
            }
        );
        assert!(!layout.kernel.five_level());
        let core = build(&layout).unwrap();
        assert_eq!(core.len(), 0x400);
        let ours = phdrs(&core);
        assert_eq!(ours.len(), 2 + 1 + 1 + 2);
        assert_eq!(
            (ours[0].p_type, ours[0].paddr, ours[0].offset, ours[0].memsz),
            (elf::PT_NOTE, 0x3e83_9400, 0x3e83_9400, 0x170)
        );
        assert_eq!((ours[2].paddr, ours[2].filesz), (0x11e_8000, 0x1024));
        loads_match_the_kernel(&BIOS, &core);
    }

    #[test]
    fn ovmf_header_matches_the_kernels() {
        // kexec -p --debug of the OVMF boot.
        let notes = vec![
            NoteBuffer {
                addr: 0x3c03_9400,
                size: 368,
            },
            NoteBuffer {
                addr: 0x3c13_9400,
                size: 368,
            },
        ];
        let vmcoreinfo = NoteBuffer {
            addr: 0x3c4a_6000,
            size: 0x1024,
        };
        let core = build(&layout(&OVMF, notes, vmcoreinfo)).unwrap();
        loads_match_the_kernel(&OVMF, &core);
        assert_eq!(phdrs(&core).len(), 3 + 1 + 7);
    }

    #[test]
    fn kcore_without_a_text_mapping_is_an_error() {
        let mut kcore = BIOS.kcore.to_vec();
        // Move the text PT_LOAD (the second header) out of the window.
        kcore[64 + 56 + 16..64 + 56 + 24].copy_from_slice(&0xffff_c900_0000_0000u64.to_le_bytes());
        assert_eq!(KernelMap::from_kcore(&kcore), Err(CoreHeaderError::NoText));
        assert!(matches!(
            KernelMap::from_kcore(&BIOS.kcore[..100]),
            Err(CoreHeaderError::Elf(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_kcore_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = KernelMap::from_kcore(&bytes);
        }
    }
}
