//! Fixed-point scalars: [`Fx<F>`] (Q(31−F).F in an `i32`) and [`Fx16<F>`] (Q(15−F).F in an `i16`).
//!
//! Names follow the `fixed` crate: [`I16F16`] = Q16.16, [`I8F24`] = Q8.24, [`I1F15`] = Q15 (CMSIS `q15_t`).
//!
//! Arithmetic never uses bare `+`/`*` on the raw integers: every result is computed exactly in a wider integer,
//! rounded with the caller's [`Rounding`], then saturated to the range, and the [`Flags`] say what happened.
//!
//! | type | storage | LSB | range | exact accumulator ([`WideAcc`]) | fast lanes |
//! |---|---|---|---|---|---|
//! | [`I16F16`] | `i32` | 2⁻¹⁶ | [−32768, 32768 − 2⁻¹⁶] | `i128`, products at 32 fraction bits | `i64` while n·max\|a\|·max\|b\| < 2⁶³ |
//! | [`I8F24`] | `i32` | 2⁻²⁴ | [−128, 128 − 2⁻²⁴] | `i128`, products at 48 fraction bits | `i64`, as above |
//! | [`I1F15`] | `i16` | 2⁻¹⁵ | [−1, 1 − 2⁻¹⁵] | `i128`, products at 30 fraction bits | `i64` for n < 2³³ (33 guard bits, as CMSIS `arm_mat_mult_q15`'s 34.30) |
//!
//! The exact accumulator holds any sum of up to 2⁶⁴ products, so a dot product is exact in any order and
//! rounds once; a result beyond the format saturates at narrowing, with [`Flags::OVERFLOW`]. It never wraps.
//! The fast lanes are plain `i64` sums (16-bit products in a 32-bit multiply), used when a bound on the
//! operands ([`Scalar::quiet`]) proves they cannot wrap: the same exact sum, in a shape the compiler
//! vectorizes (and, for `I1F15` on a Cortex-M4, turns into dual 16-bit multiply-accumulates).
//!
//! Sums of squares accumulate raw squares in a `u128` (at most 2⁶² each), which cannot overflow for fewer than
//! 2⁶⁶ terms; the L2 norm is the integer square root of that exact sum, rounded to nearest.

use core::fmt;

use crate::flags::Flags;
use crate::round::Rounding;
use crate::scalar::{Coef, Scalar};

/// Exact fixed-point accumulator: the running sum of raw products (at `2F` fraction bits) in an `i128`, which
/// no sum of fewer than 2⁶⁴ products can overflow (it saturates rather than wrap beyond that).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct WideAcc {
    /// The exact sum.
    pub value: i128,
}

impl WideAcc {
    #[inline]
    fn add(self, p: i128) -> WideAcc {
        WideAcc {
            value: self.value.saturating_add(p),
        }
    }
}

/// Raw-level access shared by the fixed-point types, for kernels that compute in wide integers themselves
/// (activations, initializers, clipping).
pub trait Fixed: Scalar {
    /// Fraction bits `F`.
    const FRAC: u32;
    /// The raw value, widened.
    fn raw(self) -> i64;
    /// `v · 2^−frac` rounded with `r` and saturated, with its flags.
    fn from_wide<R: Rounding + ?Sized>(v: i64, frac: u32, r: &mut R) -> (Self, Flags);
    /// `num / den` in raw units (`num / den · 2^−F`) rounded with `r` and saturated. `den <= 0` gives zero
    /// with [`Flags::NONFINITE`] (a division by zero), never a panic.
    fn from_ratio<R: Rounding + ?Sized>(num: i64, den: i64, r: &mut R) -> (Self, Flags);
    /// [`Fixed::from_wide`] with flags that may leave out every event but the value's own (its saturation), as
    /// [`Scalar::narrow_watched`] is to `narrow`.
    #[inline]
    fn from_wide_watched<R: Rounding + ?Sized>(v: i64, frac: u32, r: &mut R) -> (Self, Flags) {
        Self::from_wide(v, frac, r)
    }
    /// [`Fixed::from_ratio`] as [`Fixed::from_wide_watched`] is to `from_wide`.
    #[inline]
    fn from_ratio_watched<R: Rounding + ?Sized>(num: i64, den: i64, r: &mut R) -> (Self, Flags) {
        Self::from_ratio(num, den, r)
    }
    /// [`Fixed::from_wide`]'s value, its saturation told only by the processor's sticky Q flag, which it sets
    /// (on a Cortex-M4/M7; elsewhere there is none): for a kernel that reads the flag once after its outputs
    /// ([`Scalar::STICKY_SATURATION`]).
    fn from_wide_sticky<R: Rounding + ?Sized>(v: i64, frac: u32, r: &mut R) -> Self;
}

/// Nearest-even rounding of `m·g / 2^e` for a 16-bit raw `g` and a 15-bit mantissa `m` (`|m·g| < 2³⁰`,
/// `1 ≤ e ≤ 31`), as [`NearestEven`](crate::round::NearestEven) rounds, with the bias `2^(e−1) − 1` of
/// [`nearest_even_biased`](crate::round::nearest_even_biased) added by the multiply's accumulate (`smlabb` on a
/// Cortex-M4). The sums stay below 2³¹ in magnitude, and from `e = 16` on `|round(m·g / 2^e)| ≤ 2¹⁴ + 1`: the
/// step `w − round(·)` is the only narrowing that can saturate (`e < 16` means a coefficient of at least ½).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Nearest16 {
    m: i32,
    e: u32,
    bias: i32,
    mask: u32,
}

impl Nearest16 {
    /// For a mantissa `|m| < 2¹⁵` and `1 ≤ e ≤ 31`.
    #[inline(always)]
    pub(crate) fn new(m: i32, e: u32) -> Nearest16 {
        let e = e.clamp(1, 31);
        Nearest16 {
            m,
            e,
            bias: (1i32 << (e - 1)) - 1,
            mask: (1u32 << e) - 1,
        }
    }

    /// `round(m·g / 2^e)` and whether bits were dropped.
    #[inline(always)]
    pub(crate) fn round(&self, g: i16) -> (i32, bool) {
        let p = g as i32 * self.m;
        (self.finish(p + self.bias), p as u32 & self.mask != 0)
    }

    #[inline(always)]
    fn finish(&self, t: i32) -> i32 {
        crate::round::nearest_even_biased(t, self.e)
    }

    /// `w ← w − round(m·g / 2^e)`, saturating, for each pair of `w` and `g` (the shorter decides).
    /// `one(w, g, fits)` gives a value's result and events, where `fits` says that `round(m·g / 2^e)` fits 16
    /// bits (`e ≥ 16`): the loop is written twice, once for each. Pairs of values on a Cortex-M4/M7.
    #[inline(always)]
    pub(crate) fn sub<S: Copy>(
        &self,
        w: &mut [S],
        g: &[S],
        raw: impl Fn(S) -> i16 + Copy,
        make: impl Fn(i16) -> S + Copy,
        one: impl Fn(S, S, bool) -> (S, Flags),
        record: impl FnMut(Flags),
    ) {
        #[cfg(gradscope_dsp)]
        {
            self.sub_pairs(w, g, raw, make, one, record)
        }
        #[cfg(not(gradscope_dsp))]
        {
            let (_, _, mut record) = (raw, make, record);
            let mut each = |fits: bool| {
                for (w, &g) in w.iter_mut().zip(g) {
                    let (v, f) = one(*w, g, fits);
                    record(f);
                    *w = v;
                }
            };
            if self.e >= 16 {
                each(true)
            } else {
                each(false)
            }
        }
    }

    /// [`Nearest16::sub`] two values per step: each pair of raws loaded as one word, both differences in one
    /// `qsub16`. The pairs' values equal `one`'s, which runs only for the events (`record`), unless the sink
    /// ignores them; the odd value's events come first.
    #[cfg(any(gradscope_dsp, test))]
    #[inline(always)]
    pub(crate) fn sub_pairs<S: Copy>(
        &self,
        w: &mut [S],
        g: &[S],
        raw: impl Fn(S) -> i16 + Copy,
        make: impl Fn(i16) -> S + Copy,
        one: impl Fn(S, S, bool) -> (S, Flags),
        record: impl FnMut(Flags),
    ) {
        if self.e >= 16 {
            self.pairs::<S, true>(w, g, raw, make, one, record)
        } else {
            self.pairs::<S, false>(w, g, raw, make, one, record)
        }
    }

    #[cfg(any(gradscope_dsp, test))]
    #[inline(always)]
    fn pairs<S: Copy, const FITS: bool>(
        &self,
        w: &mut [S],
        g: &[S],
        raw: impl Fn(S) -> i16 + Copy,
        make: impl Fn(i16) -> S + Copy,
        one: impl Fn(S, S, bool) -> (S, Flags),
        mut record: impl FnMut(Flags),
    ) {
        let n = w.len().min(g.len());
        let (w, g) = (&mut w[..n], &g[..n]);
        let (wp, wt) = w.as_chunks_mut::<2>();
        let (gp, gt) = g.as_chunks::<2>();
        // The odd value first: nothing is left to do after the loop, so no register holds its place across it.
        if let ([w], [g]) = (wt, gt) {
            let (v, f) = one(*w, *g, FITS);
            record(f);
            *w = v;
        }
        let narrow = |q: i32| {
            if FITS {
                q as i16
            } else {
                q.clamp(i16::MIN as i32, i16::MAX as i32) as i16
            }
        };
        let mut pair = |w: &mut [S; 2], g: &[S; 2]| {
            // One word holds both gradients (the low half first).
            let gw = crate::dsp::pack([raw(g[0]), raw(g[1])]);
            let m = self.m as u32; // `SMLAxB` reads only its low half
            let q0 = self.finish(crate::dsp::smla_half::<false>(gw, m, self.bias));
            let q1 = self.finish(crate::dsp::smla_half::<true>(gw, m, self.bias));
            let d = crate::dsp::qsub16(
                crate::dsp::pack([raw(w[0]), raw(w[1])]),
                crate::dsp::pack([narrow(q0), narrow(q1)]),
            );
            record(one(w[0], g[0], FITS).1);
            record(one(w[1], g[1], FITS).1);
            *w = [make(d as i16), make((d >> 16) as i16)];
        };
        // Two pairs per turn of the loop: one loop branch per four values.
        let (wq, wr) = wp.as_chunks_mut::<2>();
        let (gq, gr) = gp.as_chunks::<2>();
        if let ([w], [g]) = (wr, gr) {
            pair(w, g);
        }
        for ([w0, w1], [g0, g1]) in wq.iter_mut().zip(gq) {
            pair(w0, g0);
            pair(w1, g1);
        }
    }
}

/// The exact product of two raw values as an `i64`, in the narrowest multiplication that holds it: a 16-bit
/// product fits 32 bits, which a Cortex-M0 computes in one instruction instead of a 64-bit library call.
trait RawMul: Copy {
    fn product(a: Self, b: Self) -> i64;
    /// The coefficient mantissa this width multiplies by (see [`Coef`]).
    fn mantissa(c: &Coef) -> (i32, i32);
    /// `a · m`, exact, for a mantissa from [`RawMul::mantissa`]: 32 bits for 16-bit raws.
    fn product_m(a: Self, m: i32) -> i64;

    /// Exact `Σ aᵢ·bᵢ` of each row with `b` (`b_max` is `b`'s [`Scalar::bound`]: at least its largest
    /// magnitude, with bit 15 set exactly when 16-bit values hold −1), where the caller's bound keeps every sum
    /// inside `i64`.
    #[inline(always)]
    fn dots<S: Copy, const R: usize, const N: usize>(
        rows: &[[S; N]; R],
        b: &[S; N],
        _b_max: u64,
        raw: impl Fn(S) -> Self + Copy,
    ) -> [i64; R] {
        let mut out = [0; R];
        for (o, row) in out.iter_mut().zip(rows) {
            *o = fast_dot(row, b, raw);
        }
        out
    }

    /// [`RawMul::dots`], each row's sum handed to `out(row, sum)` in row order.
    #[inline(always)]
    fn dots_each<S: Copy, const R: usize, const N: usize>(
        rows: &[[S; N]; R],
        b: &[S; N],
        b_max: u64,
        raw: impl Fn(S) -> Self + Copy,
        mut out: impl FnMut(usize, i64),
    ) {
        for (k, v) in Self::dots(rows, b, b_max, raw).into_iter().enumerate() {
            out(k, v);
        }
    }

