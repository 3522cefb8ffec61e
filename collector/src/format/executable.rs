//! What a program or a kernel module needs beside itself, read from its bytes: the ELF program
//! interpreter, `DT_NEEDED` libraries and `DT_RUNPATH`/`DT_RPATH`, a script's `#!` line, and a
//! module's `.modinfo` strings (`firmware=`, `softdep=`).
//!
//! The image builder copies a program with everything this module names, resolved on the
//! loader's search path (`image::libs`). ELF parsing is the `object` crate's; only 64-bit
//! little-endian objects are accepted, as everything else on x86_64 is foreign.

use object::elf;
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};

/// Why the bytes are not a usable ELF object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutableError {
    /// Not an ELF64 little-endian object, or its headers do not parse.
    #[error("not a 64-bit little-endian ELF object: {0}")]
    NotElf(String),
    /// The dynamic section or its strings are damaged.
    #[error("damaged dynamic section: {0}")]
    Dynamic(String),
}

/// What an ELF program or library needs at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// `PT_INTERP`: the dynamic loader (`/lib64/ld-linux-x86-64.so.2`); `None` when static.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` sonames, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or `DT_RPATH` when there is no RUNPATH), split at `:`.
    pub runpath: Vec<String>,
}

/// Whether `bytes` start like an ELF object.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads the interpreter and dynamic entries of an ELF64 little-endian object.
pub fn needs(bytes: &[u8]) -> Result<Needs, ExecutableError> {
    let file = ElfFile64::<object::Endianness>::parse(bytes)
        .map_err(|e| ExecutableError::NotElf(e.to_string()))?;
    if !file.elf_header().is_little_endian() {
        return Err(ExecutableError::NotElf("big-endian".into()));
    }
    let endian = file.endian();
    let mut found = Needs::default();
    for header in file.elf_program_headers() {
        if let Some(interp) = header
            .interpreter(endian, bytes)
            .map_err(|e| ExecutableError::NotElf(e.to_string()))?
        {
            found.interpreter = Some(text(interp));
        }
    }
    let table = file
        .elf_section_table()
        .dynamic_table(endian, bytes)
        .map_err(|e| ExecutableError::Dynamic(e.to_string()))?;
    let mut rpath = Vec::new();
    for entry in table.dynamics() {
        let tag = entry.d_tag(endian);
        if tag == elf::DT_NULL {
            break;
        }
        if tag != elf::DT_NEEDED && tag != elf::DT_RUNPATH && tag != elf::DT_RPATH {
            continue;
        }
        let offset = u32::try_from(entry.d_val(endian))
            .map_err(|_| ExecutableError::Dynamic("string offset past 4 GiB".into()))?;
        let value = table.strings().get(offset).map_err(|()| {
            ExecutableError::Dynamic(format!(
                "string at offset {offset} is outside the string table"
            ))
        })?;
        let value = text(value);
        match tag {
            elf::DT_NEEDED => found.needed.push(value),
            elf::DT_RUNPATH => found.runpath = split_path(&value),
            _ => rpath = split_path(&value),
        }
    }
    if found.runpath.is_empty() {
        found.runpath = rpath;
    }
    Ok(found)
}

