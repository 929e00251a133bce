//! Fixed-size kernels on const-generic arrays, generic over [`Scalar`].
//!
//! Conventions: matrices are row-major, `w[out][in]`; a layer's weight is `[[S; I]; O]`. Every kernel
//! accumulates in [`Scalar::Acc`] and narrows **once per output value**, so for fixed point the only error is
//! that one rounding (plus saturation, flagged). Each produced value's [`Flags`] go to the probe `p`; pass
//! `&mut ()` to turn reporting off at no cost.
//!
//! | kernel | computes | f32/f64 summation order | roundings per output |
//! |---|---|---|---|
//! | [`dot`] | `Σ aᵢ bᵢ` | 4 interleaved lanes and a fixed tree ([`Scalar::dot_fast`]) | 1 |
//! | [`matvec`] | `y = W x` | each row as [`dot`] | 1 |
//! | [`affine`] | `y = W x + b` | each row as [`dot`], then `+ b` | 1 |
//! | [`affine_pair`] | `y = W₁ x₁ + W₂ x₂ + b` (a recurrent cell) | `(dot₁ + dot₂) + b` | 1 |
//! | [`matvec_t`], [`matvec_t_add`] | `y = Wᵀ d`, `y += Wᵀ d` (backprop of a dense layer) | sequential over the rows of `W`, from 0 (or `y`) | 1 |
//! | [`outer_acc`] | `G += d xᵀ` (weight gradient) | `g + d·x` | 1 |
//! | [`outer_acc_tile`] | `G += d_b x_bᵀ` for each sample `b` of a tile | `g + d·x` per sample, in sample order | 1 per sample |
//! | [`matmul`] | `C = A B` | sequential over the inner index | 1 |
//! | [`axpy`] | `y += α x` | `y + α·x` | 1 |
//! | [`add_assign`] | `y += x` | — | 0 (saturation only) |
//! | [`add_assign_tile`] | `y += x_b` for each sample `b` of a tile | `y + x` per sample, in sample order | 0 (saturation only) |
//! | [`map`], [`zip`] | `y = f(x)`, `y = f(a, b)` | — | as `f` |
//! | [`sum_sq`], [`l2_norm`] | `Σ xᵢ²`, `‖x‖₂` | scaled (LAPACK) | 1 (exact wide sum) |
//!
//! Fixed-point sums are exact, so their order does not matter. The float orders are the same on every target
//! (no fused multiply-add anywhere), which is what keeps the host and the microcontrollers bit-identical.
//!
//! Each kernel runs fast lanes that vectorize whenever a bound on its operands ([`Scalar::quiet_if_finite`])
//! proves that no product or sum can have an event, or, for floats, when nobody observes the events
//! ([`Probe::ACTIVE`]); the exact path with per-product checks otherwise. Both give the same values. For `f32`
//! and `f64` the bound only rules out products below the normal range: an overflow leaves its output non-finite,
//! and each non-finite output's events come from its exact recomputation, so a probe receives the same records,
//! in the same order, on either path.
//!
//! All kernels are total: any input, NaN and ±∞ included, gives values plus flags. They use iterators, never
//! indexing, so no bounds check can panic.

use crate::flags::Flags;
use crate::probe::Probe;
use crate::qflag::{q_clear, q_take};
use crate::round::Rounding;
use crate::scalar::Scalar;

/// The bound of `x` that decides between the fast and the exact path (and picks the fast path's shape), or
/// [`Scalar::ANY`] when nothing reads it (unobserved floats).
#[inline(always)]
pub(crate) fn bound_if_needed<S: Scalar, P: Probe + ?Sized>(x: &[S], _n: usize) -> S::Bound {
    if S::IS_FLOAT && !P::ACTIVE {
        S::ANY
    } else {
        S::bound(x)
    }
}

/// Whether a sum of `n` products of `a` (bounded by computing, if needed) and values bounded by `b` may take the
/// fast lanes, whose outputs then go through [`put_fast`] and [`watch`].
#[inline(always)]
pub(crate) fn fast<S: Scalar, P: Probe + ?Sized>(a: &[S], b: S::Bound, n: usize) -> bool {
    (S::IS_FLOAT && !P::ACTIVE) || S::quiet(S::ANY, b, n) || S::quiet_if_finite(a, b, n)
}

/// `Σ aᵢ bᵢ` in the dot order, `b` bounded by `b_bound`: fast when quiet or unobserved, exact otherwise.
#[inline(always)]
fn dot_acc<S: Scalar, const N: usize, P: Probe + ?Sized>(
    a: &[S; N],
    b: &[S; N],
    b_bound: S::Bound,
) -> S::Acc {
    if fast::<S, P>(a, b_bound, N) {
        S::lane_acc(S::dot_fast(a, b, b_bound))
    } else {
        exact_dot(a, b)
    }
}

/// [`Scalar::dot_exact`] out of line: the rare path, one copy per scalar type rather than per shape.
#[cold]
#[inline(never)]
fn exact_dot<S: Scalar>(a: &[S], b: &[S]) -> S::Acc {
    S::dot_exact(a, b)
}

/// Narrow `acc` and report its events: every value's to an active probe; to a watching one, every fixed-point
/// value's own (its saturation, [`Scalar::narrow_watched`]), while floats are checked afterwards by [`watch`].
/// A record per value rather than [`Probe::note`]'s test of each: the training step's sink folds the flags
/// into one union, which the compiler keeps in a register (and vectorizes on a host), where a branch per
/// value took 1.7× the instructions of the host's I1F15 16-32-32-16 step.
#[inline(always)]
pub(crate) fn put<S: Scalar, R: Rounding + ?Sized, P: Probe + ?Sized>(
    acc: S::Acc,
    r: &mut R,
    p: &mut P,
) -> S {
    if P::ACTIVE {
        let (v, f) = S::narrow(acc, r);
        p.record(f);
        v
    } else if P::WATCH && !S::IS_FLOAT {
        let (v, f) = S::narrow_watched(acc, r);
        p.record(f);
        v
    } else {
        S::narrow(acc, r).0
    }
}

/// [`put`] of a fast lanes' sum, for kernels that call [`begin`] before their outputs and [`watch`] on them
/// afterwards. Finite floats report as [`put`] does; a float that is not finite may come from an overflow that
/// the fast lanes did not see ([`Scalar::quiet_if_finite`]), so an active probe gets the events of its exact sum
/// `exact()` (rare, out of line), in the same place in the sequence of records as the exact path would give them.
/// Fixed point reports as [`put`] does, unless its saturations are [`deferred`] to `watch`.
#[inline(always)]
pub(crate) fn put_fast<S: Scalar, R: Rounding + ?Sized, P: Probe + ?Sized>(
    acc: S::Acc,
    r: &mut R,
    p: &mut P,
    exact: impl FnOnce() -> S::Acc,
) -> S {
    if S::IS_FLOAT && P::ACTIVE {
        let (v, f) = S::narrow(acc, r);
        p.record(if v.is_finite() {
            f
        } else {
            exact_flags::<S>(exact)
        });
        v
    } else if deferred::<S, P>(r) {
        S::narrow_sticky(acc, r)
    } else {
        put(acc, r, p)
    }
}

