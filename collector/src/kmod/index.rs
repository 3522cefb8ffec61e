//! depmod's text index files, and dependency resolution over them.
//!
//! * `modules.dep`: `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko ...`,
//!   a module's path and the paths it needs, already listed in load-order-reversed form.
//! * `modules.alias`: `alias <glob> <module>`, for modaliases (`pci:v00001AF4d00001001*`) and
//!   names (`crypto-crc32c`).
//! * `modules.softdep`: `softdep <module> pre: <names...> post: <names...>`.
//! * `modules.builtin`: paths of modules compiled into the kernel, which need no loading.
//!
//! Module names compare with `-` and `_` as equals, as the kernel does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A module request cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmodError {
    /// No module, alias or built-in has this name.
    #[error("no kernel module or alias named {0:?}")]
    Unknown(String),
    /// A line of an index file does not have the expected shape.
    #[error("{file}:{line}: malformed line {text:?}")]
    Malformed {
        /// The index file.
        file: &'static str,
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// Dependencies form a cycle.
    #[error("dependency cycle through module {0}")]
    Cycle(String),
}

/// One loadable module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Normalised name (`_` for `-`).
    pub name: String,
    /// Path relative to the modules directory, as in `modules.dep`.
    pub path: String,
    /// Names of the modules it needs.
    pub deps: Vec<String>,
}

/// Soft dependencies of a module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Softdep {
    pre: Vec<String>,
    post: Vec<String>,
}

/// The parsed index of one kernel's modules.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    modules: BTreeMap<String, Module>,
    builtin: HashSet<String>,
    aliases: Vec<(glob::Pattern, String)>,
    softdeps: HashMap<String, Softdep>,
}

/// Normalises a module name: `-` becomes `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of an index path (`kernel/fs/ext4/ext4.ko.xz` gives `ext4`).
pub fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

