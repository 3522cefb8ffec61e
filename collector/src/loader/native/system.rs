//! The only I/O of the native loader: reads what the running kernel says about itself.
//!
//! * `/proc/iomem`: RAM, the crash reservation, `Kernel code`, firmware ranges;
//! * `/proc/kcore`: only its ELF header and program headers (the kernel image's `PT_LOAD` and the
//!   direct map), never its contents; `/proc/kallsyms` is not read, so
//!   `kernel.kptr_restrict=2` does not matter;
//! * `/sys/kernel/vmcoreinfo` (`<hex address> <hex size>`), each possible CPU's
//!   `/sys/devices/system/cpu/cpuN/crash_notes` (hex address) and `crash_notes_size` (decimal);
//! * `/sys/kernel/boot_params/data`: the running kernel's zero page;
//! * `/sys/firmware/efi/systab`: the ACPI RSDP under EFI (`ACPI20=` before `ACPI=`) and the
//!   SMBIOS entry point (`SMBIOS=`);
//! * with `/sys/firmware/efi/runtime-map` (`CONFIG_EFI_RUNTIME_MAP`): its entries
//!   (`<N>/{type,phys_addr,virt_addr,num_pages,attribute}`, `0x`-prefixed hex) and
//!   `/sys/firmware/efi/{fw_vendor,config_table}` (hex physical addresses), the EFI state the
//!   capture kernel gets (see [`EfiState`]).
//!
//! All paths are taken below a root directory (`/` on a real system), so tests read recorded
//! trees.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::format::bytes::{self, to_usize};
use crate::format::elf;

use super::core_header::{CoreHeaderError, KernelMap, NoteBuffer};
use super::iomem::{self, Iomem, IomemError};

/// The most of `/proc/kcore` read for its program headers (kexec-tools reads 64 KiB).
const KCORE_HEADERS_MAX: usize = 64 << 10;
/// Offset of `acpi_rsdp_addr` in `boot_params`.
const ACPI_RSDP_ADDR: usize = 0x070;
/// Offset of `efi_info` in `boot_params`.
const EFI_INFO: usize = 0x1c0;
/// Offset of `secure_boot` in `boot_params`.
const SECURE_BOOT: usize = 0x1ec;
/// The runtime map's directory.
const RUNTIME_MAP: &str = "/sys/firmware/efi/runtime-map";

/// Why the running kernel's description cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SystemError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file does not say what it should.
    #[error("{}: {what}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// `/proc/iomem` cannot be parsed.
    #[error("{}: {source}", path.display())]
    Iomem {
        /// The file.
        path: PathBuf,
        /// The parse error, with its line.
        source: IomemError,
    },
    /// `/proc/kcore`'s headers do not show the kernel image or the direct map.
    #[error("{}: {source}", path.display())]
    Kcore {
        /// The file.
        path: PathBuf,
        /// What was missing.
        source: CoreHeaderError,
    },
}

/// What the loader needs to know about the running kernel.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    /// `/proc/iomem`.
    pub iomem: Iomem,
    /// The kernel image and direct map, from `/proc/kcore`.
    pub kernel_map: KernelMap,
    /// The VMCOREINFO note, if exported.
    pub vmcoreinfo: Option<NoteBuffer>,
    /// The possible CPUs' note buffers, in CPU order.
    pub cpu_notes: Vec<NoteBuffer>,
    /// `/sys/kernel/boot_params/data`, if readable.
    pub boot_params: Option<Vec<u8>>,
    /// The ACPI RSDP: the running `boot_params.acpi_rsdp_addr`, else the EFI system table's.
    pub acpi_rsdp: Option<u64>,
    /// The EFI state to pass on, when the running kernel was booted by EFI and exports its
    /// runtime map.
    pub efi: Option<EfiState>,
}

/// One `efi_memory_desc_t` of the runtime map (include/linux/efi.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EfiMemoryDesc {
    /// `EFI_*` memory type.
    pub kind: u32,
    /// Physical start.
    pub phys_addr: u64,
    /// The virtual address the running kernel mapped it at (`SetVirtualAddressMap`).
    pub virt_addr: u64,
    /// 4 KiB pages.
    pub num_pages: u64,
    /// `EFI_MEMORY_*` attributes.
    pub attribute: u64,
}

