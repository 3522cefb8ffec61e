//! The capture kernel's `boot_params` (the "zero page") and command line.
//!
//! One segment holds the 4 KiB `boot_params`, then the NUL-terminated command line, then, each
//! 16-byte aligned: the EFI runtime map and a `SETUP_EFI` setup_data entry (when EFI state is
//! passed), and a `SETUP_E820_EXT` entry with the e820 map past its 128th entry (only with more
//! than 128). The page is built as kexec-tools' `setup_linux_system_parameters` and the
//! kernel's `bzImage64_load`/`setup_boot_parameters` build it:
//!
//! * from the running kernel's `/sys/kernel/boot_params/data`: `screen_info` (memory sizes
//!   cleared), `hardware_subarch`, the EDD buffers, `acpi_rsdp_addr`;
//! * the bzImage's setup header at 0x1f1, then `type_of_loader` 0xd0 (kexec), `loadflags` 0,
//!   `code32_start`, `ramdisk_*`, `cmd_line_ptr` with their `ext_*` high halves;
//! * the e820 map of [`crash_e820`];
//! * EFI, when the running kernel was booted by EFI and exports
//!   `/sys/firmware/efi/runtime-map` ([`EfiState`]), as the kernel's `setup_efi_state` and
//!   kexec-tools' `setup_efi_info` pass it: `efi_info` with the running loader signature,
//!   system table and descriptor version, descriptors of `sizeof(efi_memory_desc_t)` (40, as
//!   kexec-tools writes them from sysfs) and `efi_memmap` pointing at the runtime map in this
//!   segment; `secure_boot` copied (the kernel's loader does); a `SETUP_EFI` entry
//!   (`struct efi_setup_data` of arch/x86/include/asm/efi.h: `fw_vendor`, `__unused` left 0 as
//!   the kernel's loader leaves it, `tables`, `smbios`). The RSDP then goes only in
//!   `acpi_rsdp_addr` (the kernel's loader fills it from the EFI tables and never puts
//!   `acpi_rsdp=` on the command line; the capture kernel also finds it in the EFI
//!   configuration table);
//! * without that state, `efi_info` stays zero and the command line gets `acpi_rsdp=` (see
//!   [`crash_cmdline`]), as kexec-tools does without the runtime map or with `--noefi`.
//!
//! Offsets are those of arch/x86/include/uapi/asm/bootparam.h and boot.rst.

use super::bzimage::{HEADER_OFFSET, SetupHeader};
use super::iomem::{Iomem, Range, subtract};
use super::system::{EfiMemoryDesc, EfiState};

/// Size of `struct boot_params`.
pub(crate) const PAGE_SIZE: usize = 4096;
/// e820 entries that fit in `boot_params` (`E820_MAX_ENTRIES_ZEROPAGE`).
const E820_MAX_ZEROPAGE: usize = 128;
/// Size of one `struct boot_e820_entry`.
const E820_ENTRY_SIZE: usize = 20;
/// `setup_data` type of the e820 entries past the 128th.
const SETUP_E820_EXT: u32 = 1;
/// Size of `struct setup_data`'s header (`next`, `type`, `len`).
const SETUP_DATA_HEADER: usize = 16;
/// `setup_data` type of `struct efi_setup_data`.
const SETUP_EFI: u32 = 4;
/// Size of `struct efi_setup_data` (`fw_vendor`, `__unused`, `tables`, `smbios`,
/// `reserved[8]`).
const EFI_SETUP_DATA_LEN: usize = 12 * 8;
/// Size of one `efi_memory_desc_t` (`type`, pad, `phys_addr`, `virt_addr`, `num_pages`,
/// `attribute`).
const EFI_MEMDESC_SIZE: usize = 40;
/// `type_of_loader` of kexec (boot.rst: 0xD), as the kernel's file loader sets it.
const LOADER_KEXEC: u8 = 0xd0;

/// e820 type: usable RAM.
pub(crate) const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub(crate) const E820_RESERVED: u32 = 2;
/// e820 type: ACPI tables (reclaimable).
pub(crate) const E820_ACPI: u32 = 3;
/// e820 type: ACPI non-volatile storage.
pub(crate) const E820_NVS: u32 = 4;
/// e820 type: persistent memory.
pub(crate) const E820_PMEM: u32 = 7;
/// e820 type: legacy persistent memory (`E820_TYPE_PRAM`).
pub(crate) const E820_PRAM: u32 = 12;

