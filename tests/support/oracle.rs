//! Wide-integer (`i128`) oracles for fixed-point results and their flags.
//!
//! Written without the core's rounding code: floor is `div_euclid`, nearest-even compares the exact remainder
//! with half the divisor. Every expectation is derived from the exact rational result `num / 2^shift`.

use gradscope_core::Flags;

/// A deterministic rounding mode of the oracle.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Toward −∞.
    Floor,
    /// To nearest, ties to even.
    NearestEven,
}

/// `num / 2^shift` rounded to an integer with `mode`.
pub fn round_pow2(num: i128, shift: u32, mode: Mode) -> i128 {
    if shift >= 126 {
        // The value num / 2^shift is below half a unit whenever |num| < 2^125, as every caller's is.
        assert!(num.unsigned_abs() < 1 << 125, "oracle range");
        return match mode {
            Mode::Floor => num.signum().min(0),
            Mode::NearestEven => 0,
        };
    }
    let d = 1i128 << shift;
    let q = num.div_euclid(d);
    let r = num.rem_euclid(d);
    match mode {
        Mode::Floor => q,
        Mode::NearestEven => {
            if 2 * r > d || (2 * r == d && q.rem_euclid(2) == 1) {
                q + 1
            } else {
                q
            }
        }
    }
}

/// The flags a fixed-point result must carry when the exact value is `num / 2^shift` (in raw units), the
/// rounding chose the integer `rounded`, and the type's raw range is `[min, max]`. Returns the saturated raw
/// result and its flags.
pub fn outcome(num: i128, shift: u32, rounded: i128, min: i128, max: i128) -> (i128, Flags) {
    let clamped = rounded.clamp(min, max);
    let mut f = Flags::NONE;
    if clamped != rounded {
        f |= Flags::OVERFLOW;
    }
    let back = if shift >= 127 {
        (clamped == 0).then_some(0)
    } else {
        clamped.checked_mul(1i128 << shift)
    };
    if back != Some(num) {
        f |= Flags::INEXACT;
    }
    if num != 0 && clamped == 0 {
        f |= Flags::UNDERFLOW;
    }
    (clamped, f)
}

/// The expected raw result and flags of narrowing the exact value `num / 2^shift` with `mode`.
pub fn expect(num: i128, shift: u32, mode: Mode, min: i128, max: i128) -> (i128, Flags) {
    outcome(num, shift, round_pow2(num, shift, mode), min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracle_rounding() {
        assert_eq!(round_pow2(5, 2, Mode::Floor), 1);
        assert_eq!(round_pow2(-5, 2, Mode::Floor), -2);
        assert_eq!(round_pow2(6, 2, Mode::NearestEven), 2);
        assert_eq!(round_pow2(-6, 2, Mode::NearestEven), -2);
        assert_eq!(round_pow2(-10, 2, Mode::NearestEven), -2);
        assert_eq!(expect(-1, 4, Mode::Floor, -8, 7), (-1, Flags::INEXACT));
        assert_eq!(
            expect(1, 4, Mode::Floor, -8, 7),
            (0, Flags::INEXACT | Flags::UNDERFLOW)
        );
        assert_eq!(
            expect(200, 2, Mode::Floor, -8, 7),
            (7, Flags::INEXACT | Flags::OVERFLOW)
        );
    }
}
