//! Deep convolutional networks on the 8×8 digits (one channel): vanishing gradients through convolutional
//! depth, and three cures, in every number format.
//!
//! Every network is `depth` 3×3 convolutions of [`CHANNELS`] channels with `same` padding (the first from
//! the image's one channel), then 2×2 max pooling, flattening and a linear layer to the 10 classes, trained
//! with softmax cross-entropy. The stacks:
//!
//! - `plain`: every convolution followed by the activation (sigmoid or tanh), Xavier-normal weights: the
//!   cause;
//! - `relu`: ReLU and He-normal weights (He et al. 2015);
//! - `residual`: the plain stack with an identity connection around each convolution after the first,
//!   `x + act(conv(x))` (He et al. 2016);
//! - `batchnorm`: `act(BN(conv(x)))`, batch statistics over [`BATCH`] images (Ioffe & Szegedy 2015);
//!   f32 and f64 only (the core's batch normalization needs a `Float`).
//!
//! The profile is one backward pass at initialization over the first [`BATCH`] training images: each
//! convolution's parameter-gradient norm, and the RMS per element of the signal it sends back, in the format
//! and in f64 from the same real-valued initial weights (rounded into each format). The underflow horizon is
//! the number of convolutions from the output until that RMS drops below one LSB (for floats the smallest
//! subnormal); "measured" applies the test to the format's own signal, "predicted" to the f64 signal. Training
//! runs the lab's loop (`train`'s, SGD with momentum 0.9, batches of 16, the same seed) on the per-sample
//! stacks; the batch-norm stack trains in f32 and f64 with the same optimizer over whole batches.

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use gradscope_core::train::backprop;
use gradscope_core::{
    Act, ActLayer, Activate, BatchNorm2d, Batched, Conv2d, Dense, Flatten, Float, GradStats, Init,
    Layer, LayerStats, Loss, MaxPool2d, NearestEven, Objective, Optimizer, Params, Residual,
    Scalar, Sgd, Stack,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

use crate::data::Dataset;
use crate::dump::{Dump, DumpLayer, Tensor as DumpTensor};
use crate::options::{Precision, Rounding, Task, parse_act};
use crate::output::{Frame, Outcome};
use crate::plot::Plot;
use crate::train::{self, TrainConfig, TrainResult};
use crate::with_scalar;

/// Channels of every convolution after the first.
pub const CHANNELS: usize = 4;
/// Deepest stack compiled in (convolutions).
pub const MAX_DEPTH: usize = 16;
/// Images in the profile's batch and in a batch-norm batch.
pub const BATCH: usize = 16;

const C: usize = CHANNELS;
const FLAT: usize = 16 * C;

/// A CHW image of `K` channels.
pub type Image<S, const K: usize> = [[[S; 8]; 8]; K];
type Body<S> = Conv2d<S, C, 8, 8, C, 3, 8, 8, 1, 1>;
type Stem<S> = Conv2d<S, 1, 8, 8, C, 3, 8, 8, 1, 1>;
type Head<S> = (
    MaxPool2d<S, C, 8, 8, 2, 4, 4>,
    (Flatten<[[[S; 4]; 4]; C], FLAT>, Dense<S, FLAT, 10>),
);

/// The stacks compared.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Sigmoid or tanh after every convolution, Xavier-normal weights.
    Plain,
    /// ReLU and He-normal weights.
    Relu,
    /// The plain stack with identity connections.
    Residual,
    /// The plain stack with batch normalization before each activation (f32 and f64 only).
    Batchnorm,
}

impl Arch {
    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Plain => "plain",
            Arch::Relu => "relu",
            Arch::Residual => "residual",
            Arch::Batchnorm => "batchnorm",
        }
    }
}

/// The experiment's settings.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct CnnConfig {
    /// Stacks to compare, comma-separated: plain, relu, residual, batchnorm.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "plain,relu,residual,batchnorm"
    )]
    pub archs: Vec<Arch>,
    /// Activation of the plain, residual and batch-norm stacks: sigmoid or tanh.
    #[arg(long, default_value = "sigmoid", value_parser = parse_act)]
    pub activation: Act,
    /// Convolutions, 2 to 16.
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// Formats, comma-separated (the profile's f64 reference is always computed).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "f32,i16f16,i1f15",
        ignore_case = true
    )]
    pub precisions: Vec<Precision>,
    /// Training epochs (0: the profile only).
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// Learning rate of SGD with momentum 0.9.
    #[arg(long, default_value_t = 0.02)]
    pub lr: f64,
    /// Seed of the data split, weights and shuffling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for CnnConfig {
    fn default() -> Self {
        CnnConfig {
            archs: vec![Arch::Plain, Arch::Relu, Arch::Residual, Arch::Batchnorm],
            activation: Act::Sigmoid,
            depth: 8,
            precisions: vec![Precision::F32, Precision::I16F16, Precision::I1F15],
            epochs: 4,
            lr: 0.02,
            seed: 1,
        }
    }
}

