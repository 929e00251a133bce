//! Batches: batch normalization over a const-size batch, the adapter that runs any per-sample layer on a batch,
//! and a parameterless activation layer (so `Dense → BatchNorm → activation` composes by tuples).
//!
//! [`BatchNorm`] follows PyTorch's `BatchNorm1d` (and [`BatchNorm2d`] its `BatchNorm2d`, per channel over the
//! batch and every position): in training mode it normalizes each feature with the batch
//! mean and (biased) variance, `y = γ·(x − μ)/√(σ² + ε) + β`, and updates the running statistics with momentum
//! 0.1 (the running variance from the unbiased batch variance, or from the biased one, 0, when a channel has a
//! single value); in evaluation mode it uses the running statistics. Float-only.
//!
//! [`Batched`] keeps each sample's input and, in `backward`, runs that sample's forward pass again before its
//! backward pass: per-sample layers cache one sample, and recomputing is cheaper than a cache per sample.

use core::marker::PhantomData;

use super::{At, Layer, Phase, Probes, Tensor, activate, activate_back};
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
        let mut y = [[S::c(0.0); N]; B];
        let mut st = self.state();
        st.forward(x.as_flattened(), y.as_flattened_mut(), at, p);
        y
    }

    fn backward<R, P>(&mut self, dy: &[[S; N]; B], at: usize, _r: &mut R, p: &mut P) -> [[S; N]; B]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dx = [[S::c(0.0); N]; B];
        self.state()
            .backward(dy.as_flattened(), dx.as_flattened_mut(), at, p);
        dx
    }

    fn zero_grad(&mut self) {
        let zero = S::c(0.0);
        self.grad_gamma = [zero; N];
        self.grad_beta = [zero; N];
    }
}

impl<S: Float, const N: usize, const B: usize> BatchNorm<S, N, B> {
    fn state(&mut self) -> Norm<'_, S> {
        Norm {
            channels: N,
            positions: 1,
            gamma: &self.gamma,
            beta: &self.beta,
            grad_gamma: &mut self.grad_gamma,
            grad_beta: &mut self.grad_beta,
            running_mean: &mut self.running_mean,
            running_var: &mut self.running_var,
            training: self.training,
            xhat: self.xhat.as_flattened_mut(),
            inv_std: &mut self.inv_std,
        }
    }
}

/// Batch normalization's state seen flat: a batch of samples, each `channels` × `positions` values
/// (`positions` = 1 for features, `H·W` for a CHW image); one set of statistics per channel, over the batch and
/// the positions.
struct Norm<'a, S> {
    channels: usize,
    positions: usize,
    gamma: &'a [S],
    beta: &'a [S],
    grad_gamma: &'a mut [S],
    grad_beta: &'a mut [S],
    running_mean: &'a mut [S],
    running_var: &'a mut [S],
    training: bool,
    xhat: &'a mut [S],
    inv_std: &'a mut [S],
}

