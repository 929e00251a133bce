//! Batches: batch normalization over a const-size batch, the adapter that runs any per-sample layer on a batch,
//! and a parameterless activation layer (so `Dense → BatchNorm → activation` composes by tuples).
//!
//! [`BatchNorm`] follows PyTorch's `BatchNorm1d`: in training mode it normalizes each feature with the batch
//! mean and (biased) variance, `y = γ·(x − μ)/√(σ² + ε) + β`, and updates the running statistics with momentum
//! 0.1 (the running variance from the unbiased batch variance); in evaluation mode it uses the running
//! statistics. Float-only.
//!
//! [`Batched`] keeps each sample's input and, in `backward`, runs that sample's forward pass again before its
//! backward pass: per-sample layers cache one sample, and recomputing is cheaper than a cache per sample.

use core::marker::PhantomData;

use super::{At, Layer, Phase, Probes, activate, activate_back};
use crate::activation::{Act, Activate};
use crate::net::{ParamTensor, Params};
use crate::round::Rounding;
use crate::scalar::{Float, Scalar, float_value_flags};

/// PyTorch's default `eps`.
pub const BATCHNORM_EPS: f64 = 1e-5;
/// PyTorch's default `momentum` for the running statistics.
pub const BATCHNORM_MOMENTUM: f64 = 0.1;

/// Batch normalization of `N` features over a batch of `B` samples.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm<S, const N: usize, const B: usize> {
    /// Scale γ (initially 1).
    pub gamma: [S; N],
    /// Shift β (initially 0).
    pub beta: [S; N],
    /// Accumulated ∂L/∂γ.
    pub grad_gamma: [S; N],
    /// Accumulated ∂L/∂β.
    pub grad_beta: [S; N],
    /// Running mean (initially 0).
    pub running_mean: [S; N],
    /// Running variance (initially 1).
    pub running_var: [S; N],
    /// Training mode (batch statistics) or evaluation mode (running statistics).
    pub training: bool,
    xhat: [[S; N]; B],
    inv_std: [S; N],
}

impl<S: Float, const N: usize, const B: usize> BatchNorm<S, N, B> {
    /// γ = 1, β = 0, running mean 0, running variance 1, training mode.
    pub fn new() -> Self {
        let (zero, one) = (S::c(0.0), S::c(1.0));
        BatchNorm {
            gamma: [one; N],
            beta: [zero; N],
            grad_gamma: [zero; N],
            grad_beta: [zero; N],
            running_mean: [zero; N],
            running_var: [one; N],
            training: true,
            xhat: [[zero; N]; B],
            inv_std: [one; N],
        }
    }
}

impl<S: Float, const N: usize, const B: usize> Default for BatchNorm<S, N, B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Float, const N: usize, const B: usize> Params<S> for BatchNorm<S, N, B> {
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(ParamTensor::vector(at, &mut self.gamma, &mut self.grad_gamma).named("weight"));
        f(ParamTensor::vector(at, &mut self.beta, &mut self.grad_beta).named("bias"));
    }
}

impl<S: Float, const N: usize, const B: usize> Layer<S> for BatchNorm<S, N, B> {
    type Input = [[S; N]; B];
    type Output = [[S; N]; B];

    fn forward<R, P>(&mut self, x: &[[S; N]; B], at: usize, _r: &mut R, p: &mut P) -> [[S; N]; B]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let (zero, one) = (S::c(0.0), S::c(1.0));
        let bn = S::c(B.max(1) as f64);
        let eps = S::c(BATCHNORM_EPS);
        let m = S::c(BATCHNORM_MOMENTUM);
        let mut y = [[zero; N]; B];
        for j in 0..N {
            let col = |k: usize| x.get(k).and_then(|r| r.get(j)).copied().unwrap_or(zero);
            let (mean, inv_std) = if self.training {
                let mean = (0..B).fold(zero, |a, k| a + col(k)) / bn;
                let var = (0..B).fold(zero, |a, k| a + (col(k) - mean) * (col(k) - mean)) / bn;
                let unbiased = if B > 1 {
                    var * bn / S::c((B - 1) as f64)
                } else {
                    var
                };
                if let (Some(rm), Some(rv)) =
                    (self.running_mean.get_mut(j), self.running_var.get_mut(j))
                {
                    *rm = (one - m) * *rm + m * mean;
                    *rv = (one - m) * *rv + m * unbiased;
                }
                (mean, one / S::c(libm::sqrt((var + eps).to_f64())))
            } else {
                let rm = self.running_mean.get(j).copied().unwrap_or(zero);
                let rv = self.running_var.get(j).copied().unwrap_or(one);
                (rm, one / S::c(libm::sqrt((rv + eps).to_f64())))
            };
            if let Some(s) = self.inv_std.get_mut(j) {
                *s = inv_std;
            }
            let (g, b) = (
                self.gamma.get(j).copied().unwrap_or(one),
                self.beta.get(j).copied().unwrap_or(zero),
            );
            for k in 0..B {
                let xh = (col(k) - mean) * inv_std;
                if let Some(v) = self.xhat.get_mut(k).and_then(|r| r.get_mut(j)) {
                    *v = xh;
                }
                if let Some(v) = y.get_mut(k).and_then(|r| r.get_mut(j)) {
                    *v = g * xh + b;
                    p.record(at, Phase::Forward, float_value_flags(*v));
                }
            }
        }
        p.signal(at, Phase::Forward, y.as_flattened());
        y
    }

    fn backward<R, P>(&mut self, dy: &[[S; N]; B], at: usize, _r: &mut R, p: &mut P) -> [[S; N]; B]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let zero = S::c(0.0);
        let bn = S::c(B.max(1) as f64);
        let mut dx = [[zero; N]; B];
        for j in 0..N {
            let d = |k: usize| dy.get(k).and_then(|r| r.get(j)).copied().unwrap_or(zero);
            let xh = |k: usize| {
                self.xhat
                    .get(k)
                    .and_then(|r| r.get(j))
                    .copied()
                    .unwrap_or(zero)
            };
            let g = self.gamma.get(j).copied().unwrap_or(zero);
            let inv_std = self.inv_std.get(j).copied().unwrap_or(zero);
            let sum_d = (0..B).fold(zero, |a, k| a + d(k));
            let sum_dx = (0..B).fold(zero, |a, k| a + d(k) * xh(k));
            if let (Some(gg), Some(gb)) = (self.grad_gamma.get_mut(j), self.grad_beta.get_mut(j)) {
                *gg = *gg + sum_dx;
                *gb = *gb + sum_d;
            }
            for k in 0..B {
                // Training: the batch statistics depend on x too (Ioffe & Szegedy 2015, eq. in §3).
                let v = if self.training {
                    g * inv_std * (d(k) - sum_d / bn - xh(k) * sum_dx / bn)
                } else {
                    g * inv_std * d(k)
                };
                if let Some(o) = dx.get_mut(k).and_then(|r| r.get_mut(j)) {
                    *o = v;
                    p.record(at, Phase::Backward, float_value_flags(v));
                }
            }
        }
        p.signal(at, Phase::Backward, dx.as_flattened());
        dx
    }

    fn zero_grad(&mut self) {
        let zero = S::c(0.0);
        self.grad_gamma = [zero; N];
        self.grad_beta = [zero; N];
    }
}