/// One convolution's profile at initialization.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvRow {
    /// 1 = the first convolution (from the input).
    pub layer: usize,
    /// ‖∂L/∂θ‖ of the convolution's weights and biases (with batch norm: and its γ, β).
    pub grad_norm: f64,
    /// The same in f64 from the same initial weights.
    pub grad_norm_f64: f64,
    /// RMS per element of the gradient the convolution sends to its input.
    pub backward_rms: f64,
    /// The same in f64.
    pub backward_rms_f64: f64,
    /// Share of the convolution's parameter gradients that are exactly zero.
    pub zero_fraction: f64,
}

/// One stack in one format.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CnnResult {
    /// The stack.
    pub arch: Arch,
    /// The format.
    pub precision: Precision,
    /// Per convolution, from the input; empty when the stack does not run in the format.
    pub layers: Vec<ConvRow>,
    /// Convolutions from the output until the format's back-propagated RMS < one LSB.
    pub measured_horizon: Option<usize>,
    /// The same test on the f64 signal.
    pub predicted_horizon: Option<usize>,
    /// Held-out accuracy after training (`None` without training or when the stack does not run).
    pub accuracy: Option<f64>,
    /// Held-out accuracy before training.
    pub initial_accuracy: Option<f64>,
    /// Where training diverged, if it did.
    pub divergence: Option<String>,
    /// Why the stack did not run in this format, if it did not.
    pub skipped: Option<String>,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// Check the settings.
pub fn validate(cfg: &CnnConfig) -> Result<()> {
    if !(2..=MAX_DEPTH).contains(&cfg.depth) {
        bail!(
            "--depth {} is not supported: choose 2 to {MAX_DEPTH}",
            cfg.depth
        );
    }
    if !matches!(cfg.activation, Act::Sigmoid | Act::Tanh) {
        bail!("--activation must be sigmoid or tanh (the relu stack brings its own)");
    }
    if cfg.archs.is_empty() || cfg.precisions.is_empty() {
        bail!("give at least one stack and one precision");
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        bail!("--lr must be a positive number");
    }
    if cfg.epochs > 1000 {
        bail!("--epochs must be at most 1000");
    }
    Ok(())
}

/// Run every stack in every format.
pub fn run(cfg: &CnnConfig, data: &Dataset) -> Result<Vec<CnnResult>> {
    validate(cfg)?;
    if data.task != Task::Digits {
        bail!("the CNN trains on the digits, not {}", data.task);
    }
    let cases: Vec<(Arch, Precision)> = cfg
        .archs
        .iter()
        .flat_map(|&a| cfg.precisions.iter().map(move |&p| (a, p)))
        .collect();
    crate::par::sweep("cnn", &cases, |&(arch, precision)| {
        one(cfg, data, arch, precision)
    })
}

fn skipped(arch: Arch, precision: Precision, why: &str) -> CnnResult {
    CnnResult {
        arch,
        precision,
        layers: Vec::new(),
        measured_horizon: None,
        predicted_horizon: None,
        accuracy: None,
        initial_accuracy: None,
        divergence: None,
        skipped: Some(why.into()),
    }
}

