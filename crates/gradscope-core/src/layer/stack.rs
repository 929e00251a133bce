//! A deep uniform stack: up to `D` dense layers of width `W`, of which the first `depth` are active.
//!
//! Depth is a run-time length over a fixed capacity, so one instance serves every depth up to `D` without
//! compiling a type per depth. Memory is `D` times a `Dense<S, W, W>` (about 2·W² scalars each): a
//! 64-deep, 32-wide `f32` stack is about 0.6 MiB. Build big stacks where they fit (a thread with a large stack,
//! or a `static` on an MCU).

use super::{Dense, Layer, Probes};
use crate::activation::{Act, Activate};
use crate::net::{ParamTensor, Params};
use crate::round::Rounding;
use crate::scalar::Scalar;

/// `depth` of `D` layers `Dense<S, W, W>` applied in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack<S, const W: usize, const D: usize> {
    /// All `D` layers; only the first [`Stack::depth`] take part.
    pub layers: [Dense<S, W, W>; D],
    depth: usize,
}

impl<S: Scalar, const W: usize, const D: usize> Stack<S, W, D> {
    /// A stack of `depth` layers (clamped to `1..=D`) with activation `act` and zero weights.
    pub fn new(act: Act, depth: usize) -> Self {
        Stack {
            layers: core::array::from_fn(|_| Dense::new(act)),
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
    pub fn active(&self) -> &[Dense<S, W, W>] {
        self.layers.get(..self.depth).unwrap_or(&self.layers)
    }

    /// The active layers, mutably.
    pub fn active_mut(&mut self) -> &mut [Dense<S, W, W>] {
        let d = self.depth;
        let all = &mut self.layers;
        all.get_mut(..d).unwrap_or(&mut [])
    }
}

impl<S: Scalar, const W: usize, const D: usize> Params<S> for Stack<S, W, D> {
    fn visit(&mut self, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        for l in self.active_mut() {
            l.visit(f);
        }
    }
}

impl<S: Scalar, const W: usize, const D: usize> Layer<S> for Stack<S, W, D>
where
    Act: Activate<S>,
{
    type Input = [S; W];
    type Output = [S; W];

    fn depth(&self) -> usize {
        self.depth
    }

    fn forward<R, P>(&mut self, x: &[S; W], at: usize, r: &mut R, p: &mut P) -> [S; W]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut h = *x;
        for (k, l) in self.active_mut().iter_mut().enumerate() {
            h = l.forward(&h, at + k, r, p);
        }
        h
    }

    fn backward<R, P>(&mut self, dy: &[S; W], at: usize, r: &mut R, p: &mut P) -> [S; W]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut d = *dy;
        for (k, l) in self.active_mut().iter_mut().enumerate().rev() {
            d = l.backward(&d, at + k, r, p);
        }
        d
    }

    fn zero_grad(&mut self) {
        for l in self.active_mut() {
            l.zero_grad();
        }
    }
}
