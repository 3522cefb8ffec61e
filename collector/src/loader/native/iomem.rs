//! `/proc/iomem`: the running kernel's tree of physical address ranges.
//!
//! Each line is `start-end : name` in hexadecimal, `end` inclusive, indented by two spaces per
//! level of nesting (`Kernel code` and `Crash kernel` sit inside their `System RAM`). The loader
//! needs the RAM the dead kernel used, the crash reservation, the kernel image's physical start
//! and the firmware ranges the capture kernel must keep seeing (ACPI, NVS, reserved, PMEM).
//! Parsing is pure and never panics: a malformed line is an error naming its number.

/// One range of `/proc/iomem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive, as the file prints it).
    pub end: u64,
    /// The resource's name (`System RAM`, `Crash kernel`, ...).
    pub name: String,
    /// Nesting level: 0 for top-level ranges.
    pub depth: usize,
}

/// A physical range `[start, end)` with `end` exclusive, as the loader computes with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Why `/proc/iomem` text cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IomemError {
    /// A line is not `start-end : name`.
    #[error("line {line}: expected `start-end : name`, found {text:?}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A bound is not a hexadecimal number.
    #[error("line {line}: {text:?} is not a hexadecimal address")]
    Address {
        /// 1-based line number.
        line: usize,
        /// The offending field.
        text: String,
    },
    /// `end` lies before `start`.
    #[error("line {line}: range {start:#x}-{end:#x} ends before it starts")]
    Reversed {
        /// 1-based line number.
        line: usize,
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// All ranges print as 0 to readers without CAP_SYS_ADMIN.
    #[error(
        "line {line}: every address reads 0: /proc/iomem hides addresses from non-root readers"
    )]
    Hidden {
        /// 1-based line number of the first zeroed range.
        line: usize,
    },
}

/// The parsed file: every range in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Iomem {
    /// The ranges, in file order.
    pub resources: Vec<Resource>,
}

/// Parses `/proc/iomem` text.
pub(crate) fn parse(text: &str) -> Result<Iomem, IomemError> {
    let mut resources = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let syntax = || IomemError::Syntax {
            line,
            text: raw.to_owned(),
        };
        let (range, name) = raw.trim_start().split_once(" : ").ok_or_else(syntax)?;
        let (start, end) = range.split_once('-').ok_or_else(syntax)?;
        let hex = |field: &str| {
            u64::from_str_radix(field, 16).map_err(|_| IomemError::Address {
                line,
                text: field.to_owned(),
            })
        };
        let (start, end) = (hex(start)?, hex(end)?);
        if end < start {
            return Err(IomemError::Reversed { line, start, end });
        }
        resources.push(Resource {
            start,
            end,
            name: name.trim_end().to_owned(),
            depth: indent / 2,
        });
    }
    if !resources.is_empty() && resources.iter().all(|r| r.start == 0 && r.end == 0) {
        return Err(IomemError::Hidden { line: 1 });
    }
    Ok(Iomem { resources })
}

impl Iomem {
    /// Ranges whose name is exactly `name`, at any depth, sorted by address.
    pub fn named(&self, name: &str) -> Vec<Range> {
        let mut ranges: Vec<Range> = self
            .resources
            .iter()
            .filter(|r| r.name == name)
            .map(to_range)
            .collect();
        ranges.sort();
        ranges
    }

    /// The RAM the running kernel uses: every range whose name contains `System RAM` (also
    /// `System RAM (kmem)` below `Persistent Memory` and virtio-mem's), as kexec-tools'
    /// `get_crash_memory_ranges` takes them, without ranges nested in another RAM range.
    pub fn system_ram(&self) -> Vec<Range> {
        let mut ranges: Vec<Range> = self
            .resources
            .iter()
            .filter(|r| r.name.contains("System RAM"))
            .map(to_range)
            .collect();
        ranges.sort();
        let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match out.last_mut() {
                Some(last) if range.start < last.end => last.end = last.end.max(range.end),
                _ => out.push(range),
            }
        }
        out
    }

    /// The crash reservations (`Crash kernel`), lowest first; x86 may have a low one below
    /// 4 GiB besides the main one.
    pub fn crash_kernel(&self) -> Vec<Range> {
        self.named("Crash kernel")
    }

    /// Start of `Kernel code`: the physical address of `_text`.
    pub fn kernel_code_start(&self) -> Option<u64> {
        self.named("Kernel code").first().map(|r| r.start)
    }
}

