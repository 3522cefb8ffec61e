//! The `kexec_load(2)` path: rkdump builds every segment of an x86_64 bzImage crash kernel
//! itself, as kexec-tools does, for when `kexec_file_load` is refused for a reason
//! `kexec_load` does not have (signatures enforced without lockdown: ENOKEY).
//!
//! ```text
//! system.rs ─► Inputs ─┬─► bzimage.rs      setup header: checks, init_size, alignment
//! (/proc/iomem,        ├─► core_header.rs  ELF64 core header: notes, text, RAM
//!  /proc/kcore phdrs,  ├─► segments.rs     top-down placement in the highest crash range
//!  sysfs notes,        ├─► boot_params.rs  zero page, e820, EFI state, command line
//!  boot_params, EFI)   └─► purgatory.rs    trampoline over the other segments' digest
//!                             │
//!                          plan() ─► Plan ─► load(): sys::kexec_load(entry, segments,
//!                                                     KEXEC_ON_CRASH | KEXEC_ARCH_X86_64)
//! ```
//!
//! [`plan`] is pure (tests build full plans from recorded inputs); [`load`] gathers the running
//! kernel's inputs, plans and makes the one syscall.

pub(crate) mod boot_params;
pub(crate) mod bzimage;
pub(crate) mod core_header;
pub(crate) mod iomem;
pub(crate) mod purgatory;
pub(crate) mod segments;
pub(crate) mod system;

use std::borrow::Cow;
use std::path::Path;

use crate::sys;

use self::boot_params::{BootParamsError, BootParamsInput, Placement};
use self::bzimage::BzImageError;
use self::core_header::{CoreHeaderError, CoreLayout};
use self::iomem::Range;
use self::purgatory::PurgatoryError;
use self::segments::{Kind, PAGE, Request as Need, SegmentError};
use self::system::{Inputs, SystemError};

/// What to load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The bzImage.
    pub kernel: &'a [u8],
    /// The initramfs (empty for none).
    pub initrd: &'a [u8],
    /// The capture kernel's command line, without the crash parameters the loader adds.
    pub cmdline: &'a str,
}

