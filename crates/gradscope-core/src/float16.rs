//! Half precision: IEEE binary16 ([`f16`](struct@f16)) and bfloat16 ([`bf16`]), through the `half` crate, as [`Scalar`]s
//! with the same contract as every other format.
//!
//! | | f16 | bf16 |
//! |---|---|---|
//! | significand bits (implicit one included) | 11 | 8 |
//! | largest finite | 65504 | ≈ 3.39·10³⁸ |
//! | smallest normal ([`Scalar::RESOLUTION`]) | 2⁻¹⁴ ≈ 6.1·10⁻⁵ | 2⁻¹²⁶ ≈ 1.2·10⁻³⁸ (f32's) |
//! | smallest subnormal | 2⁻²⁴ ≈ 6.0·10⁻⁸ | 2⁻¹³³ |
//!
//! **Arithmetic.** Every operation is computed in `f32` and rounded once to the format, to nearest-even: `f32`
//! has at least 2p + 2 significand bits for both formats (p = 11, 8), so for `+ − × ÷` that double rounding
//! equals a single correct rounding of the exact result (Figueroa 1995). Activations are evaluated in `f32`
//! from the widened input and rounded once (the "opmath" of PyTorch's half-precision kernels), as are the
//! backward products `dy·f′(x)`.
//!
//! **Flags**, as for `f32` ([`crate::flags`]), plus `INEXACT`, which the 16-bit formats track:
//! - `OVERFLOW`: a finite result rounded beyond the largest finite value and became ±∞ (f16: beyond 65504,
//!   from 65520 up); a conversion of a finite value beyond the range saturates to `MIN`/`MAX` instead;
//! - `UNDERFLOW`: a non-zero exact result became zero (f16: below 2⁻²⁵);
//! - `SUBNORMAL`: a non-zero result below the smallest normal;
//! - `INEXACT`: the result differs from the exact one (operations, conversions, and the rounding of a sum;
//!   the roundings inside a sum are not tracked, as for `f32`);
//! - `NONFINITE`: a NaN or ±∞ was produced or met.
//!
//! **Two accumulation policies**, chosen by type as mixed-precision training chooses them (Micikevicius et al.
//! 2018):
//! - [`f16`](struct@f16) and [`bf16`] accumulate sums of products in `f32` (every product of two 16-bit values is exact
//!   there) and round once per output: the policy of tensor cores and of PyTorch's half-precision kernels;
//! - [`Native<f16>`] and [`Native<bf16>`] round every product and every partial sum to the format itself. A long
//!   sum stalls once its ulp exceeds twice the terms: 1 + 10,000 × 10⁻⁴ stays 1 in `Native<f16>` and is about
//!   2 in `f16` (asserted in this module's tests).
//!
//! Sums of squares (norms, clipping) are kept in `f32`'s scaled form for both policies.
//!
//! On microcontrollers without half-precision hardware (every Cortex-M0 and M4F) these are software formats:
//! each operation converts to `f32` and back. Their cost is in the MCU table of BENCHMARKS.md.

use core::fmt::Debug;

pub use half::{bf16, f16};

use crate::activation::{Act, Activate, Libm};
use crate::flags::Flags;
use crate::math::{Real, sigmoid};
use crate::round::{NearestEven, Rounding};
use crate::scalar::{Coef, Float, FloatAcc, FloatBound, Scalar, ScaledSumSq};

/// A 16-bit binary float format: what the shared half-precision code needs of [`f16`](struct@f16) and [`bf16`].
pub trait Format16:
    Copy + Default + PartialEq + PartialOrd + Debug + Send + Sync + 'static + private::Sealed
{
    /// Name with `f32` accumulation (`"f16"`).
    const NAME: &'static str;
    /// Name with accumulation in the format itself (`"f16-native"`).
    const NATIVE_NAME: &'static str;
    /// Significand bits, the implicit one included (11 for f16, 8 for bf16).
    const DIGITS: u32;
    /// Largest finite value.
    const MAX: Self;
    /// Smallest positive normal value.
    const MIN_POSITIVE: Self;
    /// +∞.
    const INFINITY: Self;
    /// The storage bits.
    fn bits(self) -> u16;
    /// The value with these storage bits.
    fn with_bits(bits: u16) -> Self;
    /// The exact value as `f32`.
    fn widen(self) -> f32;
    /// `x` rounded to nearest-even (±∞ beyond the range, NaN stays NaN).
    fn narrow_nearest(x: f32) -> Self;
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::f16 {}
    impl Sealed for super::bf16 {}
}

