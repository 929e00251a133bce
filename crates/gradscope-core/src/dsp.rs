//! DSP and long-multiply instructions for the Cortex-M4/M7 (thumbv7em), the one place the core uses `unsafe`:
//! `asm!` blocks of one or two instructions, because stable Rust has no DSP intrinsics
//! (`core::arch::arm::__smlald` is unstable) and no way to make LLVM keep two rows' sums together:
//!
//! - `SMLAD` adds both 16 × 16 products of two pairs to a 32-bit accumulator, and sets the sticky Q flag when
//!   the exact result does not fit 32 bits: a chain of them that leaves Q clear summed exactly, in any order
//!   (integer addition). The Q15 matrix–vector product runs four rows' chains at once, their sums in four
//!   registers and each word of `x` loaded once for them (`matvec16x16` I1F15: 620 → 440 instructions against
//!   two rows of `SMLALD`), Q saved before and restored after, and sums a block of rows again with `SMLALD`
//!   (64-bit, exact beyond 32 bits) when Q tells that one overflowed. LLVM forms neither from safe code in
//!   these loops, and could not know to read Q.
//! - `SMLALD` adds both 16 × 16 products of two pairs to a 64-bit accumulator in 64-bit arithmetic, so each step
//!   is exact and the sum equals the safe path's in any order. LLVM forms `smlald` only in loop shapes that
//!   measured slower than one `smlal` per product.
//! - Two `SMLAL`s, one block: two rows' 32 × 32 → 64-bit multiply-accumulates with one shared value of `x`
//!   (I16F16 and I8F24 matvec on the M4F). `SMLAL` itself LLVM forms, but from two rows in safe code it ran
//!   each row's chain to its end and spilled `x` between them.
//! - `QSUB16` subtracts two pairs of 16-bit values, each difference saturated: the Q15 SGD update's last step for
//!   two weights at once (`fixed::Nearest16`). LLVM forms it only for one lane.
//! - `SMLABB`/`SMLATB` multiply the low or the high half of a word by a 16-bit value and add a 32-bit one: the
//!   same update's product and rounding bias for each gradient of a pair loaded as one word. LLVM forms them only
//!   from halfword loads, one load per gradient.
//! - `SMLALBB`/`SMLALTB`, one block: both halves of a word times one 16-bit value, each into its own 64-bit sum:
//!   the Q15 transposed matvec (a dense layer's backward signal), two columns' products per loaded word of a row.
//!   The 4-8-8-1 backward pass (`backward_4-8-8-1`, probes off) measured 2,430 instructions with it, 2,555 with
//!   the same loop in safe code, and 2,485 with one `i64` lane per column (the default loop).
//! - `SSAT` (with its shift), `QADD`, `MSR APSR_nzcvq` and `MRS APSR`: a 16-bit narrowing whose saturation sets
//!   the sticky Q flag, its setting by hand where a sum beyond 32 bits saturates without an `SSAT`, and the flag's
//!   clearing and reading, so that a kernel under a watching probe tests one flag where it tested every output
//!   (`matrix::deferred`). LLVM forms `ssat` from a clamp, but may as well form a compare and a select, which
//!   would leave a saturation out of the flag: here each is an instruction of its own, in an order the compiler
//!   keeps (the blocks are not `pure`). Exceptions save and restore Q with the rest of xPSR.
//!
//! Compiled only for thumbv7em (`build.rs` sets `gradscope_dsp`); every other target uses the safe kernels in
//! `fixed.rs`. The host's unit tests compile this module with `QSUB16`, `SMLABB`, `SMLATB`, `SMLALBB` and
//! `SMLALTB` computed in safe code, to test the pair loops. The firmware's parity digests (`kernel/matvec-*` in
//! I1F15 and I16F16, `kernel/sgd-update`, `kernel/watched` with its count of saturations, and backprop and
//! training) run these instructions on the M4F, Q15 over its whole range, and equal the host's safe path bit for
//! bit (`crates/gradscope-lab/tests/firmware_parity.rs`): `kernel/matvec-*` in I1F15 has blocks of rows whose
//! sums overflow 32 bits and blocks whose sums do not, and `kernel/watched` a product whose last block of rows
//! saturates nothing after earlier blocks that saturate (Q's restore). BENCHMARKS.md gives the measured
//! reasons: the matvec's instructions per MAC, the Q15 SGD update's instructions per parameter and the Q15
//! training step's instructions (it watches) on the M4F.
#![allow(unsafe_code)]