/// Why the native load failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NativeError {
    /// The running kernel's description cannot be read.
    #[error(transparent)]
    Inputs(#[from] SystemError),
    /// The kernel image cannot be loaded this way (ENOEXEC-like).
    #[error("the kernel image: {0}")]
    Image(#[from] BzImageError),
    /// The core header cannot be built.
    #[error("the ELF core header: {0}")]
    CoreHeader(#[from] CoreHeaderError),
    /// The segments do not fit in the crash region.
    #[error(transparent)]
    Layout(#[from] SegmentError),
    /// `boot_params` or the command line cannot be built.
    #[error("boot_params: {0}")]
    BootParams(#[from] BootParamsError),
    /// The purgatory cannot be built.
    #[error("the purgatory: {0}")]
    Purgatory(#[from] PurgatoryError),
    /// The purgatory came out larger than the room planned for it.
    #[error("the purgatory grew from {planned} to {built} bytes between sizing and building")]
    PurgatorySize {
        /// Bytes planned.
        planned: usize,
        /// Bytes built.
        built: usize,
    },
    /// `kexec_load(2)` itself failed; the caller explains the errno.
    #[error("kexec_load: {0}")]
    Syscall(std::io::Error),
}

/// One segment of a plan.
#[derive(Debug, Clone)]
pub(crate) struct Segment<'a> {
    /// What it holds.
    pub kind: Kind,
    /// Physical address.
    pub mem: u64,
    /// Size in memory (whole pages).
    pub memsz: u64,
    /// The bytes copied there (the rest of `memsz` is zeroed).
    pub buf: Cow<'a, [u8]>,
}

/// Everything `kexec_load` is given.
#[derive(Debug, Clone)]
pub(crate) struct Plan<'a> {
    /// The segments, by address.
    pub segments: Vec<Segment<'a>>,
    /// Where execution starts: the purgatory.
    pub entry: u64,
    /// The capture kernel's final command line.
    pub cmdline: String,
}

/// A segment as loaded, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadedSegment {
    /// What it holds (`kernel`, `initrd`, `elfcorehdr`, ...).
    pub what: &'static str,
    /// Physical address.
    pub mem: u64,
    /// Size in memory.
    pub memsz: u64,
    /// Bytes copied.
    pub bufsz: u64,
}

/// What was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The segments, by address.
    pub segments: Vec<LoadedSegment>,
    /// The entry point (the purgatory).
    pub entry: u64,
    /// The capture kernel's command line.
    pub cmdline: String,
}

fn len64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Builds every segment for `request` from the running kernel's `inputs`.
pub(crate) fn plan<'a>(inputs: &Inputs, request: &Request<'a>) -> Result<Plan<'a>, NativeError> {
    let header = bzimage::parse(request.kernel, inputs.kernel_map.five_level())?;
    let crash = inputs.iomem.crash_kernel();
    // kexec-tools (get_crash_kernel_load_range) always uses the highest range.
    let region = *crash.last().ok_or(SegmentError::NoCrashRegion)?;
    let text_paddr = inputs
        .iomem
        .kernel_code_start()
        .ok_or(CoreHeaderError::NoText)?;
    let core = core_header::build(&CoreLayout {
        cpu_notes: inputs.cpu_notes.clone(),
        vmcoreinfo: inputs.vmcoreinfo,
        kernel: inputs.kernel_map,
        text_paddr,
        ram: core_header::dump_ranges(&inputs.iomem.system_ram(), &crash),
    })?;
    let protected = &request.kernel[header.kernel_offset()..];

    let core_need = Need {
        kind: Kind::CoreHeader,
        memsz: len64(core.len()).max(core_header::MIN_MEMSZ),
        align: PAGE,
    };
    // The header goes first (top), so its address is known before the command line's length.
    let core_at = segments::place(region, &[core_need])?[0];
    // With EFI state passed, the RSDP goes only in boot_params (as the kernel's loader does).
    let cmdline_rsdp = inputs.acpi_rsdp.filter(|_| inputs.efi.is_none());
    let cmdline = boot_params::crash_cmdline(
        request.cmdline,
        core_at.mem,
        cmdline_rsdp,
        header.cmdline_size,
    )?;
    let e820 = boot_params::crash_e820(&inputs.iomem, &crash, core_at.range());
    let boot_params_len = boot_params::layout(
        cmdline.len(),
        e820.len(),
        inputs.efi.as_ref().map(|efi| efi.runtime_map.len()),
    )
    .len;
    let others = if request.initrd.is_empty() { 3 } else { 4 };
    let purgatory_len = purgatory::image(&purgatory::Params {
        entry: 0,
        boot_params: 0,
        regions: (0..others)
            .map(|_| purgatory::Region { start: 0, len: 0 })
            .collect(),
        digest: [0; 32],
    })?
    .len();

    let mut needs = vec![
        core_need,
        Need {
            kind: Kind::Purgatory,
            memsz: len64(purgatory_len),
            align: PAGE,
        },
        Need {
            kind: Kind::BootParams,
            memsz: len64(boot_params_len),
            align: PAGE,
        },
        Need {
            kind: Kind::Kernel,
            memsz: u64::from(header.init_size),
            align: u64::from(header.kernel_alignment),
        },
    ];
    if !request.initrd.is_empty() {
        needs.push(Need {
            kind: Kind::Initrd,
            memsz: len64(request.initrd.len()),
            align: PAGE,
        });
    }
    let placed = segments::place(region, &needs)?;
    let at = |kind| placed.iter().find(|p| p.kind == kind).copied();
    let (Some(purgatory_at), Some(params_at), Some(kernel_at)) =
        (at(Kind::Purgatory), at(Kind::BootParams), at(Kind::Kernel))
    else {
        unreachable!("place() returns one placement per request")
    };
    let initrd_at = at(Kind::Initrd);

    let params = boot_params::build(&BootParamsInput {
        running: inputs.boot_params.as_deref(),
        image: request.kernel,
        header: &header,
        cmdline: &cmdline,
        e820: &e820,
        acpi_rsdp: inputs.acpi_rsdp,
        efi: inputs.efi.as_ref(),
        placement: Placement {
            boot_params: params_at.mem,
            kernel: kernel_at.mem,
            initrd: initrd_at.map(|p| Range {
                start: p.mem,
                end: p.mem + len64(request.initrd.len()),
            }),
        },
    })?;

    let mut segments = vec![
        Segment {
            kind: Kind::CoreHeader,
            mem: core_at.mem,
            memsz: core_at.memsz,
            buf: Cow::Owned(core),
        },
        Segment {
            kind: Kind::BootParams,
            mem: params_at.mem,
            memsz: params_at.memsz,
            buf: Cow::Owned(params),
        },
        Segment {
            kind: Kind::Kernel,
            mem: kernel_at.mem,
            memsz: kernel_at.memsz,
            buf: Cow::Borrowed(protected),
        },
    ];
    if let Some(initrd_at) = initrd_at {
        segments.push(Segment {
            kind: Kind::Initrd,
            mem: initrd_at.mem,
            memsz: initrd_at.memsz,
            buf: Cow::Borrowed(request.initrd),
        });
    }
    let regions = segments
        .iter()
        .map(|s| purgatory::Region {
            start: s.mem,
            len: len64(s.buf.len()),
        })
        .collect();
    let digest = purgatory::digest(segments.iter().map(|s| &s.buf[..]));
    let code = purgatory::image(&purgatory::Params {
        entry: kernel_at.mem + bzimage::ENTRY_64_OFFSET,
        boot_params: params_at.mem,
        regions,
        digest,
    })?;
    if code.len() > purgatory_len {
        return Err(NativeError::PurgatorySize {
            planned: purgatory_len,
            built: code.len(),
        });
    }
    segments.push(Segment {
        kind: Kind::Purgatory,
        mem: purgatory_at.mem,
        memsz: purgatory_at.memsz,
        buf: Cow::Owned(code),
    });
    segments.sort_by_key(|s| s.mem);
    Ok(Plan {
        segments,
        entry: purgatory_at.mem + purgatory::ENTRY_OFFSET,
        cmdline,
    })
}

