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
use gradscope_core::train::backprop;
use gradscope_core::{
    Act, Activate, Clip, ClipReport, EventCounts, Float, Gru, I1F15, I8F24, I16F16, Init, LastStep,
    Layer, LayerStats, Loss, Lstm, NearestEven, Objective, Phase, Pooled, Probes, Rnn, Scalar,
    bf16, f16, init_matrix, init_slice,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

use crate::dump::{Dump, DumpLayer, Tensor};
use crate::options::{Cell, Precision, Rounding, in_range, number, one_of, parse_clip_arg};
use crate::output::{Frame, Outcome};
use crate::plot::Plot;

/// Hidden sizes the lab compiles in.
pub const HIDDEN: [usize; 3] = [8, 16, 32];
/// Sequence lengths the lab compiles in.
pub const STEPS: [usize; 4] = [10, 20, 50, 100];

/// One recurrent experiment (the `rnn` subcommand's options).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct RnnConfig {
    /// Recurrent cell.
    #[arg(long, value_enum, default_value_t = Cell::Rnn)]
    pub cell: Cell,
    /// Time steps: 10, 20, 50 or 100.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Hidden units: 8, 16 or 32.
    #[arg(long, default_value_t = 16)]
    pub hidden: usize,
    /// Gain of the recurrent weights (every singular value for rnn/lstm/gru, the diagonal for irnn).
    #[arg(long, default_value_t = 1.0)]
    pub recurrent_scale: f64,
    /// Bias of the LSTM forget gate or GRU update gate.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub gate_bias: f64,
    /// Clipping of the parameter gradients: none, value:V, norm:N (per tensor), global:N, agc:L.
    #[arg(long, default_value = "none", value_parser = parse_clip_arg)]
    pub clip: Clip,
    /// Number format (lstm and gru: f32 or f64).
    #[arg(long, value_enum, default_value_t = Precision::F32, ignore_case = true)]
    pub precision: Precision,
    /// Rounding of fixed-point results.
    #[arg(long, value_enum, default_value_t = Rounding::Nearest)]
    pub rounding: Rounding,
    /// Seed of weights, data and stochastic rounding.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sequences in the batch, 1 to 1024.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

impl RnnConfig {
    /// `cell` with hidden size 16 over `steps`, recurrent gain `scale`, no clipping, f32 with nearest rounding,
    /// seed 1, a batch of 16.
    pub fn new(cell: Cell, scale: f64, gate_bias: f64, steps: usize) -> RnnConfig {
        RnnConfig {
            cell,
            steps,
            hidden: 16,
            recurrent_scale: scale,
            gate_bias,
            clip: Clip::None,
            precision: Precision::F32,
            rounding: Rounding::Nearest,
            seed: 1,
            batch: 16,
        }
    }
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
    /// The cell.
    pub cell: Cell,
    /// Steps.
    pub steps: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Recurrent gain.
    pub recurrent_scale: f64,
    /// Gate bias (LSTM, GRU).
    pub gate_bias: f64,
    /// Precision.
    pub precision: Precision,
    /// Rounding.
    pub rounding: Rounding,
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
    pub dump: Dump,
}

/// Check a configuration: every error names what is accepted.
pub fn validate(cfg: &RnnConfig) -> Result<()> {
    one_of("steps", cfg.steps, &STEPS)?;
    one_of("hidden size", cfg.hidden, &HIDDEN)?;
    if cfg.cell.is_gated() && !cfg.precision.is_float() {
        bail!(
            "{} cells are float-only: choose precision f64, f32, bf16 or f16",
            cfg.cell
        );
    }
    number(
        "--recurrent-scale",
        cfg.recurrent_scale,
        |v| v >= 0.0,
        "a finite number >= 0",
    )?;
    number("--gate-bias", cfg.gate_bias, |_| true, "finite")?;
    in_range("batch", cfg.batch, 1..=1024)?;
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
    match (cfg.cell, cfg.precision) {
        (Cell::Rnn | Cell::Irnn, Precision::F32) => sizes!(elman, f32),
        (Cell::Rnn | Cell::Irnn, Precision::F64) => sizes!(elman, f64),
        (Cell::Rnn | Cell::Irnn, Precision::I16F16) => sizes!(elman, I16F16),
        (Cell::Rnn | Cell::Irnn, Precision::I8F24) => sizes!(elman, I8F24),
        (Cell::Rnn | Cell::Irnn, Precision::I1F15) => sizes!(elman, I1F15),
        (Cell::Rnn | Cell::Irnn, Precision::F16) => sizes!(elman, f16),
        (Cell::Rnn | Cell::Irnn, Precision::Bf16) => sizes!(elman, bf16),
        (Cell::Lstm, Precision::F32) => sizes!(lstm, f32),
        (Cell::Lstm, Precision::F64) => sizes!(lstm, f64),
        (Cell::Lstm, Precision::F16) => sizes!(lstm, f16),
        (Cell::Lstm, Precision::Bf16) => sizes!(lstm, bf16),
        (Cell::Gru, Precision::F32) => sizes!(gru, f32),
        (Cell::Gru, Precision::F64) => sizes!(gru, f64),
        (Cell::Gru, Precision::F16) => sizes!(gru, f16),
        (Cell::Gru, Precision::Bf16) => sizes!(gru, bf16),
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
    kind: &'static str,
    attributes: Vec<(&'static str, String)>,
) -> Result<RnnResult>
where
    S: Scalar,
    L: Layer<S, Input = Seq<S, T>, Output = [[S; H]; T]>,
{
    let mut r = cfg.rounding.build(cfg.seed);
    let mut probe = TimeProbe::<T> {
        stats: [LayerStats::default()],
        sq: [0.0; T],
        zeros: [0; T],
    };
    let batch = samples.len();
    let mut head = (&mut *net, LastStep::<H, T>::new());
    let bp = backprop(
        &mut head,
        samples,
        &Objective::new(Loss::Mse),
        1.0,
        &mut r,
        &mut probe,
    );
    // The gradient of the batch-mean loss, before clipping, is what a dump records.
    let layer = DumpLayer::from_params(kind, attributes, net);
    let mut clip_events = EventCounts::default();
    let clipping = cfg
        .clip
        .apply(net, &mut r, &mut Pooled(&mut clip_events))
        .map_err(|e| anyhow!("clipping: {e}"))?;
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
        cell: cfg.cell,
        steps: T,
        hidden: H,
        recurrent_scale: cfg.recurrent_scale,
        gate_bias: cfg.gate_bias,
        precision: cfg.precision,
        rounding: cfg.rounding,
        seed: cfg.seed,
        batch,
        loss: bp.loss,
        per_step,
        first_over_last,
        clip: cfg.clip,
        clipping,
        forward: st.forward,
        backward: st.backward,
        grad: st.grad,
        clip_events,
        dump: Dump {
            precision: cfg.precision.to_string(),
            rounding: cfg.rounding.to_string(),
            loss: Loss::Mse.name().into(),
            loss_value: bp.loss,
            loss_scale: None,
            input: samples
                .iter()
                .map(|(x, _)| Tensor::matrix("x", x))
                .collect(),
            target: samples
                .iter()
                .map(|(_, t)| Tensor::vector("t", t))
                .collect(),
            layers: vec![layer],
        },
    })
}

fn elman<S: Scalar, const H: usize, const T: usize>(cfg: &RnnConfig) -> Result<RnnResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut r = cfg.rounding.build(cfg.seed);
    let irnn = cfg.cell == Cell::Irnn;
    let act = if irnn { Act::Relu } else { Act::Tanh };
    let mut net: Box<Rnn<S, 1, H, T>> = Box::new(Rnn::new(act));
    let (ih, hh) = elman_inits(irnn, 1e-3, cfg.recurrent_scale);
    init_matrix(&mut net.weight_ih, &ih, &mut rng, &mut r, &mut ()).map_err(err)?;
    init_matrix(&mut net.weight_hh, &hh, &mut rng, &mut r, &mut ()).map_err(err)?;
    let samples = data::<S, H, T>(cfg, &mut rng)?;
    let attributes = vec![("activation", act.to_string())];
    measure(cfg, &mut *net, &samples, "rnn", attributes)
}

