# Compares two kdump-compressed dumps page by page with the C libraries makedumpfile and crash
# link: zlib's uncompress, liblzo2's lzo1x_decompress_safe, libsnappy's snappy_uncompress and
# libzstd's ZSTD_decompress, through ctypes. Nothing of rkdump is used: the layout is read from
# makedumpfile's format description (header at 0, sub-header at block_size, the two bitmaps,
# one 24-byte descriptor per set bit of the 2nd bitmap).
#
# Usage: python3 kdump_pages.py DUMP_A DUMP_B
# Prints one JSON object: each file's size, header status and page-flag counts, whether the
# bitmaps are equal, how many pages decode to the same bytes and how many have byte-identical
# stored forms, and the first few differences. Exit status 0 whatever the comparison says; 2
# when a file cannot be read as a kdump-compressed dump.

import ctypes
import json
import mmap
import struct
import sys

PAGE = 4096
ZLIB, LZO, SNAPPY, ZSTD = 0x1, 0x2, 0x4, 0x20

libz = ctypes.CDLL("libz.so.1")
lzo = ctypes.CDLL("liblzo2.so.2")
snappy = ctypes.CDLL("libsnappy.so.1")
zstd = ctypes.CDLL("libzstd.so.1")
zstd.ZSTD_decompress.restype = ctypes.c_size_t
zstd.ZSTD_isError.argtypes = [ctypes.c_size_t]


def decode(data, flags):
    """The page a stored form decodes to, or an error string."""
    out = ctypes.create_string_buffer(PAGE)
    if flags == 0:
        return data if len(data) == PAGE else f"raw page of {len(data)} bytes"
    if flags == ZLIB:
        n = ctypes.c_ulong(PAGE)
        rc = libz.uncompress(out, ctypes.byref(n), data, ctypes.c_ulong(len(data)))
        ok = rc == 0
    elif flags == LZO:
        n = ctypes.c_ulong(PAGE)
        rc = lzo.lzo1x_decompress_safe(data, ctypes.c_ulong(len(data)), out, ctypes.byref(n), None)
        ok = rc == 0
    elif flags == SNAPPY:
        n = ctypes.c_size_t(PAGE)
        rc = snappy.snappy_uncompress(data, ctypes.c_size_t(len(data)), out, ctypes.byref(n))
        ok = rc == 0
    elif flags == ZSTD:
        got = zstd.ZSTD_decompress(out, ctypes.c_size_t(PAGE), data, ctypes.c_size_t(len(data)))
        ok = not zstd.ZSTD_isError(got)
        n = ctypes.c_ulong(got if ok else 0)
        rc = got
    else:
        return f"unknown page flags {flags:#x}"
    if not ok:
        return f"flags {flags:#x}: decoder error {rc}"
    if n.value != PAGE:
        return f"flags {flags:#x}: decodes to {n.value} bytes"
    return out.raw


class Dump:
    def __init__(self, path):
        with open(path, "rb") as f:
            self.bytes = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        b = self.bytes
        if b[:8] != b"KDUMP   ":
            raise ValueError(f"{path}: not a kdump-compressed file")
        (self.version,) = struct.unpack_from("<i", b, 8)
        self.status, block, sub_blocks, bitmap_blocks = struct.unpack_from("<IiiI", b, 424)
        if block != PAGE:
            raise ValueError(f"{path}: block size {block}")
        (self.max_mapnr,) = struct.unpack_from("<Q", b, block + 96)
        half = bitmap_blocks // 2 * block
        self.first = (1 + sub_blocks) * block
        self.second = self.first + half
        self.bitmaps = b[self.first:self.second + half]
        self.descriptors = self.second + half
        self.size = len(b)

    def pages(self):
        """(pfn, offset, size, flags) for each descriptor, in page-frame order."""
        b, at = self.bytes, self.descriptors
        second = b[self.second:self.descriptors]
        for byte_index, byte in enumerate(second):
            if byte == 0:
                continue
            for bit in range(8):
                if byte >> bit & 1:
                    pfn = byte_index * 8 + bit
                    if pfn >= self.max_mapnr:
                        return
                    offset, size, flags = struct.unpack_from("<QII", b, at)
                    at += 24
                    yield pfn, offset, size, flags


def main():
    try:
        a, b = Dump(sys.argv[1]), Dump(sys.argv[2])
    except (OSError, ValueError, struct.error) as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    report = {
        "sizes": [a.size, b.size],
        "status": [a.status, b.status],
        "bitmaps_equal": a.bitmaps == b.bitmaps and a.max_mapnr == b.max_mapnr,
        "flag_counts": [{}, {}],
        "pages": 0,
        "same_page": 0,
        "same_stored_bytes": 0,
        "stored_bytes": [0, 0],
        "differences": [],
    }
    for side, dump in enumerate((a, b)):
        counts = report["flag_counts"][side]
        for _, _, size, flags in dump.pages():
            counts[str(flags)] = counts.get(str(flags), 0) + 1
    seen = {}
    for pa, pb in zip(a.pages(), b.pages()):
        report["pages"] += 1
        if pa[0] != pb[0]:
            report["differences"].append(f"descriptor order: pfn {pa[0]:#x} against {pb[0]:#x}")
            break
        pfn = pa[0]
        stored = []
        for side, (dump, (_, offset, size, flags)) in enumerate(((a, pa), (b, pb))):
            data = dump.bytes[offset:offset + size]
            # The shared zero page is counted once per file.
            if (side, offset) not in seen:
                seen[(side, offset)] = True
                report["stored_bytes"][side] += size
            stored.append((data, flags))
        pages = [decode(data, flags) for data, flags in stored]
        if all(isinstance(p, bytes) for p in pages) and pages[0] == pages[1]:
            report["same_page"] += 1
        elif len(report["differences"]) < 5:
            what = [p if isinstance(p, str) else "a page" for p in pages]
            report["differences"].append(f"pfn {pfn:#x}: {what[0]} / {what[1]}, pages differ")
        if stored[0] == stored[1]:
            report["same_stored_bytes"] += 1
    print(json.dumps(report))


main()
