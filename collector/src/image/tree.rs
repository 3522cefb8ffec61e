//! The image's file tree before it becomes an archive: every path once, parents first, host
//! files copied with the symbolic links on their way (so `/lib64/ld-linux-x86-64.so.2` keeps
//! resolving as on the host, merged /usr or not), and a byte-reproducible `newc` archive at the
//! end, zstd-compressed or plain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::format::cpio::Archive;

/// Largest file copied into an image (a cpio entry holds less than 4 GiB; no capture needs
/// anything near this).
const MAX_FILE: u64 = 1 << 30;
/// Symbolic links followed at most while copying one host path (the kernel's limit is 40).
const MAX_LINKS: usize = 40;

/// Why a host file could not be added.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TreeError {
    /// The file is missing or unreadable.
    #[error("{}: {source}", path.display())]
    Read {
        /// The host path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A symlink chain does not end.
    #[error("{}: too many levels of symbolic links", path.display())]
    Loop {
        /// The host path.
        path: PathBuf,
    },
    /// A file too large for an image.
    #[error("{}: {size} bytes, more than an image takes ({MAX_FILE})", path.display())]
    TooLarge {
        /// The host path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A directory where a file was asked for.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The host path.
        path: PathBuf,
    },
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// A directory.
    Dir,
    /// A regular file: permission bits and contents.
    File(u32, Vec<u8>),
    /// A symbolic link and its target text.
    Symlink(String),
    /// A character device: permission bits, major, minor.
    CharDevice(u32, u32, u32),
}

/// The tree under construction; paths are absolute image paths (`/etc/kdump.conf`).
#[derive(Debug, Default)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
    /// The host root the host paths are read under (`/`; a recorded tree in tests).
    root: PathBuf,
}

/// Joins `path` (absolute or relative to `dir`) and removes `.`, `..` and repeated slashes.
pub(crate) fn normalize(dir: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{dir}/{path}")
    };
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The directory part of an absolute path (`/` for `/x`).
pub(crate) fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

impl Tree {
    /// An empty tree reading host files under `root`, with the directories and the console node
    /// every init needs.
    pub(crate) fn new(root: &Path) -> Self {
        let mut tree = Self {
            nodes: BTreeMap::new(),
            root: root.to_owned(),
        };
        for dir in [
            "/dev", "/proc", "/sys", "/run", "/tmp", "/mnt", "/etc", "/var/tmp",
        ] {
            tree.dir(dir);
        }
        tree.insert("/dev/console", Node::CharDevice(0o600, 5, 1));
        tree
    }

