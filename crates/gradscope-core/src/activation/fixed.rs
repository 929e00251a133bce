//! Fixed-point activations: wide-integer evaluation, one rounding at the end.
//!
//! ELU and SELU derivatives are computed from the input (α·eˣ), not from the output as in floats: in `I1F15`
//! SELU's output saturates at −1 and `y + λα` would then be wrong by 0.11.
//!
//! Working precision: table values and derivatives at 30 fraction bits ("d30"), coefficients at 40 (`COEF_FRAC`; an error of
//! 2⁻⁴¹ stays below 10⁻³ LSB even at x = 32768).
//! Products are exact: in `i64` where the operands' bounds keep them there (table interpolation, the
//! output-based derivatives, and the chain rule's dy·f′ for |f′| below 2^(63 − storage bits)), else in `i128`.
//! A result wider than 62 bits is shifted right with a sticky bit before the one final rounding, which keeps
//! floor and nearest-even exact and saturation where it belongs. The 64-bit forms are what a Cortex-M0 can
//! afford (it emulates 128-bit arithmetic in library calls); tests here check each against the 128-bit one.

#[cfg(gradscope_per_kind)]
use super::AsAct;
use super::{Act, Activate, SELU_ALPHA, SELU_LAMBDA, SOFTPLUS_THRESHOLD};
use crate::fixed::{Fixed, Fx, Fx16, reduce};
use crate::flags::Flags;
#[cfg(gradscope_per_kind)]
use crate::probe::Probe;
use crate::round::Rounding;

mod tables {
    include!(concat!(env!("OUT_DIR"), "/activation_tables.rs"));
}
use tables::{STEP_LOG2, TABLE_FRAC};

const ONE30: i64 = 1 << TABLE_FRAC;
use crate::scalar::COEF_FRAC;
const LAMBDA_Q: i64 = (SELU_LAMBDA * (1u64 << COEF_FRAC) as f64 + 0.5) as i64;
const LAMBDA_ALPHA_Q: i64 = (SELU_LAMBDA * SELU_ALPHA * (1u64 << COEF_FRAC) as f64 + 0.5) as i64;
const SIXTH30: i64 = (ONE30 + 3) / 6;

/// Exact product.
#[inline]
fn mul(a: i64, b: i64) -> i128 {
    a as i128 * b as i128
}

/// `a · b` for a product that fits `i64`. A core without a 32 × 32 → 64-bit multiply (ARMv6-M) calls a library
/// routine of about 40 instructions for each 64-bit one; there, |a| < 2³¹ and |b| <= 2¹⁵ (the 16-bit formats'
/// raws and table steps) take [`split_mul`] instead, the same product.
#[inline(always)]
fn mul64(a: i64, b: i64) -> i64 {
    #[cfg(gradscope_no_long_mul)]
    if let Ok(a) = i32::try_from(a)
        && b.unsigned_abs() <= 1 << 15
    {
        return split_mul(a, b as i32);
    }
    a * b
}

/// `a · b` for |b| <= 2¹⁵ from two 32-bit products, with a = h·2¹⁶ + l and 0 <= l < 2¹⁶: |h·b| <= 2³⁰ and
/// |l·b| < 2³¹, so neither overflows.
#[cfg_attr(not(gradscope_no_long_mul), allow(dead_code))]
#[inline(always)]
fn split_mul(a: i32, b: i32) -> i64 {
    let hi = (a >> 16) * b;
    let lo = (a & 0xffff) * b;
    ((hi as i64) << 16) + lo as i64
}

/// `v` at `from` fraction bits re-expressed at `to` bits (floor when dropping bits, clamped to ±2⁶²).
#[inline]
fn rescale(v: i128, from: u32, to: u32) -> i64 {
    let lim = 1i128 << 62;
    let w = if from >= to {
        v >> (from - to).min(127)
    } else {
        v << (to - from).min(64)
    };
    w.clamp(-lim, lim) as i64
}

