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
//! its layer index and [`Phase`], and shows it each finished signal (its output, the gradient it sends back);
//! `&mut ()` is off and free, an array of [`LayerStats`] counts events and signal norms per layer. Clipping and
//! the optimizers report under the same index (the parameter visitor carries it), in phases
//! [`Phase::Clip`] and [`Phase::Update`], so every event has a layer. [`GradStats::of`] measures a layer's
//! parameter gradients (norm, exactly-zero fraction).
//!
//! Layer indices: a network whose first index is `at` uses `at..at + depth()`; sums saturate, so no index
//! arithmetic can overflow.

mod batch;
mod conv;
mod dense;
mod gated;
mod last;
mod residual;
mod rnn;
mod scaled;
mod stack;
mod tile;

pub use batch::{ActLayer, BATCHNORM_EPS, BATCHNORM_MOMENTUM, BatchNorm, BatchNorm2d, Batched};
pub use conv::{AvgPool2d, Conv1d, Conv2d, Flatten, GlobalAvgPool, MaxPool2d, Tensor};
pub use dense::{Dense, DenseTile};
pub use gated::{Gru, Lstm};
pub use last::LastStep;
pub use residual::Residual;
pub use rnn::Rnn;
pub use scaled::LayerScales;
pub use stack::{DenseStack, Stack};
pub use tile::TileLayer;

use crate::activation::Activate;
use crate::flags::Flags;
use crate::net::Params;
use crate::probe::{EventCounts, Probe};
use crate::round::Rounding;
use crate::scalar::Scalar;

/// Which pass produced a value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Phase {
    /// Forward activations (pre-activations and outputs).
    Forward,
    /// The signal sent backward (∂L/∂input of the layer) and the activation's backward product.
    Backward,
    /// Parameter-gradient accumulation.
    Grad,
    /// Gradient clipping's rescaling.
    Clip,
    /// The optimizer's update of the parameters (and its state).
    Update,
}

impl Phase {
    /// The phase's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Grad => "gradient",
            Phase::Clip => "clip",
            Phase::Update => "update",
        }
    }
}

/// A layer-aware diagnostic sink.
pub trait Probes {
    /// False for a sink that ignores every event (see [`Probe::ACTIVE`]).
    const ACTIVE: bool = true;
    /// Whether an inactive sink still watches for non-finite values (see [`Probe::WATCH`]).
    const WATCH: bool = Self::ACTIVE;

    /// Record the events of one value produced by `layer` in `phase`.
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags);

    /// See a whole signal once it is complete: a layer's output (`Forward`) or the gradient it sends to its
    /// input (`Backward`). The default ignores it.
    #[inline(always)]
    fn signal<S: Scalar>(&mut self, _layer: usize, _phase: Phase, _values: &[S]) {}

    /// See `∂L/∂h_t`, the gradient reaching time step `step` of a recurrent layer (its own loss gradient
    /// included). The default ignores it.
    #[inline(always)]
    fn step<S: Scalar>(&mut self, _layer: usize, _step: usize, _dh: &[S]) {}

    /// Forget everything seen (the training step calls it first, so that its divergence rules read that step's
    /// counts). The default does nothing.
    #[inline(always)]
    fn clear(&mut self) {}

    /// The first layer (from the input) more than `share` of whose forward values saturated or overflowed,
    /// with that share; `None` for a sink that does not count per layer (the default).
    #[inline(always)]
    fn saturated(&self, _share: f64) -> Option<(usize, f64)> {
        None
    }
}

/// ‖∂L/∂h_t‖₂ and the number of exactly-zero entries of ∂L/∂h_t, per time step of one recurrent layer, from
/// the last backward pass (an entry that is exactly zero has usually underflowed on its way back in time).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct StepNorms<const T: usize> {
    /// The recurrent layer's index.
    pub layer: usize,
    /// Norm per step (index = time step).
    pub norms: [f64; T],
    /// Exactly-zero entries per step.
    pub zeros: [u32; T],
}

impl<const T: usize> StepNorms<T> {
    /// Norms of layer `layer`, all zero until a backward pass.
    pub fn new(layer: usize) -> Self {
        StepNorms {
            layer,
            norms: [0.0; T],
            zeros: [0; T],
        }
    }
}

impl<const T: usize> Probes for StepNorms<T> {
    #[inline(always)]
    fn record(&mut self, _layer: usize, _phase: Phase, _flags: Flags) {}
    fn step<S: Scalar>(&mut self, layer: usize, step: usize, dh: &[S]) {
        if layer != self.layer {
            return;
        }
        if let Some(n) = self.norms.get_mut(step) {
            *n = libm::sqrt(S::sq_to_f64(crate::matrix::sum_sq_acc(dh)));
        }
        if let Some(z) = self.zeros.get_mut(step) {
            *z = dh.iter().filter(|v| v.is_zero()).count() as u32;
        }
    }
}

