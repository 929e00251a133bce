//! Vanishing and exploding gradients through depth: per-layer gradient norms of a deep dense stack, in any
//! precision, with the underflow horizon measured and predicted.
//!
//! The network is `depth` dense layers of width `width` (a [`DenseStack`] with capacity [`MAX_DEPTH`]), zero
//! biases, weights from the chosen initializer. A batch of inputs U(−0.9, 0.9) goes forward, the MSE loss
//! against targets U(0, 0.9) averaged over the batch goes backward, and every layer's statistics are
//! collected: the norm of its weight gradient, the RMS of the signal it sends back, the RMS of its output, the
//! share of exactly-zero gradients, and the counts of underflowed, saturated and non-finite values.

use anyhow::{Result, bail};
use gradscope_core::horizon::DepthModel;
use gradscope_core::{
    Act, Activate, AnyRounding, DenseStack, GradStats, I1F15, I8F24, I16F16, Init, Layer,
    LayerStats, Loss, NearestEven, Scalar, init_slice, loss_grad,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

/// Deepest stack the lab compiles in.
pub const MAX_DEPTH: usize = 64;
/// Widths the lab compiles in (sizes are types in the core).
pub const WIDTHS: [usize; 4] = [8, 16, 32, 64];
/// Precisions, by name.
pub const PRECISIONS: [&str; 5] = ["f32", "f64", "i16f16", "i8f24", "i1f15"];
const INPUT_BOUND: f64 = 0.9;

/// One depth experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthConfig {
    /// Activation of every layer.
    pub act: Act,
    /// Initializer name (one of `Init::NAMES`).
    pub init: String,
    /// Layers, 1..=64.
    pub depth: usize,
    /// Width, one of [`WIDTHS`].
    pub width: usize,
    /// One of [`PRECISIONS`].
    pub precision: String,
    /// `floor`, `nearest` or `stochastic`.
    pub rounding: String,
    /// Seed of weights, data and stochastic rounding.
    pub seed: u64,
    /// Samples in the batch.
    pub batch: usize,
}

/// One layer's measurements (layer 1 is next to the input).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DepthRow {
    /// Layer number, 1-based from the input.
    pub layer: usize,
    /// ‖∂L/∂W‖₂ of the layer (weights and biases).
    pub grad_norm: f64,
    /// RMS of the signal the layer sends back (∂L/∂input), per element.
    pub backward_rms: f64,
    /// RMS of the layer's output, per element.
    pub forward_rms: f64,
    /// Share of the layer's gradient values that are exactly zero.
    pub zero_fraction: f64,
    /// Backward and gradient values that underflowed to zero.
    pub underflow: u32,
    /// Values that saturated (forward and backward).
    pub saturated: u32,
    /// Non-finite values (forward and backward).
    pub nonfinite: u32,
}

/// The result of a depth experiment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DepthResult {
    /// Activation name.
    pub activation: String,
    /// Initializer name.
    pub init: String,
    /// Precision name.
    pub precision: String,
    /// Rounding name.
    pub rounding: String,
    /// Layers.
    pub depth: usize,
    /// Width.
    pub width: usize,
    /// Batch size.
    pub batch: usize,
    /// Seed.
    pub seed: u64,
    /// Mean loss over the batch.
    pub loss: f64,
    /// Per layer, from the input.
    pub layers: Vec<DepthRow>,
    /// First layer counted from the output whose back-propagated RMS is below the format's resolution.
    pub measured_horizon: Option<usize>,
    /// The mean-field model's horizon (only for zero-mean i.i.d. initializers it describes).
    pub predicted_horizon: Option<usize>,
}

/// Weight variance of an initializer on a square layer of width `n`, where the horizon model applies.
fn weight_variance(init: &Init, n: usize) -> Option<f64> {
    let n = n as f64;
    let g = gradscope_core::calculate_gain;
    Some(match *init {
        Init::XavierUniform { gain } | Init::XavierNormal { gain } | Init::Orthogonal { gain } => {
            gain * gain / n
        }
        Init::KaimingUniform {
            slope,
            nonlinearity,
            ..
        }
        | Init::KaimingNormal {
            slope,
            nonlinearity,
            ..
        } => {
            let nl = match nonlinearity {
                gradscope_core::Nonlinearity::LeakyRelu(_) => {
                    gradscope_core::Nonlinearity::LeakyRelu(slope)
                }
                other => other,
            };
            g(nl).powi(2) / n
        }
        Init::LecunUniform | Init::LecunNormal => 1.0 / n,
        Init::Standard => 1.0 / (3.0 * n),
        Init::Normal { mean: 0.0, std } => std * std,
        _ => return None,
    })
}