/// `acc + a.lo·b.lo + a.hi·b.hi` with signed 16-bit halves, exact in 64 bits (wrapping only beyond i64,
/// which the callers' bounds rule out).
#[cfg(gradscope_dsp)]
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

/// `(acc0 + a0·x, acc1 + a1·x)`, exact in 64 bits: two rows' 32 × 32 → 64-bit multiply-accumulates sharing one
/// value of `x` (two `SMLAL`s). One block, so that both rows' sums advance together and `x` is loaded once:
/// as two chains of safe code, LLVM ran each row's chain to its end and spilled `x` between them.
#[cfg(gradscope_dsp)]
#[inline(always)]
pub(crate) fn smlal2(acc: [i64; 2], a: [i32; 2], x: i32) -> [i64; 2] {
    let (mut lo0, mut hi0) = (acc[0] as u32, (acc[0] >> 32) as u32);
    let (mut lo1, mut hi1) = (acc[1] as u32, (acc[1] >> 32) as u32);
    // SAFETY: two `smlal`s read and write registers only; they touch no memory, no stack and no flags.
    unsafe {
        core::arch::asm!(
            "smlal {lo0}, {hi0}, {a0}, {x}",
            "smlal {lo1}, {hi1}, {a1}, {x}",
            lo0 = inout(reg) lo0,
            hi0 = inout(reg) hi0,
            lo1 = inout(reg) lo1,
            hi1 = inout(reg) hi1,
            a0 = in(reg) a[0],
            a1 = in(reg) a[1],
            x = in(reg) x,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    [
        ((hi0 as u64) << 32 | lo0 as u64) as i64,
        ((hi1 as u64) << 32 | lo1 as u64) as i64,
    ]
}

/// `a − b` in each signed 16-bit half, saturating (`QSUB16`); touches no flags (it sets neither GE nor Q).
#[cfg(gradscope_dsp)]
#[inline(always)]
pub(crate) fn qsub16(a: u32, b: u32) -> u32 {
    let out: u32;
    // SAFETY: `qsub16` reads two registers and writes one; it touches no memory, no stack and no flags.
    unsafe {
        core::arch::asm!(
            "qsub16 {out}, {a}, {b}",
            out = lateout(reg) out,
            a = in(reg) a,
            b = in(reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// `acc + h·m`, where `h` is the low (`TOP = false`, `SMLABB`) or the high (`SMLATB`) signed 16-bit half of
/// `a` and `m` the low half of `m`, the sum wrapping in 32 bits: the Q15 SGD update's product for each value of
/// a pair of gradients loaded as one word. LLVM splits such a word into two halfword loads instead.
#[cfg(gradscope_dsp)]
#[inline(always)]
pub(crate) fn smla_half<const TOP: bool>(a: u32, m: u32, acc: i32) -> i32 {
    let out: i32;
    // One template for both instructions (an `asm!` template must be a literal).
    macro_rules! smla {
        ($op:literal) => {
            core::arch::asm!(
                concat!($op, " {out}, {a}, {m}, {acc}"),
                out = lateout(reg) out,
                a = in(reg) a,
                m = in(reg) m,
                acc = in(reg) acc,
                options(pure, nomem, nostack),
            )
        };
    }
    // SAFETY: each instruction reads three registers and writes one; it touches no memory and no stack. It sets
    // the Q flag on overflow, so the block does not promise to preserve the flags.
    unsafe {
        if TOP {
            smla!("smlatb");
        } else {
            smla!("smlabb");
        }
    }
    out
}

/// `t >> s` (`1 ≤ s ≤ 15`, arithmetic) saturated to a signed 16-bit value, one `SSAT #16, asr #s`, which sets
/// the sticky Q flag when it saturates: the 16-bit formats' nearest-even narrowing on the M4F, so that a kernel
/// under a watching probe reads one flag ([`q_take`]) where it tested every value (`matrix::deferred`).
#[cfg(gradscope_dsp)]
#[inline(always)]
pub(crate) fn ssat16_shr(t: i32, s: u32) -> i32 {
    let out: i32;
    // An immediate shift needs a literal: one arm per shift, of which a constant `s` leaves one.
    macro_rules! ssat {
        ($($k:literal)*) => {
            match s {
                $($k => core::arch::asm!(
                    concat!("ssat {out}, #16, {t}, asr #", $k),
                    out = lateout(reg) out,
                    t = in(reg) t,
                    options(nomem, nostack),
                ),)*
                _ => core::arch::asm!(
                    "ssat {out}, #16, {t}",
                    out = lateout(reg) out,
                    t = in(reg) t >> s.min(31),
                    options(nomem, nostack),
                ),
            }
        };
    }
    // SAFETY: `ssat` reads one register and writes one; it touches no memory and no stack. It sets the Q flag
    // when it saturates, which is its purpose here: the blocks are not `pure`, so the compiler keeps them in
    // order with `q_clear` and `q_take` and never drops one.
    unsafe {
        ssat!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }
    out
}

/// Set the sticky Q flag: a 16-bit narrowing that saturated where no `SSAT` ran (its exact value beyond 32
/// bits). One `QADD` of `i32::MAX` to itself.
#[cfg(gradscope_dsp)]
#[inline(always)]
pub(crate) fn q_raise() {
    // SAFETY: `qadd` reads one register and writes one; it touches no memory and no stack, and sets Q.
    unsafe {
        core::arch::asm!(
            "qadd {t}, {t}, {t}",
            t = inout(reg) i32::MAX => _,
            options(nomem, nostack),
        );
    }
}

/// Clear the sticky Q flag (and N, Z, C, V, which no caller holds across it): one `MSR APSR_nzcvq`.
#[cfg(gradscope_dsp)]
#[inline(always)]
pub(crate) fn q_clear() {
    set_apsr(0);
}

/// Whether the sticky Q flag is set: some `SSAT`, `QADD`, `SMLAD` or `q_raise` saturated or overflowed since the
/// last [`q_clear`] (exceptions save and restore it with the rest of xPSR). One `MRS`.
#[cfg(gradscope_dsp)]
#[inline(always)]
pub(crate) fn q_take() -> bool {
    apsr() & (1 << 27) != 0
}

/// The flags register (`MRS APSR`): N, Z, C, V and Q, for [`q_take`] and to restore Q ([`set_apsr`]).
#[cfg(gradscope_dsp)]
#[inline(always)]
fn apsr() -> u32 {
    let apsr: u32;
    // SAFETY: `mrs` reads the flags into a register; it touches no memory, no stack and no flags. Not `pure`: it
    // reads state the `ssat` and `smlad` blocks write, and must stay after them.
    unsafe {
        core::arch::asm!("mrs {a}, APSR", a = lateout(reg) apsr, options(nomem, nostack, preserves_flags));
    }
    apsr
}

/// Write N, Z, C, V and Q back as [`apsr`] read them (`MSR APSR_nzcvq`); no caller holds N, Z, C or V across it.
#[cfg(gradscope_dsp)]
#[inline(always)]
fn set_apsr(v: u32) {
    // SAFETY: `msr` writes the condition flags and Q from a register; it touches no memory and no stack.
    unsafe {
        core::arch::asm!("msr APSR_nzcvq, {v}", v = in(reg) v, options(nomem, nostack));
    }
}

/// What `SMLABB`/`SMLATB` compute, in safe code: the host's unit tests run the pair loops through it.
#[cfg(not(gradscope_dsp))]
pub(crate) fn smla_half<const TOP: bool>(a: u32, m: u32, acc: i32) -> i32 {
    let h = if TOP { (a >> 16) as i16 } else { a as i16 };
    (h as i32).wrapping_mul(m as i16 as i32).wrapping_add(acc)
}

/// What `QSUB16` computes, in safe code: the host's unit tests run the pair loops through it.
#[cfg(not(gradscope_dsp))]
pub(crate) fn qsub16(a: u32, b: u32) -> u32 {
    let half = |x: u32, k: u32| (x >> k) as i16;
    let lo = half(a, 0).saturating_sub(half(b, 0));
    let hi = half(a, 16).saturating_sub(half(b, 16));
    pack([lo, hi])
}

/// Two 16-bit raws as one word (the first in the low half), the layout one `ldr` of a pair loads.
#[inline(always)]
pub(crate) fn pack(p: [i16; 2]) -> u32 {
    (p[0] as u16 as u32) | ((p[1] as u16 as u32) << 16)
}

/// `acc + a.lo·b.lo + a.hi·b.hi` with signed 16-bit halves (`SMLAD`), wrapping in 32 bits; sets the sticky Q
/// flag when the exact result does not fit 32 bits, so that a chain of them that leaves Q clear summed exactly.
#[cfg(gradscope_dsp)]
#[inline(always)]
fn smlad(acc: i32, a: u32, b: u32) -> i32 {
    let out: i32;
    // SAFETY: `smlad` reads three registers and writes one; it touches no memory and no stack. It sets Q on
    // overflow, which the caller reads: not `pure`, so the compiler keeps it in order with `mrs`.
    unsafe {
        core::arch::asm!(
            "smlad {out}, {a}, {b}, {acc}",
            out = lateout(reg) out,
            a = in(reg) a,
            b = in(reg) b,
            acc = in(reg) acc,
            options(nomem, nostack),
        );
    }
    out
}

/// Exact `Σ aᵢ·bᵢ` of each row with `b`, two products per `smlald` (each pair of 16-bit raws loaded as one
/// word); an odd length's last product in a 32-bit multiply.
#[cfg(gradscope_dsp)]
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

/// Exact `Σ aᵢ·bᵢ` of each row with `b`, handed to `out(row, sum)` in row order: two products per `smlad` into
/// a 32-bit sum, each pair of 16-bit raws loaded as one word and each word of `b` shared by the rows (an odd
/// length's last product with a zero high half). If some sum left 32 bits, `SMLAD` set Q and the rows are summed again
/// in 64 bits ([`dots`], out of line). `out` is reached from both paths, so that the common one knows its sums
/// fit 32 bits. Q is as the caller left it afterwards (a kernel under a watching probe keeps its saturations
/// there).
#[cfg(gradscope_dsp)]
#[inline(always)]
pub(crate) fn dots_each<S: Copy, const R: usize, const N: usize>(
    rows: &[[S; N]; R],
    b: &[S; N],
    raw: impl Fn(S) -> i16 + Copy,
    mut out: impl FnMut(usize, i64),
) {
    let saved = apsr();
    q_clear();
    let mut s = [0i32; R];
    let (bp, bt) = b.as_chunks::<2>();
    for (k, y) in bp.iter().enumerate() {
        let y = pack([raw(y[0]), raw(y[1])]);
        for (so, row) in s.iter_mut().zip(rows) {
            if let Some(x) = row.as_chunks::<2>().0.get(k) {
                *so = smlad(*so, pack([raw(x[0]), raw(x[1])]), y);
            }
        }
    }
    if let [y] = bt {
        let y = pack([raw(*y), 0]);
        for (so, row) in s.iter_mut().zip(rows) {
            if let [x] = row.as_chunks::<2>().1 {
                *so = smlad(*so, pack([raw(*x), 0]), y);
            }
        }
    }
    let over = q_take();
    set_apsr(saved);
    if over {
        for (k, v) in dots_wide(rows, b, raw).into_iter().enumerate() {
            out(k, v);
        }
    } else {
        for (k, v) in s.into_iter().enumerate() {
            out(k, v.into());
        }
    }
}

/// [`dots`] out of line: [`dots_each`]'s rare path.
#[cfg(gradscope_dsp)]
#[cold]
#[inline(never)]
fn dots_wide<S: Copy, const R: usize, const N: usize>(
    rows: &[[S; N]; R],
    b: &[S; N],
    raw: impl Fn(S) -> i16 + Copy,
) -> [i64; R] {
    dots(rows, b, raw)
}

/// `(acc0 + a.lo·m, acc1 + a.hi·m)` with signed 16-bit halves of `a` and `m`'s low half, exact in 64 bits
/// (`SMLALBB`, `SMLALTB`): two columns' products from one loaded word of a row. One block, as in [`smlal2`].
#[cfg(gradscope_dsp)]
#[inline(always)]
fn smlal_halves(acc: [i64; 2], a: u32, m: u32) -> [i64; 2] {
    let (mut lo0, mut hi0) = (acc[0] as u32, (acc[0] >> 32) as u32);
    let (mut lo1, mut hi1) = (acc[1] as u32, (acc[1] >> 32) as u32);
    // SAFETY: two multiply-accumulates read and write registers only; they touch no memory, no stack and no
    // flags.
    unsafe {
        core::arch::asm!(
            "smlalbb {lo0}, {hi0}, {a}, {m}",
            "smlaltb {lo1}, {hi1}, {a}, {m}",
            lo0 = inout(reg) lo0,
            hi0 = inout(reg) hi0,
            lo1 = inout(reg) lo1,
            hi1 = inout(reg) hi1,
            a = in(reg) a,
            m = in(reg) m,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    [
        ((hi0 as u64) << 32 | lo0 as u64) as i64,
        ((hi1 as u64) << 32 | lo1 as u64) as i64,
    ]
}

/// What `SMLALBB` and `SMLALTB` compute, in safe code: the host's unit tests run [`columns`] through it.
#[cfg(not(gradscope_dsp))]
fn smlal_halves(acc: [i64; 2], a: u32, m: u32) -> [i64; 2] {
    let m = m as i16 as i64;
    [
        acc[0].wrapping_add(a as i16 as i64 * m),
        acc[1].wrapping_add((a >> 16) as i16 as i64 * m),
    ]
}

/// `lanes[i] += Σₒ w[o][i]·d[o]`, exact in 64 bits, four columns at a time: each pair of a row's raws loaded as
/// one word and both multiplied by `d[o]` ([`smlal_halves`]), `d[o]` loaded once for two words; then a last
/// pair of columns, and an odd `I`'s last column one product at a time.
#[cfg(any(gradscope_dsp, test))]
#[inline(always)]
pub(crate) fn columns<S: Copy, const I: usize, const O: usize>(
    w: &[[S; I]; O],
    d: &[S; O],
    raw: impl Fn(S) -> i16 + Copy,
    lanes: &mut [i64; I],
) {
    let (quads, rest) = lanes.as_chunks_mut::<4>();
    let paired = 4 * quads.len();
    for (c, l4) in quads.iter_mut().enumerate() {
        column_block(w, d, raw, l4, 4 * c);
    }
    let (pair, tail) = rest.as_chunks_mut::<2>();
    if let Some(l2) = pair.first_mut() {
        column_block(w, d, raw, l2, paired);
    }
    for (row, &dv) in w.iter().zip(d) {
        for (l, &wv) in tail.iter_mut().zip(row.as_chunks::<2>().1) {
            *l = l.wrapping_add((raw(wv) as i32 * raw(dv) as i32) as i64);
        }
    }
}

/// [`columns`] for the `K` (even) columns from `first` on, their sums in `lanes`.
#[cfg(any(gradscope_dsp, test))]
#[inline(always)]
fn column_block<S: Copy, const I: usize, const O: usize, const K: usize>(
    w: &[[S; I]; O],
    d: &[S; O],
    raw: impl Fn(S) -> i16 + Copy,
    lanes: &mut [i64; K],
    first: usize,
) {
    let mut s = *lanes;
    for (row, &dv) in w.iter().zip(d) {
        let m = raw(dv) as u16 as u32;
        let Some(q) = row.get(first..first + K) else {
            continue;
        };
        for (sums, q) in s
            .as_chunks_mut::<2>()
            .0
            .iter_mut()
            .zip(q.as_chunks::<2>().0)
        {
            *sums = smlal_halves(*sums, pack([raw(q[0]), raw(q[1])]), m);
        }
    }
    *lanes = s;
}