/// What kexec-tools' `setup_efi_info`/`setup_efi_data` and the kernel's `setup_efi_state`
/// pass to the next kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EfiState {
    /// The running `efi_info.efi_loader_signature` (`"EL64"`).
    pub loader_signature: u32,
    /// The running `efi_info.efi_systab` with `efi_systab_hi`: the system table's address.
    pub systab: u64,
    /// The running `efi_info.efi_memdesc_version` (1).
    pub memdesc_version: u32,
    /// The running `boot_params.secure_boot` (the kernel's loader copies it).
    pub secure_boot: u8,
    /// `/sys/firmware/efi/runtime-map`, in entry order.
    pub runtime_map: Vec<EfiMemoryDesc>,
    /// `/sys/firmware/efi/fw_vendor`: the firmware vendor string's physical address.
    pub fw_vendor: u64,
    /// `/sys/firmware/efi/config_table`: the configuration table's physical address.
    pub config_table: u64,
    /// `SMBIOS=` of `/sys/firmware/efi/systab`, 0 without one (as kexec-tools leaves it).
    pub smbios: u64,
}

fn read(root: &Path, path: &str) -> Result<Vec<u8>, SystemError> {
    let full = root.join(path.trim_start_matches('/'));
    std::fs::read(&full).map_err(|source| SystemError::Read { path: full, source })
}

fn read_text(root: &Path, path: &str) -> Result<String, SystemError> {
    Ok(String::from_utf8_lossy(&read(root, path)?).into_owned())
}