fn to_range(resource: &Resource) -> Range {
    Range {
        start: resource.start,
        end: resource.end.saturating_add(1),
    }
}

/// `ranges` minus `hole`, keeping order.
pub(crate) fn subtract(ranges: &[Range], hole: Range) -> Vec<Range> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for range in ranges {
        if hole.end <= range.start || hole.start >= range.end {
            out.push(*range);
            continue;
        }
        if range.start < hole.start {
            out.push(Range {
                start: range.start,
                end: hole.start,
            });
        }
        if hole.end < range.end {
            out.push(Range {
                start: hole.end,
                end: range.end,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! The inputs are `/proc/iomem` of real lab guests (Debian 6.1 cloud kernel, 1 GiB,
    //! `crashkernel=256M`, KASLR), recorded under SeaBIOS and OVMF by a busybox init that printed
    //! the files base64 between markers on the console. Expected values are read off the recorded
    //! text itself and, for the crash region, off the kernel's own log line ("Reserving 256MB of
    //! memory at 736MB for crashkernel").
    use super::*;

    const BIOS: &str = include_str!("testdata/bios/proc/iomem");
    const OVMF: &str = include_str!("testdata/ovmf/proc/iomem");

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    #[test]
    fn parses_the_bios_guest() {
        let iomem = parse(BIOS).unwrap();
        assert_eq!(iomem.resources.len(), 22);
        assert_eq!(
            iomem.resources[8],
            Resource {
                start: 0x0ee0_0000,
                end: 0x0fc0_1ef1,
                name: "Kernel code".into(),
                depth: 1
            }
        );
        // "Reserving 256MB of memory at 736MB for crashkernel": 736 MiB = 0x2e000000.
        assert_eq!(iomem.crash_kernel(), vec![r(0x2e00_0000, 0x3e00_0000)]);
        assert_eq!(iomem.crash_kernel()[0].len(), 256 << 20);
        assert_eq!(iomem.kernel_code_start(), Some(0x0ee0_0000));
        assert_eq!(
            iomem.system_ram(),
            vec![r(0x1000, 0x9fc00), r(0x10_0000, 0x3ffe_0000)]
        );
        assert_eq!(
            iomem.named("Reserved"),
            vec![
                r(0, 0x1000),
                r(0x9fc00, 0xa0000),
                r(0xf0000, 0x10_0000),
                r(0x3ffe_0000, 0x4000_0000),
                r(0xfffc_0000, 0x1_0000_0000),
                r(0xfd_0000_0000, 0x100_0000_0000),
            ]
        );
    }

    #[test]
    fn parses_the_ovmf_guest() {
        let iomem = parse(OVMF).unwrap();
        assert_eq!(iomem.crash_kernel(), vec![r(0x2800_0000, 0x3800_0000)]);
        assert_eq!(iomem.kernel_code_start(), Some(0x06a0_0000));
        assert_eq!(iomem.system_ram().len(), 7);
        assert_eq!(
            iomem.named("ACPI Tables"),
            vec![r(0x3f76_d000, 0x3f77_f000)]
        );
        assert_eq!(iomem.named("ACPI Non-volatile Storage").len(), 5);
    }

    #[test]
    fn subtracting_splits_and_trims() {
        let ram = [r(0x1000, 0x9fc00), r(0x10_0000, 0x4000_0000)];
        assert_eq!(
            subtract(&ram, r(0x2e00_0000, 0x3e00_0000)),
            vec![
                r(0x1000, 0x9fc00),
                r(0x10_0000, 0x2e00_0000),
                r(0x3e00_0000, 0x4000_0000)
            ]
        );
        assert_eq!(subtract(&ram, r(0, 0x10_0000)), vec![ram[1]]);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let text = "00000000-00000fff : Reserved\n00001000 : System RAM\n";
        assert_eq!(
            parse(text),
            Err(IomemError::Syntax {
                line: 2,
                text: "00001000 : System RAM".into()
            })
        );
        assert!(matches!(
            parse("0000zz00-00000fff : Reserved\n"),
            Err(IomemError::Address { line: 1, .. })
        ));
        assert!(matches!(
            parse("a\n00002000-00000fff : Reserved\n"),
            Err(IomemError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            parse("00002000-00000fff : Reserved\n"),
            Err(IomemError::Reversed { line: 1, .. })
        ));
        // What a non-root reader sees.
        assert_eq!(
            parse("00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n"),
            Err(IomemError::Hidden { line: 1 })
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }
    }
}
