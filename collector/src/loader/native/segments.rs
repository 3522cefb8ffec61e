//! Where each segment goes in the crash region.
//!
//! kexec-tools puts everything in the highest `Crash kernel` range (the kernel refuses a crash
//! image outside `crashk_res`) and allocates top-down: the ELF core header at the top, then the
//! purgatory, `boot_params` with the command line, the protected-mode kernel (aligned to its
//! `kernel_alignment`, its memory size the run-time `init_size`) and the initrd below it. That
//! leaves the bottom of the region, the larger part, to the capture kernel's own allocations.
//! Every segment is page-aligned in address and size, as `kexec_load` requires
//! (`sanity_check_segment_list`: EADDRNOTAVAIL otherwise), and none overlaps another.

use super::iomem::Range;

/// The kernel's page size; `kexec_load` wants segment addresses and sizes in whole pages.
pub(crate) const PAGE: u64 = 4096;
/// `KEXEC_SEGMENT_MAX`.
pub(crate) const MAX_SEGMENTS: usize = 16;

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The ELF core header (`elfcorehdr=`).
    CoreHeader,
    /// The purgatory: sets up the CPU and jumps to the kernel.
    Purgatory,
    /// `boot_params`, the command line and setup_data.
    BootParams,
    /// The protected-mode kernel.
    Kernel,
    /// The initramfs.
    Initrd,
}

impl Kind {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::CoreHeader => "elfcorehdr",
            Self::Purgatory => "purgatory",
            Self::BootParams => "boot_params",
            Self::Kernel => "kernel",
            Self::Initrd => "initrd",
        }
    }
}

/// What a segment needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    /// What it is.
    pub kind: Kind,
    /// Bytes in memory (rounded up to pages here).
    pub memsz: u64,
    /// Alignment of its address (at least a page).
    pub align: u64,
}

/// Where a segment went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    /// What it is.
    pub kind: Kind,
    /// Physical address.
    pub mem: u64,
    /// Bytes in memory, whole pages.
    pub memsz: u64,
}

impl Placed {
    /// The range it covers.
    pub fn range(&self) -> Range {
        Range {
            start: self.mem,
            end: self.mem + self.memsz,
        }
    }
}

/// Why the segments do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SegmentError {
    /// No `Crash kernel` range: `crashkernel=` is missing from the running kernel's command line
    /// or the reservation failed.
    #[error(
        "no crash kernel memory reserved (no \"Crash kernel\" in /proc/iomem): boot with crashkernel="
    )]
    NoCrashRegion,
    /// The reservation is too small for the segments.
    #[error(
        "the crash kernel region {start:#x}-{end:#x} has {reserved} bytes, the segments need at least {needed} (the {what} did not fit)",
        start = region.start, end = region.end
    )]
    TooSmall {
        /// The region.
        region: Range,
        /// Its size.
        reserved: u64,
        /// The sum of the segments' sizes, without alignment gaps.
        needed: u64,
        /// The first segment that did not fit.
        what: &'static str,
    },
    /// More segments than `kexec_load` takes.
    #[error("{0} segments are more than kexec_load's {MAX_SEGMENTS}")]
    TooMany(usize),
}

/// Places `requests` top-down in `region`, in order.
pub(crate) fn place(region: Range, requests: &[Request]) -> Result<Vec<Placed>, SegmentError> {
    if requests.len() > MAX_SEGMENTS {
        return Err(SegmentError::TooMany(requests.len()));
    }
    let needed: u64 = requests
        .iter()
        .map(|r| r.memsz.next_multiple_of(PAGE))
        .fold(0, u64::saturating_add);
    let mut top = region.end / PAGE * PAGE;
    let mut placed = Vec::with_capacity(requests.len());
    for request in requests {
        let memsz = request.memsz.max(1).next_multiple_of(PAGE);
        let align = request.align.max(PAGE);
        let too_small = || SegmentError::TooSmall {
            region,
            reserved: region.len(),
            needed,
            what: request.kind.name(),
        };
        let mem = top.checked_sub(memsz).ok_or_else(too_small)? / align * align;
        if mem < region.start {
            return Err(too_small());
        }
        placed.push(Placed {
            kind: request.kind,
            mem,
            memsz,
        });
        top = mem;
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    //! Expected addresses follow kexec-tools' top-down allocation; its `kexec -p --debug` in the
    //! BIOS lab guest (region 0x2e000000-0x3dffffff) put the core header at 0x3df5d000 (below
    //! its 640 KiB backup, which rkdump does not need), the purgatory below, and "Loaded 64bit
    //! kernel at 0x3aa00000" with memsz 0x3378000 (init_size), initrd below it.
    use super::*;

    const REGION: Range = Range {
        start: 0x2e00_0000,
        end: 0x3e00_0000,
    };

    fn requests(initrd: u64) -> Vec<Request> {
        vec![
            Request {
                kind: Kind::CoreHeader,
                memsz: 16 << 10,
                align: PAGE,
            },
            Request {
                kind: Kind::Purgatory,
                memsz: 224,
                align: PAGE,
            },
            Request {
                kind: Kind::BootParams,
                memsz: 4096 + 200,
                align: PAGE,
            },
            Request {
                kind: Kind::Kernel,
                memsz: 0x337_8000,
                align: 0x20_0000,
            },
            Request {
                kind: Kind::Initrd,
                memsz: initrd,
                align: PAGE,
            },
        ]
    }

    #[test]
    fn places_top_down_like_kexec_tools() {
        let placed = place(REGION, &requests(0x1e_4a00)).unwrap();
        let addrs: Vec<_> = placed.iter().map(|p| (p.mem, p.memsz)).collect();
        assert_eq!(
            addrs,
            vec![
                (0x3dff_c000, 0x4000),
                (0x3dff_b000, 0x1000),
                (0x3dff_9000, 0x2000),
                // The highest 2 MiB multiple below; kexec-tools', with 0xae000 more above it
                // (backup region, a 36 KiB purgatory, 24 KiB boot_params), was 0x3aa00000.
                (0x3ac0_0000, 0x337_8000),
                (0x3aa1_b000, 0x1e_5000),
            ]
        );
        for (i, a) in placed.iter().enumerate() {
            assert!(a.mem >= REGION.start && a.range().end <= REGION.end);
            for b in &placed[i + 1..] {
                assert!(a.range().end <= b.mem || b.range().end <= a.mem);
            }
        }
    }

    #[test]
    fn too_small_says_reserved_and_needed() {
        let err = place(REGION, &requests(210 << 20)).unwrap_err();
        assert_eq!(
            err,
            SegmentError::TooSmall {
                region: REGION,
                reserved: 256 << 20,
                needed: 0x4000 + 0x1000 + 0x2000 + 0x337_8000 + (210 << 20),
                what: "initrd",
            }
        );
        assert!(err.to_string().contains("268435456 bytes"));
    }
}
