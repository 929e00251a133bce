//! Residual blocks: `y = x + F(x)` (He et al. 2016). The identity path carries the gradient past `F`
//! unchanged: `∂L/∂x = ∂L/∂y + F′ᵀ ∂L/∂y`.

use super::{At, Layer, Phase, Probes, Tensor};
use crate::matrix::add_assign;
use crate::net::{ParamTensor, Params};
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// `y = x + inner(x)` for an inner layer that maps a [`Tensor`] (a vector `[S; N]`, a CHW image) to one of
/// the same shape. The sum saturates (fixed point)
/// and reports its events under the block's first layer index.
#[derive(Clone, Debug, PartialEq)]
pub struct Residual<L>(pub L);

impl<S: Scalar, L: Params<S>> Params<S> for Residual<L> {
    fn depth(&self) -> usize {
        self.0.depth()
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        self.0.visit(at, f);
    }
}

fn add_all<X: Tensor, P: Probe + ?Sized>(a: &X, b: &X, p: &mut P) -> X {
    let mut out = *a;
    add_assign(out.flat_mut(), b.flat(), p);
    out
}

impl<S, L, X> Layer<S> for Residual<L>
where
    S: Scalar,
    X: Tensor<Elem = S>,
    L: Layer<S, Input = X, Output = X>,
{
    type Input = X;
    type Output = X;

    fn forward<R, P>(&mut self, x: &X, at: usize, r: &mut R, p: &mut P) -> X
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let fx = self.0.forward(x, at, r, p);
        add_all(x, &fx, &mut At::new(p, at, Phase::Forward))
    }

    fn backward<R, P>(&mut self, dy: &X, at: usize, r: &mut R, p: &mut P) -> X
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let d_inner = self.0.backward(dy, at, r, p);
        add_all(dy, &d_inner, &mut At::new(p, at, Phase::Backward))
    }

    fn zero_grad(&mut self) {
        self.0.zero_grad();
    }
}
