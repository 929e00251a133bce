//! The report's horizon section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    let mk = |p: Precision, rounding: Rounding, scale: f64| DepthConfig {
        batch: e.batch,
        rounding,
        loss_scale: scale,
        ..DepthConfig::new(Act::Sigmoid, InitName::XavierNormal, 32, 32, p)
    };
    use Precision::{F32, I1F15, I16F16};
    use Rounding::{Floor, Nearest, Stochastic};
    let cfgs = vec![
        mk(F32, Nearest, 1.0),
        mk(I16F16, Floor, 1.0),
        mk(I16F16, Nearest, 1.0),
        mk(I16F16, Stochastic, 1.0),
        mk(I16F16, Nearest, 4096.0),
        mk(I1F15, Nearest, 1.0),
        mk(I1F15, Stochastic, 1.0),
        mk(I1F15, Nearest, 64.0),
    ];
    let runs = depth::sweep("horizon", &cfgs)?;
    let mut f = Frame::new(
        "horizon_rounding",
        "",
        &[
            "precision",
            "rounding",
            "loss_scale",
            "grad_norm_layer_1",
            "zero_grads_layer_1",
            "horizon_measured",
            "horizon_predicted",
        ],
    );
    let mut findings = Vec::new();
    for r in &runs {
        let l1 = r.layers.first();
        f.push(vec![
            r.precision.name().into(),
            r.rounding.name().into(),
            r.loss_scale.into(),
            l1.map(|l| l.grad_norm).into(),
            l1.map(|l| l.zero_fraction).into(),
            r.measured_horizon.into(),
            r.predicted_horizon.into(),
        ]);
        let h = r.measured_horizon.map_or_else(
            || "beyond all 32 layers".to_string(),
            |h| format!("{h} layers from the output"),
        );
        findings.push(format!(
            "{} {}{}: signal below one LSB {h}; {} of layer 1's gradients are exactly zero.",
            r.precision,
            r.rounding,
            if r.loss_scale != 1.0 {
                format!(", loss scale {}", r.loss_scale)
            } else {
                String::new()
            },
            pct(l1.map_or(0.0, |l| l.zero_fraction))
        ));
    }
    let table = depth::horizon_outcome(&depth::horizon_runs(
        &depth::HORIZON_FORMATS,
        64,
        32,
        e.batch,
        1,
    )?)?;
    let plot = rms_plot(
        "horizon",
        "Sigmoid, Xavier, 32 layers: back-propagated RMS per layer",
        &runs,
    );
    let mut frames = vec![f];
    frames.extend(table.frames);
    let mut plots = vec![plot];
    plots.extend(table.plots);
    Ok(Section {
        id: "horizon".into(),
        title: "The fixed-point underflow horizon, rounding and loss scaling".into(),
        explanation: "The back-propagated signal of a sigmoid stack shrinks by about 4× per layer; in fixed point it \
            reaches one LSB after a few layers and every gradient below that depth is exactly zero (the horizon). \
            Floor rounding turns small negative values into −1 LSB instead of 0, so fewer gradients are exactly zero \
            but those that remain are biased noise. Stochastic rounding keeps each rounded value's expectation, which \
            helps while the signal is within a few orders of magnitude of the LSB; a signal far below it still rounds \
            to zero almost surely. Loss scaling (Micikevicius et al. 2018) multiplies the output gradient so the horizon moves \
            deeper by log₄ of the scale. The second table is the horizon per format, activation and initializer \
            through 64 layers, measured and predicted by the mean-field model (Poole et al. 2016; Schoenholz et al. \
            2017)."
            .into(),
        findings,
        frames,
        plots,
    })
}