impl<S: Float> Norm<'_, S> {
    /// The flat indices of channel `j`'s values, sample by sample, position by position (the order of every
    /// sum below).
    fn indices(&self, j: usize) -> impl Iterator<Item = usize> + use<S> {
        let (pos, stride) = (self.positions, self.channels * self.positions);
        let samples = self.xhat.len().checked_div(stride).unwrap_or(0);
        (0..samples).flat_map(move |k| (0..pos).map(move |q| k * stride + j * pos + q))
    }

    fn count(&self) -> usize {
        self.xhat.len().checked_div(self.channels).unwrap_or(0)
    }

    fn forward<P: Probes + ?Sized>(&mut self, x: &[S], y: &mut [S], at: usize, p: &mut P) {
        let (zero, one) = (S::c(0.0), S::c(1.0));
        let m = self.count();
        let mf = S::c(m.max(1) as f64);
        let eps = S::c(BATCHNORM_EPS);
        let mom = S::c(BATCHNORM_MOMENTUM);
        for j in 0..self.channels {
            let at_ = |k: usize| x.get(k).copied().unwrap_or(zero);
            let (mean, inv_std) = if self.training {
                let mean = self.indices(j).fold(zero, |a, k| a + at_(k)) / mf;
                let var = self
                    .indices(j)
                    .fold(zero, |a, k| a + (at_(k) - mean) * (at_(k) - mean))
                    / mf;
                let unbiased = if m > 1 {
                    var * mf / S::c((m - 1) as f64)
                } else {
                    var
                };
                if let (Some(rm), Some(rv)) =
                    (self.running_mean.get_mut(j), self.running_var.get_mut(j))
                {
                    *rm = (one - mom) * *rm + mom * mean;
                    *rv = (one - mom) * *rv + mom * unbiased;
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
            for k in self.indices(j) {
                let xh = (at_(k) - mean) * inv_std;
                if let Some(v) = self.xhat.get_mut(k) {
                    *v = xh;
                }
                if let Some(v) = y.get_mut(k) {
                    *v = g * xh + b;
                    p.record(at, Phase::Forward, float_value_flags(*v));
                }
            }
        }
        p.signal(at, Phase::Forward, y);
    }

    fn backward<P: Probes + ?Sized>(&mut self, dy: &[S], dx: &mut [S], at: usize, p: &mut P) {
        let zero = S::c(0.0);
        let mf = S::c(self.count().max(1) as f64);
        for j in 0..self.channels {
            let d = |k: usize| dy.get(k).copied().unwrap_or(zero);
            let xh = |k: usize| self.xhat.get(k).copied().unwrap_or(zero);
            let g = self.gamma.get(j).copied().unwrap_or(zero);
            let inv_std = self.inv_std.get(j).copied().unwrap_or(zero);
            let sum_d = self.indices(j).fold(zero, |a, k| a + d(k));
            let sum_dx = self.indices(j).fold(zero, |a, k| a + d(k) * xh(k));
            if let (Some(gg), Some(gb)) = (self.grad_gamma.get_mut(j), self.grad_beta.get_mut(j)) {
                *gg = *gg + sum_dx;
                *gb = *gb + sum_d;
            }
            for k in self.indices(j) {
                // Training: the batch statistics depend on x too (Ioffe & Szegedy 2015, eq. in §3).
                let v = if self.training {
                    g * inv_std * (d(k) - sum_d / mf - xh(k) * sum_dx / mf)
                } else {
                    g * inv_std * d(k)
                };
                if let Some(o) = dx.get_mut(k) {
                    *o = v;
                    p.record(at, Phase::Backward, float_value_flags(v));
                }
            }
        }
        p.signal(at, Phase::Backward, dx);
    }
}

/// Batch normalization of `C` channels of `H × W` over a const-size batch of `B` samples: PyTorch's
/// `BatchNorm2d`, each channel normalized with the mean and (biased) variance over the batch and every
/// position, the running statistics from the unbiased variance over the same `B·H·W` values. The same code as
/// [`BatchNorm`] (which is this with one position per channel). Float-only.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm2d<S, const C: usize, const H: usize, const W: usize, const B: usize> {
    /// Scale γ per channel (initially 1).
    pub gamma: [S; C],
    /// Shift β per channel (initially 0).
    pub beta: [S; C],
    /// Accumulated ∂L/∂γ.
    pub grad_gamma: [S; C],
    /// Accumulated ∂L/∂β.
    pub grad_beta: [S; C],
    /// Running mean (initially 0).
    pub running_mean: [S; C],
    /// Running variance (initially 1).
    pub running_var: [S; C],
    /// Training mode (batch statistics) or evaluation mode (running statistics).
    pub training: bool,
    xhat: [[[[S; W]; H]; C]; B],
    inv_std: [S; C],
}

impl<S: Float, const C: usize, const H: usize, const W: usize, const B: usize>
    BatchNorm2d<S, C, H, W, B>
{
    /// γ = 1, β = 0, running mean 0, running variance 1, training mode.
    pub fn new() -> Self {
        let (zero, one) = (S::c(0.0), S::c(1.0));
        BatchNorm2d {
            gamma: [one; C],
            beta: [zero; C],
            grad_gamma: [zero; C],
            grad_beta: [zero; C],
            running_mean: [zero; C],
            running_var: [one; C],
            training: true,
            xhat: [[[[zero; W]; H]; C]; B],
            inv_std: [one; C],
        }
    }

    fn state(&mut self) -> Norm<'_, S> {
        Norm {
            channels: C,
            positions: H * W,
            gamma: &self.gamma,
            beta: &self.beta,
            grad_gamma: &mut self.grad_gamma,
            grad_beta: &mut self.grad_beta,
            running_mean: &mut self.running_mean,
            running_var: &mut self.running_var,
            training: self.training,
            xhat: self
                .xhat
                .as_flattened_mut()
                .as_flattened_mut()
                .as_flattened_mut(),
            inv_std: &mut self.inv_std,
        }
    }
}

