//! `defmt::Format` for types whose derived output would be unreadable on a log line.

use crate::fixed::{Fx, Fx16};
use crate::flags::Flags;

impl defmt::Format for Flags {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "Flags(o{=bool} u{=bool} i{=bool} n{=bool} s{=bool})",
            self.contains(Flags::OVERFLOW),
            self.contains(Flags::UNDERFLOW),
            self.contains(Flags::INEXACT),
            self.contains(Flags::NONFINITE),
            self.contains(Flags::SUBNORMAL)
        )
    }
}

impl<const F: u32> defmt::Format for Fx<F> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=i32}/2^{=u32}", self.to_bits(), F)
    }
}

impl<const F: u32> defmt::Format for Fx16<F> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=i16}/2^{=u32}", self.to_bits(), F)
    }
}