/// Whether [`put_fast`] leaves its fixed-point saturations to [`watch`]: a watching probe that is not active
/// (it keeps only the values' own events), nearest-even rounding, and a format whose every saturating
/// narrowing sets the processor's sticky flag ([`Scalar::STICKY_SATURATION`]), which the kernel clears when it
/// starts ([`begin`]) and `watch` reads once, where each narrowing tested its own value (the M4F's I1F15
/// training step, which watches: BENCHMARKS.md, "Q15 kernels under a watching probe").
#[inline(always)]
pub(crate) fn deferred<S: Scalar, P: Probe + ?Sized>(r: &(impl Rounding + ?Sized)) -> bool {
    S::STICKY_SATURATION && P::WATCH && !P::ACTIVE && r.nearest_even()
}

/// The start of a kernel that reports through [`put_fast`] and [`watch`]: clears the sticky saturation flag
/// where saturations are [`deferred`].
#[inline(always)]
pub(crate) fn begin<S: Scalar, P: Probe + ?Sized>(r: &(impl Rounding + ?Sized)) {
    if deferred::<S, P>(r) {
        q_clear();
    }
}

#[cold]
#[inline(never)]
fn exact_flags<S: Scalar>(exact: impl FnOnce() -> S::Acc) -> Flags {
    // Float narrowing ignores the rounding mode (IEEE nearest-even throughout).
    S::narrow(exact(), &mut crate::round::NearestEven).1
}

/// The end of a kernel whose outputs `y` each narrowed one exact sum `exact(k)` through [`put_fast`] (and
/// which called [`begin`] first), under a watching (not active) probe. Floats: one vectorized check of the
/// outputs, and for each one that is not finite, the events of its exact recomputation (rare, out of line).
/// Fixed point, where saturations are [`deferred`]: one read of the sticky flag, and if it is set, the events of
/// narrowing again the exact sum of each output on a bound of the range, where a saturated one lies (rare, out
/// of line).
#[inline(always)]
pub(crate) fn watch<S: Scalar, R: Rounding + ?Sized, P: Probe + ?Sized>(
    y: &[S],
    r: &mut R,
    p: &mut P,
    mut exact: impl FnMut(usize) -> S::Acc,
) {
    if S::IS_FLOAT {
        if P::WATCH && !P::ACTIVE && !S::all_finite(y) {
            report_nonfinite(y, p, &mut exact);
        }
    } else if deferred::<S, P>(r) && q_take() {
        note_saturated(y, p, &mut |k| Some(S::narrow_watched(exact(k), r).1));
    }
}

/// The events of the values of `y` on a bound of the range, where a saturated value lies, from `flags(k)`
/// (the value's computation again), to `p`: after a pass whose saturations only the sticky flag told (rare,
/// out of line).
#[cold]
#[inline(never)]
pub(crate) fn note_saturated<S: Scalar, P: Probe + ?Sized>(
    y: &[S],
    p: &mut P,
    flags: &mut dyn FnMut(usize) -> Option<Flags>,
) {
    for (k, &v) in y.iter().enumerate() {
        if (v == S::MIN || v == S::MAX)
            && let Some(f) = flags(k)
        {
            p.note(f);
        }
    }
}

#[cold]
#[inline(never)]
fn report_nonfinite<S: Scalar, P: Probe + ?Sized>(
    y: &[S],
    p: &mut P,
    exact: &mut dyn FnMut(usize) -> S::Acc,
) {
    for (k, v) in y.iter().enumerate() {
        if !v.is_finite() {
            p.record(exact_flags::<S>(|| exact(k)));
        }
    }
}

/// Dot product `Σ aᵢ bᵢ`.
#[inline]
pub fn dot<S: Scalar, const N: usize, P: Probe + ?Sized>(
    a: &[S; N],
    b: &[S; N],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) -> S {
    let acc = dot_acc::<S, _, P>(a, b, bound_if_needed::<S, P>(b, N));
    begin::<S, P>(r);
    let v = put_fast(acc, r, p, || S::dot_exact(a, b));
    watch(core::slice::from_ref(&v), r, p, |_| S::dot_exact(a, b));
    v
}

/// Matrix–vector product `y = W x`, with `W` row-major `[[S; I]; O]`.
#[inline]
pub fn matvec<S: Scalar, const I: usize, const O: usize, P: Probe + ?Sized>(
    w: &[[S; I]; O],
    x: &[S; I],
    y: &mut [S; O],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    rows(w, x, y, |_| None, r, p);
}

/// Affine map `y = W x + b`; the bias joins the row's sum before the one rounding.
#[inline]
pub fn affine<S: Scalar, const I: usize, const O: usize, P: Probe + ?Sized>(
    w: &[[S; I]; O],
    x: &[S; I],
    b: &[S; O],
    y: &mut [S; O],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    rows(w, x, y, |o| b.get(o).copied(), r, p);
}

/// Rows per block in [`rows`]: on x86 eight rows' lanes fill eight SSE registers and hide the adder's latency;
/// a Cortex-M has no SIMD registers to fill, and one row keeps its four lanes (or its 64-bit sum) in registers.
const ROW_BLOCK: usize = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
    8
} else {
    1
};

/// [`ROW_BLOCK`] for float rows of 16 or more inputs: on a Cortex-M4F four rows' lanes take 16 of its 32
/// single-precision registers and share each load of `x` (BENCHMARKS.md has the f32 and bf16 matvec counts;
/// f16, which widens every value in software, takes a few percent more). Shorter rows stay one at a time: the
/// block's setup outweighed the shared loads in the 4-8-8-1 step. Each row keeps its own lanes, so the sums are
/// unchanged.
const FLOAT_ROW_BLOCK: usize = if cfg!(all(gradscope_dsp, target_abi = "eabihf")) {
    4
} else {
    ROW_BLOCK
};

/// [`ROW_BLOCK`] for fixed point, unless the format asks for its own ([`Scalar::ROW_BLOCK`]: four Q15 rows on a
/// Cortex-M4, `crate::dsp::dots_each`): on a Cortex-M4 two rows share each load of `x`, their two 64-bit sums in
/// four registers (`crate::dsp::smlal2` for 32-bit raws), which measured fewer instructions in `matvec16x16`
/// and in the 4-8-8-1 step; four rows of 32-bit raws took more (`matvec16x16` I16F16 985 → 1,115).
const FIXED_ROW_BLOCK: usize = if cfg!(gradscope_dsp) { 2 } else { ROW_BLOCK };