macro_rules! format16 {
    ($t:ident, $name:literal, $native:literal) => {
        impl Format16 for $t {
            const NAME: &'static str = $name;
            const NATIVE_NAME: &'static str = $native;
            const DIGITS: u32 = $t::MANTISSA_DIGITS;
            const MAX: $t = $t::MAX;
            const MIN_POSITIVE: $t = $t::MIN_POSITIVE;
            const INFINITY: $t = $t::INFINITY;
            #[inline]
            fn bits(self) -> u16 {
                self.to_bits()
            }
            #[inline]
            fn with_bits(bits: u16) -> $t {
                $t::from_bits(bits)
            }
            #[inline]
            fn widen(self) -> f32 {
                self.to_f32()
            }
            #[inline]
            fn narrow_nearest(x: f32) -> $t {
                $t::from_f32(x)
            }
        }
    };
}
format16!(f16, "f16", "f16-native");
format16!(bf16, "bf16", "bf16-native");

const SIGN: u16 = 0x8000;

#[inline]
fn magnitude<F: Format16>(x: F) -> u16 {
    x.bits() & !SIGN
}

#[inline]
fn finite<F: Format16>(x: F) -> bool {
    magnitude(x) < F::INFINITY.bits()
}

#[inline]
fn subnormal<F: Format16>(x: F) -> bool {
    let m = magnitude(x);
    m != 0 && m < F::MIN_POSITIVE.bits()
}

/// The bits in an order that follows the values (±0 both map to 0), so that the next value up is `key + 1`.
#[inline]
fn key(bits: u16) -> i32 {
    if bits & SIGN != 0 {
        -((bits & !SIGN) as i32)
    } else {
        bits as i32
    }
}

#[inline]
fn from_key<F: Format16>(k: i32) -> F {
    let m = k.unsigned_abs().min(0x7fff) as u16;
    F::with_bits(if k < 0 { SIGN | m } else { m })
}

/// Round an `f32` result to `F` (nearest-even) with the events of the whole operation: `inexact32` says the
/// `f32` value already differed from the exact result, `inputs_finite` that no operand was NaN or ±∞.
#[inline]
fn finish<F: Format16>(v32: f32, inexact32: bool, inputs_finite: bool) -> (F, Flags) {
    let v = F::narrow_nearest(v32);
    let w = v.widen();
    let fin = finite(v);
    let exact_nonzero = v32 != 0.0 || inexact32;
    (
        v,
        Flags::when(!fin, Flags::NONFINITE)
            | Flags::when(!fin && inputs_finite, Flags::OVERFLOW)
            | Flags::when(subnormal(v), Flags::SUBNORMAL)
            | Flags::when(inputs_finite && w == 0.0 && exact_nonzero, Flags::UNDERFLOW)
            | Flags::when(
                inputs_finite && (inexact32 || !fin || w != v32),
                Flags::INEXACT,
            ),
    )
}

/// `a + b` in `f32` and whether that sum is inexact (Knuth's TwoSum: the rounding error, exactly).
#[inline]
fn two_sum(a: f32, b: f32) -> (f32, bool) {
    let s = a + b;
    if !s.is_finite() {
        return (s, true);
    }
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    (s, err != 0.0)
}

#[inline]
fn add16<F: Format16>(a: F, b: F) -> (F, Flags) {
    let (s, inexact) = two_sum(a.widen(), b.widen());
    finish(s, inexact, finite(a) && finite(b))
}

#[inline]
fn mul16<F: Format16>(a: F, b: F) -> (F, Flags) {
    let (x, y) = (a.widen(), b.widen());
    let p = x * y;
    // A product of two 16-bit significands has at most 22 bits: exact in f32 unless it left f32's normal
    // range (bf16 only), where f64 (exact for it) decides.
    let inexact = !p.is_normal() && p.is_finite() && (p as f64) != x as f64 * y as f64;
    finish(p, inexact, finite(a) && finite(b))
}

/// `x` rounded to `F` with `r`, saturating: the conversion every format's `from_f64` follows.
fn from_f64_16<F: Format16, R: Rounding + ?Sized>(x: f64, r: &mut R) -> (F, Flags) {
    if x.is_nan() {
        return (F::narrow_nearest(f32::NAN), Flags::NONFINITE);
    }
    let max = F::MAX.widen() as f64;
    if x.is_infinite() {
        return (F::narrow_nearest(x as f32), Flags::NONFINITE);
    }
    if x > max {
        return (F::MAX, Flags::OVERFLOW | Flags::INEXACT);
    }
    if x < -max {
        return (
            from_key(-key(F::MAX.bits())),
            Flags::OVERFLOW | Flags::INEXACT,
        );
    }
    let val = |k: i32| from_key::<F>(k).widen() as f64;
    // A first guess within an ulp or two (through f32, two roundings), then the neighbours lo ≤ x < hi.
    let mut k = key(F::narrow_nearest(x as f32).bits());
    while val(k) > x {
        k -= 1;
    }
    while val(k + 1) <= x {
        k += 1;
    }
    // A zero result keeps the sign of x, as IEEE arithmetic does.
    let signed = |v: F| {
        if magnitude(v) == 0 && x.is_sign_negative() {
            F::with_bits(SIGN)
        } else {
            v
        }
    };
    let lo = from_key::<F>(k);
    if val(k) == x {
        return (signed(lo), Flags::when(subnormal(lo), Flags::SUBNORMAL));
    }
    let (lo_v, hi_v) = (val(k), val(k + 1));
    let v = signed(if r.round_up(x - lo_v, hi_v - lo_v, lo.bits() & 1 == 0) {
        from_key::<F>(k + 1)
    } else {
        lo
    });
    (
        v,
        Flags::INEXACT
            | Flags::when(magnitude(v) == 0, Flags::UNDERFLOW)
            | Flags::when(subnormal(v), Flags::SUBNORMAL),
    )
}

