//! The report's digits section.

use anyhow::Result;

use super::*;

fn recipe(c: &TrainConfig) -> String {
    let mut s = format!("{} {}", c.precision, c.rounding);
    if c.optimizer != OptimizerKind::Sgd {
        s += &format!(" {} lr {}", c.optimizer, c.lr);
    }
    if c.output_scale != 1.0 {
        s += &format!(" output scale {}", c.output_scale);
    }
    s
}

pub(super) fn build(e: Effort) -> Result<Section> {
    let data = crate::data::load(Task::Digits, 1, None)?;
    let base = TrainConfig {
        epochs: (15 / e.shorten).max(1),
        ..TrainConfig::for_task(Task::Digits)
    };
    let mut cfgs: Vec<TrainConfig> = [
        (Precision::F32, Rounding::Nearest),
        (Precision::I16F16, Rounding::Nearest),
        (Precision::I16F16, Rounding::Stochastic),
        (Precision::I1F15, Rounding::Nearest),
        (Precision::I1F15, Rounding::Stochastic),
    ]
    .iter()
    .map(|&(p, r)| TrainConfig {
        precision: p,
        rounding: r,
        ..base.clone()
    })
    .collect();
    // The fixed-point recipe: logits read as 8·y, Adam's normalized steps, stochastic rounding.
    cfgs.push(TrainConfig {
        precision: Precision::I1F15,
        rounding: Rounding::Stochastic,
        optimizer: OptimizerKind::Adam,
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
            r.config.precision.name().into(),
            r.config.rounding.name().into(),
            train::optimizer_label(&r.config).into(),
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