/// The Elman cells' initializers (input, recurrent): the IRNN's N(0, `input_std`²) input weights and
/// `recurrent_scale · I` (Le et al. 2015), or the tanh RNN's Xavier-normal input weights and orthogonal
/// recurrent weights with gain `recurrent_scale`.
pub(crate) fn elman_inits(irnn: bool, input_std: f64, recurrent_scale: f64) -> (Init, Init) {
    if irnn {
        (
            Init::Normal {
                mean: 0.0,
                std: input_std,
            },
            Init::Identity {
                gain: recurrent_scale,
            },
        )
    } else {
        (
            Init::XavierNormal { gain: 1.0 },
            Init::Orthogonal {
                gain: recurrent_scale,
            },
        )
    }
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

fn lstm<S: Float, const H: usize, const T: usize>(cfg: &RnnConfig) -> Result<RnnResult>
where
    Act: Activate<S>,
{
    gated::<S, Lstm<S, 1, H, T>, H, T, 4>(cfg, "lstm", "i, f, g, o", |n| {
        // The forget gate.
        (&mut n.weight_ih, &mut n.weight_hh, &mut n.bias[1])
    })
}

fn gru<S: Float, const H: usize, const T: usize>(cfg: &RnnConfig) -> Result<RnnResult>
where
    Act: Activate<S>,
{
    gated::<S, Gru<S, 1, H, T>, H, T, 3>(cfg, "gru", "r, z, n", |n| {
        // The update gate's input-side bias.
        (&mut n.weight_ih, &mut n.weight_hh, &mut n.bias_ih[1])
    })
}

/// The gate blocks of a gated cell with `G` gates, and the bias of the gate that `gate_bias` sets.
type GateParts<'a, S, const H: usize, const G: usize> = (
    &'a mut [[[S; 1]; H]; G],
    &'a mut [[[S; H]; H]; G],
    &'a mut [S; H],
);