fn one(cfg: &CnnConfig, data: &Dataset, arch: Arch, precision: Precision) -> Result<CnnResult> {
    if arch == Arch::Batchnorm && !matches!(precision, Precision::F32 | Precision::F64) {
        return Ok(skipped(
            arch,
            precision,
            "batch normalization runs in f32 and f64 only",
        ));
    }
    let (layers, rms, rms64) = {
        let reference = profile::<f64>(cfg, data, arch)?;
        let own = match (arch, precision) {
            (Arch::Batchnorm, Precision::F32) => profile::<f32>(cfg, data, arch)?,
            (Arch::Batchnorm, _) => reference.clone(),
            _ => with_scalar!(precision, S => profile::<S>(cfg, data, arch))?,
        };
        let rows: Vec<ConvRow> = own
            .iter()
            .zip(&reference)
            .enumerate()
            .map(|(k, (a, b))| ConvRow {
                layer: k + 1,
                grad_norm: a.0,
                grad_norm_f64: b.0,
                backward_rms: a.1,
                backward_rms_f64: b.1,
                zero_fraction: a.2,
            })
            .collect();
        let rms: Vec<f64> = own.iter().map(|v| v.1).collect();
        let rms64: Vec<f64> = reference.iter().map(|v| v.1).collect();
        (rows, rms, rms64)
    };
    let lsb = with_scalar!(precision, S => S::SMALLEST);
    let horizon = |r: &[f64]| (1..=r.len()).find(|&k| r.get(r.len() - k).is_some_and(|&v| v < lsb));
    let trained = match (cfg.epochs, arch, precision) {
        (0, _, _) => None,
        (_, Arch::Batchnorm, Precision::F32) => Some(bn_train::<f32>(cfg, data)?),
        (_, Arch::Batchnorm, _) => Some(bn_train::<f64>(cfg, data)?),
        _ => Some(with_scalar!(precision, S => train_one::<S>(cfg, data, arch, precision))?),
    };
    Ok(CnnResult {
        arch,
        precision,
        measured_horizon: horizon(&rms),
        predicted_horizon: horizon(&rms64),
        layers,
        accuracy: trained.as_ref().map(|t| t.accuracy),
        initial_accuracy: trained.as_ref().map(|t| t.initial_accuracy),
        divergence: trained.and_then(|t| t.divergence),
        skipped: None,
    })
}

/// The activation and initializer of a stack.
fn act_init(cfg: &CnnConfig, arch: Arch) -> (Act, Init) {
    match arch {
        Arch::Relu => (
            Act::Relu,
            Init::KaimingNormal {
                slope: 0.0,
                mode: gradscope_core::FanMode::FanIn,
                nonlinearity: gradscope_core::Nonlinearity::Relu,
            },
        ),
        _ => (cfg.activation, Init::XavierNormal { gain: 1.0 }),
    }
}

fn conv<S: Scalar, const I: usize>(
    act: Act,
    init: &Init,
    rng: &mut Xoshiro128PlusPlus,
) -> Result<Conv2d<S, I, 8, 8, C, 3, 8, 8, 1, 1>> {
    let mut c = Conv2d::new(act);
    c.init(init, &Init::Zeros, rng, &mut NearestEven, &mut ())
        .map_err(err)?;
    Ok(c)
}

fn head<S: Scalar>(rng: &mut Xoshiro128PlusPlus) -> Result<Head<S>> {
    let mut d = Dense::new(Act::Identity);
    d.init(
        &Init::XavierNormal { gain: 1.0 },
        &Init::Zeros,
        rng,
        &mut NearestEven,
        &mut (),
    )
    .map_err(err)?;
    Ok((MaxPool2d::new(), (Flatten::new(), d)))
}

/// The per-sample stacks: `plain` and `relu` (no skips) or `residual`.
type PlainNet<S> = (Stem<S>, (Stack<Body<S>, MAX_DEPTH>, Head<S>));
type ResidualNet<S> = (Stem<S>, (Stack<Residual<Body<S>>, MAX_DEPTH>, Head<S>));

/// The batch-norm stack: each block `act(BN(conv(x)))` over a batch.
type BnBlock<S, const I: usize> = (
    (
        Batched<S, Conv2d<S, I, 8, 8, C, 3, 8, 8, 1, 1>, BATCH>,
        BatchNorm2d<S, C, 8, 8, BATCH>,
    ),
    Batched<S, ActLayer<Image<S, C>>, BATCH>,
);
type BnNet<S> = (
    BnBlock<S, 1>,
    (Stack<BnBlock<S, C>, MAX_DEPTH>, Batched<S, Head<S>, BATCH>),
);

fn plain_net<S: Scalar>(cfg: &CnnConfig, arch: Arch) -> Result<Box<PlainNet<S>>> {
    let (act, init) = act_init(cfg, arch);
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let stem = conv::<S, 1>(act, &init, &mut rng)?;
    let mut body = Vec::new();
    for _ in 1..cfg.depth {
        body.push(conv::<S, C>(act, &init, &mut rng)?);
    }
    let mut it = body.into_iter();
    let stack = Stack::from_fn(cfg.depth - 1, |_| {
        it.next().unwrap_or_else(|| Conv2d::new(act))
    });
    Ok(Box::new((stem, (stack, head(&mut rng)?))))
}