/// `2^k` in `f32` for `k` in `[−149, 127]` (subnormal below −126).
#[inline]
fn pow2f(k: i32) -> f32 {
    if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (k + 149).clamp(0, 22))
    }
}

/// `x · c`: the exact product of `x`'s significand and the coefficient's 31-bit mantissa form
/// ([`Coef::mantissa31`]) in a `u64`, rounded once to nearest-even in integer arithmetic (no `f64`, which an
/// MCU would run in software). A non-finite coefficient multiplies as its `f32` value, flagged.
#[inline]
fn scale16<F: Format16>(x: F, c: &Coef) -> (F, Flags) {
    if !c.is_finite() {
        let (v, f) = finish::<F>(x.widen() * c.value() as f32, false, false);
        return (v, f | Flags::NONFINITE);
    }
    if !finite(x) {
        // ∞·0 is NaN and ∞·c an infinity of the product's sign, however small c is: c's f32 value can round to
        // zero (c = 7·10⁻⁴⁶), so multiply by its sign, or by the zero itself.
        let c = c.value();
        let unit = if c == 0.0 {
            c as f32
        } else {
            c.signum() as f32
        };
        return (F::narrow_nearest(x.widen() * unit), Flags::NONFINITE);
    }
    let p = F::DIGITS as i32 - 1; // stored fraction bits
    let bias = (1i32 << (14 - p)) - 1;
    let emin_sub = 1 - bias - p; // exponent of the smallest subnormal
    // |x| = sx · 2^ex with sx an integer of at most p + 1 bits.
    let mag = magnitude(x) as i32;
    let (field, frac) = (mag >> p, mag & ((1 << p) - 1));
    let (sx, ex) = if field == 0 {
        (frac, emin_sub)
    } else {
        (frac | (1 << p), field - bias - p)
    };
    let (m, e) = c.mantissa31();
    // The coefficient's sign, that of −0 included (IEEE: x·(−0) is a zero of the opposite sign, as in f32).
    let negative = (x.bits() & SIGN != 0) != c.value().is_sign_negative();
    // The exact product P · 2^E, P below 2^42.
    let big = sx as u64 * m.unsigned_abs() as u64;
    let exp = ex - e;
    let v32 = if big == 0 {
        0.0
    } else {
        // The quantum of the result's binade (the subnormal quantum at the bottom), and the shift to it.
        let top = 63 - big.leading_zeros() as i32 + exp;
        let qe = (top - p).max(emin_sub);
        let s = qe - exp;
        let (q, inexact) = if s <= 0 {
            (big << (-s).min(63), false)
        } else if s >= 64 {
            (0, true)
        } else {
            let (q0, r, half) = (big >> s, big & ((1u64 << s) - 1), 1u64 << (s - 1));
            let up = r > half || (r == half && q0 & 1 == 1);
            (q0 + up as u64, r != 0)
        };
        // q ≤ 2^(p+1), so q · 2^qe is exact in f32 (or beyond its range, which is an overflow in F too).
        let v = if qe > 127 {
            f32::INFINITY
        } else {
            q as f32 * pow2f(qe)
        };
        let v = if negative { -v } else { v };
        let (r, f) = finish::<F>(v, inexact, true);
        return (r, f);
    };
    let zero = if negative { -v32 } else { v32 };
    (F::narrow_nearest(zero), Flags::NONE)
}

/// The bound of a 16-bit vector, as the `f32` values it widens to.
#[inline]
fn bound16<F: Format16>(x: impl Iterator<Item = F>) -> FloatBound<f32> {
    // On the magnitudes' bits, as `f32`'s bound does (zero wraps to the top for the minimum).
    let (mut hi, mut lo) = (0u16, u16::MAX);
    for v in x {
        let m = magnitude(v);
        hi = hi.max(m);
        lo = lo.min(m.wrapping_sub(1));
    }
    FloatBound {
        min: if lo == u16::MAX {
            f32::INFINITY
        } else {
            F::with_bits(lo + 1).widen()
        },
        max: F::with_bits(hi).widen(),
        finite: hi < F::INFINITY.bits(),
    }
}

