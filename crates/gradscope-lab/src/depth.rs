//! Vanishing and exploding gradients through depth: per-layer gradient norms of a deep dense stack, in any
//! precision, with the underflow horizon measured and predicted.
//!
//! The network is `depth` dense layers of width `width` (a [`DenseStack`] with capacity [`MAX_DEPTH`]), zero
//! biases, weights from the chosen initializer. A batch of inputs U(−0.9, 0.9) goes forward, the loss (MSE
//! by default) against targets U(0, 0.9) (one-hot classes for the softmax losses) averaged over the batch goes
//! backward, and every layer's statistics are
//! collected: the norm of its weight gradient, the RMS of the signal it sends back, the RMS of its output, the
//! share of exactly-zero gradients, and the counts of underflowed, saturated and non-finite values.

use anyhow::Result;
use gradscope_core::horizon::DepthModel;
use gradscope_core::train::backprop;
use gradscope_core::{
    Act, Activate, DenseStack, GradStats, Init, LayerStats, Loss, NearestEven, Objective, Scalar,
    init_slice,
};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

use crate::dump::{Dump, DumpLayer, Tensor};
use crate::options::{
    InitName, Precision, Rounding, in_range, number, one_of, parse_act, parse_loss,
};
use crate::output::{Frame, Outcome};
use crate::plot::Plot;
use crate::with_scalar;

/// Deepest stack the lab compiles in.
pub const MAX_DEPTH: usize = 64;
/// Widths the lab compiles in (sizes are types in the core).
pub const WIDTHS: [usize; 4] = [8, 16, 32, 64];
const INPUT_BOUND: f64 = 0.9;

/// One depth experiment (the `depth` subcommand's options).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct DepthConfig {
    /// Activation of every layer: identity, sigmoid, tanh, relu, leaky_relu, elu, selu, softplus, gelu,
    /// gelu_tanh, silu, softsign, hardsigmoid, hardtanh. leaky_relu, elu and softplus take a parameter as
    /// name:value, e.g. leaky_relu:0.2.
    #[arg(long = "activation", default_value = "sigmoid", value_parser = parse_act)]
    pub act: Act,
    /// Weight initializer (biases are zero); Keras's names are accepted as aliases.
    #[arg(long, value_enum, default_value_t = InitName::XavierNormal, ignore_case = true)]
    pub init: InitName,
    /// Number of layers, 1 to 64.
    #[arg(long, default_value_t = 32)]
    pub depth: usize,
    /// Width of every layer: 8, 16, 32 or 64.
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// Number format.
    #[arg(long, value_enum, default_value_t = Precision::I16F16, ignore_case = true)]
    pub precision: Precision,
    /// Rounding of fixed-point results.
    #[arg(long, value_enum, default_value_t = Rounding::Nearest)]
    pub rounding: Rounding,
    /// Seed of weights, data and stochastic rounding.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Samples in the batch, 1 to 4096.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Static loss scale applied to the output gradient (gradients are reported scaled; 1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub loss_scale: f64,
    /// The loss: mse, bce (on the outputs as logits), ce (softmax cross-entropy, one-hot targets) or
    /// softmax_mse.
    #[arg(long, default_value = "mse", value_parser = parse_loss)]
    pub loss: Loss,
    /// Activation of the last layer (default: --activation), e.g. identity to give bce or ce logits.
    #[arg(long, value_parser = parse_act)]
    pub output_activation: Option<Act>,
}

impl DepthConfig {
    /// A configuration with nearest rounding, seed 1, batch 16 and no loss scaling.
    pub fn new(
        act: Act,
        init: InitName,
        depth: usize,
        width: usize,
        precision: Precision,
    ) -> DepthConfig {
        DepthConfig {
            act,
            init,
            depth,
            width,
            precision,
            rounding: Rounding::Nearest,
            seed: 1,
            batch: 16,
            loss_scale: 1.0,
            loss: Loss::Mse,
            output_activation: None,
        }
    }
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
    /// Units (rows of the weight gradient) whose gradients differ: 1 when every unit gets the same
    /// gradient, the symmetry that constant initialization never breaks.
    pub distinct_units: usize,
}

