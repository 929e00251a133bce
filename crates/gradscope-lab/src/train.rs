//! Training in any precision, with every numeric event counted and divergence located.
//!
//! Networks per task (hidden activation selectable, output linear):
//! - `xor`: 2-8-1, tanh; binary cross-entropy on the logit.
//! - `spiral`: 2-16-16-1, tanh; binary cross-entropy.
//! - `sine`: 1-16-16-1, tanh; MSE on y = 0.8·sin(πx).
//! - `adding`: an IRNN (ReLU, identity recurrent weights; Le et al. 2015) with 16 units over 20 steps, read
//!   out from the last state by a dense layer; MSE. Predicting the mean scores an MSE of 1/24 ≈ 0.042.
//! - `digits`: 64-32-10, ReLU; softmax cross-entropy; accuracy on the 20% held out.
//!
//! Each step: forward and backward over a minibatch with per-layer event counting, then (if any) the loss
//! scaler's overflow check, clipping, and the optimizer. A run diverges, and stops, when a non-finite value
//! appears (the layer and pass where it first appeared are reported), when more than half of a layer's
//! forward values saturate in one step, when a step's loss exceeds 10⁸ times the first step's (the layer
//! with the largest backward signal is reported), or when the optimizer refuses a step.
//!
//! Loss scaling keeps the gradients scaled: SGD and momentum fold 1/scale into the learning rate (and the
//! scale into weight decay and clipping thresholds), so small scaled gradients never pass through an
//! unscaled, underflowing form; Adam, which is scale-invariant but for ε, unscales first.

use anyhow::{Result, anyhow, bail};
use gradscope_core::{
    Act, Activate, Adam, AnyRounding, Dense, EventCounts, Flags, I1F15, I8F24, I16F16, Init, Layer,
    LayerStats, Loss, LossScaler, Momentum, NearestEven, NonFinite, Params, Phase, Probe, Probes,
    Rnn, Scalar, ScaleDecision, Sgd, init_matrix, loss_grad, param_count,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

use crate::data::{ADDING_STEPS, Dataset, Kind, shuffle};
use crate::depth::PRECISIONS;
use crate::output::{Frame, Outcome};
use crate::plot::Plot;
use crate::spec::{Clip, check_rounding, rounding};

/// Optimizers.
pub const OPTIMIZERS: [&str; 3] = ["sgd", "momentum", "adam"];

/// Loss scaling, as given on the command line: `none`, `static:S` or `dynamic` / `dynamic:S` (initial scale
/// S, default 2¹⁶, doubling after 200 clean steps).
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "scale", rename_all = "lowercase")]
pub enum Scaling {
    /// No scaling.
    None,
    /// A fixed scale.
    Static(f64),
    /// Dynamic scaling from this initial scale.
    Dynamic(f64),
}

impl std::str::FromStr for Scaling {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Scaling> {
        let bad = || {
            anyhow!(
                "malformed --loss-scale '{s}': use none, static:S, dynamic or dynamic:S with S > 0"
            )
        };
        let num = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(bad)
        };
        Ok(match s.split_once(':') {
            None if s == "none" => Scaling::None,
            None if s == "dynamic" => Scaling::Dynamic(65536.0),
            Some(("static", v)) => Scaling::Static(num(v)?),
            Some(("dynamic", v)) => Scaling::Dynamic(num(v)?),
            _ => return Err(bad()),
        })
    }
}

fn act_name<Ser: serde::Serializer>(
    a: &Option<Act>,
    s: Ser,
) -> std::result::Result<Ser::Ok, Ser::Error> {
    match a {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_none(),
    }
}

/// One training run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainConfig {
    /// One of [`crate::data::TASKS`].
    pub task: String,
    /// One of the precisions.
    pub precision: String,
    /// `floor`, `nearest` or `stochastic`.
    pub rounding: String,
    /// Hidden activation; `None` for the task's default (tanh, or ReLU for digits and adding).
    #[serde(serialize_with = "act_name")]
    pub activation: Option<Act>,
    /// One of [`OPTIMIZERS`].
    pub optimizer: String,
    /// Learning rate.
    pub lr: f64,
    /// Coupled L2 weight decay.
    pub weight_decay: f64,
    /// Passes over the training set.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Loss scaling.
    pub loss_scale: Scaling,
    /// The loss reads the network's outputs multiplied by this (1 = as they are). A fixed-point convention:
    /// with 8, I1F15 outputs stand for logits in (−8, 8) instead of (−1, 1).
    pub output_scale: f64,
    /// Gradient clipping.
    pub clip: Clip,
    /// Seed of data, weights, shuffling and stochastic rounding.
    pub seed: u64,
}