#[inline]
fn sq_round<F: Format16>((v, f): (f32, Flags)) -> (F, Flags) {
    let (r, fr) = finish::<F>(v, false, v.is_finite());
    (r, f | fr)
}

macro_rules! wide_scalar {
    ($t:ident, $doc:literal) => {
        #[doc = $doc]
        impl Scalar for $t {
            type Acc = FloatAcc<f32>;
            type SqAcc = ScaledSumSq<f32>;
            const NAME: &'static str = <$t as Format16>::NAME;
            const ZERO: $t = $t::ZERO;
            const MIN: $t = $t::MIN;
            const MAX: $t = $t::MAX;
            const RESOLUTION: f64 = $t::MIN_POSITIVE.to_f64_const();
            const SMALLEST: f64 = $t::MIN_POSITIVE_SUBNORMAL.to_f64_const();
            const IS_FLOAT: bool = true;

            #[inline]
            fn acc_zero() -> Self::Acc {
                f32::acc_zero()
            }
            #[inline]
            fn mac(acc: Self::Acc, a: $t, b: $t) -> Self::Acc {
                f32::mac(acc, a.widen(), b.widen())
            }
            #[inline]
            fn acc_add(acc: Self::Acc, x: $t) -> Self::Acc {
                f32::acc_add(acc, x.widen())
            }
            #[inline]
            fn acc_merge(a: Self::Acc, b: Self::Acc) -> Self::Acc {
                f32::acc_merge(a, b)
            }

            type Lane = f32;
            const LANE_ZERO: f32 = 0.0;
            #[inline(always)]
            fn lane_mac(lane: f32, a: $t, b: $t) -> f32 {
                lane + a.widen() * b.widen()
            }
            #[inline(always)]
            fn lane_add(a: f32, b: f32) -> f32 {
                a + b
            }
            #[inline(always)]
            fn lane_of(x: $t) -> f32 {
                0.0 + x.widen()
            }
            #[inline(always)]
            fn lane_acc(lane: f32) -> Self::Acc {
                f32::lane_acc(lane)
            }

            type Bound = FloatBound<f32>;
            const ANY: Self::Bound = f32::ANY;
            #[inline]
            fn bound(x: &[$t]) -> Self::Bound {
                bound16(x.iter().copied())
            }
            #[inline]
            fn quiet(a: Self::Bound, b: Self::Bound, n: usize) -> bool {
                // The products and partial sums are f32's.
                f32::quiet(a, b, n)
            }

            #[inline]
            fn narrow<R: Rounding + ?Sized>(acc: Self::Acc, _r: &mut R) -> ($t, Flags) {
                let (v, f) = finish::<$t>(acc.value, false, acc.value.is_finite());
                (v, acc.flags | f)
            }
            #[inline]
            fn add(self, rhs: $t) -> ($t, Flags) {
                add16(self, rhs)
            }
            #[inline]
            fn sub(self, rhs: $t) -> ($t, Flags) {
                add16(self, -rhs)
            }
            #[inline]
            fn neg(self) -> ($t, Flags) {
                (
                    -self,
                    Flags::when(!finite(self), Flags::NONFINITE)
                        | Flags::when(subnormal(self), Flags::SUBNORMAL),
                )
            }
            #[inline]
            fn mul<R: Rounding + ?Sized>(self, rhs: $t, _r: &mut R) -> ($t, Flags) {
                mul16(self, rhs)
            }
            #[inline]
            fn scale_by<R: Rounding + ?Sized>(self, c: &Coef, _r: &mut R) -> ($t, Flags) {
                scale16(self, c)
            }
            #[inline]
            fn from_f64<R: Rounding + ?Sized>(x: f64, r: &mut R) -> ($t, Flags) {
                from_f64_16(x, r)
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self.widen() as f64
            }
            #[inline]
            fn to_f32(self) -> (f32, Flags) {
                (self.widen(), Flags::when(!finite(self), Flags::NONFINITE))
            }
            #[inline]
            fn is_zero(self) -> bool {
                magnitude(self) == 0
            }
            #[inline]
            fn is_finite(self) -> bool {
                finite(self)
            }
            #[inline]
            fn raw_bits(self) -> u64 {
                self.bits() as u64
            }
            #[inline]
            fn sq_zero() -> Self::SqAcc {
                f32::sq_zero()
            }
            #[inline]
            fn sq_add(acc: Self::SqAcc, x: $t) -> Self::SqAcc {
                f32::sq_add(acc, x.widen())
            }
            #[inline]
            fn sq_merge(a: Self::SqAcc, b: Self::SqAcc) -> Self::SqAcc {
                f32::sq_merge(a, b)
            }
            #[inline]
            fn sq_total<R: Rounding + ?Sized>(acc: Self::SqAcc, r: &mut R) -> ($t, Flags) {
                sq_round(f32::sq_total(acc, r))
            }
            #[inline]
            fn sq_sqrt(acc: Self::SqAcc) -> ($t, Flags) {
                sq_round(f32::sq_sqrt(acc))
            }
            #[inline]
            fn sq_to_f64(acc: Self::SqAcc) -> f64 {
                f32::sq_to_f64(acc)
            }
        }

        impl Real for $t {
            #[inline]
            fn c(x: f64) -> $t {
                from_f64_16(x, &mut NearestEven).0
            }
            #[inline]
            fn abs(self) -> $t {
                $t::from_bits(magnitude(self))
            }
        }

        impl Float for $t {
            #[inline]
            fn sigmoid(self) -> $t {
                $t::narrow_nearest(sigmoid::<f32, Libm>(self.widen()))
            }
            #[inline]
            fn tanh(self) -> $t {
                $t::narrow_nearest(libm::tanhf(self.widen()))
            }
        }

        impl Activate<$t> for Act {
            #[inline]
            fn f<R: Rounding + ?Sized>(&self, x: $t, _r: &mut R) -> ($t, Flags) {
                act_f(self, x)
            }
            #[inline]
            fn df<R: Rounding + ?Sized>(&self, x: $t, y: $t, _r: &mut R) -> ($t, Flags) {
                act_df(self, x, y)
            }
            #[inline]
            fn backward<R: Rounding + ?Sized>(
                &self,
                x: $t,
                y: $t,
                dy: $t,
                _r: &mut R,
            ) -> ($t, Flags) {
                act_backward(self, x, y, dy)
            }
        }
    };
}