/// [`rescale`] of an `i64`, without 128-bit arithmetic (which a Cortex-M0 emulates): the same result for every
/// input.
#[inline]
fn rescale64(v: i64, from: u32, to: u32) -> i64 {
    let lim = 1i64 << 62;
    if from >= to {
        (v >> (from - to).min(63)).clamp(-lim, lim)
    } else {
        // v·2^k is exact when |v| <= 2^(62−k) and saturates beyond (lim >> k is 0 for k >= 63).
        let k = to - from;
        let bound = if k >= 63 { 0 } else { lim >> k };
        if v > bound {
            lim
        } else if v < -bound {
            -lim
        } else {
            v << k.min(62)
        }
    }
}

/// Quadratic (3-point Newton) interpolation of `table` at `u >= 0` given with `frac` fraction bits; result at
/// 30 bits. Error ≤ 0.064·h³·max|f‴| with h = 1/64, plus the knots' rounding (2⁻³¹).
#[inline]
fn lookup(table: &[i32], u: i64, frac: u32) -> i64 {
    let u = u.max(0);
    let (idx, t, sh) = if frac >= STEP_LOG2 {
        let sh = frac - STEP_LOG2;
        (u >> sh, u & ((1i64 << sh) - 1), sh)
    } else {
        (rescale(u as i128, frac, STEP_LOG2), 0, 0)
    };
    let last = table.last().copied().unwrap_or(0) as i64;
    let i = usize::try_from(idx).unwrap_or(usize::MAX);
    let knot = |k: usize| table.get(k).map(|&v| v as i64);
    match (knot(i), knot(i.wrapping_add(1))) {
        (Some(y0), Some(y1)) if sh > 0 => {
            let linear = (mul64(y1 - y0, t) + (1i64 << (sh - 1))) >> sh;
            // Second difference from the next knot (the last interval stays linear: f is flat there).
            let curve = match knot(i.wrapping_add(2)) {
                Some(y2) => {
                    let d2 = y2 - 2 * y1 + y0;
                    // t(t − 1)/2 at `sh` bits is in (−1/8, 0]; |d2| < 2^20 here, so no overflow.
                    let tt = mul64(t - (1i64 << sh), t) >> sh;
                    mul64(d2, tt) >> (sh + 1)
                }
                None => 0,
            };
            y0 + linear + curve
        }
        (Some(y0), Some(_)) => y0,
        _ => last,
    }
}

/// An odd-symmetric table (tanh) or a "1 − f(−u)" table (sigmoid, Φ, GELU gates): value at `x` (F bits).
#[inline]
fn odd(table: &[i32], x: i64, frac: u32) -> i64 {
    let v = lookup(table, x.unsigned_abs().min(i64::MAX as u64) as i64, frac);
    if x < 0 { -v } else { v }
}

#[inline]
fn complement(table: &[i32], x: i64, frac: u32) -> i64 {
    let v = lookup(table, x.unsigned_abs().min(i64::MAX as u64) as i64, frac);
    if x < 0 { ONE30 - v } else { v }
}

/// The exact result before rounding: a wide value at some fraction bits, or a ratio in raw units.
enum Wide {
    At(i128, u32),
    Ratio(i64, i64),
}

/// βx at 30 bits (for softplus), and whether it passes the linear threshold.
#[inline]
fn softplus_arg(beta_q: i64, x: i64, f: u32) -> (i64, bool) {
    let u = mul(beta_q, x); // at f + COEF_FRAC bits
    let over = u > (SOFTPLUS_THRESHOLD as i128) << (f + COEF_FRAC);
    (rescale(u, f + COEF_FRAC, TABLE_FRAC), over)
}