    /// Exact `Σₖ a[i][k]·b[k][j]` into `i64` lanes that arrive at zero (`b_max` as in [`RawMul::dots`]), where
    /// the caller's bound keeps every sum inside `i64`.
    #[inline(always)]
    fn matmul_lanes<S, const R: usize, const K: usize, const N: usize>(
        a: &[[S; K]; R],
        b: &[[S; N]; K],
        _b_max: u64,
        _raw: impl Fn(S) -> Self + Copy,
        lanes: &mut [[i64; N]; R],
    ) where
        S: Scalar<Lane = i64>,
    {
        crate::matrix::matmul_lanes_chunked(a, b, lanes);
    }

    /// Exact `lanes[i] += Σₒ w[o][i]·d[o]` (the lanes may hold a start), where the caller's bound keeps every
    /// sum inside `i64`.
    #[inline(always)]
    fn columns_lanes<S: Copy, const I: usize, const O: usize>(
        w: &[[S; I]; O],
        d: &[S; O],
        raw: impl Fn(S) -> Self + Copy,
        lanes: &mut [i64; I],
    ) {
        wide_columns(w, d, raw, lanes);
    }
}

/// [`RawMul::columns_lanes`] with one `i64` lane per column.
#[inline(always)]
fn wide_columns<S: Copy, T: RawMul, const I: usize, const O: usize>(
    w: &[[S; I]; O],
    d: &[S; O],
    raw: impl Fn(S) -> T + Copy,
    lanes: &mut [i64; I],
) {
    for (row, &dv) in w.iter().zip(d) {
        for (l, &wv) in lanes.iter_mut().zip(row) {
            *l = l.wrapping_add(T::product(raw(wv), raw(dv)));
        }
    }
}

impl RawMul for i32 {
    #[inline(always)]
    fn product(a: i32, b: i32) -> i64 {
        a as i64 * b as i64
    }
    #[inline(always)]
    fn mantissa(c: &Coef) -> (i32, i32) {
        c.mantissa31()
    }
    #[inline(always)]
    fn product_m(a: i32, m: i32) -> i64 {
        a as i64 * m as i64
    }

    /// Two rows at a time share each load of `b` ([`crate::dsp::smlal2`]), each pair's sums handed on before the
    /// next pair starts; the first product of each row is a plain multiply, so no sum starts from a zeroed
    /// register pair.
    #[cfg(gradscope_dsp)]
    #[inline(always)]
    fn dots_each<S: Copy, const R: usize, const N: usize>(
        rows: &[[S; N]; R],
        b: &[S; N],
        _b_max: u64,
        raw: impl Fn(S) -> i32 + Copy,
        mut out: impl FnMut(usize, i64),
    ) {
        let (pairs, tail) = rows.as_chunks::<2>();
        for (k, [r0, r1]) in pairs.iter().enumerate() {
            let mut terms = r0.iter().zip(r1).zip(b);
            let mut s = [0i64; 2];
            if let Some(((a0, a1), bv)) = terms.next() {
                let x = raw(*bv) as i64;
                s = [raw(*a0) as i64 * x, raw(*a1) as i64 * x];
            }
            for ((a0, a1), bv) in terms {
                s = crate::dsp::smlal2(s, [raw(*a0), raw(*a1)], raw(*bv));
            }
            out(2 * k, s[0]);
            out(2 * k + 1, s[1]);
        }
        for (k, row) in tail.iter().enumerate() {
            out(2 * pairs.len() + k, fast_dot(row, b, raw));
        }
    }
}

impl RawMul for i16 {
    #[inline(always)]
    fn product(a: i16, b: i16) -> i64 {
        (a as i32 * b as i32) as i64
    }
    #[inline(always)]
    fn mantissa(c: &Coef) -> (i32, i32) {
        c.mantissa15()
    }
    #[inline(always)]
    fn product_m(a: i16, m: i32) -> i64 {
        // |m| < 2^15: the product fits 32 bits.
        (a as i32).wrapping_mul(m) as i64
    }

    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[inline(always)]
    fn dots<S: Copy, const R: usize, const N: usize>(
        rows: &[[S; N]; R],
        b: &[S; N],
        b_max: u64,
        raw: impl Fn(S) -> i16 + Copy,
    ) -> [i64; R] {
        // Pairs in 32 bits (SSE2's `pmaddwd`) need |aᵢbᵢ + aⱼbⱼ| < 2³¹, true unless b holds −1 (−2¹⁵).
        let mut out = [0; R];
        if b_max >= 1 << 15 || N >= 1 << 16 {
            for (o, row) in out.iter_mut().zip(rows) {
                *o = fast_dot(row, b, raw);
            }
            return out;
        }
        let (blocks, tail) = rows.as_chunks::<4>();
        let (ob, ot) = out.as_chunks_mut::<4>();
        for (o, [r0, r1, r2, r3]) in ob.iter_mut().zip(blocks) {
            *o = pair_dots4([r0, r1, r2, r3], b, raw);
        }
        for (o, row) in ot.iter_mut().zip(tail) {
            *o = pair_dot(row, b, raw);
        }
        out
    }

    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[inline(always)]
    fn matmul_lanes<S, const R: usize, const K: usize, const N: usize>(
        a: &[[S; K]; R],
        b: &[[S; N]; K],
        b_max: u64,
        raw: impl Fn(S) -> i16 + Copy,
        lanes: &mut [[i64; N]; R],
    ) where
        S: Scalar<Lane = i64>,
    {
        // As in `dots`: pair sums fit 32 bits unless b holds −1, and fewer than 2¹⁶ of them keep the low
        // halves' sum below 2³².
        if b_max >= 1 << 15 || K >= 1 << 16 || N < PAIR_MIN_COLS {
            crate::matrix::matmul_lanes_chunked(a, b, lanes);
        } else {
            pair_matmul(a, b, raw, lanes);
        }
    }

    /// From [`PAIR_COLUMNS_MIN`] columns, [`pair_dots4`]'s scheme with one product per step: each product `p`
    /// (|p| ≤ 2³⁰) goes to a wrapping `i32` sum and `p >> 16` to a second, which x86's vectorizer runs four
    /// columns per instruction; fewer than 2¹⁶ rows keep the low halves' sum below 2³² ([`pair_total`]).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[inline(always)]
    fn columns_lanes<S: Copy, const I: usize, const O: usize>(
        w: &[[S; I]; O],
        d: &[S; O],
        raw: impl Fn(S) -> i16 + Copy,
        lanes: &mut [i64; I],
    ) {
        if I < PAIR_COLUMNS_MIN || O >= 1 << 16 {
            return wide_columns(w, d, raw, lanes);
        }
        let (mut sum, mut high) = ([0i32; I], [0i32; I]);
        for (row, &dv) in w.iter().zip(d) {
            let dv = raw(dv) as i32;
            for ((s, h), &wv) in sum.iter_mut().zip(high.iter_mut()).zip(row) {
                let p = raw(wv) as i32 * dv;
                *s = s.wrapping_add(p);
                *h = h.wrapping_add(p >> 16);
            }
        }
        for ((l, s), h) in lanes.iter_mut().zip(sum).zip(high) {
            *l = l.wrapping_add(pair_total(s, h));
        }
    }

    #[cfg(gradscope_dsp)]
    #[inline(always)]
    fn dots<S: Copy, const R: usize, const N: usize>(
        rows: &[[S; N]; R],
        b: &[S; N],
        _b_max: u64,
        raw: impl Fn(S) -> i16 + Copy,
    ) -> [i64; R] {
        crate::dsp::dots(rows, b, raw)
    }

    /// 32-bit sums, two products per `smlad`, redone in 64 bits when one overflows ([`crate::dsp::dots_each`]).
    #[cfg(gradscope_dsp)]
    #[inline(always)]
    fn dots_each<S: Copy, const R: usize, const N: usize>(
        rows: &[[S; N]; R],
        b: &[S; N],
        _b_max: u64,
        raw: impl Fn(S) -> i16 + Copy,
        out: impl FnMut(usize, i64),
    ) {
        crate::dsp::dots_each(rows, b, raw, out);
    }

    /// Two columns' products per loaded word of `w`, each into its 64-bit sum, four columns per pass
    /// ([`crate::dsp::columns`]).
    #[cfg(gradscope_dsp)]
    #[inline(always)]
    fn columns_lanes<S: Copy, const I: usize, const O: usize>(
        w: &[[S; I]; O],
        d: &[S; O],
        raw: impl Fn(S) -> i16 + Copy,
        lanes: &mut [i64; I],
    ) {
        crate::dsp::columns(w, d, raw, lanes);
    }
}

/// Where the 32-bit formats round to nearest-even in the biased form (`round_biased`), measured in
/// instructions against the compare of the remainder with one half. The SGD update's products: fewer on x86_64
/// (the I16F16 4-8-8-1 and 16-32-32-16 steps at batch 1, −7% and −10%) and on the Cortex-M4F
/// (`sgd_update_4-8-8-1` −7%), more on the Cortex-M0, whose 64-bit shifts are library calls (`sgd_values_128`
/// +3.6%).
const BIASED_UPDATE: bool = cfg!(any(gradscope_dsp, not(target_os = "none")));
/// The kernels' narrowing of an exact sum: fewer on x86_64 (the I16F16 16-32-32-16 tiled step at batch 32
/// −14%) and, since the biased form wraps instead of testing for overflow
/// ([`crate::round::nearest_even_wrapping64`]), on the Cortex-M4F (`matvec16x16` I16F16 1,080 → 1,040 with the
/// two-row blocks; with the test it measured +5%). The Cortex-M0 keeps the compare of the remainder: with the
/// biased form its 4-8-8-1 steps took more (I16F16 52,820 → 52,882, I8F24 54,757 → 55,171).
const BIASED_NARROW: bool = cfg!(any(gradscope_dsp, not(target_os = "none")));

/// `m · 2^−frac` rounded to nearest-even (exact when `m < 2⁵³`), for `frac ≤ 128`: the value of
/// `m as f64 · 2^−frac`, assembled from the leading one's place and the bits below it, where a microcontroller
/// converts and multiplies in library calls (the M4F's FPU is single precision). The inverse of `from_f64`'s
/// reading.
#[inline]
fn f64_of_u64(m: u64, frac: u32) -> f64 {
    if m == 0 {
        return 0.0;
    }
    let top = 63 - m.leading_zeros();
    // The significand with its leading one at bit 52, rounded; a carry out of bit 52 moves the exponent up.
    let q = match top.checked_sub(52) {
        None | Some(0) => m << (52 - top),
        Some(s) => {
            let (q, rem, half) = (m >> s, m & ((1 << s) - 1), 1 << (s - 1));
            q + (rem > half || (rem == half && q & 1 == 1)) as u64
        }
    };
    // The leading one adds one to the exponent field: hence 1022 for the bias 1023.
    f64::from_bits((((1022 + top - frac) as u64) << 52) + q)
}

/// `raw · 2^−frac` (`frac ≤ 128`), exactly: [`f64_of_u64`] with a sign.
#[inline]
fn f64_of_raw(raw: i32, frac: u32) -> f64 {
    let v = f64_of_u64(raw.unsigned_abs() as u64, frac);
    f64::from_bits(v.to_bits() | ((raw < 0) as u64) << 63)
}

/// `v / 2^s` rounded to nearest, ties to even (`1 ≤ s ≤ 15`), as `(v + 2^(s−1) − 1 + bit_s(v)) >> s`: with
/// `q = ⌊v / 2^s⌋`, the bias carries the remainder into the next multiple of 2^s exactly when it exceeds one half,
/// or equals it and `q` is odd. The add saturates: where `v + 2^(s−1)` overflows `i32` the result is
/// `2^(31−s) − 1` instead of the quotient, both above every 16-bit format's range, so the format's saturation
/// gives the same value. On a Cortex-M4 the add is one `QADD`, where the exact form tests for the overflow and
/// branches (`matvec16x16` I1F15 707 → 660 instructions).
#[inline(always)]
fn sat_nearest_even32(v: i32, s: u32) -> i32 {
    sat_biased32(v, s) >> s
}

