//! One observed training step, the only place the training sequence is written:
//!
//! zero the gradients → for each sample: forward, loss, backward (gradients accumulate) → divergence rules →
//! loss-scaler decision → clip → optimizer update.
//!
//! [`step`] runs it over a batch with a [`StepCtx`] (the objective, an optional [`LossScaler`], the [`Clip`]
//! policy, the [`Optimizer`], the rounding mode and the divergence [`Watch`]) and returns a [`StepReport`]: the
//! batch's mean loss, the gradient norms, and a typed [`Verdict`]. [`backprop`] is its first half (forward,
//! loss and backward over a batch, without the update), for measurements that only need gradients.
//! [`step_tiled`] is the same step with the batch run in tiles of samples through a [`TileLayer`] network, the
//! same results bit for bit (see [`crate::layer::TileLayer`]); both share everything after their passes.
//!
//! **Per-layer statistics** go to the [`Probes`] sink the caller passes: with a `[LayerStats]` (one per layer)
//! it holds, when the step returns, that step's events of every phase (forward, backward, gradient, clip,
//! update), the signal norms, and each layer's gradient norm and exactly-zero count. [`step`] clears the sink
//! first ([`Probes::clear`]). With `&mut ()` nothing is observed and nothing is paid for, except that the step
//! keeps the union of the events it sees (one OR per produced value) so that it can still decide and locate.
//!
//! **Divergence rules** ([`Watch`]; all on by default): a non-finite value, located to the layer and pass
//! where it first appeared (in a backward pass, with a loss scaler, it is a skipped step instead); more than
//! half of one layer's forward values saturated in one step (needs a per-layer sink such as `[LayerStats]`); a
//! loss grown beyond 10⁸ times the first step's (and above 1); an optimizer that refused the step.
//!
//! ```
//! use gradscope_core::train::{StepCtx, Verdict, step};
//! use gradscope_core::{Act, Dense, Init, LayerStats, Loss, NearestEven, Sgd};
//! use rand_core::SeedableRng;
//!
//! // XOR with a 2-8-1 tanh network, full-batch SGD on binary cross-entropy.
//! let mut rng = rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(1);
//! let mut net = (Dense::<f32, 2, 8>::new(Act::Tanh), Dense::<f32, 8, 1>::new(Act::Identity));
//! let xavier = Init::XavierNormal { gain: 1.0 };
//! net.0.init(&xavier, &Init::Zeros, &mut rng, &mut NearestEven, &mut ()).unwrap();
//! net.1.init(&xavier, &Init::Zeros, &mut rng, &mut NearestEven, &mut ()).unwrap();
//! let data = [([-0.9f32, -0.9], [0.0f32]), ([-0.9, 0.9], [1.0]), ([0.9, -0.9], [1.0]), ([0.9, 0.9], [0.0])];
//!
//! let mut ctx = StepCtx::new(Loss::BceWithLogits, Sgd::new(1.0, 0.0).unwrap(), NearestEven);
//! let mut stats = [LayerStats::default(); 2];
//! let first = step(&mut net, &data[..], &mut ctx, &mut stats);
//! for _ in 0..200 {
//!     let report = step(&mut net, &data[..], &mut ctx, &mut stats);
//!     assert_eq!(report.verdict, Verdict::Updated);
//! }
//! let last = step(&mut net, &data[..], &mut ctx, &mut stats);
//! assert!(last.loss < 0.1 * first.loss);
//! // Every event of the last step, per layer and phase: here, the output layer's gradient values.
//! assert_eq!(stats[1].grad_values, 9);
//! ```

use crate::clip::{Clip, ClipError};
use crate::flags::Flags;
use crate::layer::{Layer, NonFinite, Phase, Probes, TileLayer};
use crate::loss::Objective;
use crate::optim::{Optimizer, StepError};
use crate::probe::EventCounts;
use crate::round::Rounding;
use crate::scalar::Scalar;
use crate::scale::{LossScaler, ScaleDecision};

