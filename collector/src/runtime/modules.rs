//! Loading kernel modules without modprobe or udev.
//!
//! Coldplug as udev does it at boot: read every `modalias` under `/sys/devices`, match it
//! against `modules.alias`, load what matches (dependencies and soft dependencies first, from
//! depmod's index), and repeat while new devices appear. Modules are loaded with
//! `finit_module(2)`; `.ko.xz`/`.ko.zst` files are handed to the kernel compressed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::kmod::{ModuleInitFlags, finit_module};

use super::log::Log;
use crate::kmod::ModuleIndex;

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the module itself (5.17+).
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;
/// Rounds of coldplug: each round can reveal devices for the next (PCI, then virtio).
const COLDPLUG_ROUNDS: usize = 6;
/// Directories of `/sys/devices` visited at most (bounds the walk).
const MAX_SYSFS_DIRS: usize = 100_000;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The module index cannot be read.
    #[error("{path}: {source}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The index is malformed or names nothing by this name.
    #[error(transparent)]
    Resolve(#[from] crate::kmod::KmodError),
    /// The kernel refused the module.
    #[error("loading {module}: {errno}")]
    Load {
        /// Module file.
        module: String,
        /// The error.
        errno: nix::errno::Errno,
    },
}

/// The running kernel's modules: index and what is loaded.
#[derive(Debug)]
pub struct Modules {
    dir: PathBuf,
    index: ModuleIndex,
    loaded: BTreeSet<String>,
}

fn running_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| String::new(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}

impl Modules {
    /// Reads the index of `/lib/modules/$(uname -r)`.
    pub fn open() -> Result<Self, ModuleError> {
        Self::open_dir(&Path::new("/lib/modules").join(running_release()))
    }

    /// Reads the index in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self, ModuleError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModuleError::Index { path, source })
        };
        let index = ModuleIndex::parse(
            &read("modules.dep")?,
            &read("modules.alias")?,
            &read("modules.softdep").unwrap_or_default(),
            &read("modules.builtin").unwrap_or_default(),
        )?;
        let loaded = std::fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        Ok(Self {
            dir: dir.to_owned(),
            index,
            loaded,
        })
    }

    /// Loads `requests` (names or aliases) and what they need. Failures of individual modules
    /// are logged and skipped (an alias may match modules for other hardware too); returns
    /// how many modules were loaded.
    pub fn load(&mut self, requests: &[String], log: &Log) -> Result<usize, ModuleError> {
        let order: Vec<(String, String)> = {
            let mut order = Vec::new();
            for request in requests {
                match self.index.load_order(std::slice::from_ref(request)) {
                    Ok(modules) => order.extend(
                        modules
                            .into_iter()
                            .map(|m| (m.name.clone(), m.path.clone())),
                    ),
                    Err(e) => log.line(&format!("module {request}: {e}")),
                }
            }
            order
        };
        let mut count = 0;
        for (name, path) in order {
            if self.loaded.contains(&name) {
                continue;
            }
            match self.load_file(&path) {
                Ok(()) => {
                    log.line(&format!("loaded module {name}"));
                    count += 1;
                }
                Err(e) => log.line(&format!("module {name}: {e}")),
            }
            // Loaded or refused, do not try again.
            self.loaded.insert(name);
        }
        Ok(count)
    }

    fn load_file(&self, relative: &str) -> Result<(), ModuleError> {
        let path = self.dir.join(relative);
        let file = std::fs::File::open(&path).map_err(|source| ModuleError::Index {
            path: path.clone(),
            source,
        })?;
        let compressed = [".xz", ".zst", ".gz"]
            .iter()
            .any(|ext| relative.ends_with(ext));
        let flags = if compressed {
            ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
        } else {
            ModuleInitFlags::empty()
        };
        match finit_module(&file, c"", flags) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(errno) => Err(ModuleError::Load {
                module: relative.to_owned(),
                errno,
            }),
        }
    }

    /// Loads the drivers of the devices present, until no new device needs one.
    pub fn coldplug(&mut self, log: &Log) -> Result<usize, ModuleError> {
        let mut total = 0;
        let mut seen = BTreeSet::new();
        for _ in 0..COLDPLUG_ROUNDS {
            let aliases: Vec<String> = modaliases(Path::new("/sys/devices"))
                .into_iter()
                .filter(|a| seen.insert(a.clone()))
                .collect();
            let mut requests = Vec::new();
            for alias in &aliases {
                requests.extend(self.index.lookup_alias(alias));
            }
            requests.sort();
            requests.dedup();
            requests.retain(|m| !self.loaded.contains(m));
            if requests.is_empty() {
                break;
            }
            total += self.load(&requests, log)?;
            // Give the new drivers' devices time to register before looking again.
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(total)
    }
}

/// Every `modalias` under `root`, without following symbolic links.
pub fn modaliases(root: &Path) -> Vec<String> {
    let mut aliases = Vec::new();
    let mut stack = vec![root.to_owned()];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > MAX_SYSFS_DIRS {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && entry.file_name() == "modalias"
                && let Ok(text) = std::fs::read_to_string(entry.path())
                && !text.trim().is_empty()
            {
                aliases.push(text.trim().to_owned());
            }
        }
    }
    aliases.sort();
    aliases.dedup();
    aliases
}
