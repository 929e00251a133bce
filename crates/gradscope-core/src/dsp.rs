//! Dual 16-bit multiply-accumulates into 64 bits (`SMLALD`) for the Cortex-M4/M7 (thumbv7em), the one
//! place the core uses `unsafe`: an `asm!` block of one instruction, because stable Rust has no DSP
//! intrinsics (`core::arch::arm::__smlald` is unstable) and LLVM forms `smlald` only in loop shapes that
//! measured slower than one `smlal` per product. Compiled only for thumbv7em (`build.rs` sets
//! `gradscope_dsp`); every other target uses the safe kernels in `fixed.rs`.
//!
//! `SMLALD` adds both 16 × 16 products to a 64-bit accumulator in 64-bit arithmetic, so each step is exact
//! and the sum equals the safe path's in any order (integer addition): the firmware's parity digests, which
//! run Q15 backprop and training through these kernels on the M4F, are bit-identical to the host's safe path
//! (`crates/gradscope-lab/tests/firmware_parity.rs`), and the firmware's own self-check compares the two
//! kernels on random rows. BENCHMARKS.md gives the measured reason: instructions per MAC of the 16 × 16 Q15
//! matvec on the M4F.
#![allow(unsafe_code)]

/// `acc + a.lo·b.lo + a.hi·b.hi` with signed 16-bit halves, exact in 64 bits (wrapping only beyond i64,
/// which the callers' bounds rule out).
#[inline(always)]
fn smlald(acc: i64, a: u32, b: u32) -> i64 {
    let (mut lo, mut hi) = (acc as u32, (acc >> 32) as u32);
    // SAFETY: `smlald` reads four registers and writes two; it touches no memory, no stack and no flags.
    unsafe {
        core::arch::asm!(
            "smlald {lo}, {hi}, {a}, {b}",
            lo = inout(reg) lo,
            hi = inout(reg) hi,
            a = in(reg) a,
            b = in(reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    ((hi as u64) << 32 | lo as u64) as i64
}

/// Two 16-bit raws as one word (the first in the low half), the layout one `ldr` of a pair loads.
#[inline(always)]
fn pack(p: [i16; 2]) -> u32 {
    (p[0] as u16 as u32) | ((p[1] as u16 as u32) << 16)
}

/// Exact `Σ aᵢ·bᵢ` of each row with `b`, two products per `smlald` (each pair of 16-bit raws loaded as one
/// word); an odd length's last product in a 32-bit multiply.
#[inline(always)]
pub(crate) fn dots<S: Copy, const R: usize, const N: usize>(
    rows: &[[S; N]; R],
    b: &[S; N],
    raw: impl Fn(S) -> i16 + Copy,
) -> [i64; R] {
    let (bp, bt) = b.as_chunks::<2>();
    let mut out = [0i64; R];
    for (o, row) in out.iter_mut().zip(rows) {
        let (rp, rt) = row.as_chunks::<2>();
        let mut s = 0i64;
        for (x, y) in rp.iter().zip(bp) {
            s = smlald(
                s,
                pack([raw(x[0]), raw(x[1])]),
                pack([raw(y[0]), raw(y[1])]),
            );
        }
        if let ([x], [y]) = (rt, bt) {
            s += (raw(*x) as i32 * raw(*y) as i32) as i64;
        }
        *o = s;
    }
    out
}
