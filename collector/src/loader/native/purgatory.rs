//! The purgatory of the `kexec_load(2)` path: the few hundred bytes that run between the
//! crashed kernel and the capture kernel, x86_64 only.
//!
//! # Why it exists
//!
//! On a panic, the kernel's `relocate_kernel` (`arch/x86/kernel/relocate_kernel_64.S`) copies the
//! segments into place and jumps to the image's entry in 64-bit mode, with interrupts off and
//! identity-mapped page tables, but with every general register cleared except `rsp`, which
//! points into a page the purgatory must not rely on. The Linux x86 64-bit boot protocol
//! (`Documentation/arch/x86/boot.rst`) wants more than that at `startup_64`: a GDT with flat 4 GiB
//! code at selector `0x10` (`__BOOT_CS`) and data at `0x18` (`__BOOT_DS`), the segment registers
//! loaded from it, and `rsi` holding the physical address of `boot_params`. `kexec_file_load(2)`
//! has the kernel supply its own purgatory; with `kexec_load(2)` the loader brings one, as
//! kexec-tools does (`purgatory/arch/x86_64/entry64.S`, `purgatory/purgatory.c`).
//!
//! # What it does
//!
//! 1. Loads `rsp` with the top of its own stack (the last [`STACK_LEN`] bytes of the blob), loads
//!    its own GDT, whose descriptor base is computed at run time with a RIP-relative `lea` (the
//!    load address is known only to the loader, and nothing is patched for it), reloads `ds`,
//!    `es`, `ss`, `fs`, `gs` with `0x18`, and `cs` with `0x10` through a far return.
//! 2. Computes SHA-256 over the concatenation of the regions of its parameter block (physical
//!    start and length each; the segments the kernel copied) and compares it with the digest of
//!    the block: a mismatch means the crashed kernel scribbled over the crash region, and the
//!    purgatory spins forever (`cli; hlt; jmp`) rather than boot a corrupt kernel, as kexec-tools'
//!    purgatory does.
//! 3. Jumps to the kernel's 64-bit entry with `rsi` = `boot_params`, and `rbx`, `rbp`, `rdi` = 0.
//!
//! The code is `global_asm!` in a section of its own (`.text.rkdump_purgatory`, flagged `R`,
//! `SHF_GNU_RETAIN`, so that `--gc-sections` keeps it even while nothing references it), between the global symbols
//! `rkdump_purgatory_start` and `rkdump_purgatory_end`. It is position-independent: every
//! memory operand is RIP-relative or register-based, every branch is relative, and no symbol is
//! referenced by a relocation, so the bytes are the same in the PIE test binaries and in the
//! static release binary. The SHA-256 routine inside it, `rkdump_purgatory_sha256`, follows the
//! SysV ABI so the host can run it ([`sys::purgatory_sha256`]): the tests compare it with the
//! `sha2` crate, which computes the digest the loader patches in ([`digest`]). It uses only
//! base x86_64 integer instructions (no SSE, no SHA extensions).
//!
//! # Layout of the blob
//!
//! | offset | size | contents |
//! |---|---|---|
//! | `0x000` | 16 | entry ([`ENTRY_OFFSET`]): a `jmp` to the code, then `int3` |
//! | `0x010` | 8 | `entry`: the kernel's 64-bit entry (protected-mode load address + 0x200) |
//! | `0x018` | 8 | `boot_params`: physical address of the capture kernel's `boot_params` |
//! | `0x020` | 8 | the number of regions, at most [`MAX_REGIONS`] |
//! | `0x028` | 8 | zero (reserved) |
//! | `0x030` | 32 | the SHA-256 digest of the regions, in order |
//! | `0x050` | 16 × 16 | the regions: physical start, then length, each `u64` |
//! | `0x150` | 32 | the GDT: null, null, code (`0x10`), data (`0x18`) |
//! | `0x170` | 256 | the SHA-256 round constants |
//! | `0x270` | 32 | the SHA-256 initial hash value |
//! | `0x290` | 0x3b0 | the code (0x3a7 bytes today), then `int3` |
//! | `0x640` | [`STACK_LEN`] | the stack (zeros; the routine needs about 600 bytes), up to [`BLOB_LEN`] = `0xa40` |
//!
//! Every field is little-endian. The blob must be loaded at a 16-byte aligned physical
//! address ([`ALIGN`]; the GDT wants 8, the stack 16); it needs no fixing up for its address.

use crate::sys;

/// One region the purgatory hashes: physical start and length (the segment's `bufsz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Region {
    /// Physical address of the first byte.
    pub start: u64,
    /// Number of bytes.
    pub len: u64,
}

/// The most regions the parameter block holds (`kexec_load(2)` takes at most 16 segments).
pub(crate) const MAX_REGIONS: usize = 16;

/// What the loader patches into the purgatory.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Params {
    /// The kernel's 64-bit entry: its protected-mode load address + 0x200.
    pub entry: u64,
    /// Physical address of the capture kernel's `boot_params` (passed in `rsi`).
    pub boot_params: u64,
    /// The regions hashed, in order; at most [`MAX_REGIONS`].
    pub regions: Vec<Region>,
    /// SHA-256 of the regions' contents, concatenated in order ([`digest`]).
    pub digest: [u8; 32],
}