wide_scalar!(
    f16,
    "IEEE binary16 (see [`crate::float16`]). Accumulator: `f32`, rounded once per output to nearest-even."
);
wide_scalar!(
    bf16,
    "bfloat16 (see [`crate::float16`]). Accumulator: `f32`, rounded once per output to nearest-even."
);

/// The flags of an activation value `y` computed in `f32` from `x`, without `INEXACT` (as for `f32`, whose
/// formulas are not exact either): `exact_zero` says the exact value is zero.
#[inline]
fn act_flags<F: Format16>(x: F, y32: f32, exact_zero: bool) -> (F, Flags) {
    let (y, f) = finish::<F>(y32, false, finite(x));
    let underflow = magnitude(y) == 0 && !exact_zero && y32.is_finite() && finite(x);
    let keep = Flags::OVERFLOW | Flags::NONFINITE | Flags::SUBNORMAL;
    (
        y,
        (f & keep)
            | Flags::when(underflow, Flags::UNDERFLOW)
            | Flags::when(!finite(x), Flags::NONFINITE),
    )
}

#[inline]
fn act_f<F: Format16>(a: &Act, x: F) -> (F, Flags) {
    let x32 = x.widen();
    act_flags(x, a.eval::<f32, Libm>(x32), a.is_exact_zero(x32 as f64))
}

#[inline]
fn act_df<F: Format16>(a: &Act, x: F, y: F) -> (F, Flags) {
    let x32 = x.widen();
    act_flags(
        x,
        a.deriv::<f32, Libm>(x32, y.widen()),
        a.is_exact_zero_derivative(x32 as f64),
    )
}

#[inline]
fn act_backward<F: Format16>(a: &Act, x: F, y: F, dy: F) -> (F, Flags) {
    let x32 = x.widen();
    let d = a.deriv::<f32, Libm>(x32, y.widen());
    let g = dy.widen() * d;
    let exact_zero = magnitude(dy) == 0 || a.is_exact_zero_derivative(x32 as f64);
    let (v, f) = act_flags(x, g, exact_zero);
    (v, f | Flags::when(!finite(dy), Flags::NONFINITE))
}

/// A 16-bit float that accumulates in the format itself: every product and every partial sum of a kernel is
/// rounded to `F` (see the [module docs](self)). Its operations, conversions and activations are `F`'s.
#[derive(Copy, Clone, Default, PartialEq, PartialOrd, Debug)]
pub struct Native<F>(pub F);

/// The quiet test for sums rounded in `F`: no product below the normal range or beyond it, and no partial sum
/// that overflows. A sum of `n` products bounded by `hi` never overflows when `hi·n·2` is below `F`'s largest
/// value, at any `n`: in a chain, rounding `s + p` moves it by at most `|p|` (`s` is representable), so each
/// product adds at most `2|p|`. `tests/half_oracle.rs` checks the worst case of every bound exhaustively, in
/// both summation orders of the kernels (the chain, and four lanes combined by a tree).
#[inline]
fn quiet_native<F: Format16>(a: FloatBound<f32>, b: FloatBound<f32>, n: usize) -> bool {
    let (lo, hi) = (a.min as f64 * b.min as f64, a.max as f64 * b.max as f64);
    a.finite
        && b.finite
        && (lo >= F::MIN_POSITIVE.widen() as f64
            || a.min == f32::INFINITY
            || b.min == f32::INFINITY)
        && hi * (n as f64) * 2.0 < F::MAX.widen() as f64
}

