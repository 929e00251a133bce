//! The report's architecture section.

use anyhow::Result;

use super::*;

pub(super) fn build(_e: Effort) -> Result<Section> {
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