/// A batch of samples: inputs `X` and targets `T`, by index.
pub trait Samples<X, T> {
    /// Samples in the batch.
    fn count(&self) -> usize;
    /// Sample `k` (`None` past the end).
    fn sample(&self, k: usize) -> Option<(X, T)>;
}

impl<X: Copy, T: Copy> Samples<X, T> for [(X, T)] {
    fn count(&self) -> usize {
        self.len()
    }
    fn sample(&self, k: usize) -> Option<(X, T)> {
        self.get(k).copied()
    }
}

/// Samples made on demand by a function (data kept in another form, a shuffled order).
#[derive(Copy, Clone, Debug)]
pub struct FromFn<F> {
    /// Samples in the batch.
    pub count: usize,
    /// Sample `k`.
    pub sample: F,
}

impl<X, T, F: Fn(usize) -> Option<(X, T)>> Samples<X, T> for FromFn<F> {
    fn count(&self) -> usize {
        self.count
    }
    fn sample(&self, k: usize) -> Option<(X, T)> {
        if k < self.count {
            (self.sample)(k)
        } else {
            None
        }
    }
}

/// What [`backprop`] measured.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BackpropReport {
    /// Mean loss over the samples (the loss itself, never scaled).
    pub loss: f64,
    /// Σ of the samples' losses, in sample order.
    pub loss_sum: f64,
    /// Samples processed.
    pub samples: u32,
    /// Σ over samples of ‖∂L/∂y‖², the loss gradient as the backward pass received it (with its factor
    /// `loss_scale/batch`).
    pub output_grad_sq: f64,
    /// Events of rounding the loss gradient into the format.
    pub loss_events: EventCounts,
}

/// Forward, loss and backward over every sample of `batch`; the parameter gradients of the batch-mean loss,
/// times `loss_scale`, accumulate in `net` (nothing is zeroed, nothing updated). Events go to `probes`.
pub fn backprop<S, N, B, R, P, const O: usize>(
    net: &mut N,
    batch: &B,
    objective: &Objective,
    loss_scale: f64,
    r: &mut R,
    probes: &mut P,
) -> BackpropReport
where
    S: Scalar,
    N: Layer<S, Output = [S; O]> + ?Sized,
    B: Samples<N::Input, [S; O]> + ?Sized,
    R: Rounding + ?Sized,
    P: Probes + ?Sized,
{
    let n = batch.count();
    let factor = loss_scale / n.max(1) as f64;
    let mut report = BackpropReport::default();
    let mut sum = 0.0;
    for k in 0..n {
        let Some((x, t)) = batch.sample(k) else {
            continue;
        };
        let y = net.forward(&x, 0, r, probes);
        let mut dy = [S::ZERO; O];
        sum += objective.grad(&y, &t, factor, &mut dy, r, &mut report.loss_events);
        report.output_grad_sq += S::sq_to_f64(crate::matrix::sum_sq_acc(&dy));
        net.backward(&dy, 0, r, probes);
        report.samples = report.samples.saturating_add(1);
    }
    report.loss_sum = sum;
    report.loss = sum / (report.samples.max(1) as f64);
    report
}