fn split_path(value: &str) -> Vec<String> {
    value
        .split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A script's interpreter: the first word after `#!` (`/bin/sh` of `#!/bin/sh -e`), or `None`
/// when the bytes do not start with `#!`.
pub fn shebang(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let line = String::from_utf8_lossy(line);
    line.split_whitespace().next().map(str::to_owned)
}

/// The first argument of a `#!` line (`bash` of `#!/usr/bin/env bash`), if any.
pub fn shebang_argument(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let line = String::from_utf8_lossy(line);
    line.split_whitespace().nth(1).map(str::to_owned)
}

/// The `key=value` strings of a kernel module's `.modinfo` section, in order.
pub fn modinfo(bytes: &[u8]) -> Result<Vec<(String, String)>, ExecutableError> {
    let file = ElfFile64::<object::Endianness>::parse(bytes)
        .map_err(|e| ExecutableError::NotElf(e.to_string()))?;
    let endian = file.endian();
    let sections = file.elf_section_table();
    let Some((_, section)) = sections.section_by_name(endian, b".modinfo") else {
        return Ok(Vec::new());
    };
    let data = object::read::elf::SectionHeader::data(section, endian, bytes)
        .map_err(|e| ExecutableError::NotElf(e.to_string()))?;
    Ok(data
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (key, value) = entry.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // The ELF spec's numbers (object 0.40 wraps them in newtypes).
    const DT_NEEDED: i64 = 1;
    const DT_RPATH: i64 = 15;
    const DT_RUNPATH: i64 = 29;
    const SHT_PROGBITS: u32 = 1;
    const SHT_STRTAB: u32 = 3;
    const SHT_DYNAMIC: u32 = 6;
    const PT_INTERP: u32 = 3;

    /// Builds a minimal ELF64 shared object with a PT_INTERP, a `.dynamic` with the given
    /// entries, its `.dynstr` and a `.modinfo`, laid out by hand as the ELF spec says.
    pub(crate) fn elf(interp: Option<&str>, dynamic: &[(i64, &str)], modinfo: &[u8]) -> Vec<u8> {
        let mut dynstr = vec![0u8];
        let mut entries = Vec::new();
        for (tag, value) in dynamic {
            entries.push((*tag, dynstr.len() as u64));
            dynstr.extend_from_slice(value.as_bytes());
            dynstr.push(0);
        }
        entries.push((0, 0));
        let shstrtab = b"\0.dynamic\0.dynstr\0.modinfo\0.shstrtab\0".to_vec();
        let interp_bytes = interp.map(|i| [i.as_bytes(), b"\0"].concat());
        let phnum = usize::from(interp.is_some());
        let mut out = vec![0u8; 64 + 56 * phnum];
        let place = |out: &mut Vec<u8>, data: &[u8]| {
            while !out.len().is_multiple_of(8) {
                out.push(0);
            }
            let at = out.len();
            out.extend_from_slice(data);
            (at as u64, data.len() as u64)
        };
        let interp_at = interp_bytes.as_ref().map(|b| place(&mut out, b));
        let dynamic_bytes: Vec<u8> = entries
            .iter()
            .flat_map(|(t, v)| [t.to_le_bytes(), v.to_le_bytes()].concat())
            .collect();
        let dynamic_at = place(&mut out, &dynamic_bytes);
        let dynstr_at = place(&mut out, &dynstr);
        let modinfo_at = place(&mut out, modinfo);
        let shstrtab_at = place(&mut out, &shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        // Section headers: null, .dynamic (link 2), .dynstr, .modinfo, .shstrtab.
        let section =
            |name: u32, kind: u32, (offset, size): (u64, u64), link: u32, entsize: u64| {
                let mut s = Vec::new();
                s.extend_from_slice(&name.to_le_bytes());
                s.extend_from_slice(&kind.to_le_bytes());
                s.extend_from_slice(&0u64.to_le_bytes()); // flags
                s.extend_from_slice(&0u64.to_le_bytes()); // addr
                s.extend_from_slice(&offset.to_le_bytes());
                s.extend_from_slice(&size.to_le_bytes());
                s.extend_from_slice(&link.to_le_bytes());
                s.extend_from_slice(&0u32.to_le_bytes()); // info
                s.extend_from_slice(&8u64.to_le_bytes()); // align
                s.extend_from_slice(&entsize.to_le_bytes());
                s
            };
        out.extend(vec![0u8; 64]);
        out.extend(section(1, SHT_DYNAMIC, dynamic_at, 2, 16));
        out.extend(section(10, SHT_STRTAB, dynstr_at, 0, 0));
        out.extend(section(18, SHT_PROGBITS, modinfo_at, 0, 0));
        out.extend(section(27, SHT_STRTAB, shstrtab_at, 0, 0));
        // File header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little-endian
        out[6] = 1; // version
        out[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&u16::try_from(phnum).unwrap().to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&5u16.to_le_bytes());
        out[62..64].copy_from_slice(&4u16.to_le_bytes()); // shstrndx
        if let Some((offset, size)) = interp_at {
            let ph = &mut out[64..120];
            ph[0..4].copy_from_slice(&PT_INTERP.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[32..40].copy_from_slice(&size.to_le_bytes());
            ph[40..48].copy_from_slice(&size.to_le_bytes());
        }
        out
    }

    #[test]
    fn interpreter_needed_and_runpath() {
        let bytes = elf(
            Some("/lib64/ld-linux-x86-64.so.2"),
            &[
                (DT_NEEDED, "libz.so.1"),
                (DT_RPATH, "/old"),
                (DT_NEEDED, "libc.so.6"),
                (DT_RUNPATH, "$ORIGIN/../lib:/opt/lib"),
            ],
            b"",
        );
        assert!(is_elf(&bytes));
        let found = needs(&bytes).unwrap();
        assert_eq!(
            found.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(found.needed, ["libz.so.1", "libc.so.6"]);
        assert_eq!(found.runpath, ["$ORIGIN/../lib", "/opt/lib"]);
    }

    #[test]
    fn rpath_serves_when_there_is_no_runpath_and_static_has_no_interpreter() {
        let bytes = elf(None, &[(DT_RPATH, "/old:/older")], b"");
        let found = needs(&bytes).unwrap();
        assert_eq!(found.interpreter, None);
        assert!(found.needed.is_empty());
        assert_eq!(found.runpath, ["/old", "/older"]);
    }

    #[test]
    fn modinfo_strings() {
        let bytes = elf(
            None,
            &[],
            b"license=GPL\0firmware=e100/d101m_ucode.bin\0\0firmware=e100/d102e_ucode.bin\0softdep=pre: crc32c\0",
        );
        let info = modinfo(&bytes).unwrap();
        let firmware: Vec<&str> = info
            .iter()
            .filter(|(k, _)| k == "firmware")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(firmware, ["e100/d101m_ucode.bin", "e100/d102e_ucode.bin"]);
        assert!(info.contains(&("softdep".into(), "pre: crc32c".into())));
    }

    #[test]
    fn the_host_s_own_dynamic_programs_read_as_readelf_shows_them() {
        // Reference: the ELF the test binary was linked as; the loader and libc are always
        // among the needs of a glibc program, and readelf (binutils) agrees on the host.
        let sh = std::fs::read("/bin/sh").unwrap();
        let found = needs(&sh).unwrap();
        let readelf = std::process::Command::new("readelf")
            .args(["-d", "-l", "/bin/sh"])
            .output()
            .unwrap();
        let readelf = String::from_utf8_lossy(&readelf.stdout);
        for lib in &found.needed {
            assert!(
                readelf.contains(&format!("[{lib}]")),
                "{lib} not in {readelf}"
            );
        }
        let readelf_needed = readelf.matches("(NEEDED)").count();
        assert_eq!(found.needed.len(), readelf_needed);
        let interp = found.interpreter.unwrap();
        assert!(readelf.contains(&interp), "{interp}");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(needs(b"").is_err());
        assert!(needs(b"\x7fELF\x02\x01\x01").is_err());
        let mut bytes = elf(None, &[(DT_NEEDED, "libz.so.1")], b"");
        // A string offset past the string table.
        // The entry (DT_NEEDED, offset 1).
        let entry = [1u64.to_le_bytes(), 1u64.to_le_bytes()].concat();
        let dynamic = bytes.windows(16).position(|w| w == entry).unwrap();
        bytes[dynamic + 8..dynamic + 16].copy_from_slice(&9999u64.to_le_bytes());
        assert!(needs(&bytes).is_err());
        assert_eq!(shebang(b"#!/bin/sh -e\necho"), Some("/bin/sh".into()));
        assert_eq!(
            shebang_argument(b"#!/usr/bin/env bash\n"),
            Some("bash".into())
        );
        assert_eq!(shebang_argument(b"#!/bin/sh\n"), None);
        assert_eq!(shebang(b"#!"), None);
        assert_eq!(shebang(b"echo"), None);
    }
}