#[inline(always)]
fn forward(act: &Act, x: i64, f: u32) -> Wide {
    let one = 1i64 << f;
    match *act {
        Act::Identity => Wide::At(x as i128, f),
        Act::Relu => Wide::At(x.max(0) as i128, f),
        Act::LeakyRelu(a) => {
            if x > 0 {
                Wide::At(x as i128, f)
            } else {
                Wide::At(mul(a.q(), x), f + COEF_FRAC)
            }
        }
        Act::Elu(a) => {
            if x > 0 {
                Wide::At(x as i128, f)
            } else {
                Wide::At(
                    mul(a.q(), lookup(&tables::EXPM1_NEG, -x, f)),
                    COEF_FRAC + TABLE_FRAC,
                )
            }
        }
        Act::Selu => {
            if x > 0 {
                Wide::At(mul(LAMBDA_Q, x), f + COEF_FRAC)
            } else {
                Wide::At(
                    mul(LAMBDA_ALPHA_Q, lookup(&tables::EXPM1_NEG, -x, f)),
                    COEF_FRAC + TABLE_FRAC,
                )
            }
        }
        Act::Softplus(b) => {
            let (u, over) = softplus_arg(b.q(), x, f);
            if over {
                Wide::At(x as i128, f)
            } else {
                let sp =
                    u.max(0) + lookup(&tables::SOFTPLUS_NEG, u.unsigned_abs() as i64, TABLE_FRAC);
                Wide::At(mul(b.inv_q(), sp), COEF_FRAC + TABLE_FRAC)
            }
        }
        Act::Sigmoid => Wide::At(complement(&tables::SIGMOID, x, f) as i128, TABLE_FRAC),
        Act::Tanh => Wide::At(odd(&tables::TANH, x, f) as i128, TABLE_FRAC),
        Act::Gelu => Wide::At(mul(x, complement(&tables::PHI, x, f)), f + TABLE_FRAC),
        Act::GeluTanh => Wide::At(
            mul(x, complement(&tables::GELU_TANH_G, x, f)),
            f + TABLE_FRAC,
        ),
        Act::Silu => Wide::At(mul(x, complement(&tables::SIGMOID, x, f)), f + TABLE_FRAC),
        Act::Softsign => Wide::Ratio(x << f, one + x.abs()),
        Act::HardSigmoid => {
            if x <= -3 * one {
                Wide::At(0, f)
            } else if x >= 3 * one {
                Wide::At(one as i128, f)
            } else {
                Wide::Ratio(x + 3 * one, 6)
            }
        }
        Act::HardTanh => Wide::At(x.max(-one).min(one) as i128, f),
    }
}

/// f′ at 30 fraction bits, from the input `x` and the (rounded) output `y`, both raw values of a format with
/// `f` fraction bits (so |x|, |y| <= 2³¹ and f <= 31).
///
/// The output-based products (sigmoid, tanh, softsign) then fit `i64`: |y·y| <= 2⁶², |y·(1 − y)| <= 2⁶³ (reached
/// only at y = −2³¹ with f = 31, where it is exactly `i64::MIN`) and (1 − |y|)² <= 2⁶².
// Inlined where `gradscope_per_kind` is set (build.rs), so that `f_all`'s and `backward_all`'s constant kinds
// fold the dispatch away (with this, `finish`, `f`, `backward` and `from_wide` out of line, the 4-8-8-1 I1F15
// step counted 38% more instructions on a host); an M0 keeps one copy, for flash.
#[cfg_attr(gradscope_per_kind, inline(always))]
fn derivative30(act: &Act, x: i64, y: i64, f: u32) -> i64 {
    let one = 1i64 << f;
    match *act {
        Act::Identity => ONE30,
        Act::Relu => {
            if x > 0 {
                ONE30
            } else {
                0
            }
        }
        Act::LeakyRelu(a) => {
            if x > 0 {
                ONE30
            } else {
                rescale(a.q() as i128, COEF_FRAC, TABLE_FRAC)
            }
        }
        // α·e^x from the input: in a narrow format the output may have saturated, and y + α would be wrong.
        Act::Elu(a) => {
            if x > 0 {
                ONE30
            } else {
                rescale(
                    mul(a.q(), lookup(&tables::EXPM1_NEG, -x, f) + ONE30),
                    COEF_FRAC + TABLE_FRAC,
                    TABLE_FRAC,
                )
            }
        }
        Act::Selu => {
            if x > 0 {
                rescale(LAMBDA_Q as i128, COEF_FRAC, TABLE_FRAC)
            } else {
                let ex = lookup(&tables::EXPM1_NEG, -x, f) + ONE30;
                rescale(mul(LAMBDA_ALPHA_Q, ex), COEF_FRAC + TABLE_FRAC, TABLE_FRAC)
            }
        }
        Act::Softplus(b) => {
            let (u, over) = softplus_arg(b.q(), x, f);
            if over {
                ONE30
            } else {
                complement(&tables::SIGMOID, u, TABLE_FRAC)
            }
        }
        // y·(1 − y) as y·2^f − y²: the square is what a core without a long multiply does cheaply.
        Act::Sigmoid => rescale64((y << f) - mul64(y, y), 2 * f, TABLE_FRAC),
        Act::Tanh => rescale64((1i64 << (2 * f)) - mul64(y, y), 2 * f, TABLE_FRAC),
        Act::Gelu => complement(&tables::GELU_ERF_D, x, f),
        Act::GeluTanh => complement(&tables::GELU_TANH_D, x, f),
        Act::Silu => {
            let s = complement(&tables::SIGMOID, x, f);
            let xt = rescale(mul(x, ONE30 - s), f + TABLE_FRAC, TABLE_FRAC);
            s + rescale(mul(s, xt), 2 * TABLE_FRAC, TABLE_FRAC)
        }
        Act::Softsign => {
            let m = one - y.abs();
            rescale64(mul64(m, m), 2 * f, TABLE_FRAC)
        }
        Act::HardSigmoid => {
            if x > -3 * one && x < 3 * one {
                SIXTH30
            } else {
                0
            }
        }
        Act::HardTanh => {
            if x > -one && x < one {
                ONE30
            } else {
                0
            }
        }
    }
}