/// `y[o] = dot(w[o], x) (+ extra(o))` for every row, rounded once.
#[inline(always)]
fn rows<S: Scalar, const I: usize, const O: usize, P: Probe + ?Sized>(
    w: &[[S; I]; O],
    x: &[S; I],
    y: &mut [S; O],
    extra: impl Fn(usize) -> Option<S>,
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    let xb = bound_if_needed::<S, P>(x, I);
    // One test for all of W: events are rare, and the exact path stays out of the fast loop's way.
    if !fast::<S, P>(w.as_flattened(), xb, I) {
        return exact_rows(w.as_flattened(), x, &extra, y, r, p);
    }
    let exact = |o: usize| {
        let acc = w.get(o).map_or(S::acc_zero(), |row| S::dot_exact(row, x));
        extra(o).map_or(acc, |b| S::acc_add(acc, b))
    };
    begin::<S, P>(r);
    if S::IS_FLOAT && I >= 16 {
        blocks::<S, I, O, P, FLOAT_ROW_BLOCK>(w, x, xb, y, (&extra, &exact), r, p);
    } else if !S::IS_FLOAT && S::ROW_BLOCK == 4 {
        blocks::<S, I, O, P, 4>(w, x, xb, y, (&extra, &exact), r, p);
    } else if !S::IS_FLOAT {
        blocks::<S, I, O, P, FIXED_ROW_BLOCK>(w, x, xb, y, (&extra, &exact), r, p);
    } else {
        blocks::<S, I, O, P, ROW_BLOCK>(w, x, xb, y, (&extra, &exact), r, p);
    }
    watch(y, r, p, exact);
}

/// [`rows`]' fast loop, `B` rows per block.
#[inline(always)]
fn blocks<S: Scalar, const I: usize, const O: usize, P: Probe + ?Sized, const B: usize>(
    w: &[[S; I]; O],
    x: &[S; I],
    xb: S::Bound,
    y: &mut [S; O],
    (extra, exact): (impl Fn(usize) -> Option<S>, impl Fn(usize) -> S::Acc),
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    let (wb, wt) = w.as_chunks::<B>();
    let (yb, yt) = y.as_chunks_mut::<B>();
    let mut o = 0;
    let mut out = |yo: &mut S, lane: S::Lane| {
        let acc = S::lane_acc(lane);
        let acc = extra(o).map_or(acc, |b| S::acc_add(acc, b));
        *yo = put_fast(acc, r, &mut *p, || exact(o));
        o += 1;
    };
    for (ys, block) in yb.iter_mut().zip(wb) {
        S::dots_fast_each(block, x, xb, |k, lane| {
            if let Some(yo) = ys.get_mut(k) {
                out(yo, lane);
            }
        });
    }
    for (yo, row) in yt.iter_mut().zip(wt) {
        out(yo, S::dot_fast(row, x, xb));
    }
}

/// [`rows`] when some row may have events: every row exact, with its events. On slices, so one copy serves
/// every shape.
#[cold]
#[inline(never)]
fn exact_rows<S: Scalar, P: Probe + ?Sized>(
    w: &[S],
    x: &[S],
    extra: &dyn Fn(usize) -> Option<S>,
    y: &mut [S],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    for (o, (yo, row)) in y.iter_mut().zip(w.chunks_exact(x.len().max(1))).enumerate() {
        let acc = S::dot_exact(row, x);
        let acc = extra(o).map_or(acc, |b| S::acc_add(acc, b));
        *yo = put(acc, r, p);
    }
}

/// Two affine terms as one sum, `y = W₁ x₁ + W₂ x₂ + b` (a recurrent cell's input and recurrent paths),
/// rounded once per output: `(dot(W₁ row, x₁) + dot(W₂ row, x₂)) + b`.
#[inline]
pub fn affine_pair<S: Scalar, const I: usize, const J: usize, const O: usize, P>(
    (w1, x1): (&[[S; I]; O], &[S; I]),
    (w2, x2): (&[[S; J]; O], &[S; J]),
    b: &[S; O],
    y: &mut [S; O],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) where
    P: Probe + ?Sized,
{
    let (b1, b2) = (
        bound_if_needed::<S, P>(x1, I),
        bound_if_needed::<S, P>(x2, J),
    );
    let exact = |row1: &[S], row2: &[S], bo: S| {
        S::acc_add(
            S::acc_merge(S::dot_exact(row1, x1), S::dot_exact(row2, x2)),
            bo,
        )
    };
    begin::<S, P>(r);
    for (((yo, row1), row2), &bo) in y.iter_mut().zip(w1).zip(w2).zip(b) {
        let acc = S::acc_merge(
            dot_acc::<S, _, P>(row1, x1, b1),
            dot_acc::<S, _, P>(row2, x2, b2),
        );
        *yo = put_fast(S::acc_add(acc, bo), r, p, || exact(row1, row2, bo));
    }
    watch(y, r, p, |o| match (w1.get(o), w2.get(o), b.get(o)) {
        (Some(row1), Some(row2), Some(&bo)) => exact(row1, row2, bo),
        _ => S::acc_zero(),
    });
}

/// Transposed product `y = Wᵀ d`: `y[i] = Σ_o w[o][i] d[o]`, the signal a dense layer sends backward.
#[inline]
pub fn matvec_t<S: Scalar, const I: usize, const O: usize, P: Probe + ?Sized>(
    w: &[[S; I]; O],
    d: &[S; O],
    y: &mut [S; I],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    columns(w, d, y, false, r, p);
}

/// Accumulating transposed product `y += Wᵀ d`: the sum takes `y`'s value as its first term and rounds once per
/// output (a gated cell sums its gates' contributions this way). A float sum starts at +0, as every sum in the
/// crate does, so `y = −0` with only −0 terms gives +0 (as `y + Wᵀd` with `Wᵀd` summed from +0 would).
#[inline]
pub fn matvec_t_add<S: Scalar, const I: usize, const O: usize, P: Probe + ?Sized>(
    w: &[[S; I]; O],
    d: &[S; O],
    y: &mut [S; I],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    columns(w, d, y, true, r, p);
}