/// One entry of an [`EventLog`]: `count` consecutive values of one layer and phase with the same events.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoggedEvent {
    /// The layer.
    pub layer: usize,
    /// The pass.
    pub phase: Phase,
    /// The events of each of these values.
    pub flags: Flags,
    /// How many consecutive values had them (saturating).
    pub count: u32,
}

/// The first events of a pass in the order they happened, bounded: where a network's numbers first went wrong,
/// on a device without a heap. Only the events in its mask are logged (by default all but `INEXACT`, which
/// nearly every fixed-point value has); consecutive values of one layer and phase with the same logged flags
/// share one [`LoggedEvent`]; once `N` entries are full, later events are only counted
/// ([`EventLog::dropped`]).
#[derive(Clone, Debug)]
pub struct EventLog<const N: usize> {
    entries: heapless::Vec<LoggedEvent, N>,
    dropped: u64,
    mask: Flags,
}

impl<const N: usize> Default for EventLog<N> {
    fn default() -> Self {
        Self::watching(Flags::OVERFLOW | Flags::UNDERFLOW | Flags::NONFINITE | Flags::SUBNORMAL)
    }
}

impl<const N: usize> EventLog<N> {
    /// An empty log of every event but `INEXACT`.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty log of the events in `mask`.
    pub fn watching(mask: Flags) -> Self {
        EventLog {
            entries: heapless::Vec::new(),
            dropped: 0,
            mask,
        }
    }

    /// The entries kept, oldest first.
    pub fn entries(&self) -> &[LoggedEvent] {
        &self.entries
    }

    /// Values with events that arrived after the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl<const N: usize> Probes for EventLog<N> {
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        let flags = flags & self.mask;
        if flags.is_empty() {
            return;
        }
        if let Some(last) = self.entries.last_mut()
            && (last.layer, last.phase, last.flags) == (layer, phase, flags)
        {
            last.count = last.count.saturating_add(1);
            return;
        }
        let entry = LoggedEvent {
            layer,
            phase,
            flags,
            count: 1,
        };
        if self.entries.push(entry).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.dropped = 0;
    }
}

/// Diagnostics off.
impl Probes for () {
    const ACTIVE: bool = false;
    #[inline(always)]
    fn record(&mut self, _layer: usize, _phase: Phase, _flags: Flags) {}
}

/// Event counts of one layer, per phase, and the size of the signals it produced.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LayerStats {
    /// Forward values.
    pub forward: EventCounts,
    /// Backward signal values.
    pub backward: EventCounts,
    /// Parameter-gradient values.
    pub grad: EventCounts,
    /// Values rescaled by gradient clipping.
    pub clip: EventCounts,
    /// Values the optimizer wrote (parameters and state). An `underflow` here is an update lost to rounding:
    /// a non-zero change that rounded to nothing.
    pub update: EventCounts,
    /// Σ of squared outputs over every forward pass seen.
    pub forward_sq: f64,
    /// Σ of squared input-gradients (the signal sent backward) over every backward pass seen.
    pub backward_sq: f64,
    /// Σ of squared parameter gradients, as shown to [`Probes::signal`] in phase [`Phase::Grad`] (the training
    /// step shows each tensor's accumulated gradient once per step, before clipping).
    pub grad_sq: f64,
    /// Parameter-gradient values shown that were exactly zero.
    pub grad_zeros: u32,
    /// Parameter-gradient values shown.
    pub grad_values: u32,
    /// Forward passes seen.
    pub forward_passes: u32,
    /// Backward passes seen.
    pub backward_passes: u32,
}

/// Where non-finite values first appeared in a pass through a network, and why.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NonFinite {
    /// Layer index.
    pub layer: usize,
    /// The pass that produced them.
    pub phase: Phase,
    /// True when finite values overflowed to ±∞ there (the cause); false when a NaN/∞ arrived from outside
    /// (the input or the loss gradient).
    pub overflow: bool,
    /// How many non-finite values that layer produced in that phase.
    pub count: u32,
}

