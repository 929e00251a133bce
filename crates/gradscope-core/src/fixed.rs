//! Fixed-point scalars: [`Fx<F>`] (Q(31−F).F in an `i32`) and [`Fx16<F>`] (Q(15−F).F in an `i16`).
//!
//! Names follow the `fixed` crate: [`I16F16`] = Q16.16, [`I8F24`] = Q8.24, [`I1F15`] = Q15 (CMSIS `q15_t`).
//!
//! Arithmetic never uses bare `+`/`*` on the raw integers: every result is computed exactly in a wider integer,
//! rounded with the caller's [`Rounding`], then saturated to the range, and the [`Flags`] say what happened.
//!
//! | type | storage | LSB | range | accumulator ([`WideAcc`]) | guard bits |
//! |---|---|---|---|---|---|
//! | [`I16F16`] | `i32` | 2⁻¹⁶ | [−32768, 32768 − 2⁻¹⁶] | `i64`, products at 32 fraction bits | 1 over one full-range product (2⁶²); 31 for values of magnitude ≤ 1 |
//! | [`I8F24`] | `i32` | 2⁻²⁴ | [−128, 128 − 2⁻²⁴] | `i64`, products at 48 fraction bits | 1 over one full-range product; 15 for values ≤ 1 |
//! | [`I1F15`] | `i16` | 2⁻¹⁵ | [−1, 1 − 2⁻¹⁵] | `i64`, products at 30 fraction bits | 33 (as CMSIS `arm_mat_mult_q15`: 34.30) |
//!
//! The accumulator is exact until it would leave `i64`; then it saturates, stays saturated (sticky) and the
//! narrowed result carries [`Flags::OVERFLOW`]. It never wraps.
//!
//! Sums of squares accumulate raw squares in a `u128` (at most 2⁶² each), which cannot overflow for fewer than
//! 2⁶⁶ terms; the L2 norm is the integer square root of that exact sum, rounded to nearest.

use core::fmt;

use crate::flags::Flags;
use crate::round::Rounding;
use crate::scalar::{Coef, Scalar};

/// Exact fixed-point accumulator: the running sum of raw products (at `2F` fraction bits) in an `i64`, and
/// whether it ever saturated.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct WideAcc {
    /// Running sum, saturated at the `i64` bounds.
    pub value: i64,
    /// True once any addition saturated; the final result then carries [`Flags::OVERFLOW`].
    pub saturated: bool,
}

