//! Precision effects: each format's gradients against the same workload computed in f64.
//!
//! The workloads use the same seeds in every precision, so the weights and data are the f64 ones rounded into
//! the format (stochastic rounding draws from its own stream): the difference to f64 is what the format does.
//! - a deep stack (16 tanh layers of width 32, Xavier, batch 16): per layer, the relative error of the
//!   weight-and-bias gradient, ‖g − g₆₄‖ / ‖g₆₄‖, and the share of gradient values that are exactly zero
//!   where f64's are not (underflowed);
//! - BPTT through a tanh RNN (16 units, 50 steps, orthogonal recurrent weights): the same per parameter
//!   tensor, and per time step the relative error of ‖∂L/∂h_t‖;
//! - training on the digits (64-32-10, 15 epochs): the final held-out accuracy against f64's.

use anyhow::{Result, anyhow, bail};
use gradscope_core::Act;

use crate::depth::{self, DepthConfig};
use crate::dump::Dump;
use crate::options::{Cell as RnnCell, InitName, Precision, Rounding, Task};
use crate::output::{Frame, Outcome};
use crate::plot::Plot;
use crate::rnn::{self, RnnConfig};
use crate::train::{self, TrainConfig};

/// (precision, rounding) pairs compared with f64.
pub const VARIANTS: [(Precision, Rounding); 8] = [
    (Precision::F32, Rounding::Nearest),
    (Precision::Bf16, Rounding::Nearest),
    (Precision::I16F16, Rounding::Nearest),
    (Precision::I16F16, Rounding::Stochastic),
    (Precision::I8F24, Rounding::Nearest),
    (Precision::F16, Rounding::Nearest),
    (Precision::I1F15, Rounding::Nearest),
    (Precision::I1F15, Rounding::Stochastic),
];

/// Relative L2 error of `got` against `want`, and the share of `want`'s non-zero entries that `got` has as 0.
pub fn compare(got: &[f64], want: &[f64]) -> (f64, f64) {
    let (mut diff, mut norm, mut nonzero, mut lost) = (0.0, 0.0, 0usize, 0usize);
    for (g, w) in got.iter().zip(want) {
        diff += (g - w) * (g - w);
        norm += w * w;
        if *w != 0.0 {
            nonzero += 1;
            lost += (*g == 0.0) as usize;
        }
    }
    let rel = if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    };
    (
        rel,
        if nonzero == 0 {
            0.0
        } else {
            lost as f64 / nonzero as f64
        },
    )
}

/// Every layer's gradients (all of its `grad_*` tensors, concatenated).
fn layer_grads(dump: &Dump) -> Vec<Vec<f64>> {
    dump.layers.iter().map(|l| l.gradients()).collect()
}

/// The values of one tensor of the first layer.
fn tensor(dump: &Dump, name: &str) -> Result<Vec<f64>> {
    dump.layers
        .first()
        .and_then(|l| l.tensor(name))
        .map(|t| t.values.clone())
        .ok_or_else(|| anyhow!("the dump has no {name}"))
}

/// One row of the summary: a format's error against f64 on a workload.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EffectRow {
    /// The workload.
    pub workload: &'static str,
    /// The format.
    pub precision: Precision,
    /// Its rounding.
    pub rounding: Rounding,
    /// Maximum relative gradient error over layers or tensors (deep stack and RNN).
    pub max_relative_error: Option<f64>,
    /// Share of gradient values that underflowed to zero where f64's are not.
    pub underflowed: Option<f64>,
    /// Held-out accuracy after training (digits).
    pub accuracy: Option<f64>,
    /// f64's held-out accuracy.
    pub accuracy_f64: Option<f64>,
    /// Instructions per 4-8-8-1 training step on the Cortex-M4F, in this format (see [`step_cost`]).
    pub m4f_step_instructions: Option<u64>,
    /// The same on the Cortex-M0 (soft-float f32).
    pub m0_step_instructions: Option<u64>,
}

