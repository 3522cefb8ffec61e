//! Guest workload of the crash lab: fills memory with mixed content, then crashes the kernel.
//!
//! Runs as the last step of the first kernel's init. It writes files (clean page cache with
//! buffer heads: private cache pages), allocates anonymous memory filled page by page with
//! zeros, random bytes, text and a repeating pattern (so every filter category and compression
//! case occurs), then pins itself to the requested CPU and writes `c` to /proc/sysrq-trigger.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use rkdump::format::bytes::to_usize;

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;

/// Fill guest memory with mixed data, then panic the kernel.
#[derive(Parser)]
struct Args {
    /// Fill memory until this share of MemTotal is in use (0: idle guest).
    #[arg(long, default_value_t = 0)]
    fill_percent: u64,
    /// Directory for page-cache files (on a real filesystem).
    #[arg(long)]
    files_dir: Option<PathBuf>,
    /// Share of the fill that goes into page-cache files, in percent.
    #[arg(long, default_value_t = 25)]
    files_share: u64,
    /// CPU to trigger the panic on.
    #[arg(long, default_value_t = 0)]
    panic_cpu: usize,
}

fn meminfo_kib(field: &str) -> u64 {
    let text = fs::read_to_string("/proc/meminfo").expect("reading /proc/meminfo");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/meminfo"))
}

/// xorshift64: fast, and good enough to make pages incompressible.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const WORDS: &[&str] = &[
    "kernel", "panic", "memory", "page", "dump", "crash", "vmcore", "capture", "sysrq", "trigger",
    "filter", "compress", "zstd", "bitmap", "section", "buddy", "slab", "cache", "anon", "lru",
];

fn fill_page(page: &mut [u8], kind: u64, random: &mut Random) {
    match kind % 4 {
        // A real (allocated) page of zeros: touch it first so it is not the shared zero page.
        0 => {
            page[0] = 1;
            page.fill(0);
        }
        1 => page
            .chunks_exact_mut(8)
            .for_each(|c| c.copy_from_slice(&random.next().to_le_bytes())),
        2 => {
            let mut at = 0;
            while at < page.len() {
                let word = WORDS[to_usize(random.next() % WORDS.len() as u64)].as_bytes();
                let n = word.len().min(page.len() - at);
                page[at..at + n].copy_from_slice(&word[..n]);
                at += n;
                if at < page.len() {
                    page[at] = b' ';
                    at += 1;
                }
            }
        }
        _ => page
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = u8::try_from(i % 251).expect("below 251")),
    }
}

fn main() {
    let args = Args::parse();
    let total = meminfo_kib("MemTotal") * 1024;
    let used = total - meminfo_kib("MemAvailable") * 1024;
    let target = total * args.fill_percent / 100;
    let fill = to_usize(target.saturating_sub(used));
    let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut page = vec![0u8; PAGE];

    let files = match &args.files_dir {
        Some(_) => fill * to_usize(args.files_share) / 100,
        None => 0,
    };
    if let Some(dir) = &args.files_dir {
        let mut written = 0;
        let mut index = 0;
        while written < files {
            let path = dir.join(format!("file-{index}"));
            let mut file = fs::File::create(&path).expect("creating a page-cache file");
            for n in 0..(4 * MIB / PAGE) {
                fill_page(&mut page, n as u64 + 1, &mut random);
                file.write_all(&page).expect("writing a page-cache file");
            }
            file.sync_all().expect("syncing a page-cache file");
            written += 4 * MIB;
            index += 1;
        }
    }

    let anonymous = fill - files.min(fill);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut kind = 0;
    for _ in 0..anonymous / MIB {
        let mut block = Vec::with_capacity(MIB);
        for _ in 0..MIB / PAGE {
            fill_page(&mut page, kind, &mut random);
            block.extend_from_slice(&page);
            kind += 1;
        }
        blocks.push(block);
    }
    println!(
        "RKDUMP-LAB: panic cpu={} files={}MiB anonymous={}MiB",
        args.panic_cpu,
        files / MIB,
        blocks.len()
    );
    // Let the console print the line before the kernel's panic messages interleave with it.
    std::io::Write::flush(&mut std::io::stdout()).expect("flushing the marker");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut cpus = CpuSet::new();
    cpus.set(args.panic_cpu).expect("valid CPU number");
    sched_setaffinity(Pid::from_raw(0), &cpus).expect("pinning to the panic CPU");
    fs::write("/proc/sysrq-trigger", b"c").expect("writing /proc/sysrq-trigger");
    // Not reached: the kernel has crashed. Keep the memory alive until then.
    drop(blocks);
}
