//! QEMU crash lab for rkdump.
//!
//! # Brief overview
//!
//! The lab proves rkdump on real kernel crashes. [`kernels`] fetches Debian kernels into the
//! [`cache`]; [`images`] builds initramfs images for the first and the capture kernel from
//! scratch; [`vm`] boots a guest under QEMU (TCG: there is no KVM here) and follows its stages
//! on the serial console; [`crash`] runs one [`variants`] entry end to end and keeps what the
//! capture kernel wrote; [`reference`](mod@reference) runs the tools rkdump is compared with (makedumpfile,
//! crash, drgn). [`build`] produces the static binaries the images carry; [`sshd`] and [`nfsd`]
//! run a real OpenSSH server and a real NFS server (nfs-ganesha) on the loopback for the network
//! targets. [`debian`] is a real installed Debian 12 system (systemd, the lab's cloud kernel) for
//! testing rkdump's first-kernel side: its image builder and `rkdump start` under systemd, in
//! variants (the generic kernel, Debian's kdump-tools installed); [`bench_image`] compares
//! rkdump's capture image with kdump-tools' there. [`package`] builds the Debian package and
//! [`installed`] takes it through a user's flow on that system (`dpkg -i`, the service armed at
//! boot, crashes, a kernel upgrade, purge): the README's demo and the package tests.

pub mod bench;
pub mod bench_image;
pub mod build;
pub mod cache;
pub mod crash;
pub mod debian;
pub mod images;
pub mod installed;
pub mod kernels;
pub mod nfsd;
pub mod package;
pub mod reference;
pub mod scenario;
pub mod sshd;
pub mod variants;
pub mod vm;
