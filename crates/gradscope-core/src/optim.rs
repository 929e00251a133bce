//! Optimizers, written once against the [`Params`] visitor.
//!
//! [`Sgd`]: `w ← w − lr·(g + λ·w)` (PyTorch's SGD with coupled L2 `weight_decay` λ). Before any update the
//! step scans every gradient: a non-finite one stops the step with [`StepError::NonFiniteGradient`] (which
//! tensor, which element) and leaves every weight unchanged, so a NaN never poisons the weights silently.
//! In fixed point `lr·g` and `lr·λ·w` are each rounded once with the caller's rounding (stochastic rounding
//! keeps updates smaller than one LSB alive on average); their events go to the probe.

use core::fmt;

use crate::net::Params;
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// Why an optimizer step did not happen.
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StepError {
    /// A hyperparameter is NaN, infinite, or out of range (learning rate must be > 0, decay ≥ 0).
    InvalidHyperparameter(f64),
    /// A gradient is NaN or ±∞: the index of the tensor in visiting order, and of the element in it.
    NonFiniteGradient {
        /// Tensor index in [`Params::visit`] order.
        tensor: usize,
        /// Element index within the tensor.
        element: usize,
    },
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::InvalidHyperparameter(v) => write!(f, "invalid hyperparameter {v}"),
            StepError::NonFiniteGradient { tensor, element } => {
                write!(
                    f,
                    "non-finite gradient in tensor {tensor}, element {element}; weights left unchanged"
                )
            }
        }
    }
}

impl core::error::Error for StepError {}

/// The first non-finite gradient, if any.
pub fn find_nonfinite<S: Scalar, P: Params<S> + ?Sized>(params: &mut P) -> Option<StepError> {
    let mut k = 0usize;
    let mut found = None;
    params.visit(&mut |t| {
        if found.is_none()
            && let Some(e) = t.grad.iter().position(|g| !g.to_f64().is_finite())
        {
            found = Some(StepError::NonFiniteGradient {
                tensor: k,
                element: e,
            });
        }
        k += 1;
    });
    found
}

/// Stochastic gradient descent with coupled L2 weight decay.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Sgd {
    lr: f64,
    weight_decay: f64,
}

impl Sgd {
    /// SGD with learning rate `lr > 0` and `weight_decay >= 0`.
    pub fn new(lr: f64, weight_decay: f64) -> Result<Sgd, StepError> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(StepError::InvalidHyperparameter(lr));
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(StepError::InvalidHyperparameter(weight_decay));
        }
        Ok(Sgd { lr, weight_decay })
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// One update of every parameter from its accumulated gradient (gradients are left as they are).
    pub fn step<S, P, R, Q>(
        &self,
        params: &mut P,
        r: &mut R,
        probe: &mut Q,
    ) -> Result<(), StepError>
    where
        S: Scalar,
        P: Params<S> + ?Sized,
        R: Rounding + ?Sized,
        Q: Probe + ?Sized,
    {
        if let Some(e) = find_nonfinite(params) {
            return Err(e);
        }
        let (lr, decay) = (self.lr, self.lr * self.weight_decay);
        params.visit(&mut |t| {
            for (w, &g) in t.value.iter_mut().zip(t.grad.iter()) {
                let (d, f1) = g.scale(lr, r);
                let (mut v, f2) = w.sub(d);
                probe.record(f1 | f2);
                if decay > 0.0 {
                    let (dw, f3) = w.scale(decay, r);
                    let (v2, f4) = v.sub(dw);
                    probe.record(f3 | f4);
                    v = v2;
                }
                *w = v;
            }
        });
        Ok(())
    }
}
