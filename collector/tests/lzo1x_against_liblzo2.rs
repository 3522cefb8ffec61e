//! rkdump's LZO1X-1 encoder against the reference: liblzo2 (as makedumpfile and crash link
//! it). Every page rkdump compresses must decode with liblzo2's `lzo1x_decompress_safe` to
//! the page itself, and the pages must come out about as small as liblzo2's own
//! `lzo1x_1_compress` makes them (makedumpfile's `-l`). liblzo2 is called through Python's
//! ctypes, so the test needs nothing but the library (Debian's liblzo2-2).

use std::io::Write;
use std::process::{Command, Stdio};

use rkdump::format::lzo1x::Compressor;

const PAGE: usize = 4096;

/// The reference side: reads `len:u32 page, len:u32 compressed` records from standard input,
/// decompresses with lzo1x_decompress_safe, compresses with lzo1x_1_compress, and prints one
/// line per record: `<decoded equal 0/1> <liblzo2's size> <byte-identical 0/1>`.
const REFERENCE: &str = r#"
import ctypes, struct, sys
lzo = ctypes.CDLL("liblzo2.so.2")
data = sys.stdin.buffer.read()
wrkmem = ctypes.create_string_buffer(16384 * ctypes.sizeof(ctypes.c_void_p))
at = 0
while at < len(data):
    (n,) = struct.unpack_from("<I", data, at); page = data[at + 4:at + 4 + n]; at += 4 + n
    (m,) = struct.unpack_from("<I", data, at); ours = data[at + 4:at + 4 + m]; at += 4 + m
    out = ctypes.create_string_buffer(n + 64)
    out_len = ctypes.c_ulong(n + 64)
    rc = lzo.lzo1x_decompress_safe(ours, ctypes.c_ulong(m), out, ctypes.byref(out_len), None)
    equal = rc == 0 and out.raw[:out_len.value] == page
    theirs = ctypes.create_string_buffer(n + n // 16 + 67)
    theirs_len = ctypes.c_ulong(0)
    rc = lzo.lzo1x_1_compress(page, ctypes.c_ulong(n), theirs, ctypes.byref(theirs_len), wrkmem)
    assert rc == 0, rc
    print(int(equal), theirs_len.value, int(theirs.raw[:theirs_len.value] == ours))
"#;

/// Pages of the kinds a dump holds: program code and data (this machine's binaries), text,
/// zero and sparse pages, and incompressible bytes.
fn pages() -> Vec<Vec<u8>> {
    let mut pages = vec![vec![0; PAGE]];
    let mut sparse = vec![0; PAGE];
    for i in (0..PAGE).step_by(64) {
        sparse[i] = u8::try_from(i / 64).expect("under 64");
    }
    pages.push(sparse);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    pages.push(
        (0..PAGE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect(),
    );
    for file in [
        "/bin/bash",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/share/common-licenses/GPL-3",
    ] {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        pages.extend(
            bytes
                .chunks_exact(PAGE)
                .step_by(3)
                .take(150)
                .map(<[u8]>::to_vec),
        );
    }
    pages
}

#[test]
fn every_page_decodes_with_liblzo2_and_is_as_small_as_liblzo2_makes_it() {
    let pages = pages();
    let mut compressor = Compressor::new();
    let mut records = Vec::new();
    let mut ours = Vec::new();
    for page in &pages {
        let mut out = Vec::new();
        compressor.compress(page, &mut out);
        for part in [page.as_slice(), out.as_slice()] {
            records.extend_from_slice(&u32::try_from(part.len()).unwrap().to_le_bytes());
            records.extend_from_slice(part);
        }
        ours.push(out.len());
    }
    let mut python = Command::new("python3")
        .args(["-c", REFERENCE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    python.stdin.take().unwrap().write_all(&records).unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(output.status.success(), "the liblzo2 reference failed");
    let lines: Vec<Vec<usize>> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|f| f.parse().unwrap()).collect())
        .collect();
    assert_eq!(lines.len(), pages.len());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line[0], 1,
            "page {i}: liblzo2 does not decode it to the page"
        );
    }
    // Sizes as makedumpfile stores them: a page that does not shrink is stored raw.
    let stored = |size: usize| size.min(PAGE);
    let ours_total: usize = ours.iter().map(|&n| stored(n)).sum();
    let theirs_total: usize = lines.iter().map(|l| stored(l[1])).sum();
    let identical = lines.iter().filter(|l| l[2] == 1).count();
    eprintln!(
        "{} pages: rkdump {ours_total} bytes, liblzo2 {theirs_total} bytes ({:.4}x), {identical} byte-identical",
        pages.len(),
        ours_total as f64 / theirs_total as f64
    );
    assert!(
        ours_total as f64 <= theirs_total as f64 * 1.01,
        "rkdump's LZO pages are more than 1% larger than liblzo2's: {ours_total} against {theirs_total}"
    );
}
