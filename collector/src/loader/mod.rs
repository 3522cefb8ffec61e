//! The kexec loader: puts the capture kernel and its initramfs into the crash region of the
//! running kernel, so that a panic boots them.
//!
//! Two ways in, as kexec-tools has them:
//!
//! * `kexec_file_load(2)`, the default: the running kernel reads the kernel and initramfs files
//!   itself, verifies their signature where it is configured to, builds the ELF core header and
//!   the capture kernel's boot parameters, and adds `elfcorehdr=` to its command line.
//! * `kexec_load(2)`, the fallback ([`native`]): rkdump builds every segment itself (the ELF core
//!   header from `/proc/iomem` and sysfs, `boot_params` with an e820 map of the crash region,
//!   the protected-mode kernel, the initramfs and a purgatory of its own) and hands the kernel
//!   raw memory to copy.
//!
//! Which one is used, why a load failed (from the errno the kernel really returned, see
//! `errno`), and when falling back can help, is decided here.

pub(crate) mod native;