/// The result of a depth experiment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DepthResult {
    /// Activation name.
    pub activation: String,
    /// Initializer.
    pub init: InitName,
    /// Precision.
    pub precision: Precision,
    /// Rounding.
    pub rounding: Rounding,
    /// Layers.
    pub depth: usize,
    /// Width.
    pub width: usize,
    /// Batch size.
    pub batch: usize,
    /// Seed.
    pub seed: u64,
    /// Static loss scale (gradients are reported as computed, that is, scaled).
    pub loss_scale: f64,
    /// The loss function.
    pub loss_function: Loss,
    /// The last layer's activation.
    pub output_activation: String,
    /// Mean loss over the batch.
    pub loss: f64,
    /// Per layer, from the input.
    pub layers: Vec<DepthRow>,
    /// First layer counted from the output whose back-propagated RMS is below one LSB ([`gradscope_core::Scalar::SMALLEST`]:
    /// for floats the smallest subnormal).
    pub measured_horizon: Option<usize>,
    /// The mean-field model's horizon (only for zero-mean i.i.d. initializers it describes, and a last layer
    /// with the others' activation).
    pub predicted_horizon: Option<usize>,
    /// Where non-finite values first appeared, in computation order (forward from the input, then backward
    /// from the output): layer (1-based), pass, and whether an overflow caused them.
    pub first_nonfinite: Option<(usize, String, bool)>,
    /// The first layer, from the input, whose forward pass saturated or overflowed.
    pub first_forward_saturated: Option<usize>,
    /// Weights, data and gradients (the `gradscope-dump/1` schema).
    #[serde(skip)]
    pub dump: Dump,
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
    in_range("depth", cfg.depth, 1..=MAX_DEPTH)?;
    one_of("width", cfg.width, &WIDTHS)?;
    in_range("batch", cfg.batch, 1..=4096)?;
    number(
        "--loss-scale",
        cfg.loss_scale,
        |v| v > 0.0,
        "a positive number",
    )?;
    cfg.init.init()
}

/// Run the experiment (on a thread with room for the largest stack).
pub fn run(cfg: &DepthConfig) -> Result<DepthResult> {
    let init = validate(cfg)?;
    crate::par::one(|| dispatch(cfg, &init))
}

/// Run many experiments in parallel (results in input order, identical for any thread count).
pub fn sweep(label: &str, cfgs: &[DepthConfig]) -> Result<Vec<DepthResult>> {
    let inits = cfgs.iter().map(validate).collect::<Result<Vec<Init>>>()?;
    let jobs: Vec<(&DepthConfig, &Init)> = cfgs.iter().zip(&inits).collect();
    crate::par::sweep(label, &jobs, |(c, i)| dispatch(c, i))
}