fn residual_net<S: Scalar>(cfg: &CnnConfig) -> Result<Box<ResidualNet<S>>> {
    let p = plain_net::<S>(cfg, Arch::Residual)?;
    let (stem, (stack, hd)) = *p;
    let mut it = stack.layers.into_iter();
    let stack = Stack::from_fn(cfg.depth - 1, |_| {
        Residual(it.next().unwrap_or_else(|| Conv2d::new(cfg.activation)))
    });
    Ok(Box::new((stem, (stack, hd))))
}

fn bn_net<S: Float>(cfg: &CnnConfig) -> Result<Box<BnNet<S>>>
where
    Act: Activate<S>,
{
    // The same convolutions' weights as the plain stack, without their activation (it follows the norm).
    let (stem, (stack, hd)) = *plain_net::<S>(cfg, Arch::Batchnorm)?;
    let block = |c: Body<S>| {
        let act = c.act;
        let mut c = c;
        c.act = Act::Identity;
        (
            (Batched::new(c), BatchNorm2d::new()),
            Batched::new(ActLayer::new(act)),
        )
    };
    let mut first = stem;
    let act = first.act;
    first.act = Act::Identity;
    let first = (
        (Batched::new(first), BatchNorm2d::new()),
        Batched::new(ActLayer::new(act)),
    );
    let mut it = stack.layers.into_iter();
    let stack = Stack::from_fn(cfg.depth - 1, |_| {
        block(it.next().unwrap_or_else(|| Conv2d::new(act)))
    });
    Ok(Box::new((first, (stack, Batched::new(hd)))))
}

/// An image from a sample's 64 pixel values, rounded into `S`.
fn image<S: Scalar>(x: &[f64]) -> Image<S, 1> {
    let mut img = [[[S::ZERO; 8]; 8]; 1];
    for (d, &v) in img.as_flattened_mut().as_flattened_mut().iter_mut().zip(x) {
        *d = S::from_f64(v, &mut NearestEven).0;
    }
    img
}

fn target<S: Scalar>(t: &[f64]) -> [S; 10] {
    core::array::from_fn(|k| S::from_f64(t.get(k).copied().unwrap_or(0.0), &mut NearestEven).0)
}

/// Samples as images and one-hot targets in `S`.
fn converted<S: Scalar>(set: &[(Vec<f64>, Vec<f64>)]) -> Vec<(Image<S, 1>, [S; 10])> {
    set.iter()
        .map(|(x, t)| (image::<S>(x), target::<S>(t)))
        .collect()
}

/// Per convolution: (parameter-gradient norm, backward RMS per element, exactly-zero gradient share).
type Profile = Vec<(f64, f64, f64)>;

/// Per convolution of a network whose convolution `k` has layer index `k · stride`: its statistics from one
/// backward pass.
fn conv_profile<S: Scalar>(
    net: &mut (impl Params<S> + ?Sized),
    stats: &[LayerStats],
    depth: usize,
    stride: usize,
) -> Profile {
    let mut sq = vec![0.0f64; depth];
    let (mut zeros, mut count) = (vec![0usize; depth], vec![0usize; depth]);
    net.visit(0, &mut |t| {
        let k = t.layer / stride;
        if k < depth {
            let g = GradStats::of::<S, _>(&mut [t][..]);
            sq[k] += g.norm * g.norm;
            zeros[k] += g.zeros as usize;
            count[k] += g.count as usize;
        }
    });
    (0..depth)
        .map(|k| {
            let st = stats.get(k * stride).copied().unwrap_or_default();
            let elems = if k == 0 { 64 } else { 64 * C } as f64;
            let rms = (st.backward_sq / (st.backward_passes.max(1) as f64 * elems)).sqrt();
            (sq[k].sqrt(), rms, zeros[k] as f64 / count[k].max(1) as f64)
        })
        .collect()
}

