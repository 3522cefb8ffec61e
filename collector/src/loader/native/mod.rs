//! The native kexec_load path.
pub(crate) mod purgatory;