/// `y[i] = (y[i] if add) + Σ_o w[o][i]·d[o]`, sequential over `o`, rounded once per output. Walks `W` row by
/// row (cache order) with one accumulator per output.
#[inline(always)]
fn columns<S: Scalar, const I: usize, const O: usize, P: Probe + ?Sized>(
    w: &[[S; I]; O],
    d: &[S; O],
    y: &mut [S; I],
    add: bool,
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    // A starting value counts as one more term; floats with a start are checked exactly when observed.
    let terms = O + add as usize;
    let quiet = (S::IS_FLOAT && !P::ACTIVE)
        || (!(S::IS_FLOAT && add) && {
            let db = bound_if_needed::<S, P>(d, terms);
            S::quiet(S::ANY, db, terms) || S::quiet_if_finite(w.as_flattened(), db, terms)
        });
    if !quiet {
        return exact_columns(w.as_flattened(), d, y, add, r, p);
    }
    let mut lanes = [S::LANE_ZERO; I];
    if add {
        for (l, &v) in lanes.iter_mut().zip(y.iter()) {
            *l = S::lane_of(v);
        }
    }
    S::columns_lanes(w, d, &mut lanes);
    let start = *y;
    let exact = |i: usize| {
        let acc = match start.get(i) {
            Some(&v) if add => S::acc_add(S::acc_zero(), v),
            _ => S::acc_zero(),
        };
        w.iter().zip(d).fold(acc, |a, (row, &dv)| {
            row.get(i).map_or(a, |&wv| S::mac(a, wv, dv))
        })
    };
    begin::<S, P>(r);
    for (i, (yi, l)) in y.iter_mut().zip(lanes).enumerate() {
        *yi = put_fast(S::lane_acc(l), r, p, || exact(i));
    }
    watch(y, r, p, exact);
}

/// [`columns`] with every product's events: one output at a time (a single wide accumulator on the stack),
/// on slices, so one copy serves every shape.
#[cold]
#[inline(never)]
fn exact_columns<S: Scalar, P: Probe + ?Sized>(
    w: &[S],
    d: &[S],
    y: &mut [S],
    add: bool,
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    let cols = y.len();
    for (i, yi) in y.iter_mut().enumerate() {
        let start = if add {
            S::acc_add(S::acc_zero(), *yi)
        } else {
            S::acc_zero()
        };
        let column = w.iter().skip(i).step_by(cols.max(1));
        let acc = column.zip(d).fold(start, |a, (&wv, &dv)| S::mac(a, wv, dv));
        *yi = put(acc, r, p);
    }
}

/// Outer-product accumulate `G += d xᵀ`: `g[o][i] += d[o] x[i]`, rounded once per element.
#[inline]
pub fn outer_acc<S: Scalar, const I: usize, const O: usize, P: Probe + ?Sized>(
    g: &mut [[S; I]; O],
    d: &[S; O],
    x: &[S; I],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    for (row, &dv) in g.iter_mut().zip(d) {
        axpy(dv, x, row, r, p);
    }
}

/// [`outer_acc`] over a tile of samples, `G += d_b x_bᵀ` for `b` in `0..n` (`n` clamped to `T`), in sample order:
/// the same values and events as `n` calls of [`outer_acc`], since each sample's term is still rounded on its
/// own, but row by row over the tile: a row takes every sample's term before the next row starts, and a float
/// row's check for non-finite values runs once per tile instead of once per sample.
pub fn outer_acc_tile<S, const I: usize, const O: usize, const T: usize, P>(
    g: &mut [[S; I]; O],
    d: &[[S; O]; T],
    x: &[[S; I]; T],
    n: usize,
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) where
    S: Scalar,
    P: Probe + ?Sized,
{
    let samples = || d.iter().zip(x).take(n);
    if S::IS_FLOAT && P::ACTIVE {
        // Every product's events: the exact path of `axpy`, row by row.
        for (o, row) in g.iter_mut().enumerate() {
            for (db, xb) in samples() {
                if let Some(&dv) = db.get(o) {
                    axpy(dv, xb, row, r, p);
                }
            }
        }
        return;
    }
    for (o, row) in g.iter_mut().enumerate() {
        let start = *row;
        // Blocks of the row that stay in registers while every sample adds its term (the order of the terms
        // within an element, the only order that matters, is unchanged).
        let at = outer_blocks::<S, I, O, T, P, 16>(row, 0, o, d, x, n, r, p);
        let at = outer_blocks::<S, I, O, T, P, 8>(row, at, o, d, x, n, r, p);
        let at = outer_blocks::<S, I, O, T, P, 4>(row, at, o, d, x, n, r, p);
        outer_blocks::<S, I, O, T, P, 1>(row, at, o, d, x, n, r, p);
        if S::IS_FLOAT && P::WATCH && !S::all_finite(row) {
            replay_nonfinite(&start, row, o, d, x, n, p);
        }
    }
}

/// [`outer_acc_tile`]'s terms for row `o` from element `at` on, in blocks of `K` elements held in a local array
/// while the tile's samples add their terms; returns where the last whole block ended.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn outer_blocks<S, const I: usize, const O: usize, const T: usize, P, const K: usize>(
    row: &mut [S; I],
    at: usize,
    o: usize,
    d: &[[S; O]; T],
    x: &[[S; I]; T],
    n: usize,
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) -> usize
where
    S: Scalar,
    P: Probe + ?Sized,
{
    let blocks = row.get_mut(at..).unwrap_or(&mut []).chunks_exact_mut(K);
    let end = at + blocks.len() * K;
    for (j, block) in blocks.enumerate() {
        let Ok(block) = <&mut [S; K]>::try_from(block) else {
            continue;
        };
        let from = at + j * K;
        let terms = d.iter().zip(x).take(n).filter_map(|(db, xb)| {
            let xs: &[S; K] = xb.get(from..from + K)?.try_into().ok()?;
            Some((*db.get(o)?, xs))
        });
        if S::IS_FLOAT && n > 0 {
            // A float's lane is the value itself, and `0 + v` (the lane a value starts) changes only −0, which
            // no sum `(0 + v) + t` returns: so the lanes start once, carry the values from sample to sample,
            // and end once (a probe here is not active, so the lanes' events are not wanted).
            let mut lanes = block.map(S::lane_of);
            for (dv, xs) in terms {
                for (l, &xv) in lanes.iter_mut().zip(xs) {
                    *l = S::lane_mac(*l, dv, xv);
                }
            }
            *block = lanes.map(|l| put(S::lane_acc(l), r, p));
        } else {
            let mut acc = *block;
            for (dv, xs) in terms {
                for (v, &xv) in acc.iter_mut().zip(xs) {
                    *v = put(S::lane_acc(S::lane_mac(S::lane_of(*v), dv, xv)), r, p);
                }
            }
            *block = acc;
        }
    }
    end
}

/// The events a watching probe gets from [`outer_acc`] sample by sample, for one row whose tile left some
/// element non-finite. A float sum that goes non-finite stays so (∞ + finite = ∞, ∞ − ∞ = NaN, NaN stays), so
/// the elements that end finite never had such an event; the others are replayed sample by sample.
#[cold]
#[inline(never)]
fn replay_nonfinite<S: Scalar, const I: usize, const O: usize, const T: usize, P>(
    start: &[S; I],
    end: &[S; I],
    o: usize,
    d: &[[S; O]; T],
    x: &[[S; I]; T],
    n: usize,
    p: &mut P,
) where
    P: Probe + ?Sized,
{
    for (i, (&first, last)) in start.iter().zip(end).enumerate() {
        if last.is_finite() {
            continue;
        }
        let mut v = first;
        for (db, xb) in d.iter().zip(x).take(n) {
            let (Some(&dv), Some(&xv)) = (db.get(o), xb.get(i)) else {
                continue;
            };
            let (next, f) = S::narrow(
                S::mac(S::acc_add(S::acc_zero(), v), dv, xv),
                &mut crate::round::NearestEven,
            );
            if !next.is_finite() {
                p.record(f);
            }
            v = next;
        }
    }
}