/// A gated cell (`L`, zero weights by `Default`) initialized per gate block, with the gate bias set.
fn gated<S, L, const H: usize, const T: usize, const G: usize>(
    cfg: &RnnConfig,
    kind: &'static str,
    gates: &str,
    parts: impl Fn(&mut L) -> GateParts<'_, S, H, G>,
) -> Result<RnnResult>
where
    S: Float,
    L: Default + Layer<S, Input = Seq<S, T>, Output = [[S; H]; T]>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(cfg.seed);
    let mut net: Box<L> = Box::default();
    let (ih, hh, bias) = parts(&mut net);
    init_gates(ih, hh, cfg.recurrent_scale, &mut rng)?;
    *bias = [S::from_f64(cfg.gate_bias, &mut NearestEven).0; H];
    let samples = data::<S, H, T>(cfg, &mut rng)?;
    measure(
        cfg,
        &mut *net,
        &samples,
        kind,
        vec![("gates", gates.into())],
    )
}

fn label(r: &RnnResult) -> String {
    let mut s = format!("{} x{}", r.cell, r.recurrent_scale);
    if r.cell.is_gated() {
        s += &format!(" bias {}", r.gate_bias);
    }
    s + &format!(" {}", r.precision)
}

/// The per-step frame of several runs (long form: one row per run and step) and their plot.
pub fn frame_and_plot(name: &str, title: &str, runs: &[RnnResult]) -> Result<(Frame, Plot)> {
    #[derive(Serialize)]
    struct Row<'a> {
        cell: Cell,
        recurrent_scale: f64,
        gate_bias: f64,
        precision: Precision,
        #[serde(flatten)]
        step: &'a StepRow,
    }
    let rows: Vec<Row<'_>> = runs
        .iter()
        .flat_map(|r| {
            r.per_step.iter().map(move |step| Row {
                cell: r.cell,
                recurrent_scale: r.recurrent_scale,
                gate_bias: r.gate_bias,
                precision: r.precision,
                step,
            })
        })
        .collect();
    let f = Frame::from_records(name, title, &rows)?;
    Ok((f, steps_plot(name, title, runs)))
}

/// ‖∂L/∂h_t‖ per time step of several runs, on a log axis.
pub fn steps_plot(name: &str, title: &str, runs: &[RnnResult]) -> Plot {
    let y_label = "‖∂L/∂h_t‖ (RMS over the batch)";
    Plot::new(name, title, "time step t", y_label, true).with_lines(runs.iter().map(|r| {
        let points = r.per_step.iter().map(|s| (s.step as f64, s.grad_norm));
        (label(r), points.collect())
    }))
}

/// The subcommand's outcome.
pub fn outcome(r: &RnnResult) -> Result<Outcome> {
    let p = steps_plot("rnn_steps", "", std::slice::from_ref(r));
    let steps = Frame::from_records("rnn", "", &r.per_step)?;
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
            if r.cell.is_gated() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cell: Cell, scale: f64, precision: Precision) -> RnnConfig {
        RnnConfig {
            hidden: 8,
            precision,
            seed: 3,
            batch: 2,
            ..RnnConfig::new(cell, scale, 1.0, 20)
        }
    }

    #[test]
    fn a_recurrent_scale_above_one_explodes_and_below_one_vanishes() {
        let big = run(&cfg(Cell::Irnn, 1.5, Precision::F64)).unwrap();
        let small = run(&cfg(Cell::Irnn, 0.5, Precision::F64)).unwrap();
        assert!(big.first_over_last > 1e2, "{}", big.first_over_last);
        assert!(small.first_over_last < 1e-2, "{}", small.first_over_last);
        let mut c = cfg(Cell::Rnn, 3.0, Precision::F32);
        c.clip = Clip::Global(1.0);
        let clipped = run(&c).unwrap();
        assert!(clipped.clipping.norm_before > 1.0);
        assert!((clipped.clipping.norm_after - 1.0).abs() < 1e-5);
    }

    #[test]
    fn gated_cells_are_float_only() {
        let e = run(&cfg(Cell::Lstm, 1.0, Precision::I16F16))
            .unwrap_err()
            .to_string();
        assert!(e.contains("float-only"), "{e}");
        assert!(run(&cfg(Cell::Gru, 1.0, Precision::F32)).is_ok());
        let mut c = cfg(Cell::Rnn, 1.0, Precision::F32);
        c.steps = 7;
        assert!(
            run(&c)
                .unwrap_err()
                .to_string()
                .contains("[10, 20, 50, 100]")
        );
    }
}
