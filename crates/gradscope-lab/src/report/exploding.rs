//! The report's exploding section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    let cfgs: Vec<DepthConfig> = [Precision::F32, Precision::I16F16, Precision::I1F15]
        .iter()
        .map(|&p| DepthConfig {
            batch: e.batch,
            ..DepthConfig::new(Act::Relu, InitName::Normal, 16, 32, p)
        })
        .collect();
    let runs = depth::sweep("exploding", &cfgs)?;
    let rnns = rnn_sweep(
        "exploding rnn",
        &[
            rnn_cfg(Cell::Rnn, 1.5, 0.0, 50, e.batch),
            rnn_cfg(Cell::Irnn, 1.1, 0.0, 50, e.batch),
            rnn_cfg(Cell::Irnn, 1.0, 0.0, 50, e.batch),
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
            r.precision.name().into(),
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
    )?;
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
        frames: vec![f, long_frame("exploding", &runs)?, rf],
        plots: vec![rms_plot("exploding", "ReLU with N(0,1) weights: back-propagated RMS per layer", &runs), rp],
    })
}