fn profile<S: Scalar>(cfg: &CnnConfig, data: &Dataset, arch: Arch) -> Result<Profile>
where
    Act: Activate<S>,
{
    let samples = converted::<S>(&data.train[..BATCH.min(data.train.len())]);
    let ce = Objective::new(Loss::SoftmaxCrossEntropy);
    let mut stats = vec![LayerStats::default(); 3 * MAX_DEPTH + 4];
    match arch {
        Arch::Plain | Arch::Relu => {
            let mut net = plain_net::<S>(cfg, arch)?;
            backprop(
                &mut *net,
                &samples[..],
                &ce,
                1.0,
                &mut NearestEven,
                &mut stats[..],
            );
            Ok(conv_profile(&mut *net, &stats, cfg.depth, 1))
        }
        Arch::Residual => {
            let mut net = residual_net::<S>(cfg)?;
            backprop(
                &mut *net,
                &samples[..],
                &ce,
                1.0,
                &mut NearestEven,
                &mut stats[..],
            );
            Ok(conv_profile(&mut *net, &stats, cfg.depth, 1))
        }
        Arch::Batchnorm => match S::NAME {
            "f32" => bn_profile::<f32>(cfg, data, &mut stats),
            _ => bn_profile::<f64>(cfg, data, &mut stats),
        },
    }
}

fn bn_batch<S: Scalar>(
    samples: &[(Image<S, 1>, [S; 10])],
) -> ([Image<S, 1>; BATCH], [[S; 10]; BATCH]) {
    let mut x = [[[[S::ZERO; 8]; 8]; 1]; BATCH];
    let mut t = [[S::ZERO; 10]; BATCH];
    for ((xd, td), (xs, ts)) in x.iter_mut().zip(t.iter_mut()).zip(samples) {
        *xd = *xs;
        *td = *ts;
    }
    (x, t)
}

/// One forward and backward pass of the batch-norm stack over a whole batch: the batch-mean cross-entropy.
fn bn_pass<S: Float>(
    net: &mut BnNet<S>,
    x: &[Image<S, 1>; BATCH],
    t: &[[S; 10]; BATCH],
    stats: &mut [LayerStats],
) -> f64
where
    Act: Activate<S>,
{
    let ce = Objective::new(Loss::SoftmaxCrossEntropy);
    let y = net.forward(x, 0, &mut NearestEven, stats);
    let mut dy = [[S::ZERO; 10]; BATCH];
    let mut loss = 0.0;
    for ((yi, ti), di) in y.iter().zip(t).zip(dy.iter_mut()) {
        loss += ce.grad(yi, ti, 1.0 / BATCH as f64, di, &mut NearestEven, &mut ());
    }
    net.backward(&dy, 0, &mut NearestEven, stats);
    loss / BATCH as f64
}

fn bn_profile<S: Float>(
    cfg: &CnnConfig,
    data: &Dataset,
    stats: &mut [LayerStats],
) -> Result<Profile>
where
    Act: Activate<S>,
{
    let mut net = bn_net::<S>(cfg)?;
    let samples = converted::<S>(&data.train[..BATCH.min(data.train.len())]);
    let (x, t) = bn_batch(&samples);
    bn_pass(&mut net, &x, &t, stats);
    Ok(conv_profile(&mut *net, stats, cfg.depth, 3))
}

/// The digits task's training configuration for a CNN run.
fn train_config(cfg: &CnnConfig, precision: Precision) -> TrainConfig {
    TrainConfig {
        precision,
        rounding: Rounding::Nearest,
        lr: cfg.lr,
        epochs: cfg.epochs,
        seed: cfg.seed,
        ..TrainConfig::for_task(Task::Digits)
    }
}

/// What training left: held-out accuracy before and after, and where it diverged.
struct Trained {
    initial_accuracy: f64,
    accuracy: f64,
    divergence: Option<String>,
}

impl From<TrainResult> for Trained {
    fn from(r: TrainResult) -> Trained {
        Trained {
            initial_accuracy: r.initial_accuracy,
            accuracy: r.last().map_or(r.initial_accuracy, |e| e.accuracy),
            divergence: r.divergence.as_ref().map(train::describe),
        }
    }
}

fn train_one<S: Scalar>(
    cfg: &CnnConfig,
    data: &Dataset,
    arch: Arch,
    precision: Precision,
) -> Result<Trained>
where
    Act: Activate<S>,
{
    let tc = train_config(cfg, precision);
    let r = match arch {
        Arch::Residual => {
            let mut net = residual_net::<S>(cfg)?;
            train::train_net(&tc, data, &mut *net, image::<S>)
        }
        _ => {
            let mut net = plain_net::<S>(cfg, arch)?;
            train::train_net(&tc, data, &mut *net, image::<S>)
        }
    }?;
    Ok(r.into())
}