fn dispatch(cfg: &DepthConfig, init: &Init) -> Result<DepthResult> {
    with_scalar!(cfg.precision, S => match cfg.width {
        8 => run_typed::<S, 8>(cfg, init),
        16 => run_typed::<S, 16>(cfg, init),
        32 => run_typed::<S, 32>(cfg, init),
        _ => run_typed::<S, 64>(cfg, init),
    })
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn run_typed<S: Scalar, const W: usize>(cfg: &DepthConfig, init: &Init) -> Result<DepthResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut r = cfg.rounding.build(cfg.seed);
    let mut net: Box<DenseStack<S, W, MAX_DEPTH>> = Box::new(DenseStack::new(cfg.act, cfg.depth));
    net.init(init, &Init::Zeros, &mut rng, &mut r, &mut ())
        .map_err(err)?;
    let out_act = cfg.output_activation.unwrap_or(cfg.act);
    if let Some(last) = net.active_mut().last_mut() {
        last.act = out_act;
    }
    let one_hot = matches!(cfg.loss, Loss::SoftmaxCrossEntropy | Loss::SoftmaxMse);
    let mut samples = Vec::with_capacity(cfg.batch);
    for _ in 0..cfg.batch {
        let (mut x, mut t) = ([S::ZERO; W], [S::ZERO; W]);
        let u = Init::Uniform {
            a: -INPUT_BOUND,
            b: INPUT_BOUND,
        };
        init_slice(&mut x, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).map_err(err)?;
        if one_hot {
            // W divides 2³², so every class is equally likely.
            let k = rng.next_u32() as usize % W;
            t[k] = S::from_f64(1.0, &mut NearestEven).0;
        } else {
            let ut = Init::Uniform {
                a: 0.0,
                b: INPUT_BOUND,
            };
            init_slice(&mut t, &ut, 1, 1, &mut rng, &mut NearestEven, &mut ()).map_err(err)?;
        }
        samples.push((x, t));
    }
    let mut stats = vec![LayerStats::default(); cfg.depth];
    let bp = backprop(
        &mut *net,
        samples.as_slice(),
        &Objective::new(cfg.loss),
        cfg.loss_scale,
        &mut r,
        stats.as_mut_slice(),
    );
    let in_sq: f64 = samples
        .iter()
        .flat_map(|(x, _)| x.iter())
        .map(|v| v.to_f64().powi(2))
        .sum();
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
        let mut distinct: Vec<&[S; W]> = Vec::new();
        for row in &l.grad_weight {
            if !distinct
                .iter()
                .any(|d| d.iter().zip(row).all(|(a, b)| a.raw_bits() == b.raw_bits()))
            {
                distinct.push(row);
            }
        }
        layers.push(DepthRow {
            distinct_units: distinct.len(),
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
    // One LSB: fixed point's, or a float's smallest subnormal (the LSB of its subnormal range).
    let resolution = S::SMALLEST;
    let measured_horizon = (1..=cfg.depth).find(|&k| {
        layers
            .get(cfg.depth - k)
            .is_some_and(|row| row.backward_rms < resolution)
    });
    // The output gradient's RMS per element, per sample (the loss gradient carries 1/batch; the model wants
    // one sample's signal, as each backward pass sees it).
    let g0 = (bp.output_grad_sq / (cfg.batch as f64 * W as f64)).sqrt();
    let predicted_horizon = if out_act != cfg.act {
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
    let dump = Dump {
        precision: cfg.precision.to_string(),
        rounding: cfg.rounding.to_string(),
        loss: cfg.loss.name().into(),
        loss_value: bp.loss,
        loss_scale: Some(cfg.loss_scale),
        input: samples
            .iter()
            .map(|(x, _)| Tensor::vector("x", x))
            .collect(),
        target: samples
            .iter()
            .map(|(_, t)| Tensor::vector("t", t))
            .collect(),
        layers: net
            .active_mut()
            .iter_mut()
            .map(|l| DumpLayer::from_params("dense", vec![("activation", l.act.to_string())], l))
            .collect(),
    };
    let first_nonfinite = gradscope_core::NonFinite::locate(&stats)
        .map(|nf| (nf.layer + 1, nf.phase.name().to_string(), nf.overflow));
    let first_forward_saturated = stats
        .iter()
        .position(|s| s.forward.overflow > 0)
        .map(|k| k + 1);
    Ok(DepthResult {
        first_nonfinite,
        first_forward_saturated,
        dump,
        loss_scale: cfg.loss_scale,
        loss_function: cfg.loss,
        output_activation: out_act.to_string(),
        activation: cfg.act.to_string(),
        init: cfg.init,
        precision: cfg.precision,
        rounding: cfg.rounding,
        depth: cfg.depth,
        width: W,
        batch: cfg.batch,
        seed: cfg.seed,
        loss: bp.loss,
        layers,
        measured_horizon,
        predicted_horizon,
    })
}

fn opt(h: Option<usize>) -> String {
    h.map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// The per-layer frame of one run.
pub fn layers_frame(name: &str, r: &DepthResult) -> Result<Frame> {
    Frame::from_records(name, "", &r.layers)
}

/// What tells one depth run from another in a long-form frame.
#[derive(Serialize)]
struct RunKey<'a> {
    activation: &'a str,
    init: InitName,
    precision: Precision,
    rounding: Rounding,
    loss_scale: f64,
}

/// Every layer of several runs, one row per run and layer.
pub fn long_frame(name: &str, runs: &[DepthResult]) -> Result<Frame> {
    #[derive(Serialize)]
    struct Row<'a> {
        #[serde(flatten)]
        run: RunKey<'a>,
        #[serde(flatten)]
        layer: &'a DepthRow,
    }
    let rows: Vec<Row<'_>> = runs
        .iter()
        .flat_map(|r| {
            r.layers.iter().map(move |layer| Row {
                run: RunKey {
                    activation: &r.activation,
                    init: r.init,
                    precision: r.precision,
                    rounding: r.rounding,
                    loss_scale: r.loss_scale,
                },
                layer,
            })
        })
        .collect();
    Frame::from_records(name, "", &rows)
}

/// A short label of a run for legends.
pub fn label(r: &DepthResult) -> String {
    let mut s = format!("{} {} {}", r.activation, r.init, r.precision);
    if r.rounding != Rounding::Nearest {
        s += &format!(" {}", r.rounding);
    }
    if r.loss_scale != 1.0 {
        s += &format!(" x{}", r.loss_scale);
    }
    s
}

/// Per-layer gradient norms of several runs on one log plot.
pub fn grad_plot(name: &str, title: &str, runs: &[DepthResult]) -> Plot {
    layer_plot(name, title, "‖∂L/∂W‖", runs, |l| l.grad_norm)
}

/// One value per layer of several runs on one log plot.
pub fn layer_plot(
    name: &str,
    title: &str,
    y_label: &str,
    runs: &[DepthResult],
    value: impl Fn(&DepthRow) -> f64,
) -> Plot {
    let x_label = "layer (1 = next to the input)";
    Plot::new(name, title, x_label, y_label, true).with_lines(runs.iter().map(|r| {
        let points = r.layers.iter().map(|l| (l.layer as f64, value(l)));
        (label(r), points.collect())
    }))
}

/// The `depth` subcommand's outcome.
pub fn outcome(r: &DepthResult) -> Result<Outcome> {
    Ok(Outcome {
        name: "depth".into(),
        heading: format!(
            "{} stack, {} init, depth {}, width {}, {} ({} rounding), batch {}, seed {}{}: mean loss {:.6}",
            r.activation,
            r.init,
            r.depth,
            r.width,
            r.precision,
            r.rounding,
            r.batch,
            r.seed,
            if r.loss_scale != 1.0 {
                format!(", loss scale {}", r.loss_scale)
            } else {
                String::new()
            },
            r.loss
        ),
        frames: vec![layers_frame("depth", r)?],
        plots: vec![grad_plot("depth", &label(r), std::slice::from_ref(r))],
        notes: vec![format!(
            "underflow horizon (layers from the output until the back-propagated RMS < 1 LSB, for floats the smallest subnormal): measured {}, predicted {}",
            opt(r.measured_horizon),
            opt(r.predicted_horizon)
        )],
        json: serde_json::to_value(r)?,
    })
}

/// The formats the horizon is measured in by default: the fixed-point ones and f16 (whose subnormal range
/// ends at 2⁻²⁴; the other floats' horizons lie beyond any stack here).
pub const HORIZON_FORMATS: [Precision; 4] = [
    Precision::I16F16,
    Precision::I8F24,
    Precision::F16,
    Precision::I1F15,
];

/// Measured and predicted horizons per format, activation (sigmoid, tanh, ReLU) and initializer (Xavier, He,
/// "standard").
pub fn horizon_runs(
    precisions: &[Precision],
    depth: usize,
    width: usize,
    batch: usize,
    seed: u64,
) -> Result<Vec<DepthResult>> {
    let mut cfgs = Vec::new();
    for &precision in precisions {
        for act in [Act::Sigmoid, Act::Tanh, Act::Relu] {
            for init in [
                InitName::XavierNormal,
                InitName::KaimingNormal,
                InitName::Standard,
            ] {
                cfgs.push(DepthConfig {
                    batch,
                    seed,
                    ..DepthConfig::new(act, init, depth, width, precision)
                });
            }
        }
    }
    sweep("horizon", &cfgs)
}

/// The horizon runs' outcome: a table, and a plot of measured against predicted horizons per format.
pub fn horizon_outcome(runs: &[DepthResult]) -> Result<Outcome> {
    let (depth, width, batch, seed) = runs
        .first()
        .map_or((0, 0, 0, 0), |r| (r.depth, r.width, r.batch, r.seed));
    let mut f = Frame::new(
        "horizon",
        "",
        &["precision", "activation", "init", "measured", "predicted"],
    );
    for r in runs {
        f.push(vec![
            r.precision.name().into(),
            r.activation.as_str().into(),
            r.init.name().into(),
            r.measured_horizon.into(),
            r.predicted_horizon.into(),
        ]);
    }
    // Measured against predicted, one line per format through its configurations sorted by prediction;
    // configurations without both numbers (a signal that never underflows) are left out.
    let mut plot = Plot::new(
        "horizon_model",
        &format!("Underflow horizon, {depth} layers: measured against predicted"),
        "predicted horizon (layers from the output)",
        "measured horizon",
        false,
    );
    let mut top = 0usize;
    let mut lines = Vec::new();
    let mut formats: Vec<Precision> = Vec::new();
    for r in runs {
        if !formats.contains(&r.precision) {
            formats.push(r.precision);
        }
    }
    for precision in formats {
        let mut pts: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.precision == precision)
            .filter_map(|r| Some((r.predicted_horizon? as f64, r.measured_horizon? as f64)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        top = pts
            .iter()
            .fold(top, |t, p| t.max(p.0 as usize).max(p.1 as usize));
        lines.push((precision, pts));
    }
    // The reference first, so the formats' points are drawn over it.
    plot.line(
        "measured = predicted",
        vec![(0.0, 0.0), (top as f64, top as f64)],
    );
    for (precision, pts) in lines {
        plot.line(precision.name(), pts);
    }
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "precision": r.precision, "activation": r.activation, "init": r.init,
                "measured": r.measured_horizon, "predicted": r.predicted_horizon,
            })
        })
        .collect();
    Ok(Outcome {
        name: "horizon".into(),
        heading: format!(
            "Underflow horizon through {depth} layers of width {width} (batch {batch}, seed {seed}): layers from the output until the\n\
             back-propagated signal's RMS is below one LSB (- : it never is). Predicted by the mean-field model of\n\
             gradscope_core::horizon."
        ),
        frames: vec![f],
        plots: vec![plot],
        notes: Vec::new(),
        json: rows.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(act: Act, init: InitName, precision: Precision) -> DepthConfig {
        DepthConfig {
            batch: 4,
            ..DepthConfig::new(act, init, 16, 16, precision)
        }
    }

    #[test]
    fn sigmoid_vanishes_and_the_horizon_is_measured_and_predicted() {
        let r = run(&cfg(
            Act::Sigmoid,
            InitName::XavierNormal,
            Precision::I16F16,
        ))
        .unwrap();
        assert_eq!(r.layers.len(), 16);
        assert!(r.layers[0].grad_norm < r.layers[15].grad_norm * 1e-3);
        let (Some(m), Some(p)) = (r.measured_horizon, r.predicted_horizon) else {
            panic!("{r:?}")
        };
        assert!(m.abs_diff(p) <= 2, "measured {m}, predicted {p}");
        assert_eq!(r.layers[0].zero_fraction, 1.0);
        let f = run(&cfg(Act::Sigmoid, InitName::XavierNormal, Precision::F64)).unwrap();
        assert!(f.layers[0].zero_fraction < 1.0 && f.measured_horizon.is_none());
    }

    #[test]
    fn bad_configurations_are_errors_that_list_the_choices() {
        let mut c = cfg(Act::Relu, InitName::KaimingNormal, Precision::F32);
        c.width = 12;
        assert!(run(&c).unwrap_err().to_string().contains("[8, 16, 32, 64]"));
        c.width = 16;
        c.depth = 0;
        assert!(run(&c).unwrap_err().to_string().contains("1 to 64"));
        c.depth = 8;
        c.loss_scale = f64::NAN;
        assert!(run(&c).unwrap_err().to_string().contains("--loss-scale"));
    }

    #[test]
    fn the_loss_decides_the_gradient_that_starts_the_backward_pass() {
        let base = DepthConfig {
            depth: 4,
            output_activation: Some(Act::Identity),
            ..cfg(Act::Sigmoid, InitName::XavierNormal, Precision::F64)
        };
        let ce = run(&DepthConfig {
            loss: Loss::SoftmaxCrossEntropy,
            ..base.clone()
        })
        .unwrap();
        let mse = run(&DepthConfig {
            loss: Loss::SoftmaxMse,
            ..base
        })
        .unwrap();
        // Softmax MSE's gradient carries a softmax probability (about 1/16 here) that cross-entropy's does not.
        let last = |r: &DepthResult| r.layers[3].grad_norm;
        assert!(
            last(&ce) > 10.0 * last(&mse),
            "{} vs {}",
            last(&ce),
            last(&mse)
        );
        assert_eq!(ce.output_activation, "identity");
        assert_eq!(ce.dump.loss, "softmax_cross_entropy");
        assert_eq!(ce.dump.layers[3].attributes[0].1, "identity");
        // One-hot targets: each sample's target sums to one.
        for t in &ce.dump.target {
            assert_eq!(t.values.iter().sum::<f64>(), 1.0);
        }
    }
}
