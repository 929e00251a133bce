//! Losses, PyTorch's definitions with `reduction = "mean"`.
//!
//! | loss | value of one sample (N outputs) | ∂ value / ∂y |
//! |---|---|---|
//! | `Mse` | (1/N) Σ (yᵢ − tᵢ)² | 2(yᵢ − tᵢ)/N |
//! | `BceWithLogits` | (1/N) Σ max(yᵢ, 0) − yᵢtᵢ + ln(1 + e^−\|yᵢ\|) | (σ(yᵢ) − tᵢ)/N |
//! | `SoftmaxCrossEntropy` | −Σ tᵢ log softmax(y)ᵢ (t: class probabilities, e.g. one-hot) | softmax(y)ᵢ·Σt − tᵢ |
//! | `SoftmaxMse` | (1/N) Σ (pᵢ − tᵢ)², p = softmax(y) | (2/N)·pⱼ·((pⱼ − tⱼ) − Σᵢ pᵢ(pᵢ − tᵢ)) |
//!
//! `SoftmaxMse` is here as a cause of vanishing gradients, not a cure: its gradient carries the softmax's
//! Jacobian, so it vanishes when the output is confidently wrong (pⱼ → 0 for the true class and pₖ → 1 for a
//! wrong one), where cross-entropy's `p − t` stays near its largest.
//!
//! The loss of a batch is the mean of its samples' losses, so [`Objective::grad`] is given the factor
//! `1/batch`: accumulating its gradients over the batch's backward passes gives the gradient of the batch mean.
//!
//! Values and gradients are computed in `f64` from the exact values of `y` and `t` (a few outputs per sample,
//! so this costs little even in soft float), and each gradient is rounded once into `S` with the caller's
//! rounding; its events go to the probe.

use crate::math::{Libm, sigmoid};
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// A loss function.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Loss {
    /// Mean squared error.
    Mse,
    /// Binary cross-entropy on logits (sigmoid folded in, numerically stable).
    BceWithLogits,
    /// Cross-entropy of softmax(logits) against class probabilities (numerically stable).
    SoftmaxCrossEntropy,
    /// Mean squared error of softmax(logits) against class probabilities.
    SoftmaxMse,
}

impl Loss {
    /// Names accepted by [`Loss::from_name`].
    pub const NAMES: [&'static str; 4] = [
        "mse",
        "bce_with_logits",
        "softmax_cross_entropy",
        "softmax_mse",
    ];

    /// The loss called `name` (one of [`Loss::NAMES`]).
    pub fn from_name(name: &str) -> Option<Loss> {
        match name {
            "mse" => Some(Loss::Mse),
            "bce_with_logits" | "bce" => Some(Loss::BceWithLogits),
            "softmax_cross_entropy" | "cross_entropy" | "ce" => Some(Loss::SoftmaxCrossEntropy),
            "softmax_mse" => Some(Loss::SoftmaxMse),
            _ => None,
        }
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::BceWithLogits => "bce_with_logits",
            Loss::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Loss::SoftmaxMse => "softmax_mse",
        }
    }
}

/// A loss and how it reads the network's outputs: the loss of `output_scale · y` (1: as they are). A
/// fixed-point convention: with 8, `I1F15` outputs in (−1, 1) stand for logits in (−8, 8).
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Objective {
    /// The loss function.
    pub loss: Loss,
    /// The loss reads the outputs multiplied by this.
    pub output_scale: f64,
    /// The loss reads only the first `n` outputs and sends the others a zero gradient (`None`: all of
    /// them). A model narrower than a fixed-size layer pads it with units that must not count: a mean over
    /// outputs divides by `n`, and a softmax ranges over `n` logits.
    pub outputs: Option<usize>,
}

impl From<Loss> for Objective {
    fn from(loss: Loss) -> Objective {
        Objective::new(loss)
    }
}

impl Objective {
    /// `loss` of the outputs as they are.
    pub fn new(loss: Loss) -> Objective {
        Objective {
            loss,
            output_scale: 1.0,
            outputs: None,
        }
    }

    /// The loss of one sample with outputs `y` and target `t`, and in `dy` its gradient with respect to `y`
    /// multiplied by `factor` (`1/batch` for the batch mean, times a loss scale if any), rounded once per
    /// value with `r`; the rounding's events go to `p`. Non-finite inputs give a NaN value and flagged
    /// gradients.
    pub fn grad<S, const N: usize, R, P>(
        &self,
        y: &[S; N],
        t: &[S; N],
        factor: f64,
        dy: &mut [S; N],
        r: &mut R,
        p: &mut P,
    ) -> f64
    where
        S: Scalar,
        R: Rounding + ?Sized,
        P: Probe + ?Sized,
    {
        let (value, g) = self.value_grad_f64(y, t);
        // d/dy of L(k·y) = k·L′(k·y); one factor, one rounding.
        let k = self.output_scale * factor;
        for (d, gv) in dy.iter_mut().zip(g) {
            // A non-finite gradient stays non-finite times k, and converting it flags NONFINITE.
            let (v, f) = S::from_f64(gv * k, r);
            p.record(f);
            *d = v;
        }
        value
    }