/// Register blocking of [`matmul`]'s fast path: `MM_ROWS` rows of `C` share each load of a `B` row, in chunks
/// of `MM_COLS` columns whose accumulators stay in registers (x86: 2 × 16 floats in eight SSE registers).
const MM_ROWS: usize = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
    2
} else {
    1
};
const MM_COLS: usize = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
    16
} else {
    8
};

/// Matrix product `C = A B` with `A: [[S; K]; M]`, `B: [[S; N]; K]`, `C: [[S; N]; M]`; each element's sum runs
/// over the inner index in order.
///
/// The fast path blocks rows and columns (the order of each element's sum is unchanged, and the elements are
/// rounded row by row, so a stateful rounding sees the same sequence on every target).
#[inline]
pub fn matmul<S: Scalar, const M: usize, const K: usize, const N: usize, P>(
    a: &[[S; K]; M],
    b: &[[S; N]; K],
    c: &mut [[S; N]; M],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) where
    P: Probe + ?Sized,
{
    let bb = bound_if_needed::<S, P>(b.as_flattened(), K);
    if !fast::<S, P>(a.as_flattened(), bb, K) {
        return exact_matmul(
            a.as_flattened(),
            b.as_flattened(),
            c.as_flattened_mut(),
            (K, N),
            r,
            p,
        );
    }
    let (ab, at) = a.as_chunks::<MM_ROWS>();
    let (cb, ct) = c.as_chunks_mut::<MM_ROWS>();
    for (cs, rows) in cb.iter_mut().zip(ab) {
        matmul_block(rows, b, bb, cs, r, p);
    }
    for (crow, arow) in ct.iter_mut().zip(at) {
        matmul_block(
            core::array::from_ref(arow),
            b,
            bb,
            core::array::from_mut(crow),
            r,
            p,
        );
    }
}

/// `R` rows of `C = A B` from fast lanes ([`Scalar::matmul_lanes`]), rounded row by row.
#[inline(always)]
fn matmul_block<S: Scalar, const R: usize, const K: usize, const N: usize, P>(
    a: &[[S; K]; R],
    b: &[[S; N]; K],
    b_bound: S::Bound,
    c: &mut [[S; N]; R],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) where
    P: Probe + ?Sized,
{
    let mut lanes = [[S::LANE_ZERO; N]; R];
    S::matmul_lanes(a, b, b_bound, &mut lanes);
    for (crow, (ls, arow)) in c.iter_mut().zip(lanes.iter().zip(a)) {
        let exact = |j: usize| {
            arow.iter().zip(b).fold(S::acc_zero(), |s, (&av, brow)| {
                brow.get(j).map_or(s, |&bv| S::mac(s, av, bv))
            })
        };
        begin::<S, P>(r);
        for (j, (cv, &l)) in crow.iter_mut().zip(ls).enumerate() {
            *cv = put_fast(S::lane_acc(l), r, p, || exact(j));
        }
        watch(crow, r, p, exact);
    }
}

/// [`Scalar::matmul_lanes`]'s default: each lane adds its products by [`Scalar::lane_mac`] with `k` ascending,
/// in column chunks of [`MM_COLS`] whose lanes stay in registers. The lanes arrive at [`Scalar::LANE_ZERO`].
#[inline(always)]
pub(crate) fn matmul_lanes_chunked<S: Scalar, const R: usize, const K: usize, const N: usize>(
    a: &[[S; K]; R],
    b: &[[S; N]; K],
    lanes: &mut [[S::Lane; N]; R],
) {
    let chunks = N / MM_COLS;
    // With two chunks or more, x86 code otherwise keeps a finished chunk's lanes in registers while the next
    // chunk runs, and spills that chunk's accumulators; lanes kept in memory leave the registers free. A hint:
    // same values.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if chunks > 1 {
        core::hint::black_box(&mut *lanes);
    }
    for ch in 0..chunks {
        let mut acc = [[S::LANE_ZERO; MM_COLS]; R];
        for (k, brow) in b.iter().enumerate() {
            let Some(bs) = brow.as_chunks::<MM_COLS>().0.get(ch) else {
                continue;
            };
            for (ls, arow) in acc.iter_mut().zip(a) {
                if let Some(&av) = arow.get(k) {
                    for (l, &bv) in ls.iter_mut().zip(bs) {
                        *l = S::lane_mac(*l, av, bv);
                    }
                }
            }
        }
        for (row, ls) in lanes.iter_mut().zip(acc) {
            if let Some(dst) = row.as_chunks_mut::<MM_COLS>().0.get_mut(ch) {
                *dst = ls;
            }
        }
    }
    for (ls, arow) in lanes.iter_mut().zip(a) {
        let tail = ls.as_chunks_mut::<MM_COLS>().1;
        for (&av, brow) in arow.iter().zip(b) {
            for (l, &bv) in tail.iter_mut().zip(brow.as_chunks::<MM_COLS>().1) {
                *l = S::lane_mac(*l, av, bv);
            }
        }
    }
}

/// [`matmul`] when some product may have events: every element exact, with its events, row by row. On
/// slices, so one copy serves every shape.
#[cold]
#[inline(never)]
fn exact_matmul<S: Scalar, P: Probe + ?Sized>(
    a: &[S],
    b: &[S],
    c: &mut [S],
    (k, n): (usize, usize),
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    for (crow, arow) in c.chunks_exact_mut(n.max(1)).zip(a.chunks_exact(k.max(1))) {
        for (j, cv) in crow.iter_mut().enumerate() {
            let column = b.iter().skip(j).step_by(n.max(1));
            let acc = arow
                .iter()
                .zip(column)
                .fold(S::acc_zero(), |s, (&av, &bv)| S::mac(s, av, bv));
            *cv = put(acc, r, p);
        }
    }
}