use crate::qflag::{q_raise, ssat16_shr};

/// [`sat_nearest_even32`] before its shift: what the Cortex-M4's `SSAT … asr #s` takes.
#[inline(always)]
fn sat_biased32(v: i32, s: u32) -> i32 {
    v.saturating_add((1 << (s - 1)) - 1 + ((v >> s) & 1))
}

/// Exact dot products of 16-bit raws in 32-bit lanes, the shape x86's loop vectorizer turns into `pmaddwd`:
/// each step adds one pair sum `p = a₂ₖb₂ₖ + a₂ₖ₊₁b₂ₖ₊₁` (|p| < 2³¹) to a wrapping sum `S` and `p >> 16` to `H`.
/// The exact total `T` is then `2¹⁶H + L` with `0 ≤ L < 2³²` (L sums the low halves, fewer than 2¹⁶ of them),
/// and `L ≡ S − 2¹⁶H (mod 2³²)` recovers it. Four rows share each load of `b`; the length is hidden from the
/// optimizer ([`hidden_even_len`]).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn pair_dots4<S: Copy, const N: usize>(
    rows: [&[S; N]; 4],
    b: &[S; N],
    raw: impl Fn(S) -> i16 + Copy,
) -> [i64; 4] {
    let pair = |x: &[S], y: &[S]| -> i32 {
        match (x, y) {
            ([x0, x1], [y0, y1]) => {
                (raw(*x0) as i32 * raw(*y0) as i32).wrapping_add(raw(*x1) as i32 * raw(*y1) as i32)
            }
            _ => 0,
        }
    };
    let n = hidden_even_len::<N>();
    let ([r0, r1, r2, r3], bs) = (rows.map(|r| cut(r, n)), cut(b, n));
    let (mut sum, mut high) = ([0i32; 4], [0i32; 4]);
    for ((((a0, a1), a2), a3), y) in r0
        .chunks_exact(2)
        .zip(r1.chunks_exact(2))
        .zip(r2.chunks_exact(2))
        .zip(r3.chunks_exact(2))
        .zip(bs.chunks_exact(2))
    {
        let p = [pair(a0, y), pair(a1, y), pair(a2, y), pair(a3, y)];
        for k in 0..4 {
            sum[k] = sum[k].wrapping_add(p[k]);
            high[k] = high[k].wrapping_add(p[k] >> 16);
        }
    }
    let mut out = [0i64; 4];
    for (((o, s), h), row) in out.iter_mut().zip(sum).zip(high).zip(rows) {
        *o = pair_total(s, h) + odd_tail(row, b, raw);
    }
    out
}

/// `N` rounded down to even, hidden from the optimizer: a loop of runtime length is what x86's loop vectorizer
/// turns into `pmaddwd` (at a constant length it unrolls into scalar code instead). Only the length is hidden,
/// so the slices cut to it are known to be equally long, and the odd tail is found at compile time.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn hidden_even_len<const N: usize>() -> usize {
    core::hint::black_box(N - N % 2)
}

/// The first `n` values of `r` (none if `n` is past its end, which [`hidden_even_len`] never is).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn cut<S, const N: usize>(r: &[S; N], n: usize) -> &[S] {
    r.get(..n).unwrap_or(&[])
}

/// [`pair_dots4`] for one row.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn pair_dot<S: Copy, const N: usize>(
    row: &[S; N],
    b: &[S; N],
    raw: impl Fn(S) -> i16 + Copy,
) -> i64 {
    let n = hidden_even_len::<N>();
    let (rs, bs) = (cut(row, n), cut(b, n));
    let (mut s, mut h) = (0i32, 0i32);
    for (x, y) in rs.chunks_exact(2).zip(bs.chunks_exact(2)) {
        if let ([x0, x1], [y0, y1]) = (x, y) {
            let p =
                (raw(*x0) as i32 * raw(*y0) as i32).wrapping_add(raw(*x1) as i32 * raw(*y1) as i32);
            s = s.wrapping_add(p);
            h = h.wrapping_add(p >> 16);
        }
    }
    pair_total(s, h) + odd_tail(row, b, raw)
}

/// The fewest columns for which [`pair_matmul`] costs fewer instructions than the `i64` lanes, chosen from
/// callgrind counts of square products from 4 to 64 on x86_64 (rustc 1.95): none fewer at 16, more at 4 and
/// 8, where interleaving the pairs is most of the work. `benches/instructions.rs` counts the 32×32 product.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const PAIR_MIN_COLS: usize = 32;

/// The fewest columns for which x86's transposed product takes the 32-bit sums (`RawMul::columns_lanes` for
/// 16-bit raws): callgrind counts of one `matvec_t` in I1F15, `i64` lanes → 32-bit sums, columns × rows:
/// 32 × 32 4,121 → 2,919 and 32 × 16 2,457 → 1,795, but 16 × 16 1,305 → 1,811, 16 × 32 2,201 → 2,927, 8 × 8
/// 445 → 499 and 4 × 8 200 → 308 (rustc 1.95; one call each, counted outside the benches).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const PAIR_COLUMNS_MIN: usize = 32;

/// Exact `A B` of 16-bit raws by [`pair_dots4`]'s scheme along `k`: rows `k` and `k + 1` of `b` are
/// interleaved into pairs once, and each row of `a` adds, per element, the pair sum
/// `a[i][k]·b[k][j] + a[i][k+1]·b[k+1][j]` (|p| < 2³¹ when `a` or `b` holds no −1) to a wrapping sum and its
/// high half to a second ([`pair_axpy`]). An odd `K` pairs its last row with zeros.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn pair_matmul<S: Copy, const R: usize, const K: usize, const N: usize>(
    a: &[[S; K]; R],
    b: &[[S; N]; K],
    raw: impl Fn(S) -> i16 + Copy,
    out: &mut [[i64; N]; R],
) {
    let (mut sum, mut high) = ([[0i32; N]; R], [[0i32; N]; R]);
    let mut q = [[0i16; 2]; N];
    for k in (0..K).step_by(2) {
        let (b0, b1) = (b.get(k), b.get(k + 1));
        for (j, qj) in q.iter_mut().enumerate() {
            let at = |row: Option<&[S; N]>| row.and_then(|r| r.get(j)).map_or(0, |&v| raw(v));
            *qj = [at(b0), at(b1)];
        }
        for ((s, h), arow) in sum.iter_mut().zip(high.iter_mut()).zip(a) {
            let at = |k: usize| arow.get(k).map_or(0, |&v| raw(v));
            let w = [[at(k), at(k + 1)]; N];
            pair_axpy(&w, &q, s, h);
        }
    }
    for ((orow, s), h) in out.iter_mut().zip(sum).zip(high) {
        for ((o, s), h) in orow.iter_mut().zip(s).zip(h) {
            *o = pair_total(s, h);
        }
    }
}

/// `sⱼ += pⱼ` (wrapping) and `hⱼ += pⱼ >> 16` for the pair sums `pⱼ = wⱼ·qⱼ` (two products each): the shape of
/// [`pair_dot`], which x86's loop vectorizer turns into `pmaddwd`, out of line so that the slices do not alias.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(never)]
fn pair_axpy(w: &[[i16; 2]], q: &[[i16; 2]], s: &mut [i32], h: &mut [i32]) {
    for (((&[w0, w1], &[q0, q1]), s), h) in w.iter().zip(q).zip(s).zip(h) {
        let p = (w0 as i32 * q0 as i32).wrapping_add(w1 as i32 * q1 as i32);
        *s = s.wrapping_add(p);
        *h = h.wrapping_add(p >> 16);
    }
}

/// The exact sum from the wrapping sum `s` of the pairs and the sum `h` of their high halves.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn pair_total(s: i32, h: i32) -> i64 {
    let low = (s as u32).wrapping_sub((h as u32) << 16);
    ((h as i64) << 16) + low as i64
}

/// The last product of an odd-length dot product (zero for even lengths).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn odd_tail<S: Copy>(row: &[S], b: &[S], raw: impl Fn(S) -> i16) -> i64 {
    match (row.as_chunks::<2>().1, b.as_chunks::<2>().1) {
        ([x], [y]) => i16::product(raw(*x), raw(*y)),
        _ => 0,
    }
}

/// `Σ aᵢ·bᵢ` of raw fixed-point values in a wrapping `i64` (exact whenever the caller's bound says it cannot
/// wrap). On a Cortex-M4 the unrolled loop is one multiply-accumulate into 64 bits per product (`smlal`,
/// `smlalbb`); 16-bit raws there take two per `smlald` instead (`crate::dsp`), since LLVM's parallel-DSP pass
/// forms `smlald` only in a runtime-length loop whose overhead cost more than the halved multiplies saved.
#[inline(always)]
fn fast_dot<S: Copy, T: RawMul>(a: &[S], b: &[S], raw: impl Fn(S) -> T) -> i64 {
    a.iter().zip(b).fold(0i64, |s, (&x, &y)| {
        s.wrapping_add(T::product(raw(x), raw(y)))
    })
}

/// An exact `v · 2^−frac` as an `i64` at possibly fewer fraction bits: dropped bits are OR-ed into the lowest
/// kept bit (sticky), so rounding the result gives the same answer as rounding `v` (stochastic rounding: to
/// within 2⁻⁶² relative).
#[inline]
pub(crate) fn reduce(v: i128, frac: u32) -> (i64, u32) {
    // The common case, without a 128-bit leading-zero count (four library calls on a Cortex-M0).
    if let Ok(n) = i64::try_from(v)
        && n.unsigned_abs() < 1 << 62
    {
        return (n, frac);
    }
    // k >= 1 here: |v| >= 2^62.
    let k = (128 - v.unsigned_abs().leading_zeros()) - 62;
    if k > frac {
        // Beyond 2^62 in integer units: saturates every format.
        return (if v < 0 { -(1i64 << 62) } else { 1i64 << 62 }, 0);
    }
    let sticky = (v & ((1i128 << k) - 1) != 0) as i64;
    ((v >> k) as i64 | sticky, frac - k)
}