/// The firmware's measured costs: `target,format,kernel,instructions` rows, written by `python3 ci/figures.py`
/// from the QEMU runs (CI fails when this file no longer matches the firmware).
pub const MCU_COSTS: &str = include_str!("../data/mcu-costs.csv");

/// Instructions per training step of the firmware's 4-8-8-1 tanh network (batch 1, MSE, SGD,
/// round-to-nearest-even) on `target` ("M4F" or "M0") in `precision`, counted under QEMU; `None` where the
/// firmware does not measure it (f64, and rounding modes other than nearest).
pub fn step_cost(target: &str, precision: Precision, rounding: Rounding) -> Option<u64> {
    if precision == Precision::F64 {
        return None;
    }
    let name = crate::with_scalar!(precision, S => <S as gradscope_core::Scalar>::NAME);
    if rounding != Rounding::Nearest {
        return None;
    }
    MCU_COSTS.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split(',').collect();
        match f[..] {
            [t, p, "train_step_4-8-8-1", n] if t == target && p == name => n.parse().ok(),
            _ => None,
        }
    })
}

impl EffectRow {
    fn new(workload: &'static str, precision: Precision, rounding: Rounding) -> EffectRow {
        EffectRow {
            workload,
            precision,
            rounding,
            max_relative_error: None,
            underflowed: None,
            accuracy: None,
            accuracy_f64: None,
            m4f_step_instructions: step_cost("M4F", precision, rounding),
            m0_step_instructions: step_cost("M0", precision, rounding),
        }
    }
}

/// The deep-stack workload's name.
pub const DEPTH: &str = "depth (16 tanh layers)";
/// The RNN workload's name.
pub const RNN: &str = "rnn (tanh, 50 steps)";
/// The training workload's name.
pub const DIGITS: &str = "digits (64-32-10, trained)";