/// Why [`image`] cannot build a purgatory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum PurgatoryError {
    /// More regions than the parameter block has room for.
    #[error("{count} regions to verify, the purgatory holds at most {MAX_REGIONS}")]
    TooManyRegions {
        /// How many regions were given.
        count: usize,
    },
    /// A region runs past the end of the physical address space.
    #[error("region {index} ({start:#x}, {len:#x} bytes) wraps around the address space")]
    RegionWraps {
        /// Its position in [`Params::regions`].
        index: usize,
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
    },
}

/// Where execution starts, from the start of the blob.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const ENTRY_OFFSET: u64 = 0;

/// The alignment the blob needs in physical memory.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const ALIGN: u64 = 16;

/// The size of the stack, the end of the blob.
pub(crate) const STACK_LEN: usize = 1024;

/// The size of the blob, stack included.
pub(crate) const BLOB_LEN: usize = sys::PURGATORY_LEN;
// The stack top is the end of the blob: 16-byte aligned with the blob.
const _: () = assert!(BLOB_LEN.is_multiple_of(16) && STACK_LEN.is_multiple_of(16));

/// Offset of the parameter block.
const PARAMS_OFFSET: usize = 0x10;
/// Offset of `entry`.
const ENTRY_FIELD: usize = PARAMS_OFFSET;
/// Offset of `boot_params`.
const BOOT_PARAMS_FIELD: usize = PARAMS_OFFSET + 8;
/// Offset of the region count.
const COUNT_FIELD: usize = PARAMS_OFFSET + 16;
/// Offset of the digest.
const DIGEST_FIELD: usize = PARAMS_OFFSET + 32;
/// Offset of the region table.
const REGIONS_FIELD: usize = PARAMS_OFFSET + 64;
/// Size of one region entry.
const REGION_LEN: usize = 16;
/// End of the parameter block, and offset of the GDT.
const PARAMS_END: usize = REGIONS_FIELD + MAX_REGIONS * REGION_LEN;
/// Offset of the code: after the GDT (32 bytes), the round constants (256) and the initial hash
/// value (32).
const CODE_OFFSET: usize = PARAMS_END + 32 + 256 + 32;

/// The purgatory's bytes with `params` patched in; load it anywhere 16-byte aligned ([`ALIGN`]),
/// execution starts at [`ENTRY_OFFSET`] (0).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn image(params: &Params) -> Result<Vec<u8>, PurgatoryError> {
    let count = params.regions.len();
    if count > MAX_REGIONS {
        return Err(PurgatoryError::TooManyRegions { count });
    }
    if let Some((index, region)) = params
        .regions
        .iter()
        .enumerate()
        .find(|(_, r)| r.start.checked_add(r.len).is_none())
    {
        return Err(PurgatoryError::RegionWraps {
            index,
            start: region.start,
            len: region.len,
        });
    }
    let mut blob = sys::purgatory_blob().to_vec();
    let mut put = |offset: usize, value: u64| {
        blob[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    };
    put(ENTRY_FIELD, params.entry);
    put(BOOT_PARAMS_FIELD, params.boot_params);
    put(COUNT_FIELD, count as u64);
    for (i, region) in params.regions.iter().enumerate() {
        put(REGIONS_FIELD + i * REGION_LEN, region.start);
        put(REGIONS_FIELD + i * REGION_LEN + 8, region.len);
    }
    blob[DIGEST_FIELD..DIGEST_FIELD + 32].copy_from_slice(&params.digest);
    Ok(blob)
}

/// The digest the purgatory expects for these segment contents, in region order (the `sha2`
/// crate, over their concatenation).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn digest<'a>(contents: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in contents {
        hasher.update(part);
    }
    hasher.finalize().into()
}

// The purgatory. AT&T syntax. Register use of the SHA-256 routine: `rbp` is its frame (the message
// schedule W, the hash state H, a two-block buffer for the tail and the padding, and the walk's
// variables); in the compression, r8d..r15d are the working variables a..h, `rdi` the round
// constants, `rsi` the round, eax/ebx/ecx/edx the temporaries.
//
// `.org` places the parameter block at `PARAMS_OFFSET` and the stack at the end, and fails the
// build if the code outgrows `BLOB_LEN - STACK_LEN`. Only `.L` labels are referenced inside, so
// the assembler resolves every displacement and leaves no relocation.
//
// `unsafe_code` flags every `global_asm!` (the assembler is trusted as written), and a lint
// attribute on the macro invocation is ignored: hence the module of its own. Nothing here runs
// on the host but `rkdump_purgatory_sha256`, whose contract `sys` states where it declares and
// calls it; no `unsafe` block is needed.
/// The assembly of the purgatory.
#[allow(unsafe_code)]
mod blob {
    use super::{
        BLOB_LEN, CODE_OFFSET, MAX_REGIONS, PARAMS_END, PARAMS_OFFSET, REGION_LEN, STACK_LEN,
    };

