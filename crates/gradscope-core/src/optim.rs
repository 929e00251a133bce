//! Optimizers: one [`Optimizer`] trait, written once against the [`Params`] visitor.
//!
//! - [`Sgd`]: PyTorch's SGD (no dampening, no Nesterov) with momentum μ as a value (μ = 0 is plain SGD) and
//!   coupled L2 `weight_decay` λ: `g′ = g + λ·w`, `b ← μ·b + g′` (the first step's buffer is `g′`),
//!   `w ← w − lr·b`; with μ = 0, `w ← w − lr·g − lr·λ·w`. In fixed point each product is rounded once with the
//!   caller's rounding (stochastic rounding keeps updates smaller than one LSB alive on average).
//! - [`Adam`]: Kingma & Ba (2015) as in PyTorch: `m ← β₁m + (1 − β₁)g′`, `v ← β₂v + (1 − β₂)g′²`,
//!   `w ← w − lr·m̂/(√v̂ + ε)` with bias-corrected m̂, v̂. With coupled decay (`Adam`) `g′ = g + λ·w`; with
//!   decoupled decay (AdamW, Loshchilov & Hutter 2019) `g′ = g` and `w ← w·(1 − lr·λ)` first. Each element's
//!   update is computed in `f64` and the new `m`, `v` and `w` are each rounded once into `S`. In fixed point `v`
//!   (a squared gradient) underflows long before the gradient does: a finding, reported, not hidden.
//!
//! **State** lives in a buffer the optimizer owns or borrows, any `M: AsMut<[S]>`: an array or a `&'static mut`
//! slice on an MCU, a `Vec` on the host, [`NoState`] where none is needed. It is laid out in [`Params::visit`]
//! order: [`Optimizer::state_len`] says how long it must be.
//!
//! **Scaled gradients.** [`Optimizer::step`] takes the factor `s` by which the gradients are too large (loss
//! scaling; 1 without). SGD folds `1/s` into its learning rate and `s` into its decay, so a scaled gradient
//! never passes through an unscaled, underflowing form; its momentum buffer is kept in scaled units and rescaled
//! (exactly, for the powers of two a dynamic scaler uses) when `s` changes. Adam divides in `f64`.
//!
//! **Refusal.** Before any update every step scans every gradient: a non-finite one stops the step with
//! [`StepError::NonFiniteGradient`] (which tensor, which element, which layer) and leaves every weight and state
//! unchanged, so a NaN never poisons the weights silently. Events (rounding, saturation, updates lost to
//! underflow) go to a [`Probes`] sink under each tensor's layer, phase [`Phase::Update`].

use core::fmt;

use crate::flags::Flags;
use crate::layer::{Phase, Probes};
use crate::net::{Params, param_count};
use crate::round::Rounding;
use crate::scalar::{Coef, Scalar};

/// Why an optimizer step did not happen.
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum StepError {
    /// A hyperparameter is NaN, infinite, or out of range (learning rate must be > 0, decay ≥ 0).
    InvalidHyperparameter(f64),
    /// The optimizer state is shorter than it must be (`need` values).
    StateTooSmall {
        /// Values needed.
        need: usize,
    },
    /// A gradient is NaN or ±∞: the index of the tensor in visiting order, of the element in it, and the
    /// tensor's layer.
    NonFiniteGradient {
        /// Tensor index in [`Params::visit`] order.
        tensor: usize,
        /// Element index within the tensor.
        element: usize,
        /// The tensor's layer.
        layer: usize,
    },
    /// The gradient scale is zero, negative or not finite.
    InvalidGradScale(f64),
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::InvalidHyperparameter(v) => write!(f, "invalid hyperparameter {v}"),
            StepError::StateTooSmall { need } => write!(f, "optimizer state needs {need} values"),
            StepError::NonFiniteGradient {
                tensor,
                element,
                layer,
            } => {
                write!(
                    f,
                    "non-finite gradient in layer {layer} (tensor {tensor}, element {element}); weights left unchanged"
                )
            }
            StepError::InvalidGradScale(s) => {
                write!(f, "gradient scale must be positive and finite, got {s}")
            }
        }
    }
}

impl core::error::Error for StepError {}

/// An optimizer: updates parameters from their accumulated gradients. Implementations provide the update;
/// [`Optimizer::step`] makes the checks every optimizer needs first.
pub trait Optimizer<S: Scalar> {
    /// State values needed for `params` parameter values (the length its buffer must have); never fewer for
    /// more parameters.
    fn state_len(&self, params: usize) -> usize;

