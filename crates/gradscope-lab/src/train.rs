//! Training in any precision, with every numeric event counted and divergence located.
//!
//! Networks per task (hidden activation selectable, output linear):
//! - `xor`: 2-8-1, tanh; binary cross-entropy on the logit.
//! - `spiral`: 2-16-16-1, tanh; binary cross-entropy.
//! - `sine`: 1-16-16-1, tanh; MSE on y = 0.8·sin(πx).
//! - `adding`: an IRNN (ReLU, identity recurrent weights; Le et al. 2015) with 16 units over 20 steps, read
//!   out from the last state by a dense layer; MSE. Predicting the mean scores an MSE of 1/24 ≈ 0.042. The
//!   cell can be a tanh RNN (orthogonal recurrent weights), an LSTM (forget-gate bias 1) or a GRU instead
//!   (`cell`), and the sequences 50 or 100 steps long (the data's length; those run in f32 and f64). Every
//!   adding run's result carries ‖∂L/∂h_t‖ per step before, during and after training ([`ThroughTime`]).
//!   `recurrent_scale` sets the Elman cells' recurrent gain.
//! - `digits`: 64-32-10, ReLU; softmax cross-entropy; accuracy on the 20% held out.
//!
//! The loss can be made a cause of vanishing gradients ([`head`]): `--loss mse` puts a sigmoid on the binary
//! tasks' output and trains it with MSE (its gradient carries σ′), or trains the digits' logits with softmax
//! MSE; `--output-bias` starts the first output unit confidently wrong.
//!
//! Each minibatch is one call of the core's training step ([`gradscope_core::train::step`]): what differs
//! here is only the data, the network and the schedule. The step's divergence rules stop a run: a non-finite
//! value (located to the layer and pass where it first appeared), more than half of a layer's forward values
//! saturated in one step, a loss beyond 10⁸ times the first step's (reported at the layer with the largest
//! backward signal), or a refused update. Loss scaling keeps the gradients scaled; the optimizers take the
//! scale (SGD folds it into its learning rate, Adam divides in f64).

use anyhow::{Result, anyhow, bail};
use gradscope_core::train::{Cause, FromFn, StepCtx, Verdict, step};
use gradscope_core::{
    Act, Activate, Adam, AdamParams, AnyRounding, Clip, Dense, EventCounts, Float, Gru, Init,
    LastStep, Layer, LayerStats, Loss, Lstm, NearestEven, Objective, Optimizer, Params, Phase, Rnn,
    Scalar, Sgd, StepNorms, init_matrix, param_count,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

use crate::data::{ADDING_STEPS, Dataset, Kind, shuffle};
use crate::options::{Cell, OptimizerKind, Precision, Rounding, Scaling, Task, in_range, number};
use crate::output::{Frame, Outcome};
use crate::plot::Plot;
use crate::with_scalar;

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
    /// The task.
    pub task: Task,
    /// The number format.
    pub precision: Precision,
    /// Rounding of fixed-point results.
    pub rounding: Rounding,
    /// Hidden activation; `None` for the task's default (tanh, or ReLU for digits and adding).
    #[serde(serialize_with = "act_name")]
    pub activation: Option<Act>,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// SGD's momentum μ (0 for plain SGD; unused by Adam).
    pub momentum: f64,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (coupled L2 for SGD and Adam, decoupled for AdamW).
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
    /// The loss; `None` for the task's own (see [`head`]).
    pub loss: Option<Loss>,
    /// The first output unit's bias starts here (0: as initialized), to start confidently wrong.
    pub output_bias: f64,
    /// Seed of data, weights, shuffling and stochastic rounding.
    pub seed: u64,
    /// The adding task's recurrent cell: the IRNN (the default), a tanh RNN, an LSTM or a GRU.
    pub cell: Cell,
    /// Gain of the Elman cells' recurrent weights (the IRNN's `scale · I`, the tanh RNN's orthogonal matrix
    /// times `scale`): every singular value equals it, so above 1 the linear part of each step grows the
    /// gradient through time (Pascanu et al. 2013).
    pub recurrent_scale: f64,
}

