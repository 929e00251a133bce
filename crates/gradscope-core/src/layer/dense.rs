//! The fully connected layer `y = f(W x + b)`.

use rand_core::Rng;

use super::{At, Layer, Phase, Probes, TileLayer, activate, activate_back};
use crate::activation::{Act, Activate};
use crate::init::{Init, InitError, init_matrix, init_slice};
use crate::matrix::{add_assign, add_assign_tile, affine, matvec_t, outer_acc, outer_acc_tile};
use crate::net::{ParamTensor, Params};
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// A dense layer with `I` inputs, `O` outputs and activation `act`; weights row-major `weight[out][in]`.
///
/// Forward: `z = W x + b` (one rounding per output, exact wide sum), `y = act(z)`. Backward:
/// `dz = dy ⊙ act′(z)` (one rounding), `∂W += dz xᵀ`, `∂b += dz`, `dx = Wᵀ dz`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense<S, const I: usize, const O: usize> {
    /// Weights, `weight[out][in]`.
    pub weight: [[S; I]; O],
    /// Biases.
    pub bias: [S; O],
    /// Accumulated ∂L/∂weight.
    pub grad_weight: [[S; I]; O],
    /// Accumulated ∂L/∂bias.
    pub grad_bias: [S; O],
    /// The activation.
    pub act: Act,
    x: [S; I],
    z: [S; O],
    y: [S; O],
}

impl<S: Scalar, const I: usize, const O: usize> Dense<S, I, O> {
    /// A layer with zero weights and biases.
    pub fn new(act: Act) -> Self {
        Dense {
            weight: [[S::ZERO; I]; O],
            bias: [S::ZERO; O],
            grad_weight: [[S::ZERO; I]; O],
            grad_bias: [S::ZERO; O],
            act,
            x: [S::ZERO; I],
            z: [S::ZERO; O],
            y: [S::ZERO; O],
        }
    }

    /// Initialize weights with `weight` and biases with `bias` (fan-in `I`, fan-out `O`), in place. Each
    /// value's rounding events go to `p` (so a fixed-point layer reports weights that vanished or saturated).
    pub fn init(
        &mut self,
        weight: &Init,
        bias: &Init,
        rng: &mut (impl Rng + ?Sized),
        r: &mut (impl Rounding + ?Sized),
        p: &mut (impl Probe + ?Sized),
    ) -> Result<(), InitError> {
        init_matrix(&mut self.weight, weight, rng, r, p)?;
        init_slice(&mut self.bias, bias, I, O, rng, r, p)
    }

    /// The pre-activations `z` of the last forward pass.
    pub fn pre_activation(&self) -> &[S; O] {
        &self.z
    }

    /// The outputs `y` of the last forward pass.
    pub fn output(&self) -> &[S; O] {
        &self.y
    }
}

impl<S: Scalar, const I: usize, const O: usize> Params<S> for Dense<S, I, O> {
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(ParamTensor::matrix(at, &mut self.weight, &mut self.grad_weight).named("weight"));
        f(ParamTensor::vector(at, &mut self.bias, &mut self.grad_bias).named("bias"));
    }
}

impl<S: Scalar, const I: usize, const O: usize> Layer<S> for Dense<S, I, O>
where
    Act: Activate<S>,
{
    type Input = [S; I];
    type Output = [S; O];

    fn forward<R, P>(&mut self, x: &[S; I], at: usize, r: &mut R, p: &mut P) -> [S; O]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut fp = At::new(p, at, Phase::Forward);
        self.x = *x;
        affine(&self.weight, x, &self.bias, &mut self.z, r, &mut fp);
        activate(&self.act, &self.z, &mut self.y, r, &mut fp);
        p.signal(at, Phase::Forward, &self.y);
        self.y
    }

    fn backward<R, P>(&mut self, dy: &[S; O], at: usize, r: &mut R, p: &mut P) -> [S; I]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dz = [S::ZERO; O];
        let mut bp = At::new(&mut *p, at, Phase::Backward);
        activate_back(&self.act, (&self.z, &self.y), dy, &mut dz, r, &mut bp);
        let mut gp = At::new(&mut *p, at, Phase::Grad);
        add_assign(&mut self.grad_bias, &dz, &mut gp);
        outer_acc(&mut self.grad_weight, &dz, &self.x, r, &mut gp);
        let mut dx = [S::ZERO; I];
        matvec_t(
            &self.weight,
            &dz,
            &mut dx,
            r,
            &mut At::new(&mut *p, at, Phase::Backward),
        );
        p.signal(at, Phase::Backward, &dx);
        dx
    }

    fn zero_grad(&mut self) {
        self.grad_weight = [[S::ZERO; I]; O];
        self.grad_bias = [S::ZERO; O];
    }
}