/// Check a configuration before running it: every error names what is accepted.
pub fn validate(cfg: &DepthConfig) -> Result<Init> {
    if !(1..=MAX_DEPTH).contains(&cfg.depth) {
        bail!(
            "depth {} is not supported: choose 1 to {MAX_DEPTH}",
            cfg.depth
        );
    }
    if !WIDTHS.contains(&cfg.width) {
        bail!(
            "width {} is not supported: choose one of {:?}",
            cfg.width,
            WIDTHS
        );
    }
    if !PRECISIONS.contains(&cfg.precision.as_str()) {
        bail!(
            "unknown precision '{}': choose one of {}",
            cfg.precision,
            PRECISIONS.join(", ")
        );
    }
    if !["floor", "nearest", "stochastic"].contains(&cfg.rounding.as_str()) {
        bail!(
            "unknown rounding '{}': choose floor, nearest or stochastic",
            cfg.rounding
        );
    }
    if cfg.batch == 0 || cfg.batch > 4096 {
        bail!("batch {} is not supported: choose 1 to 4096", cfg.batch);
    }
    Init::from_name(&cfg.init).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Run the experiment (on a thread with room for the largest stack).
pub fn run(cfg: &DepthConfig) -> Result<DepthResult> {
    let init = validate(cfg)?;
    let cfg2 = cfg.clone();
    let handle = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || dispatch(&cfg2, &init))?;
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("the depth experiment thread failed"))?
}

fn dispatch(cfg: &DepthConfig, init: &Init) -> Result<DepthResult> {
    macro_rules! widths {
        ($s:ty) => {
            match cfg.width {
                8 => run_typed::<$s, 8>(cfg, init),
                16 => run_typed::<$s, 16>(cfg, init),
                32 => run_typed::<$s, 32>(cfg, init),
                64 => run_typed::<$s, 64>(cfg, init),
                w => bail!("width {w} is not supported: choose one of {:?}", WIDTHS),
            }
        };
    }
    match cfg.precision.as_str() {
        "f32" => widths!(f32),
        "f64" => widths!(f64),
        "i16f16" => widths!(I16F16),
        "i8f24" => widths!(I8F24),
        "i1f15" => widths!(I1F15),
        p => bail!(
            "unknown precision '{p}': choose one of {}",
            PRECISIONS.join(", ")
        ),
    }
}

fn rounding(name: &str, seed: u64) -> AnyRounding<Xoshiro128PlusPlus> {
    match name {
        "floor" => AnyRounding::Floor,
        "stochastic" => AnyRounding::Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed ^ 0x5eed)),
        _ => AnyRounding::NearestEven,
    }
}

