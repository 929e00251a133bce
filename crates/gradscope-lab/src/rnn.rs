//! Vanishing and exploding gradients through time: ‖∂L/∂h_t‖ at every step of a recurrent layer.
//!
//! One recurrent layer with a single input, `hidden` units, unrolled over `steps`. Inputs are U(−1, 1) per
//! step; the loss is the MSE of the last hidden state against a target U(−0.5, 0.5), averaged over the batch,
//! so the gradient enters at the last step and everything earlier is carried back through time.
//!
//! Cells and their initialization:
//! - `rnn`: tanh Elman cell; input weights Xavier-normal, recurrent weights orthogonal with gain
//!   `recurrent_scale` (every singular value equals the scale, so the linear part of each step multiplies the
//!   gradient by exactly that much).
//! - `irnn`: ReLU Elman cell with recurrent weights `recurrent_scale · I` and input weights N(0, 0.001²), as
//!   in Le et al. (2015).
//! - `lstm`, `gru` (f32 and f64 only): input weights Xavier-normal per gate, recurrent weights orthogonal
//!   with gain `recurrent_scale` per gate, and `gate_bias` on the LSTM's forget gate or the GRU's update gate
//!   (other biases zero). With the gate bias at zero the gates sit at σ(0) = ½ and halve the carried gradient
//!   every step; at 1 (Gers et al. 2000; Jozefowicz et al. 2015) they carry it.
//!
//! Clipping (`--clip`) is applied to the accumulated parameter gradients; the result reports the global
//! gradient norm before and after.

use anyhow::{Result, anyhow, bail};
use gradscope_core::{
    Act, Activate, EventCounts, Float, Gru, I1F15, I8F24, I16F16, Init, Layer, LayerStats, Loss,
    Lstm, NearestEven, Phase, Probes, Rnn, Scalar, init_matrix, init_slice, loss_grad,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;
use serde_json::{Value, json};

use crate::depth::PRECISIONS;
use crate::output::{Frame, Outcome};
use crate::plot::Plot;
use crate::spec::{Clip, ClipReport, check_rounding, rounding};

/// Recurrent cells.
pub const CELLS: [&str; 4] = ["rnn", "irnn", "lstm", "gru"];
/// Hidden sizes the lab compiles in.
pub const HIDDEN: [usize; 3] = [8, 16, 32];
/// Sequence lengths the lab compiles in.
pub const STEPS: [usize; 4] = [10, 20, 50, 100];

/// One recurrent experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnConfig {
    /// One of [`CELLS`].
    pub cell: String,
    /// One of [`STEPS`].
    pub steps: usize,
    /// One of [`HIDDEN`].
    pub hidden: usize,
    /// Gain of the recurrent weights (spectral radius for `rnn`, diagonal for `irnn`).
    pub recurrent_scale: f64,
    /// Bias of the LSTM forget gate or the GRU update gate.
    pub gate_bias: f64,
    /// Clipping of the parameter gradients.
    pub clip: Clip,
    /// One of the depth experiment's precisions.
    pub precision: String,
    /// `floor`, `nearest` or `stochastic`.
    pub rounding: String,
    /// Seed of weights, data and stochastic rounding.
    pub seed: u64,
    /// Sequences in the batch, 1 to 1024.
    pub batch: usize,
}

/// One time step's measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRow {
    /// Time step, 1-based.
    pub step: usize,
    /// ‖∂L/∂h_t‖₂, root-mean-square over the batch.
    pub grad_norm: f64,
    /// Share of the entries of ∂L/∂h_t that are exactly zero.
    pub zero_fraction: f64,
}

