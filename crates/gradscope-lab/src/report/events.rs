//! The report's events section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    let cfgs: Vec<DepthConfig> = [
        Precision::F32,
        Precision::I16F16,
        Precision::I8F24,
        Precision::I1F15,
    ]
    .iter()
    .map(|&p| DepthConfig {
        batch: e.batch,
        ..DepthConfig::new(Act::Relu, InitName::Normal, 64, 32, p)
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
            r.precision.name().into(),
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