impl ModuleIndex {
    /// Parses the contents of the four index files.
    pub fn parse(dep: &str, alias: &str, softdep: &str, builtin: &str) -> Result<Self, KmodError> {
        let mut index = Self::default();
        for (number, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (path, deps) = line.split_once(':').ok_or_else(|| KmodError::Malformed {
                file: "modules.dep",
                line: number + 1,
                text: line.to_owned(),
            })?;
            let name = name_of_path(path);
            let deps = deps.split_whitespace().map(name_of_path).collect();
            index.modules.insert(
                name.clone(),
                Module {
                    name,
                    path: path.to_owned(),
                    deps,
                },
            );
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                // A pattern glob cannot compile is matched literally.
                let pattern = glob::Pattern::new(pattern).unwrap_or_else(|_| {
                    glob::Pattern::new(&glob::Pattern::escape(pattern)).unwrap()
                });
                index.aliases.push((pattern, normalize(module)));
            }
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let entry = index.softdeps.entry(normalize(module)).or_default();
            let mut list = None;
            for word in words {
                match word {
                    "pre:" => list = Some(&mut entry.pre),
                    "post:" => list = Some(&mut entry.post),
                    // Words before any "pre:"/"post:" are ignored, as libkmod does.
                    other => {
                        if let Some(list) = list.as_deref_mut() {
                            list.push(other.to_owned());
                        }
                    }
                }
            }
        }
        index.builtin = builtin.lines().map(name_of_path).collect();
        Ok(index)
    }

    /// The module named `name`, if it is loadable (not built in).
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.get(&normalize(name))
    }

    /// The modules whose alias patterns match `alias` (a modalias or an alias name).
    pub fn lookup_alias(&self, alias: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if pattern.matches(alias) && !names.contains(module) {
                names.push(module.clone());
            }
        }
        names
    }

    /// Resolves a request (module name or alias) to module names: the module itself if it exists
    /// (or is built in), otherwise every module whose alias matches.
    pub fn resolve(&self, request: &str) -> Result<Vec<String>, KmodError> {
        let name = normalize(request);
        if self.modules.contains_key(&name) || self.builtin.contains(&name) {
            return Ok(vec![name]);
        }
        let matches = self.lookup_alias(request);
        if matches.is_empty() {
            Err(KmodError::Unknown(request.to_owned()))
        } else {
            Ok(matches)
        }
    }

    /// The modules to load, in order, so that every requested module ends up loaded: each
    /// module comes after its dependencies and its soft `pre:` dependencies, and before its
    /// soft `post:` ones. Built-in modules are left out; soft dependencies that cannot be
    /// resolved are skipped, as modprobe does.
    pub fn load_order<S: AsRef<str>>(&self, requests: &[S]) -> Result<Vec<&Module>, KmodError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut visiting = BTreeSet::new();
        for request in requests {
            for name in self.resolve(request.as_ref())? {
                self.visit(&name, &mut order, &mut done, &mut visiting)?;
            }
        }
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        order: &mut Vec<&'a Module>,
        done: &mut BTreeSet<String>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<(), KmodError> {
        if done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        let Some(module) = self.modules.get(name) else {
            return Err(KmodError::Unknown(name.to_owned()));
        };
        if !visiting.insert(name.to_owned()) {
            return Err(KmodError::Cycle(name.to_owned()));
        }
        let softdep = self.softdeps.get(name);
        for pre in softdep.map(|s| s.pre.as_slice()).unwrap_or_default() {
            for dep in self.resolve(pre).unwrap_or_default() {
                if !visiting.contains(&dep) {
                    self.visit(&dep, order, done, visiting)?;
                }
            }
        }
        // modules.dep lists the deepest dependency last.
        for dep in module.deps.iter().rev() {
            self.visit(dep, order, done, visiting)?;
        }
        visiting.remove(name);
        done.insert(name.to_owned());
        order.push(module);
        for post in softdep.map(|s| s.post.as_slice()).unwrap_or_default() {
            for dep in self.resolve(post).unwrap_or_default() {
                self.visit(&dep, order, done, visiting)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
";
    const ALIAS: &str = "\
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias virtio:d00000002v* virtio_blk
";
    const SOFTDEP: &str = "softdep ext4 pre: crypto-crc32c\nsoftdep cifs gcm\n";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio.ko\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(DEP, ALIAS, SOFTDEP, BUILTIN).unwrap()
    }

    fn names(modules: &[&Module]) -> Vec<String> {
        modules.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn ext4_loads_after_softdeps_and_deps() {
        let index = index();
        let order = names(&index.load_order(&["ext4"]).unwrap());
        assert_eq!(
            order,
            [
                "crc32c_intel",
                "crc32c_generic",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );
    }

    #[test]
    fn modaliases_and_builtins_resolve() {
        let index = index();
        assert_eq!(
            index.resolve("virtio:d00000002v00001AF4").unwrap(),
            ["virtio_blk"]
        );
        assert_eq!(index.resolve("virtio").unwrap(), ["virtio"]);
        assert!(index.load_order(&["virtio"]).unwrap().is_empty());
        let order = index.load_order(&["virtio-blk"]).unwrap();
        assert_eq!(names(&order), ["virtio_ring", "virtio_blk"]);
        assert_eq!(order[1].path, "kernel/drivers/block/virtio_blk.ko.xz");
    }

    #[test]
    fn unknown_names_and_malformed_lines_are_errors() {
        let index = index();
        assert_eq!(
            index.resolve("nope"),
            Err(KmodError::Unknown("nope".into()))
        );
        let err = ModuleIndex::parse("no colon here\n", "", "", "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "modules.dep:1: malformed line \"no colon here\""
        );
    }

    #[test]
    fn cycles_are_reported() {
        let index = ModuleIndex::parse("a.ko: b.ko\nb.ko: a.ko\n", "", "", "").unwrap();
        assert!(matches!(index.load_order(&["a"]), Err(KmodError::Cycle(_))));
    }
}