impl WideAcc {
    #[inline]
    fn add(self, p: i64) -> WideAcc {
        let (s, o) = self.value.overflowing_add(p);
        // On overflow the true sum has the sign of `p` (both operands share it).
        let value = if o {
            if p > 0 { i64::MAX } else { i64::MIN }
        } else {
            s
        };
        WideAcc {
            value,
            saturated: self.saturated | o,
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
}

/// The exact product of two raw values as an `i64`, in the narrowest multiplication that holds it: a 16-bit
/// product fits 32 bits, which a Cortex-M0 computes in one instruction instead of a 64-bit library call.
trait RawMul: Copy {
    fn product(a: Self, b: Self) -> i64;
}

impl RawMul for i32 {
    #[inline(always)]
    fn product(a: i32, b: i32) -> i64 {
        a as i64 * b as i64
    }
}

impl RawMul for i16 {
    #[inline(always)]
    fn product(a: i16, b: i16) -> i64 {
        (a as i32 * b as i32) as i64
    }
}

/// The exact product of an `i32` and an `i64`, from two 32 × 32-bit products: a core without a 64-bit
/// multiplier (Cortex-M0) does two short multiplications instead of a full 128-bit one.
#[inline]
fn mul_wide(a: i32, q: i64) -> i128 {
    let (ua, uq) = (a.unsigned_abs() as u64, q.unsigned_abs());
    let lo = ua * (uq & 0xFFFF_FFFF);
    let hi = ua * (uq >> 32);
    let m = ((hi as u128) << 32) + lo as u128;
    // |a·q| < 2^31 · 2^63 = 2^94: the magnitude fits an i128 with room to spare.
    if (a < 0) != (q < 0) {
        -(m as i128)
    } else {
        m as i128
    }
}

/// An exact `v · 2^−frac` as an `i64` at possibly fewer fraction bits: dropped bits are OR-ed into the lowest
/// kept bit (sticky), so rounding the result gives the same answer as rounding `v` (stochastic rounding: to
/// within 2⁻⁶² relative).
#[inline]
pub(crate) fn reduce(v: i128, frac: u32) -> (i64, u32) {
    let k = (128 - v.unsigned_abs().leading_zeros()).saturating_sub(62);
    if k == 0 {
        return (v as i64, frac);
    }
    if k > frac {
        // Beyond 2^62 in integer units: saturates every format.
        return (if v < 0 { -(1i64 << 62) } else { 1i64 << 62 }, 0);
    }
    let sticky = (v & ((1i128 << k) - 1) != 0) as i64;
    ((v >> k) as i64 | sticky, frac - k)
}

macro_rules! fixed_family {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $bits:literal, $guard:literal, $names:expr) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize))]
        pub struct $name<const F: u32>($raw);

        impl<const F: u32> $name<F> {
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
                let () = Self::VALID;
                let c = if v > <$raw>::MAX as i64 {
                    <$raw>::MAX
                } else if v < <$raw>::MIN as i64 {
                    <$raw>::MIN
                } else {
                    v as $raw
                };
                (Self(c), Flags::when(c as i64 != v, Flags::OVERFLOW | Flags::INEXACT))
            }

            /// Round `v · 2^−s` (raw units) to the grid, saturate, flag.
            #[inline]
            fn round_wide<R: Rounding + ?Sized>(v: i64, s: u32, r: &mut R) -> (Self, Flags) {
                let q = r.shr(v, s);
                let (out, f) = Self::saturate(q);
                let dropped = s > 0 && (v as u64) & ((1u64 << s.min(62)) - 1) != 0;
                let f = f
                    | Flags::when(dropped, Flags::INEXACT)
                    | Flags::when(v != 0 && out.0 == 0, Flags::UNDERFLOW);
                (out, f)
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
            const IS_FLOAT: bool = false;

            #[inline]
            fn acc_zero() -> WideAcc {
                WideAcc::default()
            }
            #[inline]
            fn mac(acc: WideAcc, a: Self, b: Self) -> WideAcc {
                // |a·b| <= 2^(2·bits−2) fits i64 for both families (and i32 for i16 raws).
                acc.add(<$raw as RawMul>::product(a.0, b.0))
            }
            #[inline]
            fn acc_add(acc: WideAcc, x: Self) -> WideAcc {
                // x at 2F fraction bits; |x| < 2^(bits−1+F) <= 2^62.
                acc.add((x.0 as i64) << F)
            }
            #[inline]
            fn narrow<R: Rounding + ?Sized>(acc: WideAcc, r: &mut R) -> (Self, Flags) {
                let (v, f) = Self::round_wide(acc.value, F, r);
                (v, f | Flags::when(acc.saturated, Flags::OVERFLOW | Flags::INEXACT))
            }
            #[inline]
            fn add(self, rhs: Self) -> (Self, Flags) {
                Self::saturate(self.0 as i64 + rhs.0 as i64)
            }
            #[inline]
            fn sub(self, rhs: Self) -> (Self, Flags) {
                Self::saturate(self.0 as i64 - rhs.0 as i64)
            }
            #[inline]
            fn neg(self) -> (Self, Flags) {
                Self::saturate(-(self.0 as i64))
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
                let scaled = x * Self::ONE_RAW_F64;
                // Beyond 2^bits no rounding can bring it back in range (this also catches ±∞).
                let limit = (1u64 << $bits) as f64;
                if scaled >= limit || scaled <= -limit {
                    let sat = if scaled > 0.0 { i64::MAX } else { i64::MIN };
                    let (v, f) = Self::saturate(sat);
                    return (v, f | Flags::when(x.is_infinite(), Flags::NONFINITE));
                }
                // Exact value in units of 2^−(F+G); G guard bits keep |t| < 2^61. One more bit carries
                // "something below was non-zero" (sticky), so nearest-even sees ties exactly.
                let t = scaled * (1u64 << $guard) as f64;
                let fl = libm::floor(t);
                let wide = (fl as i64) * 2 + (fl != t) as i64;
                // `wide` is non-zero for every non-zero x (the sticky bit), so UNDERFLOW is exact too.
                Self::round_wide(wide, $guard + 1, r)
            }
            #[inline]
            fn scale_by<R: Rounding + ?Sized>(self, c: &Coef, r: &mut R) -> (Self, Flags) {
                if !c.is_finite() {
                    return (Self(0), Flags::NONFINITE);
                }
                let (q, cf) = c.fixed();
                let (v, frac) = reduce(mul_wide(self.0 as i32, q), F + cf);
                <Self as Fixed>::from_wide(v, frac, r)
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self.0 as f64 * Self::LSB
            }
            #[inline]
            fn to_f32(self) -> (f32, Flags) {
                let x = self.to_f64();
                let y = x as f32; // never overflows or underflows: |x| in [2^−F, 2^(bits−1−F)]
                (y, Flags::when(y as f64 != x, Flags::INEXACT))
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
                acc as f64 * Self::LSB * Self::LSB
            }
        }

        impl<const F: u32> Fixed for $name<F> {
            const FRAC: u32 = F;
            #[inline]
            fn raw(self) -> i64 {
                self.0 as i64
            }
            #[inline]
            fn from_wide<R: Rounding + ?Sized>(v: i64, frac: u32, r: &mut R) -> (Self, Flags) {
                if frac >= F {
                    Self::round_wide(v, frac - F, r)
                } else {
                    // Exact left shift, saturating (any |v| >= 2^62 saturates every format anyway).
                    let shifted = (v as i128) << (F - frac).min(64);
                    Self::saturate(shifted.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
                }
            }
            #[inline]
            fn from_ratio<R: Rounding + ?Sized>(num: i64, den: i64, r: &mut R) -> (Self, Flags) {
                if den <= 0 {
                    return (Self(0), Flags::NONFINITE);
                }
                let (q, rem) = (num.div_euclid(den), num.rem_euclid(den));
                let (v, f) = Self::saturate(r.round_frac(q, rem as u64, den as u64));
                let f = f
                    | Flags::when(rem != 0, Flags::INEXACT)
                    | Flags::when(num != 0 && v.0 == 0, Flags::UNDERFLOW);
                (v, f)
            }
        }

        impl<const F: u32> $name<F> {
            const ONE_RAW_F64: f64 = (1u64 << F) as f64;
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
    Fx, i32, 32, 29, ["I32F0", "I31F1", "I30F2", "I29F3", "I28F4", "I27F5", "I26F6", "I25F7", "I24F8", "I23F9", "I22F10", "I21F11", "I20F12", "I19F13", "I18F14", "I17F15", "I16F16", "I15F17", "I14F18", "I13F19", "I12F20", "I11F21", "I10F22", "I9F23", "I8F24", "I7F25", "I6F26", "I5F27", "I4F28", "I3F29", "I2F30", "I1F31"]
);
fixed_family!(
    /// Signed fixed point in an `i16` with `F` fraction bits (Q(15−F).F). See the [module docs](self) for
    /// accumulator width and guard bits.
    Fx16, i16, 16, 45, ["I16F0", "I15F1", "I14F2", "I13F3", "I12F4", "I11F5", "I10F6", "I9F7", "I8F8", "I7F9", "I6F10", "I5F11", "I4F12", "I3F13", "I2F14", "I1F15"]
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

    #[test]
    fn wide_products_are_exact() {
        for a in [0, 1, -1, i32::MAX, i32::MIN, 12345, -98765] {
            for q in [0, 1, -1, i64::MAX, i64::MIN + 1, 1 << 40, -(1 << 33) + 7] {
                assert_eq!(mul_wide(a, q), a as i128 * q as i128, "{a} {q}");
            }
        }
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
}