    /// The loss of one sample (no gradient), for evaluation.
    pub fn value<S: Scalar, const N: usize>(&self, y: &[S; N], t: &[S; N]) -> f64 {
        self.value_grad_f64(y, t).0
    }

    fn value_grad_f64<S: Scalar, const N: usize>(&self, y: &[S; N], t: &[S; N]) -> (f64, [f64; N]) {
        let y64 = y.map(|v| v.to_f64() * self.output_scale);
        let t64 = t.map(|v| v.to_f64());
        let n = self.outputs.map_or(N, |n| n.min(N));
        let mut g = [0.0f64; N];
        let value = loss_grad_slice(self.loss, &y64[..n], &t64[..n], &mut g[..n]);
        (value, g)
    }
}

/// The f64 reference: the loss of one sample and its gradient (not divided by a batch).
pub fn loss_grad_f64<const N: usize>(loss: Loss, y: &[f64; N], t: &[f64; N]) -> (f64, [f64; N]) {
    let mut g = [0.0f64; N];
    let value = loss_grad_slice(loss, y, t, &mut g);
    (value, g)
}

/// [`loss_grad_f64`] on slices of one length (the shortest of the three decides).
fn loss_grad_slice(loss: Loss, y: &[f64], t: &[f64], g: &mut [f64]) -> f64 {
    let len = y.len().min(t.len()).min(g.len());
    let (y, t, g) = (&y[..len], &t[..len], &mut g[..len]);
    let n = len.max(1) as f64;
    match loss {
        Loss::Mse => {
            let mut s = 0.0;
            for ((gi, &yi), &ti) in g.iter_mut().zip(y).zip(t) {
                let d = yi - ti;
                s += d * d;
                *gi = 2.0 * d / n;
            }
            s / n
        }
        Loss::BceWithLogits => {
            let mut s = 0.0;
            for ((gi, &z), &ti) in g.iter_mut().zip(y).zip(t) {
                s += z.max(0.0) - z * ti + libm::log1p(libm::exp(-libm::fabs(z)));
                let sig = sigmoid::<f64, Libm>(z);
                *gi = (sig - ti) / n;
            }
            s / n
        }
        Loss::SoftmaxCrossEntropy => {
            let lse = log_sum_exp(y);
            let tsum: f64 = t.iter().sum();
            let mut s = 0.0;
            for ((gi, &yi), &ti) in g.iter_mut().zip(y).zip(t) {
                let logp = yi - lse;
                if ti != 0.0 {
                    s -= ti * logp;
                }
                *gi = libm::exp(logp) * tsum - ti;
            }
            s
        }
        Loss::SoftmaxMse => {
            let lse = log_sum_exp(y);
            // Σᵢ pᵢ(pᵢ − tᵢ): the softmax Jacobian's shared term.
            let shared: f64 = y
                .iter()
                .zip(t)
                .map(|(&yi, &ti)| {
                    let pi = libm::exp(yi - lse);
                    pi * (pi - ti)
                })
                .sum();
            let mut s = 0.0;
            for ((gi, &yj), &tj) in g.iter_mut().zip(y).zip(t) {
                let pj = libm::exp(yj - lse);
                let d = pj - tj;
                s += d * d;
                *gi = 2.0 * pj * (d - shared) / n;
            }
            s / n
        }
    }
}