// Offsets into struct boot_params.
const SCREEN_INFO_LEN: usize = 0x40;
const EXT_MEM_K: usize = 0x02;
const ACPI_RSDP_ADDR: usize = 0x070;
const EXT_RAMDISK_IMAGE: usize = 0x0c0;
const EXT_RAMDISK_SIZE: usize = 0x0c4;
const EXT_CMD_LINE_PTR: usize = 0x0c8;
const EFI_LOADER_SIGNATURE: usize = 0x1c0;
const EFI_SYSTAB: usize = 0x1c4;
const EFI_MEMDESC_SIZE_AT: usize = 0x1c8;
const EFI_MEMDESC_VERSION: usize = 0x1cc;
const EFI_MEMMAP: usize = 0x1d0;
const EFI_MEMMAP_SIZE: usize = 0x1d4;
const EFI_SYSTAB_HI: usize = 0x1d8;
const EFI_MEMMAP_HI: usize = 0x1dc;
const SECURE_BOOT: usize = 0x1ec;
const E820_ENTRIES: usize = 0x1e8;
const EDDBUF_ENTRIES: usize = 0x1e9;
const EDD_MBR_SIG_BUF_ENTRIES: usize = 0x1ea;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const CMD_LINE_PTR: usize = 0x228;
const HARDWARE_SUBARCH: usize = 0x23c;
const SETUP_DATA: usize = 0x250;
const EDD_MBR_SIG_BUFFER: usize = 0x290;
const EDD_MBR_SIG_BUFFER_LEN: usize = 16 * 4;
const E820_TABLE: usize = 0x2d0;
const EDDBUF: usize = 0xd00;
const EDDBUF_LEN: usize = 6 * 82;

/// Why the page or the command line cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BootParamsError {
    /// The command line with the crash parameters exceeds the image's `cmdline_size`.
    #[error(
        "the capture command line is {len} bytes with elfcorehdr= and acpi_rsdp=, the kernel takes at most {max}"
    )]
    CmdlineTooLong {
        /// Bytes without the NUL.
        len: usize,
        /// `cmdline_size`.
        max: u32,
    },
    /// The running kernel's `boot_params` is not a 4 KiB page.
    #[error("/sys/kernel/boot_params/data has {0} bytes, not 4096")]
    RunningSize(usize),
    /// The image's setup header is shorter than it claims.
    #[error("the bzImage is shorter than its setup header")]
    ShortHeader,
}

/// One entry of the capture kernel's e820 map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub size: u64,
    /// `E820_*` type.
    pub kind: u32,
}

/// The capture kernel's memory, as the kernel's `crash_setup_memmap_entries` builds it: the
/// System RAM of the low 1 MiB, the ACPI tables, ACPI NVS, reserved and persistent-memory
/// ranges as they are, and the crash reservations as RAM without the ELF core header (pieces
/// under a page dropped). Sorted by address.
pub(crate) fn crash_e820(iomem: &Iomem, crash: &[Range], core_header: Range) -> Vec<E820Entry> {
    let entry = |kind| {
        move |r: Range| E820Entry {
            addr: r.start,
            size: r.len(),
            kind,
        }
    };
    let low = Range {
        start: 0,
        end: 1 << 20,
    };
    let mut map: Vec<E820Entry> = iomem
        .system_ram()
        .into_iter()
        .filter_map(|r| {
            let end = r.end.min(low.end);
            (r.start < end).then_some(Range {
                start: r.start,
                end,
            })
        })
        .map(entry(E820_RAM))
        .collect();
    for (name, kind) in [
        ("ACPI Tables", E820_ACPI),
        ("ACPI Non-volatile Storage", E820_NVS),
        ("Reserved", E820_RESERVED),
        ("reserved", E820_RESERVED),
        ("Persistent Memory", E820_PMEM),
        ("Persistent Memory (legacy)", E820_PRAM),
    ] {
        map.extend(iomem.named(name).into_iter().map(entry(kind)));
    }
    map.extend(
        subtract(crash, core_header)
            .into_iter()
            .filter(|r| r.len() >= 4096)
            .map(entry(E820_RAM)),
    );
    map.sort();
    map
}