impl TrainConfig {
    /// The task's defaults: an optimizer (SGD with momentum 0.9; Adam for the adding problem), learning rate,
    /// epoch count and batch that train it to high accuracy in f32.
    pub fn for_task(task: &str) -> TrainConfig {
        let (optimizer, lr, epochs, batch) = match task {
            "xor" => ("momentum", 0.1, 300, 4),
            "spiral" => ("momentum", 0.1, 300, 16),
            "sine" => ("momentum", 0.05, 150, 16),
            "adding" => ("adam", 0.003, 60, 16),
            _ => ("momentum", 0.05, 15, 16),
        };
        TrainConfig {
            task: task.into(),
            precision: "f32".into(),
            rounding: "nearest".into(),
            activation: None,
            optimizer: optimizer.into(),
            lr,
            weight_decay: 0.0,
            epochs,
            batch,
            loss_scale: Scaling::None,
            output_scale: 1.0,
            clip: Clip::None,
            seed: 1,
        }
    }
}

/// One epoch's measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochRow {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's samples.
    pub train_loss: f64,
    /// Mean loss on the held-out samples after the epoch.
    pub test_loss: f64,
    /// Share of held-out samples classified (or regressed within tolerance) correctly.
    pub accuracy: f64,
    /// Mean over steps of the global gradient norm (scaled gradients divided by the scale).
    pub grad_norm: f64,
    /// L2 norm of all parameters after the epoch.
    pub weight_norm: f64,
    /// Share of backward and gradient values that underflowed to zero.
    pub underflow_rate: f64,
    /// Share of all values (forward, backward, gradient, update) that saturated.
    pub saturation_rate: f64,
    /// Share of parameter gradients that were exactly zero, averaged over steps.
    pub zero_grad_fraction: f64,
    /// Steps the loss scaler skipped.
    pub skipped_steps: u32,
    /// The loss scale at the end of the epoch (1 without scaling).
    pub loss_scale: f64,
}

/// Where and why a run stopped early.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    /// Optimizer step (1-based) at which it happened.
    pub step: usize,
    /// Epoch (1-based).
    pub epoch: usize,
    /// Layer index (1-based from the input), when known.
    pub layer: Option<usize>,
    /// Pass: forward, backward or grad.
    pub phase: Option<String>,
    /// What happened.
    pub reason: String,
}

/// The result of a training run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainResult {
    /// The configuration.
    pub config: TrainConfig,
    /// Parameters.
    pub parameters: usize,
    /// Training and held-out samples.
    pub samples: (usize, usize),
    /// Per epoch.
    pub epochs: Vec<EpochRow>,
    /// Set when the run diverged.
    pub divergence: Option<Divergence>,
    /// Held-out accuracy before training.
    pub initial_accuracy: f64,
}

impl TrainResult {
    /// The last epoch's row.
    pub fn last(&self) -> Option<&EpochRow> {
        self.epochs.last()
    }
}

/// Check a configuration.
pub fn validate(cfg: &TrainConfig) -> Result<()> {
    if !crate::data::TASKS.contains(&cfg.task.as_str()) {
        bail!(
            "unknown task '{}': choose one of {}",
            cfg.task,
            crate::data::TASKS.join(", ")
        );
    }
    if !PRECISIONS.contains(&cfg.precision.as_str()) {
        bail!(
            "unknown precision '{}': choose one of {}",
            cfg.precision,
            PRECISIONS.join(", ")
        );
    }
    check_rounding(&cfg.rounding)?;
    if !OPTIMIZERS.contains(&cfg.optimizer.as_str()) {
        bail!(
            "unknown optimizer '{}': choose one of {}",
            cfg.optimizer,
            OPTIMIZERS.join(", ")
        );
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", cfg.lr);
    }
    if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
        bail!(
            "--weight-decay must be a number >= 0, got {}",
            cfg.weight_decay
        );
    }
    if !(1..=100_000).contains(&cfg.epochs) {
        bail!("--epochs must be 1 to 100000, got {}", cfg.epochs);
    }
    if !(cfg.output_scale.is_finite() && cfg.output_scale > 0.0) {
        bail!(
            "--output-scale must be a positive number, got {}",
            cfg.output_scale
        );
    }
    if !(1..=4096).contains(&cfg.batch) {
        bail!("--batch must be 1 to 4096, got {}", cfg.batch);
    }
    Ok(())
}

