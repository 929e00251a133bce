//! The report's loss-function section: the loss as a cause of vanishing gradients.

use anyhow::Result;
use gradscope_core::Loss;

use super::*;
use crate::loss_cause::{self, MarginRow};

/// The training runs: (task, loss, output bias, label).
const RUNS: [(Task, Loss, f64, &str); 6] = [
    (Task::Xor, Loss::BceWithLogits, -6.0, "xor, BCE, bias −6"),
    (Task::Xor, Loss::Mse, -6.0, "xor, sigmoid + MSE, bias −6"),
    (
        Task::Digits,
        Loss::SoftmaxCrossEntropy,
        12.0,
        "digits, cross-entropy, bias 12",
    ),
    (
        Task::Digits,
        Loss::SoftmaxMse,
        12.0,
        "digits, softmax MSE, bias 12",
    ),
    (
        Task::Digits,
        Loss::SoftmaxCrossEntropy,
        0.0,
        "digits, cross-entropy",
    ),
    (Task::Digits, Loss::SoftmaxMse, 0.0, "digits, softmax MSE"),
];

/// One of a margin row's gradients.
type Grad = fn(&MarginRow) -> f64;

fn margin_at(rows: &[MarginRow], m: f64) -> Result<&MarginRow> {
    rows.iter()
        .find(|r| r.margin == m)
        .ok_or_else(|| anyhow!("no margin {m}"))
}

fn zero_at(m: Option<f64>) -> String {
    m.map_or_else(
        || "never (margins to 16)".into(),
        |m| format!("from margin {m}"),
    )
}

pub(super) fn build(e: Effort) -> Result<Section> {
    let precisions = [Precision::F64, Precision::F32, Precision::I16F16];
    let mut margins: Vec<MarginRow> = Vec::new();
    for p in precisions {
        margins.extend(loss_cause::rows(p)?);
    }
    let grads = Frame::from_records("loss_margins", "", &margins)?;
    let mut plot = Plot::new(
        "loss_margins",
        "Output gradient against how confidently wrong the output is (f64)",
        "margin of the wrong answer",
        "|∂L/∂z|",
        true,
    );
    let f64_rows: Vec<&MarginRow> = margins
        .iter()
        .filter(|r| r.precision == Precision::F64)
        .collect();
    let series: [(&str, Grad); 4] = [
        ("sigmoid + MSE", |r| r.sigmoid_mse),
        ("BCE on the logit", |r| r.bce),
        ("softmax MSE", |r| r.softmax_mse),
        ("softmax cross-entropy", |r| r.cross_entropy),
    ];
    for (name, g) in series {
        plot.line(name, f64_rows.iter().map(|r| (r.margin, g(r))).collect());
    }

    let mut findings = Vec::new();
    let f64_all: Vec<MarginRow> = f64_rows.iter().map(|r| (*r).clone()).collect();
    let at8 = margin_at(&f64_all, 8.0)?;
    findings.push(format!(
        "At margin 8 (f64), a sigmoid output trained with MSE gets a gradient of {} where BCE on the logit gets \
         {} ({} times smaller); softmax MSE gets {} where cross-entropy gets {} ({} times smaller).",
        sci(at8.sigmoid_mse),
        sci(at8.bce),
        sci(at8.bce / at8.sigmoid_mse),
        sci(at8.softmax_mse),
        sci(at8.cross_entropy),
        sci(at8.cross_entropy / at8.softmax_mse),
    ));
    let fixed: Vec<MarginRow> = margins
        .iter()
        .filter(|r| r.precision == Precision::I16F16)
        .cloned()
        .collect();
    findings.push(format!(
        "In I16F16 the gradient is exactly zero: sigmoid + MSE {}, softmax MSE {}, BCE {}, cross-entropy {}.",
        zero_at(loss_cause::first_zero(&fixed, |r| r.sigmoid_mse)),
        zero_at(loss_cause::first_zero(&fixed, |r| r.softmax_mse)),
        zero_at(loss_cause::first_zero(&fixed, |r| r.bce)),
        zero_at(loss_cause::first_zero(&fixed, |r| r.cross_entropy)),
    ));

    let xor = crate::data::load(Task::Xor, 1, None)?;
    let digits = crate::data::load(Task::Digits, 1, None)?;
    let cfgs: Vec<TrainConfig> = RUNS
        .iter()
        .map(|&(task, loss, bias, _)| {
            let d = TrainConfig::for_task(task);
            TrainConfig {
                loss: Some(loss),
                output_bias: bias,
                epochs: (d.epochs / e.shorten).max(1),
                ..d
            }
        })
        .collect();
    let runs = crate::par::sweep("loss", &cfgs, |c| {
        train::run(c, if c.task == Task::Xor { &xor } else { &digits })
    })?;
    let mut curves = Frame::new(
        "loss_training",
        "",
        &["run", "epoch", "train_loss", "accuracy", "grad_norm"],
    );
    let mut acc_plot = Plot::new(
        "loss_training",
        "Held-out accuracy per epoch, from a confidently wrong start and from a normal one",
        "epoch",
        "accuracy",
        false,
    );
    for ((_, _, _, label), r) in RUNS.iter().zip(&runs) {
        for ep in &r.epochs {
            curves.push(vec![
                crate::output::Cell::Text((*label).into()),
                ep.epoch.into(),
                ep.train_loss.into(),
                ep.accuracy.into(),
                ep.grad_norm.into(),
            ]);
        }
        acc_plot.line(
            *label,
            r.epochs
                .iter()
                .map(|ep| (ep.epoch as f64, ep.accuracy))
                .collect(),
        );
        if let (Some(first), Some(last)) = (r.epochs.first(), r.last()) {
            findings.push(format!(
                "{label}: gradient norm {} in the first epoch, held-out accuracy {} after {} epochs (from {}).",
                sci(first.grad_norm),
                pct(last.accuracy),
                last.epoch,
                pct(r.initial_accuracy),
            ));
        }
    }
    Ok(Section {
        id: "loss".into(),
        title: "The loss function as a cause".into(),
        explanation: "The loss decides the gradient that starts the backward pass. MSE on a sigmoid output \
            multiplies the error by σ′(z), which vanishes when the output saturates, right or wrong; BCE on the \
            logit has gradient σ(z) − t, largest exactly when the output is confidently wrong. Softmax MSE and \
            softmax cross-entropy differ the same way. The first table is the core's backward pass through one \
            output layer whose logit puts the wrong answer ahead by a margin, in f64, f32 and I16F16 (where a \
            gradient below half an LSB is exactly zero). The training runs start the first output unit's bias \
            confidently wrong (`gradscope train --loss mse --output-bias -6` and the like) or as initialized."
            .into(),
        findings,
        frames: vec![grads, curves],
        plots: vec![plot, acc_plot],
    })
}
