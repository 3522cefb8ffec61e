//! `rkdump estimate`: the `crashkernel=` this machine needs, from what the capture will hold in
//! memory, measured on this system rather than read from a table.
//!
//! The parts, each from the files that will really be loaded:
//!
//! * the capture kernel while it boots: the bzImage's `init_size` (its decompressed text, data
//!   and bss, plus the decompressor's room);
//! * the capture image twice, packed and unpacked: the kernel unpacks the initramfs into its
//!   tmpfs while the packed image is still in memory (a zstd image too large for the
//!   reservation fails there, before rkdump starts);
//! * the capture kernel's own allocations once booted: 24 MiB (slab, page tables, the console,
//!   the drivers of a small image), 2 MiB more for each CPU beyond the first, and the `struct
//!   page` array of the reserved memory (1/64 of it);
//! * rkdump's peak memory: 6 MiB with one worker, 4 MiB more for each further worker; the
//!   engine's memory does not grow with the machine's RAM (docs/design.md, "Bounded memory"),
//!   except for `-E` (ELF), which keeps one bit per page frame.
//!
//! The constants come from the lab (docs/lab.md, "crashkernel="): on Debian's generic 6.1
//! kernel with the lab's 12 MiB image the smallest reservation that works is 104M for 1 and
//! 3 GiB guests; this estimate gives 128M there. The total is rounded up to 8 MiB.

use super::initramfs;
use super::service::ServiceError;
use crate::loader::native::bzimage;

const MIB: u64 = 1 << 20;
/// The capture kernel's allocations after boot, for one CPU.
const KERNEL_RUNTIME: u64 = 24 * MIB;
/// Each further CPU of the capture kernel.
const KERNEL_PER_CPU: u64 = 2 * MIB;
/// rkdump with one worker.
const RKDUMP_BASE: u64 = 6 * MIB;
/// Each further worker.
const RKDUMP_PER_WORKER: u64 = 4 * MIB;

/// The estimate and its parts, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Estimate {
    /// The kernel's `init_size`.
    pub kernel: u64,
    /// The capture image as loaded.
    pub image_packed: u64,
    /// Its files once unpacked.
    pub image_unpacked: u64,
    /// How the unpacked size was found, when it was not read from the archive.
    pub unpacked_note: Option<String>,
    /// The capture kernel's allocations after boot (CPUs and struct pages included).
    pub kernel_runtime: u64,
    /// rkdump's peak.
    pub rkdump: u64,
    /// Capture CPUs assumed.
    pub cpus: u32,
    /// The sum, rounded up to 8 MiB.
    pub needed: u64,
}

/// Why there is no estimate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EstimateError {
    /// The kernel image is not a loadable bzImage.
    #[error("the kernel image: {0}")]
    Kernel(#[from] bzimage::BzImageError),
    /// The capture image is not an initramfs rkdump can measure.
    #[error("the capture image: {0}")]
    Image(String),
}

/// Estimates the reservation for `kernel` and `image`, with `cpus` capture CPUs.
pub(crate) fn estimate(kernel: &[u8], image: &[u8], cpus: u32) -> Result<Estimate, EstimateError> {
    let header = bzimage::parse(kernel, false)?;
    let kernel_size = u64::from(header.init_size);
    let image_packed = image.len() as u64;
    let unpacked = initramfs::read(image).map_err(|e| EstimateError::Image(e.to_string()))?;
    let (image_unpacked, unpacked_note) = (unpacked.unpacked, unpacked.note);
    let cpus = cpus.max(1);
    let extra = u64::from(cpus - 1);
    let rkdump = RKDUMP_BASE + extra * RKDUMP_PER_WORKER;
    let without_pages = kernel_size
        + image_packed
        + image_unpacked
        + KERNEL_RUNTIME
        + extra * KERNEL_PER_CPU
        + rkdump;
    // The struct pages of the reservation itself: 64 bytes per 4 KiB page.
    let pages = without_pages.div_ceil(63);
    let needed = (without_pages + pages).next_multiple_of(8 * MIB);
    Ok(Estimate {
        kernel: kernel_size,
        image_packed,
        image_unpacked,
        unpacked_note,
        kernel_runtime: KERNEL_RUNTIME + extra * KERNEL_PER_CPU + pages,
        rkdump,
        cpus,
        needed,
    })
}

/// Reads the files and estimates; for the service's messages.
pub(crate) fn estimate_files(
    kernel: &std::path::Path,
    image: &std::path::Path,
    cpus: u32,
) -> Result<Estimate, ServiceError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServiceError::ReadConfig {
            path: path.to_owned(),
            source,
        })
    };
    estimate(&read(kernel)?, &read(image)?, cpus).map_err(ServiceError::Estimate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage setup header with the fields `parse` checks and `init_size`.
    fn bzimage(init_size: u32) -> Vec<u8> {
        let mut image = vec![0u8; 0x1000];
        image[0x1f1] = 4; // setup_sects
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        image[0x211] = 1; // loadflags: LOADED_HIGH
        image[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        image[0x234] = 1; // relocatable
        image[0x236..0x238].copy_from_slice(&0x7fu16.to_le_bytes());
        image[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        image[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        image
    }

    fn archive(size: usize) -> Vec<u8> {
        let mut archive = crate::format::cpio::Archive::new();
        archive.file("/init", 0o755, &vec![1; size]);
        archive.finish()
    }

    #[test]
    fn the_lab_system_gets_between_the_smallest_working_reservation_and_1_5_times_it() {
        // docs/lab.md, "crashkernel=": Debian's generic 6.1 (init_size 65,120 KiB) with the
        // lab's 12.2 MiB plain image works at 104M and not at 96M, for 1 and 3 GiB guests.
        let kernel = bzimage(65_120 << 10);
        let image = archive(12_800_000);
        let estimate = estimate(&kernel, &image, 1).unwrap();
        assert!(estimate.needed >= 104 * MIB, "{estimate:?}");
        assert!(estimate.needed <= 156 * MIB, "{estimate:?}");
        assert_eq!(estimate.needed % (8 * MIB), 0);
        // A second capture CPU: one more rkdump worker and the kernel's per-CPU memory.
        let two = super::estimate(&kernel, &image, 2).unwrap();
        assert_eq!(two.rkdump, estimate.rkdump + 4 * MIB);
        assert!(
            two.kernel_runtime >= estimate.kernel_runtime + 2 * MIB,
            "{two:?}"
        );
        assert!(two.needed >= estimate.needed, "{two:?}");
    }
}
