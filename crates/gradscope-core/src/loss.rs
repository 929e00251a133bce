//! Losses, PyTorch's definitions with `reduction = "mean"`.
//!
//! | loss | value of one sample (N outputs) | ∂ value / ∂y |
//! |---|---|---|
//! | `Mse` | (1/N) Σ (yᵢ − tᵢ)² | 2(yᵢ − tᵢ)/N |
//! | `BceWithLogits` | (1/N) Σ max(yᵢ, 0) − yᵢtᵢ + ln(1 + e^−\|yᵢ\|) | (σ(yᵢ) − tᵢ)/N |
//! | `SoftmaxCrossEntropy` | −Σ tᵢ log softmax(y)ᵢ (t: class probabilities, e.g. one-hot) | softmax(y)ᵢ·Σt − tᵢ |
//!
//! The loss of a batch is the mean of its samples' losses, so [`loss_grad`] returns the gradient of
//! `value / batch`: accumulating it over the batch's backward passes gives the gradient of the batch mean.
//!
//! Values and gradients are computed in `f64` from the exact values of `y` and `t` (a few outputs per sample,
//! so this costs little even in soft float), and each gradient is rounded once into `S` with the caller's
//! rounding; its events go to the probe.

use crate::flags::Flags;
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// A loss function.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loss {
    /// Mean squared error.
    Mse,
    /// Binary cross-entropy on logits (sigmoid folded in, numerically stable).
    BceWithLogits,
    /// Cross-entropy of softmax(logits) against class probabilities (numerically stable).
    SoftmaxCrossEntropy,
}

impl Loss {
    /// Names accepted by [`Loss::from_name`].
    pub const NAMES: [&'static str; 3] = ["mse", "bce_with_logits", "softmax_cross_entropy"];

    /// The loss called `name` (one of [`Loss::NAMES`]).
    pub fn from_name(name: &str) -> Option<Loss> {
        match name {
            "mse" => Some(Loss::Mse),
            "bce_with_logits" | "bce" => Some(Loss::BceWithLogits),
            "softmax_cross_entropy" | "cross_entropy" | "ce" => Some(Loss::SoftmaxCrossEntropy),
            _ => None,
        }
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::BceWithLogits => "bce_with_logits",
            Loss::SoftmaxCrossEntropy => "softmax_cross_entropy",
        }
    }
}

/// The loss of one sample with outputs `y` and target `t`, and in `dy` the gradient of `value / batch`
/// (`batch` 0 counts as 1). Non-finite inputs give a NaN value and flagged gradients.
pub fn loss_grad<S, const N: usize, R, P>(
    loss: Loss,
    y: &[S; N],
    t: &[S; N],
    batch: usize,
    dy: &mut [S; N],
    r: &mut R,
    p: &mut P,
) -> f64
where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    let y64 = y.map(|v| v.to_f64());
    let t64 = t.map(|v| v.to_f64());
    let (value, mut g) = loss_grad_f64(loss, &y64, &t64);
    let scale = 1.0 / batch.max(1) as f64;
    for (d, gv) in dy.iter_mut().zip(g.iter_mut()) {
        let (v, f) = S::from_f64(*gv * scale, r);
        p.record(f | Flags::when(!gv.is_finite(), Flags::NONFINITE));
        *d = v;
    }
    value
}

/// The f64 reference: the loss of one sample and its gradient (not divided by a batch).
pub fn loss_grad_f64<const N: usize>(loss: Loss, y: &[f64; N], t: &[f64; N]) -> (f64, [f64; N]) {
    let n = N.max(1) as f64;
    let mut g = [0.0f64; N];
    let value = match loss {
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
                let sig = if z >= 0.0 {
                    1.0 / (1.0 + libm::exp(-z))
                } else {
                    libm::exp(z) / (1.0 + libm::exp(z))
                };
                *gi = (sig - ti) / n;
            }
            s / n
        }
        Loss::SoftmaxCrossEntropy => {
            let m = y.iter().fold(
                f64::NEG_INFINITY,
                |a, &b| if b > a || b.is_nan() { b } else { a },
            );
            let z: f64 = y.iter().map(|&v| libm::exp(v - m)).sum();
            let lse = m + libm::log(z);
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
    };
    (value, g)
}