impl NonFinite {
    /// The first layer, in the order the values were computed (forward from the input, then backward from the
    /// output), whose counts show a non-finite value.
    pub fn locate(stats: &[LayerStats]) -> Option<NonFinite> {
        let at = |layer: usize, phase: Phase, c: &EventCounts| {
            (c.nonfinite > 0).then_some(NonFinite {
                layer,
                phase,
                overflow: c.overflow > 0,
                count: c.nonfinite,
            })
        };
        let forward = stats
            .iter()
            .enumerate()
            .find_map(|(l, s)| at(l, Phase::Forward, &s.forward));
        forward.or_else(|| {
            stats.iter().enumerate().rev().find_map(|(l, s)| {
                at(l, Phase::Backward, &s.backward).or_else(|| at(l, Phase::Grad, &s.grad))
            })
        })
    }
}

impl LayerStats {
    /// Root-mean-square of the backward signal per pass: ‖∂L/∂input‖₂ averaged in square over passes.
    pub fn backward_rms_norm(&self) -> f64 {
        if self.backward_passes == 0 {
            0.0
        } else {
            libm::sqrt(self.backward_sq / self.backward_passes as f64)
        }
    }

    /// Root-mean-square of the output's L2 norm per forward pass.
    pub fn forward_rms_norm(&self) -> f64 {
        if self.forward_passes == 0 {
            0.0
        } else {
            libm::sqrt(self.forward_sq / self.forward_passes as f64)
        }
    }

    /// The L2 norm of the parameter gradients shown in phase [`Phase::Grad`].
    pub fn grad_norm(&self) -> f64 {
        libm::sqrt(self.grad_sq)
    }

    /// Every phase's events, summed.
    pub fn total(&self) -> EventCounts {
        [
            self.forward,
            self.backward,
            self.grad,
            self.clip,
            self.update,
        ]
        .iter()
        .fold(EventCounts::default(), |a, b| a.merged(b))
    }

    fn add_signal<S: Scalar>(&mut self, phase: Phase, values: &[S]) {
        let sq = S::sq_to_f64(crate::matrix::sum_sq_acc(values));
        match phase {
            Phase::Forward => {
                self.forward_sq += sq;
                self.forward_passes = self.forward_passes.saturating_add(1);
            }
            Phase::Backward => {
                self.backward_sq += sq;
                self.backward_passes = self.backward_passes.saturating_add(1);
            }
            Phase::Grad => {
                self.grad_sq += sq;
                let zeros = values.iter().filter(|v| v.is_zero()).count();
                self.grad_zeros = self.grad_zeros.saturating_add(zeros as u32);
                self.grad_values = self.grad_values.saturating_add(values.len() as u32);
            }
            Phase::Clip | Phase::Update => {}
        }
    }

    /// The counts of one phase.
    pub fn phase(&self, phase: Phase) -> &EventCounts {
        match phase {
            Phase::Forward => &self.forward,
            Phase::Backward => &self.backward,
            Phase::Grad => &self.grad,
            Phase::Clip => &self.clip,
            Phase::Update => &self.update,
        }
    }

    fn phase_mut(&mut self, phase: Phase) -> &mut EventCounts {
        match phase {
            Phase::Forward => &mut self.forward,
            Phase::Backward => &mut self.backward,
            Phase::Grad => &mut self.grad,
            Phase::Clip => &mut self.clip,
            Phase::Update => &mut self.update,
        }
    }

    /// Add another layer's statistics to these (for totals over steps or epochs).
    pub fn merge(&mut self, other: &LayerStats) {
        for phase in [
            Phase::Forward,
            Phase::Backward,
            Phase::Grad,
            Phase::Clip,
            Phase::Update,
        ] {
            *self.phase_mut(phase) = self.phase(phase).merged(other.phase(phase));
        }
        self.forward_sq += other.forward_sq;
        self.backward_sq += other.backward_sq;
        self.grad_sq += other.grad_sq;
        self.grad_zeros = self.grad_zeros.saturating_add(other.grad_zeros);
        self.grad_values = self.grad_values.saturating_add(other.grad_values);
        self.forward_passes = self.forward_passes.saturating_add(other.forward_passes);
        self.backward_passes = self.backward_passes.saturating_add(other.backward_passes);
    }
}

/// One [`LayerStats`] per layer; events of layers beyond the slice are dropped.
impl Probes for [LayerStats] {
    #[inline]
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        if let Some(s) = self.get_mut(layer) {
            s.phase_mut(phase).record(flags);
        }
    }
    fn signal<S: Scalar>(&mut self, layer: usize, phase: Phase, values: &[S]) {
        if let Some(s) = self.get_mut(layer) {
            s.add_signal(phase, values);
        }
    }
    fn clear(&mut self) {
        self.fill(LayerStats::default());
    }
    fn saturated(&self, share: f64) -> Option<(usize, f64)> {
        self.iter().enumerate().find_map(|(k, s)| {
            let f = &s.forward;
            let got = f.overflow as f64 / f.values.max(1) as f64;
            (f.values > 0 && got > share).then_some((k, got))
        })
    }
}