    /// The state buffer.
    fn state(&mut self) -> &mut [S];

    /// The update itself, called by [`Optimizer::step`] once the gradient scale, the state's length and every
    /// gradient's finiteness are checked.
    fn apply(
        &mut self,
        params: &mut (impl Params<S> + ?Sized),
        grad_scale: f64,
        r: &mut (impl Rounding + ?Sized),
        probes: &mut (impl Probes + ?Sized),
    );

    /// One update of every parameter of `params` from its gradient, which holds `grad_scale` times the true
    /// gradient (1 without loss scaling). Gradients are left as they are. Events go to `probes` under each
    /// tensor's layer in phase [`Phase::Update`]. On error nothing changed.
    fn step(
        &mut self,
        params: &mut (impl Params<S> + ?Sized),
        grad_scale: f64,
        r: &mut (impl Rounding + ?Sized),
        probes: &mut (impl Probes + ?Sized),
    ) -> Result<(), StepError> {
        // Positive and finite, tested on the bits (sign clear, not zero, exponent not all ones): an f64 compare
        // is a library call on a core without a double-precision FPU.
        let b = grad_scale.to_bits();
        if b >> 63 != 0 || b == 0 || (b >> 52) == 0x7ff {
            return Err(StepError::InvalidGradScale(grad_scale));
        }
        // Counting the parameters visits every tensor: not when even the most would need no more state than
        // there is (plain SGD needs none).
        if self.state().len() < self.state_len(usize::MAX) {
            let need = self.state_len(param_count(params));
            if self.state().len() < need {
                return Err(StepError::StateTooSmall { need });
            }
        }
        if let Some(e) = find_nonfinite(params) {
            return Err(e);
        }
        self.apply(params, grad_scale, r, probes);
        Ok(())
    }
}

/// The state buffer of an optimizer that keeps none (plain SGD).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NoState;

impl<S> AsMut<[S]> for NoState {
    fn as_mut(&mut self) -> &mut [S] {
        &mut []
    }
}

/// The first non-finite gradient, if any (fixed-point values are always finite).
pub fn find_nonfinite<S: Scalar, P: Params<S> + ?Sized>(params: &mut P) -> Option<StepError> {
    if !S::IS_FLOAT {
        return None;
    }
    let mut k = 0usize;
    let mut found = None;
    params.visit(0, &mut |t| {
        // The bulk check first; the search only when it fails.
        if found.is_none()
            && !S::all_finite(t.grad)
            && let Some(e) = t.grad.iter().position(|g| !g.is_finite())
        {
            found = Some(StepError::NonFiniteGradient {
                tensor: k,
                element: e,
                layer: t.layer,
            });
        }
        k += 1;
    });
    found
}

fn hyper(x: f64, lo: f64, hi_exclusive: f64) -> Result<f64, StepError> {
    if x.is_finite() && x >= lo && x < hi_exclusive {
        Ok(x)
    } else {
        Err(StepError::InvalidHyperparameter(x))
    }
}

/// Stochastic gradient descent with momentum μ (0 for plain SGD) and coupled L2 weight decay; PyTorch's
/// `SGD(lr, momentum, weight_decay)`. The momentum buffer (one value per parameter) is `M`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd<M = NoState> {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    buf: M,
    /// The gradient scale the buffer's values are in (0 before the first step).
    buf_scale: f64,
    /// The prepared coefficients of the gradient scale `coef_scale` (0 before the first step): preparing one
    /// costs more than updating a small network on a core without a double-precision FPU, and the scale rarely
    /// changes.
    coefs: [Coef; 3],
    coef_scale: f64,
    /// μ = 0, and whether the update decays weights: decided once, since every f64 comparison is a library
    /// call on a core without a double-precision FPU.
    plain: bool,
    decaying: bool,
}

impl Sgd<NoState> {
    /// Plain SGD: learning rate `lr > 0`, `weight_decay >= 0`, no momentum (and no state).
    pub fn new(lr: f64, weight_decay: f64) -> Result<Self, StepError> {
        Sgd::with_momentum(lr, 0.0, weight_decay, NoState)
    }
}