impl<S: Float, const C: usize, const H: usize, const W: usize, const B: usize> Default
    for BatchNorm2d<S, C, H, W, B>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Float, const C: usize, const H: usize, const W: usize, const B: usize> Params<S>
    for BatchNorm2d<S, C, H, W, B>
{
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(ParamTensor::vector(at, &mut self.gamma, &mut self.grad_gamma).named("weight"));
        f(ParamTensor::vector(at, &mut self.beta, &mut self.grad_beta).named("bias"));
    }
}

impl<S: Float, const C: usize, const H: usize, const W: usize, const B: usize> Layer<S>
    for BatchNorm2d<S, C, H, W, B>
{
    type Input = [[[[S; W]; H]; C]; B];
    type Output = [[[[S; W]; H]; C]; B];

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, _r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut y = [[[[S::c(0.0); W]; H]; C]; B];
        let x = x.as_flattened().as_flattened().as_flattened();
        let yf = y.as_flattened_mut().as_flattened_mut().as_flattened_mut();
        self.state().forward(x, yf, at, p);
        y
    }

    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, _r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dx = [[[[S::c(0.0); W]; H]; C]; B];
        let dy = dy.as_flattened().as_flattened().as_flattened();
        let dxf = dx.as_flattened_mut().as_flattened_mut().as_flattened_mut();
        self.state().backward(dy, dxf, at, p);
        dx
    }

    fn zero_grad(&mut self) {
        let zero = S::c(0.0);
        self.grad_gamma = [zero; C];
        self.grad_beta = [zero; C];
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

/// An activation as a layer without parameters, on any [`Tensor`] shape (`[S; N]`, a CHW image).
#[derive(Clone, Debug, PartialEq)]
pub struct ActLayer<X> {
    /// The activation.
    pub act: Act,
    x: X,
    y: X,
}

impl<X: Tensor> ActLayer<X> {
    /// The layer applying `act` elementwise.
    pub fn new(act: Act) -> Self {
        ActLayer {
            act,
            x: X::zeros(),
            y: X::zeros(),
        }
    }
}

impl<S: Scalar, X: Tensor<Elem = S>> Params<S> for ActLayer<X> {
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, _at: usize, _f: &mut dyn FnMut(ParamTensor<'_, S>)) {}
}

impl<S: Scalar, X: Tensor<Elem = S>> Layer<S> for ActLayer<X>
where
    Act: Activate<S>,
{
    type Input = X;
    type Output = X;

    fn forward<R, P>(&mut self, x: &X, at: usize, r: &mut R, p: &mut P) -> X
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        self.x = *x;
        activate(
            &self.act,
            x.flat(),
            self.y.flat_mut(),
            r,
            &mut At::new(&mut *p, at, Phase::Forward),
        );
        p.signal(at, Phase::Forward, self.y.flat());
        self.y
    }

    fn backward<R, P>(&mut self, dy: &X, at: usize, r: &mut R, p: &mut P) -> X
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dx = X::zeros();
        let mut bp = At::new(&mut *p, at, Phase::Backward);
        activate_back(
            &self.act,
            (self.x.flat(), self.y.flat()),
            dy.flat(),
            dx.flat_mut(),
            r,
            &mut bp,
        );
        p.signal(at, Phase::Backward, dx.flat());
        dx
    }

    fn zero_grad(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Dense, GradStats};
    use crate::round::NearestEven;

    /// Each parameter tensor a layer visits: its layer index, name, length, Σ value and Σ |gradient|.
    fn tensors<S: Scalar>(
        l: &mut impl Params<S>,
        at: usize,
    ) -> [(usize, &'static str, usize, f64, f64); 2] {
        let mut out = [(usize::MAX, "", 0, 0.0, 0.0); 2];
        let mut n = 0;
        l.visit(at, &mut |t| {
            let sum = |v: &[S]| v.iter().map(|x| x.to_f64()).sum::<f64>();
            let abs = t.grad.iter().map(|x| libm::fabs(x.to_f64())).sum::<f64>();
            if let Some(o) = out.get_mut(n) {
                *o = (t.layer, t.name, t.value.len(), sum(t.value), abs);
            }
            n += 1;
        });
        assert_eq!(n, 2, "two tensors");
        out
    }

    #[test]
    fn batch_norms_expose_gamma_and_beta_with_their_gradients_and_zero_them() {
        let r = &mut NearestEven;
        let mut bn = BatchNorm::<f32, 3, 2>::new();
        bn.forward(&[[1.0, 2.0, 3.0], [2.0, 0.0, 5.0]], 4, r, &mut ());
        bn.backward(&[[1.0, 0.5, -1.0], [0.25, 2.0, 1.0]], 4, r, &mut ());
        assert_eq!(bn.depth(), 1);
        let t = tensors(&mut bn, 4);
        assert_eq!(
            (
                t[0].0, t[0].1, t[0].2, t[0].3, t[1].0, t[1].1, t[1].2, t[1].3
            ),
            (4, "weight", 3, 3.0, 4, "bias", 3, 0.0)
        );
        // ∂β = Σ dy per feature: 1.25 + 2.5 + 0.
        assert_eq!(t[1].4, 3.75);
        assert!(t[0].4 > 0.0);
        bn.zero_grad();
        assert_eq!(GradStats::of(&mut bn).zeros, 6);

        let mut bn2 = BatchNorm2d::<f32, 2, 1, 2, 1>::new();
        let y = bn2.forward(&[[[[1.0, 3.0]], [[0.0, 4.0]]]], 1, r, &mut ());
        // Per channel over the positions: mean 2, biased variances 1 and 4.
        let (one, two) = (
            1.0 / libm::sqrt(1.0 + BATCHNORM_EPS),
            2.0 / libm::sqrt(4.0 + BATCHNORM_EPS),
        );
        for (v, want) in y
            .as_flattened()
            .as_flattened()
            .as_flattened()
            .iter()
            .zip([-one, one, -two, two])
        {
            assert!(libm::fabs(*v as f64 - want) < 1e-6, "{v} vs {want}");
        }
        bn2.backward(&[[[[1.0, 2.0]], [[0.5, 0.0]]]], 1, r, &mut ());
        assert_eq!(bn2.depth(), 1);
        let t = tensors(&mut bn2, 1);
        assert_eq!(
            (t[0].1, t[0].2, t[1].1, t[1].2, t[1].4),
            ("weight", 2, "bias", 2, 3.5)
        );
        bn2.zero_grad();
        assert_eq!(GradStats::of(&mut bn2).zeros, 4);
    }

    #[test]
    fn batch_statistics_take_two_passes_so_a_far_mean_costs_no_accuracy() {
        // Values 10⁴ ± a few tenths: Σx²/m − μ² (or Σ(x+μ)(x−μ), the same in exact arithmetic) cancels
        // about 2% of the variance away in f32; the two-pass Σ(x − μ)² keeps it.
        let x = [10000.3f32, 9999.7, 10000.1, 9999.9];
        let mut bn = BatchNorm::<f32, 1, 4>::new();
        let y = bn.forward(&x.map(|v| [v]), 0, &mut NearestEven, &mut ());
        let xs = x.map(f64::from);
        let mean = xs.iter().sum::<f64>() / 4.0;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 4.0;
        for (yk, xk) in y.iter().zip(xs) {
            let want = (xk - mean) / libm::sqrt(var + BATCHNORM_EPS);
            assert!(
                libm::fabs(yk[0] as f64 - want) < 1e-4,
                "{} vs {want}",
                yk[0]
            );
        }
    }

    #[test]
    fn a_batch_of_one_updates_the_running_variance_with_its_zero_variance() {
        // The unbiased variance of one value would divide by m − 1 = 0; the biased one (0) is used instead.
        let mut bn = BatchNorm::<f32, 1, 1>::new();
        bn.forward(&[[5.0]], 0, &mut NearestEven, &mut ());
        assert_eq!((bn.running_mean, bn.running_var), ([0.5], [0.9]));
    }

    #[test]
    fn batched_runs_each_sample_through_its_own_cache_and_forwards_the_parameters() {
        let r = &mut NearestEven;
        let mut net = (
            Dense::<f32, 2, 2>::new(Act::Tanh),
            Dense::<f32, 2, 1>::new(Act::Identity),
        );
        net.0.weight = [[0.5, -1.0], [2.0, 0.25]];
        net.0.bias = [0.1, -0.2];
        net.1.weight = [[1.5, -0.5]];
        let x = [[1.0f32, 2.0], [-0.5, 0.25], [3.0, -1.0]];
        let dy = [[1.0f32], [-2.0], [0.5]];
        // Sample by sample, forward then backward: the reference.
        let mut one = net.clone();
        let dx_want = core::array::from_fn::<_, 3, _>(|k| {
            one.forward(&x[k], 0, r, &mut ());
            one.backward(&dy[k], 0, r, &mut ())
        });
        let mut b = Batched::<f32, _, 3>::new(net);
        let y = b.forward(&x, 0, r, &mut ());
        assert_eq!(y[1], b.layer.clone().forward(&x[1], 0, r, &mut ()));
        let dx = b.backward(&dy, 0, r, &mut ());
        assert_eq!(dx, dx_want);
        assert_eq!(
            (b.layer.0.grad_weight, b.layer.1.grad_weight),
            (one.0.grad_weight, one.1.grad_weight)
        );
        assert_eq!(b.depth(), 2);
        let mut names = [""; 4];
        let mut n = 0;
        b.visit(3, &mut |t| {
            if let Some(s) = names.get_mut(n) {
                *s = t.name;
            }
            assert_eq!(t.layer, 3 + n / 2);
            n += 1;
        });
        assert_eq!(names, ["weight", "bias", "weight", "bias"]);
        b.zero_grad();
        let g = GradStats::of(&mut b);
        assert_eq!((g.zeros, g.count), (9, 9));
    }

    #[test]
    fn an_activation_layer_is_one_layer_without_parameters() {
        let r = &mut NearestEven;
        let mut a = ActLayer::<[f32; 2]>::new(Act::Relu);
        assert_eq!(Params::<f32>::depth(&a), 1);
        assert_eq!(GradStats::of::<f32, _>(&mut a).count, 0);
        assert_eq!(a.forward(&[-1.0, 2.0], 0, r, &mut ()), [0.0, 2.0]);
        assert_eq!(a.backward(&[5.0, 3.0], 0, r, &mut ()), [0.0, 3.0]);
    }

    #[test]
    fn evaluation_mode_uses_the_running_statistics_forward_and_backward() {
        let r = &mut NearestEven;
        let mut bn = BatchNorm::<f64, 2, 2>::new();
        (bn.running_mean, bn.running_var) = ([1.0, -1.0], [4.0, 0.25]);
        (bn.gamma, bn.beta, bn.training) = ([2.0, 0.5], [0.1, 0.0], false);
        let x = [[3.0, 0.0], [-2.0, -1.5]];
        let dy = [[2.0, -3.0], [0.5, 4.0]];
        let y = bn.forward(&x, 0, r, &mut ());
        let dx = bn.backward(&dy, 0, r, &mut ());
        let close = |a: f64, b: f64| libm::fabs(a - b) <= 1e-12 * libm::fabs(b);
        for k in 0..2 {
            for j in 0..2 {
                let s = libm::sqrt(bn.running_var[j] + BATCHNORM_EPS);
                let xhat = (x[k][j] - bn.running_mean[j]) / s;
                assert!(
                    close(y[k][j], bn.gamma[j] * xhat + bn.beta[j]),
                    "y[{k}][{j}]"
                );
                assert!(close(dx[k][j], bn.gamma[j] * dy[k][j] / s), "dx[{k}][{j}]");
            }
        }
        // The running statistics stay; the parameter gradients are Σ dy·x̂ and Σ dy.
        assert_eq!(
            (bn.running_mean, bn.running_var),
            ([1.0, -1.0], [4.0, 0.25])
        );
        assert_eq!(bn.grad_beta, [2.5, 1.0]);
        let s = [4.0f64, 0.25].map(|v| libm::sqrt(v + BATCHNORM_EPS));
        assert!(close(bn.grad_gamma[0], (2.0 * 2.0 + 0.5 * -3.0) / s[0]));
        assert!(close(bn.grad_gamma[1], (-3.0 * 1.0 + 4.0 * -0.5) / s[1]));
    }
}
