//! VMCOREINFO: the dead kernel's description of itself.
//!
//! The kernel writes `KEY=VALUE` lines into a note: `OSRELEASE=6.1.0-56-amd64`,
//! `SYMBOL(init_top_pgt)=ffffffff9be0a000` (hex), `SIZE(page)=64`, `OFFSET(page.flags)=0`,
//! `LENGTH(mem_section)=2048` (decimal), `NUMBER(PG_lru)=4` (decimal, possibly negative; a few are
//! written as `0x...` hex), `KERNELOFFSET=1a000000` (hex), `CRASHTIME=1764000000`. Values are parsed
//! when asked for, so one malformed entry only fails the feature that needs it, and the error names
//! the key and the value.

use std::collections::BTreeMap;

/// A VMCOREINFO entry is absent or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmcoreInfoError {
    /// An entry a feature needs is not in VMCOREINFO.
    #[error("VMCOREINFO has no {0}")]
    Missing(String),
    /// An entry's value is not a number of the expected kind.
    #[error("VMCOREINFO entry {key}={value:?} is not a valid {kind} number")]
    BadValue {
        /// The entry's key.
        key: String,
        /// The entry's value as written.
        value: String,
        /// "hexadecimal" or "decimal".
        kind: &'static str,
    },
}

/// Parsed VMCOREINFO: the raw entries plus typed accessors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmcoreInfo {
    entries: BTreeMap<String, String>,
}

type Lookup<T> = Result<Option<T>, VmcoreInfoError>;

impl VmcoreInfo {
    /// Parses the descriptor of a VMCOREINFO note.
    ///
    /// Text after the first NUL is ignored, as are lines without `=`. When a key repeats, the
    /// first value is kept, as makedumpfile does.
    pub fn parse(desc: &[u8]) -> Self {
        let text = desc.split(|&b| b == 0).next().unwrap_or_default();
        let mut entries = BTreeMap::new();
        for line in text.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            if let Some((key, value)) = line.split_once('=') {
                entries
                    .entry(key.to_owned())
                    .or_insert_with(|| value.trim_end().to_owned());
            }
        }
        Self { entries }
    }

    /// Builds VMCOREINFO from `KEY=VALUE` pairs.
    #[cfg(test)]
    pub fn from_entries<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let entries = pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { entries }
    }

    /// Encodes the entries as note text.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in &self.entries {
            out.extend_from_slice(format!("{key}={value}\n").as_bytes());
        }
        out
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn hex(&self, key: &str) -> Lookup<u64> {
        self.get(key).map(|value| parse_hex(key, value)).transpose()
    }

    fn unsigned(&self, key: &str) -> Lookup<u64> {
        self.get(key)
            .map(|value| {
                value.parse().map_err(|_| VmcoreInfoError::BadValue {
                    key: key.to_owned(),
                    value: value.to_owned(),
                    kind: "decimal",
                })
            })
            .transpose()
    }

    /// `SYMBOL(name)`: the (already relocated) address of a kernel symbol.
    pub fn symbol(&self, name: &str) -> Lookup<u64> {
        self.hex(&format!("SYMBOL({name})"))
    }

    /// `SIZE(name)`: the size of a kernel type.
    pub fn size(&self, name: &str) -> Lookup<u64> {
        self.unsigned(&format!("SIZE({name})"))
    }

    /// `OFFSET(type.member)`: the offset of a member in a kernel type.
    pub fn offset(&self, member: &str) -> Lookup<u64> {
        self.unsigned(&format!("OFFSET({member})"))
    }

    /// `LENGTH(name)`: the number of elements of a kernel array.
    pub fn length(&self, name: &str) -> Lookup<u64> {
        self.unsigned(&format!("LENGTH({name})"))
    }

    /// `NUMBER(name)`: a kernel constant; decimal (possibly negative) or `0x` hexadecimal.
    pub fn number(&self, name: &str) -> Lookup<i64> {
        let key = format!("NUMBER({name})");
        self.get(&key)
            .map(|value| match value.strip_prefix("0x") {
                Some(_) => parse_hex(&key, value).map(u64::cast_signed),
                None => value.parse().map_err(|_| VmcoreInfoError::BadValue {
                    key: key.clone(),
                    value: value.to_owned(),
                    kind: "decimal",
                }),
            })
            .transpose()
    }

    /// `OSRELEASE`: the dead kernel's release string (`uname -r`).
    pub fn os_release(&self) -> Option<&str> {
        self.get("OSRELEASE")
    }

    /// `PAGESIZE`.
    pub fn page_size(&self) -> Lookup<u64> {
        self.unsigned("PAGESIZE")
    }

    /// `CRASHTIME`: seconds since the epoch when the kernel crashed.
    pub fn crash_time(&self) -> Lookup<u64> {
        self.unsigned("CRASHTIME")
    }

    /// `KERNELOFFSET`: the KASLR displacement of the kernel image.
    #[cfg(test)]
    pub fn kernel_offset(&self) -> Lookup<u64> {
        self.hex("KERNELOFFSET")
    }
}

