//! Float arithmetic and math backends, chosen by type (never by a cargo feature, which would unify across a
//! build and silently change results). The foundation of every float formula in the crate: activations, losses,
//! the gated cells and the horizon model all evaluate their transcendental functions through here.
//!
//! - [`Libm`]: the `libm` crate for `f32` and `f64`; the same code on the host and on the MCU.
//! - [`Fast`]: `micromath`'s approximations for `f32` (smaller and faster on an MCU, less accurate). micromath
//!   has `exp` and `ln` but no `tanh` or `erf`: here `tanh(x) = 1 − 2/(e^{2x} + 1)` and `erf` is Abramowitz &
//!   Stegun 7.1.26 (absolute error ≤ 1.5·10⁻⁷ in exact arithmetic), both on micromath's `exp`.

use core::ops::{Add, Div, Mul, Neg, Sub};

/// The float arithmetic the activation formulas need.
pub trait Real:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// The constant `x` rounded to this type.
    fn c(x: f64) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
}

impl Real for f32 {
    #[inline]
    fn c(x: f64) -> f32 {
        x as f32
    }
    #[inline]
    fn abs(self) -> f32 {
        libm::fabsf(self)
    }
}

impl Real for f64 {
    #[inline]
    fn c(x: f64) -> f64 {
        x
    }
    #[inline]
    fn abs(self) -> f64 {
        libm::fabs(self)
    }
}

/// Transcendental functions of one backend for the float type `T`.
pub trait Math<T: Real> {
    /// Backend name for reports.
    const NAME: &'static str;
    /// `e^x`.
    fn exp(x: T) -> T;
    /// `e^x − 1`.
    fn expm1(x: T) -> T;
    /// `ln(1 + x)`.
    fn ln_1p(x: T) -> T;
    /// Hyperbolic tangent.
    fn tanh(x: T) -> T;
    /// Error function.
    fn erf(x: T) -> T;
}

/// The `libm` backend (reference quality).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Libm;

/// The `micromath` backend (fast approximations, `f32` only).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Fast;

/// The logistic sigmoid in PyTorch's stable form, which never evaluates `e^(+large)`: `1/(1 + e^−x)` for
/// `x ≥ 0`, `e^x/(1 + e^x)` below. The one definition every sigmoid in the crate uses.
#[inline]
pub fn sigmoid<T: Real, M: Math<T>>(x: T) -> T {
    let one = T::c(1.0);
    if x >= T::c(0.0) {
        one / (one + M::exp(-x))
    } else {
        let e = M::exp(x);
        e / (one + e)
    }
}

/// `Math<$t> for Libm`: each function is libm's of that width.
macro_rules! libm_math {
    ($t:ty, $exp:path, $expm1:path, $log1p:path, $tanh:path, $erf:path) => {
        impl Math<$t> for Libm {
            const NAME: &'static str = "libm";
            #[inline]
            fn exp(x: $t) -> $t {
                $exp(x)
            }
            #[inline]
            fn expm1(x: $t) -> $t {
                $expm1(x)
            }
            #[inline]
            fn ln_1p(x: $t) -> $t {
                $log1p(x)
            }
            #[inline]
            fn tanh(x: $t) -> $t {
                $tanh(x)
            }
            #[inline]
            fn erf(x: $t) -> $t {
                $erf(x)
            }
        }
    };
}

libm_math!(
    f32,
    libm::expf,
    libm::expm1f,
    libm::log1pf,
    libm::tanhf,
    libm::erff
);
libm_math!(
    f64,
    libm::exp,
    libm::expm1,
    libm::log1p,
    libm::tanh,
    libm::erf
);

impl Math<f32> for Fast {
    const NAME: &'static str = "micromath";
    #[inline]
    fn exp(x: f32) -> f32 {
        // micromath's exp is not defined for very negative inputs; e^x underflows there anyway.
        if x < -87.0 {
            0.0
        } else {
            micromath::F32Ext::exp(x)
        }
    }
    #[inline]
    fn expm1(x: f32) -> f32 {
        Self::exp(x) - 1.0
    }
    #[inline]
    fn ln_1p(x: f32) -> f32 {
        micromath::F32Ext::ln(1.0 + x)
    }
    #[inline]
    fn tanh(x: f32) -> f32 {
        let a = libm::fabsf(x);
        let t = if a > 9.0 {
            1.0
        } else {
            1.0 - 2.0 / (Self::exp(2.0 * a) + 1.0)
        };
        if x < 0.0 {
            -t
        } else if x >= 0.0 {
            t
        } else {
            x
        }
    }
    #[inline]
    fn erf(x: f32) -> f32 {
        // Abramowitz & Stegun 7.1.26.
        let a = libm::fabsf(x);
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
        let e = 1.0 - poly * Self::exp(-a * a);
        if x < 0.0 {
            -e
        } else if x >= 0.0 {
            e
        } else {
            x
        }
    }
}