/// A zero result where the exact value is not zero is an underflow, even when an intermediate (a table knot)
/// already rounded to zero.
#[inline]
fn underflow(result: i64, exact_zero: bool) -> Flags {
    Flags::when(
        result == 0 && !exact_zero,
        Flags::UNDERFLOW | Flags::INEXACT,
    )
}

/// `w` rounded to `S`, with every event (`ALL`) or only the value's own (what a watching probe keeps).
// As `derivative30`.
#[cfg_attr(not(gradscope_per_kind), inline)]
#[cfg_attr(gradscope_per_kind, inline(always))]
fn finish<S: Fixed, R: Rounding + ?Sized, const ALL: bool>(w: Wide, r: &mut R) -> (S, Flags) {
    match w {
        Wide::At(v, frac) => {
            let (v, frac) = reduce(v, frac);
            if ALL {
                S::from_wide(v, frac, r)
            } else {
                S::from_wide_watched(v, frac, r)
            }
        }
        Wide::Ratio(n, d) if ALL => S::from_ratio(n, d, r),
        Wide::Ratio(n, d) => S::from_ratio_watched(n, d, r),
    }
}

/// [`Activate::f`] of a fixed-point `x`: every event (`ALL`), or (for [`Activate::f_watched`]) the value's own.
// As `derivative30`.
#[cfg_attr(not(gradscope_per_kind), inline)]
#[cfg_attr(gradscope_per_kind, inline(always))]
fn f_as<S: Fixed, R: Rounding + ?Sized, const ALL: bool>(a: &Act, x: S, r: &mut R) -> (S, Flags) {
    let (y, fl) = finish::<S, R, ALL>(forward(a, x.raw(), S::FRAC), r);
    if !ALL {
        return (y, fl);
    }
    (
        y,
        fl | underflow(y.raw(), a.zero_set(x.raw(), 0, 1i64 << S::FRAC).0),
    )
}

/// [`Activate::backward`] of fixed-point values with `BITS`-bit raws, its events as in [`f_as`], or with `STICKY`
/// none: a saturation only sets the sticky Q flag ([`Fixed::from_wide_sticky`]), for a loop that reads it once.
// As `derivative30`.
#[cfg_attr(not(gradscope_per_kind), inline)]
#[cfg_attr(gradscope_per_kind, inline(always))]
fn backward_as<
    S: Fixed,
    R: Rounding + ?Sized,
    const ALL: bool,
    const BITS: u32,
    const STICKY: bool,
