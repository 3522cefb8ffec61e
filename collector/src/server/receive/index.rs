//! The index of received dumps: one JSON line per dump directory a session touched.
//!
//! `<root>/index.jsonl` is shared by every client and session. A line is written when a dump's
//! manifest arrives (`verified` or `failed verification: <why>`), and when a session ends for
//! every directory it wrote to without a manifest (`incomplete`). Each line goes out in one
//! `write` on an `O_APPEND` file, so concurrent sessions' lines never interleave.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::time::UtcTime;

/// Name of the index file under the root.
pub const INDEX_NAME: &str = "index.jsonl";

/// One line of the index.
#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    /// When the line was written (UTC, RFC 3339).
    pub time: String,
    /// Client name.
    pub client: String,
    /// Client address.
    pub from: String,
    /// Dump directory, relative to the root.
    pub dump: String,
    /// Bytes written into it in this session.
    pub bytes: u64,
    /// `verified`, `incomplete`, or `failed verification: <why>`.
    pub status: String,
}

/// A dump directory written to in this session.
#[derive(Debug, Default)]
struct DumpState {
    /// Bytes added to its files.
    bytes: u64,
    /// Its line's status, once written.
    status: Option<String>,
}

/// The dump directories of one session, and the index lines they get.
#[derive(Debug)]
pub(super) struct Index {
    /// The dump root, which holds the index.
    root: PathBuf,
    /// The client's name.
    client: String,
    /// The client's address.
    from: String,
    /// Dump directories, relative to the client's directory.
    dumps: BTreeMap<PathBuf, DumpState>,
}

impl Index {
    /// The index under `root` for one session of `client`, connected from `from`.
    pub(super) fn new(root: &Path, client: &str, from: &str) -> Self {
        Self {
            root: root.to_owned(),
            client: client.to_owned(),
            from: from.to_owned(),
            dumps: BTreeMap::new(),
        }
    }

    /// Notes that `file` (relative to the client's directory) was written to, `bytes` bytes
    /// added: its directory gets a line at the latest when the session ends.
    pub(super) fn wrote(&mut self, file: &Path, bytes: u64) {
        let dir = file.parent().unwrap_or(Path::new("")).to_owned();
        self.dumps.entry(dir).or_default().bytes += bytes;
    }

    /// Writes the line of dump directory `dir` (relative to the client's directory) now, with
    /// `status`; the session's end writes no other for it.
    pub(super) fn settle(&mut self, dir: PathBuf, status: String) {
        let entry = self.entry(&dir, status.clone());
        self.dumps.entry(dir).or_default().status = Some(status);
        append(&self.root, &entry);
    }

    /// Ends the session: every dump directory written to without a verified manifest is
    /// indexed as incomplete. Returns every index line of the session.
    pub(super) fn close(self) -> Vec<IndexEntry> {
        let mut entries = Vec::new();
        for (dir, state) in &self.dumps {
            let entry = match &state.status {
                Some(status) => self.entry(dir, status.clone()),
                None => {
                    let entry = self.entry(dir, "incomplete".to_owned());
                    append(&self.root, &entry);
                    entry
                }
            };
            entries.push(entry);
        }
        entries
    }

    /// The line of dump directory `dir`, as of now.
    fn entry(&self, dir: &Path, status: String) -> IndexEntry {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().cast_signed());
        let t = UtcTime::from_unix(seconds);
        IndexEntry {
            time: format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            ),
            client: self.client.clone(),
            from: self.from.clone(),
            dump: Path::new(&self.client).join(dir).display().to_string(),
            bytes: self.dumps.get(dir).map_or(0, |d| d.bytes),
            status,
        }
    }
}

/// Appends one line to the index (one `write` on an `O_APPEND` file, so concurrent sessions'
/// lines do not interleave). A failure is reported on standard error and otherwise ignored:
/// the dump itself is in place.
fn append(root: &Path, entry: &IndexEntry) {
    let mut line = serde_json::to_vec(entry).expect("an index entry always serialises");
    line.push(b'\n');
    let path = root.join(INDEX_NAME);
    let result = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&path)
        .and_then(|mut file| file.write_all(&line));
    if let Err(e) = result {
        eprintln!("rkdump receive: {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_directory_settled_or_not() {
        let root = tempfile::tempdir().unwrap();
        let mut index = Index::new(root.path(), "web01", "192.0.2.7");
        index.wrote(Path::new("a/vmcore-incomplete"), 5);
        index.wrote(Path::new("a/vmcore-incomplete"), 2);
        index.wrote(Path::new("b/dmesg.txt"), 0);
        index.settle(PathBuf::from("a"), "verified".to_owned());
        let entries = index.close();
        let summary: Vec<_> = entries
            .iter()
            .map(|e| (e.dump.as_str(), e.bytes, e.status.as_str()))
            .collect();
        assert_eq!(
            summary,
            [("web01/a", 7, "verified"), ("web01/b", 0, "incomplete")]
        );
        let text = std::fs::read_to_string(root.path().join(INDEX_NAME)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["status"], "verified");
        assert_eq!(lines[0]["from"], "192.0.2.7");
        assert_eq!(lines[1]["dump"], "web01/b");
        let time = lines[1]["time"].as_str().unwrap();
        assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    }
}