    core::arch::global_asm!(
        r#"
    .pushsection .text.rkdump_purgatory,"axR",@progbits
    .balign 16
    .globl rkdump_purgatory_start
    .hidden rkdump_purgatory_start
    .type rkdump_purgatory_start,@object
rkdump_purgatory_start:
.Lp_start:
    jmp .Lp_entry

    .org .Lp_start + {params}, 0xcc
.Lp_kernel_entry:
    .quad 0
.Lp_boot_params:
    .quad 0
.Lp_count:
    .quad 0
    .quad 0
.Lp_digest:
    .fill 32, 1, 0
.Lp_regions:
    .fill {regions_len}, 1, 0

    .org .Lp_start + {params_end}
.Lp_gdt:
    .quad 0
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
.Lp_gdt_end:

.Lp_k:
    .long 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5
    .long 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5
    .long 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3
    .long 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174
    .long 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc
    .long 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da
    .long 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7
    .long 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967
    .long 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13
    .long 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85
    .long 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3
    .long 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070
    .long 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5
    .long 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3
    .long 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208
    .long 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
.Lp_iv:
    .long 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
    .long 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19

    // The entry: 64-bit mode, interrupts off, identity mapped, registers cleared.
    .org .Lp_start + {code_offset}
.Lp_entry:
    cli
    cld
    leaq .Lp_stack_top(%rip), %rsp
    // lgdt takes a 10-byte descriptor (limit, base): built on the stack.
    leaq .Lp_gdt(%rip), %rax
    subq $16, %rsp
    movw $(.Lp_gdt_end - .Lp_gdt - 1), (%rsp)
    movq %rax, 2(%rsp)
    lgdt (%rsp)
    addq $16, %rsp
    movl $0x18, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    // cs = 0x10: a far return to the next instruction.
    leaq .Lp_flat(%rip), %rax
    pushq $0x10
    pushq %rax
    lretq
.Lp_flat:
    leaq .Lp_regions(%rip), %rdi
    movq .Lp_count(%rip), %rsi
    subq $32, %rsp
    movq %rsp, %rdx
    call .Lp_sha256
    movq %rsp, %rdi
    leaq .Lp_digest(%rip), %rsi
    movl $32, %ecx
    repe cmpsb
    jne .Lp_spin
    addq $32, %rsp
    movq .Lp_boot_params(%rip), %rsi
    movq .Lp_kernel_entry(%rip), %rax
    xorl %ebx, %ebx
    xorl %ebp, %ebp
    xorl %edi, %edi
    jmp *%rax
.Lp_spin:
    cli
    hlt
    jmp .Lp_spin

    // rkdump_purgatory_sha256(regions: *const [u64; 2], count: u64, out: *mut [u8; 32]):
    // SHA-256 of the concatenation of `count` regions (start, length), SysV ABI.
    .set .Lf_w, 0
    .set .Lf_h, 256
    .set .Lf_buf, 288
    .set .Lf_regions, 416
    .set .Lf_count, 424
    .set .Lf_out, 432
    .set .Lf_total, 440
    .set .Lf_fill, 448
    .set .Lf_src, 456
    .set .Lf_len, 464
    .set .Lf_size, 472
    .globl rkdump_purgatory_sha256
    .hidden rkdump_purgatory_sha256
    .type rkdump_purgatory_sha256,@function
rkdump_purgatory_sha256:
.Lp_sha256:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $.Lf_size, %rsp
    movq %rsp, %rbp
    movq %rdi, .Lf_regions(%rbp)
    movq %rsi, .Lf_count(%rbp)
    movq %rdx, .Lf_out(%rbp)
    xorl %eax, %eax
    movq %rax, .Lf_total(%rbp)
    movq %rax, .Lf_fill(%rbp)
    leaq .Lp_iv(%rip), %rsi
    xorl %ecx, %ecx
1:  movl (%rsi,%rcx,4), %eax
    movl %eax, .Lf_h(%rbp,%rcx,4)
    incl %ecx
    cmpl $8, %ecx
    jb 1b
.Lp_next_region:
    movq .Lf_count(%rbp), %rax
    testq %rax, %rax
    jz .Lp_final
    decq %rax
    movq %rax, .Lf_count(%rbp)
    movq .Lf_regions(%rbp), %rax
    movq (%rax), %rcx
    movq 8(%rax), %rdx
    addq $16, %rax
    movq %rax, .Lf_regions(%rbp)
    addq %rdx, .Lf_total(%rbp)
    movq %rcx, .Lf_src(%rbp)
    movq %rdx, .Lf_len(%rbp)
.Lp_region_loop:
    movq .Lf_len(%rbp), %rdx
    testq %rdx, %rdx
    jz .Lp_next_region
    movq .Lf_src(%rbp), %rsi
    movq .Lf_fill(%rbp), %rcx
    testq %rcx, %rcx
    jnz .Lp_copy
    cmpq $64, %rdx
    jb .Lp_copy
    // A whole block with nothing buffered: compress it where it lies.
    leaq 64(%rsi), %rax
    movq %rax, .Lf_src(%rbp)
    subq $64, %rdx
    movq %rdx, .Lf_len(%rbp)
    call .Lp_compress
    jmp .Lp_region_loop
.Lp_copy:
    // Buffer min(64 - fill, len) bytes; compress the buffer when full.
    movl $64, %eax
    subq %rcx, %rax
    cmpq %rdx, %rax
    cmovaq %rdx, %rax
    leaq .Lf_buf(%rbp,%rcx), %rdi
    addq %rax, %rcx
    movq %rcx, .Lf_fill(%rbp)
    subq %rax, %rdx
    movq %rdx, .Lf_len(%rbp)
    movq %rax, %rcx
    rep movsb
    movq %rsi, .Lf_src(%rbp)
    cmpq $64, .Lf_fill(%rbp)
    jne .Lp_region_loop
    movq $0, .Lf_fill(%rbp)
    leaq .Lf_buf(%rbp), %rsi
    call .Lp_compress
    jmp .Lp_region_loop
.Lp_final:
    // 0x80, zeros, the length in bits (big-endian) at the end of one or two blocks.
    movq .Lf_fill(%rbp), %rdx
    movb $0x80, .Lf_buf(%rbp,%rdx)
    leaq .Lf_buf+1(%rbp,%rdx), %rdi
    movl $127, %ecx
    subq %rdx, %rcx
    xorl %eax, %eax
    rep stosb
    movq .Lf_total(%rbp), %rax
    shlq $3, %rax
    bswapq %rax
    cmpq $56, %rdx
    jae 2f
    movq %rax, .Lf_buf+56(%rbp)
    leaq .Lf_buf(%rbp), %rsi
    call .Lp_compress
    jmp 3f
2:  movq %rax, .Lf_buf+120(%rbp)
    leaq .Lf_buf(%rbp), %rsi
    call .Lp_compress
    leaq .Lf_buf+64(%rbp), %rsi
    call .Lp_compress
3:  movq .Lf_out(%rbp), %rdi
    xorl %ecx, %ecx
4:  movl .Lf_h(%rbp,%rcx,4), %eax
    bswapl %eax
    movl %eax, (%rdi,%rcx,4)
    incl %ecx
    cmpl $8, %ecx
    jb 4b
    addq $.Lf_size, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret
    .size rkdump_purgatory_sha256, . - rkdump_purgatory_sha256

    // One block at rsi into the state at .Lf_h(%rbp). Clobbers every register but rbp, rsp.
.Lp_compress:
    xorl %ecx, %ecx
1:  movl (%rsi,%rcx,4), %eax
    bswapl %eax
    movl %eax, .Lf_w(%rbp,%rcx,4)
    incl %ecx
    cmpl $16, %ecx
    jb 1b
2:  movl .Lf_w-8(%rbp,%rcx,4), %eax
    movl %eax, %ebx
    movl %eax, %edx
    rorl $17, %eax
    rorl $19, %ebx
    shrl $10, %edx
    xorl %ebx, %eax
    xorl %edx, %eax
    addl .Lf_w-28(%rbp,%rcx,4), %eax
    addl .Lf_w-64(%rbp,%rcx,4), %eax
    movl .Lf_w-60(%rbp,%rcx,4), %ebx
    movl %ebx, %edx
    movl %ebx, %esi
    rorl $7, %ebx
    rorl $18, %edx
    shrl $3, %esi
    xorl %edx, %ebx
    xorl %esi, %ebx
    addl %ebx, %eax
    movl %eax, .Lf_w(%rbp,%rcx,4)
    incl %ecx
    cmpl $64, %ecx
    jb 2b
    movl .Lf_h(%rbp), %r8d
    movl .Lf_h+4(%rbp), %r9d
    movl .Lf_h+8(%rbp), %r10d
    movl .Lf_h+12(%rbp), %r11d
    movl .Lf_h+16(%rbp), %r12d
    movl .Lf_h+20(%rbp), %r13d
    movl .Lf_h+24(%rbp), %r14d
    movl .Lf_h+28(%rbp), %r15d
    leaq .Lp_k(%rip), %rdi
    xorl %esi, %esi
3:  movl %r12d, %eax
    movl %r12d, %ebx
    movl %r12d, %ecx
    rorl $6, %eax
    rorl $11, %ebx
    rorl $25, %ecx
    xorl %ebx, %eax
    xorl %ecx, %eax
    movl %r13d, %ebx
    xorl %r14d, %ebx
    andl %r12d, %ebx
    xorl %r14d, %ebx
    addl %ebx, %eax
    addl %r15d, %eax
    addl (%rdi,%rsi,4), %eax
    addl .Lf_w(%rbp,%rsi,4), %eax
    movl %r8d, %ebx
    movl %r8d, %ecx
    movl %r8d, %edx
    rorl $2, %ebx
    rorl $13, %ecx
    rorl $22, %edx
    xorl %ecx, %ebx
    xorl %edx, %ebx
    movl %r8d, %ecx
    orl %r9d, %ecx
    andl %r10d, %ecx
    movl %r8d, %edx
    andl %r9d, %edx
    orl %edx, %ecx
    addl %ecx, %ebx
    movl %r14d, %r15d
    movl %r13d, %r14d
    movl %r12d, %r13d
    leal (%r11,%rax), %r12d
    movl %r10d, %r11d
    movl %r9d, %r10d
    movl %r8d, %r9d
    leal (%rax,%rbx), %r8d
    incl %esi
    cmpl $64, %esi
    jb 3b
    addl %r8d, .Lf_h(%rbp)
    addl %r9d, .Lf_h+4(%rbp)
    addl %r10d, .Lf_h+8(%rbp)
    addl %r11d, .Lf_h+12(%rbp)
    addl %r12d, .Lf_h+16(%rbp)
    addl %r13d, .Lf_h+20(%rbp)
    addl %r14d, .Lf_h+24(%rbp)
    addl %r15d, .Lf_h+28(%rbp)
    ret

    .org .Lp_start + {code_len}, 0xcc
.Lp_stack:
    .fill {stack_len}, 1, 0
.Lp_stack_top:
    .globl rkdump_purgatory_end
    .hidden rkdump_purgatory_end
rkdump_purgatory_end:
    .size rkdump_purgatory_start, . - rkdump_purgatory_start
    .popsection
"#,
        params = const PARAMS_OFFSET,
        regions_len = const MAX_REGIONS * REGION_LEN,
        params_end = const PARAMS_END,
        code_offset = const CODE_OFFSET,
        code_len = const BLOB_LEN - STACK_LEN,
        stack_len = const STACK_LEN,
        options(att_syntax),
    );
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    use sha2::Digest as _;

