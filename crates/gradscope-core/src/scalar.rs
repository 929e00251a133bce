//! One scalar abstraction for every kernel: `f32`, `f64` and the fixed-point types of [`crate::fixed`].
//!
//! Conventions, stated once:
//!
//! - **Wide accumulation, one narrowing.** Kernels sum products in [`Scalar::Acc`] and narrow once per output
//!   with [`Scalar::narrow`]. For fixed point the accumulator holds the *exact* sum (products at `2F` fraction
//!   bits in an `i64`), so a dot product rounds once, not once per term. For floats the accumulator is the
//!   float itself (IEEE round-to-nearest-even on every operation) plus the events seen on the way.
//! - **Rounding is a value.** Every narrowing takes a [`Rounding`]. IEEE float arithmetic always rounds to
//!   nearest-even; the rounding mode applies to fixed-point narrowing and to [`Scalar::from_f64`] of every type.
//! - **Events are values.** Each operation that can lose information returns [`Flags`] (see [`crate::flags`]).
//! - **Conversions saturate.** A finite input beyond the range becomes `MIN`/`MAX` with
//!   [`Flags::OVERFLOW`], for floats too; NaN becomes zero in fixed point (with [`Flags::NONFINITE`]).
//! - **Nothing panics.** Every function is total over its inputs, NaN and ±∞ included.

use core::fmt::Debug;

use crate::flags::Flags;
use crate::math::{Libm, Math, Real, sigmoid};
use crate::round::{NearestEven, Rounding};

