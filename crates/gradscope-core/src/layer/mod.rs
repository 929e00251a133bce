//! Layers with a forward cache and a backward pass, composed by tuples.
//!
//! A layer owns its parameters, their gradients and what its backward pass needs from the forward pass
//! (micrograd's vocabulary: `forward`, `backward`, `zero_grad`, and [`Params`] for the parameters). Shapes are
//! associated array types, so composing `(A, B)` where `B`'s input is not `A`'s output is a compile error.
//!
//! Training is per sample: `forward` caches one sample, `backward` must follow it, and parameter gradients
//! *accumulate* across calls (a batch is a sequence of forward/backward pairs; the loss gradient carries the
//! 1/batch factor). Call `zero_grad` before the next batch.
//!
//! Diagnostics: every layer reports the [`Flags`] of every value it produces to a [`Probes`] sink, tagged with
//! its layer index and [`Phase`]; `&mut ()` is off and free, an array of [`LayerStats`] counts per layer.

mod dense;
mod stack;

pub use dense::Dense;
pub use stack::Stack;

use crate::flags::Flags;
use crate::net::Params;
use crate::probe::{EventCounts, Probe};
use crate::round::Rounding;
use crate::scalar::Scalar;

/// Which pass produced a value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Forward activations (pre-activations and outputs).
    Forward,
    /// The signal sent backward (∂L/∂input of the layer) and the activation's backward product.
    Backward,
    /// Parameter-gradient accumulation.
    Grad,
}

/// A layer-aware diagnostic sink.
pub trait Probes {
    /// Record the events of one value produced by `layer` in `phase`.
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags);
}

/// Diagnostics off.
impl Probes for () {
    #[inline(always)]
    fn record(&mut self, _layer: usize, _phase: Phase, _flags: Flags) {}
}

/// Event counts of one layer, per phase.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LayerStats {
    /// Forward values.
    pub forward: EventCounts,
    /// Backward signal values.
    pub backward: EventCounts,
    /// Parameter-gradient values.
    pub grad: EventCounts,
}

impl LayerStats {
    fn phase(&mut self, phase: Phase) -> &mut EventCounts {
        match phase {
            Phase::Forward => &mut self.forward,
            Phase::Backward => &mut self.backward,
            Phase::Grad => &mut self.grad,
        }
    }
}

/// One [`LayerStats`] per layer; events of layers beyond the slice are dropped.
impl Probes for [LayerStats] {
    #[inline]
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        if let Some(s) = self.get_mut(layer) {
            s.phase(phase).record(flags);
        }
    }
}

impl<const N: usize> Probes for [LayerStats; N] {
    #[inline]
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        self.as_mut_slice().record(layer, phase, flags);
    }
}

impl<P: Probes + ?Sized> Probes for &mut P {
    #[inline]
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        (**self).record(layer, phase, flags);
    }
}

/// The kernel-level [`Probe`] of one layer and phase: forwards each value's flags to a [`Probes`] sink.
pub struct At<'a, P: ?Sized> {
    /// The sink.
    pub probes: &'a mut P,
    /// Layer index.
    pub layer: usize,
    /// Phase.
    pub phase: Phase,
}

impl<P: Probes + ?Sized> Probe for At<'_, P> {
    #[inline(always)]
    fn record(&mut self, flags: Flags) {
        self.probes.record(self.layer, self.phase, flags);
    }
}

/// A differentiable layer on scalar type `S`.
pub trait Layer<S: Scalar>: Params<S> {
    /// Input of one sample, e.g. `[S; I]`.
    type Input: Copy;
    /// Output of one sample, e.g. `[S; O]`.
    type Output: Copy;

    /// Parameterized layers inside (1 for [`Dense`]); the layer indices `at..at + depth()` are this layer's.
    fn depth(&self) -> usize;

    /// Compute the output for `x` and cache what `backward` needs. Events go to `p` under layer `at`.
    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized;

    /// Given ∂L/∂output of the last `forward`, accumulate the parameter gradients and return ∂L/∂input.
    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized;

    /// Set every parameter gradient to zero.
    fn zero_grad(&mut self);
}

impl<S: Scalar, A: Params<S>, B: Params<S>> Params<S> for (A, B) {
    fn visit(&mut self, f: &mut dyn FnMut(crate::net::ParamTensor<'_, S>)) {
        self.0.visit(f);
        self.1.visit(f);
    }
}

/// Sequential composition: `B` after `A`. `B::Input` must be `A::Output`, checked at compile time.
impl<S, A, B> Layer<S> for (A, B)
where
    S: Scalar,
    A: Layer<S>,
    B: Layer<S, Input = A::Output>,
{
    type Input = A::Input;
    type Output = B::Output;

    fn depth(&self) -> usize {
        self.0.depth() + self.1.depth()
    }

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let h = self.0.forward(x, at, r, p);
        let next = at + self.0.depth();
        self.1.forward(&h, next, r, p)
    }

    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let next = at + self.0.depth();
        let dh = self.1.backward(dy, next, r, p);
        self.0.backward(&dh, at, r, p)
    }

    fn zero_grad(&mut self) {
        self.0.zero_grad();
        self.1.zero_grad();
    }
}
