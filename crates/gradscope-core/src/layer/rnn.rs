//! The Elman RNN, unrolled over `T` steps with full backpropagation through time.
//!
//! `h_t = act(W_ih x_t + W_hh h_{t−1} + b)`, `h_{−1} = h0` (zero unless set). With `act = Act::Relu`,
//! `W_hh = I` and `b = 0` it is the IRNN of Le et al. (2015): initialize `weight_hh` with
//! [`Init::Identity`](crate::Init::Identity).
//!
//! The layer maps the whole sequence `[[S; I]; T]` to all hidden states `[[S; H]; T]`; a loss on the last
//! state only passes zeros for the other steps. Backward walks the steps in reverse, accumulating every
//! parameter gradient, and reports `∂L/∂h_t` of each step to [`Probes::step`].

use super::{At, Layer, Phase, Probes, activate_back_one, activate_one};
use crate::activation::{Act, Activate};
use crate::matrix::{add_assign, affine_pair, matvec_t, outer_acc};
use crate::net::{ParamTensor, Params};
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// An Elman RNN with `I` inputs, `H` hidden units, unrolled over `T` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Rnn<S, const I: usize, const H: usize, const T: usize> {
    /// Input weights `weight_ih[hidden][input]`.
    pub weight_ih: [[S; I]; H],
    /// Recurrent weights `weight_hh[hidden][hidden]`.
    pub weight_hh: [[S; H]; H],
    /// Bias.
    pub bias: [S; H],
    /// Accumulated ∂L/∂weight_ih.
    pub grad_weight_ih: [[S; I]; H],
    /// Accumulated ∂L/∂weight_hh.
    pub grad_weight_hh: [[S; H]; H],
    /// Accumulated ∂L/∂bias.
    pub grad_bias: [S; H],
    /// Initial hidden state.
    pub h0: [S; H],
    /// The activation (tanh or ReLU in the classic cells; any [`Act`] works).
    pub act: Act,
    xs: [[S; I]; T],
    zs: [[S; H]; T],
    hs: [[S; H]; T],
}

impl<S: Scalar, const I: usize, const H: usize, const T: usize> Rnn<S, I, H, T> {
    /// An RNN with zero weights and the given activation.
    pub fn new(act: Act) -> Self {
        Rnn {
            weight_ih: [[S::ZERO; I]; H],
            weight_hh: [[S::ZERO; H]; H],
            bias: [S::ZERO; H],
            grad_weight_ih: [[S::ZERO; I]; H],
            grad_weight_hh: [[S::ZERO; H]; H],
            grad_bias: [S::ZERO; H],
            h0: [S::ZERO; H],
            act,
            xs: [[S::ZERO; I]; T],
            zs: [[S::ZERO; H]; T],
            hs: [[S::ZERO; H]; T],
        }
    }

    /// The hidden states of the last forward pass.
    pub fn states(&self) -> &[[S; H]; T] {
        &self.hs
    }
}

impl<S: Scalar, const I: usize, const H: usize, const T: usize> Params<S> for Rnn<S, I, H, T> {
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(
            ParamTensor::matrix(at, &mut self.weight_ih, &mut self.grad_weight_ih)
                .named("weight_ih"),
        );
        f(
            ParamTensor::matrix(at, &mut self.weight_hh, &mut self.grad_weight_hh)
                .named("weight_hh"),
        );
        f(ParamTensor::vector(at, &mut self.bias, &mut self.grad_bias).named("bias"));
    }
}

impl<S: Scalar, const I: usize, const H: usize, const T: usize> Layer<S> for Rnn<S, I, H, T>
where
    Act: Activate<S>,
{
    type Input = [[S; I]; T];
    type Output = [[S; H]; T];

    fn forward<R, P>(&mut self, x: &[[S; I]; T], at: usize, r: &mut R, p: &mut P) -> [[S; H]; T]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        self.xs = *x;
        let mut prev = self.h0;
        for ((xt, zt), ht) in x.iter().zip(self.zs.iter_mut()).zip(self.hs.iter_mut()) {
            let mut fp = At::new(&mut *p, at, Phase::Forward);
            // z = W_ih x + W_hh h_{t−1} + b as one exact wide sum, rounded once per unit.
            affine_pair(
                (&self.weight_ih, xt),
                (&self.weight_hh, &prev),
                &self.bias,
                zt,
                r,
                &mut fp,
            );
            for (h, &z) in ht.iter_mut().zip(zt.iter()) {
                *h = activate_one(&self.act, z, r, &mut fp);
            }
            prev = *ht;
        }
        p.signal(at, Phase::Forward, self.hs.as_flattened());
        self.hs
    }

    fn backward<R, P>(&mut self, dy: &[[S; H]; T], at: usize, r: &mut R, p: &mut P) -> [[S; I]; T]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dxs = [[S::ZERO; I]; T];
        let mut dh_next = [S::ZERO; H];
        for t in (0..T).rev() {
            let (Some(dyt), Some(zt), Some(ht), Some(xt), Some(dxt)) = (
                dy.get(t),
                self.zs.get(t),
                self.hs.get(t),
                self.xs.get(t),
                dxs.get_mut(t),
            ) else {
                continue;
            };
            let prev = if t == 0 {
                self.h0
            } else {
                self.hs.get(t - 1).copied().unwrap_or(self.h0)
            };
            // ∂L/∂h_t: this step's loss gradient plus what flows back from step t + 1.
            let mut dh = [S::ZERO; H];
            let mut dz = [S::ZERO; H];
            {
                let mut bp = At::new(&mut *p, at, Phase::Backward);
                for (((d, &a), &b), ((dzv, &z), &h)) in dh
                    .iter_mut()
                    .zip(dyt)
                    .zip(&dh_next)
                    .zip(dz.iter_mut().zip(zt).zip(ht))
                {
                    let (s, f) = a.add(b);
                    bp.note(f);
                    *d = s;
                    *dzv = activate_back_one(&self.act, (z, h, s), r, &mut bp);
                }
            }
            p.step(at, t, &dh);
            {
                let mut gp = At::new(&mut *p, at, Phase::Grad);
                add_assign(&mut self.grad_bias, &dz, &mut gp);
                outer_acc(&mut self.grad_weight_ih, &dz, xt, r, &mut gp);
                outer_acc(&mut self.grad_weight_hh, &dz, &prev, r, &mut gp);
            }
            let mut bp = At::new(&mut *p, at, Phase::Backward);
            matvec_t(&self.weight_ih, &dz, dxt, r, &mut bp);
            matvec_t(&self.weight_hh, &dz, &mut dh_next, r, &mut bp);
        }
        p.signal(at, Phase::Backward, dxs.as_flattened());
        dxs
    }

    fn zero_grad(&mut self) {
        self.grad_weight_ih = [[S::ZERO; I]; H];
        self.grad_weight_hh = [[S::ZERO; H]; H];
        self.grad_bias = [S::ZERO; H];
    }
}