/// [`backprop`] in tiles of `T` samples through a [`TileLayer`] (`tile` is the cache): the same gradients and
/// report, bit for bit, under a rounding mode without random draws (see [`step_tiled`]).
pub fn backprop_tiled<S, N, B, R, P, const T: usize, const O: usize>(
    net: &mut N,
    tile: &mut N::Tile<T>,
    batch: &B,
    objective: &Objective,
    loss_scale: f64,
    r: &mut R,
    probes: &mut P,
) -> BackpropReport
where
    S: Scalar,
    N: TileLayer<S, Output = [S; O]> + ?Sized,
    B: Samples<N::Input, [S; O]> + ?Sized,
    R: Rounding + ?Sized,
    P: Probes + ?Sized,
{
    let count = batch.count();
    let factor = loss_scale / count.max(1) as f64;
    let mut report = BackpropReport::default();
    let mut sum = 0.0;
    let mut xs = [N::zero_input(); T];
    let mut dxs = xs;
    let (mut ts, mut ys, mut dys) = ([[S::ZERO; O]; T], [[S::ZERO; O]; T], [[S::ZERO; O]; T]);
    let mut k = 0;
    while k < count {
        let mut n = 0;
        for (x, t) in xs.iter_mut().zip(ts.iter_mut()) {
            // Past the end of the batch, or a missing sample: skipped, as `backprop` skips it.
            let sample = loop {
                if k >= count {
                    break None;
                }
                k += 1;
                if let Some(s) = batch.sample(k - 1) {
                    break Some(s);
                }
            };
            let Some((xv, tv)) = sample else { break };
            (*x, *t) = (xv, tv);
            n += 1;
        }
        if n == 0 {
            break;
        }
        net.forward_tile(&xs, n, tile, &mut ys, 0, r, probes);
        for ((y, t), dy) in ys.iter().zip(&ts).zip(dys.iter_mut()).take(n) {
            *dy = [S::ZERO; O];
            sum += objective.grad(y, t, factor, dy, r, &mut report.loss_events);
            report.output_grad_sq += S::sq_to_f64(crate::matrix::sum_sq_acc(dy));
            report.samples = report.samples.saturating_add(1);
        }
        net.backward_tile(&dys, n, tile, &mut dxs, 0, r, probes);
    }
    report.loss_sum = sum;
    report.loss = sum / (report.samples.max(1) as f64);
    report
}

/// The divergence rules of [`step`], and the reference they keep (the first step's loss).
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Watch {
    /// A layer with more than this share of its forward values saturated in one step diverges (1 or more:
    /// off). Needs a per-layer sink.
    pub saturation: f64,
    /// A step whose loss exceeds this many times the first step's loss (and 1) diverges (∞: off).
    pub loss_growth: f64,
    reference: Option<f64>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl Watch {
    /// The default rules: saturation share 0.5, loss growth 10⁸.
    pub fn new() -> Watch {
        Watch {
            saturation: 0.5,
            loss_growth: 1e8,
            reference: None,
        }
    }

    /// The loss of the first step seen (the growth rule's reference).
    pub fn reference(&self) -> Option<f64> {
        self.reference
    }
}

/// Everything a training step needs besides the network and the data.
#[derive(Clone, Debug)]
pub struct StepCtx<O, R> {
    /// The loss and how it reads the outputs.
    pub objective: Objective,
    /// Loss scaling (static or dynamic), or none.
    pub scaler: Option<LossScaler>,
    /// Gradient clipping, in units of the true gradient (the step scales the threshold with the loss scale).
    pub clip: Clip,
    /// The optimizer.
    pub optimizer: O,
    /// The rounding mode of every narrowing in the step.
    pub rounding: R,
    /// The divergence rules.
    pub watch: Watch,
}

impl<O, R> StepCtx<O, R> {
    /// `loss` (or an [`Objective`]) with `optimizer` and `rounding`: no loss scaling, no clipping, the default
    /// divergence rules.
    pub fn new(objective: impl Into<Objective>, optimizer: O, rounding: R) -> Self {
        StepCtx {
            objective: objective.into(),
            scaler: None,
            clip: Clip::None,
            optimizer,
            rounding,
            watch: Watch::new(),
        }
    }
}

/// Why a step diverged.
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Cause {
    /// Non-finite values appeared: how many in that layer and pass, and whether finite values overflowed to
    /// produce them there (false: they arrived from outside, e.g. the data).
    NonFinite {
        /// Non-finite values in that layer and pass.
        count: u32,
        /// Caused by an overflow there.
        overflow: bool,
    },
    /// The loss is NaN or infinite, with no non-finite value located in the network.
    NonFiniteLoss,
    /// This share of the layer's forward values saturated or overflowed.
    Saturated {
        /// The share.
        share: f64,
    },
    /// The loss grew beyond the rule's factor over the first step's.
    LossGrowth {
        /// This step's loss.
        loss: f64,
        /// The first step's.
        reference: f64,
    },
    /// The optimizer refused the step.
    Refused(StepError),
    /// Clipping refused its threshold.
    Clip(ClipError),
}

/// Where and why a step diverged.
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Divergence {
    /// The layer, when known (counted from 0 at the input).
    pub layer: Option<usize>,
    /// The pass, when known.
    pub phase: Option<Phase>,
    /// What happened.
    pub cause: Cause,
}

/// What a step did.
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Verdict {
    /// The parameters were updated.
    Updated,
    /// The loss scaler saw an overflow or a non-finite value in the backward pass: no update, and a dynamic
    /// scale was halved.
    Skipped {
        /// A non-finite value (rather than a saturation) was seen.
        nonfinite: bool,
    },
    /// A divergence rule fired: no update.
    Diverged(Divergence),
}

/// What one training step measured and decided.
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StepReport {
    /// The forward and backward passes.
    pub backprop: BackpropReport,
    /// Mean loss over the batch (as `backprop.loss`).
    pub loss: f64,
    /// The loss scale this step used (1 without a scaler).
    pub loss_scale: f64,
    /// Global L2 norm of the true gradient (unscaled) before clipping, and after; NaN when not measured
    /// (probes off and no clipping).
    pub grad_norm: (f64, f64),
    /// The verdict.
    pub verdict: Verdict,
}

/// A probe wrapper that keeps what the step's decisions need whatever the caller observes: the union of the
/// backward pass's overflow and non-finite events, and the first non-finite value's location in computation
/// order (the forward pass from the input, then the backward pass from the output, as [`NonFinite::locate`]).
struct Sticky<'a, P: ?Sized> {
    inner: &'a mut P,
    backward: Flags,
    forward_nonfinite: Option<NonFinite>,
    backward_nonfinite: Option<NonFinite>,
}