/// The result of a recurrent experiment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RnnResult {
    /// Cell name.
    pub cell: String,
    /// Steps.
    pub steps: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Recurrent gain.
    pub recurrent_scale: f64,
    /// Gate bias (LSTM, GRU).
    pub gate_bias: f64,
    /// Precision.
    pub precision: String,
    /// Rounding.
    pub rounding: String,
    /// Seed.
    pub seed: u64,
    /// Batch.
    pub batch: usize,
    /// Mean loss.
    pub loss: f64,
    /// Per time step, from the first.
    pub per_step: Vec<StepRow>,
    /// ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖.
    pub first_over_last: f64,
    /// Clipping applied.
    pub clip: Clip,
    /// Global parameter-gradient norm before and after clipping.
    pub clipping: ClipReport,
    /// Events in the forward pass.
    pub forward: EventCounts,
    /// Events in the backward pass (signal through time).
    pub backward: EventCounts,
    /// Events in the parameter-gradient accumulation.
    pub grad: EventCounts,
    /// Events of clipping's rescaling.
    pub clip_events: EventCounts,
    /// Parameters and gradients, for `--dump`.
    #[serde(skip)]
    pub dump: Value,
}

/// Check a configuration: every error names what is accepted.
pub fn validate(cfg: &RnnConfig) -> Result<()> {
    if !CELLS.contains(&cfg.cell.as_str()) {
        bail!(
            "unknown cell '{}': choose one of {}",
            cfg.cell,
            CELLS.join(", ")
        );
    }
    if !STEPS.contains(&cfg.steps) {
        bail!(
            "steps {} is not supported: choose one of {:?}",
            cfg.steps,
            STEPS
        );
    }
    if !HIDDEN.contains(&cfg.hidden) {
        bail!(
            "hidden size {} is not supported: choose one of {:?}",
            cfg.hidden,
            HIDDEN
        );
    }
    if !PRECISIONS.contains(&cfg.precision.as_str()) {
        bail!(
            "unknown precision '{}': choose one of {}",
            cfg.precision,
            PRECISIONS.join(", ")
        );
    }
    if matches!(cfg.cell.as_str(), "lstm" | "gru")
        && !matches!(cfg.precision.as_str(), "f32" | "f64")
    {
        bail!(
            "{} cells are float-only: choose precision f32 or f64",
            cfg.cell
        );
    }
    check_rounding(&cfg.rounding)?;
    if !(cfg.recurrent_scale.is_finite() && cfg.recurrent_scale >= 0.0) {
        bail!(
            "--recurrent-scale must be a finite number >= 0, got {}",
            cfg.recurrent_scale
        );
    }
    if !cfg.gate_bias.is_finite() {
        bail!("--gate-bias must be finite, got {}", cfg.gate_bias);
    }
    if cfg.batch == 0 || cfg.batch > 1024 {
        bail!("batch {} is not supported: choose 1 to 1024", cfg.batch);
    }
    Ok(())
}

/// Run the experiment.
pub fn run(cfg: &RnnConfig) -> Result<RnnResult> {
    validate(cfg)?;
    crate::par::one(|| dispatch(cfg))
}

fn dispatch(cfg: &RnnConfig) -> Result<RnnResult> {
    macro_rules! sizes {
        ($f:ident, $s:ty) => {
            match (cfg.hidden, cfg.steps) {
                (8, 10) => $f::<$s, 8, 10>(cfg),
                (8, 20) => $f::<$s, 8, 20>(cfg),
                (8, 50) => $f::<$s, 8, 50>(cfg),
                (8, 100) => $f::<$s, 8, 100>(cfg),
                (16, 10) => $f::<$s, 16, 10>(cfg),
                (16, 20) => $f::<$s, 16, 20>(cfg),
                (16, 50) => $f::<$s, 16, 50>(cfg),
                (16, 100) => $f::<$s, 16, 100>(cfg),
                (32, 10) => $f::<$s, 32, 10>(cfg),
                (32, 20) => $f::<$s, 32, 20>(cfg),
                (32, 50) => $f::<$s, 32, 50>(cfg),
                (32, 100) => $f::<$s, 32, 100>(cfg),
                (h, t) => bail!("hidden {h} with {t} steps is not compiled in"),
            }
        };
    }
    match (cfg.cell.as_str(), cfg.precision.as_str()) {
        ("rnn" | "irnn", "f32") => sizes!(elman, f32),
        ("rnn" | "irnn", "f64") => sizes!(elman, f64),
        ("rnn" | "irnn", "i16f16") => sizes!(elman, I16F16),
        ("rnn" | "irnn", "i8f24") => sizes!(elman, I8F24),
        ("rnn" | "irnn", "i1f15") => sizes!(elman, I1F15),
        ("lstm", "f32") => sizes!(lstm, f32),
        ("lstm", "f64") => sizes!(lstm, f64),
        ("gru", "f32") => sizes!(gru, f32),
        ("gru", "f64") => sizes!(gru, f64),
        (c, p) => bail!("cell {c} in precision {p} is not supported"),
    }
}