/// The capture kernel's command line: `elfcorehdr=0x<addr>` first, as the kernel's own loader
/// puts it (before any `--` that hands the rest to init), then `acpi_rsdp=0x<addr>` when given
/// (kexec-tools' `cmdline_add_efi`: the RSDP when no EFI state is passed), then `user`.
pub(crate) fn crash_cmdline(
    user: &str,
    elfcorehdr: u64,
    acpi_rsdp: Option<u64>,
    cmdline_size: u32,
) -> Result<String, BootParamsError> {
    let mut line = format!("elfcorehdr=0x{elfcorehdr:x} ");
    if let Some(rsdp) = acpi_rsdp {
        line.push_str(&format!("acpi_rsdp=0x{rsdp:x} "));
    }
    line.push_str(user.trim());
    let line = line.trim_end().to_owned();
    if u32::try_from(line.len()).map_or(true, |len| len > cmdline_size) {
        return Err(BootParamsError::CmdlineTooLong {
            len: line.len(),
            max: cmdline_size,
        });
    }
    Ok(line)
}

/// Offset of the command line in the segment.
pub(crate) const CMDLINE_OFFSET: usize = PAGE_SIZE;

/// Where each part of the segment goes: offsets from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The EFI runtime map and the `SETUP_EFI` entry, when EFI state is passed.
    pub efi: Option<EfiLayout>,
    /// The `SETUP_E820_EXT` entry, with more than 128 e820 entries.
    pub e820_ext: Option<usize>,
    /// Bytes of the segment.
    pub len: usize,
}

/// Offsets of the EFI parts in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EfiLayout {
    /// The runtime map's descriptors.
    pub map: usize,
    /// Bytes of the map.
    pub map_len: usize,
    /// The `SETUP_EFI` setup_data entry (its header).
    pub setup: usize,
}

/// The segment's layout for a command line of `cmdline_len` bytes (without NUL), `entries`
/// e820 entries and, with EFI state, `efi_descs` runtime map entries.
pub(crate) fn layout(cmdline_len: usize, entries: usize, efi_descs: Option<usize>) -> Layout {
    let mut len = (CMDLINE_OFFSET + cmdline_len + 1).next_multiple_of(16);
    let efi = efi_descs.map(|descs| {
        let map = len;
        let map_len = descs * EFI_MEMDESC_SIZE;
        let setup = (map + map_len).next_multiple_of(16);
        len = setup + SETUP_DATA_HEADER + EFI_SETUP_DATA_LEN;
        EfiLayout {
            map,
            map_len,
            setup,
        }
    });
    let e820_ext = (entries > E820_MAX_ZEROPAGE).then(|| {
        let at = len.next_multiple_of(16);
        len = at + SETUP_DATA_HEADER + (entries - E820_MAX_ZEROPAGE) * E820_ENTRY_SIZE;
        at
    });
    Layout { efi, e820_ext, len }
}

/// Where the other segments went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Physical address of this segment.
    pub boot_params: u64,
    /// Load address of the protected-mode kernel.
    pub kernel: u64,
    /// The initrd, if any.
    pub initrd: Option<Range>,
}

/// Everything the page is made of.
#[derive(Debug, Clone)]
pub(crate) struct BootParamsInput<'a> {
    /// `/sys/kernel/boot_params/data` of the running kernel, if readable.
    pub running: Option<&'a [u8]>,
    /// The bzImage.
    pub image: &'a [u8],
    /// Its parsed header.
    pub header: &'a SetupHeader,
    /// The final command line (from [`crash_cmdline`]).
    pub cmdline: &'a str,
    /// The e820 map (from [`crash_e820`]).
    pub e820: &'a [E820Entry],
    /// The ACPI RSDP's physical address, if known.
    pub acpi_rsdp: Option<u64>,
    /// The EFI state to pass, if any.
    pub efi: Option<&'a EfiState>,
    /// The segments' addresses.
    pub placement: Placement,
}

