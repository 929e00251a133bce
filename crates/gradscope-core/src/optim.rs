//! Optimizers, written once against the [`Params`] visitor.
//!
//! - [`Sgd`]: `w ← w − lr·(g + λ·w)` (PyTorch's SGD with coupled L2 `weight_decay` λ). In fixed point `lr·g`
//!   and `lr·λ·w` are each rounded once with the caller's rounding (stochastic rounding keeps updates smaller
//!   than one LSB alive on average).
//! - [`Momentum`]: PyTorch's SGD with momentum μ (no dampening): `b ← μ·b + g′`, `w ← w − lr·b`, with
//!   `g′ = g + λ·w`. One state value per parameter.
//! - [`Adam`]: Kingma & Ba (2015) as in PyTorch (`weight_decay` is coupled L2): `m ← β₁m + (1 − β₁)g′`,
//!   `v ← β₂v + (1 − β₂)g′²`, `w ← w − lr·m̂/(√v̂ + ε)` with bias-corrected m̂, v̂. Each element's update is
//!   computed in `f64` and the new `m`, `v` and `w` are each rounded once into `S`; two state values per
//!   parameter. In fixed point `v` (a squared gradient) underflows long before the gradient does: a finding,
//!   reported through the probe, not hidden.
//!
//! State lives in a flat slice the caller provides (a `static` on an MCU, a `Vec` on the host), laid out in
//! [`Params::visit`] order; [`param_count`] tells its length. Before any update every step scans every
//! gradient: a non-finite one stops the step with [`StepError::NonFiniteGradient`] (which tensor, which element)
//! and leaves every weight and state unchanged, so a NaN never poisons the weights silently. Rounding events
//! go to the probe.

use core::fmt;

use crate::net::Params;
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::{Coef, Scalar};