/// Train on `data`.
pub fn run(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult> {
    validate(cfg)?;
    if data.name != cfg.task {
        bail!("the data is for task {}, not {}", data.name, cfg.task);
    }
    crate::par::one(|| dispatch(cfg, data))
}

fn dispatch(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult> {
    match cfg.precision.as_str() {
        "f32" => by_task::<f32>(cfg, data),
        "f64" => by_task::<f64>(cfg, data),
        "i16f16" => by_task::<I16F16>(cfg, data),
        "i8f24" => by_task::<I8F24>(cfg, data),
        "i1f15" => by_task::<I1F15>(cfg, data),
        p => bail!("unknown precision '{p}'"),
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

fn arr<S: Scalar, const N: usize>(x: &[f64]) -> [S; N] {
    let mut a = [S::ZERO; N];
    for (d, &v) in a.iter_mut().zip(x) {
        *d = S::from_f64(v, &mut NearestEven).0;
    }
    a
}

/// A dense layer initialized for its activation (Xavier for tanh-like and linear, He for the ReLU family).
fn dense<S: Scalar, const I: usize, const O: usize>(
    act: Act,
    rng: &mut Xoshiro128PlusPlus,
) -> Result<Dense<S, I, O>> {
    let mut d = Dense::new(act);
    let init = match act {
        Act::Relu | Act::LeakyRelu(_) | Act::Elu(_) | Act::Gelu | Act::GeluTanh | Act::Silu => {
            Init::from_name("kaiming_normal").map_err(err)?
        }
        _ => Init::XavierNormal { gain: 1.0 },
    };
    d.init(&init, &Init::Zeros, rng, &mut NearestEven, &mut ())
        .map_err(err)?;
    Ok(d)
}

/// The last hidden state of a sequence, as a layer (no parameters).
#[derive(Clone, Debug)]
struct LastStep<const H: usize, const T: usize>;

impl<S: Scalar, const H: usize, const T: usize> Params<S> for LastStep<H, T> {
    fn visit(&mut self, _f: &mut dyn FnMut(gradscope_core::ParamTensor<'_, S>)) {}
}

impl<S: Scalar, const H: usize, const T: usize> Layer<S> for LastStep<H, T> {
    type Input = [[S; H]; T];
    type Output = [S; H];
    fn depth(&self) -> usize {
        0
    }
    fn forward<R, P>(&mut self, x: &[[S; H]; T], _at: usize, _r: &mut R, _p: &mut P) -> [S; H]
    where
        R: gradscope_core::Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        x.last().copied().unwrap_or([S::ZERO; H])
    }
    fn backward<R, P>(&mut self, dy: &[S; H], _at: usize, _r: &mut R, _p: &mut P) -> [[S; H]; T]
    where
        R: gradscope_core::Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut d = [[S::ZERO; H]; T];
        if let Some(l) = d.last_mut() {
            *l = *dy;
        }
        d
    }
    fn zero_grad(&mut self) {}
}

fn by_task<S: Scalar>(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    match cfg.task.as_str() {
        "xor" => {
            let h = cfg.activation.unwrap_or(Act::Tanh);
            let mut net = Box::new((
                dense::<S, 2, 8>(h, &mut rng)?,
                dense::<S, 8, 1>(Act::Identity, &mut rng)?,
            ));
            train_loop::<S, _, 1>(cfg, data, &mut *net, arr::<S, 2>, Loss::BceWithLogits)
        }
        "spiral" | "sine" => {
            let h = cfg.activation.unwrap_or(Act::Tanh);
            let loss = if cfg.task == "sine" {
                Loss::Mse
            } else {
                Loss::BceWithLogits
            };
            if cfg.task == "sine" {
                let mut net = Box::new((
                    (
                        dense::<S, 1, 16>(h, &mut rng)?,
                        dense::<S, 16, 16>(h, &mut rng)?,
                    ),
                    dense::<S, 16, 1>(Act::Identity, &mut rng)?,
                ));
                train_loop::<S, _, 1>(cfg, data, &mut *net, arr::<S, 1>, loss)
            } else {
                let mut net = Box::new((
                    (
                        dense::<S, 2, 16>(h, &mut rng)?,
                        dense::<S, 16, 16>(h, &mut rng)?,
                    ),
                    dense::<S, 16, 1>(Act::Identity, &mut rng)?,
                ));
                train_loop::<S, _, 1>(cfg, data, &mut *net, arr::<S, 2>, loss)
            }
        }
        "adding" => {
            const H: usize = 16;
            let h = cfg.activation.unwrap_or(Act::Relu);
            let mut rnn: Box<Rnn<S, 2, H, ADDING_STEPS>> = Box::new(Rnn::new(h));
            init_matrix(
                &mut rnn.weight_ih,
                &Init::Normal {
                    mean: 0.0,
                    std: 0.1,
                },
                &mut rng,
                &mut NearestEven,
                &mut (),
            )
            .map_err(err)?;
            init_matrix(
                &mut rnn.weight_hh,
                &Init::Identity { gain: 1.0 },
                &mut rng,
                &mut NearestEven,
                &mut (),
            )
            .map_err(err)?;
            let mut net = Box::new((
                (*rnn, LastStep::<H, ADDING_STEPS>),
                dense::<S, H, 1>(Act::Identity, &mut rng)?,
            ));
            let seq = |x: &[f64]| {
                let mut s = [[S::ZERO; 2]; ADDING_STEPS];
                for (d, c) in s.iter_mut().zip(x.chunks(2)) {
                    *d = arr::<S, 2>(c);
                }
                s
            };
            train_loop::<S, _, 1>(cfg, data, &mut *net, seq, Loss::Mse)
        }
        "digits" => {
            let h = cfg.activation.unwrap_or(Act::Relu);
            let mut net = Box::new((
                dense::<S, 64, 32>(h, &mut rng)?,
                dense::<S, 32, 10>(Act::Identity, &mut rng)?,
            ));
            train_loop::<S, _, 10>(
                cfg,
                data,
                &mut *net,
                arr::<S, 64>,
                Loss::SoftmaxCrossEntropy,
            )
        }
        t => bail!("unknown task '{t}'"),
    }
}

enum Optimizer<S> {
    Sgd,
    Momentum(Vec<S>),
    Adam(Adam, Vec<S>),
}

fn correct<S: Scalar, const O: usize>(kind: Kind, tolerance: f64, y: &[S; O], t: &[f64]) -> bool {
    let y: Vec<f64> = y.iter().map(|v| v.to_f64()).collect();
    match kind {
        Kind::Binary => {
            (y.first().copied().unwrap_or(0.0) > 0.0) == (t.first().copied().unwrap_or(0.0) > 0.5)
        }
        Kind::Classes => {
            let argmax = |v: &[f64]| {
                v.iter()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                    )
                    .0
            };
            argmax(&y) == argmax(t)
        }
        Kind::Regression => y.iter().zip(t).all(|(a, b)| (a - b).abs() <= tolerance),
    }
}

fn evaluate<S, N, const O: usize>(
    net: &mut N,
    test: &[(N::Input, [S; O], Vec<f64>)],
    loss: Loss,
    scale: f64,
    data: &Dataset,
) -> (f64, f64)
where
    S: Scalar,
    N: Layer<S, Output = [S; O]>,
{
    let (mut total, mut right) = (0.0, 0usize);
    for (x, t, t64) in test {
        let y = net.forward(x, 0, &mut NearestEven, &mut ());
        let mut dy = [S::ZERO; O];
        total += scaled_loss(
            loss,
            scale,
            &y,
            t,
            1,
            &mut dy,
            &mut AnyRounding::NearestEven,
            &mut EventCounts::default(),
        );
        right += correct::<f64, O>(
            data.kind,
            data.tolerance,
            &y.map(|v| v.to_f64() * scale),
            t64,
        ) as usize;
    }
    let n = test.len().max(1) as f64;
    (total / n, right as f64 / n)
}

/// The loss of `output_scale · y` and its gradient with respect to `y`, computed in f64 and rounded once.
#[allow(clippy::too_many_arguments)]
fn scaled_loss<S: Scalar, const O: usize>(
    loss: Loss,
    output_scale: f64,
    y: &[S; O],
    t: &[S; O],
    batch: usize,
    dy: &mut [S; O],
    r: &mut AnyRounding<Xoshiro128PlusPlus>,
    events: &mut EventCounts,
) -> f64 {
    if output_scale == 1.0 {
        return loss_grad(loss, y, t, batch, dy, r, events);
    }
    let y64 = y.map(|v| v.to_f64() * output_scale);
    let t64 = t.map(|v| v.to_f64());
    let (value, g) = gradscope_core::loss::loss_grad_f64(loss, &y64, &t64);
    let k = output_scale / batch.max(1) as f64;
    for (d, gv) in dy.iter_mut().zip(g) {
        let (v, f) = S::from_f64(gv * k, r);
        events.record(f | Flags::when(!gv.is_finite(), Flags::NONFINITE));
        *d = v;
    }
    value
}

fn sum_events(stats: &[LayerStats], f: impl Fn(&EventCounts) -> u32) -> u64 {
    stats
        .iter()
        .map(|s| (f(&s.forward) + f(&s.backward) + f(&s.grad)) as u64)
        .sum()
}

fn phase_name(p: Phase) -> String {
    match p {
        Phase::Forward => "forward",
        Phase::Backward => "backward",
        Phase::Grad => "gradient",
    }
    .into()
}

fn train_loop<S, N, const O: usize>(
    cfg: &TrainConfig,
    data: &Dataset,
    net: &mut N,
    input: impl Fn(&[f64]) -> N::Input,
    loss: Loss,
) -> Result<TrainResult>
where
    S: Scalar,
    N: Layer<S, Output = [S; O]>,
{
    let convert = |set: &[(Vec<f64>, Vec<f64>)]| -> Vec<(N::Input, [S; O], Vec<f64>)> {
        set.iter()
            .map(|(x, t)| (input(x), arr::<S, O>(t), t.clone()))
            .collect()
    };
    let train = convert(&data.train);
    let test = convert(&data.test);
    let n_params = param_count::<S, _>(net);
    let mut opt = match cfg.optimizer.as_str() {
        "sgd" => Optimizer::Sgd,
        "momentum" => Optimizer::Momentum(vec![S::ZERO; n_params]),
        _ => Optimizer::Adam(
            Adam::new(cfg.lr, 0.9, 0.999, 1e-8, cfg.weight_decay).map_err(err)?,
            vec![S::ZERO; 2 * n_params],
        ),
    };
    let mut scaler = match cfg.loss_scale {
        Scaling::None => None,
        Scaling::Static(s) => Some(LossScaler::fixed(s).map_err(err)?),
        Scaling::Dynamic(s) => Some(LossScaler::dynamic(s, 200).map_err(err)?),
    };
    let mut r = rounding(&cfg.rounding, cfg.seed);
    let mut shuffler = Xoshiro128PlusPlus::seed_from_u64(cfg.seed ^ 0x5348_5546);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let layers = net.depth().max(1);
    let initial_accuracy = evaluate(net, &test, loss, cfg.output_scale, data).1;
    let mut epochs = Vec::with_capacity(cfg.epochs);
    let mut divergence = None;
    let mut step = 0usize;
    let mut first_loss: Option<f64> = None;
    let progress = crate::par::bar(
        cfg.epochs as u64,
        &format!("train {} {}", cfg.task, cfg.precision),
    );
    'epochs: for epoch in 1..=cfg.epochs {
        shuffle(&mut order, &mut shuffler);
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        let (mut grad_norm_sum, mut zero_sum, mut steps) = (0.0, 0.0, 0usize);
        let (mut under, mut under_of, mut sat, mut values, mut skipped) =
            (0u64, 0u64, 0u64, 0u64, 0u32);
        for chunk in order.chunks(cfg.batch) {
            step += 1;
            net.zero_grad();
            let mut stats = vec![LayerStats::default(); layers];
            let mut loss_events = EventCounts::default();
            let scale = scaler.as_ref().map_or(1.0, |s| s.scale());
            let mut loss_sum_step = 0.0;
            for &i in chunk {
                let Some((x, t, _)) = train.get(i) else {
                    continue;
                };
                let y = net.forward(x, 0, &mut r, stats.as_mut_slice());
                let mut dy = [S::ZERO; O];
                let l = scaled_loss(
                    loss,
                    cfg.output_scale,
                    &y,
                    t,
                    chunk.len(),
                    &mut dy,
                    &mut r,
                    &mut loss_events,
                );
                if let Some(s) = &scaler {
                    s.scale_grad(&mut dy, &mut r, &mut loss_events);
                }
                net.backward(&dy, 0, &mut r, stats.as_mut_slice());
                loss_sum += l;
                loss_sum_step += l;
                seen += 1;
            }
            let stop = |reason: String, layer: Option<usize>, phase: Option<Phase>| Divergence {
                step,
                epoch,
                layer,
                phase: phase.map(phase_name),
                reason,
            };
            if !loss_sum.is_finite() {
                divergence = Some(match NonFinite::locate(&stats) {
                    Some(nf) => stop(
                        format!(
                            "{} non-finite values{}",
                            nf.count,
                            if nf.overflow {
                                ", caused by overflow"
                            } else {
                                ""
                            }
                        ),
                        Some(nf.layer + 1),
                        Some(nf.phase),
                    ),
                    None => stop("the loss is not finite".into(), None, None),
                });
                break 'epochs;
            }
            if let Some(nf) = NonFinite::locate(&stats) {
                // With a loss scaler, an overflowing backward pass is a skipped step, not a divergence.
                if nf.phase == Phase::Forward || scaler.is_none() {
                    divergence = Some(stop(
                        format!(
                            "{} non-finite values{}",
                            nf.count,
                            if nf.overflow {
                                ", caused by overflow"
                            } else {
                                ""
                            }
                        ),
                        Some(nf.layer + 1),
                        Some(nf.phase),
                    ));
                    break 'epochs;
                }
            }
            let step_loss = loss_sum_step / chunk.len().max(1) as f64;
            let reference = *first_loss.get_or_insert(step_loss);
            if step_loss > 1.0 && step_loss > 1e8 * reference {
                let (k, _) = stats.iter().enumerate().fold((0, -1.0), |b, (k, s)| {
                    let v = s.backward_rms_norm();
                    if v > b.1 { (k, v) } else { b }
                });
                divergence = Some(stop(
                    format!(
                        "the loss ({step_loss:.3e}) exceeds 10^8 times the first step's ({reference:.3e}); the largest backward signal is here"
                    ),
                    Some(k + 1),
                    Some(Phase::Backward),
                ));
                break 'epochs;
            }
            if let Some((k, s)) = stats.iter().enumerate().find(|(_, s)| {
                s.forward.values > 0 && 2 * s.forward.overflow as u64 > s.forward.values as u64
            }) {
                divergence = Some(stop(
                    format!(
                        "{:.0}% of the layer's forward values saturated",
                        100.0 * s.forward.overflow as f64 / s.forward.values as f64
                    ),
                    Some(k + 1),
                    Some(Phase::Forward),
                ));
                break 'epochs;
            }
            under += sum_events(&stats, |e| e.underflow);
            under_of += stats
                .iter()
                .map(|s| (s.backward.values + s.grad.values) as u64)
                .sum::<u64>();
            sat += sum_events(&stats, |e| e.overflow) + loss_events.overflow as u64;
            values += sum_events(&stats, |e| e.values) + loss_events.values as u64;
            if let Some(s) = scaler.as_mut() {
                let mut f = Flags::NONE;
                for st in &stats {
                    if st.backward.overflow
                        + st.grad.overflow
                        + st.backward.nonfinite
                        + st.grad.nonfinite
                        > 0
                    {
                        f |= Flags::OVERFLOW;
                    }
                }
                if s.update(f) == ScaleDecision::Skip {
                    skipped += 1;
                    continue;
                }
            }
            let g = gradscope_core::GradStats::of::<S, _>(net);
            grad_norm_sum += g.norm / scale;
            zero_sum += g.zero_fraction();
            steps += 1;
            let mut update_events = EventCounts::default();
            let adam = matches!(opt, Optimizer::Adam(..));
            let mut gscale = scale;
            if adam && scale != 1.0 {
                if let Some(s) = &scaler {
                    s.unscale(net, &mut r, &mut update_events);
                }
                gscale = 1.0;
            }
            let clip = match cfg.clip {
                Clip::Value(v) => Clip::Value(v * gscale),
                Clip::Norm(v) => Clip::Norm(v * gscale),
                Clip::Global(v) => Clip::Global(v * gscale),
                Clip::Agc(v) => Clip::Agc(v * gscale),
                Clip::None => Clip::None,
            };
            clip.apply(net, &mut r, &mut update_events)?;
            let result = match &mut opt {
                Optimizer::Sgd => Sgd::new(cfg.lr / gscale, cfg.weight_decay * gscale)
                    .and_then(|o| o.step(net, &mut r, &mut update_events)),
                Optimizer::Momentum(state) => {
                    Momentum::new(cfg.lr / gscale, 0.9, cfg.weight_decay * gscale)
                        .and_then(|o| o.step(net, state, &mut r, &mut update_events))
                }
                Optimizer::Adam(a, state) => a.step(net, state, &mut r, &mut update_events),
            };
            if let Err(e) = result {
                divergence = Some(stop(
                    format!("the optimizer refused the step: {e}"),
                    None,
                    None,
                ));
                break 'epochs;
            }
            sat += update_events.overflow as u64;
            values += update_events.values as u64;
        }
        let (test_loss, accuracy) = evaluate(net, &test, loss, cfg.output_scale, data);
        let mut wsq = 0.0;
        net.visit(&mut |t| wsq += t.value.iter().map(|v| v.to_f64().powi(2)).sum::<f64>());
        let rate = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        epochs.push(EpochRow {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            test_loss,
            accuracy,
            grad_norm: grad_norm_sum / steps.max(1) as f64,
            weight_norm: wsq.sqrt(),
            underflow_rate: rate(under, under_of),
            saturation_rate: rate(sat, values),
            zero_grad_fraction: zero_sum / steps.max(1) as f64,
            skipped_steps: skipped,
            loss_scale: scaler.as_ref().map_or(1.0, |s| s.scale()),
        });
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(TrainResult {
        config: cfg.clone(),
        parameters: n_params,
        samples: (train.len(), test.len()),
        epochs,
        divergence,
        initial_accuracy,
    })
}

/// One line describing a divergence.
pub fn describe(d: &Divergence) -> String {
    let at = match (d.layer, &d.phase) {
        (Some(l), Some(p)) => format!(" in layer {l} ({p} pass)"),
        _ => String::new(),
    };
    format!(
        "diverged at step {} (epoch {}){at}: {}",
        d.step, d.epoch, d.reason
    )
}

/// The per-epoch frame of one run.
pub fn epochs_frame(name: &str, r: &TrainResult) -> Frame {
    let mut f = Frame::new(
        name,
        "",
        &[
            "epoch",
            "train_loss",
            "test_loss",
            "accuracy",
            "grad_norm",
            "weight_norm",
            "underflow_rate",
            "saturation_rate",
            "zero_grad_fraction",
            "skipped_steps",
            "loss_scale",
        ],
    );
    for e in &r.epochs {
        f.push(vec![
            e.epoch.into(),
            e.train_loss.into(),
            e.test_loss.into(),
            e.accuracy.into(),
            e.grad_norm.into(),
            e.weight_norm.into(),
            e.underflow_rate.into(),
            e.saturation_rate.into(),
            e.zero_grad_fraction.into(),
            e.skipped_steps.into(),
            e.loss_scale.into(),
        ]);
    }
    f
}

/// The `train` subcommand's outcome.
pub fn outcome(r: &TrainResult) -> Result<Outcome> {
    let c = &r.config;
    let mut loss_plot = Plot::new(
        "train_loss",
        &format!("{} in {}", c.task, c.precision),
        "epoch",
        "loss",
        true,
    );
    loss_plot.line(
        "train loss",
        r.epochs
            .iter()
            .map(|e| (e.epoch as f64, e.train_loss))
            .collect(),
    );
    loss_plot.line(
        "held-out loss",
        r.epochs
            .iter()
            .map(|e| (e.epoch as f64, e.test_loss))
            .collect(),
    );
    let mut notes = Vec::new();
    if let Some(last) = r.last() {
        notes.push(format!(
            "after {} epochs: held-out loss {:.4}, accuracy {:.1}% (before training {:.1}%)",
            last.epoch,
            last.test_loss,
            100.0 * last.accuracy,
            100.0 * r.initial_accuracy
        ));
    }
    notes.push(match &r.divergence {
        Some(d) => describe(d),
        None => "no divergence".into(),
    });
    Ok(Outcome {
        name: "train".into(),
        heading: format!(
            "{} task ({} training, {} held-out samples, {} parameters) in {} ({} rounding), {} lr {}, weight decay {}, batch {}, loss scaling {}, clipping {}, seed {}",
            c.task,
            r.samples.0,
            r.samples.1,
            r.parameters,
            c.precision,
            c.rounding,
            c.optimizer,
            c.lr,
            c.weight_decay,
            c.batch,
            match c.loss_scale {
                Scaling::None => "none".to_string(),
                Scaling::Static(s) => format!("static {s}"),
                Scaling::Dynamic(s) => format!("dynamic from {s}"),
            },
            c.clip,
            c.seed
        ),
        frames: vec![epochs_frame("train", r)],
        plots: vec![loss_plot],
        notes,
        json: serde_json::to_value(r)?,
    })
}

/// Run one workload in every precision, in parallel.
pub fn across_precisions(
    cfg: &TrainConfig,
    data: &Dataset,
    precisions: &[&str],
) -> Result<Vec<TrainResult>> {
    let cfgs: Vec<TrainConfig> = precisions
        .iter()
        .map(|p| TrainConfig {
            precision: (*p).into(),
            ..cfg.clone()
        })
        .collect();
    for c in &cfgs {
        validate(c)?;
    }
    crate::par::sweep("precisions", &cfgs, |c| dispatch(c, data))
}

/// The `precision` subcommand's outcome.
pub fn precision_outcome(runs: &[TrainResult]) -> Result<Outcome> {
    let mut f = Frame::new(
        "precision",
        "",
        &[
            "precision",
            "train_loss",
            "test_loss",
            "accuracy",
            "underflow_rate",
            "saturation_rate",
            "zero_grad_fraction",
            "diverged_at_step",
        ],
    );
    let Some(first) = runs.first() else {
        bail!("no runs")
    };
    let mut plot = Plot::new(
        "precision",
        &format!("{}: held-out loss per precision", first.config.task),
        "epoch",
        "held-out loss",
        true,
    );
    for r in runs {
        let last = r.last();
        let get = |g: fn(&EpochRow) -> f64| last.map(g);
        f.push(vec![
            r.config.precision.as_str().into(),
            get(|e| e.train_loss).into(),
            get(|e| e.test_loss).into(),
            get(|e| e.accuracy).into(),
            get(|e| e.underflow_rate).into(),
            get(|e| e.saturation_rate).into(),
            get(|e| e.zero_grad_fraction).into(),
            r.divergence.as_ref().map(|d| d.step).into(),
        ]);
        plot.line(
            r.config.precision.clone(),
            r.epochs
                .iter()
                .map(|e| (e.epoch as f64, e.test_loss))
                .collect(),
        );
    }
    let c = &first.config;
    Ok(Outcome {
        name: "precision".into(),
        heading: format!(
            "{} task, {} epochs, {} lr {}, batch {}, {} rounding, seed {}: the last epoch's numbers per precision",
            c.task, c.epochs, c.optimizer, c.lr, c.batch, c.rounding, c.seed
        ),
        frames: vec![f],
        plots: vec![plot],
        notes: runs
            .iter()
            .filter_map(|r| {
                r.divergence
                    .as_ref()
                    .map(|d| format!("{}: {}", r.config.precision, describe(d)))
            })
            .collect(),
        json: serde_json::to_value(runs)?,
    })
}