fn malformed(root: &Path, path: &str, what: impl Into<String>) -> SystemError {
    SystemError::Malformed {
        path: root.join(path.trim_start_matches('/')),
        what: what.into(),
    }
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// Reads everything below `root` (`/` on a real system).
pub(crate) fn gather(root: &Path) -> Result<Inputs, SystemError> {
    let iomem_path = "/proc/iomem";
    let iomem =
        iomem::parse(&read_text(root, iomem_path)?).map_err(|source| SystemError::Iomem {
            path: root.join("proc/iomem"),
            source,
        })?;
    let kernel_map =
        KernelMap::from_kcore(&kcore_headers(root)?).map_err(|source| SystemError::Kcore {
            path: root.join("proc/kcore"),
            source,
        })?;
    let vmcoreinfo = match read_text(root, "/sys/kernel/vmcoreinfo") {
        Ok(text) => Some(parse_vmcoreinfo(&text).ok_or_else(|| {
            malformed(
                root,
                "/sys/kernel/vmcoreinfo",
                format!("expected \"<address> <size>\" in hex, found {text:?}"),
            )
        })?),
        Err(SystemError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            None
        }
        Err(e) => return Err(e),
    };
    let cpu_notes = cpu_notes(root)?;
    let boot_params = read(root, "/sys/kernel/boot_params/data").ok();
    let from_boot_params = boot_params
        .as_deref()
        .and_then(|page| bytes::u64_le(page, ACPI_RSDP_ADDR).ok())
        .filter(|&addr| addr != 0);
    let acpi_rsdp = from_boot_params.or_else(|| {
        read_text(root, "/sys/firmware/efi/systab")
            .ok()
            .and_then(|text| parse_systab_rsdp(&text))
    });
    let efi = match boot_params.as_deref() {
        Some(page) => efi_state(root, page)?,
        None => None,
    };
    Ok(Inputs {
        iomem,
        kernel_map,
        vmcoreinfo,
        cpu_notes,
        boot_params,
        acpi_rsdp,
        efi,
    })
}

/// The EFI state of a kernel booted by EFI (non-zero `efi_info.efi_memmap_size` in its
/// `boot_params`, memory descriptor version 1, as kexec-tools' `setup_efi_info` requires) that
/// exports its runtime map; `None` otherwise, and the capture kernel boots without EFI.
fn efi_state(root: &Path, page: &[u8]) -> Result<Option<EfiState>, SystemError> {
    let word = |at: usize| bytes::u32_le(page, EFI_INFO + at).unwrap_or(0);
    let memmap_size = word(0x14);
    let memdesc_version = word(0x0c);
    if memmap_size == 0 || memdesc_version != 1 {
        return Ok(None);
    }
    let Some(runtime_map) = runtime_map(root)? else {
        return Ok(None);
    };
    let address = |path: &str| -> Result<u64, SystemError> {
        let text = read_text(root, path)?;
        hex(&text).ok_or_else(|| malformed(root, path, format!("not a hex address: {text:?}")))
    };
    let fw_vendor = address("/sys/firmware/efi/fw_vendor")?;
    let config_table = address("/sys/firmware/efi/config_table")?;
    let systab_path = "/sys/firmware/efi/systab";
    let systab = read_text(root, systab_path)?;
    let smbios = match systab_value(&systab, "SMBIOS=") {
        Some(Some(addr)) => addr,
        Some(None) => {
            return Err(malformed(
                root,
                systab_path,
                format!("SMBIOS= is not a hex address: {systab:?}"),
            ));
        }
        None => 0,
    };
    Ok(Some(EfiState {
        loader_signature: word(0x00),
        systab: u64::from(word(0x04)) | u64::from(word(0x18)) << 32,
        memdesc_version,
        secure_boot: page.get(SECURE_BOOT).copied().unwrap_or(0),
        runtime_map,
        fw_vendor,
        config_table,
        smbios,
    }))
}

/// `/sys/firmware/efi/runtime-map/<N>/`, in `N` order (the order of the kernel's
/// `efi.memmap`, which the kernel's own loader copies as it is); `None` without the directory.
fn runtime_map(root: &Path) -> Result<Option<Vec<EfiMemoryDesc>>, SystemError> {
    let dir = root.join(RUNTIME_MAP.trim_start_matches('/'));
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SystemError::Read { path: dir, source }),
    };
    let mut indices = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SystemError::Read {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = name.parse::<u32>().map_err(|_| {
            malformed(
                root,
                RUNTIME_MAP,
                format!("{name:?} is not an entry number"),
            )
        })?;
        indices.push(index);
    }
    indices.sort_unstable();
    let mut map = Vec::with_capacity(indices.len());
    for index in indices {
        let field = |name: &str| -> Result<u64, SystemError> {
            let path = format!("{RUNTIME_MAP}/{index}/{name}");
            let text = read_text(root, &path)?;
            text.trim()
                .strip_prefix("0x")
                .and_then(|digits| u64::from_str_radix(digits, 16).ok())
                .ok_or_else(|| malformed(root, &path, format!("not 0x-prefixed hex: {text:?}")))
        };
        let kind = field("type")?;
        map.push(EfiMemoryDesc {
            kind: u32::try_from(kind).map_err(|_| {
                malformed(
                    root,
                    &format!("{RUNTIME_MAP}/{index}/type"),
                    format!("{kind:#x} is not a 32-bit type"),
                )
            })?,
            phys_addr: field("phys_addr")?,
            virt_addr: field("virt_addr")?,
            num_pages: field("num_pages")?,
            attribute: field("attribute")?,
        });
    }
    Ok(Some(map))
}

/// Reads the ELF header and program header table at the start of `/proc/kcore`.
fn kcore_headers(root: &Path) -> Result<Vec<u8>, SystemError> {
    let path = root.join("proc/kcore");
    let read_error = |source| SystemError::Read {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(read_error)?;
    let mut head = Vec::new();
    file.take(elf::HEADER_SIZE as u64)
        .read_to_end(&mut head)
        .map_err(read_error)?;
    let header = elf::FileHeader::parse(&head).map_err(|e| SystemError::Kcore {
        path: path.clone(),
        source: e.into(),
    })?;
    let want = to_usize(header.phoff)
        .saturating_add(usize::from(header.phnum) * elf::PROGRAM_HEADER_SIZE)
        .min(KCORE_HEADERS_MAX);
    let mut all = Vec::new();
    let file = std::fs::File::open(&path).map_err(read_error)?;
    file.take(want as u64)
        .read_to_end(&mut all)
        .map_err(read_error)?;
    Ok(all)
}

/// `/sys/kernel/vmcoreinfo`: `"%lx %x"` of the note's physical address and size.
fn parse_vmcoreinfo(text: &str) -> Option<NoteBuffer> {
    let mut words = text.split_whitespace();
    let addr = hex(words.next()?)?;
    let size = hex(words.next()?)?;
    Some(NoteBuffer { addr, size })
}

/// A CPU list (`0-3,5`) as `/sys/devices/system/cpu/possible` prints it.
fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let cpu = part.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        if last < first || last - first > 65535 {
            return None;
        }
        cpus.extend(first..=last);
    }
    Some(cpus)
}