impl<M> Sgd<M> {
    /// SGD with momentum `0 <= μ < 1` whose buffer (zero before the first step, one value per parameter) is
    /// `buf`.
    pub fn with_momentum(
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        buf: M,
    ) -> Result<Self, StepError> {
        let (lr, momentum, weight_decay) = (
            hyper(lr, f64::MIN_POSITIVE, f64::INFINITY)?,
            hyper(momentum, 0.0, 1.0)?,
            hyper(weight_decay, 0.0, f64::INFINITY)?,
        );
        let plain = momentum == 0.0;
        Ok(Sgd {
            lr,
            momentum,
            weight_decay,
            buf,
            buf_scale: 0.0,
            coefs: [Coef::new(0.0); 3],
            coef_scale: 0.0,
            plain,
            // Plain SGD folds the decay into `lr · decay`, which may round to zero.
            decaying: if plain {
                lr * weight_decay > 0.0
            } else {
                weight_decay > 0.0
            },
        })
    }

    /// `[lr / s, lr · decay, μ]` (plain) or `[lr / s, decay · s, μ]` (momentum) for gradient scale `s`.
    fn prepare(&self, s: f64) -> [Coef; 3] {
        let decay = if self.plain {
            self.lr * self.weight_decay
        } else {
            self.weight_decay * s
        };
        [
            Coef::new(self.lr / s),
            Coef::new(decay),
            Coef::new(self.momentum),
        ]
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The momentum μ.
    pub fn momentum(&self) -> f64 {
        self.momentum
    }
}

impl<S: Scalar, M: AsMut<[S]>> Optimizer<S> for Sgd<M> {
    fn state_len(&self, params: usize) -> usize {
        if self.plain { 0 } else { params }
    }

    fn state(&mut self) -> &mut [S] {
        self.buf.as_mut()
    }