macro_rules! fixed_family {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $wide:ty, $bits:literal, $guard:literal, $names:expr, $other_inline:meta) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize))]
        pub struct $name<const F: u32>($raw);

        impl<const F: u32> $name<F> {
            /// [`Scalar::sub_scaled`] for the coefficients `Nearest16` does not take. For 16-bit raws out of
            /// line (the macro's last argument): the update's common path then stays small, with less to set up per
            /// tensor (measured by `sgd_update_4-8-8-1` in `firmware/src/bin/costs.rs`); 32-bit raws, for which
            /// this is the common path, keep it inline.
            #[$other_inline]
            fn sub_scaled_other<R: Rounding + ?Sized>(
                w: &mut [Self],
                g: &[Self],
                c: &Coef,
                m: i32,
                e: i32,
                r: &mut R,
                mut record: impl FnMut(Flags),
            ) {
                // The other common coefficients, prepared once: `scale_by`'s path for them, per value.
                let e = match u32::try_from(e) {
                    Ok(e) if c.is_finite() && e <= 62 => e,
                    _ => return crate::scalar::sub_scaled_each(w, g, c, r, record),
                };
                let values = w.iter_mut().zip(g);
                if $bits == 16 && e <= 31 {
                    // 16-bit raws: the product fits 32 bits.
                    for (w, &g) in values {
                        let p = <$raw as RawMul>::product_m(g.0, m) as i32;
                        let (d, f1) = Self::round32::<true, R>(p, e, r);
                        let (v, f2) = w.sub(d);
                        record(f1 | f2);
                        *w = v;
                    }
                } else if $bits == 32
                    && BIASED_UPDATE
                    && e >= 1
                    && r.nearest_even()
                {
                    // |g·m| <= 2^62: `round_biased`'s condition at every shift.
                    for (w, &g) in values {
                        let p = <$raw as RawMul>::product_m(g.0, m);
                        let (d, f1) = Self::round_biased::<true, false>(p, e);
                        let (v, f2) = w.sub(d);
                        record(f1 | f2);
                        *w = v;
                    }
                } else {
                    for (w, &g) in values {
                        let p = <$raw as RawMul>::product_m(g.0, m);
                        let (d, f1) = Self::round_wide(p, e, r);
                        let (v, f2) = w.sub(d);
                        record(f1 | f2);
                        *w = v;
                    }
                }
            }
            const VALID: () = assert!(F < $bits, "fraction bits must be fewer than the storage bits");
            /// Fraction bits.
            pub const FRAC_BITS: u32 = F;
            /// Value of one least significant bit, `2^−F`.
            pub const LSB: f64 = 1.0 / (1u64 << F) as f64;
            /// Most negative value.
            pub const MIN: Self = Self(<$raw>::MIN);
            /// Largest value.
            pub const MAX: Self = Self(<$raw>::MAX);
            /// Zero.
            pub const ZERO: Self = Self(0);
            /// The smallest positive value, one LSB.
            pub const DELTA: Self = Self(1);

            /// The value whose raw representation is `bits` (value = `bits · 2^−F`).
            #[inline]
            pub const fn from_bits(bits: $raw) -> Self {
                let () = Self::VALID;
                Self(bits)
            }

            /// The raw representation.
            #[inline]
            pub const fn to_bits(self) -> $raw {
                self.0
            }

            /// Clamp an exact raw value to the range; saturation is an overflow and loses information.
            #[inline]
            fn saturate(v: i64) -> (Self, Flags) {
                Self::fit(v, v)
            }

            /// [`Self::saturate`] of a `q` that may have wrapped where it is out of range: the bound on the side
            /// of `sign`, which has not.
            #[inline(always)]
            fn fit(q: i64, sign: i64) -> (Self, Flags) {
                let () = Self::VALID;
                // In range exactly when the truncation sign-extends back to `q`: one compare of the high
                // word with the low word's sign on a 32-bit core, where a clamp compares 64 bits twice.
                let t = q as $raw;
                if t as i64 == q {
                    (Self(t), Flags::NONE)
                } else if $bits == 16 {
                    // Inline: out of line, the host's I1F15 4-8-8-1 step took 16% more instructions
                    // (`benches/instructions.rs`), while every 32-bit step counted there and on both cores
                    // took fewer than with the branch inline.
                    (Self::saturation(sign), Flags::OVERFLOW | Flags::INEXACT)
                } else {
                    // The flags stay here, constants the caller can see: a sink that keeps only some events
                    // (the training step's) then tests none of the others.
                    (Self::saturated(sign), Flags::OVERFLOW | Flags::INEXACT)
                }
            }

            /// [`Self::saturate`] of a `v` out of range, for 32-bit raws: out of line, so that no caller's loop
            /// turns the rare branch into selects computed for every value.
            #[cold]
            #[inline(never)]
            fn saturated(v: i64) -> Self {
                Self::saturation(v)
            }

            /// The bound nearest to an out-of-range `v`.
            #[inline(always)]
            fn saturation(v: i64) -> Self {
                Self(if v < 0 { <$raw>::MIN } else { <$raw>::MAX })
            }

            /// [`Self::saturate`] in the narrowest type that holds a sum of two raw values (`i32` for 16-bit
            /// raws: a Cortex-M0 compares 64-bit values in several instructions).
            #[inline]
            fn saturate_w(v: $wide) -> (Self, Flags) {
                let c = if v > <$raw>::MAX as $wide {
                    <$raw>::MAX
                } else if v < <$raw>::MIN as $wide {
                    <$raw>::MIN
                } else {
                    v as $raw
                };
                (Self(c), Flags::when(c as $wide != v, Flags::OVERFLOW | Flags::INEXACT))
            }

            /// [`Self::round_wide`] of a 32-bit value shifted by `s <= 31`, in 32-bit arithmetic. With `ALL`
            /// false, only the saturation's flags (a value's own events, what a watching probe keeps).
            #[inline]
            fn round32<const ALL: bool, R: Rounding + ?Sized>(v: i32, s: u32, r: &mut R) -> (Self, Flags) {
                let q = if $bits == 16 && cfg!(gradscope_dsp) && (1..=15).contains(&s) && r.nearest_even() {
                    sat_nearest_even32(v, s)
                } else {
                    r.shr32(v, s)
                };
                let (out, f) = Self::saturate_w(q as $wide);
                if !ALL {
                    return (out, f);
                }
                let dropped = (v as u32) & ((1u32 << s) - 1) != 0;
                // A non-zero value rounded to zero had bits dropped (an exact one keeps its non-zero quotient),
                // so the dropped bits' test stands in for `v != 0`.
                let f = f
                    | Flags::when(dropped, Flags::INEXACT)
                    | Flags::when(dropped && out.0 == 0, Flags::UNDERFLOW);
                (out, f)
            }

            /// Round `v · 2^−s` (raw units) to the grid, saturate, flag.
            #[inline]
            fn round_wide<R: Rounding + ?Sized>(v: i64, s: u32, r: &mut R) -> (Self, Flags) {
                Self::round_wide_as::<true, R>(v, s, r)
            }

            /// [`Self::round_wide`], with `ALL` false flagging only a saturation (as [`Self::round32`]).
            #[inline]
            fn round_wide_as<const ALL: bool, R: Rounding + ?Sized>(
                v: i64,
                s: u32,
                r: &mut R,
            ) -> (Self, Flags) {
                // 16-bit formats: 32-bit rounding where the value fits 32 bits (a Cortex-M0 has no 64-bit
                // shifts), the same result and the same random draws as `round64`.
                // `v` fits 32 bits when its high word is its low word's sign. Written on the halves, the M4F's
                // test is `adds`/`adcs`/`bne`; from `i32::try_from` LLVM emitted `adds`/`sbc`/`mov`/`cmp`/`bhs`
                // (M4F `matvec16x16` I1F15 660 → 620; the M0's 2,945 → 2,976, its steps within 0.1%).
                let lo = v as i32;
                if $bits == 16 && s <= 31 && (v >> 32) as i32 == lo >> 31 {
                    return Self::round32::<ALL, R>(lo, s, r);
                }
                Self::round64::<ALL, R>(v, s, r)
            }

            /// [`Self::round64`] under [`NearestEven`](crate::round::NearestEven) in the biased form
            /// ([`crate::round::nearest_even_wrapping64`]), without the compare of the remainder with one half.
            /// With `WRAPS`, for any `v` and `1 ≤ s ≤ 31`: where `v` lies within 2^(s−1) of `i64::MAX` the bias
            /// wraps the sum, the quotient −2^(63−s) is below every format's range, and the saturation goes by
            /// `v`'s sign. Without, for `|v| ≤ 2^62` and `1 ≤ s ≤ 62`, where nothing wraps. The dropped bits' test stands in for
            /// `v != 0`, as in [`Self::round32`] (and, with `ALL` false, flags only a saturation as it does).
            #[inline(always)]
            fn round_biased<const ALL: bool, const WRAPS: bool>(v: i64, s: u32) -> (Self, Flags) {
                let q = crate::round::nearest_even_wrapping64(v, s);
                // Without a wrap, an out-of-range `q` has `v`'s sign; testing `v`'s sign only where `v` may wrap
                // keeps it out of the registers elsewhere (the host's I16F16 steps at batch 1: 1–2% fewer instructions).
                let (out, f) = if WRAPS {
                    Self::fit(q, v)
                } else {
                    Self::saturate(q)
                };
                if !ALL {
                    return (out, f);
                }
                let dropped = (v as u64) & ((1u64 << s) - 1) != 0;
                (
                    out,
                    f | Flags::when(dropped, Flags::INEXACT)
                        | Flags::when(dropped && out.0 == 0, Flags::UNDERFLOW),
                )
            }

            /// [`Self::round_wide`] in 64-bit arithmetic (`ALL` as in [`Self::round32`]).
            #[inline]
            fn round64<const ALL: bool, R: Rounding + ?Sized>(v: i64, s: u32, r: &mut R) -> (Self, Flags) {
                let q = r.shr(v, s);
                let (out, f) = Self::saturate(q);
                if !ALL {
                    return (out, f);
                }
                let dropped = s > 0 && (v as u64) & ((1u64 << s.min(62)) - 1) != 0;
                let f = f
                    | Flags::when(dropped, Flags::INEXACT)
                    | Flags::when(v != 0 && out.0 == 0, Flags::UNDERFLOW);
                (out, f)
            }
        }

        impl<const F: u32> $name<F> {
            /// [`Fixed::from_wide`], with `ALL` false flagging only a saturation (as [`Self::round32`]).
            #[inline(always)]
            fn from_wide_as<const ALL: bool, R: Rounding + ?Sized>(
                v: i64,
                frac: u32,
                r: &mut R,
            ) -> (Self, Flags) {
                if frac >= F {
                    Self::round_wide_as::<ALL, R>(v, frac - F, r)
                } else {
                    // Exact left shift, saturating (any |v| >= 2^62 saturates every format anyway).
                    let shifted = (v as i128) << (F - frac).min(64);
                    Self::saturate(shifted.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
                }
            }

            /// [`Fixed::from_ratio`], with `ALL` false flagging only a saturation or a division by zero.
            #[inline(always)]
            fn from_ratio_as<const ALL: bool, R: Rounding + ?Sized>(
                num: i64,
                den: i64,
                r: &mut R,
            ) -> (Self, Flags) {
                if den <= 0 {
                    return (Self(0), Flags::NONFINITE);
                }
                let (q, rem) = (num.div_euclid(den), num.rem_euclid(den));
                let (v, f) = Self::saturate(r.round_frac(q, rem as u64, den as u64));
                if !ALL {
                    return (v, f);
                }
                let f = f
                    | Flags::when(rem != 0, Flags::INEXACT)
                    | Flags::when(num != 0 && v.0 == 0, Flags::UNDERFLOW);
                (v, f)
            }

            /// [`Scalar::narrow`], with `ALL` false flagging only a saturation (as [`Self::round32`]).
            #[inline]
            fn narrow_as<const ALL: bool, R: Rounding + ?Sized>(acc: WideAcc, r: &mut R) -> (Self, Flags) {
                // Beyond i64 every format saturates: clamp first (the sign is all that matters).
                let v = i64::try_from(acc.value)
                    .unwrap_or(if acc.value < 0 { i64::MIN } else { i64::MAX });
                if $bits == 32 && BIASED_NARROW && F >= 1 && r.nearest_even() {
                    // F <= 31: any sum.
                    return Self::round_biased::<ALL, true>(v, F);
                }
                Self::round_wide_as::<ALL, R>(v, F, r)
            }
        }

        impl<const F: u32> Scalar for $name<F> {
            type Acc = WideAcc;
            type SqAcc = u128;
            const NAME: &'static str = $names[F as usize];
            const ZERO: Self = Self(0);
            const MIN: Self = Self(<$raw>::MIN);
            const MAX: Self = Self(<$raw>::MAX);
            const RESOLUTION: f64 = Self::LSB;
            const SMALLEST: f64 = Self::LSB;
            const IS_FLOAT: bool = false;
            const STICKY_SATURATION: bool = $bits == 16 && cfg!(gradscope_dsp) && F >= 1;
            const ROW_BLOCK: usize = if $bits == 16 && cfg!(gradscope_dsp) { 4 } else { 0 };

            #[inline]
            fn acc_zero() -> WideAcc {
                WideAcc::default()
            }
            #[inline]
            fn mac(acc: WideAcc, a: Self, b: Self) -> WideAcc {
                // |a·b| <= 2^(2·bits−2) fits i64 for both families (and i32 for i16 raws).
                acc.add(<$raw as RawMul>::product(a.0, b.0) as i128)
            }
            #[inline]
            fn acc_add(acc: WideAcc, x: Self) -> WideAcc {
                // x at 2F fraction bits; |x| < 2^(bits−1+F) <= 2^62.
                acc.add(((x.0 as i64) << F) as i128)
            }
            #[inline]
            fn acc_merge(a: WideAcc, b: WideAcc) -> WideAcc {
                a.add(b.value)
            }
            #[inline]
            fn narrow<R: Rounding + ?Sized>(acc: WideAcc, r: &mut R) -> (Self, Flags) {
                Self::narrow_as::<true, R>(acc, r)
            }
            // A narrowing's own event is its saturation: the flags of dropped bits and of underflow are left
            // out, so a kernel that only watches does not compute them (the compiler did not drop them when
            // they were only masked away afterwards).
            #[inline]
            fn narrow_watched<R: Rounding + ?Sized>(acc: WideAcc, r: &mut R) -> (Self, Flags) {
                Self::narrow_as::<false, R>(acc, r)
            }
            #[inline]
            fn narrow_sticky<R: Rounding + ?Sized>(acc: WideAcc, r: &mut R) -> Self {
                if !(Self::STICKY_SATURATION && r.nearest_even()) {
                    return Self::narrow(acc, r).0;
                }
                // `round32`'s nearest-even narrowing, its shift and saturation in one `SSAT`, which sets Q when
                // it saturates. A sum beyond 32 bits saturates at any F < 16 (|v·2^−F| >= 2^16), where Q is set
                // by hand.
                let v = i64::try_from(acc.value).unwrap_or(if acc.value < 0 { i64::MIN } else { i64::MAX });
                let lo = v as i32;
                if (v >> 32) as i32 == lo >> 31 {
                    return Self(ssat16_shr(sat_biased32(lo, F), F) as $raw);
                }
                q_raise();
                Self::saturation(v)
            }

            fn narrow_mean<R: Rounding + ?Sized>(acc: WideAcc, n: u32, r: &mut R) -> (Self, Flags) {
                // The sum is at 2F fraction bits: the mean in raw units is value / (n·2^F), < 2^63 as a divisor.
                let den = (n.max(1) as i128) << F;
                let (q, rem) = (acc.value.div_euclid(den), acc.value.rem_euclid(den));
                let q = i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX });
                let (v, f) = Self::saturate(r.round_frac(q, rem as u64, den as u64));
                let f = f
                    | Flags::when(rem != 0, Flags::INEXACT)
                    | Flags::when(acc.value != 0 && v.0 == 0, Flags::UNDERFLOW);
                (v, f)
            }

            type Lane = i64;
            const LANE_ZERO: i64 = 0;
            #[inline(always)]
            fn lane_mac(lane: i64, a: Self, b: Self) -> i64 {
                // Only used where `quiet` proved the sum fits: wrapping is never reached.
                lane.wrapping_add(<$raw as RawMul>::product(a.0, b.0))
            }
            #[inline(always)]
            fn lane_add(a: i64, b: i64) -> i64 {
                a.wrapping_add(b)
            }
            #[inline(always)]
            fn lane_of(x: Self) -> i64 {
                // At 2F fraction bits; |x·2^F| < 2^(bits−1+F) ≤ 2^62.
                (x.0 as i64) << F
            }
            #[inline(always)]
            fn lane_acc(lane: i64) -> WideAcc {
                WideAcc {
                    value: lane as i128,
                }
            }

            // Integer sums are exact in any order, so the shape is each target's best.
            #[inline(always)]
            fn dots_fast<const R: usize, const N: usize>(
                rows: &[[Self; N]; R],
                b: &[Self; N],
                b_bound: u64,
            ) -> [i64; R] {
                <$raw as RawMul>::dots(rows, b, b_bound, |v: Self| v.0)
            }

            #[inline(always)]
            fn dots_fast_each<const R: usize, const N: usize>(
                rows: &[[Self; N]; R],
                b: &[Self; N],
                b_bound: u64,
                out: impl FnMut(usize, i64),
            ) {
                <$raw as RawMul>::dots_each(rows, b, b_bound, |v: Self| v.0, out);
            }

            #[inline(always)]
            fn matmul_lanes<const R: usize, const K: usize, const N: usize>(
                a: &[[Self; K]; R],
                b: &[[Self; N]; K],
                b_bound: u64,
                lanes: &mut [[i64; N]; R],
            ) {
                <$raw as RawMul>::matmul_lanes(a, b, b_bound, |v: Self| v.0, lanes);
            }

            #[inline(always)]
            fn columns_lanes<const I: usize, const O: usize>(
                w: &[[Self; I]; O],
                d: &[Self; O],
                lanes: &mut [i64; I],
            ) {
                <$raw as RawMul>::columns_lanes(w, d, |v: Self| v.0, lanes);
            }

            type Bound = u64;
            const ANY: u64 = 1u64 << ($bits - 1);
            #[inline]
            fn bound(x: &[Self]) -> u64 {
                // The magnitudes' bitwise OR: at least the largest (and below twice it), in one OR per value
                // where a maximum takes a compare and a select (two 64-bit compares on a 32-bit core). Only
                // −1 in a 16-bit format has magnitude 2^15, so bit 15 is set exactly when it is there, as
                // the x86 Q15 kernels ask (`RawMul::dots`).
                x.iter().fold(0, |m, v| m | v.0.unsigned_abs()) as u64
            }
            #[inline]
            fn quiet(a: u64, b: u64, n: usize) -> bool {
                // Every lane's partial sum is at most n·max|a|·max|b| in magnitude; below 2^62 there is room
                // for one more term of up to 2^62 (a starting value, or a product) without wrapping.
                (a as u128) * (b as u128) * (n as u128) < 1u128 << 62
            }
            #[inline]
            fn add(self, rhs: Self) -> (Self, Flags) {
                Self::saturate_w(self.0 as $wide + rhs.0 as $wide)
            }
            #[inline]
            fn sub(self, rhs: Self) -> (Self, Flags) {
                Self::saturate_w(self.0 as $wide - rhs.0 as $wide)
            }
            #[inline]
            fn neg(self) -> (Self, Flags) {
                Self::saturate_w(-(self.0 as $wide))
            }
            #[inline]
            fn mul<R: Rounding + ?Sized>(self, rhs: Self, r: &mut R) -> (Self, Flags) {
                Self::round_wide(self.0 as i64 * rhs.0 as i64, F, r)
            }
            #[inline]
            fn from_f64<R: Rounding + ?Sized>(x: f64, r: &mut R) -> (Self, Flags) {
                if x.is_nan() {
                    return (Self(0), Flags::NONFINITE);
                }
                // t = x·2^(F+G) = ±m·2^k from the bits, in integers: a microcontroller's f64 operations are
                // library calls (the M4F's FPU is single precision).
                let bits = x.to_bits();
                let exp = (bits >> 52 & 0x7ff) as i32;
                let mantissa = bits & ((1u64 << 52) - 1);
                let m = if exp == 0 { mantissa } else { mantissa | 1 << 52 };
                let k = exp.max(1) - 1075 + (F + $guard) as i32;
                let negative = bits >> 63 != 0;
                // |x|·2^F >= 2^bits, where no rounding can bring it back in range (also ±∞): 2^52 <= m < 2^53.
                if exp != 0 && k >= $bits + $guard - 52 {
                    let (v, f) = Self::saturate(if negative { i64::MIN } else { i64::MAX });
                    return (v, f | Flags::when(exp == 0x7ff, Flags::NONFINITE));
                }
                // Exact value in units of 2^−(F+G); G guard bits keep |t| < 2^61. One more bit carries
                // "something below was non-zero" (sticky), so nearest-even sees ties exactly: `wide` is
                // 2·floor(t) + sticky.
                let (whole, sticky) = match u32::try_from(-k) {
                    Err(_) => (m << k, false),
                    Ok(s) if s >= 64 => (0, m != 0),
                    Ok(s) => (m >> s, m & ((1u64 << s) - 1) != 0),
                };
                // |t| < 2^61 here, so `whole` fits; floor rounds a negative t with dropped bits down.
                let floor = if negative {
                    -(whole as i64) - sticky as i64
                } else {
                    whole as i64
                };
                let wide = floor * 2 + sticky as i64;
                // `wide` is non-zero for every non-zero x (the sticky bit), so UNDERFLOW is exact too.
                Self::round_wide(wide, $guard + 1, r)
            }
            #[inline]
            fn scale_by<R: Rounding + ?Sized>(self, c: &Coef, r: &mut R) -> (Self, Flags) {
                if !c.is_finite() {
                    return (Self(0), Flags::NONFINITE);
                }
                let (m, e) = <$raw as RawMul>::mantissa(c);
                // Exact: |raw · m| < 2^(bits−1) · 2^(bits−1) fits the product type.
                let p = <$raw as RawMul>::product_m(self.0, m);
                match u32::try_from(e) {
                    // Rounding shifts at most 62 places: beyond, |p| < 2^62 makes the value below ½ LSB, and
                    // a sticky bit keeps its sign and that it is not zero, all any rounding mode needs.
                    Ok(e) if e > 62 => {
                        let k = (e - 62).min(63);
                        let sticky = (p as u64 & ((1u64 << k) - 1) != 0) as i64;
                        <Self as Fixed>::from_wide((p >> k) | sticky, F + 62, r)
                    }
                    Ok(e) => Self::round_wide(p, e, r),
                    // ĉ ≥ 2^(bits−1) in value: every non-zero product saturates.
                    Err(_) => Self::saturate(p.saturating_mul(1 << 40)),
                }
            }
            #[inline]
            fn sub_scaled<R: Rounding + ?Sized>(
                w: &mut [Self],
                g: &[Self],
                c: &Coef,
                r: &mut R,
                record: impl FnMut(Flags),
            ) {
                let (m, e) = <$raw as RawMul>::mantissa(c);
                // An exponent in 1..=31 comes only from a finite, non-zero coefficient.
                if $bits == 16 && (1..=31).contains(&e) && r.nearest_even() {
                    // |m·g| < 2³⁰: `Nearest16` rounds it in four steps, draws nothing, and the same values
                    // come out in any grouping (pairs on a Cortex-M4/M7).
                    let n = Nearest16::new(m, e as u32);
                    let one = |w: Self, g: Self, fits: bool| {
                        let (q, dropped) = n.round(g.0 as i16);
                        let (d, f) = if fits {
                            (Self(q as $raw), Flags::NONE)
                        } else {
                            Self::saturate_w(q as $wide)
                        };
                        let f = f
                            | Flags::when(dropped, Flags::INEXACT)
                            | Flags::when(dropped && d.0 == 0, Flags::UNDERFLOW);
                        let (v, f2) = w.sub(d);
                        (v, f | f2)
                    };
                    let raw = |v: Self| v.0 as i16;
                    let make = |v: i16| Self(v as $raw);
                    return n.sub(w, g, raw, make, one, record);
                }
                Self::sub_scaled_other(w, g, c, m, e, r, record)
            }
            #[inline]
            fn to_f64(self) -> f64 {
                // A host converts and multiplies in an instruction each; a microcontroller, without a
                // double-precision FPU, calls the library for both.
                if cfg!(target_os = "none") {
                    f64_of_raw(self.0 as i32, F)
                } else {
                    self.0 as f64 * Self::LSB
                }
            }
            #[inline]
            fn to_f32(self) -> (f32, Flags) {
                let x = self.to_f64();
                let y = x as f32; // never overflows or underflows: |x| in [2^−F, 2^(bits−1−F)]
                (y, Flags::when(y as f64 != x, Flags::INEXACT))
            }
            #[inline]
            fn is_finite(self) -> bool {
                true
            }
            #[inline]
            fn is_zero(self) -> bool {
                self.0 == 0
            }
            #[inline]
            fn raw_bits(self) -> u64 {
                self.0 as u64 & (u64::MAX >> (64 - $bits))
            }
            #[inline]
            fn sq_zero() -> u128 {
                0
            }
            #[inline]
            fn sq_add(acc: u128, x: Self) -> u128 {
                let m = x.0.unsigned_abs() as u128;
                acc.saturating_add(m * m)
            }
            #[inline]
            fn sq_merge(a: u128, b: u128) -> u128 {
                a.saturating_add(b)
            }
            #[inline]
            fn sq_total<R: Rounding + ?Sized>(acc: u128, r: &mut R) -> (Self, Flags) {
                match i64::try_from(acc) {
                    Ok(v) => Self::round_wide(v, F, r),
                    Err(_) => Self::saturate(i64::MAX),
                }
            }
            #[inline]
            fn sq_sqrt(acc: u128) -> (Self, Flags) {
                let s = acc.isqrt();
                let rem = acc - s * s;
                // acc is an integer, so acc > s² + s  <=>  acc >= (s + 1/2)²: round to nearest, no ties.
                let n = s + (rem > s) as u128;
                let (v, f) = Self::saturate(i64::try_from(n).unwrap_or(i64::MAX));
                (v, f | Flags::when(rem != 0, Flags::INEXACT))
            }
            #[inline]
            fn sq_to_f64(acc: u128) -> f64 {
                // As `to_f64`.
                match u64::try_from(acc) {
                    Ok(a) if cfg!(target_os = "none") => f64_of_u64(a, 2 * F),
                    _ => acc as f64 * Self::LSB * Self::LSB,
                }
            }
        }

        impl<const F: u32> Fixed for $name<F> {
            const FRAC: u32 = F;
            #[inline]
            fn raw(self) -> i64 {
                self.0 as i64
            }
            // A host inlines it into the activations' constant kinds (`activation::fixed::derivative30`).
            #[cfg_attr(target_os = "none", inline)]
            #[cfg_attr(not(target_os = "none"), inline(always))]
            fn from_wide<R: Rounding + ?Sized>(v: i64, frac: u32, r: &mut R) -> (Self, Flags) {
                Self::from_wide_as::<true, R>(v, frac, r)
            }
            #[inline]
            fn from_ratio<R: Rounding + ?Sized>(num: i64, den: i64, r: &mut R) -> (Self, Flags) {
                Self::from_ratio_as::<true, R>(num, den, r)
            }
            // As `from_wide`.
            #[cfg_attr(target_os = "none", inline)]
            #[cfg_attr(not(target_os = "none"), inline(always))]
            fn from_wide_watched<R: Rounding + ?Sized>(v: i64, frac: u32, r: &mut R) -> (Self, Flags) {
                Self::from_wide_as::<false, R>(v, frac, r)
            }
            #[inline]
            fn from_ratio_watched<R: Rounding + ?Sized>(
                num: i64,
                den: i64,
                r: &mut R,
            ) -> (Self, Flags) {
                Self::from_ratio_as::<false, R>(num, den, r)
            }
            // A value already at F fraction bits only saturates: one `SSAT`, which sets Q, where it fits 32 bits.
            #[inline]
            fn from_wide_sticky<R: Rounding + ?Sized>(v: i64, frac: u32, r: &mut R) -> Self {
                let lo = v as i32;
                if Self::STICKY_SATURATION && frac == F && (v >> 32) as i32 == lo >> 31 {
                    return Self(ssat16_shr(lo, 0) as $raw);
                }
                let (out, f) = Self::from_wide_watched(v, frac, r);
                if f.intersects(Flags::OVERFLOW) {
                    q_raise();
                }
                out
            }
        }

        impl<const F: u32> fmt::Debug for $name<F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", <Self as Scalar>::NAME, self.to_f64())
            }
        }

        impl<const F: u32> fmt::Display for $name<F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.to_f64(), f)
            }
        }
    };
}

