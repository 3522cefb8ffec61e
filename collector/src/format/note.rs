//! The PT_NOTE segment of a vmcore: a sequence of ELF notes.
//!
//! A vmcore's notes hold one `CORE`/`NT_PRSTATUS` note per CPU that was online at the crash (the
//! registers `crash` and `drgn` unwind from) and one `VMCOREINFO` note describing the dead kernel.
//! Each note is `namesz`, `descsz`, `type` (u32 each), then the name and the descriptor, each
//! padded to 4 bytes.

use super::bytes::{self, OutOfBounds};

/// Note type of a CPU's register state.
pub const NT_PRSTATUS: u32 = 1;
/// Name of the per-CPU register notes.
pub const CORE_NAME: &[u8] = b"CORE";
/// Name of the note holding VMCOREINFO.
pub const VMCOREINFO_NAME: &[u8] = b"VMCOREINFO";

/// Why a notes segment cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A note header, name or descriptor runs past the end of the segment.
    #[error("note at offset {offset} of the notes segment is truncated: {source}")]
    Truncated {
        /// Offset of the note's header within the segment.
        offset: usize,
        /// The field that did not fit.
        source: OutOfBounds,
    },
}

/// One note, borrowed from its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    /// The note's name without its terminating NUL.
    pub name: &'a [u8],
    /// The note type.
    pub note_type: u32,
    /// The descriptor bytes.
    pub desc: &'a [u8],
    /// Offset of the descriptor within the segment.
    pub desc_offset: usize,
}

fn padded(len: u32) -> usize {
    (len as usize).next_multiple_of(4)
}

/// Splits a notes segment into its notes.
///
/// An all-zero note header ends the segment early: kernels pad per-CPU note buffers that way.
pub fn parse(segment: &[u8]) -> Result<Vec<Note<'_>>, NoteError> {
    let mut notes = Vec::new();
    let mut offset = 0;
    while offset < segment.len() {
        let truncated = |source| NoteError::Truncated { offset, source };
        let namesz = bytes::u32_le(segment, offset).map_err(truncated)?;
        let descsz = bytes::u32_le(segment, offset + 4).map_err(truncated)?;
        let note_type = bytes::u32_le(segment, offset + 8).map_err(truncated)?;
        if namesz == 0 && descsz == 0 && note_type == 0 {
            break;
        }
        let name_offset = offset + 12;
        let name = bytes::slice(segment, name_offset, namesz as usize).map_err(truncated)?;
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        let desc_offset = name_offset + padded(namesz);
        let desc = bytes::slice(segment, desc_offset, descsz as usize).map_err(truncated)?;
        notes.push(Note {
            name,
            note_type,
            desc,
            desc_offset,
        });
        offset = desc_offset + padded(descsz);
    }
    Ok(notes)
}

/// Counts the CPUs that have a register note (`CORE`/`NT_PRSTATUS`).
pub fn cpu_count(notes: &[Note<'_>]) -> usize {
    notes
        .iter()
        .filter(|n| n.name == CORE_NAME && n.note_type == NT_PRSTATUS)
        .count()
}

/// Finds the VMCOREINFO note.
pub fn find_vmcoreinfo<'a>(notes: &[Note<'a>]) -> Option<Note<'a>> {
    notes.iter().copied().find(|n| n.name == VMCOREINFO_NAME)
}

/// Encodes one note (used by tests and by the synthetic vmcore builder).
pub fn encode(name: &[u8], note_type: u32, desc: &[u8]) -> Vec<u8> {
    let namesz = u32::try_from(name.len() + 1).expect("note name fits in u32");
    let descsz = u32::try_from(desc.len()).expect("note descriptor fits in u32");
    let mut out = Vec::with_capacity(12 + padded(namesz) + padded(descsz));
    out.extend_from_slice(&namesz.to_le_bytes());
    out.extend_from_slice(&descsz.to_le_bytes());
    out.extend_from_slice(&note_type.to_le_bytes());
    out.extend_from_slice(name);
    out.resize(12 + padded(namesz), 0);
    out.extend_from_slice(desc);
    out.resize(12 + padded(namesz) + padded(descsz), 0);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn finds_cpus_and_vmcoreinfo() {
        let mut segment = encode(CORE_NAME, NT_PRSTATUS, &[1; 336]);
        segment.extend(encode(CORE_NAME, NT_PRSTATUS, &[2; 336]));
        segment.extend(encode(VMCOREINFO_NAME, 0, b"OSRELEASE=6.1.0\n"));
        segment.extend([0u8; 24]);
        let notes = parse(&segment).unwrap();
        assert_eq!(notes.len(), 3);
        assert_eq!(cpu_count(&notes), 2);
        let info = find_vmcoreinfo(&notes).unwrap();
        assert_eq!(info.desc, b"OSRELEASE=6.1.0\n");
        assert_eq!(&segment[info.desc_offset..][..9], b"OSRELEASE");
    }

    #[test]
    fn reports_where_a_note_is_cut() {
        let segment = encode(VMCOREINFO_NAME, 0, b"OSRELEASE=6.1.0\n");
        let cut = &segment[..segment.len() - 8];
        assert!(matches!(
            parse(cut),
            Err(NoteError::Truncated { offset: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn encoded_notes_parse_back(
            name in proptest::collection::vec(1u8..=255, 1..20),
            note_type in any::<u32>(),
            desc in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let segment = encode(&name, note_type, &desc);
            let notes = parse(&segment).unwrap();
            prop_assert_eq!(notes.len(), 1);
            prop_assert_eq!(notes[0].name, &name[..]);
            prop_assert_eq!(notes[0].note_type, note_type);
            prop_assert_eq!(notes[0].desc, &desc[..]);
        }
    }
}
