//! Loss scaling (Micikevicius et al. 2018): multiply the loss gradient by `s` before backpropagation, so small
//! gradients stay above the format's resolution, then divide the parameter gradients by `s` before the update.
//!
//! - Static: `s` is fixed.
//! - Dynamic (PyTorch's `GradScaler` rule): a step whose backward pass overflowed (saturated in fixed point,
//!   ±∞/NaN in float) is skipped and `s` is halved; after `growth_interval` clean steps in a row `s` doubles.
//!
//! The scale joins the loss gradient's factor before its one rounding ([`Objective::grad`](crate::loss::Objective::grad)).
//! In fixed point, dividing the parameter gradients back by `s` would round again and lose those below one LSB;
//! the optimizers take the scale instead ([`Optimizer::step`](crate::optim::Optimizer::step)'s `grad_scale`) and
//! fold it into their learning rate. [`LossScaler::unscale`] is there for code that needs true gradients.

use core::fmt;

use crate::flags::Flags;
use crate::layer::{Phase, Probes};
use crate::net::Params;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// A loss scale, static or dynamic.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LossScaler {
    scale: f64,
    dynamic: bool,
    growth_interval: u32,
    clean_steps: u32,
    skipped: u32,
}

/// Why a loss scaler could not be built.
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ScaleError {
    /// The scale is zero, negative, NaN or infinite.
    InvalidScale(f64),
    /// A growth interval of zero.
    ZeroInterval,
}

impl fmt::Display for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleError::InvalidScale(s) => {
                write!(f, "loss scale must be positive and finite, got {s}")
            }
            ScaleError::ZeroInterval => {
                f.write_str("loss-scale growth interval must be at least 1")
            }
        }
    }
}

impl core::error::Error for ScaleError {}

/// What to do with the step after the backward pass.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ScaleDecision {
    /// The gradients are good: update the weights.
    Step,
    /// The backward pass overflowed: skip the update (the scale was halved if dynamic).
    Skip,
}

const MIN_SCALE: f64 = 1.0 / (1u64 << 40) as f64;
const MAX_SCALE: f64 = (1u64 << 40) as f64;

impl LossScaler {
    /// A constant scale `s > 0`.
    pub fn fixed(s: f64) -> Result<LossScaler, ScaleError> {
        if !(s.is_finite() && s > 0.0) {
            return Err(ScaleError::InvalidScale(s));
        }
        Ok(LossScaler {
            scale: s,
            dynamic: false,
            growth_interval: u32::MAX,
            clean_steps: 0,
            skipped: 0,
        })
    }

    /// A dynamic scale starting at `initial`, doubling after `growth_interval` clean steps (PyTorch: 2¹⁶
    /// and 2000), halving on overflow; kept within [2⁻⁴⁰, 2⁴⁰].
    pub fn dynamic(initial: f64, growth_interval: u32) -> Result<LossScaler, ScaleError> {
        if growth_interval == 0 {
            return Err(ScaleError::ZeroInterval);
        }
        let s = LossScaler::fixed(initial)?;
        Ok(LossScaler {
            dynamic: true,
            growth_interval,
            scale: s.scale.clamp(MIN_SCALE, MAX_SCALE),
            ..s
        })
    }

    /// The current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Steps skipped because of overflow so far.
    pub fn skipped(&self) -> u32 {
        self.skipped
    }

    /// Decide after the backward pass, given the events it produced (e.g. the union of every layer's
    /// backward and gradient flags). Overflow or a non-finite value means [`ScaleDecision::Skip`] (and a
    /// halved scale if dynamic); otherwise [`ScaleDecision::Step`] (and a doubled scale after
    /// `growth_interval` clean steps).
    pub fn update(&mut self, backward_events: Flags) -> ScaleDecision {
        if backward_events.intersects(Flags::OVERFLOW | Flags::NONFINITE) {
            self.skipped = self.skipped.saturating_add(1);
            self.clean_steps = 0;
            if self.dynamic {
                self.scale = (self.scale * 0.5).max(MIN_SCALE);
            }
            return ScaleDecision::Skip;
        }
        self.clean_steps = self.clean_steps.saturating_add(1);
        if self.dynamic && self.clean_steps >= self.growth_interval {
            self.scale = (self.scale * 2.0).min(MAX_SCALE);
            self.clean_steps = 0;
        }
        ScaleDecision::Step
    }

    /// Divide every parameter gradient by the scale (PyTorch's `unscale_`), rounding once per value; events
    /// go to `probes` under each tensor's layer, phase [`Phase::Grad`].
    pub fn unscale<S>(
        &self,
        params: &mut (impl Params<S> + ?Sized),
        r: &mut (impl Rounding + ?Sized),
        probes: &mut (impl Probes + ?Sized),
    ) where
        S: Scalar,
    {
        let inv = crate::scalar::Coef::new(1.0 / self.scale);
        params.visit(0, &mut |t| {
            for g in t.grad.iter_mut() {
                let (v, f) = g.scale_by(&inv, r);
                probes.record(t.layer, Phase::Grad, f);
                *g = v;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_scale_backs_off_and_grows() {
        let mut s = LossScaler::dynamic(1024.0, 3).unwrap();
        assert_eq!(
            s.update(Flags::OVERFLOW | Flags::INEXACT),
            ScaleDecision::Skip
        );
        assert_eq!((s.scale(), s.skipped()), (512.0, 1));
        assert_eq!(s.update(Flags::NONFINITE), ScaleDecision::Skip);
        assert_eq!(s.scale(), 256.0);
        for _ in 0..3 {
            assert_eq!(
                s.update(Flags::INEXACT | Flags::UNDERFLOW),
                ScaleDecision::Step
            );
        }
        assert_eq!(s.scale(), 512.0);
        let mut f = LossScaler::fixed(8.0).unwrap();
        assert_eq!(f.update(Flags::OVERFLOW), ScaleDecision::Skip);
        assert_eq!(f.scale(), 8.0);
        assert!(LossScaler::fixed(0.0).is_err() && LossScaler::fixed(f64::NAN).is_err());
        assert_eq!(LossScaler::dynamic(1.0, 0), Err(ScaleError::ZeroInterval));
    }

    #[test]
    fn dynamic_scale_stays_within_its_documented_range() {
        let (lo, hi) = (2f64.powi(-40), 2f64.powi(40));
        assert_eq!(LossScaler::dynamic(2f64.powi(50), 1).unwrap().scale(), hi);
        let mut s = LossScaler::dynamic(2f64.powi(-39), 1).unwrap();
        assert_eq!(s.scale(), 2f64.powi(-39));
        s.update(Flags::OVERFLOW);
        s.update(Flags::OVERFLOW);
        assert_eq!((s.scale(), s.skipped()), (lo, 2));
        let mut s = LossScaler::dynamic(2f64.powi(39), 1).unwrap();
        s.update(Flags::NONE);
        s.update(Flags::NONE);
        assert_eq!(s.scale(), hi);
        // A fixed scale is the caller's, unclamped.
        assert_eq!(
            LossScaler::fixed(2f64.powi(50)).unwrap().scale(),
            2f64.powi(50)
        );
    }

    #[test]
    fn errors_say_what_was_wrong() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            ScaleError::InvalidScale(-1.0).to_string(),
            "loss scale must be positive and finite, got -1"
        );
        assert_eq!(
            ScaleError::ZeroInterval.to_string(),
            "loss-scale growth interval must be at least 1"
        );
    }
}