/// Every workload in f64 and in each variant of the given precisions (all of [`VARIANTS`] when empty): the
/// summary rows and the outcome.
pub fn run(quick: bool, precisions: &[Precision]) -> Result<(Vec<EffectRow>, Outcome)> {
    let variants: Vec<(Precision, Rounding)> = VARIANTS
        .iter()
        .copied()
        .filter(|(p, _)| precisions.is_empty() || precisions.contains(p))
        .collect();
    if variants.is_empty() {
        bail!(
            "precision-effects compares formats with f64: choose among {}",
            VARIANTS
                .iter()
                .map(|(p, _)| p.name())
                .fold(Vec::<&str>::new(), |mut v, n| {
                    if !v.contains(&n) {
                        v.push(n);
                    }
                    v
                })
                .join(", ")
        );
    }
    let batch = if quick { 2 } else { 16 };
    let mut rows = Vec::new();
    // Deep stack.
    let mk_depth = |p: Precision, r: Rounding| DepthConfig {
        batch,
        rounding: r,
        ..DepthConfig::new(Act::Tanh, InitName::XavierNormal, 16, 32, p)
    };
    let mut cfgs = vec![mk_depth(Precision::F64, Rounding::Nearest)];
    cfgs.extend(variants.iter().map(|&(p, r)| mk_depth(p, r)));
    let runs = depth::sweep("effects: depth", &cfgs)?;
    let reference = layer_grads(&runs[0].dump);
    let mut depth_f = Frame::new(
        "effects_depth",
        "",
        &[
            "precision",
            "rounding",
            "layer",
            "relative_error",
            "underflowed",
        ],
    );
    let mut depth_p = Plot::new(
        "effects_depth",
        "16 tanh layers: relative gradient error against f64, per layer",
        "layer (1 = next to the input)",
        "‖g − g_f64‖ / ‖g_f64‖",
        true,
    );
    for r in &runs[1..] {
        let grads = layer_grads(&r.dump);
        let mut pts = Vec::new();
        let (mut worst, mut lost_all, mut count_all) = (0.0f64, 0.0, 0.0);
        for (k, (g, want)) in grads.iter().zip(&reference).enumerate() {
            let (rel, lost) = compare(g, want);
            depth_f.push(vec![
                r.precision.name().into(),
                r.rounding.name().into(),
                (k + 1).into(),
                rel.into(),
                lost.into(),
            ]);
            pts.push(((k + 1) as f64, rel));
            worst = worst.max(rel);
            lost_all += lost * want.iter().filter(|v| **v != 0.0).count() as f64;
            count_all += want.iter().filter(|v| **v != 0.0).count() as f64;
        }
        depth_p.line(format!("{} {}", r.precision, r.rounding), pts);
        rows.push(EffectRow {
            max_relative_error: Some(worst),
            underflowed: Some(lost_all / count_all.max(1.0)),
            ..EffectRow::new(DEPTH, r.precision, r.rounding)
        });
    }
    // RNN BPTT.
    let mk_rnn = |p: Precision, r: Rounding| RnnConfig {
        precision: p,
        rounding: r,
        batch,
        ..RnnConfig::new(RnnCell::Rnn, 1.0, 0.0, 50)
    };
    let mut rcfgs = vec![mk_rnn(Precision::F64, Rounding::Nearest)];
    rcfgs.extend(variants.iter().map(|&(p, r)| mk_rnn(p, r)));
    let rnns = crate::par::sweep("effects: rnn", &rcfgs, rnn::run)?;
    let tensors = ["grad_weight_ih", "grad_weight_hh", "grad_bias"];
    let want: Vec<Vec<f64>> = tensors
        .iter()
        .map(|t| tensor(&rnns[0].dump, t))
        .collect::<Result<_>>()?;
    let mut rnn_f = Frame::new(
        "effects_rnn",
        "",
        &[
            "precision",
            "rounding",
            "tensor",
            "relative_error",
            "underflowed",
        ],
    );
    let mut rnn_p = Plot::new(
        "effects_rnn",
        "tanh RNN, 50 steps: relative error of ‖∂L/∂h_t‖ against f64",
        "time step t",
        "|‖∂L/∂h_t‖ / f64's − 1|",
        true,
    );
    for r in &rnns[1..] {
        let (mut worst, mut lost_sum, mut n_sum) = (0.0f64, 0.0, 0.0);
        for (t, w) in tensors.iter().zip(&want) {
            let g = tensor(&r.dump, t)?;
            let (rel, lost) = compare(&g, w);
            rnn_f.push(vec![
                r.precision.name().into(),
                r.rounding.name().into(),
                (*t).into(),
                rel.into(),
                lost.into(),
            ]);
            worst = worst.max(rel);
            let nz = w.iter().filter(|v| **v != 0.0).count() as f64;
            lost_sum += lost * nz;
            n_sum += nz;
        }
        rnn_p.line(
            format!("{} {}", r.precision, r.rounding),
            r.per_step
                .iter()
                .zip(&rnns[0].per_step)
                .map(|(a, b)| (a.step as f64, (a.grad_norm / b.grad_norm - 1.0).abs()))
                .collect(),
        );
        rows.push(EffectRow {
            max_relative_error: Some(worst),
            underflowed: Some(lost_sum / n_sum.max(1.0)),
            ..EffectRow::new(RNN, r.precision, r.rounding)
        });
    }
    // Digits training.
    let data = crate::data::load(Task::Digits, 1, None)?;
    let base = TrainConfig {
        epochs: if quick { 1 } else { 15 },
        ..TrainConfig::for_task(Task::Digits)
    };
    let mut tcfgs = vec![TrainConfig {
        precision: Precision::F64,
        ..base.clone()
    }];
    tcfgs.extend(variants.iter().map(|&(p, r)| TrainConfig {
        precision: p,
        rounding: r,
        ..base.clone()
    }));
    let trained = crate::par::sweep("effects: digits", &tcfgs, |c| train::run(c, &data))?;
    let acc = |r: &train::TrainResult| r.last().map(|e| e.accuracy);
    let acc64 = acc(&trained[0]);
    for r in &trained[1..] {
        rows.push(EffectRow {
            underflowed: r.last().map(|e| e.underflow_rate),
            accuracy: acc(r),
            accuracy_f64: acc64,
            ..EffectRow::new(DIGITS, r.config.precision, r.config.rounding)
        });
    }
    let summary = summary_frame(&rows)?;
    let json = serde_json::json!({
        "summary": summary.json(),
        "depth": depth_f.json(),
        "rnn": rnn_f.json(),
    });
    let outcome = Outcome {
        name: "precision_effects".into(),
        heading: format!(
            "Precision effects against f64 (batch {batch}{}): relative gradient error (max over layers or tensors),\n\
             share of gradient values that underflowed to zero where f64's are not (for digits: of the last\n\
             epoch's backward and gradient values), the digits' held-out accuracy, and what one training step\n\
             of the firmware's 4-8-8-1 network costs in the format (instructions under QEMU; round-to-nearest only)",
            if quick { ", --quick" } else { "" }
        ),
        frames: vec![summary, depth_f, rnn_f],
        plots: vec![depth_p, rnn_p],
        notes: Vec::new(),
        json,
    };
    Ok((rows, outcome))
}