impl TrainConfig {
    /// The task's defaults: an optimizer (SGD with momentum 0.9; Adam for the adding problem), learning rate,
    /// epoch count and batch that train it to high accuracy in f32.
    pub fn for_task(task: Task) -> TrainConfig {
        let (optimizer, lr, epochs, batch) = match task {
            Task::Xor => (OptimizerKind::Sgd, 0.1, 300, 4),
            Task::Spiral => (OptimizerKind::Sgd, 0.1, 300, 16),
            Task::Sine => (OptimizerKind::Sgd, 0.05, 150, 16),
            Task::Adding => (OptimizerKind::Adam, 0.003, 60, 16),
            Task::Digits => (OptimizerKind::Sgd, 0.05, 15, 16),
        };
        TrainConfig {
            task,
            precision: Precision::F32,
            rounding: Rounding::Nearest,
            activation: None,
            optimizer,
            momentum: 0.9,
            lr,
            weight_decay: 0.0,
            epochs,
            batch,
            loss_scale: Scaling::None,
            output_scale: 1.0,
            clip: Clip::None,
            loss: None,
            output_bias: 0.0,
            seed: 1,
            cell: Cell::Irnn,
            recurrent_scale: 1.0,
        }
    }
}

/// The output layer's activation and the loss of `task` with `--loss` `loss` (`None`: the task's own):
///
/// - `xor`, `spiral`: `bce` (default), logits trained with BCE; or `mse`, a sigmoid output trained with MSE.
/// - `digits`: `ce` (default), softmax cross-entropy; or `mse` (or `softmax_mse`), softmax MSE.
/// - `sine`, `adding`: `mse` only.
pub fn head(task: Task, loss: Option<Loss>) -> Result<(Act, Loss)> {
    Ok(match (task, loss) {
        (Task::Xor | Task::Spiral, None | Some(Loss::BceWithLogits)) => {
            (Act::Identity, Loss::BceWithLogits)
        }
        (Task::Xor | Task::Spiral, Some(Loss::Mse)) => (Act::Sigmoid, Loss::Mse),
        (Task::Digits, None | Some(Loss::SoftmaxCrossEntropy)) => {
            (Act::Identity, Loss::SoftmaxCrossEntropy)
        }
        (Task::Digits, Some(Loss::Mse | Loss::SoftmaxMse)) => (Act::Identity, Loss::SoftmaxMse),
        (Task::Sine | Task::Adding, None | Some(Loss::Mse)) => (Act::Identity, Loss::Mse),
        (task, Some(other)) => {
            let takes = match task {
                Task::Xor | Task::Spiral => "bce (the default) or mse",
                Task::Digits => "ce (the default) or mse (softmax MSE)",
                _ => "mse only",
            };
            bail!("--loss {}: task {task} takes {takes}", other.name())
        }
    })
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
    /// Mean over updating steps of the global gradient norm (of the true, unscaled gradient).
    pub grad_norm: f64,
    /// L2 norm of all parameters after the epoch.
    pub weight_norm: f64,
    /// Share of backward and gradient values that underflowed to zero.
    pub underflow_rate: f64,
    /// Share of all values (forward, backward, gradient, clip, update, loss gradient) that saturated.
    pub saturation_rate: f64,
    /// Share of parameter gradients that were exactly zero, averaged over updating steps.
    pub zero_grad_fraction: f64,
    /// Updates that rounded to nothing (a non-zero change lost), per updated parameter value.
    pub lost_update_rate: f64,
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
    /// Pass: forward, backward or gradient.
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
    /// L2 norm of all parameters before training.
    pub initial_weight_norm: f64,
    /// Bytes of the training state: the network (weights, gradients and its per-sample caches) and the
    /// optimizer's state, by `size_of` on this host.
    pub state_bytes: usize,
    /// For the adding task: ‖∂L/∂h_t‖ per time step during training.
    pub through_time: Option<ThroughTime>,
}

/// ‖∂L/∂h_t‖ per time step t = 1..T of the recurrent layer, as the root mean square over the first
/// [`PROFILE_SAMPLES`] training samples (one backward pass each, no update), before training, after every
/// [`PROFILE_EVERY`] epochs, and after the last.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThroughTime {
    /// Epochs completed when each profile was taken (0: before training), ascending.
    pub epochs: Vec<usize>,
    /// One profile per entry of `epochs`: ‖∂L/∂h_t‖ for t = 1..T.
    pub profiles: Vec<Vec<f64>>,
}

/// Epochs between two [`ThroughTime`] profiles.
pub const PROFILE_EVERY: usize = 10;

impl ThroughTime {
    /// The profile before training.
    pub fn before(&self) -> &[f64] {
        self.profiles.first().map_or(&[], |p| p.as_slice())
    }