    /// The host path of an image path.
    pub(crate) fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Whether the tree has `path`.
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// The entries, sorted by path.
    pub(crate) fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// `path` with the tree's own symbolic links resolved in its directories, so that nothing
    /// is unpacked through a link whose target the archive creates later (`/lib/modules` is
    /// `/usr/lib/modules` on a merged /usr).
    pub(crate) fn resolve(&self, path: &str) -> String {
        let mut path = normalize("/", path);
        'restart: for _ in 0..MAX_LINKS {
            let mut prefix = String::new();
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            for (i, part) in parts.iter().enumerate().take(parts.len().saturating_sub(1)) {
                prefix.push('/');
                prefix.push_str(part);
                if let Some(Node::Symlink(target)) = self.nodes.get(&prefix) {
                    let rest = parts[i + 1..].join("/");
                    path = normalize(parent_of(&prefix), &format!("{target}/{rest}"));
                    continue 'restart;
                }
            }
            break;
        }
        path
    }

    /// Adds a directory and its missing parents (through the tree's links).
    pub(crate) fn dir(&mut self, path: &str) {
        let path = self.resolve(path);
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            self.nodes.entry(prefix.clone()).or_insert(Node::Dir);
        }
    }

    fn insert(&mut self, path: &str, node: Node) -> String {
        let path = self.resolve(path);
        self.dir(parent_of(&path));
        self.nodes.insert(path.clone(), node);
        path
    }

    /// Adds a file with the given contents; returns where it went (links resolved).
    pub(crate) fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> String {
        self.insert(path, Node::File(perm & 0o7777, data))
    }

    /// Adds a symbolic link.
    #[cfg(test)]
    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Symlink(target.to_owned()));
    }

    /// Copies the host file at image path `path`, with each symbolic link met on the way, and
    /// returns the image path of the file itself (the end of the links).
    pub(crate) fn host_file(&mut self, path: &str) -> Result<String, TreeError> {
        let mut pending = normalize("/", path);
        let mut links = 0;
        'restart: loop {
            // Walk the components: the first that is a link is added and replaced by its target.
            let mut prefix = String::new();
            let parts: Vec<String> = pending
                .split('/')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            for (i, part) in parts.iter().enumerate() {
                prefix.push('/');
                prefix.push_str(part);
                let host = self.host(&prefix);
                let meta = std::fs::symlink_metadata(&host).map_err(|source| TreeError::Read {
                    path: host.clone(),
                    source,
                })?;
                if meta.file_type().is_symlink() {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(TreeError::Loop { path: host });
                    }
                    let target = std::fs::read_link(&host).map_err(|source| TreeError::Read {
                        path: host.clone(),
                        source,
                    })?;
                    let target = target.to_string_lossy().into_owned();
                    if !matches!(self.nodes.get(&prefix), Some(Node::Symlink(_))) {
                        self.insert(&prefix, Node::Symlink(target.clone()));
                    }
                    let rest = parts[i + 1..].join("/");
                    pending = normalize(parent_of(&prefix), &format!("{target}/{rest}"));
                    continue 'restart;
                }
                if i + 1 < parts.len() {
                    continue;
                }
                if !meta.is_file() {
                    return Err(TreeError::NotAFile { path: host });
                }
                if meta.len() > MAX_FILE {
                    return Err(TreeError::TooLarge {
                        path: host,
                        size: meta.len(),
                    });
                }
                if !self.nodes.contains_key(&prefix) {
                    let data = std::fs::read(&host).map_err(|source| TreeError::Read {
                        path: host.clone(),
                        source,
                    })?;
                    use std::os::unix::fs::PermissionsExt;
                    return Ok(self.file(&prefix, meta.permissions().mode(), data));
                }
                return Ok(prefix);
            }
            return Err(TreeError::NotAFile {
                path: self.host(&pending),
            });
        }
    }

    /// Writes the tree into the directory `dir` (dracut's `$initdir`): directories created,
    /// files replaced, links made; an entry the directory already has with the same kind
    /// (dracut's own skeleton: `/lib -> usr/lib`, `/dev/console`) is kept.
    pub(crate) fn write_to(&self, dir: &Path) -> Result<(), TreeError> {
        use std::os::unix::fs::PermissionsExt;
        for (path, node) in &self.nodes {
            let at = dir.join(path.trim_start_matches('/'));
            let error = |source| TreeError::Read {
                path: at.clone(),
                source,
            };
            let existing = std::fs::symlink_metadata(&at).ok();
            match node {
                Node::Dir => {
                    if !at.is_dir() {
                        std::fs::create_dir_all(&at).map_err(error)?;
                    }
                }
                Node::File(perm, data) => {
                    if existing
                        .as_ref()
                        .is_some_and(|m| m.file_type().is_symlink())
                    {
                        std::fs::remove_file(&at).map_err(error)?;
                    }
                    std::fs::write(&at, data).map_err(error)?;
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(*perm))
                        .map_err(error)?;
                }
                Node::Symlink(target) => match existing {
                    Some(meta) if meta.file_type().is_symlink() || meta.is_dir() => {}
                    Some(_) => {
                        std::fs::remove_file(&at).map_err(error)?;
                        std::os::unix::fs::symlink(target, &at).map_err(error)?;
                    }
                    None => std::os::unix::fs::symlink(target, &at).map_err(error)?,
                },
                Node::CharDevice(perm, major, minor) => {
                    if existing.is_none() {
                        nix::sys::stat::mknod(
                            &at,
                            nix::sys::stat::SFlag::S_IFCHR,
                            nix::sys::stat::Mode::from_bits_truncate(*perm),
                            nix::sys::stat::makedev(u64::from(*major), u64::from(*minor)),
                        )
                        .map_err(|e| error(e.into()))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The bytes of file data, links' targets included: what the image takes unpacked.
    pub(crate) fn unpacked_size(&self) -> u64 {
        self.nodes
            .values()
            .map(|node| match node {
                Node::File(_, data) => data.len() as u64,
                Node::Symlink(target) => target.len() as u64,
                Node::Dir | Node::CharDevice(..) => 0,
            })
            .sum()
    }

    /// The `newc` archive of the tree, in path order with zero timestamps: the same tree gives
    /// the same bytes.
    pub(crate) fn archive(&self) -> Vec<u8> {
        let mut archive = Archive::new();
        for (path, node) in &self.nodes {
            match node {
                Node::Dir => archive.dir(path),
                Node::File(perm, data) => archive.file(path, *perm, data),
                Node::Symlink(target) => archive.symlink(path, target),
                Node::CharDevice(perm, major, minor) => {
                    archive.char_device(path, *perm, *major, *minor)
                }
            };
        }
        archive.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn written_into_a_directory_beside_what_it_holds() {
        let mut tree = Tree::new(Path::new("/nonexistent"));
        tree.symlink("/lib", "usr/lib");
        tree.file("/lib/modules/x", 0o600, b"m".to_vec());
        tree.file("/init", 0o755, b"rkdump".to_vec());
        let dir = tempfile::tempdir().unwrap();
        // dracut's skeleton: its own /lib link and an /init to replace.
        std::fs::create_dir_all(dir.path().join("usr/lib")).unwrap();
        symlink("usr/lib", dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("init"), b"dracut").unwrap();
        // /dev/console needs mknod: only root can make it; the test runs as root in CI.
        tree.write_to(dir.path()).unwrap();
        assert!(std::fs::read(dir.path().join("init")).unwrap() == b"rkdump");
        assert!(std::fs::read(dir.path().join("lib/modules/x")).unwrap() == b"m");
        use std::os::unix::fs::FileTypeExt;
        let console = std::fs::symlink_metadata(dir.path().join("dev/console")).unwrap();
        assert!(console.file_type().is_char_device());
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("/lib64", "../lib/x.so"), "/lib/x.so");
        assert_eq!(normalize("/", "/a//b/./c/"), "/a/b/c");
        assert_eq!(normalize("/a", "../../.."), "/");
    }

    #[test]
    fn host_files_keep_their_links_as_on_a_merged_usr_system() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(
            root.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            b"ld",
        )
        .unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib64")).unwrap();
        symlink("usr/lib64", root.join("lib64")).unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            root.join("usr/lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        let mut tree = Tree::new(root);
        let real = tree.host_file("/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(real, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        let nodes = tree.nodes();
        assert_eq!(nodes["/lib64"], Node::Symlink("usr/lib64".into()));
        assert_eq!(nodes["/lib"], Node::Symlink("usr/lib".into()));
        assert_eq!(
            nodes["/usr/lib64/ld-linux-x86-64.so.2"],
            Node::Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into())
        );
        assert!(matches!(nodes[real.as_str()], Node::File(_, ref d) if d == b"ld"));
        // Unpacked by cpio, the link resolves to the file (reference: GNU cpio and the kernel
        // agree on newc; the archive lists parents before children).
        let archive = tree.archive();
        let (entries, _) = crate::format::cpio::entries(&archive).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(at("usr") < at("usr/lib") && at("usr/lib") < at("usr/lib/x86_64-linux-gnu"));
        let unpack = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet"])
            .current_dir(unpack.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success());
        // The links unpack as links with their texts (the absolute one resolves in the
        // capture's root), and the file as the file.
        let unpacked = unpack.path();
        assert_eq!(
            std::fs::read_link(unpacked.join("lib64")).unwrap(),
            Path::new("usr/lib64")
        );
        assert_eq!(
            std::fs::read_link(unpacked.join("usr/lib64/ld-linux-x86-64.so.2")).unwrap(),
            Path::new("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        let data =
            std::fs::read(unpacked.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")).unwrap();
        assert!(data == b"ld", "{} bytes", data.len());
    }

    #[test]
    fn files_added_below_a_link_go_to_its_target() {
        let mut tree = Tree::new(Path::new("/nonexistent"));
        tree.symlink("/lib", "usr/lib");
        let at = tree.file("/lib/modules/6.1/modules.dep", 0o644, b"".to_vec());
        assert_eq!(at, "/usr/lib/modules/6.1/modules.dep");
        assert!(tree.contains("/usr/lib/modules/6.1"));
        assert!(!tree.contains("/lib/modules"));
    }

    #[test]
    fn missing_files_loops_and_directories_are_errors() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        let mut tree = Tree::new(root);
        assert!(matches!(tree.host_file("/a"), Err(TreeError::Loop { .. })));
        assert!(matches!(
            tree.host_file("/nope"),
            Err(TreeError::Read { .. })
        ));
        assert!(matches!(
            tree.host_file("/d"),
            Err(TreeError::NotAFile { .. })
        ));
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes() {
        let build = |order: &[(&str, &[u8])]| {
            let mut tree = Tree::new(Path::new("/nonexistent"));
            for (path, data) in order {
                tree.file(path, 0o644, data.to_vec());
            }
            tree.archive()
        };
        let a = build(&[("/etc/a", b"1"), ("/bin/b", b"2")]);
        let b = build(&[("/bin/b", b"2"), ("/etc/a", b"1")]);
        assert_eq!(a, b);
    }
}