>(
    a: &Act,
    (x, y, dy): (S, S, S),
    r: &mut R,
) -> (S, Flags) {
    let narrow_d: u64 = 1 << (63 - BITS);
    let from_wide = |v, frac, r: &mut R| {
        if ALL {
            S::from_wide(v, frac, r)
        } else if STICKY {
            (S::from_wide_sticky(v, frac, r), Flags::NONE)
        } else {
            S::from_wide_watched(v, frac, r)
        }
    };
    let d = derivative30(a, x.raw(), y.raw(), S::FRAC);
    // |dy| <= 2^(bits−1): with |d| below `narrow_d` the product is under 2^62, exact in i64 and already what
    // `reduce` would return; the i128 path is for derivatives beyond that.
    let (g, fl) = if let Some(d) = i32::try_from(d)
        .ok()
        .filter(|_| BITS == 16 && r.nearest_even())
    {
        product_nearest_even::<S, R, ALL, STICKY>(d, dy.raw(), r)
    } else if d.unsigned_abs() < narrow_d {
        from_wide(mul64(d, dy.raw()), S::FRAC + TABLE_FRAC, r)
    } else {
        let (v, frac) = reduce(mul(dy.raw(), d), S::FRAC + TABLE_FRAC);
        from_wide(v, frac, r)
    };
    if !ALL {
        return (g, fl);
    }
    let exact_zero = dy.raw() == 0 || a.zero_set(x.raw(), 0, 1i64 << S::FRAC).1;
    (g, fl | underflow(g.raw(), exact_zero))
}

/// The chain rule's `d·dy` (`d` at 30 fraction bits, `|dy| <= 2¹⁵`) rounded to nearest-even at `S`'s
/// fraction bits, with [`Fixed::from_wide`]'s value and flags, in what a 16-bit format needs: one 32 × 32 →
/// 64-bit product and the biased rounding by the constant 30 places, where `from_wide` took a shift known only
/// at run time and compared the remainder with one half: the M4F's `backward_4-8-8-1` in `I1F15` (the cost
/// table in BENCHMARKS.md) went 2,430 → 2,200 instructions. `|d·dy| <= 2⁴⁶`, so the bias cannot wrap, and the
/// quotient needs only saturating to `S`, which is exact.
#[inline(always)]
fn product_nearest_even<S: Fixed, R: Rounding + ?Sized, const ALL: bool, const STICKY: bool>(
    d: i32,
    dy: i64,
    r: &mut R,
) -> (S, Flags) {
    let v = mul64(d as i64, dy);
    let q = crate::round::nearest_even_wrapping64(v, TABLE_FRAC);
    if STICKY {
        return (S::from_wide_sticky(q, S::FRAC, r), Flags::NONE);
    }
    let (g, fl) = if ALL {
        S::from_wide(q, S::FRAC, r)
    } else {
        S::from_wide_watched(q, S::FRAC, r)
    };
    if !ALL {
        return (g, fl);
    }
    // As `from_wide`'s: a gradient that rounds to zero had bits dropped, so `dropped` stands in for `v != 0`.
    let dropped = v & (ONE30 - 1) != 0;
    (
        g,
        fl | Flags::when(dropped, Flags::INEXACT)
            | Flags::when(dropped && g.raw() == 0, Flags::UNDERFLOW),
    )
}