impl<const N: usize> Probes for [LayerStats; N] {
    #[inline]
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        self.as_mut_slice().record(layer, phase, flags);
    }
    fn signal<S: Scalar>(&mut self, layer: usize, phase: Phase, values: &[S]) {
        self.as_mut_slice().signal(layer, phase, values);
    }
    fn clear(&mut self) {
        self.as_mut_slice().clear();
    }
    fn saturated(&self, share: f64) -> Option<(usize, f64)> {
        self.as_slice().saturated(share)
    }
}

/// A layer-blind [`Probe`] (an [`EventCounts`], a sticky [`Flags`]) as a [`Probes`] sink: every layer's and
/// phase's events go to it together.
#[derive(Debug)]
pub struct Pooled<'a, P: ?Sized>(pub &'a mut P);

impl<P: Probe + ?Sized> Probes for Pooled<'_, P> {
    const ACTIVE: bool = P::ACTIVE;
    const WATCH: bool = P::WATCH;
    #[inline]
    fn record(&mut self, _layer: usize, _phase: Phase, flags: Flags) {
        self.0.record(flags);
    }
}

impl<P: Probes + ?Sized> Probes for &mut P {
    const ACTIVE: bool = P::ACTIVE;
    const WATCH: bool = P::WATCH;
    #[inline]
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        (**self).record(layer, phase, flags);
    }
    #[inline]
    fn signal<S: Scalar>(&mut self, layer: usize, phase: Phase, values: &[S]) {
        (**self).signal(layer, phase, values);
    }
    #[inline]
    fn step<S: Scalar>(&mut self, layer: usize, step: usize, dh: &[S]) {
        (**self).step(layer, step, dh);
    }
    #[inline]
    fn clear(&mut self) {
        (**self).clear();
    }
    #[inline]
    fn saturated(&self, share: f64) -> Option<(usize, f64)> {
        (**self).saturated(share)
    }
}

/// The state of one layer's parameter gradients: their L2 norm and how many are exactly zero.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GradStats {
    /// ‖∂L/∂θ‖₂ over every parameter of the layer (weights and biases).
    pub norm: f64,
    /// Gradient values that are exactly zero.
    pub zeros: u32,
    /// Gradient values in all.
    pub count: u32,
    /// Gradient values that are NaN or ±∞.
    pub nonfinite: u32,
}

impl GradStats {
    /// Measure the gradients of `layer` (any [`Params`]).
    pub fn of<S: Scalar, L: Params<S> + ?Sized>(layer: &mut L) -> GradStats {
        let (mut sq, mut zeros, mut count, mut nonfinite) = (0.0f64, 0u32, 0u32, 0u32);
        layer.visit(0, &mut |t| {
            sq += S::sq_to_f64(crate::matrix::sum_sq_acc(t.grad));
            zeros = zeros.saturating_add(t.grad.iter().filter(|g| g.is_zero()).count() as u32);
            count = count.saturating_add(t.grad.len() as u32);
            nonfinite =
                nonfinite.saturating_add(t.grad.iter().filter(|g| !g.is_finite()).count() as u32);
        });
        GradStats {
            norm: libm::sqrt(sq),
            zeros,
            count,
            nonfinite,
        }
    }

    /// Fraction of gradient values that are exactly zero (0 for an empty layer).
    pub fn zero_fraction(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.zeros as f64 / self.count as f64
        }
    }
}

/// `y = act(x)` elementwise, each value's events to `p`.
// Out of line, with the per-value activation inlined into its loop: inlined into each layer instead, the loop
// called the fixed-point activation once per value (host 16-32-32-16 step: I1F15 +1.4% instructions, and the
// host conv kernels 4-17% more).
#[inline(never)]
pub(crate) fn activate<S: Scalar, A: Activate<S>, P: Probe + ?Sized>(
    act: &A,
    x: &[S],
    y: &mut [S],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    act.f_all(x, y, r, p);
}

/// `act(x)`, its events to `p`: all of them to an active probe, a value's own to a watching one (floats then
/// skip the event tests of a finite value, [`Activate::f_watched`]), none to a probe that is off.
#[inline(always)]
pub(crate) fn activate_one<S: Scalar, A: Activate<S>, P: Probe + ?Sized>(
    act: &A,
    x: S,
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) -> S {
    // A probe that neither counts nor watches drops every flag, and the inlined full path then loses its
    // event tests to dead-code elimination without the watched path's finiteness branch.
    let (v, f) = if P::ACTIVE || !P::WATCH {
        act.f(x, r)
    } else {
        act.f_watched(x, r)
    };
    p.note(f);
    v
}