fn parse_hex(key: &str, value: &str) -> Result<u64, VmcoreInfoError> {
    let digits = value.strip_prefix("0x").unwrap_or(value);
    u64::from_str_radix(digits, 16).map_err(|_| VmcoreInfoError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        kind: "hexadecimal",
    })
}

/// Turns an optional lookup into a required one.
pub fn require<T>(lookup: Lookup<T>, what: &str) -> Result<T, VmcoreInfoError> {
    lookup?.ok_or_else(|| VmcoreInfoError::Missing(what.to_owned()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SAMPLE: &[u8] = b"OSRELEASE=6.1.0-56-amd64\nBUILD-ID=abc\nPAGESIZE=4096\n\
SYMBOL(init_top_pgt)=ffffffff9be0a000\nSIZE(page)=64\nOFFSET(page.flags)=0\n\
LENGTH(mem_section)=2048\nNUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n\
NUMBER(VMALLOC_START)=0xffffb25b40000000\nKERNELOFFSET=1a000000\nCRASHTIME=1764072000\n\0\0garbage";

    #[test]
    fn typed_lookups() {
        let info = VmcoreInfo::parse(SAMPLE);
        assert_eq!(info.os_release(), Some("6.1.0-56-amd64"));
        assert_eq!(info.page_size(), Ok(Some(4096)));
        assert_eq!(info.symbol("init_top_pgt"), Ok(Some(0xffff_ffff_9be0_a000)));
        assert_eq!(info.size("page"), Ok(Some(64)));
        assert_eq!(info.offset("page.flags"), Ok(Some(0)));
        assert_eq!(info.length("mem_section"), Ok(Some(2048)));
        assert_eq!(info.number("PAGE_BUDDY_MAPCOUNT_VALUE"), Ok(Some(-129)));
        assert_eq!(
            info.number("VMALLOC_START"),
            Ok(Some(0xffff_b25b_4000_0000_u64.cast_signed()))
        );
        assert_eq!(info.kernel_offset(), Ok(Some(0x1a00_0000)));
        assert_eq!(info.crash_time(), Ok(Some(1_764_072_000)));
        assert_eq!(info.symbol("prb"), Ok(None));
        assert_eq!(info.get("garbage"), None);
    }

    #[test]
    fn malformed_values_name_their_key() {
        let info = VmcoreInfo::parse(b"SIZE(page)=sixty-four\nSYMBOL(x)=zz\n");
        let err = info.size("page").unwrap_err();
        assert_eq!(
            err.to_string(),
            "VMCOREINFO entry SIZE(page)=\"sixty-four\" is not a valid decimal number"
        );
        assert!(info.symbol("x").is_err());
        assert_eq!(
            require(info.offset("page.lru"), "OFFSET(page.lru)")
                .unwrap_err()
                .to_string(),
            "VMCOREINFO has no OFFSET(page.lru)"
        );
    }

    #[test]
    fn first_value_of_a_repeated_key_wins() {
        let info = VmcoreInfo::parse(b"PAGESIZE=4096\nPAGESIZE=65536\n");
        assert_eq!(info.page_size(), Ok(Some(4096)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let info = VmcoreInfo::parse(&bytes);
            for (key, _) in info.entries() {
                let _ = info.number(key);
            }
            let _ = info.symbol("a");
        }

        #[test]
        fn encode_parse_round_trips(pairs in proptest::collection::btree_map("[A-Z()._a-z]{1,12}", "[0-9a-f-]{0,12}", 0..10)) {
            let info = VmcoreInfo::from_entries(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            prop_assert_eq!(VmcoreInfo::parse(&info.encode()), info);
        }
    }
}
