//! The report's initialization section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    let inits = [
        InitName::Constant,
        InitName::Standard,
        InitName::XavierNormal,
        InitName::KaimingNormal,
        InitName::LecunNormal,
        InitName::Orthogonal,
    ];
    let mut cfgs = Vec::new();
    for act in [Act::Tanh, Act::Relu] {
        for init in inits {
            cfgs.push(DepthConfig {
                batch: e.batch,
                ..DepthConfig::new(act, init, 16, 32, Precision::F32)
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
            r.init.name().into(),
            a.into(),
            b.into(),
            (a / b).into(),
            distinct.into(),
        ]);
        if r.init == InitName::Constant {
            findings.push(format!(
                "{} with constant init: the first layer's 32 units get {} distinct gradient(s): symmetry is never broken.",
                r.activation, distinct
            ));
        }
    }
    for act in ["tanh", "relu"] {
        let of = |init: InitName| {
            runs.iter()
                .find(|r| r.activation == act && r.init == init)
                .map(first_last)
        };
        if let (Some(s), Some(x), Some(h)) = (
            of(InitName::Standard),
            of(InitName::XavierNormal),
            of(InitName::KaimingNormal),
        ) {
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
        frames: vec![f, long_frame("initialization", &runs)?],
        plots: vec![plot("tanh"), plot("relu")],
    })
}