/// `y += α x`, rounded once per element.
#[inline]
pub fn axpy<S: Scalar, const N: usize, P: Probe + ?Sized>(
    alpha: S,
    x: &[S; N],
    y: &mut [S; N],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    // One product and a start per element: fixed point always fits the i64 lane (|y·2^F| < 2^(31+F) and
    // |α·x| ≤ 2^62 sum below 2^63); floats take it when unobserved.
    let quiet = !S::IS_FLOAT || !P::ACTIVE;
    if quiet {
        // Into a copy, so a watching probe can recompute a non-finite element from the old value. The copy is
        // lent to no function on the common path (the test of every value is inlined), so it can stay in
        // registers.
        let mut out = *y;
        begin::<S, P>(r);
        for (k, ((o, &yv), &xv)) in out.iter_mut().zip(y.iter()).zip(x).enumerate() {
            let l = S::lane_mac(S::lane_of(yv), alpha, xv);
            *o = put_fast(S::lane_acc(l), r, p, || axpy_exact(alpha, x, y, k));
        }
        // `watch`'s tests, inlined on the copy; its reports out of line, where they may borrow it.
        if (S::IS_FLOAT && P::WATCH && !P::ACTIVE && !S::all_finite(&out))
            || (deferred::<S, P>(r) && q_take())
        {
            axpy_watch(alpha, x, y, out, r, p);
        }
        *y = out;
    } else {
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = put(S::mac(S::acc_add(S::acc_zero(), *yv), alpha, xv), r, p);
        }
    }
}

/// [`axpy`]'s output `k` (of `y + α x`) as an exact sum.
#[inline(always)]
fn axpy_exact<S: Scalar>(alpha: S, x: &[S], y: &[S], k: usize) -> S::Acc {
    match (y.get(k), x.get(k)) {
        (Some(&yv), Some(&xv)) => S::mac(S::acc_add(S::acc_zero(), yv), alpha, xv),
        _ => S::acc_zero(),
    }
}

/// [`axpy`]'s [`watch`] of its outputs `out`, once its inlined tests found a non-finite float or a fixed-point
/// saturation (rare, out of line).
#[cold]
#[inline(never)]
fn axpy_watch<S: Scalar, const N: usize, R: Rounding + ?Sized, P: Probe + ?Sized>(
    alpha: S,
    x: &[S; N],
    y: &[S; N],
    out: [S; N],
    r: &mut R,
    p: &mut P,
) {
    watch(&out, r, p, |k| axpy_exact(alpha, x, y, k));
}

/// `y += x` elementwise (saturating for fixed point); each sum's events go to the probe. Used for gradient
/// accumulation and residual sums.
#[inline]
pub fn add_assign<S, P>(y: &mut [S], x: &[S], p: &mut P)
where
    S: Scalar,
    P: Probe + ?Sized,
{
    // A finite float sum carries none of the events a watching probe keeps: when one vectorized pass finds every
    // sum finite, the sums need no flags.
    if S::IS_FLOAT
        && !P::ACTIVE
        && y.iter()
            .zip(x)
            .fold(true, |ok, (&a, &b)| ok & a.add(b).0.is_finite())
    {
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = yv.add(xv).0;
        }
        return;
    }
    for (yv, &xv) in y.iter_mut().zip(x) {
        let (v, f) = yv.add(xv);
        p.note(f);
        *yv = v;
    }
}

/// [`add_assign`] over a tile, `y += x_b` for `b` in `0..n` (`n` clamped to `T`), in sample order: the same
/// values and events as `n` calls of [`add_assign`]. Unobserved floats carry `y` through the tile without
/// flags, and only an element that ends non-finite is replayed for its events (a float sum that goes
/// non-finite stays so, so the others never had one).
pub fn add_assign_tile<S, const N: usize, const T: usize, P>(
    y: &mut [S; N],
    x: &[[S; N]; T],
    n: usize,
    p: &mut P,
) where
    S: Scalar,
    P: Probe + ?Sized,
{
    if !S::IS_FLOAT || P::ACTIVE {
        for xb in x.iter().take(n) {
            add_assign(y, xb, p);
        }
        return;
    }
    let start = *y;
    for xb in x.iter().take(n) {
        for (yv, &xv) in y.iter_mut().zip(xb) {
            *yv = yv.add(xv).0;
        }
    }
    if !S::all_finite(y) {
        replay_sums(&start, y, x, n, p);
    }
}

/// The events of [`add_assign_tile`]'s elements that ended non-finite, sample by sample.
#[cold]
#[inline(never)]
fn replay_sums<S: Scalar, const N: usize, const T: usize, P: Probe + ?Sized>(
    start: &[S; N],
    end: &[S; N],
    x: &[[S; N]; T],
    n: usize,
    p: &mut P,
) {
    for (i, (&first, last)) in start.iter().zip(end).enumerate() {
        if last.is_finite() {
            continue;
        }
        let mut v = first;
        for xv in x.iter().take(n).filter_map(|xb| xb.get(i)) {
            let (next, f) = v.add(*xv);
            if !next.is_finite() {
                p.note(f);
            }
            v = next;
        }
    }
}

/// Elementwise `y[i] = f(x[i])`, where `f` returns the value and its events.
#[inline]
pub fn map<S, T, const N: usize, P>(
    x: &[S; N],
    y: &mut [T; N],
    mut f: impl FnMut(S) -> (T, Flags),
    p: &mut P,
) where
    S: Copy,
    P: Probe + ?Sized,
{
    for (yv, &xv) in y.iter_mut().zip(x) {
        let (v, fl) = f(xv);
        p.note(fl);
        *yv = v;
    }
}

/// Elementwise `y[i] = f(a[i], b[i])`, where `f` returns the value and its events.
#[inline]
pub fn zip<S, T, U, const N: usize, P>(
    a: &[S; N],
    b: &[T; N],
    y: &mut [U; N],
    mut f: impl FnMut(S, T) -> (U, Flags),
    p: &mut P,
) where
    S: Copy,
    T: Copy,
    P: Probe + ?Sized,
{
    for ((yv, &av), &bv) in y.iter_mut().zip(a).zip(b) {
        let (v, fl) = f(av, bv);
        p.note(fl);
        *yv = v;
    }
}

/// The exact (fixed point) or scaled (float) sum of squares of a slice, for streaming over many tensors with
/// [`Scalar::sq_merge`].
#[inline]
pub fn sum_sq_acc<S: Scalar>(x: &[S]) -> S::SqAcc {
    x.iter().fold(S::sq_zero(), |acc, &v| S::sq_add(acc, v))
}

/// Sum of squares `Σ xᵢ²` as `S`, rounded once; saturation and non-finite inputs are reported.
#[inline]
pub fn sum_sq<S, R, P>(x: &[S], r: &mut R, p: &mut P) -> S
where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    let (v, f) = S::sq_total(sum_sq_acc(x), r);
    p.note(f);
    v
}