/// A number type that every kernel of this crate runs on.
///
/// See the [module docs](self) for the conventions; accumulator width and guard bits are documented on each
/// implementing type.
pub trait Scalar: Copy + Default + PartialEq + PartialOrd + Debug + Send + Sync + 'static {
    /// Wide accumulator for sums of products (exact for fixed point).
    type Acc: Copy + Debug;
    /// Accumulator for sums of squares, which cannot overflow silently.
    type SqAcc: Copy + Debug;

    /// Short name used in reports (`"f32"`, `"I16F16"`, ...).
    const NAME: &'static str;
    /// Zero.
    const ZERO: Self;
    /// Most negative finite value.
    const MIN: Self;
    /// Largest finite value.
    const MAX: Self;
    /// Smallest positive step of the regular grid: one LSB for fixed point, the smallest positive normal for
    /// floats. A gradient below this is where underflow begins.
    const RESOLUTION: f64;
    /// True for binary floating-point types.
    const IS_FLOAT: bool;

    /// An empty accumulator.
    fn acc_zero() -> Self::Acc;
    /// `acc + a·b`, exact for fixed point until the accumulator saturates (which it reports at narrowing).
    fn mac(acc: Self::Acc, a: Self, b: Self) -> Self::Acc;
    /// [`Scalar::mac`] for callers that will not look at the events: the same value, without the per-product
    /// event checks (floats); fixed point keeps its saturation, which is part of the value.
    #[inline]
    fn mac_unobserved(acc: Self::Acc, a: Self, b: Self) -> Self::Acc {
        Self::mac(acc, a, b)
    }
    /// `acc + x`.
    fn acc_add(acc: Self::Acc, x: Self) -> Self::Acc;
    /// Round the accumulated value to `Self`, reporting every event seen since [`Scalar::acc_zero`].
    fn narrow<R: Rounding + ?Sized>(acc: Self::Acc, r: &mut R) -> (Self, Flags);

    /// `self + rhs`, saturating (fixed) or IEEE (float).
    fn add(self, rhs: Self) -> (Self, Flags);
    /// `self − rhs`, saturating (fixed) or IEEE (float).
    fn sub(self, rhs: Self) -> (Self, Flags);
    /// `−self`; saturates for the most negative fixed-point value.
    fn neg(self) -> (Self, Flags);
    /// `self · rhs`, rounded with `r`.
    fn mul<R: Rounding + ?Sized>(self, rhs: Self, r: &mut R) -> (Self, Flags);

    /// `self · c` for a real coefficient `c` (a clipping or loss scale), rounded once with `r` (floats: IEEE
    /// nearest; fixed point: `c` is held to 2⁻⁴⁰). A non-finite `c` gives zero (fixed) or NaN/∞ (float),
    /// flagged. Loops that scale many values by one `c` should prepare it once with [`Coef::new`] and call
    /// [`Scalar::scale_by`]: the result is the same, without converting `c` per value (on an FPU-less core
    /// that conversion costs more than the multiplication).
    #[inline]
    fn scale<R: Rounding + ?Sized>(self, c: f64, r: &mut R) -> (Self, Flags) {
        self.scale_by(&Coef::new(c), r)
    }
    /// `self · c` for a prepared coefficient: identical to [`Scalar::scale`] with `c`'s value.
    fn scale_by<R: Rounding + ?Sized>(self, c: &Coef, r: &mut R) -> (Self, Flags);
    /// Convert from `f64`, rounding with `r` and saturating.
    fn from_f64<R: Rounding + ?Sized>(x: f64, r: &mut R) -> (Self, Flags);
    /// Convert from `f32`, rounding with `r` and saturating.
    #[inline]
    fn from_f32<R: Rounding + ?Sized>(x: f32, r: &mut R) -> (Self, Flags) {
        // f32 -> f64 is exact, so this rounds only once.
        Self::from_f64(x as f64, r)
    }
    /// The exact value as `f64` (every type here converts exactly).
    fn to_f64(self) -> f64;
    /// The value as `f32`, rounded to nearest-even and saturating, with the events of that conversion.
    fn to_f32(self) -> (f32, Flags);
    /// True for zero (either sign).
    fn is_zero(self) -> bool;
    /// The storage bit pattern, zero-extended (for digests that must agree across targets).
    fn raw_bits(self) -> u64;

    /// An empty sum of squares.
    fn sq_zero() -> Self::SqAcc;
    /// `acc + x²`.
    fn sq_add(acc: Self::SqAcc, x: Self) -> Self::SqAcc;
    /// Combine two partial sums of squares.
    fn sq_merge(a: Self::SqAcc, b: Self::SqAcc) -> Self::SqAcc;
    /// The sum of squares as `Self` (saturating: a Q16.16 sum of squares passes its range once the norm
    /// passes ≈181), rounded with `r`.
    fn sq_total<R: Rounding + ?Sized>(acc: Self::SqAcc, r: &mut R) -> (Self, Flags);
    /// The square root of the sum (the L2 norm), rounded to nearest. Overflows only if the norm itself does.
    fn sq_sqrt(acc: Self::SqAcc) -> (Self, Flags);
    /// The sum of squares as `f64`, for reports (may be `inf` if it exceeds `f64`).
    fn sq_to_f64(acc: Self::SqAcc) -> f64;
}

/// The binary floating-point scalars (`f32`, `f64`): the bound of layers that are float-only by design
/// (LSTM, GRU), so using them with a fixed-point type is a compile error that names this trait. Provides the
/// gate nonlinearities through libm.
pub trait Float: Scalar + Real {
    /// Logistic sigmoid, PyTorch's stable form.
    fn sigmoid(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
}

// One impl per type (not a blanket impl over `Real`), so that a fixed-point LSTM's compile error names
// `Float` itself.
macro_rules! float_impl {
    ($t:ty) => {
        impl Float for $t {
            #[inline]
            fn sigmoid(self) -> $t {
                sigmoid::<$t, Libm>(self)
            }
            #[inline]
            fn tanh(self) -> $t {
                Libm::tanh(self)
            }
        }
    };
}
float_impl!(f32);
float_impl!(f64);

/// Float accumulator: the running IEEE sum and the events met while building it.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct FloatAcc<T> {
    /// Running sum.
    pub value: T,
    /// Events seen in products and partial sums.
    pub flags: Flags,
}

