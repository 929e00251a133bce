//! Per-layer gradient scaling; see [`LayerScales`].

use super::{Layer, Phase, Probes, Stack};
use crate::flags::Flags;
use crate::net::Params;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// Per-layer gradient scaling: block floating point for the backward pass, in the spirit of
/// quantization-aware scaling (Lin et al. 2022) and of per-tensor "delayed" scaling.
///
/// A uniform fixed-point format cannot hold a back-propagated signal that shrinks by a constant factor per
/// layer: past the underflow horizon it is exactly zero. [`Stack::backward_scaled`] multiplies the signal
/// entering each layer's backward pass by a power of two, `2^shift[k]`, so it stays near the top of the
/// format's range. Layer `k`'s parameter gradients then come out in units of `2^−E_k`, with
/// `E_k = Σ_{j ≥ k} shift[j]` ([`LayerScales::exponent`]); the optimizer folds that into the layer's learning
/// rate ([`LayerScales::lr`]), so nothing is divided back down into the underflow.
///
/// The shifts are chosen from the previous pass's observations (delayed scaling): each pass records the peak
/// true magnitude of the signal at every boundary, and [`LayerScales::adapt`] sets the shifts so the next
/// pass's scaled signal peaks just below `2^target`. A shift is a power of two, so scaling is exact unless it
/// saturates (reported as an overflow; [`LayerScales::adapt`] after such a pass lowers the scales).
///
/// Per-layer power-of-two scales of the back-propagated signal of a stack of up to `D` layers.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LayerScales<const D: usize> {
    /// log2 of the factor applied to the signal entering layer `k`'s backward pass (`k` from the input).
    pub shift: [i32; D],
    /// Peak true (unscaled) log2 magnitude of that signal seen since the last [`LayerScales::adapt`].
    pub peak_log2: [f64; D],
}

impl<const D: usize> Default for LayerScales<D> {
    fn default() -> Self {
        Self::new()
    }
}

/// Bound on |E_k| (f64 learning rates stay finite).
const MAX_SHIFT: i32 = 1000;

impl<const D: usize> LayerScales<D> {
    /// No scaling yet (every shift 0), nothing observed.
    pub fn new() -> Self {
        LayerScales {
            shift: [0; D],
            peak_log2: [f64::NEG_INFINITY; D],
        }
    }

    /// `E_k`: layer `k`'s gradients are in units of `2^−E_k`.
    pub fn exponent(&self, k: usize) -> i32 {
        self.shift
            .get(k..)
            .unwrap_or(&[])
            .iter()
            .fold(0i32, |a, &s| a.saturating_add(s))
    }

    /// The learning rate for layer `k`'s scaled gradients: `lr · 2^−E_k`.
    pub fn lr(&self, k: usize, lr: f64) -> f64 {
        lr * libm::exp2(-(self.exponent(k) as f64))
    }

    /// Choose the shifts so that the signal entering each of the first `depth` layers, as observed, peaks at
    /// about `2^target_log2` after scaling (pick `target_log2` a few bits below the format's maximum, e.g. 8 for
    /// I16F16, −4 for I1F15); boundaries that saw no signal keep the scale above them. Clears the observations
    /// and returns how many boundaries saw no signal: the signal died before reaching them, so repeat passes
    /// (each reaches about as deep again as the format's range allows) until this is 0, as delayed scaling
    /// settles over the first training steps.
    pub fn adapt(&mut self, depth: usize, target_log2: f64) -> usize {
        let mut unobserved = 0usize;
        let mut e_above = 0i32;
        for k in (0..depth.min(D)).rev() {
            let peak = self.peak_log2.get(k).copied().unwrap_or(f64::NEG_INFINITY);
            let e_k = if peak.is_finite() {
                (libm::floor(target_log2 - peak) as i32).clamp(-MAX_SHIFT, MAX_SHIFT)
            } else {
                unobserved += 1;
                e_above
            };
            if let Some(s) = self.shift.get_mut(k) {
                *s = e_k.saturating_sub(e_above);
            }
            e_above = e_k;
        }
        self.peak_log2 = [f64::NEG_INFINITY; D];
        unobserved
    }
}

impl<L, const D: usize> Stack<L, D> {
    /// Backward pass with per-layer scaling of the signal (see [`LayerScales`]); records the peaks
    /// for the next [`LayerScales::adapt`]. Returns the gradient of the input in units of `2^−E_0`. Scaling
    /// events (saturation) are reported under each layer's index, phase `Backward`.
    pub fn backward_scaled<S, const W: usize, R, P>(
        &mut self,
        dy: &[S; W],
        scales: &mut LayerScales<D>,
        at: usize,
        r: &mut R,
        p: &mut P,
    ) -> [S; W]
    where
        S: Scalar,
        L: Layer<S, Input = [S; W], Output = [S; W]>,
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut idx = at.saturating_add(Params::depth(self));
        let mut d = *dy;
        let mut e_above = 0i32;
        for (k, l) in self.active_mut().iter_mut().enumerate().rev() {
            idx = idx.saturating_sub(l.depth());
            let peak = d.iter().fold(0.0f64, |m, v| m.max(libm::fabs(v.to_f64())));
            if peak > 0.0
                && let Some(obs) = scales.peak_log2.get_mut(k)
            {
                *obs = obs.max(libm::log2(peak) - e_above as f64);
            }
            let shift = scales.shift.get(k).copied().unwrap_or(0);
            if shift != 0 {
                let c = crate::scalar::Coef::new(libm::exp2(shift as f64));
                for v in d.iter_mut() {
                    let (s, f) = v.scale_by(&c, r);
                    p.record(
                        idx,
                        Phase::Backward,
                        f & (Flags::OVERFLOW | Flags::UNDERFLOW | Flags::NONFINITE),
                    );
                    *v = s;
                }
            }
            e_above = e_above.saturating_add(shift);
            d = l.backward(&d, idx, r, p);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Act;
    use crate::fixed::I16F16;
    use crate::layer::{DenseStack, Pooled};
    use crate::probe::EventCounts;
    use crate::round::NearestEven;

    /// The events of one scaled backward pass through a zero-weight identity layer (which adds none).
    fn scaled_events(shift: i32, dy: [f64; 2]) -> EventCounts {
        let mut stack = DenseStack::<I16F16, 2, 1>::new(Act::Identity, 1);
        let mut scales = LayerScales::<1>::new();
        scales.shift = [shift];
        let dy = dy.map(|v| I16F16::from_f64(v, &mut NearestEven).0);
        let mut events = EventCounts::default();
        stack.forward(&[I16F16::ZERO; 2], 0, &mut NearestEven, &mut ());
        stack.backward_scaled(
            &dy,
            &mut scales,
            0,
            &mut NearestEven,
            &mut Pooled(&mut events),
        );
        events
    }

    #[test]
    fn scaling_reports_saturation_and_underflow_but_not_rounding() {
        // 1000·2²⁰ saturates I16F16; 2⁻¹⁰·2²⁰ = 1024 fits.
        let e = scaled_events(20, [1000.0, 1.0 / 1024.0]);
        assert_eq!((e.overflow, e.underflow, e.inexact), (1, 0, 0));
        // 2⁻¹⁴·2⁻⁴ = 2⁻¹⁸ is a quarter of the LSB and rounds to 0 (an underflow, inexact too, which scaling
        // does not report); 1·2⁻⁴ is exact.
        let e = scaled_events(-4, [1.0, 1.0 / 16384.0]);
        assert_eq!((e.overflow, e.underflow, e.inexact), (0, 1, 0));
    }
}