/// Loads `request` as the crash kernel of the running system with `kexec_load(2)`.
pub(crate) fn load(request: &Request<'_>) -> Result<Loaded, NativeError> {
    let inputs = system::gather(Path::new("/"))?;
    let plan = plan(&inputs, request)?;
    let raw: Vec<sys::KexecSegment<'_>> = plan
        .segments
        .iter()
        .map(|s| sys::KexecSegment {
            buf: &s.buf,
            mem: s.mem,
            memsz: s.memsz,
        })
        .collect();
    sys::kexec_load(
        plan.entry,
        &raw,
        sys::KEXEC_ON_CRASH | sys::KEXEC_ARCH_X86_64,
    )
    .map_err(NativeError::Syscall)?;
    Ok(Loaded {
        segments: plan
            .segments
            .iter()
            .map(|s| LoadedSegment {
                what: s.kind.name(),
                mem: s.mem,
                memsz: s.memsz,
                bufsz: len64(s.buf.len()),
            })
            .collect(),
        entry: plan.entry,
        cmdline: plan.cmdline,
    })
}

#[cfg(test)]
mod tests {
    //! Full plans from the recorded guests (see `system.rs`) with the head of the real
    //! bzImage padded to its size and a stand-in initrd of the lab capture image's size
    //! (0x1e4a00 bytes, as kexec-tools loaded it). Expected: every segment inside the crash
    //! region reported by the kernel ("Reserving 256MB of memory at 736MB"), page-aligned,
    //! disjoint, the kernel 2 MiB-aligned with memsz = init_size 0x3378000 (kexec-tools put it
    //! at 0x3aa00000 in the same region, 2 MiB lower for its larger segments above), and the command line starting with
    //! elfcorehdr= the header's address.
    use super::*;
    use crate::format::bytes;

    fn image() -> Vec<u8> {
        let mut image = include_bytes!("testdata/vmlinuz-6.1.0-57-cloud-amd64.head").to_vec();
        image.resize(14_190_528, 0);
        image
    }

    fn inputs(case: &str) -> Inputs {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/loader/native/testdata")
            .join(case);
        system::gather(&root).unwrap()
    }