/// `dy · act′(x)` given `y = act(x)`, its events to `p` as in [`activate_one`].
#[inline(always)]
pub(crate) fn activate_back_one<S: Scalar, A: Activate<S>, P: Probe + ?Sized>(
    act: &A,
    (x, y, dy): (S, S, S),
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) -> S {
    let (v, f) = if P::ACTIVE || !P::WATCH {
        act.backward(x, y, dy, r)
    } else {
        act.backward_watched(x, y, dy, r)
    };
    p.note(f);
    v
}

/// `d = dy ⊙ act′(x)` elementwise, given `y = act(x)` (some derivatives read the output), each value's
/// events to `p`.
// Out of line for the same reason as `activate`.
#[inline(never)]
pub(crate) fn activate_back<S: Scalar, A: Activate<S>, P: Probe + ?Sized>(
    act: &A,
    (x, y): (&[S], &[S]),
    dy: &[S],
    d: &mut [S],
    r: &mut (impl Rounding + ?Sized),
    p: &mut P,
) {
    act.backward_all((x, y), dy, d, r, p);
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

impl<'a, P: Probes + ?Sized> At<'a, P> {
    /// The probe of `layer` in `phase`, reporting to `probes`.
    pub fn new(probes: &'a mut P, layer: usize, phase: Phase) -> Self {
        At {
            probes,
            layer,
            phase,
        }
    }
}

impl<P: Probes + ?Sized> Probe for At<'_, P> {
    const ACTIVE: bool = P::ACTIVE;
    const WATCH: bool = P::WATCH;
    #[inline(always)]
    fn record(&mut self, flags: Flags) {
        self.probes.record(self.layer, self.phase, flags);
    }
}

/// A differentiable layer on scalar type `S`. Its layer indices are `at..at + depth()` ([`Params::depth`]).
pub trait Layer<S: Scalar>: Params<S> {
    /// Input of one sample, e.g. `[S; I]`.
    type Input: Copy;
    /// Output of one sample, e.g. `[S; O]`.
    type Output: Copy;

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

/// A borrowed layer is a layer (to compose one you keep, e.g. a recurrent layer with a head).
impl<S: Scalar, L: Layer<S> + ?Sized> Layer<S> for &mut L {
    type Input = L::Input;
    type Output = L::Output;

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        (**self).forward(x, at, r, p)
    }

    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        (**self).backward(dy, at, r, p)
    }

    fn zero_grad(&mut self) {
        (**self).zero_grad();
    }
}

impl<S: Scalar, A: Params<S>, B: Params<S>> Params<S> for (A, B) {
    fn depth(&self) -> usize {
        self.0.depth().saturating_add(self.1.depth())
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(crate::net::ParamTensor<'_, S>)) {
        self.0.visit(at, f);
        self.1.visit(at.saturating_add(self.0.depth()), f);
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

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let h = self.0.forward(x, at, r, p);
        let next = at.saturating_add(self.0.depth());
        self.1.forward(&h, next, r, p)
    }

    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let next = at.saturating_add(self.0.depth());
        let dh = self.1.backward(dy, next, r, p);
        self.0.backward(&dh, at, r, p)
    }

