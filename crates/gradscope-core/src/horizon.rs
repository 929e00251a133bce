//! The underflow horizon: at which depth (or time step) the expected back-propagated signal of a deep network
//! at initialization drops below one LSB of a fixed-point format, or below a float's smallest subnormal (the
//! LSB of its subnormal range, [`crate::Scalar::SMALLEST`]: 2⁻²⁴ for `f16`).
//!
//! Mean-field model of a uniform stack of width `n` with i.i.d. zero-mean weights of variance `σ_w²` and zero
//! biases (Poole et al. 2016; Schoenholz et al. 2017). Forward, the pre-activations of layer `l` are
//! approximately N(0, q_l) with
//!
//! `q_1 = n·σ_w²·E[x²]`, `q_l = n·σ_w²·E_{z∼N(0, q_{l−1})}[φ(z)²]`.
//!
//! Backward, each layer multiplies the second moment of the signal it passes on by
//! `χ_l = n·σ_w²·E_{z∼N(0, q_l)}[φ′(z)²]`, so the signal that the layer `k` steps from the output sends back
//! has expected RMS `g₀·Π_{j ≤ k} √χ`, for an output gradient of RMS `g₀`. The horizon is the first `k` where
//! that RMS falls below one LSB: from there on, round-to-nearest turns most of the signal into exact zeros.
//! The forward signal can underflow first: a layer whose pre-activation RMS is below one LSB computes exact
//! zeros, and for ReLU (derivative 0 at 0) that blocks every gradient behind it.
//! The same recurrence describes an RNN through time with `W_hh` in place of `W`.
//!
//! It is a large-width model: at small widths (say 8) a ReLU layer can go entirely dead by chance (all
//! pre-activations ≤ 0), which blocks every gradient behind it and which the model does not predict.
//!
//! Expectations are computed by [`gaussian_expectation`].

use crate::activation::Act;
use crate::math::Libm;

/// Gaussian expectation `E_{z∼N(0, q)}[f(z)]`, by composite Simpson integration over ±10 standard deviations,
/// split at 0, ±1 and ±3 (the kinks of ReLU, hard tanh and hard sigmoid) with segment ends sampled just
/// inside, so a jump in `f` there costs no accuracy.
pub fn gaussian_expectation(q: f64, f: impl Fn(f64) -> f64) -> f64 {
    if q.is_nan() || q <= 0.0 || q.is_infinite() {
        return f(0.0);
    }
    let s = libm::sqrt(q);
    let (a, b) = (-10.0 * s, 10.0 * s);
    let norm = 1.0 / (s * libm::sqrt(2.0 * core::f64::consts::PI));
    let density = |z: f64| libm::exp(-z * z / (2.0 * q)) * norm;
    let mut points = [a, -3.0, -1.0, 0.0, 1.0, 3.0, b];
    for p in points.iter_mut() {
        *p = p.max(a).min(b);
    }
    let mut total = 0.0;
    for seg in points.windows(2) {
        let (lo, hi) = match seg {
            [lo, hi] if hi > lo => (*lo, *hi),
            _ => continue,
        };
        const N: usize = 400; // even
        let h = (hi - lo) / N as f64;
        let nudge = h * 1e-9;
        let mut acc = 0.0;
        for k in 0..=N {
            let z = if k == 0 {
                lo + nudge
            } else if k == N {
                hi - nudge
            } else {
                lo + k as f64 * h
            };
            let w = if k == 0 || k == N {
                1.0
            } else if k % 2 == 1 {
                4.0
            } else {
                2.0
            };
            acc += w * f(z) * density(z);
        }
        total += acc * h / 3.0;
    }
    total
}

/// A deep uniform stack at initialization.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct DepthModel {
    /// The activation φ.
    pub act: Act,
    /// Width `n` (fan-in and fan-out of every layer).
    pub width: usize,
    /// Weight variance `σ_w²` (e.g. 1/n for Xavier on square layers, 2/n for He).
    pub weight_var: f64,
    /// Second moment of the input, `E[x²]`.
    pub input_second_moment: f64,
}

/// The model's prediction for one layer.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct LayerPrediction {
    /// Variance of the layer's pre-activations.
    pub q: f64,
    /// Factor by which the layer multiplies the second moment of the back-propagated signal.
    pub chi: f64,
}

