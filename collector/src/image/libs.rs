//! Programs with what they need to run: the ELF interpreter and every `DT_NEEDED` library,
//! found as ld.so(8) finds them, and the interpreter of a `#!` script (itself a program).
//!
//! Search order for a soname without a slash: the object's `DT_RUNPATH` (`$ORIGIN` expanded;
//! `DT_RPATH` when there is no RUNPATH), the directories of `/etc/ld.so.conf` and its includes,
//! then the system's default directories. `ldd` is not run: it would execute the loader on the
//! program, and the builder must work from the files alone.

use std::collections::BTreeSet;
use std::path::Path;

use super::tree::{Tree, TreeError, normalize};
use crate::format::executable::{self, ExecutableError};

/// The default directories of Debian's and Fedora's x86_64 loaders, after ld.so.conf's.
const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
/// Objects followed at most for one program (a loop of libraries is bounded by the set of
/// those seen; this bounds a hostile tree).
const MAX_OBJECTS: usize = 512;
/// Where `#!/usr/bin/env PROGRAM` finds PROGRAM (the capture's PATH for hooks).
const SCRIPT_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];
/// ld.so.conf include depth.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Why a program cannot go into the image.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LibsError {
    /// The program or one of its files cannot be copied.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The program is not executable.
    #[error("{path}: not executable")]
    NotExecutable {
        /// Its path.
        path: String,
    },
    /// An ELF object is damaged.
    #[error("{path}: {source}")]
    Elf {
        /// Its path.
        path: String,
        /// Why.
        source: ExecutableError,
    },
    /// A program needs more objects than any real one does.
    #[error("{path}: more than {limit} libraries and interpreters")]
    TooMany {
        /// Where the walk stopped.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// A library is nowhere on the search path.
    #[error("{path}: needs {soname}, which is not on the library path ({})", searched.join(":"))]
    Missing {
        /// The object that needs it.
        path: String,
        /// The library's soname.
        soname: String,
        /// Where it was looked for.
        searched: Vec<String>,
    },
}

/// The directories `/etc/ld.so.conf` names under `root`, includes (with globs) followed.
pub(crate) fn ld_so_conf_dirs(root: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    read_conf(root, "/etc/ld.so.conf", 0, &mut dirs);
    dirs
}