    use super::*;

    /// `len` reproducible, varied bytes (xorshift64).
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn sha2(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    fn hex(digest: &[u8]) -> String {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn u64_at(blob: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(blob[offset..offset + 8].try_into().unwrap())
    }

    #[test]
    fn blob_sha256_matches_the_sha2_crate_at_every_padding_boundary() {
        for len in [
            0,
            1,
            55,
            56,
            57,
            63,
            64,
            65,
            119,
            120,
            127,
            128,
            129,
            1000,
            1 << 20,
        ] {
            let data = bytes(len, 0x9e37_79b9_7f4a_7c15 ^ len as u64);
            assert_eq!(
                hex(&sys::purgatory_sha256(&data)),
                hex(&sha2(&data)),
                "length {len}"
            );
        }
    }

    #[test]
    fn blob_sha256_of_abc_is_the_nist_vector() {
        assert_eq!(
            hex(&sys::purgatory_sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sys::purgatory_sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sys::purgatory_sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn blob_sha256_over_regions_hashes_their_concatenation() {
        let data = bytes(300_000, 7);
        // Splits that leave the block buffer empty, partly full and full at region ends.
        let splits: &[&[usize]] = &[
            &[],
            &[0],
            &[1],
            &[63, 64, 65],
            &[64, 128, 128, 200],
            &[5, 6, 7, 100, 1000, 1001, 70_000],
            &[55, 56, 57, 4096, 4097, 299_999],
        ];
        for cuts in splits {
            let mut parts = Vec::new();
            let mut from = 0;
            for &cut in cuts.iter() {
                parts.push(&data[from..cut]);
                from = cut;
            }
            parts.push(&data[from..]);
            assert!(parts.len() <= MAX_REGIONS + 1);
            let expected = sha2(&data);
            assert_eq!(sys::purgatory_sha256_parts(&parts), expected, "{cuts:?}");
            assert_eq!(digest(parts.iter().copied()), expected, "{cuts:?}");
        }
        assert_eq!(sys::purgatory_sha256_parts(&[]), sha2(b""));
        assert_eq!(
            sys::purgatory_sha256_parts(&[b"", b"a", b"", b"bc", b""]),
            sha2(b"abc")
        );
    }

    #[test]
    fn digest_is_sha256_of_the_contents_in_order() {
        let parts: [&[u8]; 3] = [b"ab", b"", b"c"];
        assert_eq!(
            hex(&digest(parts)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(digest([&b"c"[..], b"ab"]), digest(parts));
    }

    /// One instruction as objdump prints it.
    #[derive(Debug)]
    struct Insn {
        offset: u64,
        /// With its `rep` prefix, if any: `repz cmpsb`.
        mnemonic: String,
        operands: String,
        /// The address of a RIP-relative operand (objdump's `# 0x...` comment).
        rip_target: Option<u64>,
    }

    /// The objdump disassembly of `blob[start..stop]`, the blob being loaded at 0.
    fn disassemble(blob: &[u8], start: usize, stop: usize) -> Vec<Insn> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("purgatory.bin");
        std::fs::write(&path, blob).unwrap();
        let output = Command::new("objdump")
            .args(["-D", "-b", "binary", "-m", "i386:x86-64", "-w", "-z"])
            .arg(format!("--start-address={start:#x}"))
            .arg(format!("--stop-address={stop:#x}"))
            .arg(&path)
            .output()
            .expect("objdump (binutils) runs");
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split('\t');
                let offset = fields.next()?.trim().strip_suffix(':')?;
                let offset = u64::from_str_radix(offset, 16).ok()?;
                let _bytes = fields.next()?;
                let field = fields.next()?;
                let (insn, comment) = field.split_once('#').unwrap_or((field, ""));
                let rip_target = comment.trim().strip_prefix("0x").map(|hex| {
                    let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
                    u64::from_str_radix(&hex, 16).unwrap()
                });
                let insn = insn.trim();
                let (mut mnemonic, mut operands) = insn.split_once(' ').unwrap_or((insn, ""));
                let mut prefix = "";
                if mnemonic.starts_with("rep") {
                    prefix = mnemonic;
                    (mnemonic, operands) =
                        operands.trim().split_once(' ').unwrap_or((operands, ""));
                }
                let mnemonic = if prefix.is_empty() {
                    mnemonic.to_owned()
                } else {
                    format!("{prefix} {mnemonic}")
                };
                Some(Insn {
                    offset,
                    mnemonic,
                    operands: operands.trim().to_owned(),
                    rip_target,
                })
            })
            .collect()
    }

    /// Checks that `blob[CODE_OFFSET..code_end]` decodes, and that every memory operand is
    /// register-based or RIP-relative to inside the blob, every direct branch lands in the code,
    /// the only indirect one is the `jmp *%rax` to the kernel, and no 64-bit immediate (an
    /// absolute address) is loaded. Returns the instructions, or the first offending one.
    fn position_independent_code(blob: &[u8], code_end: usize) -> Result<Vec<Insn>, String> {
        let code = disassemble(blob, CODE_OFFSET, code_end);
        for insn in &code {
            let Insn {
                offset,
                mnemonic,
                operands,
                rip_target,
            } = insn;
            let at = format!("{offset:#x}: {mnemonic} {operands}");
            if mnemonic.contains("(bad)") || operands.contains("(bad)") {
                return Err(format!("undecodable at {at}"));
            }
            if mnemonic.starts_with("movabs") {
                return Err(format!("64-bit immediate or absolute address at {at}"));
            }
            if let Some(target) = rip_target
                && *target > BLOB_LEN as u64
            {
                return Err(format!("RIP-relative operand outside the blob at {at}"));
            }
            let branch = mnemonic.starts_with('j') || mnemonic.starts_with("call");
            let string_op = ["movs", "cmps", "stos"]
                .iter()
                .any(|op| mnemonic.contains(op));
            for operand in split_operands(operands) {
                let register_or_immediate = operand.starts_with('$') || operand.starts_with('%');
                // The implicit operands of the string instructions, printed with their segment.
                let implicit = string_op && matches!(operand, "%es:(%rdi)" | "%ds:(%rsi)");
                if register_or_immediate && !operand.contains(':') || implicit {
                    continue;
                }
                if let Some((displacement, base)) = operand.split_once('(') {
                    let based = base.starts_with("%r") || base.starts_with("%e");
                    if !based || displacement.contains('%') {
                        return Err(format!("absolute or segment-relative operand at {at}"));
                    }
                } else if branch && operand.starts_with('*') {
                    if operand != "*%rax" {
                        return Err(format!("indirect branch at {at}"));
                    }
                } else if branch {
                    let target = u64::from_str_radix(operand.trim_start_matches("0x"), 16)
                        .map_err(|_| format!("branch operand at {at}"))?;
                    if !(CODE_OFFSET as u64..code_end as u64).contains(&target) {
                        return Err(format!("branch out of the code at {at}"));
                    }
                } else {
                    return Err(format!("absolute memory operand at {at}"));
                }
            }
        }
        Ok(code)
    }

    #[test]
    fn blob_disassembles_to_position_independent_code() {
        let blob = sys::purgatory_blob();
        let code_end = BLOB_LEN - STACK_LEN;
        let entry = disassemble(blob, 0, PARAMS_OFFSET);
        assert_eq!(entry[0].offset, ENTRY_OFFSET);
        assert_eq!(entry[0].mnemonic, "jmp");
        assert_eq!(entry[0].operands, format!("{CODE_OFFSET:#x}"));
        assert!(entry[1..].iter().all(|i| i.mnemonic == "int3"), "{entry:?}");

        let code = position_independent_code(blob, code_end).unwrap();
        assert!(code.len() > 100, "{code:?}");
        assert!(code.iter().any(|i| i.rip_target.is_some()));
        let mnemonics: Vec<&str> = code.iter().map(|i| i.mnemonic.as_str()).collect();
        // The order of the path: GDT, far return, digest, compare, the jump to the kernel.
        let position = |wanted: &str| {
            mnemonics
                .iter()
                .position(|m| *m == wanted)
                .unwrap_or_else(|| panic!("no {wanted} in {mnemonics:?}"))
        };
        assert!(position("lgdt") < position("lretq"));
        assert!(position("lretq") < position("call"));
        assert!(position("call") < position("repz cmpsb"));
        let jump = code
            .iter()
            .position(|i| i.mnemonic == "jmp" && i.operands == "*%rax")
            .expect("jmp *%rax");
        assert!(position("repz cmpsb") < jump);
        assert_eq!(&mnemonics[jump + 1..jump + 4], ["cli", "hlt", "jmp"]);
        // After the code, int3 up to the stack.
        let last_ret = mnemonics.iter().rposition(|m| *m == "ret").unwrap();
        assert!(mnemonics[last_ret + 1..].iter().all(|m| *m == "int3"));
    }

    #[test]
    fn the_position_independence_check_rejects_absolute_addresses() {
        let code_end = BLOB_LEN - STACK_LEN;
        // The instruction goes into 16 bytes of int3 after the code (the stack's first bytes).
        let patched = |bytes: &[u8]| {
            let mut blob = sys::purgatory_blob().to_vec();
            blob[code_end..code_end + 16].fill(0xcc);
            blob[code_end..code_end + bytes.len()].copy_from_slice(bytes);
            position_independent_code(&blob, code_end + 16)
        };
        assert!(patched(&[]).is_ok());
        let cases: [(&str, &[u8]); 6] = [
            // movabs $0x1122334455667788, %rax
            (
                "64-bit immediate",
                &[0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],
            ),
            // mov 0x1000, %eax (disp32 without base)
            (
                "absolute memory operand",
                &[0x8b, 0x04, 0x25, 0x00, 0x10, 0x00, 0x00],
            ),
            // call rel32 far outside the blob
            ("branch out of the code", &[0xe8, 0x00, 0x00, 0x00, 0x10]),
            // mov 0x100000(%rip), %eax: outside the blob
            (
                "RIP-relative operand outside",
                &[0x8b, 0x05, 0x00, 0x00, 0x10, 0x00],
            ),
            // jmp *%rbx
            ("indirect branch", &[0xff, 0xe3]),
            // mov %fs:0x28, %rax
            (
                "absolute memory operand",
                &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00],
            ),
        ];
        for (reason, bytes) in cases {
            let error = patched(bytes).expect_err(reason);
            assert!(error.starts_with(reason), "{error}, not {reason}");
        }
    }

    /// AT&T operands split at the commas outside parentheses.
    fn split_operands(operands: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let (mut depth, mut from) = (0, 0);
        for (i, c) in operands.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(operands[from..i].trim());
                    from = i + 1;
                }
                _ => {}
            }
        }
        if !operands[from..].trim().is_empty() {
            out.push(operands[from..].trim());
        }
        out
    }