/// The note buffers of the possible CPUs that have a sysfs directory (kexec-tools skips the
/// others: without the directory their address is unknown).
fn cpu_notes(root: &Path) -> Result<Vec<NoteBuffer>, SystemError> {
    let possible_path = "/sys/devices/system/cpu/possible";
    let possible = read_text(root, possible_path)?;
    let cpus = parse_cpu_list(&possible)
        .ok_or_else(|| malformed(root, possible_path, format!("not a CPU list: {possible:?}")))?;
    let mut notes = Vec::with_capacity(cpus.len());
    for cpu in cpus {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}");
        if !root.join(dir.trim_start_matches('/')).is_dir() {
            continue;
        }
        let addr_path = format!("{dir}/crash_notes");
        let size_path = format!("{dir}/crash_notes_size");
        let addr_text = read_text(root, &addr_path)?;
        let addr = hex(&addr_text).ok_or_else(|| {
            malformed(
                root,
                &addr_path,
                format!("not a hex address: {addr_text:?}"),
            )
        })?;
        let size_text = read_text(root, &size_path)?;
        let size = size_text.trim().parse().map_err(|_| {
            malformed(
                root,
                &size_path,
                format!("not a decimal size: {size_text:?}"),
            )
        })?;
        notes.push(NoteBuffer { addr, size });
    }
    Ok(notes)
}

/// The value of the `key` line of `/sys/firmware/efi/systab`: `None` without that line,
/// `Some(None)` when it is not hex.
fn systab_value(text: &str, key: &str) -> Option<Option<u64>> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .map(hex)
}

/// The RSDP of `/sys/firmware/efi/systab`: `ACPI20=` (printed before `ACPI=`), else `ACPI=`.
fn parse_systab_rsdp(text: &str) -> Option<u64> {
    systab_value(text, "ACPI20=")
        .flatten()
        .or_else(|| systab_value(text, "ACPI=").flatten())
}

#[cfg(test)]
mod tests {
    //! The trees under `testdata/` are files recorded from the lab's Debian 6.1 cloud guests
    //! (2 CPUs, `crashkernel=256M`, KASLR; SeaBIOS and OVMF) by a busybox init that printed
    //! them base64 between markers on the console (`/proc/kcore` cut after its program
    //! headers). Expected values: kexec-tools' `kexec -p --debug` in the same boots
    //! (`reference/kexec-p-debug.txt`: crash_notes, vmcoreinfo, `acpi_rsdp=`) and the
    //! OVMF guest's own log ("ACPI 2.0=0x3f77e014").
    use super::*;

    fn case(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/loader/native/testdata")
            .join(name)
    }

    #[test]
    fn gathers_the_bios_guest() {
        let inputs = gather(&case("bios")).unwrap();
        assert_eq!(
            inputs.cpu_notes,
            vec![
                NoteBuffer {
                    addr: 0x3e83_9400,
                    size: 368
                },
                NoteBuffer {
                    addr: 0x3e93_9400,
                    size: 368
                }
            ]
        );
        assert_eq!(
            inputs.vmcoreinfo,
            Some(NoteBuffer {
                addr: 0x11e_8000,
                size: 0x1024
            })
        );
        // kexec -p --debug: "acpi_rsdp=0xf59d0", from boot_params.
        assert_eq!(inputs.acpi_rsdp, Some(0xf59d0));
        assert_eq!(inputs.kernel_map.text_vaddr, 0xffff_ffff_93a0_0000);
        assert_eq!(inputs.boot_params.map(|b| b.len()), Some(4096));
        assert_eq!(inputs.efi, None, "not booted by EFI");
    }