impl<F: Format16 + Scalar<Bound = FloatBound<f32>, SqAcc = ScaledSumSq<f32>>> Scalar for Native<F> {
    type Acc = FloatAcc<F>;
    type SqAcc = ScaledSumSq<f32>;
    const NAME: &'static str = F::NATIVE_NAME;
    const ZERO: Self = Native(<F as Scalar>::ZERO);
    const MIN: Self = Native(<F as Scalar>::MIN);
    const MAX: Self = Native(<F as Scalar>::MAX);
    const RESOLUTION: f64 = <F as Scalar>::RESOLUTION;
    const SMALLEST: f64 = <F as Scalar>::SMALLEST;
    const IS_FLOAT: bool = true;

    #[inline]
    fn acc_zero() -> Self::Acc {
        FloatAcc {
            value: <F as Scalar>::ZERO,
            flags: Flags::NONE,
        }
    }
    #[inline]
    fn mac(acc: Self::Acc, a: Self, b: Self) -> Self::Acc {
        let (p, fp) = mul16(a.0, b.0);
        let (s, fs) = add16(acc.value, p);
        // Events of the product (below or beyond the range) and of the sum's overflow; roundings untracked.
        let events = Flags::UNDERFLOW | Flags::SUBNORMAL | Flags::OVERFLOW;
        FloatAcc {
            value: s,
            flags: acc.flags | (fp & events) | (fs & Flags::OVERFLOW),
        }
    }
    #[inline]
    fn acc_add(acc: Self::Acc, x: Self) -> Self::Acc {
        let (s, f) = add16(acc.value, x.0);
        FloatAcc {
            value: s,
            flags: acc.flags
                | (f & (Flags::OVERFLOW | Flags::UNDERFLOW | Flags::SUBNORMAL | Flags::NONFINITE)),
        }
    }
    #[inline]
    fn acc_merge(a: Self::Acc, b: Self::Acc) -> Self::Acc {
        let (s, f) = add16(a.value, b.value);
        FloatAcc {
            value: s,
            flags: a.flags | b.flags | (f & Flags::OVERFLOW),
        }
    }

    type Lane = F;
    const LANE_ZERO: F = <F as Scalar>::ZERO;
    #[inline(always)]
    fn lane_mac(lane: F, a: Self, b: Self) -> F {
        let p = F::narrow_nearest(a.0.widen() * b.0.widen());
        F::narrow_nearest(lane.widen() + p.widen())
    }
    #[inline(always)]
    fn lane_add(a: F, b: F) -> F {
        F::narrow_nearest(a.widen() + b.widen())
    }
    #[inline(always)]
    fn lane_of(x: Self) -> F {
        F::narrow_nearest(0.0 + x.0.widen())
    }
    #[inline(always)]
    fn lane_acc(lane: F) -> Self::Acc {
        FloatAcc {
            value: lane,
            flags: Flags::NONE,
        }
    }

    type Bound = FloatBound<f32>;
    const ANY: Self::Bound = f32::ANY;
    #[inline]
    fn bound(x: &[Self]) -> Self::Bound {
        bound16(x.iter().map(|v| v.0))
    }
    #[inline]
    fn quiet(a: Self::Bound, b: Self::Bound, n: usize) -> bool {
        quiet_native::<F>(a, b, n)
    }