/// Float sum of squares in LAPACK's scaled form: `scale² · ssq`, which neither overflows nor underflows
/// before the result does (Hammarling's `xLASSQ` update).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct ScaledSumSq<T> {
    /// Largest magnitude seen so far.
    pub scale: T,
    /// Sum of `(x / scale)²`.
    pub ssq: T,
    /// Sum of the non-finite magnitudes met (NaN or ∞ when any was met, else 0).
    pub nonfinite: T,
}

/// A real coefficient (learning rate, clipping factor, loss scale) prepared once for scaling many values:
/// its value rounded to `f32` and to `f64`, and its fixed-point form `q · 2^−frac` (`frac` = 40 for
/// |c| < 2²², else 0), so [`Scalar::scale_by`] does no floating-point work per value.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Coef {
    value: f64,
    as_f32: f32,
    f32_flags: Flags,
    q: i64,
    frac: u32,
}

/// Fraction bits of a coefficient's fixed-point form (every fixed-point coefficient in the crate uses it).
pub(crate) const COEF_FRAC: u32 = 40;

impl Coef {
    /// Prepare `c`.
    pub fn new(c: f64) -> Coef {
        let (as_f32, f32_flags) = <f32 as Scalar>::from_f64(c, &mut NearestEven);
        // c at 40 fraction bits (|c| < 2^22), else at 0 (any larger c saturates all but zero).
        let (q, frac) = if !c.is_finite() {
            (0, 0)
        } else if libm::fabs(c) < (1u64 << 22) as f64 {
            (libm::rint(c * (1u64 << COEF_FRAC) as f64) as i64, COEF_FRAC)
        } else {
            // `as` saturates; |c| ≥ 2^22 already saturates every non-zero fixed-point product.
            (c as i64, 0)
        };
        Coef {
            value: c,
            as_f32,
            f32_flags,
            q,
            frac,
        }
    }

    /// The coefficient's value.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Whether the coefficient is finite.
    pub fn is_finite(&self) -> bool {
        self.value.is_finite()
    }

    /// The fixed-point form: `(q, frac)` with `c ≈ q · 2^−frac`.
    pub fn fixed(&self) -> (i64, u32) {
        (self.q, self.frac)
    }
}

/// The coefficient in a float type, with the flags of converting it there.
trait FloatCoef: Sized {
    fn coef(c: &Coef) -> (Self, Flags);
}

impl FloatCoef for f32 {
    #[inline]
    fn coef(c: &Coef) -> (f32, Flags) {
        (c.as_f32, c.f32_flags)
    }
}

impl FloatCoef for f64 {
    #[inline]
    fn coef(c: &Coef) -> (f64, Flags) {
        // f64 → f64 is exact; a NaN or ∞ coefficient is flagged as the conversion would.
        (c.value, Flags::when(!c.value.is_finite(), Flags::NONFINITE))
    }
}