    /// The profile after the last epoch.
    pub fn after(&self) -> &[f64] {
        self.profiles.last().map_or(&[], |p| p.as_slice())
    }

    /// ‖∂L/∂h₁‖ / ‖∂L/∂h_T‖ of a profile: how much of the last step's gradient reaches the first.
    pub fn ratio(profile: &[f64]) -> f64 {
        match (profile.first(), profile.last()) {
            (Some(a), Some(b)) if *b > 0.0 => a / b,
            _ => f64::NAN,
        }
    }
}

/// Samples in a [`ThroughTime`] profile.
pub const PROFILE_SAMPLES: usize = 32;

impl TrainResult {
    /// The last epoch's row.
    pub fn last(&self) -> Option<&EpochRow> {
        self.epochs.last()
    }
}

/// Check a configuration.
pub fn validate(cfg: &TrainConfig) -> Result<()> {
    number("--lr", cfg.lr, |v| v > 0.0, "a positive number")?;
    number(
        "--momentum",
        cfg.momentum,
        |v| (0.0..1.0).contains(&v),
        "in [0, 1)",
    )?;
    number(
        "--weight-decay",
        cfg.weight_decay,
        |v| v >= 0.0,
        "a number >= 0",
    )?;
    in_range("--epochs", cfg.epochs, 1..=100_000)?;
    number(
        "--output-scale",
        cfg.output_scale,
        |v| v > 0.0,
        "a positive number",
    )?;
    in_range("--batch", cfg.batch, 1..=4096)?;
    number(
        "--output-bias",
        cfg.output_bias,
        f64::is_finite,
        "a finite number",
    )?;
    cfg.loss_scale.scaler()?;
    number(
        "--recurrent-scale",
        cfg.recurrent_scale,
        |v| v > 0.0 && v <= 16.0,
        "in (0, 16]",
    )?;
    if cfg.recurrent_scale != 1.0 && (cfg.task != Task::Adding || cfg.cell.is_gated()) {
        bail!("--recurrent-scale applies to the adding task's rnn and irnn cells only");
    }
    if cfg.cell != Cell::Irnn && cfg.task != Task::Adding {
        bail!("--cell applies to the adding task only");
    }
    if cfg.cell.is_gated() && !matches!(cfg.precision, Precision::F32 | Precision::F64) {
        bail!(
            "--cell {} trains in f32 or f64 (the gated cells' training is compiled for those)",
            cfg.cell
        );
    }
    head(cfg.task, cfg.loss)?;
    Ok(())
}