/// The summary rows as a frame.
pub fn summary_frame(rows: &[EffectRow]) -> Result<Frame> {
    Frame::from_records("effects", "", rows)
}

/// The `precision-effects` subcommand's outcome.
pub fn outcome(quick: bool, precisions: &[Precision]) -> Result<Outcome> {
    Ok(run(quick, precisions)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparing_counts_lost_values() {
        let (rel, lost) = compare(&[1.0, 0.0, 2.0, 0.0], &[1.0, 1e-9, 2.0, 0.0]);
        assert!(rel < 1e-9 && (lost - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(compare(&[0.0], &[0.0]), (0.0, 0.0));
    }

    #[test]
    fn every_measured_format_has_a_step_cost_on_both_cores() {
        for target in ["M4F", "M0"] {
            for p in [
                Precision::F32,
                Precision::I16F16,
                Precision::I8F24,
                Precision::I1F15,
                Precision::F16,
                Precision::Bf16,
            ] {
                let n = step_cost(target, p, Rounding::Nearest);
                assert!(n.is_some_and(|n| n > 1000), "{target} {p:?}: {n:?}");
                assert_eq!(step_cost(target, p, Rounding::Stochastic), None);
            }
            assert_eq!(step_cost(target, Precision::F64, Rounding::Nearest), None);
        }
        // Soft float: on the M0 an f32 step costs several times the M4F's.
        let f32 = |t| step_cost(t, Precision::F32, Rounding::Nearest).unwrap();
        assert!(f32("M0") > 4 * f32("M4F"));
    }

    #[test]
    fn formats_rank_by_resolution() {
        let (rows, _) = run(true, &[]).unwrap();
        let err = |p: Precision| {
            rows.iter()
                .find(|r| {
                    r.workload == DEPTH && r.precision == p && r.rounding == Rounding::Nearest
                })
                .and_then(|r| r.max_relative_error)
                .unwrap()
        };
        // f32 (24-bit significand) < I8F24 (2^-24) < I16F16 (2^-16) < I1F15 (2^-15, and a narrow range).
        assert!(err(Precision::F32) < 1e-5, "{}", err(Precision::F32));
        assert!(err(Precision::F32) < err(Precision::I8F24));
        assert!(err(Precision::I8F24) < err(Precision::I16F16));
        assert!(err(Precision::I16F16) < err(Precision::I1F15));
        // f16 keeps 11 significant bits, bf16 8.
        assert!(err(Precision::F16) < err(Precision::Bf16));
    }
}
