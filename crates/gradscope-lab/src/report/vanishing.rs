//! The report's vanishing section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    let cases = [
        ("sigmoid", InitName::XavierNormal),
        ("tanh", InitName::XavierNormal),
        ("relu", InitName::KaimingNormal),
        ("leaky_relu", InitName::KaimingNormal),
        ("elu", InitName::KaimingNormal),
        ("gelu", InitName::KaimingNormal),
        ("selu", InitName::LecunNormal),
    ];
    let cfgs = cases
        .iter()
        .map(|&(a, i)| {
            Ok(DepthConfig {
                batch: e.batch,
                ..DepthConfig::new(act(a)?, i, 32, 32, Precision::F32)
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
            r.init.name().into(),
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
        frames: vec![f, long_frame("vanishing", &runs)?],
        plots: vec![depth::grad_plot("vanishing", "Gradient norm per layer, 32 layers, f32", &runs)],
    })
}
