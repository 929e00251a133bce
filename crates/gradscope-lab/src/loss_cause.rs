//! The loss function as a cause of vanishing gradients: the output layer's gradient as a function of how
//! confidently wrong the output is, per loss and number format.
//!
//! Each gradient is computed by the core's backward pass through one output layer (a [`Dense`] whose bias
//! holds the logits and whose input is zero, so the bias gradient is ∂L/∂z), in the chosen format:
//!
//! - binary, target 1, logit z = −margin: a sigmoid output trained with MSE, whose gradient 2(σ(z) − 1)·σ′(z)
//!   carries σ′, against BCE on the logit, whose gradient is σ(z) − 1;
//! - ten classes, true class 0 at logit 0, class 1 at logit `margin`, the rest at 0: softmax MSE against
//!   softmax cross-entropy, the gradient of the true class's logit.

use anyhow::Result;
use gradscope_core::train::backprop;
use gradscope_core::{Act, Activate, Dense, LayerStats, Loss, NearestEven, Objective, Scalar};
use serde::Serialize;

use crate::options::Precision;
use crate::with_scalar;

/// Classes of the softmax case (as the digits).
pub const CLASSES: usize = 10;

/// The margins measured: 0 to 16 in steps of 1.
pub fn margins() -> Vec<f64> {
    (0..=16).map(f64::from).collect()
}

/// The four output gradients at one margin, in one format.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MarginRow {
    /// Number format.
    pub precision: Precision,
    /// How far the wrong answer leads: the binary logit is −margin; the wrong class's logit is margin.
    pub margin: f64,
    /// |∂L/∂z| of a sigmoid output trained with MSE.
    pub sigmoid_mse: f64,
    /// |∂L/∂z| of BCE on the logit.
    pub bce: f64,
    /// |∂L/∂z| of the true class's logit under softmax MSE.
    pub softmax_mse: f64,
    /// |∂L/∂z| of the true class's logit under softmax cross-entropy.
    pub cross_entropy: f64,
}

/// |∂L/∂z₀| of one output layer with logits `z` (in its bias), activation `act`, loss `loss` and target `t`.
fn output_grad<S: Scalar, const O: usize>(act: Act, loss: Loss, z: [f64; O], t: [f64; O]) -> f64
where
    Act: Activate<S>,
{
    let q = |v: f64| S::from_f64(v, &mut NearestEven).0;
    let mut layer = Dense::<S, 1, O>::new(act);
    layer.bias = z.map(q);
    let batch = [([S::ZERO], t.map(q))];
    let mut stats = [LayerStats::default()];
    backprop(
        &mut layer,
        batch.as_slice(),
        &Objective::new(loss),
        1.0,
        &mut NearestEven,
        stats.as_mut_slice(),
    );
    layer.grad_bias[0].to_f64().abs()
}

fn rows_typed<S: Scalar>(precision: Precision) -> Vec<MarginRow>
where
    Act: Activate<S>,
{
    margins()
        .into_iter()
        .map(|m| {
            let mut z = [0.0; CLASSES];
            z[1] = m;
            let mut t = [0.0; CLASSES];
            t[0] = 1.0;
            MarginRow {
                precision,
                margin: m,
                sigmoid_mse: output_grad::<S, 1>(Act::Sigmoid, Loss::Mse, [-m], [1.0]),
                bce: output_grad::<S, 1>(Act::Identity, Loss::BceWithLogits, [-m], [1.0]),
                softmax_mse: output_grad::<S, CLASSES>(Act::Identity, Loss::SoftmaxMse, z, t),
                cross_entropy: output_grad::<S, CLASSES>(
                    Act::Identity,
                    Loss::SoftmaxCrossEntropy,
                    z,
                    t,
                ),
            }
        })
        .collect()
}

/// The output gradients at every margin in `precision`.
pub fn rows(precision: Precision) -> Result<Vec<MarginRow>> {
    Ok(with_scalar!(precision, S => rows_typed::<S>(precision)))
}

/// The first margin at which `grad` is exactly zero, if any.
pub fn first_zero(rows: &[MarginRow], grad: impl Fn(&MarginRow) -> f64) -> Option<f64> {
    rows.iter().find(|r| grad(r) == 0.0).map(|r| r.margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigmoid(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    #[test]
    fn f64_gradients_are_the_closed_forms() {
        for r in rows(Precision::F64).unwrap() {
            let s = sigmoid(-r.margin);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1e-300);
            assert!(close(r.bce, 1.0 - s), "{r:?}");
            assert!(
                close(r.sigmoid_mse, 2.0 * (1.0 - s) * s * (1.0 - s)),
                "{r:?}"
            );
            // Softmax with logits (0, m, 0, …): p₀ = 1/(e^m + 9).
            let p0 = 1.0 / (r.margin.exp() + (CLASSES - 1) as f64);
            let p1 = r.margin.exp() * p0;
            assert!(close(r.cross_entropy, 1.0 - p0), "{r:?}");
            // (2/N)·p₀·((p₀ − 1) − Σ pᵢ(pᵢ − tᵢ)), Σ = p₀(p₀ − 1) + p₁² + 8p₀².
            let shared = p0 * (p0 - 1.0) + p1 * p1 + (CLASSES - 2) as f64 * p0 * p0;
            let want = (2.0 / CLASSES as f64 * p0 * ((p0 - 1.0) - shared)).abs();
            assert!(
                (r.softmax_mse - want).abs() <= 1e-12 * want.max(1e-300) + 1e-300,
                "{r:?}"
            );
        }
    }
}
