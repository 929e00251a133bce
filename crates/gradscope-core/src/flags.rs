//! Numeric events as values.
//!
//! Every operation that can lose information returns its result together with a [`Flags`] set saying what it
//! did to the exact result (the model is libm's `FpResult { val, status }`). Nothing is global, nothing panics.
//!
//! Semantics, the same for every scalar type:
//!
//! | flag | set when |
//! |---|---|
//! | [`Flags::OVERFLOW`] | the exact result lay beyond the type's finite range: fixed point saturated to `MIN`/`MAX`; a float became ±∞ from finite operands |
//! | [`Flags::UNDERFLOW`] | the exact result was non-zero and the returned value is zero |
//! | [`Flags::INEXACT`] | the returned value differs from the exact result (fixed point and the 16-bit floats of [`crate::float16`]; `f32` and `f64` round on every op and do not track it) |
//! | [`Flags::NONFINITE`] | a NaN or ±∞ was produced or met (a non-finite float input, or a non-finite float converted to fixed point) |
//! | [`Flags::SUBNORMAL`] | a float result (or a product inside a kernel) is non-zero and below the normal range |

use core::fmt;
use core::ops::{BitOr, BitOrAssign};

/// A small set of numeric events; see the [module docs](self) for when each is set.
#[derive(Copy, Clone, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Flags(u8);

impl Flags {
    /// No event: the result is exact (fixed point) or a normal finite float.
    pub const NONE: Flags = Flags(0);
    /// Saturated (fixed point) or overflowed to ±∞ (float).
    pub const OVERFLOW: Flags = Flags(1);
    /// A non-zero exact result became zero.
    pub const UNDERFLOW: Flags = Flags(1 << 1);
    /// The result differs from the exact value (fixed point, `f16` and `bf16`).
    pub const INEXACT: Flags = Flags(1 << 2);
    /// A NaN or ±∞ was produced or consumed.
    pub const NONFINITE: Flags = Flags(1 << 3);
    /// A non-zero float result below the normal range.
    pub const SUBNORMAL: Flags = Flags(1 << 4);

    const NAMES: [(Flags, &'static str); 5] = [
        (Flags::OVERFLOW, "OVERFLOW"),
        (Flags::UNDERFLOW, "UNDERFLOW"),
        (Flags::INEXACT, "INEXACT"),
        (Flags::NONFINITE, "NONFINITE"),
        (Flags::SUBNORMAL, "SUBNORMAL"),
    ];

    /// The raw bit pattern.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set with exactly these bits; unknown bits are dropped.
    #[inline]
    pub const fn from_bits_truncate(bits: u8) -> Flags {
        Flags(bits & 0b1_1111)
    }

    /// True when no event is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every event in `other` is also in `self`.
    #[inline]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when `self` and `other` share at least one event.
    #[inline]
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    /// The union of both sets.
    #[inline]
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// `flag` if `cond`, else [`Flags::NONE`]; branch-free so it costs nothing once the flags are unused.
    #[inline]
    pub const fn when(cond: bool, flag: Flags) -> Flags {
        Flags(flag.0 * cond as u8)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    #[inline]
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

impl core::ops::BitAnd for Flags {
    type Output = Flags;
    #[inline]
    fn bitand(self, rhs: Flags) -> Flags {
        Flags(self.0 & rhs.0)
    }
}

impl BitOrAssign for Flags {
    #[inline]
    fn bitor_assign(&mut self, rhs: Flags) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("NONE");
        }
        let mut first = true;
        for (flag, name) in Flags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    #[test]
    fn every_event_has_its_own_bit_and_name() {
        // Five distinct, non-empty single bits: a lost or shared bit would merge two events.
        let all = Flags::NAMES.map(|(f, _)| f);
        assert_eq!(all.map(Flags::bits), [1, 2, 4, 8, 16]);
        for (i, a) in all.iter().enumerate() {
            assert!(!a.is_empty());
            for b in &all[i + 1..] {
                assert_eq!(*a & *b, Flags::NONE);
                assert_eq!((*a | *b) & *a, *a);
            }
        }
        assert_eq!(
            Flags::from_bits_truncate(0xff),
            all.iter().fold(Flags::NONE, |s, &f| s | f)
        );
        assert_eq!(format!("{:?}", Flags::NONE), "NONE");
        assert_eq!(format!("{}", Flags::OVERFLOW), "OVERFLOW");
        assert_eq!(
            format!("{}", Flags::NONFINITE | Flags::OVERFLOW | Flags::SUBNORMAL),
            "OVERFLOW | NONFINITE | SUBNORMAL"
        );
    }

    #[test]
    fn set_operations() {
        let f = Flags::OVERFLOW | Flags::INEXACT;
        assert!(f.contains(Flags::OVERFLOW));
        assert!(!f.contains(Flags::OVERFLOW | Flags::UNDERFLOW));
        assert!(f.intersects(Flags::OVERFLOW | Flags::UNDERFLOW));
        assert!(Flags::NONE.is_empty());
        assert_eq!(Flags::when(true, Flags::SUBNORMAL), Flags::SUBNORMAL);
        assert_eq!(Flags::when(false, Flags::SUBNORMAL), Flags::NONE);
        assert_eq!(Flags::from_bits_truncate(0xff).bits(), 0b1_1111);
    }
}