fixed_family!(
    /// Signed fixed point in an `i32` with `F` fraction bits (Q(31−F).F). See the [module docs](self) for
    /// accumulator width and guard bits.
    Fx, i32, i64, 32, 29, ["I32F0", "I31F1", "I30F2", "I29F3", "I28F4", "I27F5", "I26F6", "I25F7", "I24F8", "I23F9", "I22F10", "I21F11", "I20F12", "I19F13", "I18F14", "I17F15", "I16F16", "I15F17", "I14F18", "I13F19", "I12F20", "I11F21", "I10F22", "I9F23", "I8F24", "I7F25", "I6F26", "I5F27", "I4F28", "I3F29", "I2F30", "I1F31"],
    inline(always)
);
fixed_family!(
    /// Signed fixed point in an `i16` with `F` fraction bits (Q(15−F).F). See the [module docs](self) for
    /// accumulator width and guard bits.
    Fx16, i16, i32, 16, 45, ["I16F0", "I15F1", "I14F2", "I13F3", "I12F4", "I11F5", "I10F6", "I9F7", "I8F8", "I7F9", "I6F10", "I5F11", "I4F12", "I3F13", "I2F14", "I1F15"],
    inline(never)
);

/// Q16.16: 16 integer bits (sign included), 16 fraction bits, in an `i32`.
pub type I16F16 = Fx<16>;
/// Q8.24: 8 integer bits (sign included), 24 fraction bits, in an `i32`.
pub type I8F24 = Fx<24>;
/// Q15 (CMSIS `q15_t`): sign bit and 15 fraction bits in an `i16`, range [−1, 1).
pub type I1F15 = Fx16<15>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::{Floor, NearestEven};

    /// What `from_f64` computed before it read the bits: `x·2^F` and `·2^G` in f64 (exact, powers of two),
    /// `floor` and a sticky bit, then the same rounding of `2·floor(t) + sticky` at `F + G + 1` fraction bits.
    fn from_f64_in_floats<S: Fixed, R: Rounding>(
        x: f64,
        bits: u32,
        guard: u32,
        r: &mut R,
    ) -> (S, Flags) {
        if x.is_nan() {
            return (S::ZERO, Flags::NONFINITE);
        }
        let scaled = x * (1u64 << S::FRAC) as f64;
        let limit = (1u64 << bits) as f64;
        if scaled >= limit || scaled <= -limit {
            let (v, f) = S::from_wide(if scaled > 0.0 { i64::MAX } else { i64::MIN }, 0, r);
            return (v, f | Flags::when(x.is_infinite(), Flags::NONFINITE));
        }
        let t = scaled * (1u64 << guard) as f64;
        let fl = t.floor();
        S::from_wide((fl as i64) * 2 + (fl != t) as i64, S::FRAC + guard + 1, r)
    }

    #[test]
    fn f64_of_u64_rounds_as_the_float_conversion_and_multiply() {
        use rand_core::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(6);
        let mut ms: Vec<u64> = (0..70_000).collect();
        for top in 50..64 {
            // Around ties and carries at every shift that rounds: ±2 of each half and each all-ones.
            let base = 1u64 << top;
            for s in 1..12u32.min(top) {
                let half = 1u64 << (s - 1);
                for k in [0, 1, 2, 3, (1 << (63 - top)).min(1 << 10) - 1] {
                    for d in [half - 1, half, half + 1, (1 << s) - 1, 0, 1] {
                        ms.push(base | (k << s) | d);
                    }
                }
            }
            ms.push(base.wrapping_mul(2).wrapping_sub(1));
        }
        ms.extend((0..200_000).map(|_| rng.next_u64() >> (rng.next_u32() % 64)));
        for frac in [0, 1, 15, 30, 32, 48, 62, 64, 128] {
            let scale = (-(frac as f64)).exp2();
            for &m in &ms {
                let (got, want) = (f64_of_u64(m, frac), m as f64 * scale);
                assert_eq!(got.to_bits(), want.to_bits(), "m {m}, frac {frac}");
            }
        }
    }

    #[test]
    fn f64_of_raw_equals_the_float_conversion_and_multiply() {
        use rand_core::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(5);
        let mut raws: Vec<i32> = (i16::MIN as i32..=i16::MAX as i32).collect();
        raws.extend([
            i32::MIN,
            i32::MIN + 1,
            i32::MAX,
            i32::MAX - 1,
            1 << 30,
            -(1 << 30),
        ]);
        raws.extend((0..100_000).map(|_| rng.next_u32() as i32));
        for frac in 0..=32 {
            let scale = (-(frac as f64)).exp2();
            for &raw in &raws {
                let (got, want) = (f64_of_raw(raw, frac), raw as f64 * scale);
                assert_eq!(got.to_bits(), want.to_bits(), "raw {raw}, frac {frac}");
            }
        }
    }

    #[test]
    fn from_f64_from_the_bits_equals_the_float_computation() {
        use crate::round::Stochastic;
        use rand_core::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro128PlusPlus;
        fn check<S: Fixed>(bits: u32, guard: u32, rng: &mut Xoshiro128PlusPlus) {
            let lsb = 1.0 / (1u64 << S::FRAC) as f64;
            let top = (1u64 << (bits - 1)) as f64 * lsb;
            let mut xs = vec![
                0.0,
                f64::INFINITY,
                f64::NAN,
                f64::MAX,
                f64::MIN_POSITIVE,
                f64::from_bits(1),
                f64::from_bits((1 << 52) - 1),
                1.0,
                0.5,
                top,
                2.0 * top,
                lsb,
                lsb / 2.0,
                lsb / (1u64 << guard) as f64,
                lsb / (1u64 << (guard + 1)) as f64,
            ];
            for _ in 0..20_000 {
                let n = (rng.next_u64() >> (64 - bits)) as f64;
                let e = rng.next_u32() % 90;
                xs.extend([
                    f64::from_bits(rng.next_u64()),
                    (n + 0.5) * lsb,
                    n * lsb,
                    (rng.next_u64() >> 11) as f64 * 2f64.powi(e as i32 - 80),
                ]);
            }
            // Each value, its neighbours one ulp away, and its negation.
            let all = xs.iter().flat_map(|&x| {
                let b = x.to_bits();
                [
                    x,
                    f64::from_bits(b.wrapping_add(1)),
                    f64::from_bits(b.wrapping_sub(1)),
                ]
            });
            for x in all.flat_map(|x| [x, -x]) {
                let seed = rng.next_u64();
                let stochastic = || Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed));
                let (got, want) = (
                    S::from_f64(x, &mut Floor),
                    from_f64_in_floats(x, bits, guard, &mut Floor),
                );
                assert_eq!(got, want, "{} floor {x:e}", S::NAME);
                let (got, want) = (
                    S::from_f64(x, &mut NearestEven),
                    from_f64_in_floats(x, bits, guard, &mut NearestEven),
                );
                assert_eq!(got, want, "{} nearest-even {x:e}", S::NAME);
                let (got, want) = (
                    S::from_f64(x, &mut stochastic()),
                    from_f64_in_floats(x, bits, guard, &mut stochastic()),
                );
                assert_eq!(got, want, "{} stochastic {x:e}", S::NAME);
            }
        }
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(17);
        check::<Fx<0>>(32, 29, &mut rng);
        check::<I16F16>(32, 29, &mut rng);
        check::<I8F24>(32, 29, &mut rng);
        check::<Fx<31>>(32, 29, &mut rng);
        check::<Fx16<0>>(16, 45, &mut rng);
        check::<Fx16<8>>(16, 45, &mut rng);
        check::<I1F15>(16, 45, &mut rng);
    }

    /// `Wᵀ d` over 40 rows of the largest products of each sign (−1·−1 = 2³⁰ and −1·(1 − 2⁻¹⁵)): running sums
    /// pass ±2³¹ several times, and the totals are 20·2¹⁵ (inside the format) or ±4·2³⁰ and beyond, where a
    /// wrapping 32-bit sum alone would read a small value instead of saturating. x86's 32-bit column sums
    /// must recover each total exactly. Against the i128 sum of each column, rounded as `round_wide` rounds it.
    #[test]
    fn transposed_product_is_exact_where_its_partial_sums_pass_32_bits() {
        const O: usize = 40;
        let (min, max) = (I1F15::from_bits(i16::MIN), I1F15::from_bits(i16::MAX));
        // Per column: the first `mins` rows hold −1, the next `maxs` rows 1 − 2⁻¹⁵, the rest zero.
        let cols = [(20, 20), (20, 16), (20, 12), (12, 20), (8, 20)];
        // 32 columns: as many as x86 needs to take its 32-bit sums (`PAIR_COLUMNS_MIN`).
        let w: [[I1F15; 32]; O] = core::array::from_fn(|o| {
            core::array::from_fn(|i| {
                let (mins, maxs) = cols[i % cols.len()];
                match o {
                    _ if o < mins => min,
                    _ if o < mins + maxs => max,
                    _ => I1F15::ZERO,
                }
            })
        });
        let d = [min; O];
        for add in [false, true] {
            let mut y = [I1F15::from_bits(3); 32];
            let start = y;
            if add {
                crate::matrix::matvec_t_add(&w, &d, &mut y, &mut NearestEven, &mut ());
            } else {
                crate::matrix::matvec_t(&w, &d, &mut y, &mut NearestEven, &mut ());
            }
            for i in 0..32 {
                let from = if add { (start[i].0 as i128) << 15 } else { 0 };
                let exact = (0..O).fold(from, |s, o| s + w[o][i].0 as i128 * d[o].0 as i128);
                assert!(
                    i % cols.len() == 0 || exact.abs() >= 1 << 32,
                    "column {i} totals {exact}"
                );
                let (want, _) = I1F15::round_wide(exact as i64, 15, &mut NearestEven);
                assert_eq!(y[i], want, "column {i}, add {add}, exact {exact}");
            }
        }
    }

    #[test]
    fn coefficient_mantissas_are_within_their_bounds() {
        for c in [
            1.0,
            -1.0,
            0.01,
            -0.3,
            0.9,
            1e-6,
            3.0e4,
            0.999_999_9,
            1.0 / 3.0,
        ] {
            let coef = Coef::new(c);
            for ((m, e), bits) in [(coef.mantissa15(), 15), (coef.mantissa31(), 31)] {
                let lo = 1i64 << (bits - 1);
                assert!((lo..2 * lo).contains(&(m as i64).abs()), "{c}: {m}");
                let approx = m as f64 * libm::exp2(-e as f64);
                assert!(
                    (approx - c).abs() <= libm::exp2(-bits as f64) * c.abs(),
                    "{c}: {approx}"
                );
            }
        }
        assert_eq!(Coef::new(0.0).mantissa15(), (0, 0));
        assert_eq!(Coef::new(f64::NAN).mantissa31(), (0, 0));
    }

    #[test]
    fn floor_rounding_sign_asymmetry() {
        // 2^-10 · 2^-10 = 2^-20, a sixteenth of an I16F16 LSB.
        let a = I16F16::from_bits(1 << 6);
        let na = I16F16::from_bits(-(1 << 6));
        assert_eq!(
            a.mul(a, &mut Floor),
            (I16F16::ZERO, Flags::UNDERFLOW | Flags::INEXACT)
        );
        assert_eq!(
            na.mul(a, &mut Floor),
            (I16F16::from_bits(-1), Flags::INEXACT)
        );
        assert_eq!(a.mul(a, &mut NearestEven).0, I16F16::ZERO);
        assert_eq!(na.mul(a, &mut NearestEven).0, I16F16::ZERO);
    }

    /// `bound` is at least the largest magnitude and below twice it, and for 16-bit raws it has bit 15 exactly
    /// when −1 is among the values (what the x86 Q15 kernels' pair sums need), on vectors built from every
    /// edge of the raw range and seeded random values.
    #[test]
    fn bound_covers_the_largest_magnitude_and_marks_minus_one() {
        use rand_core::{Rng, SeedableRng};
        fn check<S: Scalar<Bound = u64>>(
            raws: &[i64],
            raw: impl Fn(i64) -> S,
            mag: impl Fn(&S) -> u64,
        ) {
            let x: [S; 8] = core::array::from_fn(|k| raw(raws[k % raws.len()]));
            let b = S::bound(&x);
            let max = x.iter().map(&mag).max().unwrap_or(0);
            assert!(
                b >= max && (max == 0 || b < 2 * max),
                "{raws:?}: bound {b}, largest {max}"
            );
        }
        let mut rng = rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(5);
        let edges = [
            0i64, 1, -1, 2, -2, 0x3fff, 0x4000, -0x4000, 0x7fff, -0x7fff, -0x8000,
        ];
        for trial in 0..2000 {
            let raws: [i64; 8] = core::array::from_fn(|k| {
                let e = edges[(rng.next_u32() as usize) % edges.len()];
                if trial % 2 == 0 && k % 2 == 0 {
                    (rng.next_u32() as i16) as i64 >> (rng.next_u32() % 16)
                } else {
                    e
                }
            });
            check::<I1F15>(
                &raws,
                |v| I1F15::from_bits(v as i16),
                |v| v.0.unsigned_abs() as u64,
            );
            let q15: [I1F15; 8] = core::array::from_fn(|k| I1F15::from_bits(raws[k] as i16));
            assert_eq!(
                I1F15::bound(&q15) >= 1 << 15,
                raws.contains(&-0x8000),
                "{raws:?}"
            );
            let mut wide = |v: i64| I16F16::from_bits((v << (rng.next_u32() % 17)) as i32);
            let x32: [I16F16; 8] = core::array::from_fn(|k| wide(raws[k]));
            let max = x32
                .iter()
                .map(|v| v.0.unsigned_abs() as u64)
                .max()
                .unwrap_or(0);
            let b = I16F16::bound(&x32);
            assert!(
                b >= max && (max == 0 || b < 2 * max),
                "{x32:?}: bound {b}, largest {max}"
            );
        }
        check::<I16F16>(
            &[i32::MIN as i64, 1],
            |v| I16F16::from_bits(v as i32),
            |v| v.0.unsigned_abs() as u64,
        );
    }

    /// `saturate` against an `i128` clamp at every boundary of each raw width and at the extremes of `i64`,
    /// including values whose low word alone would be in range (2³² + 5 truncates to 5).
    #[test]
    fn saturate_matches_a_wide_clamp() {
        fn check<S: Scalar>(
            raw: impl Fn(S) -> i64,
            bits: u32,
            saturate: impl Fn(i64) -> (S, Flags),
        ) {
            let (lo, hi) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
            let mut vs = vec![0i128, 1, -1, i64::MIN as i128, i64::MAX as i128];
            for edge in [
                lo,
                hi,
                1 << 32,
                -(1 << 32),
                1 << 16,
                -(1 << 16),
                1 << 31,
                -(1 << 31),
            ] {
                vs.extend((-3..=3).map(|d| edge + d));
            }
            vs.extend([
                (1i128 << 32) + 5,
                -(1i128 << 32) + 5,
                (1i128 << 62) + 7,
                -(1i128 << 62) - 7,
            ]);
            for v in vs.into_iter().filter(|v| i64::try_from(*v).is_ok()) {
                let want = v.clamp(lo, hi);
                let (got, f) = saturate(v as i64);
                assert_eq!(raw(got) as i128, want, "{bits}-bit raw, v = {v}");
                let flags = if want == v {
                    Flags::NONE
                } else {
                    Flags::OVERFLOW | Flags::INEXACT
                };
                assert_eq!(f, flags, "{bits}-bit raw, v = {v}");
            }
        }
        check(|x: I16F16| x.raw(), 32, I16F16::saturate);
        check(|x: I8F24| x.raw(), 32, I8F24::saturate);
        check(|x: I1F15| x.raw(), 16, I1F15::saturate);
    }

    #[test]
    fn saturation_and_flags() {
        assert_eq!(
            I1F15::MIN.neg(),
            (I1F15::MAX, Flags::OVERFLOW | Flags::INEXACT)
        );
        assert_eq!(
            I1F15::MIN.mul(I1F15::MIN, &mut Floor),
            (I1F15::MAX, Flags::OVERFLOW | Flags::INEXACT)
        );
        assert_eq!(
            I16F16::MAX.add(I16F16::DELTA),
            (I16F16::MAX, Flags::OVERFLOW | Flags::INEXACT)
        );
        assert_eq!(
            I16F16::from_f64(f64::NAN, &mut Floor),
            (I16F16::ZERO, Flags::NONFINITE)
        );
        assert_eq!(
            I16F16::from_f64(f64::NEG_INFINITY, &mut Floor),
            (
                I16F16::MIN,
                Flags::OVERFLOW | Flags::INEXACT | Flags::NONFINITE
            )
        );
        assert_eq!(
            I8F24::from_f64(1e-300, &mut NearestEven),
            (I8F24::ZERO, Flags::UNDERFLOW | Flags::INEXACT)
        );
        assert_eq!(
            I8F24::from_f64(-1e-300, &mut Floor),
            (I8F24::from_bits(-1), Flags::INEXACT)
        );
        assert_eq!(
            I1F15::from_f32(0.5, &mut Floor),
            (I1F15::from_bits(1 << 14), Flags::NONE)
        );
        assert_eq!(
            I1F15::from_f32(1.0, &mut Floor),
            (I1F15::MAX, Flags::OVERFLOW | Flags::INEXACT)
        );
    }

    #[test]
    fn accumulator_saturates_sticky() {
        let mut acc = I16F16::acc_zero();
        for _ in 0..4 {
            acc = I16F16::mac(acc, I16F16::MIN, I16F16::MIN);
        }
        let acc = I16F16::mac(acc, I16F16::MIN, I16F16::MAX);
        let (v, f) = I16F16::narrow(acc, &mut Floor);
        assert_eq!(v, I16F16::MAX);
        assert!(f.contains(Flags::OVERFLOW));
    }

    #[test]
    fn sums_beyond_i64_saturate_by_their_sign() {
        fn check<S: Scalar<Acc = WideAcc>>() {
            let big = [
                i64::MAX as i128,
                i64::MAX as i128 + 1,
                (1i128 << 64) - 1, // low half −1
                1i128 << 64,       // low half 0
                i128::MAX,
            ];
            for v in big {
                for (v, want) in [(v, S::MAX), (-v - 1, S::MIN)] {
                    let got = S::narrow(WideAcc { value: v }, &mut NearestEven);
                    assert_eq!(got, (want, Flags::OVERFLOW | Flags::INEXACT), "{v}");
                }
            }
        }
        check::<I16F16>();
        check::<I1F15>();
    }

    #[test]
    fn norm_of_a_large_vector_does_not_overflow() {
        // ‖(200, 200)‖ ≈ 282.8: the sum of squares (80000) saturates I16F16, the norm does not.
        let x = I16F16::from_f64(200.0, &mut Floor).0;
        let acc = I16F16::sq_add(I16F16::sq_add(I16F16::sq_zero(), x), x);
        assert!(
            I16F16::sq_total(acc, &mut Floor)
                .1
                .contains(Flags::OVERFLOW)
        );
        let (n, f) = I16F16::sq_sqrt(acc);
        assert!((n.to_f64() - 200.0 * 2f64.sqrt()).abs() <= I16F16::LSB / 2.0);
        assert!(!f.contains(Flags::OVERFLOW));
    }

    /// A 16-bit format rounds a 64-bit value in 32-bit arithmetic exactly where it fits `i32` (`round_wide`'s
    /// test of the high word against the low word's sign): on both sides of every edge of `i32`, near ±2^32
    /// (low word 0 or −1 with a high word that is not its sign) and the edges of `i64`, at every shift up to 33,
    /// the value and flags equal an `i128` reference of floor and nearest-even rounding with saturation.
    #[test]
    fn sixteen_bit_narrowing_uses_32_bits_exactly_where_the_value_fits() {
        let centers = [
            0i64,
            i32::MAX as i64,
            i32::MIN as i64,
            1 << 32,
            -(1 << 32),
            (1 << 32) - (1 << 31),
            i64::MAX - 300,
            i64::MIN + 300,
        ];
        let mut checked = 0;
        for s in 1..=33u32 {
            for c in centers {
                for v in (-300..=300).map(|d| c.saturating_add(d)) {
                    let (q, rem, half) = (
                        (v as i128) >> s,
                        (v as i128) & ((1i128 << s) - 1),
                        1i128 << (s - 1),
                    );
                    let even = q + (rem > half || (rem == half && q & 1 == 1)) as i128;
                    for (got, want) in [
                        (I1F15::round_wide(v, s, &mut Floor), q),
                        (I1F15::round_wide(v, s, &mut NearestEven), even),
                    ] {
                        let sat = want.clamp(i16::MIN as i128, i16::MAX as i128);
                        let mut f = Flags::when(sat != want, Flags::OVERFLOW | Flags::INEXACT);
                        f |= Flags::when(rem != 0, Flags::INEXACT);
                        f |= Flags::when(rem != 0 && sat == 0, Flags::UNDERFLOW);
                        assert_eq!((got.0.0 as i128, got.1), (sat, f), "v = {v}, s = {s}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 33 * 8 * 601 * 2);
    }

    /// `sat_nearest_even32` (the Cortex-M4's 16-bit narrowing) at every shift it serves, against the exact
    /// quotient rounded to nearest-even in `i128`: equal wherever `v + 2^(s−1)` fits `i32`, and equal after a
    /// 16-bit format's saturation everywhere, on the edges of `i32`, the overflow boundary, ties of both
    /// parities and seeded random values of every magnitude.
    #[test]
    fn saturating_biased_form_saturates_like_nearest_even() {
        use rand_core::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro128PlusPlus;
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(31);
        let (mut ties, mut overflowed) = (0, 0);
        for s in 1..=15u32 {
            let half = 1i32 << (s - 1);
            let edges = [
                0,
                1,
                -1,
                half,
                -half,
                3 * half,
                -3 * half,
                i32::MIN,
                i32::MIN + 1,
                (i16::MAX as i32) << s,
                (i16::MIN as i32) << s,
            ];
            // Every value from i32::MAX down past the overflow boundary, then random magnitudes.
            let top = (0..=half.min(1 << 12) + 2).map(|j| i32::MAX - j);
            let random = (0..20_000u32).map(|k| (rng.next_u32() as i32) >> (k % 32));
            for v in edges.into_iter().chain(top).chain(random) {
                let (q, rem) = ((v as i128) >> s, (v as i128) & ((1i128 << s) - 1));
                let want = q + (rem > half as i128 || (rem == half as i128 && q & 1 == 1)) as i128;
                let got = sat_nearest_even32(v, s) as i128;
                let sat = |x: i128| x.clamp(i16::MIN as i128, i16::MAX as i128);
                if v.checked_add(half).is_some() {
                    assert_eq!(got, want, "v = {v}, s = {s}");
                } else {
                    overflowed += 1;
                }
                ties += (rem == half as i128) as u32;
                assert_eq!(sat(got), sat(want), "v = {v}, s = {s}");
            }
        }
        assert!(
            ties > 100 && overflowed > 10_000,
            "{ties} ties, {overflowed} overflows"
        );
    }

    /// The watching narrowings (`narrow_watched`, `from_wide_watched`, `from_ratio_watched`) against the full
    /// ones in every format and rounding mode: the same value, the same random draws, and the full flags where
    /// the value saturated (or divided by zero), no flag elsewhere. Sums beyond `i64`, the edges of every
    /// format's range, ties and random magnitudes at every shift.
    #[test]
    fn watched_narrowings_keep_the_value_and_its_saturation() {
        use crate::round::{Rounding, Stochastic};
        use rand_core::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro128PlusPlus;

        fn own(full: Flags) -> Flags {
            if full.intersects(Flags::OVERFLOW | Flags::NONFINITE) {
                full
            } else {
                Flags::NONE
            }
        }
        fn check<S: Fixed<Acc = WideAcc>, R: Rounding + Clone + PartialEq + core::fmt::Debug>(
            r: R,
            v: i128,
            k: u32,
        ) {
            let same = |what: &str, full: (S, Flags), watched: (S, Flags), a: &R, b: &R| {
                assert_eq!(
                    (full.0.raw(), own(full.1)),
                    (watched.0.raw(), watched.1),
                    "{} {what}, v = {v}, k = {k}",
                    S::NAME
                );
                assert_eq!(a, b, "{} {what}, v = {v}: the random draws differ", S::NAME);
            };
            let (mut a, mut b) = (r.clone(), r.clone());
            let acc = WideAcc { value: v };
            let full = S::narrow(acc, &mut a);
            let watched = S::narrow_watched(acc, &mut b);
            same("narrow", full, watched, &a, &b);
            let w = v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            let frac = k % 64;
            let full = S::from_wide(w, frac, &mut a);
            let watched = S::from_wide_watched(w, frac, &mut b);
            same("from_wide", full, watched, &a, &b);
            let den = (v >> 64) as i64 % 1000 - 100;
            let full = S::from_ratio(w, den, &mut a);
            let watched = S::from_ratio_watched(w, den, &mut b);
            same("from_ratio", full, watched, &a, &b);
        }
        let edges: [i128; 12] = [
            0,
            1,
            -1,
            1 << 15,
            (1 << 30) - (1 << 14),
            (1 << 30) + (1 << 14),
            -(1 << 30) - (1 << 14),
            i64::MAX as i128,
            i64::MIN as i128,
            i64::MAX as i128 + 1,
            i128::MAX,
            i128::MIN,
        ];
        let random = |r: &mut Xoshiro128PlusPlus, k: u32| {
            ((r.next_u64() as i128) << 64 | r.next_u64() as i128) >> (k % 127)
        };
        for (k, v) in crate::round::tests::edges_then_random(9, &edges, 40, 20_000, random) {
            let stochastic = || Stochastic(Xoshiro128PlusPlus::seed_from_u64(k as u64));
            check::<I1F15, _>(NearestEven, v, k);
            check::<I1F15, _>(Floor, v, k);
            check::<I1F15, _>(stochastic(), v, k);
            check::<I8F24, _>(NearestEven, v, k);
            check::<I8F24, _>(stochastic(), v, k);
            check::<I16F16, _>(NearestEven, v, k);
            check::<I16F16, _>(Floor, v, k);
            check::<I16F16, _>(stochastic(), v, k);
        }
    }

    #[test]
    fn round32_equals_round64_in_every_mode() {
        use crate::round::{Rounding, Stochastic};
        use rand_core::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro128PlusPlus;

        fn check<const F: u32, R: Rounding + Clone + PartialEq + core::fmt::Debug>(
            r: R,
            v: i32,
            s: u32,
        ) {
            let (mut a, mut b) = (r.clone(), r);
            let got = Fx16::<F>::round32::<true, _>(v, s, &mut a);
            let want = Fx16::<F>::round64::<true, _>(v as i64, s, &mut b);
            assert_eq!(got, want, "v = {v}, s = {s}, F = {F}");
            assert_eq!(a, b, "v = {v}, s = {s}: the random draws differ");
        }
        let edges = [
            0,
            1,
            -1,
            2,
            -3,
            i32::MAX,
            i32::MIN,
            1 << 30,
            -(1 << 30),
            1 << 15,
            -(1 << 15),
        ];
        let random = |r: &mut Xoshiro128PlusPlus, k: u32| (r.next_u32() as i32) >> (k % 31);
        for (k, v) in crate::round::tests::edges_then_random(5, &edges, 40, 20_000, random) {
            let s = k % 32;
            check::<15, _>(NearestEven, v, s);
            check::<15, _>(Floor, v, s);
            check::<15, _>(
                Stochastic(Xoshiro128PlusPlus::seed_from_u64(k as u64)),
                v,
                s,
            );
            check::<8, _>(NearestEven, v, s);
        }
    }

    #[test]
    fn reduce_keeps_62_bits_and_a_sticky_bit() {
        // Within 62 bits: unchanged.
        assert_eq!(reduce(-(1i128 << 61), 40), (-(1i64 << 61), 40));
        assert_eq!(reduce((1i128 << 62) - 1, 7), ((1i64 << 62) - 1, 7));
        // 2⁷⁰ at 40 fraction bits is 2⁶¹ at 31: exact, no sticky bit.
        assert_eq!(reduce(1i128 << 70, 40), (1i64 << 61, 31));
        // One more: the dropped 1 sets the lowest kept bit.
        assert_eq!(reduce((1i128 << 70) + 1, 40), ((1i64 << 61) | 1, 31));
        assert_eq!(reduce((1i128 << 70) + (1 << 9), 40), ((1i64 << 61) | 1, 31));
        assert_eq!(reduce((1i128 << 70) + (2 << 9), 40), ((1i64 << 61) + 2, 31));
        assert_eq!(reduce((1i128 << 70) + 2, 40), ((1i64 << 61) | 1, 31));
        assert_eq!(
            reduce((1i128 << 70) + (1 << 9) + 1, 40),
            ((1i64 << 61) + 1, 31)
        );
        // Exactly as many integer bits as fit: still reduced, not saturated.
        assert_eq!(reduce(1i128 << 70, 9), (1i64 << 61, 0));
        // Negative: floor shift, then sticky.
        assert_eq!(reduce(-(1i128 << 70) - 1, 40), (-(1i64 << 61) - 1, 31));
        // More integer bits than 62: saturated magnitude with the sign.
        assert_eq!(reduce(1i128 << 100, 10), (1i64 << 62, 0));
        assert_eq!(reduce(-(1i128 << 100), 10), (-(1i64 << 62), 0));
    }

    /// Mantissas at their bounds (±2¹⁴, ±(2¹⁵ − 1)) and between.
    const MANTISSAS: [i32; 8] = [16384, -16384, 32767, -32767, 20001, -29999, 24576, -17000];

    #[test]
    fn nearest16_rounds_as_nearest_even_for_every_raw_and_exponent() {
        use crate::round::Rounding;
        for m in MANTISSAS {
            for e in 1..=31u32 {
                let n = Nearest16::new(m, e);
                for g in i16::MIN..=i16::MAX {
                    let p = g as i32 * m;
                    let want = NearestEven.shr(p as i64, e) as i32;
                    let dropped = p & ((1i64 << e) - 1) as i32 != 0;
                    assert_eq!(n.round(g), (want, dropped), "g = {g}, m = {m}, e = {e}");
                }
            }
        }
    }

    /// The M4F's column sums (`dsp::columns`, its instructions computed in safe code here) against the i128 sum
    /// of each column, with `w` and `d` over their whole range (−1 included) and lanes that start away from zero,
    /// in shapes that split into blocks of four columns, a pair and a tail differently.
    #[test]
    fn paired_column_sums_are_exact() {
        use rand_core::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro128PlusPlus;
        fn check<const I: usize, const O: usize>(rng: &mut Xoshiro128PlusPlus) {
            let mut raw = |k: usize| {
                if k.is_multiple_of(3) {
                    i16::MIN
                } else {
                    rng.next_u32() as i16
                }
            };
            let d: [i16; O] = core::array::from_fn(|o| raw(o + 1));
            let w: [[i16; I]; O] = core::array::from_fn(|o| core::array::from_fn(|i| raw(o + i)));
            let start: [i64; I] = core::array::from_fn(|i| (i as i64 - 3) << 40);
            let mut lanes = start;
            crate::dsp::columns(&w, &d, |v: i16| v, &mut lanes);
            for i in 0..I {
                let exact =
                    (0..O).fold(start[i] as i128, |s, o| s + w[o][i] as i128 * d[o] as i128);
                assert_eq!(lanes[i] as i128, exact, "I = {I}, O = {O}, column {i}");
            }
        }
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(5);
        for _ in 0..200 {
            check::<1, 1>(&mut rng);
            check::<4, 8>(&mut rng);
            check::<8, 8>(&mut rng);
            check::<8, 1>(&mut rng);
            check::<7, 3>(&mut rng);
            check::<6, 5>(&mut rng);
            check::<2, 3>(&mut rng);
            check::<33, 40>(&mut rng);
        }
    }

    /// The pair loop (with `QSUB16` computed in safe code here; the firmware's parity digests compare the
    /// Cortex-M4's instruction with this host's value-by-value loop) against `scale_by` then `sub` per value:
    /// the same values and the same events, for every length up to 11 and raws over the whole range.
    #[test]
    fn pair_update_equals_scale_by_then_sub() {
        use rand_core::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro128PlusPlus;
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(11);
        for round in 0..400 {
            let m = MANTISSAS[round % MANTISSAS.len()];
            let e = 1 + (round as u32 * 7) % 31;
            let c = Coef::new(m as f64 * 2f64.powi(-(e as i32)));
            assert_eq!(c.mantissa15(), (m, e as i32));
            for len in 0..12 {
                let mut raw = || I1F15::from_bits(rng.next_u32() as i16);
                let g: Vec<I1F15> = (0..len).map(|_| raw()).collect();
                let w0: Vec<I1F15> = (0..len).map(|_| raw()).collect();
                let (mut want, mut want_flags) = (w0.clone(), Vec::new());
                for (w, g) in want.iter_mut().zip(&g) {
                    let (d, f1) = g.scale_by(&c, &mut NearestEven);
                    let (v, f2) = w.sub(d);
                    want_flags.push((f1 | f2).bits());
                    *w = v;
                }
                let (mut w, mut flags) = (w0.clone(), Vec::new());
                let one = |w: I1F15, g: I1F15, _fits: bool| {
                    let (d, f1) = g.scale_by(&c, &mut NearestEven);
                    let (v, f2) = w.sub(d);
                    (v, f1 | f2)
                };
                Nearest16::new(m, e).sub_pairs(
                    &mut w,
                    &g,
                    |v: I1F15| v.0,
                    I1F15::from_bits,
                    one,
                    |f| flags.push(f.bits()),
                );
                assert_eq!(w, want, "m = {m}, e = {e}, g = {g:?}, w = {w0:?}");
                // The odd value goes first there: the same events, in another order.
                flags.sort_unstable();
                want_flags.sort_unstable();
                assert_eq!(flags, want_flags, "m = {m}, e = {e}");
            }
        }
    }
}