macro_rules! fixed_activate {
    ($name:ident, $raw:ty) => {
        impl<const F: u32> Activate<$name<F>> for Act {
            // As `derivative30`.
            #[cfg_attr(not(gradscope_per_kind), inline)]
            #[cfg_attr(gradscope_per_kind, inline(always))]
            fn f<R: Rounding + ?Sized>(&self, x: $name<F>, r: &mut R) -> ($name<F>, Flags) {
                f_as::<_, R, true>(self, x, r)
            }
            // Without the flags of dropped bits and of underflow: masked away only afterwards, they were still
            // computed. As `derivative30`.
            #[cfg_attr(not(gradscope_per_kind), inline)]
            #[cfg_attr(gradscope_per_kind, inline(always))]
            fn f_watched<R: Rounding + ?Sized>(&self, x: $name<F>, r: &mut R) -> ($name<F>, Flags) {
                f_as::<_, R, false>(self, x, r)
            }
            #[inline]
            fn df<R: Rounding + ?Sized>(
                &self,
                x: $name<F>,
                y: $name<F>,
                r: &mut R,
            ) -> ($name<F>, Flags) {
                let (d, fl) =
                    <$name<F>>::from_wide(derivative30(self, x.raw(), y.raw(), F), TABLE_FRAC, r);
                (
                    d,
                    fl | underflow(d.raw(), self.zero_set(x.raw(), 0, 1i64 << F).1),
                )
            }
            // As `derivative30`.
            #[cfg_attr(not(gradscope_per_kind), inline)]
            #[cfg_attr(gradscope_per_kind, inline(always))]
            fn backward<R: Rounding + ?Sized>(
                &self,
                x: $name<F>,
                y: $name<F>,
                dy: $name<F>,
                r: &mut R,
            ) -> ($name<F>, Flags) {
                backward_as::<_, R, true, { <$raw>::BITS }, false>(self, (x, y, dy), r)
            }
            // As `f_watched`.
            #[cfg_attr(not(gradscope_per_kind), inline)]
            #[cfg_attr(gradscope_per_kind, inline(always))]
            fn backward_watched<R: Rounding + ?Sized>(
                &self,
                x: $name<F>,
                y: $name<F>,
                dy: $name<F>,
                r: &mut R,
            ) -> ($name<F>, Flags) {
                backward_as::<_, R, false, { <$raw>::BITS }, false>(self, (x, y, dy), r)
            }
            // Per kind, as the floats do: with the kind a constant, the inlined evaluation loses its dispatch
            // (a ReLU becomes a max, its flags a compare). The same functions run on each value, so values
            // and events are those of the default loop. Not on an M0, for the floats' reason (flash).
            #[cfg(gradscope_per_kind)]
            #[inline]
            fn f_all<R: Rounding + ?Sized, P: Probe + ?Sized>(
                &self,
                x: &[$name<F>],
                y: &mut [$name<F>],
                r: &mut R,
                p: &mut P,
            ) {
                per_kind!(self, Act, |a| {
                    for (yv, &xv) in y.iter_mut().zip(x) {
                        *yv = crate::layer::activate_one(a, xv, r, p);
                    }
                })
            }
            #[cfg(gradscope_per_kind)]
            #[inline]
            fn backward_all<R: Rounding + ?Sized, P: Probe + ?Sized>(
                &self,
                (x, y): (&[$name<F>], &[$name<F>]),
                dy: &[$name<F>],
                d: &mut [$name<F>],
                r: &mut R,
                p: &mut P,
            ) {
                per_kind!(self, Act, |a| {
                    if !crate::matrix::deferred::<$name<F>, P>(r) {
                        for (((dv, &xv), &yv), &g) in d.iter_mut().zip(x).zip(y).zip(dy) {
                            *dv = crate::layer::activate_back_one(a, (xv, yv, g), r, p);
                        }
                        return;
                    }
                    // Saturations deferred to the sticky flag, as the matrix kernels defer theirs: one read
                    // after the values, where the probe's test of each value was an IT block of nine
                    // instructions on the M4F, run whether taken or not. If the flag is set, the values on a
                    // bound of the range, where a saturated one lies, are evaluated again for their events
                    // (nearest-even draws nothing, so again gives the same).
                    crate::qflag::q_clear();
                    for (((dv, &xv), &yv), &g) in d.iter_mut().zip(x).zip(y).zip(dy) {
                        *dv =
                            backward_as::<_, R, false, { <$raw>::BITS }, true>(a, (xv, yv, g), r).0;
                    }
                    if crate::qflag::q_take() {
                        crate::matrix::note_saturated(d, p, &mut |k| match (
                            x.get(k),
                            y.get(k),
                            dy.get(k),
                        ) {
                            (Some(&xv), Some(&yv), Some(&g)) => {
                                Some(a.backward_watched(xv, yv, g, r).1)
                            }
                            _ => None,
                        });
                    }
                })
            }
        }
    };
}

