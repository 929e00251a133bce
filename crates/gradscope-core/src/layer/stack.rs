//! A deep uniform stack: up to `D` layers of one type, of which the first `depth` are active.
//!
//! Depth is a run-time length over a fixed capacity, so one instance serves every depth up to `D` without
//! compiling a type per depth. [`DenseStack`] is the common case (`Dense<S, W, W>` layers); a stack of
//! [`Residual`](super::Residual) blocks works the same way. Memory is `D` layers: a 64-deep, 32-wide `f32`
//! dense stack is about 0.6 MiB. Build big stacks where they fit (a thread with a large stack, the heap, or a
//! `static` on an MCU).

use rand_core::Rng;

use super::{Dense, Layer, Probes};
use crate::activation::Act;
use crate::init::{Init, InitError};
use crate::net::{ParamTensor, Params};
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// `depth` of `D` layers `L` applied in order; every layer maps its input type to itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack<L, const D: usize> {
    /// All `D` layers; only the first [`Stack::depth`] take part.
    pub layers: [L; D],
    depth: usize,
}

/// A stack of dense layers of width `W`.
pub type DenseStack<S, const W: usize, const D: usize> = Stack<Dense<S, W, W>, D>;

impl<S: Scalar, const W: usize, const D: usize> Stack<Dense<S, W, W>, D> {
    /// `depth` dense layers (clamped to `1..=D`) with activation `act` and zero weights.
    pub fn new(act: Act, depth: usize) -> Self {
        Stack::from_fn(depth, |_| Dense::new(act))
    }

    /// Initialize every active layer's weights with `weight` and biases with `bias`, in order, from one
    /// generator (see [`Dense::init`]).
    pub fn init(
        &mut self,
        weight: &Init,
        bias: &Init,
        rng: &mut (impl Rng + ?Sized),
        r: &mut (impl Rounding + ?Sized),
        p: &mut (impl Probe + ?Sized),
    ) -> Result<(), InitError> {
        self.active_mut()
            .iter_mut()
            .try_for_each(|l| l.init(weight, bias, rng, r, p))
    }
}

impl<L, const D: usize> Stack<L, D> {
    /// A stack of `depth` active layers (clamped to `1..=D`), built by `f(index)`.
    pub fn from_fn(depth: usize, f: impl FnMut(usize) -> L) -> Self {
        Stack {
            layers: core::array::from_fn(f),
            depth: depth.clamp(1.min(D), D),
        }
    }

    /// Active layers.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Change the number of active layers (clamped to `1..=D`).
    pub fn set_depth(&mut self, depth: usize) {
        self.depth = depth.clamp(1.min(D), D);
    }

    /// The active layers.
    pub fn active(&self) -> &[L] {
        self.layers.get(..self.depth).unwrap_or(&self.layers)
    }

    /// The active layers, mutably.
    pub fn active_mut(&mut self) -> &mut [L] {
        let d = self.depth;
        let all = &mut self.layers;
        all.get_mut(..d).unwrap_or(&mut [])
    }
}

impl<S: Scalar, L: Params<S>, const D: usize> Params<S> for Stack<L, D> {
    fn depth(&self) -> usize {
        self.active()
            .iter()
            .fold(0usize, |d, l| d.saturating_add(l.depth()))
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        let mut idx = at;
        for l in self.active_mut() {
            l.visit(idx, f);
            idx = idx.saturating_add(l.depth());
        }
    }
}

impl<S, X, L, const D: usize> Layer<S> for Stack<L, D>
where
    S: Scalar,
    X: Copy,
    L: Layer<S, Input = X, Output = X>,
{
    type Input = X;
    type Output = X;

    fn forward<R, P>(&mut self, x: &X, at: usize, r: &mut R, p: &mut P) -> X
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut h = *x;
        let mut idx = at;
        for l in self.active_mut() {
            h = l.forward(&h, idx, r, p);
            idx = idx.saturating_add(l.depth());
        }
        h
    }

    fn backward<R, P>(&mut self, dy: &X, at: usize, r: &mut R, p: &mut P) -> X
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        // Indices as in `forward`; saturating, so a huge `at` gives clamped indices, never an overflow.
        let mut idx = at.saturating_add(Params::depth(self));
        let mut d = *dy;
        for l in self.active_mut().iter_mut().rev() {
            idx = idx.saturating_sub(l.depth());
            d = l.backward(&d, idx, r, p);
        }
        d
    }

    fn zero_grad(&mut self) {
        for l in self.active_mut() {
            l.zero_grad();
        }
    }
}