    #[inline]
    fn narrow<R: Rounding + ?Sized>(acc: Self::Acc, _r: &mut R) -> (Self, Flags) {
        let v = acc.value;
        (
            Native(v),
            acc.flags
                | Flags::when(!finite(v), Flags::NONFINITE)
                | Flags::when(subnormal(v), Flags::SUBNORMAL),
        )
    }
    #[inline]
    fn add(self, rhs: Self) -> (Self, Flags) {
        let (v, f) = self.0.add(rhs.0);
        (Native(v), f)
    }
    #[inline]
    fn sub(self, rhs: Self) -> (Self, Flags) {
        let (v, f) = self.0.sub(rhs.0);
        (Native(v), f)
    }
    #[inline]
    fn neg(self) -> (Self, Flags) {
        let (v, f) = self.0.neg();
        (Native(v), f)
    }
    #[inline]
    fn mul<R: Rounding + ?Sized>(self, rhs: Self, r: &mut R) -> (Self, Flags) {
        let (v, f) = self.0.mul(rhs.0, r);
        (Native(v), f)
    }
    #[inline]
    fn scale_by<R: Rounding + ?Sized>(self, c: &Coef, r: &mut R) -> (Self, Flags) {
        let (v, f) = self.0.scale_by(c, r);
        (Native(v), f)
    }
    #[inline]
    fn from_f64<R: Rounding + ?Sized>(x: f64, r: &mut R) -> (Self, Flags) {
        let (v, f) = F::from_f64(x, r);
        (Native(v), f)
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self.0.to_f64()
    }
    #[inline]
    fn to_f32(self) -> (f32, Flags) {
        self.0.to_f32()
    }
    #[inline]
    fn is_zero(self) -> bool {
        self.0.is_zero()
    }
    #[inline]
    fn is_finite(self) -> bool {
        finite(self.0)
    }
    #[inline]
    fn raw_bits(self) -> u64 {
        self.0.raw_bits()
    }
    #[inline]
    fn sq_zero() -> Self::SqAcc {
        f32::sq_zero()
    }
    #[inline]
    fn sq_add(acc: Self::SqAcc, x: Self) -> Self::SqAcc {
        F::sq_add(acc, x.0)
    }
    #[inline]
    fn sq_merge(a: Self::SqAcc, b: Self::SqAcc) -> Self::SqAcc {
        f32::sq_merge(a, b)
    }
    #[inline]
    fn sq_total<R: Rounding + ?Sized>(acc: Self::SqAcc, r: &mut R) -> (Self, Flags) {
        let (v, f) = F::sq_total(acc, r);
        (Native(v), f)
    }
    #[inline]
    fn sq_sqrt(acc: Self::SqAcc) -> (Self, Flags) {
        let (v, f) = F::sq_sqrt(acc);
        (Native(v), f)
    }
    #[inline]
    fn sq_to_f64(acc: Self::SqAcc) -> f64 {
        f32::sq_to_f64(acc)
    }
}