fixed_activate!(Fx, i32);
fixed_activate!(Fx16, i16);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::{I1F15, I16F16};
    use crate::round::NearestEven;
    use crate::scalar::Scalar;

    #[test]
    fn coefficients_are_the_published_constants_rounded_to_nearest() {
        // SELU's λ and α as Klambauer et al. (2017) print them, not the crate's constants.
        let parse = |s: &str| s.parse::<f64>().expect("a number");
        let lambda = parse("1.0507009873554804934193349852946");
        let alpha = parse("1.6732632423543772848170429916717");
        let unit = (1u64 << COEF_FRAC) as f64;
        // Each stored value is the nearest integer: the exact products are .075, .012 and .667 of a unit past an
        // integer, far from a tie, so f64's error (about 10⁻³ unit) cannot change which integer is nearest.
        assert!((LAMBDA_Q as f64 - lambda * unit).abs() < 0.5);
        assert!((LAMBDA_ALPHA_Q as f64 - lambda * alpha * unit).abs() < 0.5);
        assert!((SIXTH30 as f64 - ONE30 as f64 / 6.0).abs() < 0.5);
    }

    #[test]
    fn relu_backward_is_exact_and_sigmoid_saturates_to_underflow() {
        let dy = I1F15::from_bits(123);
        let x = I1F15::from_bits(5);
        let (g, f) = Act::Relu.backward(x, x, dy, &mut NearestEven);
        assert_eq!((g, f), (dy, Flags::NONE));
        // σ(−30) ≈ 9e−14 is far below an I16F16 LSB: the result is 0 and says so.
        let x = I16F16::from_f64(-30.0, &mut NearestEven).0;
        let (y, f) = Act::Sigmoid.f(x, &mut NearestEven);
        assert_eq!(y, I16F16::ZERO);
        assert!(f.contains(Flags::UNDERFLOW));
    }

    /// Raw values that reach every edge of the 64-bit paths: zero, ±1, the formats' extremes and 2³¹.
    fn edges() -> impl Iterator<Item = i64> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let fixed = [
            0,
            1,
            -1,
            i16::MAX as i64,
            i16::MIN as i64,
            i32::MAX as i64,
            i32::MIN as i64,
            1 << 30,
            -(1 << 30),
            1 << 15,
        ];
        fixed.into_iter().chain((0..4000).map(move |k| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Every magnitude up to 2^31, both signs.
            ((state >> 33) as i64 >> (k % 32)) * if k % 2 == 0 { 1 } else { -1 }
        }))
    }

    #[test]
    fn split_mul_is_the_exact_product() {
        let bs = [
            0,
            1,
            -1,
            1 << 15,
            -(1 << 15),
            (1 << 15) - 1,
            511,
            -512,
            12345,
        ];
        for a in edges().filter_map(|a| i32::try_from(a).ok()) {
            for &b in &bs {
                assert_eq!(split_mul(a, b), a as i64 * b as i64, "{a} · {b}");
            }
        }
        for a in [i32::MIN, i32::MAX, -65536, 65535, -1] {
            for b in -(1 << 15)..=(1 << 15) {
                assert_eq!(split_mul(a, b), a as i64 * b as i64, "{a} · {b}");
            }
        }
    }

    #[test]
    fn rescale64_equals_the_128_bit_rescale() {
        let big = [
            i64::MAX,
            i64::MIN,
            1 << 62,
            -(1 << 62),
            (1 << 62) + 1,
            3 << 40,
        ];
        for v in edges().chain(big) {
            for (from, to) in [
                (30, 30),
                (62, 30),
                (30, 62),
                (0, 30),
                (16, 30),
                (30, 0),
                (0, 64),
                (0, 63),
            ] {
                assert_eq!(
                    rescale64(v, from, to),
                    rescale(v as i128, from, to),
                    "{v} {from}->{to}"
                );
            }
        }
    }

    #[test]
    fn output_based_derivatives_in_64_bits_equal_the_exact_128_bit_products() {
        // The formulas as they were written in i128, for every format width (f up to 31, raws up to 32 bits).
        for f in [4, 8, 15, 16, 24, 30, 31] {
            let one = 1i128 << f;
            for y in edges().filter(|y| y.unsigned_abs() <= 1 << 31) {
                let y128 = y as i128;
                let m = one - y128.abs();
                let want = [
                    (
                        Act::Sigmoid,
                        rescale(y128 * (one - y128), 2 * f, TABLE_FRAC),
                    ),
                    (
                        Act::Tanh,
                        rescale((1i128 << (2 * f)) - y128 * y128, 2 * f, TABLE_FRAC),
                    ),
                    (Act::Softsign, rescale(m * m, 2 * f, TABLE_FRAC)),
                ];
                for (act, w) in want {
                    assert_eq!(derivative30(&act, 0, y, f), w, "{act:?} y = {y}, f = {f}");
                }
            }
        }
    }

    #[test]
    fn backward_takes_the_128_bit_product_beyond_the_narrow_bound() {
        // Leaky-ReLU slopes around 2 (the I16F16 bound on |f′| for a 64-bit product) and far beyond, against
        // the exact product reduced to 62 bits: the same gradient and flags on both sides of the bound.
        fn check<S: Fixed>(f: u32, slopes: &[f32])
        where
            Act: Activate<S>,
        {
            for &a in slopes {
                let act = Act::leaky_relu(a).unwrap();
                let x = S::from_f64(-0.5, &mut NearestEven).0;
                for dy in edges() {
                    let dy = S::from_wide(dy, f, &mut NearestEven).0;
                    let d = derivative30(&act, x.raw(), x.raw(), f);
                    let (v, frac) = reduce(mul(dy.raw(), d), f + TABLE_FRAC);
                    let (want, mut fl) = S::from_wide(v, frac, &mut NearestEven);
                    if want.raw() == 0 && dy.raw() != 0 {
                        fl |= Flags::UNDERFLOW | Flags::INEXACT;
                    }
                    assert_eq!(
                        act.backward(x, x, dy, &mut NearestEven),
                        (want, fl),
                        "slope {a}, dy = {dy:?}"
                    );
                }
            }
        }
        check::<I16F16>(16, &[1.99, 2.0, 2.01, 200.0, -256.0]);
        check::<I1F15>(15, &[1.99, 2.0, 200.0, -256.0]);
    }

    #[test]
    fn tables_end_flat_and_read_flat_past_their_end() {
        // The build keeps each table up to its last change plus two equal knots; `lookup` must then give the
        // last value on the final interval and beyond, as the full table (flat there) did.
        let all: [&[i32]; 8] = [
            &tables::SIGMOID,
            &tables::TANH,
            &tables::EXPM1_NEG,
            &tables::SOFTPLUS_NEG,
            &tables::PHI,
            &tables::GELU_ERF_D,
            &tables::GELU_TANH_G,
            &tables::GELU_TANH_D,
        ];
        for t in all {
            let n = t.len();
            assert!(n >= 2 && t[n - 1] == t[n - 2], "{n} knots");
            let last = t[n - 1] as i64;
            let frac = 16;
            let from = ((n as i64 - 2) << frac) >> STEP_LOG2;
            for u in (from..(25i64 << frac)).step_by(997) {
                assert_eq!(lookup(t, u, frac), last, "u = {u} of a table of {n}");
            }
        }
        // The tails are real savings: Φ is flat at 30 bits from u ≈ 6.
        assert!(tables::PHI.len() < 500);
    }

    #[test]
    fn tables_match_their_formulas_at_the_knots() {
        let at = |t: &[i32], k: usize| t[k] as f64 / ONE30 as f64;
        assert!((at(&tables::SIGMOID, 64) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-9);
        assert!((at(&tables::TANH, 32) - 0.5f64.tanh()).abs() < 1e-9);
        assert!((at(&tables::EXPM1_NEG, 128) - ((-2.0f64).exp() - 1.0)).abs() < 1e-9);
    }
}
