//! The curated report: every cause and every cure, measured, with plots and the data behind them.
//!
//! Each section runs its experiments (in parallel, seeded, so any thread count gives the same numbers), and
//! yields frames (tables), plots, and findings: sentences whose every number is computed from the frames.
//! [`write_html`] turns the sections into `index.html` beside one CSV per frame, one SVG per plot and one
//! JSON per section.

use std::fmt::Write as _;

use anyhow::Result;
use gradscope_core::Act;

use crate::depth::{self, DepthConfig, DepthResult};
use crate::flow;
use crate::output::{Frame, OutDir, Outcome, escape};
use crate::plot::Plot;
use crate::rnn::{self, RnnConfig, RnnResult};
use crate::spec::Clip;
use crate::train::{self, TrainConfig, TrainResult};

/// One section of the report.
#[derive(Clone, Debug)]
pub struct Section {
    /// Anchor and file-name prefix.
    pub id: String,
    /// Heading.
    pub title: String,
    /// What the section shows and why, in prose (no measured numbers: those are in `findings`).
    pub explanation: String,
    /// Sentences with measured numbers.
    pub findings: Vec<String>,
    /// The data.
    pub frames: Vec<Frame>,
    /// The plots.
    pub plots: Vec<Plot>,
}

/// How much work each measurement does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Effort {
    /// Samples per depth or recurrent batch.
    pub batch: usize,
    /// Epoch budget divisor for training runs (1 = the full run).
    pub shorten: usize,
    /// Products per cell of the formats section.
    pub products: u32,
}

impl Effort {
    /// The full report.
    pub const FULL: Effort = Effort {
        batch: 64,
        shorten: 1,
        products: 100_000,
    };
    /// `--quick`: small batches and short training, for CI.
    pub const QUICK: Effort = Effort {
        batch: 2,
        shorten: 10,
        products: 2_000,
    };
}