/// The batch-norm stack trained over whole batches of [`BATCH`] (the last partial batch of an epoch is
/// dropped), SGD with the digits task's momentum; held-out accuracy in evaluation mode (running statistics).
fn bn_train<S: Float>(cfg: &CnnConfig, data: &Dataset) -> Result<Trained>
where
    Act: Activate<S>,
{
    let tc = train_config(cfg, Precision::F32);
    let mut net = bn_net::<S>(cfg)?;
    let n = gradscope_core::param_count::<S, _>(&mut *net);
    let mut sgd = Sgd::with_momentum(tc.lr, tc.momentum, 0.0, vec![S::ZERO; n]).map_err(err)?;
    let convert = |set: &[(Vec<f64>, Vec<f64>)]| -> Vec<(Image<S, 1>, [S; 10])> {
        set.iter()
            .map(|(x, t)| (image::<S>(x), target::<S>(t)))
            .collect()
    };
    let (train_set, test_set) = (convert(&data.train), convert(&data.test));
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(tc.seed);
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let initial_accuracy = bn_accuracy(&mut net, &test_set);
    let mut divergence = None;
    'epochs: for epoch in 1..=tc.epochs {
        crate::data::shuffle(&mut order, &mut rng);
        for chunk in order.chunks_exact(BATCH) {
            let picked: Vec<_> = chunk.iter().map(|&k| train_set[k]).collect();
            let (x, t) = bn_batch(&picked);
            net.zero_grad();
            let loss = bn_pass(&mut net, &x, &t, &mut []);
            if !loss.is_finite() {
                divergence = Some(format!("the loss became non-finite in epoch {epoch}"));
                break 'epochs;
            }
            sgd.step(&mut *net, 1.0, &mut NearestEven, &mut ())
                .map_err(err)?;
        }
    }
    Ok(Trained {
        initial_accuracy,
        accuracy: bn_accuracy(&mut net, &test_set),
        divergence,
    })
}

fn set_training<S: Float>(net: &mut BnNet<S>, training: bool)
where
    Act: Activate<S>,
{
    net.0.0.1.training = training;
    for b in net.1.0.active_mut() {
        b.0.1.training = training;
    }
}

/// Held-out accuracy of the batch-norm stack in evaluation mode (running statistics), batch by batch (a
/// last partial batch is padded with copies of its first image, whose outputs are not counted).
fn bn_accuracy<S: Float>(net: &mut BnNet<S>, test: &[(Image<S, 1>, [S; 10])]) -> f64
where
    Act: Activate<S>,
{
    set_training(net, false);
    let mut correct = 0usize;
    for chunk in test.chunks(BATCH) {
        let (x, _) = bn_batch(chunk);
        let y = net.forward(&x, 0, &mut NearestEven, &mut ());
        for (yi, (_, ti)) in y.iter().zip(chunk) {
            let argmax = |v: &[S; 10]| {
                (0..10).fold(0, |b, k| if v[k].to_f64() > v[b].to_f64() { k } else { b })
            };
            correct += (argmax(yi) == argmax(ti)) as usize;
        }
    }
    set_training(net, true);
    correct as f64 / test.len().max(1) as f64
}

/// The profile pass of the first stack in the first format (see [`CnnConfig`]) as a `gradscope-dump/1`:
/// the [`BATCH`] images (`[1, 8, 8]` each), their one-hot targets, the batch-mean cross-entropy, and per
/// layer its parameters and gradients: `conv2d` (weight `[out, in, 3, 3]`, PyTorch's order; `stride` 1,
/// `padding` 1, `residual` true when an identity connection adds the input), `maxpool2d` (`kernel` 2),
/// `flatten`, then the `dense` head. Batch normalization is not part of the schema.
pub fn dump(cfg: &CnnConfig, data: &Dataset) -> Result<Dump> {
    validate(cfg)?;
    let (Some(&arch), Some(&precision)) = (cfg.archs.first(), cfg.precisions.first()) else {
        bail!("give at least one stack and one precision");
    };
    if arch == Arch::Batchnorm {
        bail!(
            "--dump covers the plain, relu and residual stacks: list one of them first in --archs"
        );
    }
    with_scalar!(precision, S => dump_typed::<S>(cfg, data, arch, precision))
}