impl<P: Probes + ?Sized> Sticky<'_, P> {
    /// Count a non-finite value of `layer` in `phase` toward the candidate in `slot`: in the forward pass the
    /// smallest layer wins (`smallest`), backward the largest, its backward pass before its gradients.
    fn note(
        slot: &mut Option<NonFinite>,
        layer: usize,
        phase: Phase,
        flags: Flags,
        smallest: bool,
    ) {
        let overflow = flags.contains(Flags::OVERFLOW);
        let replace = match slot {
            None => true,
            Some(nf) if nf.layer == layer && nf.phase == phase => {
                nf.count = nf.count.saturating_add(1);
                nf.overflow |= overflow;
                false
            }
            Some(nf) if smallest => layer < nf.layer,
            Some(nf) => layer > nf.layer || (layer == nf.layer && phase == Phase::Backward),
        };
        if replace {
            *slot = Some(NonFinite {
                layer,
                phase,
                overflow,
                count: 1,
            });
        }
    }

    fn located(&self) -> Option<NonFinite> {
        self.forward_nonfinite.or(self.backward_nonfinite)
    }
}

impl<P: Probes + ?Sized> Probes for Sticky<'_, P> {
    const ACTIVE: bool = P::ACTIVE;
    // Whatever the caller observes, the step's verdict needs the non-finite values and the saturations.
    const WATCH: bool = true;
    #[inline]
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        if phase != Phase::Forward {
            // Only what the loss scaler reads: the other bits would keep every rounding's flags alive.
            self.backward |= flags & (Flags::OVERFLOW | Flags::NONFINITE);
        }
        if flags.contains(Flags::NONFINITE) {
            match phase {
                Phase::Forward => {
                    Self::note(&mut self.forward_nonfinite, layer, phase, flags, true)
                }
                _ => Self::note(&mut self.backward_nonfinite, layer, phase, flags, false),
            }
        }
        self.inner.record(layer, phase, flags);
    }
    #[inline]
    fn signal<T: Scalar>(&mut self, layer: usize, phase: Phase, values: &[T]) {
        self.inner.signal(layer, phase, values);
    }
    #[inline]
    fn step<T: Scalar>(&mut self, layer: usize, step: usize, dh: &[T]) {
        self.inner.step(layer, step, dh);
    }
}