    fn zero_grad(&mut self) {
        self.0.zero_grad();
        self.1.zero_grad();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Act;
    use crate::fixed::I16F16;
    use crate::init::Init;
    use crate::round::NearestEven;
    use rand_core::SeedableRng;

    #[test]
    fn phases_have_their_report_names() {
        let names = [
            Phase::Forward,
            Phase::Backward,
            Phase::Grad,
            Phase::Clip,
            Phase::Update,
        ]
        .map(Phase::name);
        assert_eq!(names, ["forward", "backward", "gradient", "clip", "update"]);
    }

    #[test]
    fn sinks_that_do_not_count_per_layer_never_report_saturation() {
        // A `Some` here would make every training step under a saturation rule diverge.
        let mut log = EventLog::<4>::new();
        log.record(0, Phase::Forward, Flags::OVERFLOW);
        for share in [0.0, 0.5, 1.0] {
            assert_eq!(().saturated(share), None);
            assert_eq!(StepNorms::<3>::new(0).saturated(share), None);
            assert_eq!(log.saturated(share), None);
        }
    }

    #[test]
    fn non_finite_values_are_located_where_they_first_appeared() {
        let mut stats = [LayerStats::default(); 3];
        assert_eq!(NonFinite::locate(&stats), None, "no non-finite value");
        // Only gradients: the backward order visits the last layer first.
        stats[0].grad.nonfinite = 5;
        stats[2].grad.nonfinite = 1;
        let at = |layer, phase, overflow, count| {
            Some(NonFinite {
                layer,
                phase,
                overflow,
                count,
            })
        };
        assert_eq!(NonFinite::locate(&stats), at(2, Phase::Grad, false, 1));
        // A backward signal of a layer comes before its parameter gradients.
        stats[2].backward.nonfinite = 2;
        stats[2].backward.overflow = 2;
        assert_eq!(NonFinite::locate(&stats), at(2, Phase::Backward, true, 2));
        // Any forward value comes before the whole backward pass, the first layer first.
        stats[1].forward.nonfinite = 3;
        assert_eq!(NonFinite::locate(&stats), at(1, Phase::Forward, false, 3));
        stats[0].forward.overflow = 1;
        assert_eq!(NonFinite::locate(&stats), at(1, Phase::Forward, false, 3));
    }

    #[test]
    fn layer_stats_measure_each_layers_signals_per_pass_and_merge() {
        let mut stats = [LayerStats::default(); 2];
        stats.signal(1, Phase::Forward, &[3.0f32, 0.0]);
        stats.signal(1, Phase::Forward, &[0.0f32, 4.0]);
        stats.signal(1, Phase::Backward, &[1.0f32, 1.0]);
        stats.signal(1, Phase::Backward, &[2.0f32, 2.0]);
        stats.signal(0, Phase::Grad, &[0.0f32, 3.0, 4.0]);
        stats.signal(1, Phase::Grad, &[1.0f32, 0.0]);
        stats.signal(0, Phase::Clip, &[100.0f32]);
        stats.signal(7, Phase::Forward, &[100.0f32]);
        stats.record(1, Phase::Forward, Flags::OVERFLOW);
        stats.record(1, Phase::Forward, Flags::NONE);
        stats.record(0, Phase::Update, Flags::UNDERFLOW);
        stats.record(7, Phase::Forward, Flags::OVERFLOW);
        let [a, b] = stats;
        // RMS over passes of each pass's L2 norm: √((9 + 16)/2) and √((2 + 8)/2).
        assert_eq!(b.forward_rms_norm(), libm::sqrt(12.5));
        assert_eq!(b.backward_rms_norm(), libm::sqrt(5.0));
        assert_eq!((a.forward_rms_norm(), a.backward_rms_norm()), (0.0, 0.0));
        assert_eq!((a.grad_norm(), a.grad_zeros, a.grad_values), (5.0, 1, 3));
        assert_eq!((b.forward.values, b.forward.overflow), (2, 1));
        assert_eq!(*a.phase(Phase::Update), a.total());
        assert_eq!((a.total().values, a.total().underflow), (1, 1));
        let mut m = a;
        m.merge(&b);
        assert_eq!(m.total(), a.total().merged(&b.total()));
        assert_eq!((m.forward_passes, m.backward_passes), (2, 2));
        assert_eq!((m.forward_sq, m.backward_sq, m.grad_sq), (25.0, 10.0, 26.0));
        assert_eq!((m.grad_zeros, m.grad_values), (2, 5));
        assert_eq!(m.backward_rms_norm(), libm::sqrt(5.0));
    }

    #[test]
    fn per_layer_stats_name_the_first_layer_beyond_a_saturated_share() {
        // Fed through the `&mut` forwarding impl.
        fn forward_pass(mut sink: impl Probes, layer: usize, overflowed: usize) {
            for k in 0..10 {
                let f = if k < overflowed {
                    Flags::OVERFLOW
                } else {
                    Flags::NONE
                };
                sink.record(layer, Phase::Forward, f);
            }
            sink.signal(layer, Phase::Forward, &[1.0f32]);
        }
        let mut stats = [LayerStats::default(); 3];
        forward_pass(&mut stats, 1, 2);
        forward_pass(&mut stats, 2, 6);
        assert_eq!((stats[2].forward.overflow, stats[2].forward_passes), (6, 1));
        // Backward overflow never counts, and layer 0 (no forward values) is skipped.
        stats.record(0, Phase::Backward, Flags::OVERFLOW);
        assert_eq!(stats.saturated(0.1), Some((1, 0.2)));
        assert_eq!(stats.saturated(0.2), Some((2, 0.6)));
        assert_eq!(stats.saturated(0.6), None, "strictly more than the share");
        assert_eq!(
            stats.saturated(-1.0),
            Some((1, 0.2)),
            "a layer without values never"
        );
        // Through the `&mut` forwarding impl, and cleared.
        fn saturated_then_clear(mut sink: impl Probes) -> Option<(usize, f64)> {
            let s = sink.saturated(0.5);
            sink.clear();
            s
        }
        assert_eq!(saturated_then_clear(&mut stats), Some((2, 0.6)));
        assert_eq!(stats, [LayerStats::default(); 3]);
    }

    #[test]
    fn an_active_sink_counts_the_events_of_finite_activations_forward_and_backward() {
        use crate::activation::Activate;
        // σ(−100) ≈ 3.7·10⁻⁴⁴ is subnormal in f32, and so is σ′(−100)·1: events of finite values, which only
        // the full activation path reports (the watched one tests finite values for nothing).
        let r = &mut NearestEven;
        let (y, f) = Act::Sigmoid.f(-100.0f32, r);
        assert!(f.contains(Flags::SUBNORMAL));
        assert!(
            Act::Sigmoid
                .backward(-100.0, y, 1.0, r)
                .1
                .contains(Flags::SUBNORMAL)
        );
        let mut layer = Dense::<f32, 2, 2>::new(Act::Sigmoid);
        layer.weight = [[1.0, 0.0], [0.0, 1.0]];
        let mut stats = [LayerStats::default(); 1];
        layer.forward(&[-100.0, 0.5], 0, r, &mut stats);
        // W x + b is exact: the one subnormal forward value is σ(−100).
        assert_eq!(
            (stats[0].forward.values, stats[0].forward.subnormal),
            (4, 1)
        );
        layer.backward(&[1.0, 0.0], 0, r, &mut stats);
        // dz = dy ⊙ σ′(z) (its first value subnormal), then dx = Wᵀ dz (its first value the same).
        assert_eq!(
            (stats[0].backward.values, stats[0].backward.subnormal),
            (4, 2)
        );
    }

    #[test]
    fn zeroing_a_composed_network_zeroes_every_layers_gradients() {
        // Through the `&mut` forwarding impl and the tuple's.
        fn zero(mut net: impl Layer<f32>) {
            net.zero_grad();
        }
        let mut net = (
            Dense::<f32, 2, 2>::new(Act::Tanh),
            Dense::<f32, 2, 1>::new(Act::Identity),
        );
        net.visit(0, &mut |t| t.grad.fill(1.0));
        assert_eq!(GradStats::of(&mut net).zeros, 0);
        zero(&mut net);
        let g = GradStats::of(&mut net);
        assert_eq!((g.zeros, g.count), (9, 9));
    }

    #[test]
    fn residual_blocks_rnns_and_stacks_count_their_layers_and_zero_their_gradients() {
        /// Every gradient set to 1, then zeroed: the tensors' layer indices and (zeros, count) after.
        fn layers_then_zeroed<N: Layer<f32>>(net: &mut N) -> ([usize; 8], (u32, u32)) {
            let (mut layers, mut k) = ([usize::MAX; 8], 0);
            net.visit(0, &mut |t| {
                t.grad.fill(1.0);
                if let Some(slot) = layers.get_mut(k) {
                    *slot = t.layer;
                }
                k += 1;
            });
            net.zero_grad();
            let g = GradStats::of(net);
            (layers, (g.zeros, g.count))
        }
        let none = usize::MAX;
        // A residual block of two dense layers is two layers deep: the layer after it has index 2.
        let mut res = (
            Residual((
                Dense::<f32, 2, 3>::new(Act::Tanh),
                Dense::<f32, 3, 2>::new(Act::Identity),
            )),
            Dense::<f32, 2, 1>::new(Act::Identity),
        );
        assert_eq!(res.depth(), 3);
        let want = [0, 0, 1, 1, 2, 2, none, none];
        assert_eq!(layers_then_zeroed(&mut res), (want, (20, 20)));
        let mut rnn = (
            Rnn::<f32, 2, 3, 4>::new(Act::Tanh),
            Rnn::<f32, 3, 1, 4>::new(Act::Tanh),
        );
        assert_eq!(rnn.depth(), 2);
        let want = [0, 0, 0, 1, 1, 1, none, none];
        assert_eq!(layers_then_zeroed(&mut rnn), (want, (23, 23)));
        // A stack's depth is its active layers, clamped to 1..=D; only those take part.
        let mut stack = DenseStack::<f32, 2, 4>::new(Act::Tanh, 3);
        assert_eq!(stack.depth(), 3);
        stack.set_depth(9);
        assert_eq!((stack.depth(), Params::depth(&stack)), (4, 4));
        stack.set_depth(0);
        assert_eq!((stack.depth(), stack.active().len()), (1, 1));
        stack.set_depth(2);
        let want = [0, 0, 1, 1, none, none, none, none];
        assert_eq!(layers_then_zeroed(&mut stack), (want, (12, 12)));
    }

    #[test]
    fn step_norms_keep_one_layers_norm_and_zeros_per_time_step() {
        // Through the `&mut` forwarding impl: other layers and steps beyond T are ignored.
        fn steps(mut sink: impl Probes) {
            sink.step(1, 0, &[3.0f32, 4.0, 0.0]);
            sink.step(1, 1, &[0.0f32, 0.0, 2.0]);
            sink.step(0, 1, &[9.0f32, 9.0, 9.0]);
            sink.step(1, 2, &[9.0f32]);
        }
        let mut n = StepNorms::<2>::new(1);
        steps(&mut n);
        assert_eq!((n.norms, n.zeros), ([5.0, 2.0], [1, 2]));
    }

    #[test]
    fn grad_stats_measure_a_layers_gradients() {
        let mut layer = Dense::<f32, 2, 2>::new(Act::Identity);
        assert_eq!(GradStats::of(&mut layer).zero_fraction(), 1.0);
        layer.visit(0, &mut |t| {
            let v = if t.grad.len() == 4 { 3.0 } else { f32::NAN };
            if let Some(g) = t.grad.first_mut() {
                *g = v;
            }
        });
        let g = GradStats::of(&mut layer);
        assert_eq!((g.zeros, g.count, g.nonfinite), (4, 6, 1));
        assert!(g.norm.is_nan());
        assert_eq!(g.zero_fraction(), 4.0 / 6.0);
        assert_eq!(GradStats::default().zero_fraction(), 0.0);
    }

    #[test]
    fn a_pooled_sink_counts_every_layer_and_phase_together() {
        let mut counts = EventCounts::default();
        let mut pooled = Pooled(&mut counts);
        pooled.record(0, Phase::Forward, Flags::OVERFLOW);
        pooled.record(9, Phase::Update, Flags::UNDERFLOW);
        assert_eq!(
            (counts.values, counts.overflow, counts.underflow),
            (2, 1, 1)
        );
    }

    #[test]
    fn the_event_log_merges_runs_keeps_the_first_entries_and_counts_the_rest() {
        let mut log = EventLog::<2>::new();
        log.record(0, Phase::Forward, Flags::NONE);
        log.record(0, Phase::Forward, Flags::INEXACT);
        log.record(1, Phase::Forward, Flags::OVERFLOW | Flags::INEXACT);
        log.record(1, Phase::Forward, Flags::OVERFLOW);
        log.record(1, Phase::Backward, Flags::UNDERFLOW);
        log.record(2, Phase::Backward, Flags::UNDERFLOW);
        log.record(2, Phase::Backward, Flags::UNDERFLOW);
        let e = log.entries();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].layer, e[0].phase, e[0].flags, e[0].count),
            (1, Phase::Forward, Flags::OVERFLOW, 2)
        );
        assert_eq!(
            (e[1].layer, e[1].phase, e[1].count),
            (1, Phase::Backward, 1)
        );
        assert_eq!(log.dropped(), 2);
        log.clear();
        assert!(log.entries().is_empty() && log.dropped() == 0);
        let mut all = EventLog::<1>::watching(Flags::INEXACT);
        all.record(3, Phase::Grad, Flags::INEXACT | Flags::OVERFLOW);
        assert_eq!(all.entries()[0].flags, Flags::INEXACT);
    }

    #[test]
    fn the_event_log_names_where_a_fixed_point_stack_first_saturates() {
        // ReLU with N(0, 1) weights grows the signal about 4x per layer: Q16.16 saturates in a forward pass.
        let mut net: DenseStack<I16F16, 16, 12> = DenseStack::new(Act::Relu, 12);
        let mut rng = rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(5);
        let normal = Init::Normal {
            mean: 0.0,
            std: 1.0,
        };
        net.init(&normal, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
            .unwrap();
        let x = [I16F16::from_f64(0.5, &mut NearestEven).0; 16];
        let mut log = EventLog::<8>::new();
        let mut stats = [LayerStats::default(); 12];
        net.forward(&x, 0, &mut NearestEven, &mut log);
        net.forward(&x, 0, &mut NearestEven, &mut stats);
        let first = stats
            .iter()
            .position(|s| s.forward.overflow > 0)
            .expect("the stack saturates");
        let logged = log
            .entries()
            .iter()
            .find(|e| e.flags.contains(Flags::OVERFLOW))
            .expect("an overflow logged");
        assert_eq!((logged.layer, logged.phase), (first, Phase::Forward));
    }
}