impl DepthModel {
    fn phi(&self, z: f64) -> f64 {
        self.act.eval::<f64, Libm>(z)
    }

    fn dphi(&self, z: f64) -> f64 {
        self.act.deriv::<f64, Libm>(z, self.phi(z))
    }

    /// Predictions for layers `1..=out.len()` (index 0 is the first layer after the input) in a format with
    /// resolution `lsb` (0 for exact arithmetic). Once a layer's pre-activation RMS `√q` is below one LSB its
    /// pre-activations are exact zeros: it then multiplies the backward signal by `n·σ_w²·φ′(0)²` (0 for ReLU,
    /// whose derivative at 0 is 0: the forward underflow kills the backward signal) and passes `φ(0)` on.
    pub fn layers(&self, lsb: f64, out: &mut [LayerPrediction]) {
        let n_var = self.width as f64 * self.weight_var;
        let mut q = n_var * self.input_second_moment;
        for p in out.iter_mut() {
            let (chi, next) = if libm::sqrt(q) < lsb {
                let (d0, h0) = (self.dphi(0.0), self.phi(0.0));
                (n_var * d0 * d0, n_var * h0 * h0)
            } else {
                let chi = n_var
                    * gaussian_expectation(q, |z| {
                        let d = self.dphi(z);
                        d * d
                    });
                let next = n_var
                    * gaussian_expectation(q, |z| {
                        let h = self.phi(z);
                        h * h
                    });
                (chi, next)
            };
            *p = LayerPrediction { q, chi };
            q = next;
        }
    }

    /// Expected RMS of the signal sent back by the layer `k` steps from the output, in `out[k − 1]`, for a
    /// network of `out.len()` layers (at most 256), an output gradient of RMS `g0`, and resolution `lsb`.
    pub fn backward_rms(&self, g0: f64, lsb: f64, out: &mut [f64]) {
        const MAX: usize = 256;
        let depth = out.len().min(MAX);
        let mut preds = [LayerPrediction::default(); MAX];
        let preds = preds.get_mut(..depth).unwrap_or(&mut []);
        self.layers(lsb, preds);
        let mut rms = g0;
        for (o, p) in out.iter_mut().zip(preds.iter().rev()) {
            rms *= libm::sqrt(p.chi);
            *o = rms;
        }
    }

    /// The underflow horizon for a network of `depth` layers (at most 256) in a format with resolution `lsb`:
    /// the smallest `k` whose expected back-propagated RMS is below `lsb`, or `None` if the signal stays above
    /// it through every layer.
    pub fn horizon(&self, depth: usize, g0: f64, lsb: f64) -> Option<usize> {
        let mut rms = [0.0f64; 256];
        let rms = rms.get_mut(..depth.min(256)).unwrap_or(&mut []);
        self.backward_rms(g0, lsb, rms);
        rms.iter().position(|&r| r < lsb).map(|k| k + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_chi_is_half_of_n_sigma_squared() {
        let he = DepthModel {
            act: Act::Relu,
            width: 32,
            weight_var: 2.0 / 32.0,
            input_second_moment: 1.0,
        };
        let mut p = [LayerPrediction::default(); 5];
        he.layers(0.0, &mut p);
        for l in p {
            assert!(
                (l.chi - 1.0).abs() < 1e-6 && (l.q - 2.0).abs() < 1e-6,
                "{l:?}"
            );
        }
        let xavier = DepthModel {
            weight_var: 1.0 / 32.0,
            ..he
        };
        // 20 layers (the forward signal stays above one LSB): the backward RMS shrinks by √½ per layer, and
        // 0.005·2^(−k/2) < 2^−16 first at k = 17 (k > 16.7).
        let lsb = 1.0 / 65536.0;
        assert_eq!(xavier.horizon(20, 0.005, lsb), Some(17));
        assert_eq!(he.horizon(64, 0.005, lsb), None);
        // 64 layers: the forward signal underflows near layer 34 (q halves per layer from 1 to below 2^−32);
        // ReLU′(0) = 0 then blocks the gradient at the very last layer.
        assert_eq!(xavier.horizon(64, 0.005, lsb), Some(1));
        // Exact arithmetic (lsb 0) has no horizon.
        assert_eq!(xavier.horizon(64, 0.005, 0.0), None);
        let m2 = gaussian_expectation(2.0, |z| z * z);
        assert!((m2 - 2.0).abs() < 1e-8, "{m2}");
    }
}