fn conv_layer<S: Scalar, const I: usize>(
    c: &mut Conv2d<S, I, 8, 8, C, 3, 8, 8, 1, 1>,
    residual: bool,
) -> DumpLayer {
    let act = c.act.name();
    let mut l = DumpLayer::from_params(
        "conv2d",
        vec![
            ("activation", act.to_string()),
            ("stride", "1".into()),
            ("padding", "1".into()),
            ("residual", residual.to_string()),
        ],
        c,
    );
    for t in &mut l.tensors {
        if t.name.ends_with("weight") {
            t.shape = vec![C, I, 3, 3];
        }
    }
    l
}

fn head_layers<S: Scalar>(h: &mut Head<S>, layers: &mut Vec<DumpLayer>) {
    layers.push(DumpLayer {
        kind: "maxpool2d",
        attributes: vec![("kernel", "2".into())],
        tensors: Vec::new(),
    });
    layers.push(DumpLayer {
        kind: "flatten",
        attributes: Vec::new(),
        tensors: Vec::new(),
    });
    let d = &mut h.1.1;
    let act = d.act.name();
    layers.push(DumpLayer::from_params(
        "dense",
        vec![("activation", act.to_string())],
        d,
    ));
}

fn dump_typed<S: Scalar>(
    cfg: &CnnConfig,
    data: &Dataset,
    arch: Arch,
    precision: Precision,
) -> Result<Dump>
where
    Act: Activate<S>,
{
    let samples = converted::<S>(&data.train[..BATCH.min(data.train.len())]);
    let ce = Objective::new(Loss::SoftmaxCrossEntropy);
    let mut layers = Vec::new();
    let report = if arch == Arch::Residual {
        let mut net = residual_net::<S>(cfg)?;
        let rep = backprop(&mut *net, &samples[..], &ce, 1.0, &mut NearestEven, &mut ());
        layers.push(conv_layer(&mut net.0, false));
        for l in net.1.0.active_mut() {
            layers.push(conv_layer(&mut l.0, true));
        }
        head_layers(&mut net.1.1, &mut layers);
        rep
    } else {
        let mut net = plain_net::<S>(cfg, arch)?;
        let rep = backprop(&mut *net, &samples[..], &ce, 1.0, &mut NearestEven, &mut ());
        layers.push(conv_layer(&mut net.0, false));
        for l in net.1.0.active_mut() {
            layers.push(conv_layer(l, false));
        }
        head_layers(&mut net.1.1, &mut layers);
        rep
    };
    let real = |v: &[S]| -> Vec<f64> { v.iter().map(|x| x.to_f64()).collect() };
    Ok(Dump {
        precision: precision.to_string(),
        rounding: Rounding::Nearest.to_string(),
        loss: Loss::SoftmaxCrossEntropy.name().into(),
        loss_value: report.loss,
        loss_scale: None,
        input: samples
            .iter()
            .map(|(x, _)| {
                DumpTensor::shaped(
                    "input",
                    vec![1, 8, 8],
                    real(x.as_flattened().as_flattened()),
                )
            })
            .collect(),
        target: samples
            .iter()
            .map(|(_, t)| DumpTensor::vector("target", t))
            .collect(),
        layers,
    })
}