/// Why an optimizer step did not happen.
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StepError {
    /// A hyperparameter is NaN, infinite, or out of range (learning rate must be > 0, decay ≥ 0).
    InvalidHyperparameter(f64),
    /// The optimizer state slice is shorter than it must be (`need` values).
    StateTooSmall {
        /// Values needed.
        need: usize,
    },
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
            StepError::StateTooSmall { need } => write!(f, "optimizer state needs {need} values"),
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

/// The number of parameter values (the length of one state vector).
pub fn param_count<S: Scalar, P: Params<S> + ?Sized>(params: &mut P) -> usize {
    let mut n = 0usize;
    params.visit(&mut |t| n = n.saturating_add(t.value.len()));
    n
}

fn check<S: Scalar, P: Params<S> + ?Sized>(
    params: &mut P,
    state_len: usize,
    per_param: usize,
) -> Result<(), StepError> {
    let need = param_count(params).saturating_mul(per_param);
    if state_len < need {
        return Err(StepError::StateTooSmall { need });
    }
    match find_nonfinite(params) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn hyper(x: f64, lo: f64, hi_exclusive: f64) -> Result<f64, StepError> {
    if x.is_finite() && x >= lo && x < hi_exclusive {
        Ok(x)
    } else {
        Err(StepError::InvalidHyperparameter(x))
    }
}

/// The first non-finite gradient, if any (fixed-point values are always finite).
pub fn find_nonfinite<S: Scalar, P: Params<S> + ?Sized>(params: &mut P) -> Option<StepError> {
    if !S::IS_FLOAT {
        return None;
    }
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
        let decaying = self.lr * self.weight_decay > 0.0;
        let (lr, decay) = (Coef::new(self.lr), Coef::new(self.lr * self.weight_decay));
        params.visit(&mut |t| {
            for (w, &g) in t.value.iter_mut().zip(t.grad.iter()) {
                let (d, f1) = g.scale_by(&lr, r);
                let (mut v, f2) = w.sub(d);
                probe.record(f1 | f2);
                if decaying {
                    let (dw, f3) = w.scale_by(&decay, r);
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

/// SGD with momentum (PyTorch's `SGD(momentum = μ, dampening = 0, nesterov = False)`).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Momentum {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
}

impl Momentum {
    /// Learning rate `lr > 0`, momentum `0 <= μ < 1`, weight decay `>= 0`.
    pub fn new(lr: f64, momentum: f64, weight_decay: f64) -> Result<Momentum, StepError> {
        Ok(Momentum {
            lr: hyper(lr, f64::MIN_POSITIVE, f64::INFINITY)?,
            momentum: hyper(momentum, 0.0, 1.0)?,
            weight_decay: hyper(weight_decay, 0.0, f64::INFINITY)?,
        })
    }

    /// One update; `state` holds one momentum buffer value per parameter (zero before the first step, as
    /// PyTorch's buffer is initialized to the first gradient: `μ·0 + g = g`).
    pub fn step<S, P, R, Q>(
        &self,
        params: &mut P,
        state: &mut [S],
        r: &mut R,
        probe: &mut Q,
    ) -> Result<(), StepError>
    where
        S: Scalar,
        P: Params<S> + ?Sized,
        R: Rounding + ?Sized,
        Q: Probe + ?Sized,
    {
        check(params, state.len(), 1)?;
        let (decay, momentum, lr) = (
            Coef::new(self.weight_decay),
            Coef::new(self.momentum),
            Coef::new(self.lr),
        );
        let mut rest = state;
        params.visit(&mut |t| {
            let taken = core::mem::take(&mut rest);
            let (buf, tail) = taken.split_at_mut(t.value.len().min(taken.len()));
            rest = tail;
            for ((w, &g), b) in t.value.iter_mut().zip(t.grad.iter()).zip(buf.iter_mut()) {
                let (gd, f0) = if self.weight_decay > 0.0 {
                    let (d, f1) = w.scale_by(&decay, r);
                    let (s, f2) = g.add(d);
                    (s, f1 | f2)
                } else {
                    (g, crate::Flags::NONE)
                };
                let (mb, f3) = b.scale_by(&momentum, r);
                let (nb, f4) = mb.add(gd);
                let (step, f5) = nb.scale_by(&lr, r);
                let (nw, f6) = w.sub(step);
                probe.record(f0 | f3 | f4 | f5 | f6);
                *b = nb;
                *w = nw;
            }
        });
        Ok(())
    }
}

/// Adam (Kingma & Ba 2015), PyTorch's defaults: β₁ = 0.9, β₂ = 0.999, ε = 10⁻⁸.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    t: u32,
}

impl Adam {
    /// Learning rate `lr > 0`, `0 <= β₁, β₂ < 1`, `ε > 0`, weight decay `>= 0`.
    pub fn new(
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Adam, StepError> {
        Ok(Adam {
            lr: hyper(lr, f64::MIN_POSITIVE, f64::INFINITY)?,
            beta1: hyper(beta1, 0.0, 1.0)?,
            beta2: hyper(beta2, 0.0, 1.0)?,
            eps: hyper(eps, f64::MIN_POSITIVE, f64::INFINITY)?,
            weight_decay: hyper(weight_decay, 0.0, f64::INFINITY)?,
            t: 0,
        })
    }

    /// Adam with PyTorch's default β₁, β₂, ε and no weight decay.
    pub fn with_lr(lr: f64) -> Result<Adam, StepError> {
        Adam::new(lr, 0.9, 0.999, 1e-8, 0.0)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.t
    }

    /// One update; `state` holds `m` then `v` for each parameter (2 values per parameter, zero initially).
    pub fn step<S, P, R, Q>(
        &mut self,
        params: &mut P,
        state: &mut [S],
        r: &mut R,
        probe: &mut Q,
    ) -> Result<(), StepError>
    where
        S: Scalar,
        P: Params<S> + ?Sized,
        R: Rounding + ?Sized,
        Q: Probe + ?Sized,
    {
        check(params, state.len(), 2)?;
        self.t = self.t.saturating_add(1);
        let t = self.t as f64;
        let c1 = 1.0 - libm::pow(self.beta1, t);
        let c2 = 1.0 - libm::pow(self.beta2, t);
        let this = *self;
        let mut rest = state;
        params.visit(&mut |tensor| {
            let n = tensor.value.len();
            let taken = core::mem::take(&mut rest);
            let (mine, tail) = taken.split_at_mut((2 * n).min(taken.len()));
            rest = tail;
            for ((w, &g), mv) in tensor
                .value
                .iter_mut()
                .zip(tensor.grad.iter())
                .zip(mine.chunks_exact_mut(2))
            {
                let (wf, gf) = (w.to_f64(), g.to_f64());
                let g2 = gf + this.weight_decay * wf;
                let (Some(m0), Some(v0)) = (mv.first().copied(), mv.get(1).copied()) else {
                    continue;
                };
                let m = this.beta1 * m0.to_f64() + (1.0 - this.beta1) * g2;
                let v = this.beta2 * v0.to_f64() + (1.0 - this.beta2) * g2 * g2;
                let new_w = wf - this.lr * (m / c1) / (libm::sqrt(v / c2) + this.eps);
                let (mq, f1) = S::from_f64(m, r);
                let (vq, f2) = S::from_f64(v, r);
                let (wq, f3) = S::from_f64(new_w, r);
                probe.record(f1 | f2 | f3);
                if let Some(x) = mv.first_mut() {
                    *x = mq;
                }
                if let Some(x) = mv.get_mut(1) {
                    *x = vq;
                }
                *w = wq;
            }
        });
        Ok(())
    }
}
