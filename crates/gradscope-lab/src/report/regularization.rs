//! The report's regularization section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    let data = crate::data::load(Task::Spiral, 1, None)?;
    let base = TrainConfig {
        epochs: (300 / e.shorten).max(1),
        ..TrainConfig::for_task(Task::Spiral)
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