    #[test]
    fn blob_layout_holds_the_gdt_constants_and_a_zero_stack() {
        let blob = sys::purgatory_blob();
        assert_eq!(blob.len(), BLOB_LEN);
        const { assert!(BLOB_LEN <= 3 * 1024) };
        assert!(blob[PARAMS_OFFSET..PARAMS_END].iter().all(|&b| b == 0));
        let gdt: Vec<u64> = (0..4).map(|i| u64_at(blob, PARAMS_END + 8 * i)).collect();
        assert_eq!(gdt, [0, 0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff]);
        // The first and last round constants, the first and last initial hash words.
        let word = |o: usize| u32::from_le_bytes(blob[o..o + 4].try_into().unwrap());
        assert_eq!(word(PARAMS_END + 32), 0x428a_2f98);
        assert_eq!(word(PARAMS_END + 32 + 252), 0xc671_78f2);
        assert_eq!(word(CODE_OFFSET - 32), 0x6a09_e667);
        assert_eq!(word(CODE_OFFSET - 4), 0x5be0_cd19);
        assert!(blob[BLOB_LEN - STACK_LEN..].iter().all(|&b| b == 0));
    }

    #[test]
    fn blob_is_the_same_in_the_executable_file_as_in_memory() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let file = object::File::parse(&*exe).unwrap();
        let start = file
            .symbols()
            .find(|s| s.name() == Ok("rkdump_purgatory_start"))
            .expect("rkdump_purgatory_start in the test binary's symbol table");
        let section = file
            .section_by_index(start.section_index().unwrap())
            .unwrap();
        let data = section.data().unwrap();
        let offset = usize::try_from(start.address() - section.address()).unwrap();
        assert_eq!(&data[offset..offset + BLOB_LEN], sys::purgatory_blob());
        let end = file
            .symbols()
            .find(|s| s.name() == Ok("rkdump_purgatory_end"))
            .unwrap();
        assert_eq!(end.address() - start.address(), BLOB_LEN as u64);
        assert_eq!(start.address() % ALIGN, 0);
    }

    fn params(seed: u64, count: usize) -> Params {
        Params {
            entry: 0x0100_0200 + seed,
            boot_params: 0x0009_0000 + seed,
            regions: (0..count as u64)
                .map(|i| Region {
                    start: 0x1_0000_0000 + i * 0x10_0000 + seed,
                    len: 0x1000 * (i + 1) + seed,
                })
                .collect(),
            digest: sha2(&seed.to_le_bytes()),
        }
    }

    #[test]
    fn image_patches_the_fields_at_their_offsets() {
        let p = params(5, 3);
        let blob = image(&p).unwrap();
        assert_eq!(blob.len(), BLOB_LEN);
        assert_eq!(u64_at(&blob, 0x10), p.entry);
        assert_eq!(u64_at(&blob, 0x18), p.boot_params);
        assert_eq!(u64_at(&blob, 0x20), 3);
        assert_eq!(u64_at(&blob, 0x28), 0);
        assert_eq!(blob[0x30..0x50], p.digest);
        for (i, region) in p.regions.iter().enumerate() {
            assert_eq!(u64_at(&blob, 0x50 + 16 * i), region.start);
            assert_eq!(u64_at(&blob, 0x58 + 16 * i), region.len);
        }
        assert!(blob[0x50 + 16 * 3..PARAMS_END].iter().all(|&b| b == 0));
        assert_eq!(PARAMS_END, 0x150);
        assert_eq!(CODE_OFFSET, 0x290);

        let full = image(&params(1, MAX_REGIONS)).unwrap();
        assert_eq!(u64_at(&full, 0x20), 16);
        assert_eq!(u64_at(&full, 0x50 + 16 * 15 + 8), 0x1000 * 16 + 1);
    }

    #[test]
    fn images_differ_only_inside_the_parameter_block() {
        let empty = Params {
            entry: 0,
            boot_params: 0,
            regions: Vec::new(),
            digest: [0; 32],
        };
        assert_eq!(image(&empty).unwrap(), sys::purgatory_blob());
        let a = image(&params(1, 2)).unwrap();
        let b = image(&params(0xabcd, MAX_REGIONS)).unwrap();
        let differing: Vec<usize> = (0..BLOB_LEN).filter(|&i| a[i] != b[i]).collect();
        assert!(!differing.is_empty());
        assert!(
            differing
                .iter()
                .all(|i| (PARAMS_OFFSET..PARAMS_END).contains(i)),
            "{differing:?}"
        );
    }

    #[test]
    fn image_refuses_too_many_or_wrapping_regions() {
        let mut p = params(0, MAX_REGIONS + 1);
        assert_eq!(
            image(&p).unwrap_err(),
            PurgatoryError::TooManyRegions { count: 17 }
        );
        p.regions.truncate(2);
        p.regions[1] = Region {
            start: u64::MAX - 3,
            len: 5,
        };
        assert_eq!(
            image(&p).unwrap_err(),
            PurgatoryError::RegionWraps {
                index: 1,
                start: u64::MAX - 3,
                len: 5
            }
        );
        p.regions[1].len = 3;
        assert!(image(&p).is_ok());
    }

    /// A multiboot image for QEMU that does what `relocate_kernel` does (long mode, identity
    /// mapped, registers cleared, `rsp` = 0, a GDT without the purgatory's selectors) and enters
    /// the purgatory at 0x200000; the "kernel" at 0x300000 checks `cs`, `ds`, `ss`, `rsi`, `rbx`,
    /// `rbp`, `rdi` and the stack, and reports through isa-debug-exit: 0x10 is success (QEMU
    /// exits with 0x21), 2..6 name the failed check. The hashed regions are at 0x400000 and
    /// 0x480000.
    const BOOT_S: &str = r#"    .section .mbhdr, "a"
    .balign 4
    .long 0x1BADB002, 0, -0x1BADB002
    .text
    .code32
    .globl _start