/// L2 norm `‖x‖₂`, rounded to nearest. The sum of squares never overflows on the way (exact `u128` for fixed
/// point, scaled for floats), so only a norm beyond the type's range saturates.
#[inline]
pub fn l2_norm<S, P>(x: &[S], p: &mut P) -> S
where
    S: Scalar,
    P: Probe + ?Sized,
{
    let (v, f) = S::sq_sqrt(sum_sq_acc(x));
    p.note(f);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::{I1F15, I16F16};
    use crate::probe::Watching;
    use crate::probe::{EventCounts, Probe};
    use crate::round::{Floor, NearestEven};

    fn q(x: f64) -> I16F16 {
        I16F16::from_f64(x, &mut NearestEven).0
    }

    /// `outer_acc_tile` against `n` calls of `outer_acc`, for an active and a watching probe, every `n` up to
    /// past the tile: the same gradients (bit for bit, the sign of a zero included) and the same event counts.
    /// `I` = 29 takes a row in blocks of every size (16, 8, 4 and 1), `I` = 37 in two blocks of 16 first.
    fn tile_equals_samples<S: Scalar, const I: usize>(vals: &[f64]) {
        let v = |k: usize| S::from_f64(vals[k % vals.len()], &mut NearestEven).0;
        let d: [[S; 3]; 4] = core::array::from_fn(|b| core::array::from_fn(|o| v(3 * b + o + 1)));
        let x: [[S; I]; 4] = core::array::from_fn(|b| core::array::from_fn(|i| v(5 * b + 2 * i)));
        let g0: [[S; I]; 3] = core::array::from_fn(|o| core::array::from_fn(|i| v(o * i + 3)));
        for n in 0..=6 {
            let (mut ga, mut gb) = (g0, g0);
            let (mut pa, mut pb) = (EventCounts::default(), EventCounts::default());
            let (mut wa, mut wb) = (Watching::default(), Watching::default());
            let (mut ha, mut hb) = (g0, g0);
            for (db, xb) in d.iter().zip(&x).take(n) {
                outer_acc(&mut ga, db, xb, &mut NearestEven, &mut pa);
                outer_acc(&mut ha, db, xb, &mut NearestEven, &mut wa);
            }
            outer_acc_tile(&mut gb, &d, &x, n, &mut NearestEven, &mut pb);
            outer_acc_tile(&mut hb, &d, &x, n, &mut NearestEven, &mut wb);
            let bits = |g: &[[S; I]; 3]| format!("{g:?}");
            assert_eq!(bits(&ga), bits(&gb), "{} n = {n}, active", S::NAME);
            assert_eq!(bits(&ha), bits(&hb), "{} n = {n}, watching", S::NAME);
            assert_eq!(pa, pb, "{} n = {n}, active counts", S::NAME);
            assert_eq!(wa, wb, "{} n = {n}, watching counts", S::NAME);
        }
    }

    #[test]
    fn a_tiles_outer_products_are_its_samples_in_order() {
        let ordinary = [0.3, -1.7, 0.02, 2.5, -0.6, 1.1, -0.01, 0.9];
        // Saturating fixed point; f32 products overflowing to ±∞ (and ∞ − ∞ = NaN), underflowing, and a NaN.
        let extreme = [3e19, -2e19, 1e-30, 0.5, -4e19, f64::NAN, 7.0, 1e-25, -1e20];
        // Zeros of both signs in the gradients, the terms and the starting values (−0 + −0 = −0, but a float
        // accumulation starts at 0 + g).
        let zeros = [-0.0, 0.0, -0.0, 1.5, -0.0, -2.0];
        for vals in [&ordinary[..], &extreme[..], &zeros[..]] {
            tile_equals_samples::<f32, 5>(vals);
            tile_equals_samples::<f32, 29>(vals);
            tile_equals_samples::<I16F16, 5>(vals);
            tile_equals_samples::<I16F16, 29>(vals);
            tile_equals_samples::<I1F15, 29>(vals);
            tile_equals_samples::<f32, 37>(vals);
            tile_equals_samples::<I16F16, 37>(vals);
        }
    }

    #[test]
    fn small_f32_kernels() {
        let w = [[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let x = [1.0f32, 0.5, -1.0];
        let mut y = [0.0; 2];
        matvec(&w, &x, &mut y, &mut NearestEven, &mut ());
        assert_eq!(y, [-1.0, 0.5]);
        let mut t = [0.0; 3];
        matvec_t(&w, &[1.0, -1.0], &mut t, &mut NearestEven, &mut ());
        assert_eq!(t, [-3.0, -3.0, -3.0]);
        let mut g = [[0.0f32; 3]; 2];
        outer_acc(&mut g, &[2.0, 1.0], &x, &mut NearestEven, &mut ());
        assert_eq!(g, [[2.0, 1.0, -2.0], [1.0, 0.5, -1.0]]);
        let mut c = [[0.0f32; 2]; 2];
        matmul(
            &w,
            &[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
            &mut c,
            &mut NearestEven,
            &mut (),
        );
        assert_eq!(c, [[4.0, 5.0], [10.0, 11.0]]);
        let mut yb = [0.0; 2];
        affine(&w, &x, &[1.0, 1.0], &mut yb, &mut NearestEven, &mut ());
        assert_eq!(yb, [0.0, 1.5]);
    }

    #[test]
    fn fixed_dot_rounds_once() {
        // Eight products of 2^-9 · 2^-9 = 2^-18 each: per-product rounding would give 0, the exact sum is 2^-15.
        let a = [q(1.0 / 512.0); 8];
        let mut counts = EventCounts::default();
        let d = dot(&a, &a, &mut Floor, &mut counts);
        assert_eq!(d.to_bits(), 2);
        assert_eq!(
            counts,
            EventCounts {
                values: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn probe_counts_underflow_and_saturation() {
        let tiny = [I1F15::from_bits(3); 4];
        let big = [I1F15::MIN; 4];
        let mut counts = EventCounts::default();
        let mut y = [I1F15::ZERO; 2];
        matvec(&[tiny, big], &tiny, &mut y, &mut NearestEven, &mut counts);
        assert_eq!((counts.values, counts.underflow), (2, 1));
        matvec(&[big, big], &big, &mut y, &mut NearestEven, &mut counts);
        assert_eq!(counts.overflow, 2);
        assert_eq!(y, [I1F15::MAX; 2]);
    }

    type Outputs = ([[f32; 3]; 4], [f32; 5], [[f32; 5]; 4], [f32; 4]);

    /// matmul, matvec_t, outer_acc and affine on fixed inputs (one value near underflow), with probe `p`.
    fn all_kernels<P: Probe>(p: &mut P) -> Outputs {
        let v = |i: usize, j: usize| {
            ((i * 31 + j * 17) % 23) as f32 / 7.0 - 1.5 + if i == j { 1e-30 } else { 0.0 }
        };
        let a: [[f32; 5]; 4] = core::array::from_fn(|i| core::array::from_fn(|j| v(i, j)));
        let b: [[f32; 3]; 5] = core::array::from_fn(|i| core::array::from_fn(|j| v(j + 7, i)));
        let x: [f32; 5] = core::array::from_fn(|j| v(9, j));
        let d: [f32; 4] = core::array::from_fn(|j| v(j, 3));
        let (mut c, mut t, mut g, mut y) = ([[0.0; 3]; 4], [0.0; 5], a, [0.0; 4]);
        matmul(&a, &b, &mut c, &mut NearestEven, p);
        matvec_t(&a, &d, &mut t, &mut NearestEven, p);
        outer_acc(&mut g, &d, &x, &mut NearestEven, p);
        affine(&a, &x, &d, &mut y, &mut NearestEven, p);
        (c, t, g, y)
    }

    #[test]
    fn probe_on_and_off_give_identical_values() {
        // With the probe off the kernels skip the event checks: the values must not change.
        const { assert!(!<() as Probe>::ACTIVE && <EventCounts as Probe>::ACTIVE) };
        let mut counts = EventCounts::default();
        let (off, on) = (all_kernels(&mut ()), all_kernels(&mut counts));
        assert_eq!(format!("{off:?}"), format!("{on:?}"));
        assert!(counts.values > 0);
    }

    #[test]
    fn nan_and_inf_give_values_and_flags() {
        let mut f = Flags::NONE;
        let x = [f32::NAN, 1.0, f32::INFINITY];
        let _ = dot(&x, &x, &mut NearestEven, &mut f);
        assert!(f.contains(Flags::NONFINITE));
        let mut f = Flags::NONE;
        let n = l2_norm(&x, &mut f);
        assert!(n.is_nan() && f.contains(Flags::NONFINITE));
    }

    /// A watching probe keeps a sum's own events: a fixed-point sum that saturates and a float sum that leaves
    /// the finite range are noted, an exact or finite one is not.
    #[test]
    fn add_assign_tells_a_watching_probe_of_saturated_and_non_finite_sums() {
        let mut y = [I16F16::MAX, q(1.0)];
        let mut w = Watching::default();
        add_assign(&mut y, &[I16F16::DELTA, q(1.0)], &mut w);
        assert_eq!(y, [I16F16::MAX, q(2.0)]);
        assert_eq!((w.0.values, w.0.overflow), (1, 1));
        let mut y = [f32::MAX, 1.0];
        let mut w = Watching::default();
        add_assign(&mut y, &[f32::MAX, 1.0], &mut w);
        assert_eq!(y, [f32::INFINITY, 2.0]);
        assert_eq!((w.0.values, w.0.overflow, w.0.nonfinite), (1, 1, 1));
    }

    /// `add_assign` element by element, as written before it took floats in blocks: every sum's events to an
    /// active probe, and to a watching one those of each sum that is not finite or saturated.
    fn add_by_element<S: Scalar, P: Probe>(y: &mut [S], x: &[S], p: &mut P) {
        for (yv, &xv) in y.iter_mut().zip(x) {
            let (v, f) = yv.add(xv);
            p.note(f);
            *yv = v;
        }
    }

    /// `add_assign` (whole blocks of 16 and a shorter one, every length up to 37) and `add_assign_tile` (every
    /// `n` up to past the tile) against that reference: the same values, the sign of a zero included, and the
    /// same events for an active and a watching probe.
    fn sums_equal_the_reference<S: Scalar>(vals: &[f64]) {
        const N: usize = 37;
        let v = |k: usize| S::from_f64(vals[k % vals.len()], &mut NearestEven).0;
        let y0: [S; N] = core::array::from_fn(|i| v(3 * i + 1));
        let x: [[S; N]; 4] = core::array::from_fn(|b| core::array::from_fn(|i| v(7 * b + 2 * i)));
        let bits = |y: &[S]| format!("{y:?}");
        for len in 0..=N {
            let (mut ya, mut yb, mut wa, mut wb) =
                (y0, y0, Watching::default(), Watching::default());
            let (mut ca, mut cb) = (EventCounts::default(), EventCounts::default());
            let (mut za, mut zb) = (y0, y0);
            add_by_element(&mut ya[..len], &x[0][..len], &mut wa);
            add_assign(&mut yb[..len], &x[0][..len], &mut wb);
            add_by_element(&mut za[..len], &x[1][..len], &mut ca);
            add_assign(&mut zb[..len], &x[1][..len], &mut cb);
            assert_eq!(bits(&ya), bits(&yb), "{} add_assign len {len}", S::NAME);
            assert_eq!(
                bits(&za),
                bits(&zb),
                "{} add_assign len {len}, active",
                S::NAME
            );
            assert_eq!(
                (wa, ca),
                (wb, cb),
                "{} add_assign len {len} events",
                S::NAME
            );
        }
        for n in 0..=6 {
            let (mut ya, mut yb, mut wa, mut wb) =
                (y0, y0, Watching::default(), Watching::default());
            let (mut za, mut zb) = (y0, y0);
            let (mut ca, mut cb) = (EventCounts::default(), EventCounts::default());
            for xb in x.iter().take(n) {
                add_by_element(&mut ya, xb, &mut wa);
                add_by_element(&mut za, xb, &mut ca);
            }
            add_assign_tile(&mut yb, &x, n, &mut wb);
            add_assign_tile(&mut zb, &x, n, &mut cb);
            assert_eq!(bits(&ya), bits(&yb), "{} add_assign_tile n = {n}", S::NAME);
            assert_eq!(
                bits(&za),
                bits(&zb),
                "{} add_assign_tile n = {n}, active",
                S::NAME
            );
            assert_eq!(
                (wa, ca),
                (wb, cb),
                "{} add_assign_tile n = {n} events",
                S::NAME
            );
        }
    }

    #[test]
    fn sums_in_blocks_and_over_a_tile_equal_element_by_element_sums() {
        let ordinary = [0.3, -1.7, 0.02, 2.5, -0.6, 1.1, -0.01, 0.9];
        // Saturation; f32 sums overflowing to ±∞ (and ∞ − ∞ = NaN), a subnormal sum, a NaN and zeros of both
        // signs (−0 + −0 = −0).
        let extreme = [
            3e38,
            2e38,
            -3e38,
            1e-38,
            -0.99e-38,
            f64::NAN,
            -0.0,
            30000.0,
            -0.0,
            7.0,
        ];
        for vals in [&ordinary[..], &extreme[..]] {
            sums_equal_the_reference::<f32>(vals);
            sums_equal_the_reference::<I16F16>(vals);
            sums_equal_the_reference::<I1F15>(vals);
        }
    }

    /// `matvec_t` starts each sum from zero, whatever `y` held before: the events a watching probe gets for
    /// a non-finite output come from that sum (here two finite products whose sum overflows), not from one
    /// that starts at `y`'s old value (−MAX, which would keep it finite).
    #[test]
    fn a_transposed_products_non_finite_output_is_recomputed_from_zero() {
        let w = [[f32::MAX], [f32::MAX]];
        let mut y = [-f32::MAX];
        let mut p = Watching::default();
        matvec_t(&w, &[1.0, 1.0], &mut y, &mut NearestEven, &mut p);
        assert_eq!(y, [f32::INFINITY]);
        assert_eq!((p.0.values, p.0.overflow, p.0.nonfinite), (1, 1, 1));
    }
}