/// One training step of `net` on `batch` (see the [module docs](self)): returns what it measured and its
/// verdict; this step's per-layer statistics are in `probes` when it returns.
pub fn step<S, N, B, O, R, P, const OUT: usize>(
    net: &mut N,
    batch: &B,
    ctx: &mut StepCtx<O, R>,
    probes: &mut P,
) -> StepReport
where
    S: Scalar,
    N: Layer<S, Output = [S; OUT]> + ?Sized,
    B: Samples<N::Input, [S; OUT]> + ?Sized,
    O: Optimizer<S>,
    R: Rounding,
    P: Probes + ?Sized,
{
    run(net, ctx, probes, |net, objective, scale, r, sticky| {
        backprop(net, batch, objective, scale, r, sticky)
    })
}

/// [`step`] with the batch run in tiles of `T` samples, each tile forward through every layer and back
/// ([`TileLayer`]; `tile` is the cache, from [`TileLayer::tile`]): the same parameters, gradients, report and
/// per-layer counts as [`step`], bit for bit; each dense layer accumulates its weight and bias gradients over a
/// whole tile (BENCHMARKS.md has what that saves at batch 32). A sink sees the events layer by layer instead of
/// sample by sample (an [`EventLog`](crate::layer::EventLog)'s entries can differ). A rounding mode that draws random numbers
/// ([`Rounding::stateless`] false) would draw them in another order, so with one this runs [`step`] itself.
///
/// Besides `tile`, a tile's inputs, targets, outputs and both gradients live on the stack (five arrays of `T`
/// samples); pick `T` to fit (on a microcontroller, a few samples).
pub fn step_tiled<S, N, B, O, R, P, const T: usize, const OUT: usize>(
    net: &mut N,
    tile: &mut N::Tile<T>,
    batch: &B,
    ctx: &mut StepCtx<O, R>,
    probes: &mut P,
) -> StepReport
where
    S: Scalar,
    N: TileLayer<S, Output = [S; OUT]> + ?Sized,
    B: Samples<N::Input, [S; OUT]> + ?Sized,
    O: Optimizer<S>,
    R: Rounding,
    P: Probes + ?Sized,
{
    if !ctx.rounding.stateless() {
        return step(net, batch, ctx, probes);
    }
    run(net, ctx, probes, |net, objective, scale, r, sticky| {
        backprop_tiled(net, tile, batch, objective, scale, r, sticky)
    })
}

