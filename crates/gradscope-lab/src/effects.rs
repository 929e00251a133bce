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

use anyhow::{Result, anyhow};
use gradscope_core::Act;
use serde_json::Value;

use crate::depth::{self, DepthConfig};
use crate::output::{Frame, Outcome};
use crate::plot::Plot;
use crate::rnn::{self, RnnConfig};
use crate::spec::Clip;
use crate::train::{self, TrainConfig};

/// (precision, rounding) pairs compared with f64.
pub const VARIANTS: [(&str, &str); 6] = [
    ("f32", "nearest"),
    ("i16f16", "nearest"),
    ("i16f16", "stochastic"),
    ("i8f24", "nearest"),
    ("i1f15", "nearest"),
    ("i1f15", "stochastic"),
];

fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(numbers).collect(),
        Value::Number(n) => n.as_f64().into_iter().collect(),
        _ => Vec::new(),
    }
}

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

fn layer_grads(dump: &Value, keys: &[&str]) -> Result<Vec<Vec<f64>>> {
    dump["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("dump without layers"))?
        .iter()
        .map(|l| Ok(keys.iter().flat_map(|k| numbers(&l[*k])).collect()))
        .collect()
}

/// Run every workload in f64 and in each variant.
pub fn outcome(quick: bool) -> Result<Outcome> {
    let batch = if quick { 2 } else { 16 };
    // Deep stack.
    let mk_depth = |p: &str, r: &str| DepthConfig {
        batch,
        rounding: r.into(),
        ..DepthConfig::new(Act::Tanh, "xavier_normal", 16, 32, p)
    };
    let mut cfgs = vec![mk_depth("f64", "nearest")];
    cfgs.extend(VARIANTS.iter().map(|(p, r)| mk_depth(p, r)));
    let runs = depth::sweep("effects: depth", &cfgs)?;
    let reference = layer_grads(&runs[0].dump, &["grad_weight", "grad_bias"])?;
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
    let mut summary = Frame::new(
        "effects",
        "",
        &[
            "workload",
            "precision",
            "rounding",
            "max_relative_error",
            "underflowed",
            "accuracy",
            "accuracy_f64",
        ],
    );
    for r in &runs[1..] {
        let grads = layer_grads(&r.dump, &["grad_weight", "grad_bias"])?;
        let mut pts = Vec::new();
        let (mut worst, mut lost_all, mut count_all) = (0.0f64, 0.0, 0.0);
        for (k, (g, want)) in grads.iter().zip(&reference).enumerate() {
            let (rel, lost) = compare(g, want);
            depth_f.push(vec![
                r.precision.as_str().into(),
                r.rounding.as_str().into(),
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
        summary.push(vec![
            "depth (16 tanh layers)".into(),
            r.precision.as_str().into(),
            r.rounding.as_str().into(),
            worst.into(),
            (lost_all / count_all.max(1.0)).into(),
            crate::output::Cell::None,
            crate::output::Cell::None,
        ]);
    }
    // RNN BPTT.
    let mk_rnn = |p: &str, r: &str| RnnConfig {
        cell: "rnn".into(),
        steps: 50,
        hidden: 16,
        recurrent_scale: 1.0,
        gate_bias: 0.0,
        clip: Clip::None,
        precision: p.into(),
        rounding: r.into(),
        seed: 1,
        batch,
    };
    let mut rcfgs = vec![mk_rnn("f64", "nearest")];
    rcfgs.extend(VARIANTS.iter().map(|(p, r)| mk_rnn(p, r)));
    let rnns = crate::par::sweep("effects: rnn", &rcfgs, rnn::run)?;
    let tensors = ["grad_weight_ih", "grad_weight_hh", "grad_bias"];
    let want: Vec<Vec<f64>> = tensors
        .iter()
        .map(|t| numbers(&rnns[0].dump["layers"][0][*t]))
        .collect();
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
            let g = numbers(&r.dump["layers"][0][*t]);
            let (rel, lost) = compare(&g, w);
            rnn_f.push(vec![
                r.precision.as_str().into(),
                r.rounding.as_str().into(),
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
        summary.push(vec![
            "rnn (tanh, 50 steps)".into(),
            r.precision.as_str().into(),
            r.rounding.as_str().into(),
            worst.into(),
            (lost_sum / n_sum.max(1.0)).into(),
            crate::output::Cell::None,
            crate::output::Cell::None,
        ]);
    }
    // Digits training.
    let data = crate::data::load("digits", 1, None)?;
    let base = TrainConfig {
        epochs: if quick { 1 } else { 15 },
        ..TrainConfig::for_task("digits")
    };
    let mut tcfgs = vec![TrainConfig {
        precision: "f64".into(),
        ..base.clone()
    }];
    tcfgs.extend(VARIANTS.iter().map(|(p, r)| TrainConfig {
        precision: (*p).into(),
        rounding: (*r).into(),
        ..base.clone()
    }));
    let trained = crate::par::sweep("effects: digits", &tcfgs, |c| train::run(c, &data))?;
    let acc = |r: &train::TrainResult| r.last().map(|e| e.accuracy);
    let acc64 = acc(&trained[0]);
    for r in &trained[1..] {
        summary.push(vec![
            "digits (64-32-10, trained)".into(),
            r.config.precision.as_str().into(),
            r.config.rounding.as_str().into(),
            crate::output::Cell::None,
            r.last().map(|e| e.underflow_rate).into(),
            acc(r).into(),
            acc64.into(),
        ]);
    }
    let json = serde_json::json!({
        "summary": summary.json(),
        "depth": depth_f.json(),
        "rnn": rnn_f.json(),
    });
    Ok(Outcome {
        name: "precision_effects".into(),
        heading: format!(
            "Precision effects against f64 (batch {batch}{}): relative gradient error (max over layers or tensors),\n\
             share of gradient values that underflowed to zero where f64's are not (for digits: of the last\n\
             epoch's backward and gradient values), and the digits' held-out accuracy",
            if quick { ", --quick" } else { "" }
        ),
        frames: vec![summary, depth_f, rnn_f],
        plots: vec![depth_p, rnn_p],
        notes: Vec::new(),
        json,
    })
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
    fn formats_rank_by_resolution() {
        let o = outcome(true).unwrap();
        let f = &o.frames[0];
        let err = |p: &str| {
            f.rows
                .iter()
                .find(|r| {
                    r[0] == "depth (16 tanh layers)".into()
                        && r[1] == p.into()
                        && r[2] == "nearest".into()
                })
                .map(|r| match r[3] {
                    crate::output::Cell::Num(v) => v,
                    _ => f64::NAN,
                })
                .unwrap()
        };
        // f32 (24-bit significand) < I8F24 (2^-24) < I16F16 (2^-16) < I1F15 (2^-15, and a narrow range).
        assert!(err("f32") < 1e-5, "{}", err("f32"));
        assert!(err("f32") < err("i16f16") && err("i8f24") < err("i16f16"));
        assert!(err("i16f16") < err("i1f15"));
    }
}