fn read_conf(root: &Path, file: &str, depth: usize, dirs: &mut Vec<String>) {
    if depth > MAX_INCLUDE_DEPTH {
        return;
    }
    let Ok(text) = std::fs::read_to_string(root.join(file.trim_start_matches('/'))) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            let pattern = normalize(super::tree::parent_of(file), pattern);
            let full = root.join(pattern.trim_start_matches('/'));
            let Ok(paths) = glob::glob(&full.to_string_lossy()) else {
                continue;
            };
            let mut matched: Vec<_> = paths.flatten().collect();
            matched.sort();
            for path in matched {
                if let Ok(relative) = path.strip_prefix(root) {
                    let relative = format!("/{}", relative.display());
                    read_conf(root, &relative, depth + 1, dirs);
                }
            }
        } else if line.starts_with('/') {
            // "dir" or, in old files, "dir=TYPE"; also comma- or space-separated lists.
            for dir in line
                .split([' ', '\t', ',', ':'])
                .filter(|d| d.starts_with('/'))
            {
                let dir = dir.split('=').next().unwrap_or(dir).to_owned();
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
}

/// Copies programs with their interpreters and libraries into a tree.
pub(crate) struct Installer {
    search: Vec<String>,
    done: BTreeSet<String>,
}

impl Installer {
    /// An installer with the library path of the system under `root`.
    pub(crate) fn new(root: &Path) -> Self {
        let mut search = ld_so_conf_dirs(root);
        for dir in DEFAULT_DIRS {
            if !search.iter().any(|d| d == dir) {
                search.push((*dir).to_owned());
            }
        }
        Self {
            search,
            done: BTreeSet::new(),
        }
    }

    /// Adds the program at `path` (absolute) and everything it needs to `tree`; a script needs
    /// its interpreter. Returns the image paths added for it (links resolved), the program's
    /// first.
    pub(crate) fn program(
        &mut self,
        tree: &mut Tree,
        path: &str,
    ) -> Result<Vec<String>, LibsError> {
        let mut added = Vec::new();
        let mut pending = vec![(path.to_owned(), None::<String>)];
        let mut objects = 0;
        while let Some((path, needed_by)) = pending.pop() {
            if !self.done.insert(path.clone()) {
                continue;
            }
            objects += 1;
            if objects > MAX_OBJECTS {
                return Err(LibsError::TooMany {
                    path: path.clone(),
                    limit: MAX_OBJECTS,
                });
            }
            let real = tree.host_file(&path)?;
            added.push(real.clone());
            let data = match tree.nodes().get(&real) {
                Some(super::tree::Node::File(perm, data)) => {
                    if needed_by.is_none() && perm & 0o111 == 0 {
                        return Err(LibsError::NotExecutable { path });
                    }
                    data.clone()
                }
                _ => continue,
            };
            if let Some(interpreter) = executable::shebang(&data) {
                // `#!/usr/bin/env bash`: env, and bash from the PATH the capture runs hooks with.
                if interpreter.rsplit('/').next() == Some("env")
                    && let Some(program) = executable::shebang_argument(&data)
                    && let Some(found) = SCRIPT_PATH
                        .iter()
                        .map(|dir| format!("{dir}/{program}"))
                        .find(|p| tree.host(p).is_file())
                {
                    pending.push((found, Some(path.clone())));
                }
                pending.push((interpreter, Some(path.clone())));
                continue;
            }
            if !executable::is_elf(&data) {
                continue;
            }
            let needs = executable::needs(&data).map_err(|source| LibsError::Elf {
                path: path.clone(),
                source,
            })?;
            if let Some(interpreter) = needs.interpreter {
                pending.push((interpreter, Some(path.clone())));
            }
            let origin = super::tree::parent_of(&real).to_owned();
            for soname in needs.needed.iter().rev() {
                let found = self.find(tree, soname, &needs.runpath, &origin);
                match found {
                    Some(library) => pending.push((library, Some(path.clone()))),
                    None => {
                        return Err(LibsError::Missing {
                            path,
                            soname: soname.clone(),
                            searched: self.search.clone(),
                        });
                    }
                }
            }
        }
        Ok(added)
    }

    /// Where the loader would find `soname` for an object in `origin` with `runpath`.
    fn find(&self, tree: &Tree, soname: &str, runpath: &[String], origin: &str) -> Option<String> {
        if soname.contains('/') {
            return Some(normalize(origin, soname));
        }
        let expanded = runpath
            .iter()
            .map(|dir| dir.replace("${ORIGIN}", origin).replace("$ORIGIN", origin));
        expanded
            .chain(self.search.iter().cloned())
            .map(|dir| normalize(&dir, soname))
            .find(|candidate| tree.host(candidate).is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_so_conf_includes_and_order() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        std::fs::create_dir_all(root.join("etc/ld.so.conf.d")).unwrap();
        std::fs::write(
            root.join("etc/ld.so.conf"),
            "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/old\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/ld.so.conf.d/x86_64-linux-gnu.conf"),
            "/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/ld.so.conf.d/a.conf"), "/opt/a/lib\n").unwrap();
        assert_eq!(
            ld_so_conf_dirs(root),
            [
                "/opt/a/lib",
                "/usr/local/lib/x86_64-linux-gnu",
                "/lib/x86_64-linux-gnu",
                "/opt/old"
            ]
        );
    }

    /// Reference: `ldd` (the loader itself) on the host's own programs names the same files.
    #[test]
    fn the_host_s_programs_get_the_libraries_ldd_lists() {
        for program in ["/bin/sh", "/usr/bin/ssh", "/usr/bin/zstd"] {
            let mut tree = Tree::new(Path::new("/"));
            let mut installer = Installer::new(Path::new("/"));
            installer.program(&mut tree, program).unwrap();
            let ldd = std::process::Command::new("ldd")
                .arg(program)
                .output()
                .unwrap();
            let ldd = String::from_utf8_lossy(&ldd.stdout);
            for line in ldd.lines() {
                // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld... (0x..)"
                let Some(library) = line.split_whitespace().find(|w| w.starts_with('/')) else {
                    continue;
                };
                let real = std::fs::canonicalize(library).unwrap();
                let real = real.to_string_lossy();
                assert!(
                    tree.contains(library) || tree.contains(&real),
                    "{program}: {library} ({real}) missing"
                );
                assert!(tree.contains(&real), "{program}: {real} not copied");
            }
        }
    }

    #[test]
    fn a_script_brings_its_interpreter_and_a_missing_library_is_named() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/hook"), "#!/bin/sh\necho hi\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("bin/hook"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(root.join("bin/data"), "plain").unwrap();
        // The host's /bin/sh, whose libraries this tree does not have.
        std::fs::copy("/bin/sh", root.join("bin/sh")).unwrap();
        let mut tree = Tree::new(root);
        let mut installer = Installer::new(root);
        let error = installer.program(&mut tree, "/bin/hook").unwrap_err();
        assert!(
            matches!(&error, LibsError::Tree(_) | LibsError::Missing { .. }),
            "{error}"
        );
        assert!(tree.contains("/bin/hook") && tree.contains("/bin/sh"));
        let error = Installer::new(root)
            .program(&mut Tree::new(root), "/bin/data")
            .unwrap_err();
        assert!(error.to_string().contains("not executable"), "{error}");
    }
}
