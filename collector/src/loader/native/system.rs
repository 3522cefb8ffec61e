//! The only I/O of the native loader: reads what the running kernel says about itself.
//!
//! * `/proc/iomem`: RAM, the crash reservation, `Kernel code`, firmware ranges;
//! * `/proc/kcore`: only its ELF header and program headers (the kernel image's `PT_LOAD` and the
//!   direct map), never its contents; `/proc/kallsyms` is not read, so
//!   `kernel.kptr_restrict=2` does not matter;
//! * `/sys/kernel/vmcoreinfo` (`<hex address> <hex size>`), each possible CPU's
//!   `/sys/devices/system/cpu/cpuN/crash_notes` (hex address) and `crash_notes_size` (decimal);
//! * `/sys/kernel/boot_params/data`: the running kernel's zero page;
//! * `/sys/firmware/efi/systab`: the ACPI RSDP under EFI (`ACPI20=` before `ACPI=`).
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
    Ok(Inputs {
        iomem,
        kernel_map,
        vmcoreinfo,
        cpu_notes,
        boot_params,
        acpi_rsdp,
    })
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

/// The RSDP of `/sys/firmware/efi/systab`: `ACPI20=` (printed before `ACPI=`), else `ACPI=`.
fn parse_systab_rsdp(text: &str) -> Option<u64> {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(hex)
    };
    value("ACPI20=").or_else(|| value("ACPI="))
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
    }

    #[test]
    fn gathers_the_ovmf_guest() {
        let inputs = gather(&case("ovmf")).unwrap();
        // boot_params.acpi_rsdp_addr is 0 under the EFI stub: the system table's ACPI 2.0 RSDP.
        assert_eq!(inputs.acpi_rsdp, Some(0x3f77_e014));
        assert_eq!(inputs.cpu_notes[1].addr, 0x3c13_9400);
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
    }
}
