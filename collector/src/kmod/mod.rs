//! Kernel modules: depmod's index files and loading modules without modprobe.
//!
//! The capture image carries a standard `/lib/modules/$(uname -r)` tree with depmod's index
//! files. [`index`] reads `modules.dep`, `modules.alias`, `modules.softdep` and
//! `modules.builtin` and answers the two questions modprobe would: which module files provide a
//! name or modalias, and in which order must they (and their dependencies) be loaded.

pub mod index;

pub use index::{KmodError, Module, ModuleIndex};