/// A per-sample layer applied to each of `B` samples; parameters and gradients are the inner layer's (the
/// gradients accumulate over the batch).
#[derive(Clone, Debug, PartialEq)]
pub struct Batched<S, L: Layer<S>, const B: usize>
where
    S: Scalar,
{
    /// The per-sample layer.
    pub layer: L,
    inputs: [Option<L::Input>; B],
    _s: PhantomData<S>,
}

impl<S: Scalar, L: Layer<S>, const B: usize> Batched<S, L, B> {
    /// Wrap `layer`.
    pub fn new(layer: L) -> Self {
        Batched {
            layer,
            inputs: [None; B],
            _s: PhantomData,
        }
    }
}

impl<S: Scalar, L: Layer<S>, const B: usize> Params<S> for Batched<S, L, B> {
    fn depth(&self) -> usize {
        self.layer.depth()
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        self.layer.visit(at, f);
    }
}

impl<S: Scalar, L: Layer<S>, const B: usize> Layer<S> for Batched<S, L, B> {
    type Input = [L::Input; B];
    type Output = [L::Output; B];

    fn forward<R, P>(
        &mut self,
        x: &[L::Input; B],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) -> [L::Output; B]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        for (slot, xi) in self.inputs.iter_mut().zip(x) {
            *slot = Some(*xi);
        }
        x.map(|xi| self.layer.forward(&xi, at, r, p))
    }

    fn backward<R, P>(
        &mut self,
        dy: &[L::Output; B],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) -> [L::Input; B]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let inputs = self.inputs;
        let mut k = 0usize;
        dy.map(|dyi| {
            // Restore this sample's cache (events of the recomputation are not reported twice).
            if let Some(Some(xi)) = inputs.get(k) {
                self.layer.forward(xi, at, r, &mut ());
            }
            k += 1;
            self.layer.backward(&dyi, at, r, p)
        })
    }

    fn zero_grad(&mut self) {
        self.layer.zero_grad();
    }
}

/// An activation as a layer of `N` values without parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ActLayer<S, const N: usize> {
    /// The activation.
    pub act: Act,
    x: [S; N],
    y: [S; N],
}

impl<S: Scalar, const N: usize> ActLayer<S, N> {
    /// The layer applying `act` elementwise.
    pub fn new(act: Act) -> Self {
        ActLayer {
            act,
            x: [S::ZERO; N],
            y: [S::ZERO; N],
        }
    }
}

impl<S: Scalar, const N: usize> Params<S> for ActLayer<S, N> {
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, _at: usize, _f: &mut dyn FnMut(ParamTensor<'_, S>)) {}
}

impl<S: Scalar, const N: usize> Layer<S> for ActLayer<S, N>
where
    Act: Activate<S>,
{
    type Input = [S; N];
    type Output = [S; N];

    fn forward<R, P>(&mut self, x: &[S; N], at: usize, r: &mut R, p: &mut P) -> [S; N]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        self.x = *x;
        activate(
            &self.act,
            x,
            &mut self.y,
            r,
            &mut At::new(&mut *p, at, Phase::Forward),
        );
        p.signal(at, Phase::Forward, &self.y);
        self.y
    }

    fn backward<R, P>(&mut self, dy: &[S; N], at: usize, r: &mut R, p: &mut P) -> [S; N]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dx = [S::ZERO; N];
        let mut bp = At::new(&mut *p, at, Phase::Backward);
        activate_back(&self.act, (&self.x, &self.y), dy, &mut dx, r, &mut bp);
        p.signal(at, Phase::Backward, &dx);
        dx
    }

    fn zero_grad(&mut self) {}
}