/// The tile cache of a [`Dense`] layer: each sample's input, pre-activation and output.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseTile<S, const I: usize, const O: usize, const T: usize> {
    x: [[S; I]; T],
    z: [[S; O]; T],
    y: [[S; O]; T],
}

/// The first `n` rows of a tile, flattened (all of them if `n` exceeds it).
fn rows<S, const N: usize, const T: usize>(a: &[[S; N]; T], n: usize) -> &[S] {
    a.get(..n).unwrap_or(a).as_flattened()
}

impl<S: Scalar, const I: usize, const O: usize> TileLayer<S> for Dense<S, I, O>
where
    Act: Activate<S>,
{
    type Tile<const T: usize> = DenseTile<S, I, O, T>;

    fn tile<const T: usize>(&self) -> DenseTile<S, I, O, T> {
        DenseTile {
            x: [[S::ZERO; I]; T],
            z: [[S::ZERO; O]; T],
            y: [[S::ZERO; O]; T],
        }
    }

    fn zero_input() -> [S; I] {
        [S::ZERO; I]
    }

    fn zero_output() -> [S; O] {
        [S::ZERO; O]
    }

    fn forward_tile<const T: usize, R, P>(
        &mut self,
        x: &[[S; I]; T],
        n: usize,
        c: &mut DenseTile<S, I, O, T>,
        y: &mut [[S; O]; T],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let n = n.min(T);
        let mut fp = At::new(&mut *p, at, Phase::Forward);
        for ((cx, z), xb) in c.x.iter_mut().zip(&mut c.z).zip(x).take(n) {
            *cx = *xb;
            affine(&self.weight, xb, &self.bias, z, r, &mut fp);
        }
        let ys = c.y.get_mut(..n).unwrap_or(&mut []).as_flattened_mut();
        activate(&self.act, rows(&c.z, n), ys, r, &mut fp);
        for (yb, cy) in y.iter_mut().zip(&c.y).take(n) {
            p.signal(at, Phase::Forward, cy);
            *yb = *cy;
        }
        if let Some(last) = n.checked_sub(1)
            && let (Some(x), Some(z), Some(y)) = (c.x.get(last), c.z.get(last), c.y.get(last))
        {
            (self.x, self.z, self.y) = (*x, *z, *y);
        }
    }

    fn backward_tile<const T: usize, R, P>(
        &mut self,
        dy: &[[S; O]; T],
        n: usize,
        c: &DenseTile<S, I, O, T>,
        dx: &mut [[S; I]; T],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let n = n.min(T);
        let mut dz = [[S::ZERO; O]; T];
        let mut bp = At::new(&mut *p, at, Phase::Backward);
        let dzs = dz.get_mut(..n).unwrap_or(&mut []).as_flattened_mut();
        activate_back(
            &self.act,
            (rows(&c.z, n), rows(&c.y, n)),
            rows(dy, n),
            dzs,
            r,
            &mut bp,
        );
        let mut gp = At::new(&mut *p, at, Phase::Grad);
        add_assign_tile(&mut self.grad_bias, &dz, n, &mut gp);
        outer_acc_tile(&mut self.grad_weight, &dz, &c.x, n, r, &mut gp);
        for (d, dxb) in dz.iter().zip(dx.iter_mut()).take(n) {
            matvec_t(
                &self.weight,
                d,
                dxb,
                r,
                &mut At::new(&mut *p, at, Phase::Backward),
            );
            p.signal(at, Phase::Backward, dxb);
        }
    }
}