/// Train on `data`.
pub fn run(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult> {
    validate(cfg)?;
    if data.task != cfg.task {
        bail!("the data is for task {}, not {}", data.task, cfg.task);
    }
    crate::par::one(|| dispatch(cfg, data))
}

fn dispatch(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult> {
    let steps = data.inputs / 2;
    if cfg.task == Task::Adding && (cfg.cell != Cell::Irnn || steps != ADDING_STEPS) {
        // Other cells and lengths are compiled for f32 and f64 (each is a training loop of its own).
        return match cfg.precision {
            Precision::F32 => adding::<f32>(cfg, data, steps),
            Precision::F64 => adding::<f64>(cfg, data, steps),
            p => bail!(
                "the adding task with --cell {} and {steps} steps trains in f32 or f64, not {p}",
                cfg.cell
            ),
        };
    }
    with_scalar!(cfg.precision, S => by_task::<S>(cfg, data))
}

/// The adding task with `cfg.cell` over `steps` steps (one of [`crate::data::ADDING_LENGTHS`]).
fn adding<S: Float>(cfg: &TrainConfig, data: &Dataset, steps: usize) -> Result<TrainResult>
where
    Act: Activate<S>,
{
    macro_rules! lengths {
        ($f:ident) => {
            match steps {
                20 => $f::<S, 20>(cfg, data),
                50 => $f::<S, 50>(cfg, data),
                100 => $f::<S, 100>(cfg, data),
                t => bail!("the adding task is compiled for 20, 50 and 100 steps, not {t}"),
            }
        };
    }
    match cfg.cell {
        Cell::Rnn | Cell::Irnn => lengths!(elman_adding),
        Cell::Lstm => lengths!(lstm_adding),
        Cell::Gru => lengths!(gru_adding),
    }
}

/// Width of the adding task's recurrent layer.
const ADDING_HIDDEN: usize = 16;

/// The adding task's input sequence from a sample's step-major values.
fn adding_seq<S: Scalar, const T: usize>(x: &[f64]) -> [[S; 2]; T] {
    let mut s = [[S::ZERO; 2]; T];
    for (d, c) in s.iter_mut().zip(x.chunks(2)) {
        *d = arr::<S, 2>(c);
    }
    s
}

/// Train `net` (recurrent layer first, then `LastStep` and the head) on the adding task, with the gradient's
/// profile through time before and after.
fn adding_run<S, N, const T: usize>(
    cfg: &TrainConfig,
    data: &Dataset,
    net: &mut N,
) -> Result<TrainResult>
where
    S: Scalar,
    N: Layer<S, Input = [[S; 2]; T], Output = [S; 1]>,
{
    let mut tt = ThroughTime {
        epochs: vec![0],
        profiles: vec![through_time::<S, N, T>(cfg, data, net)],
    };
    let mut r = with_optimizer(cfg, data, net, adding_seq::<S, T>, &mut |epoch, net| {
        if epoch % PROFILE_EVERY == 0 && epoch < cfg.epochs {
            tt.epochs.push(epoch);
            tt.profiles.push(through_time::<S, N, T>(cfg, data, net));
        }
    })?;
    tt.epochs.push(r.epochs.len());
    tt.profiles.push(through_time::<S, N, T>(cfg, data, net));
    r.through_time = Some(tt);
    Ok(r)
}

/// RMS over the first [`PROFILE_SAMPLES`] training samples of ‖∂L/∂h_t‖ (layer 0), t = 1..T; leaves the
/// gradients zeroed.
fn through_time<S, N, const T: usize>(cfg: &TrainConfig, data: &Dataset, net: &mut N) -> Vec<f64>
where
    S: Scalar,
    N: Layer<S, Input = [[S; 2]; T], Output = [S; 1]>,
{
    let objective = Objective::new(head(cfg.task, cfg.loss).map_or(Loss::Mse, |h| h.1));
    let mut sq = vec![0.0; T];
    let samples: Vec<_> = data.train.iter().take(PROFILE_SAMPLES).collect();
    for (x, t) in &samples {
        let mut probe = StepNorms::<T>::new(0);
        let one = [(adding_seq::<S, T>(x), arr::<S, 1>(t))];
        gradscope_core::train::backprop(
            net,
            &one[..],
            &objective,
            1.0,
            &mut NearestEven,
            &mut probe,
        );
        for (a, n) in sq.iter_mut().zip(probe.norms) {
            *a += n * n;
        }
    }
    net.zero_grad();
    let n = samples.len().max(1) as f64;
    sq.iter().map(|v| (v / n).sqrt()).collect()
}

/// A tanh RNN (Xavier input weights, orthogonal recurrent weights) or an IRNN (ReLU, N(0, 0.1²) input
/// weights, identity recurrent weights; Le et al. 2015) on the adding task.
fn elman_adding<S: Scalar, const T: usize>(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult>
where
    Act: Activate<S>,
{
    const H: usize = ADDING_HIDDEN;
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let irnn = cfg.cell == Cell::Irnn;
    let h = cfg
        .activation
        .unwrap_or(if irnn { Act::Relu } else { Act::Tanh });
    let mut rnn: Box<Rnn<S, 2, H, T>> = Box::new(Rnn::new(h));
    let (ih, hh) = crate::rnn::elman_inits(irnn, 0.1, cfg.recurrent_scale);
    init_matrix(&mut rnn.weight_ih, &ih, &mut rng, &mut NearestEven, &mut ()).map_err(err)?;
    init_matrix(&mut rnn.weight_hh, &hh, &mut rng, &mut NearestEven, &mut ()).map_err(err)?;
    let mut net = Box::new((
        (*rnn, LastStep::<H, T>::new()),
        output::<S, H, 1>(cfg, &mut rng)?,
    ));
    adding_run::<S, _, T>(cfg, data, &mut *net)
}

/// Xavier-normal input weights and orthogonal recurrent weights per gate block.
fn init_gate_blocks<S: Scalar, const H: usize, const G: usize>(
    ih: &mut [[[S; 2]; H]; G],
    hh: &mut [[[S; H]; H]; G],
    rng: &mut Xoshiro128PlusPlus,
) -> Result<()> {
    for (a, b) in ih.iter_mut().zip(hh.iter_mut()) {
        let xavier = Init::XavierNormal { gain: 1.0 };
        init_matrix(a, &xavier, rng, &mut NearestEven, &mut ()).map_err(err)?;
        let orthogonal = Init::Orthogonal { gain: 1.0 };
        init_matrix(b, &orthogonal, rng, &mut NearestEven, &mut ()).map_err(err)?;
    }
    Ok(())
}

/// An LSTM (forget-gate bias 1, Jozefowicz et al. 2015) on the adding task.
fn lstm_adding<S: Float, const T: usize>(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult>
where
    Act: Activate<S>,
{
    const H: usize = ADDING_HIDDEN;
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut cell: Box<Lstm<S, 2, H, T>> = Box::default();
    init_gate_blocks(&mut cell.weight_ih, &mut cell.weight_hh, &mut rng)?;
    cell.bias[1] = [S::from_f64(1.0, &mut NearestEven).0; H];
    let mut net = Box::new((
        (*cell, LastStep::<H, T>::new()),
        output::<S, H, 1>(cfg, &mut rng)?,
    ));
    adding_run::<S, _, T>(cfg, data, &mut *net)
}

/// A GRU (zero biases) on the adding task.
fn gru_adding<S: Float, const T: usize>(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult>
where
    Act: Activate<S>,
{
    const H: usize = ADDING_HIDDEN;
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut cell: Box<Gru<S, 2, H, T>> = Box::default();
    init_gate_blocks(&mut cell.weight_ih, &mut cell.weight_hh, &mut rng)?;
    let mut net = Box::new((
        (*cell, LastStep::<H, T>::new()),
        output::<S, H, 1>(cfg, &mut rng)?,
    ));
    adding_run::<S, _, T>(cfg, data, &mut *net)
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

/// The output layer: the head's activation, Xavier weights, the first unit's bias at `--output-bias`.
fn output<S: Scalar, const I: usize, const O: usize>(
    cfg: &TrainConfig,
    rng: &mut Xoshiro128PlusPlus,
) -> Result<Dense<S, I, O>> {
    let mut d = dense::<S, I, O>(head(cfg.task, cfg.loss)?.0, rng)?;
    if let Some(b) = d.bias.first_mut() {
        *b = S::from_f64(cfg.output_bias, &mut NearestEven).0;
    }
    Ok(d)
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

fn by_task<S: Scalar>(cfg: &TrainConfig, data: &Dataset) -> Result<TrainResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    match cfg.task {
        Task::Xor => {
            let h = cfg.activation.unwrap_or(Act::Tanh);
            let mut net = Box::new((
                dense::<S, 2, 8>(h, &mut rng)?,
                output::<S, 8, 1>(cfg, &mut rng)?,
            ));
            with_optimizer(cfg, data, &mut *net, arr::<S, 2>, &mut |_, _| {})
        }
        Task::Sine => {
            let h = cfg.activation.unwrap_or(Act::Tanh);
            let mut net = Box::new((
                (
                    dense::<S, 1, 16>(h, &mut rng)?,
                    dense::<S, 16, 16>(h, &mut rng)?,
                ),
                output::<S, 16, 1>(cfg, &mut rng)?,
            ));
            with_optimizer(cfg, data, &mut *net, arr::<S, 1>, &mut |_, _| {})
        }
        Task::Spiral => {
            let h = cfg.activation.unwrap_or(Act::Tanh);
            let mut net = Box::new((
                (
                    dense::<S, 2, 16>(h, &mut rng)?,
                    dense::<S, 16, 16>(h, &mut rng)?,
                ),
                output::<S, 16, 1>(cfg, &mut rng)?,
            ));
            with_optimizer(cfg, data, &mut *net, arr::<S, 2>, &mut |_, _| {})
        }
        Task::Adding => elman_adding::<S, ADDING_STEPS>(cfg, data),
        Task::Digits => {
            let h = cfg.activation.unwrap_or(Act::Relu);
            let mut net = Box::new((
                dense::<S, 64, 32>(h, &mut rng)?,
                output::<S, 32, 10>(cfg, &mut rng)?,
            ));
            with_optimizer(cfg, data, &mut *net, arr::<S, 64>, &mut |_, _| {})
        }
    }
}

/// Train any network `net` with `cfg`'s optimizer, loop and divergence rules on `data`, each sample's input
/// converted by `input` (the CNN experiment's entry into this loop).
pub fn train_net<S, N, const O: usize>(
    cfg: &TrainConfig,
    data: &Dataset,
    net: &mut N,
    input: impl Fn(&[f64]) -> N::Input,
) -> Result<TrainResult>
where
    S: Scalar,
    N: Layer<S, Output = [S; O]>,
{
    validate(cfg)?;
    with_optimizer(cfg, data, net, input, &mut |_, _| {})
}

/// Called after each epoch with the epochs completed and the network.
type Observer<'a, N> = &'a mut dyn FnMut(usize, &mut N);

/// The configured optimizer, with its state on the heap, then the training loop.
fn with_optimizer<S, N, const O: usize>(
    cfg: &TrainConfig,
    data: &Dataset,
    net: &mut N,
    input: impl Fn(&[f64]) -> N::Input,
    observe: Observer<'_, N>,
) -> Result<TrainResult>
where
    S: Scalar,
    N: Layer<S, Output = [S; O]>,
{
    let n = param_count::<S, _>(net);
    let adam = |p: AdamParams| Adam::new(p, vec![S::ZERO; 2 * n]).map_err(err);
    let state = |values: usize| std::mem::size_of_val(net) + values * std::mem::size_of::<S>();
    let mut r = match cfg.optimizer {
        OptimizerKind::Sgd => {
            let sgd = Sgd::with_momentum(cfg.lr, cfg.momentum, cfg.weight_decay, vec![S::ZERO; n])
                .map_err(err)?;
            let bytes = state(n);
            train_loop(cfg, data, net, input, sgd, observe).map(|r| (r, bytes))
        }
        OptimizerKind::Adam => {
            let p = AdamParams {
                weight_decay: cfg.weight_decay,
                ..AdamParams::new(cfg.lr)
            };
            let bytes = state(2 * n);
            train_loop(cfg, data, net, input, adam(p)?, observe).map(|r| (r, bytes))
        }
        OptimizerKind::AdamW => {
            let p = AdamParams::adamw(cfg.lr, cfg.weight_decay);
            let bytes = state(2 * n);
            train_loop(cfg, data, net, input, adam(p)?, observe).map(|r| (r, bytes))
        }
    }?;
    r.0.state_bytes = r.1;
    Ok(r.0)
}

/// Whether output `y` answers target `t`: binary outputs above `threshold` mean class 1.
fn correct<const O: usize>(
    kind: Kind,
    tolerance: f64,
    threshold: f64,
    y: &[f64; O],
    t: &[f64],
) -> bool {
    match kind {
        Kind::Binary => {
            (y.first().copied().unwrap_or(0.0) > threshold)
                == (t.first().copied().unwrap_or(0.0) > 0.5)
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
            argmax(y) == argmax(t)
        }
        Kind::Regression => y.iter().zip(t).all(|(a, b)| (a - b).abs() <= tolerance),
    }
}

/// A sample converted into the format: input, target, and the exact target for judging correctness.
type Converted<X, S, const O: usize> = (X, [S; O], Vec<f64>);

/// Mean held-out loss and accuracy (targets judged against their exact values).
fn evaluate<S, N, const O: usize>(
    net: &mut N,
    test: &[Converted<N::Input, S, O>],
    objective: &Objective,
    data: &Dataset,
    threshold: f64,
) -> (f64, f64)
where
    S: Scalar,
    N: Layer<S, Output = [S; O]>,
{
    let (mut total, mut right) = (0.0, 0usize);
    for (x, t, t64) in test {
        let y = net.forward(x, 0, &mut NearestEven, &mut ());
        total += objective.value(&y, t);
        let y64 = y.map(|v| v.to_f64() * objective.output_scale);
        right += correct(data.kind, data.tolerance, threshold, &y64, t64) as usize;
    }
    let n = test.len().max(1) as f64;
    (total / n, right as f64 / n)
}

/// Sums over the steps of one epoch.
#[derive(Default)]
struct EpochSums {
    loss: f64,
    seen: usize,
    grad_norm: f64,
    zero_fraction: f64,
    updates: usize,
    underflow: u64,
    underflow_of: u64,
    saturated: u64,
    values: u64,
    lost_updates: u64,
    update_values: u64,
    skipped: u32,
}

impl EpochSums {
    /// Add one step's per-layer statistics and loss-gradient events.
    fn add_events(&mut self, stats: &[LayerStats], loss_events: &EventCounts) {
        for s in stats {
            self.underflow += (s.backward.underflow + s.grad.underflow) as u64;
            self.underflow_of += (s.backward.values + s.grad.values) as u64;
            let all = s.total();
            self.saturated += all.overflow as u64;
            self.values += all.values as u64;
            self.lost_updates += s.update.underflow as u64;
            self.update_values += s.update.values as u64;
        }
        self.saturated += loss_events.overflow as u64;
        self.values += loss_events.values as u64;
    }
}

fn rate(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn train_loop<S, N, O, const OUT: usize>(
    cfg: &TrainConfig,
    data: &Dataset,
    net: &mut N,
    input: impl Fn(&[f64]) -> N::Input,
    optimizer: O,
    observe: Observer<'_, N>,
) -> Result<TrainResult>
where
    S: Scalar,
    N: Layer<S, Output = [S; OUT]>,
    O: Optimizer<S>,
{
    let convert = |set: &[(Vec<f64>, Vec<f64>)]| -> Vec<Converted<N::Input, S, OUT>> {
        set.iter()
            .map(|(x, t)| (input(x), arr::<S, OUT>(t), t.clone()))
            .collect()
    };
    let train = convert(&data.train);
    let test = convert(&data.test);
    let n_params = param_count::<S, _>(net);
    let (head_act, loss) = head(cfg.task, cfg.loss)?;
    let objective = Objective {
        output_scale: cfg.output_scale,
        ..Objective::new(loss)
    };
    // A sigmoid output is a probability: class 1 above ½; logits above 0.
    let threshold = if head_act == Act::Sigmoid { 0.5 } else { 0.0 };
    let mut ctx: StepCtx<O, AnyRounding<Xoshiro128PlusPlus>> =
        StepCtx::new(objective, optimizer, cfg.rounding.build(cfg.seed));
    ctx.scaler = cfg.loss_scale.scaler()?;
    ctx.clip = cfg.clip;
    let mut shuffler = Xoshiro128PlusPlus::seed_from_u64(cfg.seed ^ 0x5348_5546);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut stats = vec![LayerStats::default(); Params::depth(net).max(1)];
    let initial_accuracy = evaluate(net, &test, &objective, data, threshold).1;
    let initial_weight_norm = weight_norm(net);
    let mut epochs = Vec::with_capacity(cfg.epochs);
    let mut divergence = None;
    let mut step_no = 0usize;
    let progress = crate::par::bar(
        cfg.epochs as u64,
        &format!("train {} {}", cfg.task, cfg.precision),
    );
    'epochs: for epoch in 1..=cfg.epochs {
        shuffle(&mut order, &mut shuffler);
        let mut sums = EpochSums::default();
        for chunk in order.chunks(cfg.batch) {
            step_no += 1;
            let batch = FromFn {
                count: chunk.len(),
                sample: |k: usize| {
                    let (x, t, _) = train.get(*chunk.get(k)?)?;
                    Some((*x, *t))
                },
            };
            let report = step(net, &batch, &mut ctx, stats.as_mut_slice());
            sums.loss += report.backprop.loss_sum;
            sums.seen += report.backprop.samples as usize;
            sums.add_events(&stats, &report.backprop.loss_events);
            match report.verdict {
                Verdict::Updated => {
                    let (zeros, count) = stats.iter().fold((0u64, 0u64), |(z, c), s| {
                        (z + s.grad_zeros as u64, c + s.grad_values as u64)
                    });
                    sums.grad_norm += report.grad_norm.0;
                    sums.zero_fraction += rate(zeros, count);
                    sums.updates += 1;
                }
                Verdict::Skipped { .. } => sums.skipped += 1,
                Verdict::Diverged(d) => {
                    divergence = Some(describe_divergence(step_no, epoch, &d, &stats));
                    break 'epochs;
                }
            }
        }
        let (test_loss, accuracy) = evaluate(net, &test, &objective, data, threshold);
        let per_update = |x: f64| x / sums.updates.max(1) as f64;
        epochs.push(EpochRow {
            epoch,
            train_loss: sums.loss / sums.seen.max(1) as f64,
            test_loss,
            accuracy,
            grad_norm: per_update(sums.grad_norm),
            weight_norm: weight_norm(net),
            underflow_rate: rate(sums.underflow, sums.underflow_of),
            saturation_rate: rate(sums.saturated, sums.values),
            zero_grad_fraction: per_update(sums.zero_fraction),
            lost_update_rate: rate(sums.lost_updates, sums.update_values),
            skipped_steps: sums.skipped,
            loss_scale: ctx.scaler.as_ref().map_or(1.0, |s| s.scale()),
        });
        progress.inc(1);
        observe(epoch, net);
    }
    progress.finish_and_clear();
    Ok(TrainResult {
        config: cfg.clone(),
        parameters: n_params,
        samples: (train.len(), test.len()),
        epochs,
        divergence,
        initial_accuracy,
        initial_weight_norm,
        state_bytes: 0,
        through_time: None,
    })
}

/// L2 norm of all parameters.
fn weight_norm<S: Scalar, N: Params<S>>(net: &mut N) -> f64 {
    let mut sq = 0.0;
    net.visit(0, &mut |t| {
        sq += t.value.iter().map(|v| v.to_f64().powi(2)).sum::<f64>()
    });
    sq.sqrt()
}

/// The core's verdict as the lab reports it (layers counted from 1).
fn describe_divergence(
    step: usize,
    epoch: usize,
    d: &gradscope_core::train::Divergence,
    stats: &[LayerStats],
) -> Divergence {
    let (mut layer, mut phase) = (d.layer.map(|l| l + 1), d.phase);
    let reason = match d.cause {
        Cause::NonFinite { count, overflow } => format!(
            "{count} non-finite values{}",
            if overflow { ", caused by overflow" } else { "" }
        ),
        Cause::NonFiniteLoss => "the loss is not finite".into(),
        Cause::Saturated { share } => format!(
            "{:.0}% of the layer's forward values saturated",
            100.0 * share
        ),
        Cause::LossGrowth { loss, reference } => {
            // Point at the layer with the largest backward signal.
            let (k, _) = stats.iter().enumerate().fold((0, -1.0), |b, (k, s)| {
                let v = s.backward_rms_norm();
                if v > b.1 { (k, v) } else { b }
            });
            (layer, phase) = (Some(k + 1), Some(Phase::Backward));
            format!(
                "the loss ({loss:.3e}) exceeds 10^8 times the first step's ({reference:.3e}); the largest backward signal is here"
            )
        }
        Cause::Refused(e) => {
            (layer, phase) = (None, None);
            format!("the optimizer refused the step: {e}")
        }
        Cause::Clip(e) => format!("clipping: {e}"),
        _ => format!("{:?}", d.cause),
    };
    Divergence {
        step,
        epoch,
        layer,
        phase: phase.map(|p| p.name().to_string()),
        reason,
    }
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
pub fn epochs_frame(name: &str, r: &TrainResult) -> Result<Frame> {
    Frame::from_records(name, "", &r.epochs)
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
    notes.push(format!(
        "training state: {} bytes (network with gradients and caches, and the optimizer's state)",
        r.state_bytes
    ));
    if let Some(tt) = &r.through_time {
        let ratios: Vec<String> = tt
            .epochs
            .iter()
            .zip(&tt.profiles)
            .map(|(e, p)| format!("{:.2e} at epoch {e}", ThroughTime::ratio(p)))
            .collect();
        notes.push(format!(
            "‖∂L/∂h_1‖ / ‖∂L/∂h_T‖: {} (per step in the JSON, through_time)",
            ratios.join(", ")
        ));
    }
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
            optimizer_label(c),
            c.lr,
            c.weight_decay,
            c.batch,
            c.loss_scale,
            c.clip,
            c.seed
        ),
        frames: vec![epochs_frame("train", r)?],
        plots: vec![loss_plot],
        notes,
        json: serde_json::to_value(r)?,
    })
}

/// The optimizer as a label: `sgd` with its momentum, `adam`, `adamw`.
pub fn optimizer_label(c: &TrainConfig) -> String {
    match c.optimizer {
        OptimizerKind::Sgd if c.momentum > 0.0 => format!("sgd (momentum {})", c.momentum),
        k => k.to_string(),
    }
}

/// Run one workload in every precision, in parallel.
pub fn across_precisions(
    cfg: &TrainConfig,
    data: &Dataset,
    precisions: &[Precision],
) -> Result<Vec<TrainResult>> {
    let cfgs: Vec<TrainConfig> = precisions
        .iter()
        .map(|&p| TrainConfig {
            precision: p,
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
            r.config.precision.name().into(),
            get(|e| e.train_loss).into(),
            get(|e| e.test_loss).into(),
            get(|e| e.accuracy).into(),
            get(|e| e.underflow_rate).into(),
            get(|e| e.saturation_rate).into(),
            get(|e| e.zero_grad_fraction).into(),
            r.divergence.as_ref().map(|d| d.step).into(),
        ]);
        plot.line(
            r.config.precision.name(),
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
            c.task,
            c.epochs,
            optimizer_label(c),
            c.lr,
            c.batch,
            c.rounding,
            c.seed
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