    fn check(case: &str, region: Range) -> Plan<'static> {
        let kernel: &'static [u8] = image().leak();
        let initrd: &'static [u8] = vec![0x5a; 0x1e_4a00].leak();
        let plan = plan(
            &inputs(case),
            &Request {
                kernel,
                initrd,
                cmdline: "console=ttyS0 irqpoll nr_cpus=1 reset_devices panic=-1",
            },
        )
        .unwrap();
        assert_eq!(plan.segments.len(), 5);
        for (i, s) in plan.segments.iter().enumerate() {
            assert_eq!(s.mem % PAGE, 0);
            assert_eq!(s.memsz % PAGE, 0);
            assert!(len64(s.buf.len()) <= s.memsz);
            assert!(s.mem >= region.start && s.mem + s.memsz <= region.end);
            if let Some(next) = plan.segments.get(i + 1) {
                assert!(s.mem + s.memsz <= next.mem);
            }
        }
        let kernel = plan
            .segments
            .iter()
            .find(|s| s.kind == Kind::Kernel)
            .unwrap();
        assert_eq!((kernel.mem % 0x20_0000, kernel.memsz), (0, 0x337_8000));
        assert_eq!(kernel.buf.len(), 0xd8_37c0);
        let core = plan
            .segments
            .iter()
            .find(|s| s.kind == Kind::CoreHeader)
            .unwrap();
        assert!(
            plan.cmdline
                .starts_with(&format!("elfcorehdr=0x{:x} ", core.mem))
        );
        let purgatory = plan
            .segments
            .iter()
            .find(|s| s.kind == Kind::Purgatory)
            .unwrap();
        assert_eq!(plan.entry, purgatory.mem + purgatory::ENTRY_OFFSET);
        plan
    }

    #[test]
    fn plans_the_bios_guest() {
        let plan = check(
            "bios",
            Range {
                start: 0x2e00_0000,
                end: 0x3e00_0000,
            },
        );
        let kernel = plan
            .segments
            .iter()
            .find(|s| s.kind == Kind::Kernel)
            .unwrap();
        assert_eq!(kernel.mem, 0x3ac0_0000);
        assert!(plan.cmdline.contains(" acpi_rsdp=0xf59d0 "));
    }

    #[test]
    fn plans_the_ovmf_guest() {
        let plan = check(
            "ovmf",
            Range {
                start: 0x2800_0000,
                end: 0x3800_0000,
            },
        );
        // EFI state passed (the recorded runtime map): the RSDP only in boot_params, from
        // /sys/firmware/efi/systab, as the kernel's loader puts it.
        assert!(!plan.cmdline.contains("acpi_rsdp="), "{}", plan.cmdline);
        let params = plan
            .segments
            .iter()
            .find(|s| s.kind == Kind::BootParams)
            .unwrap();
        assert_eq!(bytes::u64_le(&params.buf, 0x70).unwrap(), 0x3f77_e014);
        assert_eq!(&params.buf[0x1c0..0x1c4], b"EL64");
        let memmap = u64::from(bytes::u32_le(&params.buf, 0x1d0).unwrap());
        assert!(memmap > params.mem && memmap < params.mem + len64(params.buf.len()));
        assert_eq!(bytes::u32_le(&params.buf, 0x1d4).unwrap(), 5 * 40);
    }

    #[test]
    fn plans_the_ovmf_guest_without_a_runtime_map() {
        let kernel: &'static [u8] = image().leak();
        let mut inputs = inputs("ovmf");
        inputs.efi = None;
        let plan = plan(
            &inputs,
            &Request {
                kernel,
                initrd: &[],
                cmdline: "console=ttyS0",
            },
        )
        .unwrap();
        // No EFI passed: the RSDP from /sys/firmware/efi/systab on the command line too.
        assert!(plan.cmdline.contains(" acpi_rsdp=0x3f77e014 "));
        let params = plan
            .segments
            .iter()
            .find(|s| s.kind == Kind::BootParams)
            .unwrap();
        assert_eq!(&params.buf[0x1c0..0x1e0], &[0; 32]);
        assert_eq!(bytes::u64_le(&params.buf, 0x250).unwrap(), 0);
    }

    #[test]
    fn a_kernel_without_a_header_is_an_image_error() {
        let err = plan(
            &inputs("bios"),
            &Request {
                kernel: &[0; 4096],
                initrd: &[],
                cmdline: "",
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, NativeError::Image(BzImageError::NoHeader)),
            "{err}"
        );
    }
}