/// The training step around its forward and backward passes, `passes`: what [`step`] and [`step_tiled`] share.
fn run<S, N, O, R, P>(
    net: &mut N,
    ctx: &mut StepCtx<O, R>,
    probes: &mut P,
    passes: impl FnOnce(&mut N, &Objective, f64, &mut R, &mut Sticky<'_, P>) -> BackpropReport,
) -> StepReport
where
    S: Scalar,
    N: Layer<S> + ?Sized,
    O: Optimizer<S>,
    R: Rounding,
    P: Probes + ?Sized,
{
    probes.clear();
    net.zero_grad();
    let scale = ctx.scaler.as_ref().map_or(1.0, |s| s.scale());
    let mut sticky = Sticky {
        inner: &mut *probes,
        backward: Flags::NONE,
        forward_nonfinite: None,
        backward_nonfinite: None,
    };
    let bp = passes(net, &ctx.objective, scale, &mut ctx.rounding, &mut sticky);
    let mut report = StepReport {
        backprop: bp,
        loss: bp.loss,
        loss_scale: scale,
        grad_norm: (f64::NAN, f64::NAN),
        verdict: Verdict::Updated,
    };
    let diverged = |layer, phase, cause| {
        Verdict::Diverged(Divergence {
            layer,
            phase,
            cause,
        })
    };
    let located = sticky.located();
    let backward_events = sticky.backward | bp.loss_events_flags();
    let nonfinite = |nf: NonFinite| {
        diverged(
            Some(nf.layer),
            Some(nf.phase),
            Cause::NonFinite {
                count: nf.count,
                overflow: nf.overflow,
            },
        )
    };
    if !bp.loss.is_finite() {
        report.verdict = located.map_or(diverged(None, None, Cause::NonFiniteLoss), nonfinite);
        return report;
    }
    if let Some(nf) = located
        && (nf.phase == Phase::Forward || ctx.scaler.is_none())
    {
        report.verdict = nonfinite(nf);
        return report;
    }
    let reference = *ctx.watch.reference.get_or_insert(bp.loss);
    if bp.loss > 1.0 && bp.loss > ctx.watch.loss_growth * reference {
        report.verdict = diverged(
            None,
            None,
            Cause::LossGrowth {
                loss: bp.loss,
                reference,
            },
        );
        return report;
    }
    if let Some((layer, share)) = probes.saturated(ctx.watch.saturation) {
        report.verdict = diverged(
            Some(layer),
            Some(Phase::Forward),
            Cause::Saturated { share },
        );
        return report;
    }
    if let Some(s) = ctx.scaler.as_mut()
        && s.update(backward_events) == ScaleDecision::Skip
    {
        report.verdict = Verdict::Skipped {
            nonfinite: backward_events.contains(Flags::NONFINITE),
        };
        return report;
    }
    if P::ACTIVE {
        net.visit(0, &mut |t| probes.signal(t.layer, Phase::Grad, t.grad));
    }
    let r = &mut ctx.rounding;
    if P::ACTIVE || ctx.clip != Clip::None {
        match ctx.clip.scaled(scale).apply(net, r, probes) {
            Ok(c) => report.grad_norm = (c.norm_before / scale, c.norm_after / scale),
            Err(e) => {
                report.verdict = diverged(None, Some(Phase::Clip), Cause::Clip(e));
                return report;
            }
        }
    }
    if let Err(e) = ctx.optimizer.step(net, scale, r, probes) {
        let layer = match e {
            StepError::NonFiniteGradient { layer, .. } => Some(layer),
            _ => None,
        };
        report.verdict = diverged(layer, Some(Phase::Update), Cause::Refused(e));
    }
    report
}

impl BackpropReport {
    /// The union of the loss-gradient events (as flags, for the loss scaler's decision).
    fn loss_events_flags(&self) -> Flags {
        Flags::when(self.loss_events.overflow > 0, Flags::OVERFLOW)
            | Flags::when(self.loss_events.nonfinite > 0, Flags::NONFINITE)
    }
}

/// The loss of each output against its target, without gradients: for evaluating a trained network on held-out
/// data. Returns the mean loss and the outputs' count where `correct(y, t)` holds.
pub fn evaluate<S, N, B, R, const OUT: usize>(
    net: &mut N,
    batch: &B,
    objective: &Objective,
    r: &mut R,
    mut correct: impl FnMut(&[S; OUT], &[S; OUT]) -> bool,
) -> (f64, usize)
where
    S: Scalar,
    N: Layer<S, Output = [S; OUT]> + ?Sized,
    B: Samples<N::Input, [S; OUT]> + ?Sized,
    R: Rounding + ?Sized,
{
    let (mut total, mut right, mut n) = (0.0, 0usize, 0usize);
    for k in 0..batch.count() {
        let Some((x, t)) = batch.sample(k) else {
            continue;
        };
        let y = net.forward(&x, 0, r, &mut ());
        total += objective.value(&y, &t);
        right += correct(&y, &t) as usize;
        n += 1;
    }
    (total / n.max(1) as f64, right)
}