impl<F: Format16> Activate<Native<F>> for Act
where
    Native<F>: Scalar,
{
    #[inline]
    fn f<R: Rounding + ?Sized>(&self, x: Native<F>, _r: &mut R) -> (Native<F>, Flags) {
        let (v, f) = act_f(self, x.0);
        (Native(v), f)
    }
    #[inline]
    fn df<R: Rounding + ?Sized>(
        &self,
        x: Native<F>,
        y: Native<F>,
        _r: &mut R,
    ) -> (Native<F>, Flags) {
        let (v, f) = act_df(self, x.0, y.0);
        (Native(v), f)
    }
    #[inline]
    fn backward<R: Rounding + ?Sized>(
        &self,
        x: Native<F>,
        y: Native<F>,
        dy: Native<F>,
        _r: &mut R,
    ) -> (Native<F>, Flags) {
        let (v, f) = act_backward(self, x.0, y.0, dy.0);
        (Native(v), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::{Floor, Stochastic};
    use rand_core::SeedableRng;

    fn h(x: f64) -> f16 {
        <f16 as Scalar>::from_f64(x, &mut NearestEven).0
    }

    #[test]
    fn f16_flags_at_the_edges_of_the_range() {
        // 65504 + 16 is the midpoint to the next binade: nearest-even rounds it to ∞.
        assert_eq!(h(65504.0).add(h(8.0)), (h(65504.0), Flags::INEXACT));
        let (v, f) = h(65504.0).add(h(16.0));
        assert!(v.is_infinite());
        assert_eq!(f, Flags::OVERFLOW | Flags::NONFINITE | Flags::INEXACT);
        // 2^-24 · 2^-1 is the midpoint between 0 and 2^-24: ties to the even 0; 2^-24 · 0.75 rounds up.
        let tiny = f16::MIN_POSITIVE_SUBNORMAL;
        assert_eq!(
            tiny.mul(h(0.5), &mut NearestEven),
            (f16::ZERO, Flags::UNDERFLOW | Flags::INEXACT)
        );
        assert_eq!(
            tiny.mul(h(0.75), &mut NearestEven),
            (tiny, Flags::SUBNORMAL | Flags::INEXACT)
        );
        assert_eq!(h(1.0).add(h(2.0)), (h(3.0), Flags::NONE));
        assert_eq!(h(1.0).sub(h(1.0)), (f16::ZERO, Flags::NONE));
        assert_eq!(f16::NAN.add(h(1.0)).1, Flags::NONFINITE);
        assert_eq!(
            f16::INFINITY.mul(h(2.0), &mut NearestEven).1,
            Flags::NONFINITE
        );
        assert_eq!(tiny.neg(), (-tiny, Flags::SUBNORMAL));
    }

    #[test]
    fn conversions_saturate_and_honour_the_rounding_mode() {
        assert_eq!(
            <f16 as Scalar>::from_f64(1e6, &mut NearestEven),
            (f16::MAX, Flags::OVERFLOW | Flags::INEXACT)
        );
        assert_eq!(
            <f16 as Scalar>::from_f64(-1e6, &mut NearestEven),
            (f16::MIN, Flags::OVERFLOW | Flags::INEXACT)
        );
        assert_eq!(
            <f16 as Scalar>::from_f64(1e-9, &mut NearestEven),
            (f16::ZERO, Flags::UNDERFLOW | Flags::INEXACT)
        );
        // 1 + 2^-12 lies a quarter of an ulp above 1.
        let x = 1.0 + libm::ldexp(1.0, -12);
        assert_eq!(
            <f16 as Scalar>::from_f64(x, &mut NearestEven),
            (h(1.0), Flags::INEXACT)
        );
        assert_eq!(
            <f16 as Scalar>::from_f64(-x, &mut Floor).0,
            h(-1.0 - libm::ldexp(1.0, -10))
        );
        let mut r = Stochastic(rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(5));
        let n = 40_000;
        let ups = (0..n)
            .filter(|_| <f16 as Scalar>::from_f64(x, &mut r).0 > h(1.0))
            .count() as f64;
        let sigma = (0.25f64 * 0.75 * n as f64).sqrt();
        assert!((ups - 0.25 * n as f64).abs() < 4.0 * sigma, "{ups}");
        assert_eq!(
            <f16 as Scalar>::from_f64(0.5, &mut Floor),
            (h(0.5), Flags::NONE)
        );
        assert_eq!(
            <bf16 as Scalar>::from_f64(f64::NAN, &mut Floor).1,
            Flags::NONFINITE
        );
        assert_eq!(
            <bf16 as Scalar>::from_f64(1e39, &mut NearestEven),
            (bf16::MAX, Flags::OVERFLOW | Flags::INEXACT)
        );
    }

    #[test]
    fn a_long_sum_stalls_in_native_accumulation_and_not_in_f32() {
        // 1 + 10,000 × 10⁻⁴: in f16 the sum's half-ulp (2⁻¹¹ at 1) exceeds 10⁻⁴, so every addition rounds back.
        const N: usize = 10_000;
        let ones = [h(1.0); N];
        let mut terms = [h(1e-4); N];
        terms[0] = h(1.0);
        let mut acc_wide = f16::acc_zero();
        let mut acc_native = <Native<f16>>::acc_zero();
        for (&a, &b) in ones.iter().zip(&terms) {
            acc_wide = f16::mac(acc_wide, a, b);
            acc_native = <Native<f16>>::mac(acc_native, Native(a), Native(b));
        }
        let wide = f16::narrow(acc_wide, &mut NearestEven).0.to_f64();
        let native = <Native<f16>>::narrow(acc_native, &mut NearestEven)
            .0
            .to_f64();
        assert_eq!(native, 1.0);
        // 9,999 × f16(10⁻⁴) = 9,999 × 1.0001659…·10⁻⁴, summed in f32, then rounded to f16.
        assert!((wide - 2.0).abs() < 2e-3, "{wide}");
    }

    #[test]
    fn scaling_rounds_the_exact_product_once() {
        let c = Coef::new(0.1);
        let (m, e) = c.mantissa31();
        let x = h(3.0);
        let exact = 3.0 * m as f64 * libm::ldexp(1.0, -e);
        assert_eq!(x.scale_by(&c, &mut NearestEven).0, h(exact));
        assert_eq!(x.scale(1024.0, &mut NearestEven), (h(3072.0), Flags::NONE));
        let (v, f) = h(60000.0).scale(2.0, &mut NearestEven);
        assert!(v.is_infinite() && f == Flags::OVERFLOW | Flags::NONFINITE | Flags::INEXACT);
        let (v, f) = h(1.0).scale(f64::NAN, &mut NearestEven);
        assert!(v.is_nan() && f.contains(Flags::NONFINITE));
    }

    #[test]
    fn activations_round_once_from_f32() {
        let x = h(-12.0);
        // sigmoid(−12) ≈ 6.1·10⁻⁶: a subnormal in f16, normal in bf16.
        let (y, f) = Act::Sigmoid.f(x, &mut NearestEven);
        assert_eq!(y, f16::from_f32(sigmoid::<f32, Libm>(-12.0)));
        assert_eq!(f, Flags::SUBNORMAL);
        let (y, f) = Act::Sigmoid.f(h(-20.0), &mut NearestEven);
        assert_eq!((y, f), (f16::ZERO, Flags::UNDERFLOW));
        let (g, f) = Act::Relu.backward(h(-1.0), h(0.0), h(3.0), &mut NearestEven);
        assert_eq!((g, f), (f16::ZERO, Flags::NONE));
        let (y, f) = Act::Tanh.f(f16::NAN, &mut NearestEven);
        assert!(y.is_nan() && f == Flags::NONFINITE);
        let (y, _) = Act::Sigmoid.f(bf16::from_f32(-12.0), &mut NearestEven);
        assert_eq!(y, bf16::from_f32(sigmoid::<f32, Libm>(-12.0)));
    }
}