/// `ln Σ e^yᵢ`, stable for large logits (shifted by the largest; a NaN anywhere gives NaN).
fn log_sum_exp(y: &[f64]) -> f64 {
    let m = y.iter().fold(
        f64::NEG_INFINITY,
        |a, &b| if b > a || b.is_nan() { b } else { a },
    );
    let z: f64 = y.iter().map(|&v| libm::exp(v - m)).sum();
    m + libm::log(z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Flags;
    use crate::round::NearestEven;

    #[test]
    fn names_round_trip_and_aliases_resolve() {
        for (name, loss) in Loss::NAMES.iter().zip([
            Loss::Mse,
            Loss::BceWithLogits,
            Loss::SoftmaxCrossEntropy,
            Loss::SoftmaxMse,
        ]) {
            assert_eq!(loss.name(), *name);
            assert_eq!(Loss::from_name(name), Some(loss));
        }
        assert_eq!(Loss::from_name("bce"), Some(Loss::BceWithLogits));
        assert_eq!(Loss::from_name("ce"), Some(Loss::SoftmaxCrossEntropy));
        assert_eq!(
            Loss::from_name("cross_entropy"),
            Some(Loss::SoftmaxCrossEntropy)
        );
        assert_eq!(Loss::from_name("l1"), None);
        assert_eq!(Objective::from(Loss::Mse), Objective::new(Loss::Mse));
    }

    #[test]
    fn output_scale_and_factor_enter_once_each() {
        // MSE of k·y: value (k·y − t)², gradient k·2(k·y − t)·factor.
        let obj = Objective {
            output_scale: 8.0,
            ..Objective::new(Loss::Mse)
        };
        let (y, t) = ([0.25f64], [0.5f64]);
        let mut dy = [0.0f64];
        let v = obj.grad(&y, &t, 0.5, &mut dy, &mut NearestEven, &mut ());
        assert_eq!(v, 2.25);
        assert_eq!(dy, [8.0 * 2.0 * 1.5 * 0.5]);
        assert_eq!(obj.value(&y, &t), 2.25);
    }

    #[test]
    fn padded_outputs_neither_count_nor_receive_gradient() {
        // Three real outputs padded to eight: value and real gradients as for three, bit for bit; the padding
        // (which a sigmoid layer would fill with ½) gets exact zeros.
        let (y3, t3) = ([0.3f64, -1.25, 2.0], [0.0f64, 1.0, 0.0]);
        let (mut y8, mut t8) = ([0.5f64; 8], [0.0f64; 8]);
        y8[..3].copy_from_slice(&y3);
        t8[..3].copy_from_slice(&t3);
        for loss in [
            Loss::Mse,
            Loss::BceWithLogits,
            Loss::SoftmaxCrossEntropy,
            Loss::SoftmaxMse,
        ] {
            let padded = Objective {
                outputs: Some(3),
                ..Objective::new(loss)
            };
            let (mut d3, mut d8) = ([0.0f64; 3], [1.0f64; 8]);
            let v3 = Objective::new(loss).grad(&y3, &t3, 0.25, &mut d3, &mut NearestEven, &mut ());
            let v8 = padded.grad(&y8, &t8, 0.25, &mut d8, &mut NearestEven, &mut ());
            assert_eq!(v3.to_bits(), v8.to_bits(), "{loss:?}");
            assert_eq!(d3, d8[..3], "{loss:?}");
            assert_eq!(d8[3..], [0.0; 5], "{loss:?}");
            assert_eq!(padded.value(&y8, &t8).to_bits(), v3.to_bits());
            // More outputs than the layer has: all of them.
            let wide = Objective {
                outputs: Some(100),
                ..Objective::new(loss)
            };
            assert_eq!(wide.value(&y3, &t3).to_bits(), v3.to_bits());
        }
    }

    #[test]
    fn extreme_logits_stay_finite() {
        // Softmax: a class whose probability underflows to zero contributes nothing when its target is zero.
        let (v, g) = loss_grad_f64(Loss::SoftmaxCrossEntropy, &[0.0, -1e6], &[1.0, 0.0]);
        assert_eq!((v, g), (0.0, [0.0, 0.0]));
        let (v, g) = loss_grad_f64(Loss::SoftmaxCrossEntropy, &[1000.0, 0.0], &[0.0, 1.0]);
        assert_eq!((v, g), (1000.0, [1.0, -1.0]));
        // BCE on logits ±1000: the loss of a confident wrong answer is its logit, of a right one zero.
        let (v, g) = loss_grad_f64(Loss::BceWithLogits, &[1000.0, -1000.0], &[0.0, 0.0]);
        assert_eq!((v, g), (500.0, [0.5, 0.0]));
        // Softmax MSE, confidently wrong by a margin of 20: the gradient carries p of the true class, e^−20.
        let (v, g) = loss_grad_f64(Loss::SoftmaxMse, &[0.0, 20.0], &[1.0, 0.0]);
        assert!((v - 1.0).abs() < 1e-8, "{v}");
        assert!(
            g[0] < 0.0 && (g[0] + 2.0 * (-20f64).exp()).abs() < 1e-15,
            "{g:?}"
        );
        // Soft targets: the gradient is softmax·Σt − t.
        let (_, g) = loss_grad_f64(Loss::SoftmaxCrossEntropy, &[0.0, 0.0], &[0.5, 1.5]);
        assert_eq!(g, [0.5, -0.5]);
    }

    #[test]
    fn non_finite_outputs_give_a_nan_loss_and_flagged_gradients() {
        for loss in [
            Loss::Mse,
            Loss::BceWithLogits,
            Loss::SoftmaxCrossEntropy,
            Loss::SoftmaxMse,
        ] {
            let mut dy = [0.0f32; 2];
            let mut flags = Flags::NONE;
            let v = Objective::new(loss).grad(
                &[f32::NAN, 0.5],
                &[1.0, 0.0],
                1.0,
                &mut dy,
                &mut NearestEven,
                &mut flags,
            );
            assert!(v.is_nan(), "{loss:?}: {v}");
            assert!(flags.contains(Flags::NONFINITE), "{loss:?}: {flags:?}");
        }
        // Even a zero factor leaves an infinite gradient flagged (∞·0 is NaN).
        let (mut dy, mut flags) = ([0.0f64; 2], Flags::NONE);
        Objective::new(Loss::Mse).grad(
            &[f64::INFINITY, 0.5],
            &[0.0; 2],
            0.0,
            &mut dy,
            &mut NearestEven,
            &mut flags,
        );
        assert!(flags.contains(Flags::NONFINITE), "{flags:?}");
        let mut flags = Flags::NONE;
        let mut dy = [0.0f32; 2];
        Objective::new(Loss::Mse).grad(
            &[0.5f32, 0.25],
            &[1.0, 0.0],
            1.0,
            &mut dy,
            &mut NearestEven,
            &mut flags,
        );
        assert_eq!(flags, Flags::NONE);
    }
}