fn sci(x: f64) -> String {
    format!("{x:.2e}")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn first_last(r: &DepthResult) -> (f64, f64) {
    let g = |k: usize| r.layers.get(k).map_or(0.0, |l| l.grad_norm);
    (g(0), g(r.layers.len().saturating_sub(1)))
}

/// Layer-by-layer gradient norms of several depth runs, in long form.
fn long_frame(name: &str, runs: &[DepthResult]) -> Frame {
    let mut f = Frame::new(
        name,
        "",
        &[
            "activation",
            "init",
            "precision",
            "rounding",
            "loss_scale",
            "layer",
            "grad_norm",
            "backward_rms",
            "zero_grads",
            "underflow",
            "saturated",
        ],
    );
    for r in runs {
        for l in &r.layers {
            f.push(vec![
                r.activation.as_str().into(),
                r.init.as_str().into(),
                r.precision.as_str().into(),
                r.rounding.as_str().into(),
                r.loss_scale.into(),
                l.layer.into(),
                l.grad_norm.into(),
                l.backward_rms.into(),
                l.zero_fraction.into(),
                l.underflow.into(),
                l.saturated.into(),
            ]);
        }
    }
    f
}

fn rms_plot(name: &str, title: &str, runs: &[DepthResult]) -> Plot {
    let mut plot = Plot::new(
        name,
        title,
        "layer (1 = next to the input)",
        "RMS of the signal sent back (∂L/∂input)",
        true,
    );
    for r in runs {
        plot.line(
            depth::label(r),
            r.layers
                .iter()
                .map(|l| (l.layer as f64, l.backward_rms))
                .collect(),
        );
    }
    plot
}

fn formats(e: Effort) -> Result<Section> {
    let o = crate::formats::outcome(e.products, 1);
    let rate = |fmt: &str, k: i64, mode: &str| {
        o.frames[0]
            .rows
            .iter()
            .find(|r| {
                r[0] == fmt.into() && r[1] == crate::output::Cell::Int(k) && r[2] == mode.into()
            })
            .and_then(|r| match r[3] {
                crate::output::Cell::Num(v) => Some(v),
                _ => None,
            })
            .unwrap_or(f64::NAN)
    };
    Ok(Section {
        id: "formats".into(),
        title: "Number formats, and the products that vanish".into(),
        explanation: "Every gradient is a sum of products. A product smaller than half a format's LSB rounds to \
            zero: that is fixed-point underflow, before any network is involved. Floor rounding (a plain arithmetic \
            shift) loses positive small products and turns negative ones into −1 LSB, biasing every sum downward; \
            round-to-nearest loses them without bias; stochastic rounding keeps them on average."
            .into(),
        findings: vec![
            format!(
                "Products of operands ~2^-10 in I16F16: {} vanish with floor rounding, {} with round-to-nearest, {} with stochastic rounding; in f32, {}.",
                pct(rate("I16F16", 10, "floor")),
                pct(rate("I16F16", 10, "nearest")),
                pct(rate("I16F16", 10, "stochastic")),
                pct(rate("f32", 10, "nearest"))
            ),
            format!(
                "In I1F15 (Q15) the same happens at operands ~2^-8: {} vanish with round-to-nearest.",
                pct(rate("I1F15", 8, "nearest"))
            ),
        ],
        frames: o.frames,
        plots: o.plots,
    })
}

fn vanishing(e: Effort) -> Result<Section> {
    let cases = [
        ("sigmoid", "xavier_normal"),
        ("tanh", "xavier_normal"),
        ("relu", "kaiming_normal"),
        ("leaky_relu", "kaiming_normal"),
        ("elu", "kaiming_normal"),
        ("gelu", "kaiming_normal"),
        ("selu", "lecun_normal"),
    ];
    let cfgs = cases
        .iter()
        .map(|&(a, i)| {
            let act = Act::from_name(a).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(DepthConfig {
                batch: e.batch,
                ..DepthConfig::new(act, i, 32, 32, "f32")
            })
        })
        .collect::<Result<Vec<DepthConfig>>>()?;
    let runs = depth::sweep("vanishing", &cfgs)?;
    let mut f = Frame::new(
        "vanishing_summary",
        "",
        &[
            "activation",
            "init",
            "grad_norm_layer_1",
            "grad_norm_layer_32",
            "ratio",
        ],
    );
    let mut findings = Vec::new();
    for r in &runs {
        let (a, b) = first_last(r);
        f.push(vec![
            r.activation.as_str().into(),
            r.init.as_str().into(),
            a.into(),
            b.into(),
            (a / b).into(),
        ]);
        findings.push(format!(
            "{} ({}): layer 1 gets {} of layer 32's gradient norm.",
            r.activation,
            r.init,
            sci(a / b)
        ));
    }
    Ok(Section {
        id: "vanishing".into(),
        title: "Vanishing with depth: sigmoid and tanh against the ReLU family".into(),
        explanation: "32 dense layers of width 32 in f32, each activation under the initializer made for it, one \
            batch, MSE loss. Backpropagation multiplies the gradient by Wᵀ·diag(φ′(z)) at every layer; σ′ ≤ ¼ \
            shrinks it geometrically (Hochreiter 1991; Glorot & Bengio 2010), while ReLU's derivative of 1 on the \
            active half, with He initialization's variance 2/n, keeps its expected size (He et al. 2015)."
            .into(),
        findings,
        frames: vec![f, long_frame("vanishing", &runs)],
        plots: vec![depth::grad_plot("vanishing", "Gradient norm per layer, 32 layers, f32", &runs)],
    })
}

fn initialization(e: Effort) -> Result<Section> {
    let inits = [
        "constant",
        "standard",
        "xavier_normal",
        "kaiming_normal",
        "lecun_normal",
        "orthogonal",
    ];
    let mut cfgs = Vec::new();
    for act in [Act::Tanh, Act::Relu] {
        for init in inits {
            cfgs.push(DepthConfig {
                batch: e.batch,
                ..DepthConfig::new(act, init, 16, 32, "f32")
            });
        }
    }
    let runs = depth::sweep("initialization", &cfgs)?;
    let mut f = Frame::new(
        "initialization_summary",
        "",
        &[
            "activation",
            "init",
            "grad_norm_layer_1",
            "grad_norm_layer_16",
            "ratio",
            "distinct_units_layer_1",
        ],
    );
    let mut findings = Vec::new();
    for r in &runs {
        let (a, b) = first_last(r);
        let distinct = r.layers.first().map_or(0, |l| l.distinct_units);
        f.push(vec![
            r.activation.as_str().into(),
            r.init.as_str().into(),
            a.into(),
            b.into(),
            (a / b).into(),
            distinct.into(),
        ]);
        if r.init == "constant" {
            findings.push(format!(
                "{} with constant init: the first layer's 32 units get {} distinct gradient(s): symmetry is never broken.",
                r.activation, distinct
            ));
        }
    }
    for act in ["tanh", "relu"] {
        let of = |init: &str| {
            runs.iter()
                .find(|r| r.activation == act && r.init == init)
                .map(first_last)
        };
        if let (Some(s), Some(x), Some(h)) =
            (of("standard"), of("xavier_normal"), of("kaiming_normal"))
        {
            findings.push(format!(
                "{act}: layer 1 / layer 16 gradient norm is {} under \"standard\" U(±1/√n), {} under Xavier, {} under He.",
                sci(s.0 / s.1),
                sci(x.0 / x.1),
                sci(h.0 / h.1)
            ));
        }
    }
    let plot = |act: &str| {
        let sel: Vec<DepthResult> = runs
            .iter()
            .filter(|r| r.activation == act)
            .cloned()
            .collect();
        depth::grad_plot(
            &format!("initialization_{act}"),
            &format!("{act}: gradient norm per layer by initializer"),
            &sel,
        )
    };
    Ok(Section {
        id: "initialization".into(),
        title: "Initialization per activation".into(),
        explanation: "16 layers of width 32 in f32 under six initializers. Constant weights give every unit of a \
            layer the same output and the same gradient, so no number of steps can make them differ. Glorot & \
            Bengio's \"standard\" U(±1/√n) has variance 1/(3n) and shrinks a tanh signal by about √(1/3) per \
            layer; Xavier (2/(fan_in+fan_out)) keeps tanh's variance, He (2/fan_in) keeps ReLU's, LeCun (1/fan_in) \
            sits between, and orthogonal weights preserve norms exactly in the linear regime (Saxe et al. 2014)."
            .into(),
        findings,
        frames: vec![f, long_frame("initialization", &runs)],
        plots: vec![plot("tanh"), plot("relu")],
    })
}

fn rnn_cfg(cell: &str, scale: f64, gate_bias: f64, steps: usize, batch: usize) -> RnnConfig {
    RnnConfig {
        cell: cell.into(),
        steps,
        hidden: 16,
        recurrent_scale: scale,
        gate_bias,
        clip: Clip::None,
        precision: "f32".into(),
        rounding: "nearest".into(),
        seed: 1,
        batch,
    }
}

fn rnn_sweep(label: &str, cfgs: &[RnnConfig]) -> Result<Vec<RnnResult>> {
    crate::par::sweep(label, cfgs, rnn::run)
}

fn exploding(e: Effort) -> Result<Section> {
    let cfgs: Vec<DepthConfig> = ["f32", "i16f16", "i1f15"]
        .iter()
        .map(|p| DepthConfig {
            batch: e.batch,
            ..DepthConfig::new(Act::Relu, "normal", 16, 32, p)
        })
        .collect();
    let runs = depth::sweep("exploding", &cfgs)?;
    let rnns = rnn_sweep(
        "exploding rnn",
        &[
            rnn_cfg("rnn", 1.5, 0.0, 50, e.batch),
            rnn_cfg("irnn", 1.1, 0.0, 50, e.batch),
            rnn_cfg("irnn", 1.0, 0.0, 50, e.batch),
        ],
    )?;
    let mut findings = Vec::new();
    let mut f = Frame::new(
        "exploding_summary",
        "",
        &[
            "precision",
            "backward_rms_layer_1",
            "backward_rms_layer_16",
            "ratio",
            "saturated",
            "underflow",
        ],
    );
    for r in &runs {
        let rms = |k: usize| r.layers.get(k).map_or(0.0, |l| l.backward_rms);
        let (a, b) = (rms(0), rms(r.layers.len().saturating_sub(1)));
        let sat: u64 = r.layers.iter().map(|l| l.saturated as u64).sum();
        let und: u64 = r.layers.iter().map(|l| l.underflow as u64).sum();
        f.push(vec![
            r.precision.as_str().into(),
            a.into(),
            b.into(),
            (a / b).into(),
            sat.into(),
            und.into(),
        ]);
        findings.push(format!(
            "ReLU, N(0, 1) weights, {}: the signal layer 1 sends back is {} times the one layer 16 sends; {} values saturated.",
            r.precision,
            sci(a / b),
            sat
        ));
    }
    for r in &rnns {
        findings.push(format!(
            "{} with recurrent gain {} over 50 steps: ‖∂L/∂h_1‖ / ‖∂L/∂h_50‖ = {}.",
            r.cell,
            r.recurrent_scale,
            sci(r.first_over_last)
        ));
    }
    let (rf, rp) = rnn::frame_and_plot(
        "exploding_rnn",
        "Gradient through time with recurrent gain ≥ 1",
        &rnns,
    );
    Ok(Section {
        id: "exploding".into(),
        title: "Exploding: large weights and recurrent gain above one".into(),
        explanation: "The same product of Jacobians that vanishes also explodes: with weights N(0, 1) at width 32 each \
            ReLU layer multiplies the backward signal by about √(32/2) = 4. Floats carry the growth until they \
            overflow; fixed point saturates at its largest value (counted, never wrapped), and a saturated gradient \
            has lost its size and often its direction. Through time, a recurrent matrix with every singular value \
            above 1 grows the gradient geometrically (Pascanu et al. 2013)."
            .into(),
        findings,
        frames: vec![f, long_frame("exploding", &runs), rf],
        plots: vec![rms_plot("exploding", "ReLU with N(0,1) weights: back-propagated RMS per layer", &runs), rp],
    })
}

fn clipping(e: Effort) -> Result<Section> {
    let clips = [
        Clip::None,
        Clip::Value(0.01),
        Clip::Norm(1.0),
        Clip::Global(1.0),
        Clip::Agc(0.01),
    ];
    let cfgs: Vec<RnnConfig> = clips
        .iter()
        .map(|&c| RnnConfig {
            clip: c,
            ..rnn_cfg("rnn", 2.0, 0.0, 50, e.batch)
        })
        .collect();
    let runs = rnn_sweep("clipping", &cfgs)?;
    let mut f = Frame::new("clipping", "", &["clip", "norm_before", "norm_after"]);
    let mut findings = Vec::new();
    for r in &runs {
        f.push(vec![
            r.clip.to_string().into(),
            r.clipping.norm_before.into(),
            r.clipping.norm_after.into(),
        ]);
        if r.clip != Clip::None {
            findings.push(format!(
                "{}: the parameter gradient's norm goes from {} to {}.",
                r.clip,
                sci(r.clipping.norm_before),
                sci(r.clipping.norm_after)
            ));
        }
    }
    // Training through the explosion: the adding task with the recurrent gain raised.
    let data = crate::data::load("adding", 1, None)?;
    let base = TrainConfig {
        epochs: (10 / e.shorten).max(1),
        optimizer: "sgd".into(),
        lr: 1.0,
        ..TrainConfig::for_task("adding")
    };
    let tcfgs: Vec<TrainConfig> = [Clip::None, Clip::Global(1.0), Clip::Agc(0.05)]
        .iter()
        .map(|&c| TrainConfig {
            clip: c,
            ..base.clone()
        })
        .collect();
    let trained = crate::par::sweep("clipping train", &tcfgs, |c| train::run(c, &data))?;
    let mut tf = Frame::new(
        "clipping_train",
        "",
        &["clip", "epoch", "train_loss", "test_loss", "grad_norm"],
    );
    let mut plot = Plot::new(
        "clipping_train",
        "Adding task, IRNN, SGD with lr 1: training loss",
        "epoch",
        "training loss",
        true,
    );
    for r in &trained {
        for ep in &r.epochs {
            tf.push(vec![
                r.config.clip.to_string().into(),
                ep.epoch.into(),
                ep.train_loss.into(),
                ep.test_loss.into(),
                ep.grad_norm.into(),
            ]);
        }
        plot.line(
            format!("clip {}", r.config.clip),
            r.epochs
                .iter()
                .map(|e| (e.epoch as f64, e.train_loss))
                .collect(),
        );
        findings.push(format!(
            "Adding task, clip {}: {}.",
            r.config.clip,
            match (&r.divergence, r.last()) {
                (Some(d), _) => train::describe(d),
                (None, Some(l)) =>
                    format!("held-out MSE {:.4} after {} epochs", l.test_loss, l.epoch),
                (None, None) => "no epochs".into(),
            }
        ));
    }
    Ok(Section {
        id: "clipping".into(),
        title: "Clipping tames the explosion".into(),
        explanation: "A tanh RNN whose recurrent matrix has every singular value 2, over 50 steps: the parameter \
            gradient's norm before and after each clipping rule. Value clipping bounds each element (and changes \
            the direction), per-tensor and global-norm clipping rescale (global keeps the direction; Pascanu et al. \
            2013), and adaptive gradient clipping bounds each unit's gradient relative to its weights (Brock et \
            al. 2021). Below, the adding problem (Hochreiter & Schmidhuber 1997) trained with a large learning rate, \
            with and without clipping."
            .into(),
        findings,
        frames: vec![f, tf],
        plots: vec![plot],
    })
}

fn architecture(_e: Effort) -> Result<Section> {
    let runs = crate::par::sweep("architecture", &flow::ARCHS, |a| {
        flow::run(a, "standard", 30, 1)
    })?;
    let mut f = Frame::new("architecture", "", &["arch", "block", "grad_norm"]);
    let mut plot = Plot::new(
        "architecture",
        "30 tanh blocks, U(±1/√n): gradient norm per block",
        "block (1 = next to the input)",
        "‖∂L/∂θ‖",
        true,
    );
    let mut findings = Vec::new();
    for r in &runs {
        for (k, g) in r.grad_norms.iter().enumerate() {
            f.push(vec![r.arch.as_str().into(), (k + 1).into(), (*g).into()]);
        }
        plot.line(
            r.arch.clone(),
            r.grad_norms
                .iter()
                .enumerate()
                .map(|(k, &g)| ((k + 1) as f64, g))
                .collect(),
        );
        let (a, b) = (
            r.grad_norms.first().copied().unwrap_or(0.0),
            r.grad_norms.last().copied().unwrap_or(0.0),
        );
        findings.push(format!(
            "{}: block 1 gets {} of block 30's gradient norm.",
            r.arch,
            sci(a / b)
        ));
    }
    Ok(Section {
        id: "architecture".into(),
        title: "Residual connections and batch normalization restore gradient flow".into(),
        explanation: "The same 30 tanh blocks of width 32 with Glorot & Bengio's \"standard\" U(±1/√n) weights, f32, \
            a batch of 16: plain, residual (x + tanh(Wx): the identity path carries the gradient past every \
            block, He et al. 2016), and with batch normalization before the activation (each layer's input \
            renormalized to unit variance over the batch, which undoes the shrinking, Ioffe & Szegedy 2015)."
            .into(),
        findings,
        frames: vec![f],
        plots: vec![plot],
    })
}

fn recurrent(e: Effort) -> Result<Section> {
    let cfgs = [
        rnn_cfg("rnn", 1.0, 0.0, 50, e.batch),
        rnn_cfg("irnn", 1.0, 0.0, 50, e.batch),
        rnn_cfg("lstm", 1.0, 0.0, 50, e.batch),
        rnn_cfg("lstm", 1.0, 1.0, 50, e.batch),
        rnn_cfg("gru", 1.0, 0.0, 50, e.batch),
        rnn_cfg("gru", 1.0, 2.0, 50, e.batch),
    ];
    let runs = rnn_sweep("recurrent", &cfgs)?;
    let (f, p) = rnn::frame_and_plot("recurrent", "‖∂L/∂h_t‖ through 50 steps", &runs);
    let findings = runs
        .iter()
        .map(|r| {
            let bias = if matches!(r.cell.as_str(), "lstm" | "gru") {
                format!(" (gate bias {})", r.gate_bias)
            } else {
                String::new()
            };
            format!(
                "{}{bias}: ‖∂L/∂h_1‖ / ‖∂L/∂h_50‖ = {}.",
                r.cell,
                sci(r.first_over_last)
            )
        })
        .collect();
    Ok(Section {
        id: "recurrent".into(),
        title: "Through time: RNN, IRNN, LSTM and GRU".into(),
        explanation: "Hidden size 16, 50 steps, the loss on the last state, f32. The tanh RNN (orthogonal recurrent \
            weights) loses the gradient through tanh′ < 1 at every step; the IRNN (ReLU, identity recurrent \
            weights; Le et al. 2015) passes it unchanged through its active units; LSTM and GRU carry it through a \
            gated additive path whose strength depends on the gate: with every bias zero a gate sits at σ(0) = ½ \
            and halves the carried gradient each step; a positive forget-gate (LSTM, Gers et al. 2000) or \
            update-gate (GRU) bias opens it."
            .into(),
        findings,
        frames: vec![f],
        plots: vec![p],
    })
}

fn regularization(e: Effort) -> Result<Section> {
    let data = crate::data::load("spiral", 1, None)?;
    let base = TrainConfig {
        epochs: (300 / e.shorten).max(1),
        ..TrainConfig::for_task("spiral")
    };
    let cfgs: Vec<TrainConfig> = [0.0, 1e-3, 1e-2]
        .iter()
        .map(|&wd| TrainConfig {
            weight_decay: wd,
            ..base.clone()
        })
        .collect();
    let runs = crate::par::sweep("regularization", &cfgs, |c| train::run(c, &data))?;
    let mut f = Frame::new(
        "regularization",
        "",
        &[
            "weight_decay",
            "epoch",
            "weight_norm",
            "grad_norm",
            "train_loss",
            "accuracy",
        ],
    );
    let mut plot = Plot::new(
        "regularization",
        "Spiral, 2-16-16-1 tanh: weight norm per epoch",
        "epoch",
        "‖θ‖",
        false,
    );
    let mut gplot = Plot::new(
        "regularization_grad",
        "Spiral: gradient norm per epoch",
        "epoch",
        "mean ‖∂L/∂θ‖",
        true,
    );
    let mut findings = Vec::new();
    for r in &runs {
        let wd = r.config.weight_decay;
        for ep in &r.epochs {
            f.push(vec![
                wd.into(),
                ep.epoch.into(),
                ep.weight_norm.into(),
                ep.grad_norm.into(),
                ep.train_loss.into(),
                ep.accuracy.into(),
            ]);
        }
        plot.line(
            format!("weight decay {wd}"),
            r.epochs
                .iter()
                .map(|e| (e.epoch as f64, e.weight_norm))
                .collect(),
        );
        gplot.line(
            format!("weight decay {wd}"),
            r.epochs
                .iter()
                .map(|e| (e.epoch as f64, e.grad_norm))
                .collect(),
        );
        if let Some(l) = r.last() {
            findings.push(format!(
                "weight decay {wd}: final weight norm {:.3}, gradient norm {}, held-out accuracy {}.",
                l.weight_norm,
                sci(l.grad_norm),
                pct(l.accuracy)
            ));
        }
    }
    Ok(Section {
        id: "regularization".into(),
        title: "L2 regularization: weight and gradient norms".into(),
        explanation: "Two interleaved spirals, a 2-16-16-1 tanh network, SGD with momentum 0.9, coupled L2 weight \
            decay (PyTorch's weight_decay) at three strengths, f32. Decay pulls every weight toward zero each step, \
            bounding the weight norm, which bounds how far the activations saturate and how large the products of \
            Jacobians can grow."
            .into(),
        findings,
        frames: vec![f],
        plots: vec![plot, gplot],
    })
}

fn horizon(e: Effort) -> Result<Section> {
    let mk = |p: &str, rounding: &str, scale: f64| DepthConfig {
        batch: e.batch,
        rounding: rounding.into(),
        loss_scale: scale,
        ..DepthConfig::new(Act::Sigmoid, "xavier_normal", 32, 32, p)
    };
    let cfgs = vec![
        mk("f32", "nearest", 1.0),
        mk("i16f16", "floor", 1.0),
        mk("i16f16", "nearest", 1.0),
        mk("i16f16", "stochastic", 1.0),
        mk("i16f16", "nearest", 4096.0),
        mk("i1f15", "nearest", 1.0),
        mk("i1f15", "stochastic", 1.0),
        mk("i1f15", "nearest", 64.0),
    ];
    let runs = depth::sweep("horizon", &cfgs)?;
    let mut f = Frame::new(
        "horizon_rounding",
        "",
        &[
            "precision",
            "rounding",
            "loss_scale",
            "grad_norm_layer_1",
            "zero_grads_layer_1",
            "horizon_measured",
            "horizon_predicted",
        ],
    );
    let mut findings = Vec::new();
    for r in &runs {
        let l1 = r.layers.first();
        f.push(vec![
            r.precision.as_str().into(),
            r.rounding.as_str().into(),
            r.loss_scale.into(),
            l1.map(|l| l.grad_norm).into(),
            l1.map(|l| l.zero_fraction).into(),
            r.measured_horizon.into(),
            r.predicted_horizon.into(),
        ]);
        let h = r.measured_horizon.map_or_else(
            || "beyond all 32 layers".to_string(),
            |h| format!("{h} layers from the output"),
        );
        findings.push(format!(
            "{} {}{}: signal below one LSB {h}; {} of layer 1's gradients are exactly zero.",
            r.precision,
            r.rounding,
            if r.loss_scale != 1.0 {
                format!(", loss scale {}", r.loss_scale)
            } else {
                String::new()
            },
            pct(l1.map_or(0.0, |l| l.zero_fraction))
        ));
    }
    let table = depth::horizon_outcome(64, 32, e.batch, 1)?;
    let plot = rms_plot(
        "horizon",
        "Sigmoid, Xavier, 32 layers: back-propagated RMS per layer",
        &runs,
    );
    let mut frames = vec![f];
    frames.extend(table.frames);
    let mut plots = vec![plot];
    plots.extend(table.plots);
    Ok(Section {
        id: "horizon".into(),
        title: "The fixed-point underflow horizon, rounding and loss scaling".into(),
        explanation: "The back-propagated signal of a sigmoid stack shrinks by about 4× per layer; in fixed point it \
            reaches one LSB after a few layers and every gradient below that depth is exactly zero (the horizon). \
            Floor rounding turns small negative values into −1 LSB instead of 0, so fewer gradients are exactly zero \
            but those that remain are biased noise. Stochastic rounding keeps each rounded value's expectation, which \
            helps while the signal is within a few orders of magnitude of the LSB; a signal far below it still rounds \
            to zero almost surely. Loss scaling (Micikevicius et al. 2018) multiplies the output gradient so the horizon moves \
            deeper by log₄ of the scale. The second table is the horizon per format, activation and initializer \
            through 64 layers, measured and predicted by the mean-field model (Poole et al. 2016; Schoenholz et al. \
            2017)."
            .into(),
        findings,
        frames,
        plots,
    })
}

fn recipe(c: &TrainConfig) -> String {
    let mut s = format!("{} {}", c.precision, c.rounding);
    if c.optimizer != "momentum" {
        s += &format!(" {} lr {}", c.optimizer, c.lr);
    }
    if c.output_scale != 1.0 {
        s += &format!(" output scale {}", c.output_scale);
    }
    s
}

fn digits(e: Effort) -> Result<Section> {
    let data = crate::data::load("digits", 1, None)?;
    let base = TrainConfig {
        epochs: (15 / e.shorten).max(1),
        ..TrainConfig::for_task("digits")
    };
    let mut cfgs: Vec<TrainConfig> = [
        ("f32", "nearest"),
        ("i16f16", "nearest"),
        ("i16f16", "stochastic"),
        ("i1f15", "nearest"),
        ("i1f15", "stochastic"),
    ]
    .iter()
    .map(|&(p, r)| TrainConfig {
        precision: p.into(),
        rounding: r.into(),
        ..base.clone()
    })
    .collect();
    // The fixed-point recipe: logits read as 8·y, Adam's normalized steps, stochastic rounding.
    cfgs.push(TrainConfig {
        precision: "i1f15".into(),
        rounding: "stochastic".into(),
        optimizer: "adam".into(),
        lr: 0.001,
        output_scale: 8.0,
        ..base.clone()
    });
    let runs: Vec<TrainResult> = crate::par::sweep("digits", &cfgs, |c| train::run(c, &data))?;
    let mut f = Frame::new(
        "digits",
        "",
        &[
            "precision",
            "rounding",
            "optimizer",
            "lr",
            "output_scale",
            "test_loss",
            "accuracy",
            "underflow_rate",
            "saturation_rate",
            "zero_grad_fraction",
            "diverged_at_step",
        ],
    );
    let mut plot = Plot::new(
        "digits",
        "Digits, 64-32-10 ReLU: held-out accuracy per epoch",
        "epoch",
        "held-out accuracy",
        false,
    );
    let mut findings = Vec::new();
    for r in &runs {
        let l = r.last();
        f.push(vec![
            r.config.precision.as_str().into(),
            r.config.rounding.as_str().into(),
            r.config.optimizer.as_str().into(),
            r.config.lr.into(),
            r.config.output_scale.into(),
            l.map(|e| e.test_loss).into(),
            l.map(|e| e.accuracy).into(),
            l.map(|e| e.underflow_rate).into(),
            l.map(|e| e.saturation_rate).into(),
            l.map(|e| e.zero_grad_fraction).into(),
            r.divergence.as_ref().map(|d| d.step).into(),
        ]);
        plot.line(
            recipe(&r.config),
            r.epochs
                .iter()
                .map(|e| (e.epoch as f64, e.accuracy))
                .collect(),
        );
        findings.push(format!(
            "{}: held-out accuracy {}, {} of gradient values underflowed, {} of values saturated{}.",
            recipe(&r.config),
            pct(l.map_or(0.0, |e| e.accuracy)),
            pct(l.map_or(0.0, |e| e.underflow_rate)),
            pct(l.map_or(0.0, |e| e.saturation_rate)),
            r.divergence.as_ref().map_or(String::new(), |d| format!("; {}", train::describe(d)))
        ));
    }
    Ok(Section {
        id: "digits".into(),
        title: "Precision on real data: the 8×8 digits".into(),
        explanation: "A 64-32-10 ReLU network trained on 80% of the 1797 handwritten digits (UCI, via scikit-learn) \
            with SGD and momentum, evaluated on the other 20%, in f32, I16F16 and I1F15, with round-to-nearest and \
            stochastic rounding. I1F15 holds values in (−1, 1) only, so its logits cannot separate the classes and \
            the loss keeps pushing the weights into saturation; the last row is a fixed-point recipe against that: \
            the loss reads the outputs as 8·y (logits in (−8, 8)), Adam takes normalized steps, and rounding is \
            stochastic. The rates are of the last epoch: gradient values (backward signal and parameter gradients) \
            that underflowed to zero, and values anywhere that saturated."
            .into(),
        findings,
        frames: vec![f],
        plots: vec![plot],
    })
}

fn events(e: Effort) -> Result<Section> {
    let cfgs: Vec<DepthConfig> = ["f32", "i16f16", "i8f24", "i1f15"]
        .iter()
        .map(|p| DepthConfig {
            batch: e.batch,
            ..DepthConfig::new(Act::Relu, "normal", 64, 32, p)
        })
        .collect();
    let runs = depth::sweep("events", &cfgs)?;
    let mut f = Frame::new(
        "events",
        "",
        &[
            "precision",
            "saturated",
            "underflow",
            "nonfinite",
            "first_forward_saturation",
            "first_nonfinite",
            "loss",
        ],
    );
    let mut findings = Vec::new();
    for r in &runs {
        let total =
            |g: fn(&depth::DepthRow) -> u32| r.layers.iter().map(|l| g(l) as u64).sum::<u64>();
        let (sat, nf) = (total(|l| l.saturated), total(|l| l.nonfinite));
        let nf_at = r
            .first_nonfinite
            .as_ref()
            .map(|(k, p, _)| format!("layer {k}, {p} pass"));
        f.push(vec![
            r.precision.as_str().into(),
            sat.into(),
            total(|l| l.underflow).into(),
            nf.into(),
            r.first_forward_saturated.into(),
            nf_at.clone().into(),
            r.loss.into(),
        ]);
        findings.push(match (&r.first_nonfinite, r.first_forward_saturated) {
            (Some((k, p, overflow)), _) => format!(
                "{}: {} values overflowed and {} became non-finite, first in layer {k}'s {p} pass{}; the loss is {}.",
                r.precision,
                sat,
                nf,
                if *overflow { " (caused by overflow there)" } else { "" },
                sci(r.loss)
            ),
            (None, Some(k)) => format!(
                "{}: {} values saturated, the first in layer {k}'s forward pass; none became non-finite (fixed point saturates, it never wraps); the loss is {}.",
                r.precision, sat, sci(r.loss)
            ),
            (None, None) => format!("{}: no value saturated.", r.precision),
        });
    }
    Ok(Section {
        id: "events".into(),
        title: "Saturation and overflow counts".into(),
        explanation: "A 64-layer ReLU stack with weights N(0, 1): the forward signal grows about 4× per layer, so it \
            outgrows every format. f32 overflows to ∞ and then to NaN (∞ − ∞, 0·∞), which the core counts as \
            non-finite and traces to the layer where it began; each fixed-point format saturates at its largest \
            value instead, counted per value. Neither is silent."
            .into(),
        findings,
        frames: vec![f],
        plots: vec![rms_plot("events", "ReLU, N(0,1), 64 layers: back-propagated RMS per layer", &runs)],
    })
}

type Builder = fn(Effort) -> Result<Section>;

/// Section ids, in report order.
pub const SECTIONS: [&str; 11] = [
    "formats",
    "vanishing",
    "initialization",
    "exploding",
    "clipping",
    "architecture",
    "recurrent",
    "regularization",
    "horizon",
    "events",
    "digits",
];

/// One section by id (one of [`SECTIONS`]).
pub fn section(id: &str, e: Effort) -> Result<Section> {
    let k = SECTIONS.iter().position(|s| *s == id).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown section '{id}': choose one of {}",
            SECTIONS.join(", ")
        )
    })?;
    BUILDERS[k](e)
}

