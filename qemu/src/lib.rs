//! QEMU crash lab for rkdump.
//!
//! # Brief overview
//!
//! The lab proves rkdump on real kernel crashes. It fetches Debian kernels , builds
//! initramfs images for the first and the capture kernel from scratch, boots a guest under QEMU
//! (TCG: there is no KVM here), crashes it with sysrq-c and collects what the capture kernel wrote.
//! [`build`] produces the static binaries the images carry.

pub mod build;