/// The results as tables (a summary per stack and format, then every convolution's profile), a plot of the
/// gradient norm per convolution, and notes on the horizons and accuracies.
pub fn outcome(cfg: &CnnConfig, runs: &[CnnResult]) -> Result<Outcome> {
    let mut summary = Frame::new(
        "cnn",
        "",
        &[
            "arch",
            "precision",
            "first_over_last_grad_norm",
            "measured_horizon",
            "predicted_horizon",
            "initial_accuracy",
            "accuracy",
            "skipped",
        ],
    );
    let mut layers = Frame::new(
        "cnn_layers",
        "Per convolution at initialization",
        &[
            "arch",
            "precision",
            "layer",
            "grad_norm",
            "grad_norm_f64",
            "backward_rms",
            "backward_rms_f64",
            "zero_fraction",
        ],
    );
    let mut plot = Plot::new(
        "cnn_layers",
        &format!(
            "{} convolutions on the digits: gradient norm per convolution at initialization",
            cfg.depth
        ),
        "convolution (from the input)",
        "‖∂L/∂θ‖",
        true,
    );
    let mut notes = Vec::new();
    for r in runs {
        let ratio = match (r.layers.first(), r.layers.last()) {
            (Some(a), Some(b)) if b.grad_norm > 0.0 => Some(a.grad_norm / b.grad_norm),
            _ => None,
        };
        summary.push(vec![
            r.arch.name().into(),
            r.precision.name().into(),
            ratio.into(),
            r.measured_horizon.into(),
            r.predicted_horizon.into(),
            r.initial_accuracy.into(),
            r.accuracy.into(),
            r.skipped.clone().unwrap_or_default().into(),
        ]);
        for l in &r.layers {
            layers.push(vec![
                r.arch.name().into(),
                r.precision.name().into(),
                l.layer.into(),
                l.grad_norm.into(),
                l.grad_norm_f64.into(),
                l.backward_rms.into(),
                l.backward_rms_f64.into(),
                l.zero_fraction.into(),
            ]);
        }
        if !r.layers.is_empty() {
            plot.line(
                format!("{} {}", r.arch.name(), r.precision.name()),
                r.layers
                    .iter()
                    .map(|l| (l.layer as f64, l.grad_norm))
                    .collect(),
            );
        }
        if let Some(d) = &r.divergence {
            notes.push(format!("{} {}: {d}", r.arch.name(), r.precision.name()));
        }
    }
    Ok(Outcome {
        name: "cnn".into(),
        heading: format!(
            "{} 3x3 convolutions of {CHANNELS} channels ({} for plain, residual and batchnorm; relu with He init), \
             max pool, linear head, digits; {} epochs of SGD lr {}, seed {}",
            cfg.depth, cfg.activation, cfg.epochs, cfg.lr, cfg.seed
        ),
        frames: vec![summary, layers],
        plots: vec![plot],
        notes,
        json: serde_json::to_value(runs)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile_only(archs: Vec<Arch>, precisions: Vec<Precision>) -> Vec<CnnResult> {
        let cfg = CnnConfig {
            archs,
            precisions,
            epochs: 0,
            ..CnnConfig::default()
        };
        let data = crate::data::load(Task::Digits, cfg.seed, None).unwrap();
        run(&cfg, &data).unwrap()
    }

    #[test]
    fn a_plain_sigmoid_stack_vanishes_and_the_cures_keep_the_first_layers_gradient() {
        let runs = profile_only(
            vec![Arch::Plain, Arch::Relu, Arch::Residual, Arch::Batchnorm],
            vec![Precision::F32, Precision::I16F16],
        );
        let ratio = |r: &CnnResult| r.layers[0].grad_norm / r.layers[7].grad_norm;
        for r in &runs {
            match (r.arch, r.precision) {
                (Arch::Plain, Precision::F32) => assert!(ratio(r) < 1e-4, "{}", ratio(r)),
                (Arch::Plain, _) => {
                    // The first convolutions' gradients underflow to exactly zero, where f64 predicts.
                    assert_eq!(r.layers[0].zero_fraction, 1.0);
                    assert!(r.measured_horizon.is_some());
                    assert_eq!(r.measured_horizon, r.predicted_horizon);
                }
                (_, p) if r.skipped.is_some() => {
                    assert_eq!((r.arch, p), (Arch::Batchnorm, Precision::I16F16))
                }
                _ => assert!(ratio(r) > 0.1, "{:?} {}: {}", r.arch, r.precision, ratio(r)),
            }
        }
        assert_eq!(runs.iter().filter(|r| r.skipped.is_none()).count(), 7);
    }

    #[test]
    fn bad_settings_are_refused() {
        let data = crate::data::load(Task::Digits, 1, None).unwrap();
        for (cfg, msg) in [
            (
                CnnConfig {
                    depth: 1,
                    ..CnnConfig::default()
                },
                "--depth 1",
            ),
            (
                CnnConfig {
                    depth: 17,
                    ..CnnConfig::default()
                },
                "--depth 17",
            ),
            (
                CnnConfig {
                    activation: Act::Relu,
                    ..CnnConfig::default()
                },
                "sigmoid or tanh",
            ),
            (
                CnnConfig {
                    lr: f64::NAN,
                    ..CnnConfig::default()
                },
                "--lr",
            ),
            (
                CnnConfig {
                    archs: vec![],
                    ..CnnConfig::default()
                },
                "at least one",
            ),
        ] {
            let e = run(&cfg, &data).unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
    }
}
