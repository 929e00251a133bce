//! Diagnostic sinks. Kernels report the [`Flags`] of every value they produce to a [`Probe`].
//!
//! `()` is the probe that is off: its `record` is empty and inlined, so the flag computations feeding it are
//! dead code and the optimiser removes them. Counters are plain structs owned by the caller.

use crate::flags::Flags;

/// Receives the events of each value a kernel produces (one call per output value).
pub trait Probe {
    /// False for a probe that ignores every event: kernels then skip the per-product event checks entirely
    /// (the values are the same either way). Array accumulators keep the optimizer from deleting those
    /// checks on its own, so this is what makes "off" free in `matmul`, `matvec_t` and `outer_acc`.
    const ACTIVE: bool = true;

    /// Whether an inactive probe still watches for the values that carry events in themselves: non-finite
    /// floats (kernels then run their fast paths, check each output once, and report only the outputs that are
    /// not finite, with the events of their exact recomputation) and every fixed-point narrowing, with flags
    /// that may leave out every event but the value's own (its saturation). What a training step needs to
    /// spot a divergence, at the cost of one scan per float output vector and one saturation test per
    /// fixed-point value, or on a Cortex-M4 for the 16-bit formats one read of the processor's sticky saturation
    /// flag per kernel ([`Scalar::STICKY_SATURATION`](crate::Scalar::STICKY_SATURATION)). Such a probe may get
    /// only the values that have events, and a kernel's after all its outputs.
    const WATCH: bool = Self::ACTIVE;

    /// Record the events of one produced value.
    fn record(&mut self, flags: Flags);

    /// Record `flags` if this probe wants them: always when active; when it only watches, if they are a
    /// value's own events (non-finite, overflow or saturation).
    #[inline(always)]
    fn note(&mut self, flags: Flags) {
        if Self::ACTIVE
            || (Self::WATCH && flags.intersects(Flags::NONFINITE.union(Flags::OVERFLOW)))
        {
            self.record(flags);
        }
    }
}

/// The probe that is off.
impl Probe for () {
    const ACTIVE: bool = false;
    #[inline(always)]
    fn record(&mut self, _flags: Flags) {}
}

/// Sticky union of every event seen.
impl Probe for Flags {
    #[inline]
    fn record(&mut self, flags: Flags) {
        *self |= flags;
    }
}

impl<P: Probe + ?Sized> Probe for &mut P {
    const ACTIVE: bool = P::ACTIVE;
    const WATCH: bool = P::WATCH;
    #[inline]
    fn record(&mut self, flags: Flags) {
        (**self).record(flags);
    }
}

/// Counts of produced values per event. Counters saturate at `u32::MAX` instead of wrapping.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventCounts {
    /// Values produced.
    pub values: u32,
    /// Values that saturated or overflowed.
    pub overflow: u32,
    /// Values whose non-zero exact result became zero.
    pub underflow: u32,
    /// Values that differ from the exact result (fixed point).
    pub inexact: u32,
    /// Values that are NaN or ±∞, or came from one.
    pub nonfinite: u32,
    /// Values (or products inside them) below the float normal range.
    pub subnormal: u32,
}

impl EventCounts {
    /// True when no value had an event that lost more than rounding (overflow, underflow, non-finite).
    pub fn is_clean(&self) -> bool {
        self.overflow == 0 && self.underflow == 0 && self.nonfinite == 0
    }

    /// The counts of both, added (saturating).
    pub fn merged(&self, other: &EventCounts) -> EventCounts {
        EventCounts {
            values: self.values.saturating_add(other.values),
            overflow: self.overflow.saturating_add(other.overflow),
            underflow: self.underflow.saturating_add(other.underflow),
            inexact: self.inexact.saturating_add(other.inexact),
            nonfinite: self.nonfinite.saturating_add(other.nonfinite),
            subnormal: self.subnormal.saturating_add(other.subnormal),
        }
    }
}

impl Probe for EventCounts {
    #[inline]
    fn record(&mut self, flags: Flags) {
        self.values = self.values.saturating_add(1);
        // Almost every value has no event (floats) or was only rounded (fixed point): a predictable branch
        // each instead of five counters.
        if flags == Flags::NONE {
            return;
        }
        if flags == Flags::INEXACT {
            self.inexact = self.inexact.saturating_add(1);
            return;
        }
        let bump = |c: &mut u32, f: Flags| *c = c.saturating_add(flags.contains(f) as u32);
        bump(&mut self.overflow, Flags::OVERFLOW);
        bump(&mut self.underflow, Flags::UNDERFLOW);
        bump(&mut self.inexact, Flags::INEXACT);
        bump(&mut self.nonfinite, Flags::NONFINITE);
        bump(&mut self.subnormal, Flags::SUBNORMAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_event() {
        let mut c = EventCounts::default();
        c.record(Flags::OVERFLOW | Flags::INEXACT);
        c.record(Flags::UNDERFLOW | Flags::INEXACT);
        c.record(Flags::NONE);
        c.record(Flags::INEXACT);
        c.record(Flags::SUBNORMAL | Flags::NONFINITE);
        assert_eq!(c.values, 5);
        assert_eq!(
            (c.overflow, c.underflow, c.inexact, c.nonfinite, c.subnormal),
            (1, 1, 3, 1, 1)
        );
        assert!(!c.is_clean());
        // Saturating, never wrapping, on every path.
        let mut full = EventCounts {
            values: u32::MAX,
            inexact: u32::MAX,
            overflow: u32::MAX,
            ..EventCounts::default()
        };
        full.record(Flags::INEXACT);
        full.record(Flags::OVERFLOW | Flags::INEXACT);
        assert_eq!(
            (full.values, full.inexact, full.overflow, full.underflow),
            (u32::MAX, u32::MAX, u32::MAX, 0)
        );
        fn through<P: Probe>(mut p: P) {
            p.record(Flags::SUBNORMAL);
        }
        let mut sticky = Flags::NONE;
        through(&mut sticky);
        assert_eq!(sticky, Flags::SUBNORMAL);
    }
}

/// Counts what a watching (not active) probe is given, as the training step's sink is: for tests that compare a
/// kernel's events under such a probe.
#[cfg(test)]
#[derive(Default, Debug, PartialEq)]
pub(crate) struct Watching(pub(crate) EventCounts);

#[cfg(test)]
impl Probe for Watching {
    const ACTIVE: bool = false;
    const WATCH: bool = true;
    fn record(&mut self, flags: Flags) {
        self.0.record(flags);
    }
}