_start:
    cli
    movl $pml4, %edi
    movl $pdpt + 3, (%edi)
    movl $pdpt, %edi
    movl $pd + 3, (%edi)
    movl $pd, %edi
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jb 1b
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    lgdt gdtr
    ljmp $0x08, $long_mode
    .code64
long_mode:
    // As relocate_kernel leaves it: everything cleared, a stack not to rely on, odd selectors.
    xorl %eax, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx
    movq $-1, %rsi
    movq $-1, %rdi
    movq $-1, %rbp
    xorl %esp, %esp
    movq $0x200000, %rax
    jmp *%rax
    .data
    .balign 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff
gdtr:
    .word 15
    .long gdt
    .bss
    .balign 4096
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096

    .section .purg, "awx"
    .incbin "purg.bin"

    .section .kern, "ax"
    .code64
kern:
    movw $0xf4, %dx
    movl $2, %eax
    movw %cs, %cx
    cmpw $0x10, %cx
    jne fail
    movl $3, %eax
    movw %ds, %cx
    cmpw $0x18, %cx
    jne fail
    movw %ss, %cx
    cmpw $0x18, %cx
    jne fail
    movl $4, %eax
    movq $0x12345678, %rcx
    cmpq %rcx, %rsi
    jne fail
    movl $5, %eax
    testq %rbx, %rbx
    jnz fail
    testq %rbp, %rbp
    jnz fail
    testq %rdi, %rdi
    jnz fail
    movl $6, %eax
    // The stack the purgatory left is usable.
    pushq $7
    popq %rcx
    cmpq $7, %rcx
    jne fail
    movl $0x10, %eax