const BUILDERS: [Builder; 11] = [
    formats,
    vanishing,
    initialization,
    exploding,
    clipping,
    architecture,
    recurrent,
    regularization,
    horizon,
    events,
    digits,
];

/// Every section, in order.
pub fn sections(e: Effort) -> Result<Vec<Section>> {
    BUILDERS.iter().map(|b| b(e)).collect()
}

/// The printed summary: one row per finding.
pub fn summary(sections: &[Section]) -> Outcome {
    let mut f = Frame::new("summary", "", &["section", "finding"]);
    for s in sections {
        for fd in &s.findings {
            f.push(vec![s.id.as_str().into(), fd.as_str().into()]);
        }
    }
    let json = sections
        .iter()
        .map(|s| serde_json::json!({"id": s.id, "title": s.title, "findings": s.findings}))
        .collect::<Vec<_>>()
        .into();
    Outcome {
        name: "summary".into(),
        heading: "gradscope report".into(),
        frames: vec![f],
        plots: Vec::new(),
        notes: Vec::new(),
        json,
    }
}

/// Write the report: `index.html`, and per section its CSVs, SVGs and one JSON. Returns the index's path.
pub fn write_html(sections: &[Section], dir: &OutDir, quick: bool) -> Result<std::path::PathBuf> {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gradscope report</title>\n<style>\
         body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}\
         table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.15rem .4rem}\
         td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}details{margin:.4rem 0}\
         </style></head><body>\n<h1>gradscope report</h1>\n",
    );
    let _ = writeln!(
        html,
        "<p>Vanishing and exploding gradients, and fixed-point underflow and overflow, measured. Every number below \
         is computed by this run{}; each table's data is linked as CSV, each section's as JSON.</p>\n<ul>",
        if quick {
            " (<code>--quick</code>: small batches and short training)"
        } else {
            ""
        }
    );
    for s in sections {
        let _ = writeln!(
            html,
            "<li><a href=\"#{}\">{}</a></li>",
            s.id,
            escape(&s.title)
        );
    }
    html += "</ul>\n";
    for s in sections {
        let _ = writeln!(
            html,
            "<h2 id=\"{}\">{}</h2>\n<p>{}</p>\n<ul>",
            s.id,
            escape(&s.title),
            escape(&s.explanation)
        );
        for fd in &s.findings {
            let _ = writeln!(html, "<li>{}</li>", escape(fd));
        }
        html += "</ul>\n";
        for p in &s.plots {
            dir.write(&format!("{}.svg", p.name), p.svg().as_bytes())?;
            let _ = writeln!(
                html,
                "<p><img src=\"{}.svg\" alt=\"{}\"></p>",
                p.name,
                escape(&p.title)
            );
        }
        let mut json = serde_json::Map::new();
        for f in &s.frames {
            dir.write(&format!("{}.csv", f.name), f.csv().as_bytes())?;
            json.insert(f.name.clone(), f.json());
            let rows = f.rows.len();
            if rows <= 40 {
                html += &f.html();
            } else {
                let _ = writeln!(
                    html,
                    "<details><summary>{} ({rows} rows)</summary>\n{}</details>",
                    f.name,
                    f.html()
                );
            }
            let _ = writeln!(html, "<p><a href=\"{0}.csv\">{0}.csv</a></p>", f.name);
        }
        let _ = writeln!(html, "<p><a href=\"{0}.json\">{0}.json</a></p>", s.id);
        let doc =
            serde_json::json!({"id": s.id, "title": s.title, "findings": s.findings, "data": json});
        dir.write(
            &format!("{}.json", s.id),
            (serde_json::to_string_pretty(&doc)? + "\n").as_bytes(),
        )?;
    }
    html += "</body></html>\n";
    dir.write("index.html", html.as_bytes())
}