/// Per-step ‖∂L/∂h_t‖ and layer events of one backward pass.
struct TimeProbe<const T: usize> {
    stats: [LayerStats; 1],
    sq: [f64; T],
    zeros: [u64; T],
}

impl<const T: usize> Probes for TimeProbe<T> {
    fn record(&mut self, layer: usize, phase: Phase, flags: gradscope_core::Flags) {
        self.stats.record(layer, phase, flags);
    }
    fn step<S: Scalar>(&mut self, _layer: usize, step: usize, dh: &[S]) {
        if let Some(s) = self.sq.get_mut(step) {
            *s += dh.iter().map(|v| v.to_f64().powi(2)).sum::<f64>();
        }
        if let Some(z) = self.zeros.get_mut(step) {
            *z += dh.iter().filter(|v| v.is_zero()).count() as u64;
        }
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

type Seq<S, const T: usize> = [[S; 1]; T];

/// Data of one run: inputs and targets per sample.
fn data<S: Scalar, const H: usize, const T: usize>(
    cfg: &RnnConfig,
    rng: &mut Xoshiro128PlusPlus,
) -> Result<Vec<(Seq<S, T>, [S; H])>> {
    (0..cfg.batch)
        .map(|_| {
            let mut x = [[S::ZERO; 1]; T];
            init_slice(
                x.as_flattened_mut(),
                &Init::Uniform { a: -1.0, b: 1.0 },
                1,
                1,
                rng,
                &mut NearestEven,
                &mut (),
            )
            .map_err(err)?;
            let mut t = [S::ZERO; H];
            init_slice(
                &mut t,
                &Init::Uniform { a: -0.5, b: 0.5 },
                1,
                1,
                rng,
                &mut NearestEven,
                &mut (),
            )
            .map_err(err)?;
            Ok((x, t))
        })
        .collect()
}

/// Forward, loss on the last state, backward through time, clipping; the shared measurement of every cell.
fn measure<S, L, const H: usize, const T: usize>(
    cfg: &RnnConfig,
    net: &mut L,
    samples: &[(Seq<S, T>, [S; H])],
    describe: impl Fn(&mut L) -> Value,
) -> Result<RnnResult>
where
    S: Scalar,
    L: Layer<S, Input = Seq<S, T>, Output = [[S; H]; T]>,
{
    let mut r = rounding(&cfg.rounding, cfg.seed);
    let mut probe = TimeProbe::<T> {
        stats: [LayerStats::default()],
        sq: [0.0; T],
        zeros: [0; T],
    };
    let mut loss = 0.0;
    let batch = samples.len();
    for (x, t) in samples {
        let hs = net.forward(x, 0, &mut r, &mut probe);
        let mut dy = [[S::ZERO; H]; T];
        let (Some(last), Some(dlast)) = (hs.last(), dy.last_mut()) else {
            bail!("a recurrent layer needs at least one step");
        };
        loss += loss_grad(Loss::Mse, last, t, batch, dlast, &mut r, &mut ()) / batch as f64;
        net.backward(&dy, 0, &mut r, &mut probe);
    }
    // The gradient of the batch-mean loss, before clipping, is what a dump records.
    let dump = describe(net);
    let mut clip_events = EventCounts::default();
    let clipping = cfg.clip.apply(net, &mut r, &mut clip_events)?;
    let per_step: Vec<StepRow> = (0..T)
        .map(|k| StepRow {
            step: k + 1,
            grad_norm: (probe.sq[k] / batch as f64).sqrt(),
            zero_fraction: probe.zeros[k] as f64 / (batch * H) as f64,
        })
        .collect();
    let first_over_last = match (per_step.first(), per_step.last()) {
        (Some(a), Some(b)) if b.grad_norm > 0.0 => a.grad_norm / b.grad_norm,
        _ => f64::NAN,
    };
    let [st] = probe.stats;
    Ok(RnnResult {
        cell: cfg.cell.clone(),
        steps: T,
        hidden: H,
        recurrent_scale: cfg.recurrent_scale,
        gate_bias: cfg.gate_bias,
        precision: cfg.precision.clone(),
        rounding: cfg.rounding.clone(),
        seed: cfg.seed,
        batch,
        loss,
        per_step,
        first_over_last,
        clip: cfg.clip,
        clipping,
        forward: st.forward,
        backward: st.backward,
        grad: st.grad,
        clip_events,
        dump: json!({
            "format": "gradscope-dump/1",
            "precision": cfg.precision,
            "loss": "mse",
            "loss_value": loss,
            "input": samples.iter().map(|(x, _)| x.iter().map(|s| vec![s[0].to_f64()]).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "target": samples.iter().map(|(_, t)| t.iter().map(|v| v.to_f64()).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "layers": [dump],
        }),
    })
}

fn rows<S: Scalar, const N: usize>(m: &[[S; N]]) -> Vec<Vec<f64>> {
    m.iter()
        .map(|r| r.iter().map(|v| v.to_f64()).collect())
        .collect()
}

fn vals<S: Scalar>(v: &[S]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn elman<S: Scalar, const H: usize, const T: usize>(cfg: &RnnConfig) -> Result<RnnResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut r = rounding(&cfg.rounding, cfg.seed);
    let irnn = cfg.cell == "irnn";
    let act = if irnn { Act::Relu } else { Act::Tanh };
    let mut net: Box<Rnn<S, 1, H, T>> = Box::new(Rnn::new(act));
    let (ih, hh) = if irnn {
        (
            Init::Normal {
                mean: 0.0,
                std: 1e-3,
            },
            Init::Identity {
                gain: cfg.recurrent_scale,
            },
        )
    } else {
        (
            Init::XavierNormal { gain: 1.0 },
            Init::Orthogonal {
                gain: cfg.recurrent_scale,
            },
        )
    };
    init_matrix(&mut net.weight_ih, &ih, &mut rng, &mut r, &mut ()).map_err(err)?;
    init_matrix(&mut net.weight_hh, &hh, &mut rng, &mut r, &mut ()).map_err(err)?;
    let samples = data::<S, H, T>(cfg, &mut rng)?;
    measure(cfg, &mut *net, &samples, |n| {
        json!({
            "kind": "rnn",
            "activation": act.to_string(),
            "weight_ih": rows(&n.weight_ih),
            "weight_hh": rows(&n.weight_hh),
            "bias": vals(&n.bias),
            "grad_weight_ih": rows(&n.grad_weight_ih),
            "grad_weight_hh": rows(&n.grad_weight_hh),
            "grad_bias": vals(&n.grad_bias),
        })
    })
}

/// Xavier-normal input weights and orthogonal recurrent weights (gain = recurrent scale) per gate block.
fn init_gates<S: Scalar, const H: usize, const G: usize>(
    ih: &mut [[[S; 1]; H]; G],
    hh: &mut [[[S; H]; H]; G],
    scale: f64,
    rng: &mut Xoshiro128PlusPlus,
) -> Result<()> {
    for (a, b) in ih.iter_mut().zip(hh.iter_mut()) {
        init_matrix(
            a,
            &Init::XavierNormal { gain: 1.0 },
            rng,
            &mut NearestEven,
            &mut (),
        )
        .map_err(err)?;
        init_matrix(
            b,
            &Init::Orthogonal { gain: scale },
            rng,
            &mut NearestEven,
            &mut (),
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Gate blocks stacked into one (gates·H) × N matrix, PyTorch's layout.
fn stacked<S: Scalar, const H: usize, const N: usize, const G: usize>(
    m: &[[[S; N]; H]; G],
) -> Vec<Vec<f64>> {
    m.iter().flat_map(|g| rows(g)).collect()
}

fn lstm<S: Float, const H: usize, const T: usize>(cfg: &RnnConfig) -> Result<RnnResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut net: Box<Lstm<S, 1, H, T>> = Box::new(Lstm::new());
    init_gates(
        &mut net.weight_ih,
        &mut net.weight_hh,
        cfg.recurrent_scale,
        &mut rng,
    )?;
    net.bias[1] = [S::from_f64(cfg.gate_bias, &mut NearestEven).0; H];
    let samples = data::<S, H, T>(cfg, &mut rng)?;
    measure(cfg, &mut *net, &samples, |n| {
        json!({
            "kind": "lstm",
            "gates": "i, f, g, o",
            "weight_ih": stacked(&n.weight_ih),
            "weight_hh": stacked(&n.weight_hh),
            "bias": n.bias.iter().flat_map(|b| vals(b)).collect::<Vec<_>>(),
            "grad_weight_ih": stacked(&n.grad_weight_ih),
            "grad_weight_hh": stacked(&n.grad_weight_hh),
            "grad_bias": n.grad_bias.iter().flat_map(|b| vals(b)).collect::<Vec<_>>(),
        })
    })
}

fn gru<S: Float, const H: usize, const T: usize>(cfg: &RnnConfig) -> Result<RnnResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut net: Box<Gru<S, 1, H, T>> = Box::new(Gru::new());
    init_gates(
        &mut net.weight_ih,
        &mut net.weight_hh,
        cfg.recurrent_scale,
        &mut rng,
    )?;
    net.bias_ih[1] = [S::from_f64(cfg.gate_bias, &mut NearestEven).0; H];
    let samples = data::<S, H, T>(cfg, &mut rng)?;
    measure(cfg, &mut *net, &samples, |n| {
        json!({
            "kind": "gru",
            "gates": "r, z, n",
            "weight_ih": stacked(&n.weight_ih),
            "weight_hh": stacked(&n.weight_hh),
            "bias_ih": n.bias_ih.iter().flat_map(|b| vals(b)).collect::<Vec<_>>(),
            "bias_hh": n.bias_hh.iter().flat_map(|b| vals(b)).collect::<Vec<_>>(),
            "grad_weight_ih": stacked(&n.grad_weight_ih),
            "grad_weight_hh": stacked(&n.grad_weight_hh),
            "grad_bias_ih": n.grad_bias_ih.iter().flat_map(|b| vals(b)).collect::<Vec<_>>(),
            "grad_bias_hh": n.grad_bias_hh.iter().flat_map(|b| vals(b)).collect::<Vec<_>>(),
        })
    })
}

fn label(r: &RnnResult) -> String {
    let mut s = format!("{} x{}", r.cell, r.recurrent_scale);
    if matches!(r.cell.as_str(), "lstm" | "gru") {
        s += &format!(" bias {}", r.gate_bias);
    }
    s + &format!(" {}", r.precision)
}

/// The per-step frame of several runs (long form: one row per run and step) and their plot.
pub fn frame_and_plot(name: &str, title: &str, runs: &[RnnResult]) -> (Frame, Plot) {
    let mut f = Frame::new(
        name,
        title,
        &[
            "cell",
            "recurrent_scale",
            "gate_bias",
            "precision",
            "step",
            "grad_norm",
            "zero_fraction",
        ],
    );
    for r in runs {
        for s in &r.per_step {
            f.push(vec![
                r.cell.as_str().into(),
                r.recurrent_scale.into(),
                r.gate_bias.into(),
                r.precision.as_str().into(),
                s.step.into(),
                s.grad_norm.into(),
                s.zero_fraction.into(),
            ]);
        }
    }
    (f, steps_plot(name, title, runs))
}

/// ‖∂L/∂h_t‖ per time step of several runs, on a log axis.
pub fn steps_plot(name: &str, title: &str, runs: &[RnnResult]) -> Plot {
    let mut p = Plot::new(
        name,
        title,
        "time step t",
        "‖∂L/∂h_t‖ (RMS over the batch)",
        true,
    );
    for r in runs {
        p.line(
            label(r),
            r.per_step
                .iter()
                .map(|s| (s.step as f64, s.grad_norm))
                .collect(),
        );
    }
    p
}

/// The subcommand's outcome.
pub fn outcome(r: &RnnResult) -> Result<Outcome> {
    let p = steps_plot("rnn_steps", "", std::slice::from_ref(r));
    let mut steps = Frame::new("rnn", "", &["step", "grad_norm", "zero_fraction"]);
    for s in &r.per_step {
        steps.push(vec![
            s.step.into(),
            s.grad_norm.into(),
            s.zero_fraction.into(),
        ]);
    }
    let events = |name: &str, e: &EventCounts| {
        format!(
            "{name}: {} values, {} underflowed, {} saturated, {} non-finite",
            e.values, e.underflow, e.overflow, e.nonfinite
        )
    };
    let frames = vec![steps];
    Ok(Outcome {
        name: "rnn".into(),
        heading: format!(
            "{} cell, {} steps, {} hidden, recurrent scale {}{}, {} ({} rounding), batch {}, seed {}: mean loss {:.6}",
            r.cell,
            r.steps,
            r.hidden,
            r.recurrent_scale,
            if matches!(r.cell.as_str(), "lstm" | "gru") {
                format!(", gate bias {}", r.gate_bias)
            } else {
                String::new()
            },
            r.precision,
            r.rounding,
            r.batch,
            r.seed,
            r.loss
        ),
        frames,
        plots: vec![p],
        notes: vec![
            format!("‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ = {:.4e}", r.first_over_last),
            format!(
                "parameter gradient norm: {:.4e} before clipping ({}), {:.4e} after",
                r.clipping.norm_before, r.clip, r.clipping.norm_after
            ),
            events("forward", &r.forward),
            events("backward through time", &r.backward),
            events("parameter gradients", &r.grad),
        ],
        json: serde_json::to_value(r)?,
    })
}

/// Parse a cell's name for clap.
pub fn parse_cell(s: &str) -> std::result::Result<String, String> {
    if CELLS.contains(&s) {
        Ok(s.into())
    } else {
        Err(format!(
            "unknown cell '{s}': choose one of {}",
            CELLS.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cell: &str, scale: f64, precision: &str) -> RnnConfig {
        RnnConfig {
            cell: cell.into(),
            steps: 20,
            hidden: 8,
            recurrent_scale: scale,
            gate_bias: 1.0,
            clip: Clip::None,
            precision: precision.into(),
            rounding: "nearest".into(),
            seed: 3,
            batch: 2,
        }
    }

    #[test]
    fn a_recurrent_scale_above_one_explodes_and_below_one_vanishes() {
        let big = run(&cfg("irnn", 1.5, "f64")).unwrap();
        let small = run(&cfg("irnn", 0.5, "f64")).unwrap();
        assert!(big.first_over_last > 1e2, "{}", big.first_over_last);
        assert!(small.first_over_last < 1e-2, "{}", small.first_over_last);
        let mut c = cfg("rnn", 3.0, "f32");
        c.clip = Clip::Global(1.0);
        let clipped = run(&c).unwrap();
        assert!(clipped.clipping.norm_before > 1.0);
        assert!((clipped.clipping.norm_after - 1.0).abs() < 1e-5);
    }

    #[test]
    fn gated_cells_are_float_only() {
        let e = run(&cfg("lstm", 1.0, "i16f16")).unwrap_err().to_string();
        assert!(e.contains("float-only"), "{e}");
        assert!(run(&cfg("gru", 1.0, "f32")).is_ok());
        let mut c = cfg("rnn", 1.0, "f32");
        c.steps = 7;
        assert!(
            run(&c)
                .unwrap_err()
                .to_string()
                .contains("[10, 20, 50, 100]")
        );
    }
}