    #[test]
    fn gathers_the_ovmf_guest() {
        let inputs = gather(&case("ovmf")).unwrap();
        // boot_params.acpi_rsdp_addr is 0 under the EFI stub: the system table's ACPI 2.0 RSDP.
        assert_eq!(inputs.acpi_rsdp, Some(0x3f77_e014));
        assert_eq!(inputs.cpu_notes[1].addr, 0x3c13_9400);
    }

    /// `/sys/firmware/efi/{fw_vendor,config_table,runtime-map}` recorded from an OVMF boot of
    /// the lab's kernel whose `efi_info` (`boot_params.efi_info`, 0x1c0) is the recorded
    /// `boot_params`' byte for byte, as are `systab` and the capture log's "efi: SMBIOS=".
    #[test]
    fn gathers_the_ovmf_guests_efi_state() {
        let efi = gather(&case("ovmf")).unwrap().efi.unwrap();
        let desc = |kind, phys_addr, virt_addr, num_pages| EfiMemoryDesc {
            kind,
            phys_addr,
            virt_addr,
            num_pages,
            attribute: 0x8000_0000_0000_000f,
        };
        assert_eq!(
            efi,
            EfiState {
                loader_signature: u32::from_le_bytes(*b"EL64"),
                systab: 0x3f5e_c018,
                memdesc_version: 1,
                secure_boot: 2,
                runtime_map: vec![
                    desc(6, 0x3ff5_0000, 0xffff_fffe_fff5_0000, 0x20),
                    desc(5, 0x3f5e_d000, 0xffff_fffe_ff5e_d000, 0x100),
                    desc(6, 0x3f4e_d000, 0xffff_fffe_ff4e_d000, 0x100),
                    desc(6, 0x3eaa_5000, 0xffff_fffe_feaa_5000, 0xc1),
                    desc(4, 0x3de2_1000, 0xffff_fffe_fde2_1000, 0x1),
                ],
                fw_vendor: 0x3f51_c818,
                config_table: 0x3f5e_cc98,
                smbios: 0x3f51_8000,
            }
        );
    }

    #[test]
    fn runtime_map_entries_are_in_number_order_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("sys/firmware/efi/runtime-map");
        for (n, phys) in [(10, "0xa000"), (2, "0x2000")] {
            let entry = map.join(n.to_string());
            std::fs::create_dir_all(&entry).unwrap();
            for (name, value) in [
                ("type", "0xb"),
                ("phys_addr", phys),
                ("virt_addr", "0x0"),
                ("num_pages", "0x1"),
                ("attribute", "0x1"),
            ] {
                std::fs::write(entry.join(name), format!("{value}\n")).unwrap();
            }
        }
        let got = runtime_map(dir.path()).unwrap().unwrap();
        assert_eq!(
            got.iter().map(|d| d.phys_addr).collect::<Vec<_>>(),
            [0x2000, 0xa000]
        );
        std::fs::write(map.join("2/num_pages"), "12\n").unwrap();
        let err = runtime_map(dir.path()).unwrap_err().to_string();
        assert!(err.contains("runtime-map/2/num_pages"), "{err}");
        assert_eq!(runtime_map(Path::new("/nonexistent-root")).unwrap(), None);
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let err = gather(Path::new("/nonexistent-root")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-root/proc/iomem"),
            "{err}"
        );
        assert_eq!(parse_cpu_list("0-3,5"), Some(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_vmcoreinfo("zz 10"), None);
        assert_eq!(parse_systab_rsdp("SMBIOS=0x1\nACPI=0x20\n"), Some(0x20));
        assert_eq!(systab_value("SMBIOS3=0x1\n", "SMBIOS="), None);
        assert_eq!(systab_value("SMBIOS=zz\n", "SMBIOS="), Some(None));
    }
}