    fn apply(
        &mut self,
        params: &mut (impl Params<S> + ?Sized),
        grad_scale: f64,
        r: &mut (impl Rounding + ?Sized),
        probes: &mut (impl Probes + ?Sized),
    ) {
        // The true gradient is g / s: fold 1/s into the learning rate and s into the decay. Compared as bits,
        // not with `==`: s is positive and finite, and an f64 compare is a library call on the M4F. Borrowed, not
        // copied: the three take 144 bytes.
        if self.coef_scale.to_bits() != grad_scale.to_bits() {
            self.coefs = self.prepare(grad_scale);
            self.coef_scale = grad_scale;
        }
        let [lr, decay, momentum] = &self.coefs;
        if self.plain {
            // The branch outside the loops (a soft-float compare per value otherwise), and outside the visit: each
            // tensor's call runs only the update it needs.
            if self.decaying {
                params.visit(0, &mut |t| {
                    for (w, &g) in t.value.iter_mut().zip(t.grad.iter()) {
                        let (d, f1) = g.scale_by(lr, r);
                        let (v, f2) = w.sub(d);
                        let (dw, f3) = w.scale_by(decay, r);
                        let (v, f4) = v.sub(dw);
                        probes.record(t.layer, Phase::Update, f1 | f2 | f3 | f4);
                        *w = v;
                    }
                });
            } else {
                params.visit(0, &mut |t| {
                    S::sub_scaled(t.value, t.grad, lr, r, |f| {
                        probes.record(t.layer, Phase::Update, f)
                    });
                });
            }
            return;
        }
        // Keep the buffer in the units of this step's gradients (exact for a power-of-two change).
        let rescale = (self.buf_scale > 0.0 && self.buf_scale != grad_scale)
            .then(|| Coef::new(grad_scale / self.buf_scale));
        self.buf_scale = grad_scale;
        let decaying = self.decaying;
        let mut rest: &mut [S] = self.buf.as_mut();
        params.visit(0, &mut |t| {
            let taken = core::mem::take(&mut rest);
            let (mine, tail) = taken.split_at_mut(t.value.len().min(taken.len()));
            rest = tail;
            for ((w, &g), b) in t.value.iter_mut().zip(t.grad.iter()).zip(mine.iter_mut()) {
                let mut f = Flags::NONE;
                if let Some(c) = &rescale {
                    let (nb, fr) = b.scale_by(c, r);
                    *b = nb;
                    f |= fr;
                }
                let gd = if decaying {
                    let (d, f1) = w.scale_by(decay, r);
                    let (s, f2) = g.add(d);
                    f |= f1 | f2;
                    s
                } else {
                    g
                };
                let (mb, f3) = b.scale_by(momentum, r);
                let (nb, f4) = mb.add(gd);
                let (step, f5) = nb.scale_by(lr, r);
                let (nw, f6) = w.sub(step);
                probes.record(t.layer, Phase::Update, f | f3 | f4 | f5 | f6);
                *b = nb;
                *w = nw;
            }
        });
    }
}

/// Adam's hyperparameters.
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AdamParams {
    /// Learning rate (> 0).
    pub lr: f64,
    /// β₁ in [0, 1).
    pub beta1: f64,
    /// β₂ in [0, 1).
    pub beta2: f64,
    /// ε (> 0).
    pub eps: f64,
    /// Weight decay λ (≥ 0).
    pub weight_decay: f64,
    /// Decoupled decay (AdamW) instead of coupled L2 (Adam).
    pub decoupled: bool,
}

impl AdamParams {
    /// PyTorch's `Adam(lr)` defaults: β₁ = 0.9, β₂ = 0.999, ε = 10⁻⁸, no weight decay.
    pub fn new(lr: f64) -> AdamParams {
        AdamParams {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// PyTorch's `AdamW(lr, weight_decay)` (its default decay is 0.01).
    pub fn adamw(lr: f64, weight_decay: f64) -> AdamParams {
        AdamParams {
            weight_decay,
            decoupled: true,
            ..AdamParams::new(lr)
        }
    }
}

/// Adam or AdamW; the state `M` holds `m` then `v` for each parameter (2 values per parameter, zero initially).
#[derive(Clone, Debug, PartialEq)]
pub struct Adam<M = NoState> {
    p: AdamParams,
    t: u32,
    state: M,
}

impl<M> Adam<M> {
    /// Adam with validated hyperparameters and its state buffer.
    pub fn new(p: AdamParams, state: M) -> Result<Adam<M>, StepError> {
        hyper(p.lr, f64::MIN_POSITIVE, f64::INFINITY)?;
        hyper(p.beta1, 0.0, 1.0)?;
        hyper(p.beta2, 0.0, 1.0)?;
        hyper(p.eps, f64::MIN_POSITIVE, f64::INFINITY)?;
        hyper(p.weight_decay, 0.0, f64::INFINITY)?;
        Ok(Adam { p, t: 0, state })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.t
    }

    /// The hyperparameters.
    pub fn params(&self) -> &AdamParams {
        &self.p
    }
}

impl<S: Scalar, M: AsMut<[S]>> Optimizer<S> for Adam<M> {
    fn state_len(&self, params: usize) -> usize {
        params.saturating_mul(2)
    }

    fn state(&mut self) -> &mut [S] {
        self.state.as_mut()
    }

    fn apply(
        &mut self,
        params: &mut (impl Params<S> + ?Sized),
        grad_scale: f64,
        r: &mut (impl Rounding + ?Sized),
        probes: &mut (impl Probes + ?Sized),
    ) {
        self.t = self.t.saturating_add(1);
        let t = self.t as f64;
        let p = self.p;
        let c1 = 1.0 - libm::pow(p.beta1, t);
        let c2 = 1.0 - libm::pow(p.beta2, t);
        let (coupled, shrink) = if p.decoupled {
            (0.0, 1.0 - p.lr * p.weight_decay)
        } else {
            (p.weight_decay, 1.0)
        };
        let mut rest: &mut [S] = self.state.as_mut();
        params.visit(0, &mut |tensor| {
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
                let [m0, v0] = mv else { continue };
                let wf = w.to_f64() * shrink;
                let g2 = g.to_f64() / grad_scale + coupled * wf;
                let m = p.beta1 * m0.to_f64() + (1.0 - p.beta1) * g2;
                let v = p.beta2 * v0.to_f64() + (1.0 - p.beta2) * g2 * g2;
                let new_w = wf - p.lr * (m / c1) / (libm::sqrt(v / c2) + p.eps);
                let (mq, f1) = S::from_f64(m, r);
                let (vq, f2) = S::from_f64(v, r);
                let (wq, f3) = S::from_f64(new_w, r);
                probes.record(tensor.layer, Phase::Update, f1 | f2 | f3);
                *m0 = mq;
                *v0 = vq;
                *w = wq;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::I16F16;
    use crate::layer::LayerStats;
    use crate::net::ParamTensor;
    use crate::round::NearestEven;

    #[test]
    fn constructors_keep_what_they_were_given() {
        let p = AdamParams::adamw(0.01, 0.1);
        assert_eq!((p.weight_decay, p.decoupled, p.lr), (0.1, true, 0.01));
        let p = AdamParams::new(0.02);
        assert_eq!(
            (p.weight_decay, p.decoupled, p.beta1, p.beta2, p.eps),
            (0.0, false, 0.9, 0.999, 1e-8)
        );
        let s = Sgd::with_momentum(0.3, 0.6, 0.0, NoState).unwrap();
        assert_eq!((s.lr(), s.momentum()), (0.3, 0.6));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        extern crate std;
        use std::string::ToString;
        let cases = [
            (
                StepError::InvalidHyperparameter(-1.0),
                "invalid hyperparameter -1",
            ),
            (
                StepError::StateTooSmall { need: 5 },
                "optimizer state needs 5 values",
            ),
            (
                StepError::NonFiniteGradient {
                    tensor: 1,
                    element: 2,
                    layer: 3,
                },
                "non-finite gradient in layer 3 (tensor 1, element 2); weights left unchanged",
            ),
            (
                StepError::InvalidGradScale(0.0),
                "gradient scale must be positive and finite, got 0",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn the_gradient_scale_must_be_positive_and_finite() {
        // The check reads the bits; it must accept exactly what `is_finite() && > 0` accepts.
        let cases = [
            1.0,
            1024.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            0.0,
            -0.0,
            -1.0,
            -5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
        ];
        for s in cases {
            let (mut w, mut g) = ([1.0f32], [0.5f32]);
            let mut params = [ParamTensor::vector(0, &mut w, &mut g)];
            let got = Sgd::new(0.1, 0.0)
                .unwrap()
                .step(&mut params, s, &mut NearestEven, &mut ());
            let valid = s.is_finite() && s > 0.0;
            assert_eq!(got.is_ok(), valid, "grad scale {s:e}");
            if !valid {
                assert!(matches!(got, Err(StepError::InvalidGradScale(_))));
                assert_eq!(w, [1.0], "nothing changes on error");
            }
        }
    }

    #[test]
    fn sgd_folds_the_gradient_scale_into_the_learning_rate() {
        // A gradient of 3 LSB held 2^10 times too large: lr·g/s is far below one LSB if unscaled first, but
        // folding 1/s into lr gives the exact update.
        let (mut w, mut g) = ([I16F16::from_bits(1 << 16)], [I16F16::from_bits(3 << 10)]);
        let mut opt = Sgd::new(0.5, 0.0).unwrap();
        let mut stats = [LayerStats::default(); 3];
        let mut params = [ParamTensor::vector(2, &mut w, &mut g)];
        opt.step(&mut params, 1024.0, &mut NearestEven, &mut stats)
            .unwrap();
        // 1 − 0.5·3·2^−16, rounded to nearest: 65536 − 1.5 → 65534 (ties to even).
        assert_eq!(w[0].to_bits(), 65534);
        // The update's events are counted under the tensor's layer.
        assert_eq!(stats[2].update.values, 1);
        assert_eq!(stats[0].update.values, 0);
    }

    #[test]
    fn momentum_buffer_follows_a_changing_scale() {
        // With momentum the buffer holds scaled gradients; when the scale halves it is halved too, so the
        // updates equal those of the unscaled run.
        let run = |scales: [f64; 3]| {
            let (mut w, mut g) = ([1.0f64], [0.0f64]);
            let mut opt = Sgd::with_momentum(0.1, 0.9, 0.0, [0.0f64; 1]).unwrap();
            for (k, s) in scales.iter().enumerate() {
                g[0] = (k as f64 + 1.0) * s;
                let mut params = [ParamTensor::vector(0, &mut w, &mut g)];
                opt.step(&mut params, *s, &mut NearestEven, &mut ())
                    .unwrap();
            }
            w[0]
        };
        assert_eq!(run([4.0, 2.0, 2.0]), run([1.0, 1.0, 1.0]));
    }

    #[test]
    fn refused_steps_change_nothing() {
        let (mut w, mut g) = ([1.0f32, 2.0], [0.5f32, f32::NAN]);
        let mut opt = Adam::new(AdamParams::new(0.1), [0.25f32; 4]).unwrap();
        let mut params = [ParamTensor::vector(5, &mut w, &mut g)];
        assert_eq!(
            opt.step(&mut params, 1.0, &mut NearestEven, &mut ()),
            Err(StepError::NonFiniteGradient {
                tensor: 0,
                element: 1,
                layer: 5
            })
        );
        assert_eq!(
            opt.step(&mut params, 0.0, &mut NearestEven, &mut ()),
            Err(StepError::InvalidGradScale(0.0))
        );
        assert_eq!((w, opt.state, opt.steps()), ([1.0, 2.0], [0.25; 4], 0));
    }
}