macro_rules! float_scalar {
    ($t:ident, $sqrt:path, $doc:literal) => {
        #[doc = $doc]
        impl Scalar for $t {
            type Acc = FloatAcc<$t>;
            type SqAcc = ScaledSumSq<$t>;
            const NAME: &'static str = stringify!($t);
            const ZERO: $t = 0.0;
            const MIN: $t = $t::MIN;
            const MAX: $t = $t::MAX;
            const RESOLUTION: f64 = $t::MIN_POSITIVE as f64;
            const IS_FLOAT: bool = true;

            #[inline]
            fn acc_zero() -> Self::Acc {
                FloatAcc {
                    value: 0.0,
                    flags: Flags::NONE,
                }
            }
            #[inline]
            fn mac(acc: Self::Acc, a: $t, b: $t) -> Self::Acc {
                let p = a * b;
                let s = acc.value + p;
                let flags = acc.flags
                    | Flags::when(p == 0.0 && a != 0.0 && b != 0.0, Flags::UNDERFLOW)
                    | Flags::when(p.is_subnormal(), Flags::SUBNORMAL)
                    | Flags::when(
                        p.is_infinite() && a.is_finite() && b.is_finite(),
                        Flags::OVERFLOW,
                    )
                    | Flags::when(
                        s.is_infinite() && acc.value.is_finite() && p.is_finite(),
                        Flags::OVERFLOW,
                    );
                FloatAcc { value: s, flags }
            }
            #[inline]
            fn mac_unobserved(acc: Self::Acc, a: $t, b: $t) -> Self::Acc {
                FloatAcc {
                    value: acc.value + a * b,
                    flags: acc.flags,
                }
            }
            #[inline]
            fn acc_add(acc: Self::Acc, x: $t) -> Self::Acc {
                let (value, f) = Scalar::add(acc.value, x);
                FloatAcc {
                    value,
                    flags: acc.flags | f,
                }
            }
            #[inline]
            fn narrow<R: Rounding + ?Sized>(acc: Self::Acc, _r: &mut R) -> ($t, Flags) {
                (
                    acc.value,
                    acc.flags | float_result_flags(acc.value.is_finite(), acc.value.is_subnormal()),
                )
            }
            #[inline]
            fn add(self, rhs: $t) -> ($t, Flags) {
                let s = self + rhs;
                (
                    s,
                    float_op_flags(
                        s.is_finite(),
                        s.is_subnormal(),
                        self.is_finite() && rhs.is_finite(),
                    ),
                )
            }
            #[inline]
            fn sub(self, rhs: $t) -> ($t, Flags) {
                let s = self - rhs;
                (
                    s,
                    float_op_flags(
                        s.is_finite(),
                        s.is_subnormal(),
                        self.is_finite() && rhs.is_finite(),
                    ),
                )
            }
            #[inline]
            fn neg(self) -> ($t, Flags) {
                let s = -self;
                (s, float_result_flags(s.is_finite(), s.is_subnormal()))
            }
            #[inline]
            fn mul<R: Rounding + ?Sized>(self, rhs: $t, _r: &mut R) -> ($t, Flags) {
                let p = self * rhs;
                let f = float_op_flags(
                    p.is_finite(),
                    p.is_subnormal(),
                    self.is_finite() && rhs.is_finite(),
                ) | Flags::when(p == 0.0 && self != 0.0 && rhs != 0.0, Flags::UNDERFLOW);
                (p, f)
            }
            #[inline]
            fn scale_by<R: Rounding + ?Sized>(self, c: &Coef, r: &mut R) -> ($t, Flags) {
                let (cv, fc) = <$t as FloatCoef>::coef(c);
                let (v, f) = self.mul(cv, r);
                (v, f | (fc & Flags::NONFINITE))
            }
            #[inline]
            fn from_f64<R: Rounding + ?Sized>(x: f64, r: &mut R) -> ($t, Flags) {
                float_from_f64!($t, x, r)
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn to_f32(self) -> (f32, Flags) {
                f32::from_f64(self as f64, &mut NearestEven)
            }
            #[inline]
            fn is_zero(self) -> bool {
                self == 0.0
            }
            #[inline]
            fn raw_bits(self) -> u64 {
                self.to_bits() as u64
            }
            #[inline]
            fn sq_zero() -> Self::SqAcc {
                ScaledSumSq {
                    scale: 0.0,
                    ssq: 0.0,
                    nonfinite: 0.0,
                }
            }
            #[inline]
            fn sq_add(acc: Self::SqAcc, x: $t) -> Self::SqAcc {
                let ax = if x < 0.0 { -x } else { x };
                if !ax.is_finite() {
                    return ScaledSumSq {
                        nonfinite: acc.nonfinite + ax,
                        ..acc
                    };
                }
                if ax == 0.0 {
                    acc
                } else if acc.scale < ax {
                    let q = acc.scale / ax;
                    ScaledSumSq {
                        scale: ax,
                        ssq: 1.0 + acc.ssq * q * q,
                        ..acc
                    }
                } else {
                    let q = ax / acc.scale;
                    ScaledSumSq {
                        ssq: acc.ssq + q * q,
                        ..acc
                    }
                }
            }
            #[inline]
            fn sq_merge(a: Self::SqAcc, b: Self::SqAcc) -> Self::SqAcc {
                let nonfinite = a.nonfinite + b.nonfinite;
                let (big, small) = if a.scale >= b.scale { (a, b) } else { (b, a) };
                if small.scale == 0.0 {
                    return ScaledSumSq { nonfinite, ..big };
                }
                let q = small.scale / big.scale;
                ScaledSumSq {
                    scale: big.scale,
                    ssq: big.ssq + small.ssq * q * q,
                    nonfinite,
                }
            }
            #[inline]
            fn sq_total<R: Rounding + ?Sized>(acc: Self::SqAcc, _r: &mut R) -> ($t, Flags) {
                if acc.nonfinite != 0.0 {
                    return (acc.nonfinite, Flags::NONFINITE);
                }
                let v = (acc.scale * acc.ssq) * acc.scale;
                let f = float_op_flags(v.is_finite(), v.is_subnormal(), true)
                    | Flags::when(v == 0.0 && acc.scale != 0.0, Flags::UNDERFLOW);
                (v, f)
            }
            #[inline]
            fn sq_sqrt(acc: Self::SqAcc) -> ($t, Flags) {
                if acc.nonfinite != 0.0 {
                    return (acc.nonfinite, Flags::NONFINITE);
                }
                let v = acc.scale * $sqrt(acc.ssq);
                (v, float_op_flags(v.is_finite(), v.is_subnormal(), true))
            }
            #[inline]
            fn sq_to_f64(acc: Self::SqAcc) -> f64 {
                if acc.nonfinite != 0.0 {
                    return acc.nonfinite as f64;
                }
                let s = acc.scale as f64;
                s * s * acc.ssq as f64
            }
        }
    };
}

/// Flags of a value a float formula produced (not one IEEE operation): non-finite, or non-zero and below the
/// normal range. Layers that compute in plain float arithmetic report their outputs with it.
#[inline]
pub(crate) fn float_value_flags<T: Scalar>(v: T) -> Flags {
    let f = v.to_f64();
    float_result_flags(f.is_finite(), f != 0.0 && libm::fabs(f) < T::RESOLUTION)
}

/// Flags of a float result: non-finite or subnormal.
#[inline]
fn float_result_flags(finite: bool, subnormal: bool) -> Flags {
    Flags::when(!finite, Flags::NONFINITE) | Flags::when(subnormal, Flags::SUBNORMAL)
}

/// Flags of a float operation; a non-finite result from finite operands is an overflow.
#[inline]
fn float_op_flags(finite: bool, subnormal: bool, inputs_finite: bool) -> Flags {
    float_result_flags(finite, subnormal) | Flags::when(!finite && inputs_finite, Flags::OVERFLOW)
}

/// `from_f64` for a float type: exact when representable, else the neighbour the rounding mode picks.
macro_rules! float_from_f64 {
    ($t:ident, $x:expr, $r:expr) => {{
        let x: f64 = $x;
        if x.is_nan() {
            return ($t::NAN, Flags::NONFINITE);
        }
        if x.is_infinite() {
            return (x as $t, Flags::NONFINITE);
        }
        if x > $t::MAX as f64 {
            return ($t::MAX, Flags::OVERFLOW);
        }
        if x < $t::MIN as f64 {
            return ($t::MIN, Flags::OVERFLOW);
        }
        let n = x as $t; // nearest-even, finite here
        let nf = n as f64;
        if nf == x {
            return (n, Flags::when(n.is_subnormal(), Flags::SUBNORMAL));
        }
        let (lo, hi) = if nf < x {
            (n, n.next_up())
        } else {
            (n.next_down(), n)
        };
        // lo < x < hi are adjacent and of one sign (or lo/hi zero), so both differences are exact.
        let below = x - lo as f64;
        let gap = hi as f64 - lo as f64;
        let v = if $r.round_up(below, gap, lo.to_bits() & 1 == 0) {
            hi
        } else {
            lo
        };
        let v = if v.is_infinite() {
            if v > 0.0 { $t::MAX } else { $t::MIN }
        } else {
            v
        };
        (
            v,
            Flags::when(v == 0.0, Flags::UNDERFLOW)
                | Flags::when(v.is_subnormal(), Flags::SUBNORMAL),
        )
    }};
}

float_scalar!(
    f32,
    libm::sqrtf,
    "IEEE binary32. Accumulator: `f32` itself (no guard bits; round to nearest-even on every add)."
);
float_scalar!(
    f64,
    libm::sqrt,
    "IEEE binary64, the host reference. Accumulator: `f64` itself (no guard bits)."
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::{Floor, NearestEven, Stochastic};
    use rand_core::SeedableRng;

    #[test]
    fn f32_from_f64_modes() {
        let x = 1.0f64 + f64::EPSILON; // between 1 and next_up(1f32), closer to 1
        assert_eq!(f32::from_f64(x, &mut Floor), (1.0, Flags::NONE));
        assert_eq!(f32::from_f64(x, &mut NearestEven), (1.0, Flags::NONE));
        let neg = -x;
        assert_eq!(f32::from_f64(neg, &mut Floor).0, (-1.0f32).next_down());
        assert_eq!(
            f32::from_f64(1e300, &mut NearestEven),
            (f32::MAX, Flags::OVERFLOW)
        );
        assert_eq!(
            f32::from_f64(1e-60, &mut NearestEven),
            (0.0, Flags::UNDERFLOW)
        );
        assert_eq!(f32::from_f64(1e-60, &mut Floor), (0.0, Flags::UNDERFLOW));
        let (v, f) = f32::from_f64(1e-40, &mut NearestEven);
        assert!(v.is_subnormal() && f == Flags::SUBNORMAL);
        let (v, f) = f32::from_f64(f64::NAN, &mut NearestEven);
        assert!(v.is_nan() && f == Flags::NONFINITE);
    }

    #[test]
    fn f32_stochastic_conversion_is_unbiased() {
        let mut r = Stochastic(rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(3));
        let x = 1.0f64 + 0.25 * f32::EPSILON as f64;
        let n = 100_000;
        let ups = (0..n).filter(|_| f32::from_f64(x, &mut r).0 > 1.0).count() as f64;
        let sigma = (0.25f64 * 0.75 * n as f64).sqrt();
        assert!((ups - 0.25 * n as f64).abs() < 4.0 * sigma, "{ups}");
    }

    #[test]
    fn float_ops_flag_ieee_events() {
        assert_eq!(
            f32::MAX.add(f32::MAX),
            (f32::INFINITY, Flags::OVERFLOW | Flags::NONFINITE)
        );
        assert_eq!(f32::INFINITY.add(1.0), (f32::INFINITY, Flags::NONFINITE));
        assert_eq!(
            1e-30f32.mul(1e-30, &mut NearestEven),
            (0.0, Flags::UNDERFLOW)
        );
        let (v, f) = 1e-20f32.mul(1e-20, &mut NearestEven);
        assert!(v.is_subnormal() && f == Flags::SUBNORMAL);
        let acc = f32::mac(f32::mac(f32::acc_zero(), 1e-30, 1e-30), 2.0, 3.0);
        assert_eq!(f32::narrow(acc, &mut NearestEven), (6.0, Flags::UNDERFLOW));
    }

    #[test]
    fn float_sum_of_squares_neither_overflows_nor_underflows() {
        let big = [3e30f32, 4e30];
        let acc = big.iter().fold(f32::sq_zero(), |a, &x| f32::sq_add(a, x));
        let (n, f) = f32::sq_sqrt(acc);
        assert!((n - 5e30).abs() <= 5e30 * 1e-6 && f.is_empty(), "{n} {f}");
        assert_eq!(
            f32::sq_total(acc, &mut NearestEven).1,
            Flags::OVERFLOW | Flags::NONFINITE
        );
        let tiny = [3e-30f32, 4e-30];
        let acc = tiny.iter().fold(f32::sq_zero(), |a, &x| f32::sq_add(a, x));
        assert!((f32::sq_sqrt(acc).0 - 5e-30).abs() <= 5e-30 * 1e-6);
        let acc = f32::sq_add(acc, f32::NAN);
        assert_eq!(f32::sq_sqrt(acc).1, Flags::NONFINITE);
    }
}