fail:
    outl %eax, %dx
    hlt

    .section .payload, "a"
    .incbin "payload.bin"
    .section .payload2, "a"
    .incbin "payload2.bin"
"#;

    /// Assembles and links [`BOOT_S`] around `purgatory` and the two payloads in `dir`.
    fn boot_image(dir: &std::path::Path, purgatory: &[u8], payloads: [&[u8]; 2]) -> PathBuf {
        std::fs::write(dir.join("purg.bin"), purgatory).unwrap();
        std::fs::write(dir.join("payload.bin"), payloads[0]).unwrap();
        std::fs::write(dir.join("payload2.bin"), payloads[1]).unwrap();
        std::fs::write(dir.join("boot.S"), BOOT_S).unwrap();
        let run = |program: &str, args: &[&str]| {
            let output = Command::new(program)
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(output.status.success(), "{program}: {output:?}");
        };
        run("as", &["--32", "boot.S", "-o", "boot.o"]);
        run(
            "ld",
            &[
                "-m",
                "elf_i386",
                "--no-warn-rwx-segments",
                "-Ttext=0x100000",
                "--section-start=.mbhdr=0x0ff000",
                "--section-start=.purg=0x200000",
                "--section-start=.kern=0x300000",
                "--section-start=.payload=0x400000",
                "--section-start=.payload2=0x480000",
                "-o",
                "boot.elf",
                "boot.o",
            ],
        );
        dir.join("boot.elf")
    }

    /// Boots `image` under QEMU (TCG) and returns its exit status, or `None` if it still runs
    /// after `wait`.
    fn boot(image: &std::path::Path, wait: std::time::Duration) -> Option<i32> {
        let mut child = Command::new("qemu-system-x86_64")
            .arg("-kernel")
            .arg(image)
            .args(["-display", "none", "-serial", "none", "-monitor", "none"])
            .args(["-no-reboot", "-m", "64"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        None
    }

    #[test]
    fn purgatory_boots_the_kernel_under_qemu_and_spins_on_a_bad_digest() {
        // qemu-system-x86_64 comes with qemu/install-deps; without it this test fails.
        assert!(
            Command::new("qemu-system-x86_64")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "qemu-system-x86_64 is needed (qemu/install-deps installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let first = bytes(100_003, 11);
        let second = bytes(5_000, 12);
        let mut params = Params {
            entry: 0x30_0000,
            boot_params: 0x1234_5678,
            regions: vec![
                Region {
                    start: 0x40_0000,
                    len: first.len() as u64,
                },
                Region {
                    start: 0x48_0000,
                    len: second.len() as u64,
                },
            ],
            digest: digest([&first[..], &second[..]]),
        };
        let good = boot_image(dir.path(), &image(&params).unwrap(), [&first, &second]);
        assert_eq!(
            boot(&good, std::time::Duration::from_secs(60)),
            Some(0x21),
            "0x21 is success, (n << 1) | 1 a failed check n"
        );

        params.digest[31] ^= 1;
        let bad = boot_image(dir.path(), &image(&params).unwrap(), [&first, &second]);
        assert_eq!(boot(&bad, std::time::Duration::from_secs(3)), None);
    }
}