fn put_u32(page: &mut [u8], offset: usize, value: u32) {
    page[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(page: &mut [u8], offset: usize, value: u64) {
    page[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

/// Low and high 32 bits of `value`.
fn halves(value: u64) -> (u32, u32) {
    let low = u32::try_from(value & 0xffff_ffff).unwrap_or(0);
    let high = u32::try_from(value >> 32).unwrap_or(0);
    (low, high)
}

fn put_efi_desc(out: &mut [u8], desc: &EfiMemoryDesc) {
    put_u32(out, 0, desc.kind);
    // 4..8: padding.
    put_u64(out, 8, desc.phys_addr);
    put_u64(out, 16, desc.virt_addr);
    put_u64(out, 24, desc.num_pages);
    put_u64(out, 32, desc.attribute);
}

fn put_e820(out: &mut [u8], entry: &E820Entry) {
    out[..8].copy_from_slice(&entry.addr.to_le_bytes());
    out[8..16].copy_from_slice(&entry.size.to_le_bytes());
    out[16..20].copy_from_slice(&entry.kind.to_le_bytes());
}

/// Builds the segment: `boot_params`, the command line, the EFI runtime map and `SETUP_EFI`,
/// and the extended e820 entries.
pub(crate) fn build(input: &BootParamsInput<'_>) -> Result<Vec<u8>, BootParamsError> {
    let layout = layout(
        input.cmdline.len(),
        input.e820.len(),
        input.efi.map(|efi| efi.runtime_map.len()),
    );
    let mut out = vec![0u8; layout.len];
    let page = &mut out[..PAGE_SIZE];

    if let Some(running) = input.running {
        if running.len() != PAGE_SIZE {
            return Err(BootParamsError::RunningSize(running.len()));
        }
        page[..SCREEN_INFO_LEN].copy_from_slice(&running[..SCREEN_INFO_LEN]);
        page[EXT_MEM_K..EXT_MEM_K + 2].fill(0);
        page[EDDBUF_ENTRIES] = running[EDDBUF_ENTRIES];
        page[EDD_MBR_SIG_BUF_ENTRIES] = running[EDD_MBR_SIG_BUF_ENTRIES];
        page[EDD_MBR_SIG_BUFFER..EDD_MBR_SIG_BUFFER + EDD_MBR_SIG_BUFFER_LEN].copy_from_slice(
            &running[EDD_MBR_SIG_BUFFER..EDD_MBR_SIG_BUFFER + EDD_MBR_SIG_BUFFER_LEN],
        );
        page[EDDBUF..EDDBUF + EDDBUF_LEN].copy_from_slice(&running[EDDBUF..EDDBUF + EDDBUF_LEN]);
    }

    let header_end = HEADER_OFFSET + input.header.header_len;
    let header = input
        .image
        .get(HEADER_OFFSET..header_end)
        .ok_or(BootParamsError::ShortHeader)?;
    page[HEADER_OFFSET..header_end].copy_from_slice(header);
    if let Some(running) = input.running {
        // After the header copy: the subarch is the running kernel's, not the image's.
        page[HARDWARE_SUBARCH..HARDWARE_SUBARCH + 4]
            .copy_from_slice(&running[HARDWARE_SUBARCH..HARDWARE_SUBARCH + 4]);
    }
    page[TYPE_OF_LOADER] = LOADER_KEXEC;
    page[LOADFLAGS] = 0;
    let placement = input.placement;
    put_u32(page, CODE32_START, halves(placement.kernel).0);
    if let Some(initrd) = placement.initrd {
        let (image_low, image_high) = halves(initrd.start);
        let (size_low, size_high) = halves(initrd.len());
        put_u32(page, RAMDISK_IMAGE, image_low);
        put_u32(page, RAMDISK_SIZE, size_low);
        put_u32(page, EXT_RAMDISK_IMAGE, image_high);
        put_u32(page, EXT_RAMDISK_SIZE, size_high);
    }
    let cmdline_addr = placement.boot_params + CMDLINE_OFFSET as u64;
    let (cmd_low, cmd_high) = halves(cmdline_addr);
    put_u32(page, CMD_LINE_PTR, cmd_low);
    put_u32(page, EXT_CMD_LINE_PTR, cmd_high);
    put_u64(page, ACPI_RSDP_ADDR, input.acpi_rsdp.unwrap_or(0));

    let in_page = input.e820.len().min(E820_MAX_ZEROPAGE);
    page[E820_ENTRIES] = u8::try_from(in_page).unwrap_or(u8::MAX);
    for (i, entry) in input.e820[..in_page].iter().enumerate() {
        let at = E820_TABLE + i * E820_ENTRY_SIZE;
        put_e820(&mut page[at..at + E820_ENTRY_SIZE], entry);
    }

    let cmdline_end = CMDLINE_OFFSET + input.cmdline.len();
    out[CMDLINE_OFFSET..cmdline_end].copy_from_slice(input.cmdline.as_bytes());
    // out[cmdline_end] is the NUL.

    // The setup_data entries, linked in segment order from hdr.setup_data.
    let mut setup_data = Vec::new();
    if let (Some(efi), Some(at)) = (input.efi, layout.efi) {
        let page = &mut out[..PAGE_SIZE];
        let (systab_low, systab_high) = halves(efi.systab);
        put_u32(page, EFI_LOADER_SIGNATURE, efi.loader_signature);
        put_u32(page, EFI_SYSTAB, systab_low);
        put_u32(page, EFI_SYSTAB_HI, systab_high);
        put_u32(
            page,
            EFI_MEMDESC_SIZE_AT,
            u32::try_from(EFI_MEMDESC_SIZE).unwrap_or(u32::MAX),
        );
        put_u32(page, EFI_MEMDESC_VERSION, efi.memdesc_version);
        let (map_low, map_high) = halves(placement.boot_params + at.map as u64);
        put_u32(page, EFI_MEMMAP, map_low);
        put_u32(page, EFI_MEMMAP_HI, map_high);
        put_u32(
            page,
            EFI_MEMMAP_SIZE,
            u32::try_from(at.map_len).unwrap_or(u32::MAX),
        );
        page[SECURE_BOOT] = efi.secure_boot;
        for (i, desc) in efi.runtime_map.iter().enumerate() {
            let d = at.map + i * EFI_MEMDESC_SIZE;
            put_efi_desc(&mut out[d..d + EFI_MEMDESC_SIZE], desc);
        }
        let data = at.setup + SETUP_DATA_HEADER;
        put_u64(&mut out, data, efi.fw_vendor);
        // data + 8: __unused.
        put_u64(&mut out, data + 16, efi.config_table);
        put_u64(&mut out, data + 24, efi.smbios);
        setup_data.push((at.setup, SETUP_EFI, EFI_SETUP_DATA_LEN));
    }
    if let Some(at) = layout.e820_ext {
        let rest = &input.e820[E820_MAX_ZEROPAGE..];
        for (i, entry) in rest.iter().enumerate() {
            let e = at + SETUP_DATA_HEADER + i * E820_ENTRY_SIZE;
            put_e820(&mut out[e..e + E820_ENTRY_SIZE], entry);
        }
        setup_data.push((at, SETUP_E820_EXT, rest.len() * E820_ENTRY_SIZE));
    }
    let mut link = SETUP_DATA;
    for (at, kind, data_len) in setup_data {
        put_u64(&mut out, link, placement.boot_params + at as u64);
        // next (0 until linked), type, len.
        put_u32(&mut out, at + 8, kind);
        put_u32(
            &mut out,
            at + 12,
            u32::try_from(data_len).unwrap_or(u32::MAX),
        );
        link = at;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Inputs recorded from the lab's Debian 6.1 cloud guests (SeaBIOS and OVMF): `/proc/iomem`
    //! and `/sys/kernel/boot_params/data`, and the head of the bzImage. The expected e820
    //! maps are what the kernel's own file loader (`kexec -s -p`, `crash_setup_memmap_entries`)
    //! gave the capture kernel in the same boot, as that kernel logged them
    //! ("BIOS-e820: [mem ...]" in `reference/capture-file-mode-dmesg.txt`); only the crash
    //! region differs, by where each loader put the core header (the kernel: its first page).
    use super::*;
    use crate::format::bytes;
    use crate::loader::native::{bzimage, iomem};

    /// Parses "BIOS-e820: [mem 0x..-0x..] type" lines.
    fn logged_e820(dmesg: &str) -> Vec<E820Entry> {
        dmesg
            .lines()
            .filter_map(|line| line.split_once("BIOS-e820: [mem ")?.1.split_once(']'))
            .map(|(range, kind)| {
                let (start, end) = range.split_once('-').unwrap();
                let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
                let kind = match kind.trim() {
                    "usable" => E820_RAM,
                    "reserved" => E820_RESERVED,
                    "ACPI data" => E820_ACPI,
                    "ACPI NVS" => E820_NVS,
                    other => panic!("{other}"),
                };
                E820Entry {
                    addr: hex(start),
                    size: hex(end) - hex(start) + 1,
                    kind,
                }
            })
            .collect()
    }

    fn check_against_kernel(iomem_text: &str, dmesg: &str) {
        let iomem = iomem::parse(iomem_text).unwrap();
        let crash = iomem.crash_kernel();
        // The kernel put its header in the first page of the region.
        let header = Range {
            start: crash[0].start,
            end: crash[0].start + 4096,
        };
        assert_eq!(crash_e820(&iomem, &crash, header), logged_e820(dmesg));
    }

    #[test]
    fn bios_e820_is_the_kernels() {
        check_against_kernel(
            include_str!("testdata/bios/proc/iomem"),
            include_str!("testdata/bios/reference/capture-file-mode-dmesg.txt"),
        );
    }

    #[test]
    fn ovmf_e820_is_the_kernels() {
        check_against_kernel(
            include_str!("testdata/ovmf/proc/iomem"),
            include_str!("testdata/ovmf/reference/capture-file-mode-dmesg.txt"),
        );
    }

    #[test]
    fn cmdline_starts_with_the_crash_parameters() {
        // kexec -p --debug in the BIOS guest: "acpi_rsdp=0xf59d0" (from boot_params).
        assert_eq!(
            crash_cmdline("console=ttyS0 panic=-1", 0x3dffc000, Some(0xf59d0), 2047).unwrap(),
            "elfcorehdr=0x3dffc000 acpi_rsdp=0xf59d0 console=ttyS0 panic=-1"
        );
        assert_eq!(
            crash_cmdline("", 0x1000, None, 2047).unwrap(),
            "elfcorehdr=0x1000"
        );
        assert_eq!(
            crash_cmdline(&"x".repeat(2040), 0x1000, None, 2047),
            Err(BootParamsError::CmdlineTooLong {
                len: 2058,
                max: 2047
            })
        );
    }

    fn image() -> Vec<u8> {
        let mut image = include_bytes!("testdata/vmlinuz-6.1.0-57-cloud-amd64.head").to_vec();
        image.resize(14_190_528, 0);
        image
    }

    #[test]
    fn page_has_the_header_and_the_addresses() {
        let running = include_bytes!("testdata/bios/sys/kernel/boot_params/data");
        let image = image();
        let header = bzimage::parse(&image, false).unwrap();
        let e820 = [E820Entry {
            addr: 0x1000,
            size: 0x9ec00,
            kind: E820_RAM,
        }];
        let placement = Placement {
            boot_params: 0x1_3dfe_0000,
            kernel: 0x3aa0_0000,
            initrd: Some(Range {
                start: 0x1_3a81_b000,
                end: 0x1_3a81_b000 + 0x1e_4a00,
            }),
        };
        let out = build(&BootParamsInput {
            running: Some(running),
            image: &image,
            header: &header,
            cmdline: "elfcorehdr=0x3dffc000",
            e820: &e820,
            acpi_rsdp: Some(0xf59d0),
            efi: None,
            placement,
        })
        .unwrap();
        assert_eq!(out.len(), layout(21, 1, None).len);
        let u32_at = |o| bytes::u32_le(&out, o).unwrap();
        assert_eq!(&out[0x202..0x206], b"HdrS");
        assert_eq!(out[0x1f1], 39, "setup_sects as in the image");
        assert_eq!(u32_at(0x260), 0x337_8000, "init_size as in the image");
        assert_eq!((out[0x210], out[0x211]), (0xd0, 0));
        assert_eq!(u32_at(0x214), 0x3aa0_0000);
        assert_eq!((u32_at(0x218), u32_at(0xc0)), (0x3a81_b000, 1));
        assert_eq!((u32_at(0x21c), u32_at(0xc4)), (0x1e_4a00, 0));
        assert_eq!((u32_at(0x228), u32_at(0xc8)), (0x3dfe_1000, 1));
        assert_eq!(bytes::u64_le(&out, 0x70).unwrap(), 0xf59d0);
        // screen_info kept but for ext_mem_k (0x02), cleared as the kernel's loader clears it.
        assert_eq!(&out[0..2], &running[0..2]);
        assert_eq!(&out[2..4], &[0, 0]);
        assert_eq!(&out[4..0x40], &running[4..0x40]);
        assert_eq!(out[0x1e8], 1);
        assert_eq!(bytes::u64_le(&out, 0x2d0 + 8).unwrap(), 0x9ec00);
        assert_eq!(&out[0x1000..0x1015], b"elfcorehdr=0x3dffc000");
        assert_eq!(out[0x1015], 0);
        assert_eq!(&out[0x1c0..0x1e0], &[0; 32], "no EFI");
    }

    /// The recorded OVMF guest's EFI state (see system.rs's tests for its sysfs files).
    fn ovmf_efi() -> EfiState {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/loader/native/testdata/ovmf");
        crate::loader::native::system::gather(&root)
            .unwrap()
            .efi
            .unwrap()
    }

    /// `efi_info` and the `SETUP_EFI` entry at bootparam.h's offsets hold the recorded
    /// `/sys/firmware/efi` values and the running `efi_info`.
    #[test]
    fn efi_state_goes_to_efi_info_and_setup_efi() {
        let running = include_bytes!("testdata/ovmf/sys/kernel/boot_params/data");
        let image = image();
        let header = bzimage::parse(&image, false).unwrap();
        let efi = ovmf_efi();
        let e820 = [E820Entry {
            addr: 0x1000,
            size: 0x9f000,
            kind: E820_RAM,
        }];
        let base = 0x37ff_a000_u64;
        let cmdline = "elfcorehdr=0x37ffc000";
        let out = build(&BootParamsInput {
            running: Some(running),
            image: &image,
            header: &header,
            cmdline,
            e820: &e820,
            acpi_rsdp: Some(0x3f77_e014),
            efi: Some(&efi),
            placement: Placement {
                boot_params: base,
                kernel: 0x3000_0000,
                initrd: None,
            },
        })
        .unwrap();
        let u32_at = |o| bytes::u32_le(&out, o).unwrap();
        let u64_at = |o| bytes::u64_le(&out, o).unwrap();
        // struct efi_info at 0x1c0.
        assert_eq!(&out[0x1c0..0x1c4], b"EL64", "efi_loader_signature");
        assert_eq!(u32_at(0x1c4), 0x3f5e_c018, "efi_systab");
        assert_eq!(u32_at(0x1d8), 0, "efi_systab_hi");
        assert_eq!(u32_at(0x1c8), 40, "efi_memdesc_size");
        assert_eq!(u32_at(0x1cc), 1, "efi_memdesc_version");
        assert_eq!(u32_at(0x1d4), 5 * 40, "efi_memmap_size");
        let memmap = u64::from(u32_at(0x1d0)) | u64::from(u32_at(0x1dc)) << 32;
        // After the command line and its NUL, 16-byte aligned.
        let map_at = 0x1000 + (cmdline.len() + 1).next_multiple_of(16);
        assert_eq!(memmap, base + map_at as u64);
        assert_eq!(out[0x1ec], 2, "secure_boot as the running kernel's");
        assert_eq!(u64_at(0x70), 0x3f77_e014, "acpi_rsdp_addr");
        // The runtime map as /sys/firmware/efi/runtime-map/<N> has it: efi_memory_desc_t.
        let recorded = [
            (6, 0x3ff5_0000, 0xffff_fffe_fff5_0000_u64, 0x20),
            (5, 0x3f5e_d000, 0xffff_fffe_ff5e_d000, 0x100),
            (6, 0x3f4e_d000, 0xffff_fffe_ff4e_d000, 0x100),
            (6, 0x3eaa_5000, 0xffff_fffe_feaa_5000, 0xc1),
            (4, 0x3de2_1000, 0xffff_fffe_fde2_1000, 0x1),
        ];
        for (i, (kind, phys, virt, pages)) in recorded.into_iter().enumerate() {
            let d = map_at + i * 40;
            assert_eq!(u32_at(d), kind);
            assert_eq!(u32_at(d + 4), 0, "padding");
            assert_eq!(u64_at(d + 8), phys);
            assert_eq!(u64_at(d + 16), virt);
            assert_eq!(u64_at(d + 24), pages);
            assert_eq!(u64_at(d + 32), 0x8000_0000_0000_000f);
        }
        // hdr.setup_data (0x250) -> struct setup_data { next, type, len } + efi_setup_data.
        let sd = usize::try_from(u64_at(0x250) - base).unwrap();
        assert_eq!(sd, (map_at + 200).next_multiple_of(16));
        assert_eq!(u64_at(sd), 0, "next: the only entry");
        assert_eq!(u32_at(sd + 8), 4, "SETUP_EFI");
        assert_eq!(u32_at(sd + 12), 96, "sizeof(struct efi_setup_data)");
        assert_eq!(u64_at(sd + 16), 0x3f51_c818, "fw_vendor");
        assert_eq!(u64_at(sd + 24), 0, "__unused");
        assert_eq!(u64_at(sd + 32), 0x3f5e_cc98, "tables");
        assert_eq!(u64_at(sd + 40), 0x3f51_8000, "smbios");
        assert_eq!(&out[sd + 48..sd + 112], &[0; 64], "reserved[8]");
        assert_eq!(out.len(), sd + 112);
    }

    #[test]
    fn efi_and_extended_e820_are_chained() {
        let image = image();
        let header = bzimage::parse(&image, false).unwrap();
        let efi = ovmf_efi();
        let e820: Vec<E820Entry> = (0..129)
            .map(|i| E820Entry {
                addr: i << 20,
                size: 4096,
                kind: E820_RAM,
            })
            .collect();
        let base = 0x1000_0000_u64;
        let out = build(&BootParamsInput {
            running: None,
            image: &image,
            header: &header,
            cmdline: "x",
            e820: &e820,
            acpi_rsdp: None,
            efi: Some(&efi),
            placement: Placement {
                boot_params: base,
                kernel: 0x2000_0000,
                initrd: None,
            },
        })
        .unwrap();
        let u64_at = |o| bytes::u64_le(&out, o).unwrap();
        let first = usize::try_from(u64_at(0x250) - base).unwrap();
        assert_eq!(bytes::u32_le(&out, first + 8).unwrap(), SETUP_EFI);
        let second = usize::try_from(u64_at(first) - base).unwrap();
        assert_eq!(second, first + 16 + 96);
        assert_eq!(bytes::u32_le(&out, second + 8).unwrap(), SETUP_E820_EXT);
        assert_eq!(bytes::u32_le(&out, second + 12).unwrap(), 20);
        assert_eq!(u64_at(second), 0);
        assert_eq!(u64_at(second + 16), 128 << 20);
        assert_eq!(out.len(), second + 16 + 20);
        assert_eq!(out.len(), layout(1, 129, Some(5)).len);
    }

    #[test]
    fn more_than_128_entries_go_to_setup_data() {
        let image = image();
        let header = bzimage::parse(&image, false).unwrap();
        let e820: Vec<E820Entry> = (0..130)
            .map(|i| E820Entry {
                addr: i << 20,
                size: 4096,
                kind: E820_RAM,
            })
            .collect();
        let out = build(&BootParamsInput {
            running: None,
            image: &image,
            header: &header,
            cmdline: "x",
            e820: &e820,
            acpi_rsdp: None,
            efi: None,
            placement: Placement {
                boot_params: 0x1000_0000,
                kernel: 0x2000_0000,
                initrd: None,
            },
        })
        .unwrap();
        assert_eq!(out[0x1e8], 128);
        let at = 0x1010;
        assert_eq!(bytes::u64_le(&out, 0x250).unwrap(), 0x1000_0000 + at as u64);
        assert_eq!(bytes::u32_le(&out, at + 8).unwrap(), SETUP_E820_EXT);
        assert_eq!(bytes::u32_le(&out, at + 12).unwrap(), 40);
        assert_eq!(bytes::u64_le(&out, at + 16 + 20).unwrap(), 129 << 20);
        assert_eq!(out.len(), at + 16 + 40);
    }
}