fn run_typed<S: Scalar, const W: usize>(cfg: &DepthConfig, init: &Init) -> Result<DepthResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut r = rounding(&cfg.rounding, cfg.seed);
    let mut net: Box<DenseStack<S, W, MAX_DEPTH>> = Box::new(DenseStack::new(cfg.act, cfg.depth));
    net.init(init, &Init::Zeros, &mut rng, &mut r, &mut ())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut stats = vec![LayerStats::default(); cfg.depth];
    let (mut loss, mut in_sq) = (0.0, 0.0);
    let mut g0_sq = 0.0;
    for _ in 0..cfg.batch {
        let mut x = [S::ZERO; W];
        let u = Init::Uniform {
            a: -INPUT_BOUND,
            b: INPUT_BOUND,
        };
        init_slice(&mut x, &u, 1, 1, &mut rng, &mut NearestEven, &mut ())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        in_sq += x.iter().map(|v| v.to_f64().powi(2)).sum::<f64>();
        let mut t = [S::ZERO; W];
        let ut = Init::Uniform {
            a: 0.0,
            b: INPUT_BOUND,
        };
        init_slice(&mut t, &ut, 1, 1, &mut rng, &mut NearestEven, &mut ())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let y = net.forward(&x, 0, &mut r, stats.as_mut_slice());
        let mut dy = [S::ZERO; W];
        loss +=
            loss_grad(Loss::Mse, &y, &t, cfg.batch, &mut dy, &mut r, &mut ()) / cfg.batch as f64;
        g0_sq += dy.iter().map(|v| v.to_f64().powi(2)).sum::<f64>();
        net.backward(&dy, 0, &mut r, stats.as_mut_slice());
    }
    let per_elem = |sq: f64, passes: u32| {
        if passes == 0 {
            0.0
        } else {
            (sq / (passes as f64 * W as f64)).sqrt()
        }
    };
    let mut layers = Vec::with_capacity(cfg.depth);
    for (k, (l, st)) in net.active_mut().iter_mut().zip(&stats).enumerate() {
        let g = GradStats::of(l);
        layers.push(DepthRow {
            layer: k + 1,
            grad_norm: g.norm,
            backward_rms: per_elem(st.backward_sq, st.backward_passes),
            forward_rms: per_elem(st.forward_sq, st.forward_passes),
            zero_fraction: g.zero_fraction(),
            underflow: st.backward.underflow.saturating_add(st.grad.underflow),
            saturated: st
                .forward
                .overflow
                .saturating_add(st.backward.overflow)
                .saturating_add(st.grad.overflow),
            nonfinite: st
                .forward
                .nonfinite
                .saturating_add(st.backward.nonfinite)
                .saturating_add(st.grad.nonfinite),
        });
    }
    let resolution = if S::IS_FLOAT { 0.0 } else { S::RESOLUTION };
    let measured_horizon = if S::IS_FLOAT {
        None
    } else {
        (1..=cfg.depth).find(|&k| {
            layers
                .get(cfg.depth - k)
                .is_some_and(|row| row.backward_rms < resolution)
        })
    };
    // The output gradient's RMS per element, per sample (the loss gradient carries 1/batch; the model wants
    // one sample's signal, as each backward pass sees it).
    let g0 = (g0_sq / (cfg.batch as f64 * W as f64)).sqrt();
    let predicted_horizon = if S::IS_FLOAT {
        None
    } else {
        weight_variance(init, W).and_then(|weight_var| {
            let model = DepthModel {
                act: cfg.act,
                width: W,
                weight_var,
                input_second_moment: in_sq / (cfg.batch as f64 * W as f64),
            };
            model.horizon(cfg.depth, g0, resolution)
        })
    };
    Ok(DepthResult {
        activation: cfg.act.to_string(),
        init: cfg.init.clone(),
        precision: cfg.precision.clone(),
        rounding: cfg.rounding.clone(),
        depth: cfg.depth,
        width: W,
        batch: cfg.batch,
        seed: cfg.seed,
        loss,
        layers,
        measured_horizon,
        predicted_horizon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(act: Act, init: &str, precision: &str) -> DepthConfig {
        DepthConfig {
            act,
            init: init.into(),
            depth: 16,
            width: 16,
            precision: precision.into(),
            rounding: "nearest".into(),
            seed: 1,
            batch: 4,
        }
    }

    #[test]
    fn sigmoid_vanishes_and_the_horizon_is_measured_and_predicted() {
        let r = run(&cfg(Act::Sigmoid, "xavier_normal", "i16f16")).unwrap();
        assert_eq!(r.layers.len(), 16);
        assert!(r.layers[0].grad_norm < r.layers[15].grad_norm * 1e-3);
        let (Some(m), Some(p)) = (r.measured_horizon, r.predicted_horizon) else {
            panic!("{r:?}")
        };
        assert!(m.abs_diff(p) <= 2, "measured {m}, predicted {p}");
        assert_eq!(r.layers[0].zero_fraction, 1.0);
        let f = run(&cfg(Act::Sigmoid, "xavier_normal", "f64")).unwrap();
        assert!(f.layers[0].zero_fraction < 1.0 && f.measured_horizon.is_none());
    }

    #[test]
    fn bad_configurations_are_errors_that_list_the_choices() {
        let mut c = cfg(Act::Relu, "kaiming_normal", "f32");
        c.width = 12;
        assert!(run(&c).unwrap_err().to_string().contains("[8, 16, 32, 64]"));
        c.width = 16;
        c.depth = 0;
        assert!(run(&c).unwrap_err().to_string().contains("1 to 64"));
        c.depth = 8;
        c.init = "he".into();
        assert!(run(&c).unwrap_err().to_string().contains("xavier_uniform"));
        c.init = "zeros".into();
        c.precision = "bf16".into();
        assert!(run(&c).unwrap_err().to_string().contains("i1f15"));
    }
}
