//! The report's convolutional section.

use anyhow::Result;

use super::*;
use crate::cnn::{self, Arch, CnnConfig, CnnResult};

pub(super) fn build(e: Effort) -> Result<Section> {
    let cfg = CnnConfig {
        epochs: (6 / e.shorten).max(1),
        ..CnnConfig::default()
    };
    let data = crate::data::load(crate::options::Task::Digits, cfg.seed, None)?;
    let runs = cnn::run(&cfg, &data)?;
    let out = cnn::outcome(&cfg, &runs)?;
    let find = |a: Arch, p: Precision| runs.iter().find(|r| r.arch == a && r.precision == p);
    let ratio = |r: &CnnResult| match (r.layers.first(), r.layers.last()) {
        (Some(a), Some(b)) if b.grad_norm > 0.0 => a.grad_norm / b.grad_norm,
        _ => 0.0,
    };
    let mut findings = Vec::new();
    for a in [Arch::Plain, Arch::Relu, Arch::Residual, Arch::Batchnorm] {
        if let Some(r) = find(a, Precision::F32) {
            findings.push(format!(
                "{} (f32): the first convolution gets {} of the last one's gradient norm; held-out accuracy {} after {} epochs.",
                a.name(),
                sci(ratio(r)),
                pct(r.accuracy.unwrap_or(0.0)),
                cfg.epochs
            ));
        }
    }
    for p in [Precision::I16F16, Precision::I1F15] {
        if let Some(r) = find(Arch::Plain, p) {
            let zeroed = r.layers.iter().filter(|l| l.zero_fraction == 1.0).count();
            findings.push(format!(
                "plain in {p}: the first {zeroed} convolutions' gradients are exactly zero; the horizon is {} convolutions from the output (f64 predicts {}).",
                r.measured_horizon.map_or("beyond the stack".into(), |h| h.to_string()),
                r.predicted_horizon.map_or("beyond the stack".into(), |h| h.to_string()),
            ));
        }
        for a in [Arch::Relu, Arch::Residual] {
            if let Some(r) = find(a, p) {
                findings.push(format!(
                    "{} in {p}: held-out accuracy {} ({} in f32).",
                    a.name(),
                    pct(r.accuracy.unwrap_or(0.0)),
                    pct(find(a, Precision::F32)
                        .and_then(|f| f.accuracy)
                        .unwrap_or(0.0))
                ));
            }
        }
    }
    Ok(Section {
        id: "cnn".into(),
        title: "Deep convolutional networks: vanishing through depth, and three cures".into(),
        explanation: format!(
            "{} 3×3 convolutions of {} channels with same padding on the 8×8 digits (one channel), then 2×2 max \
            pooling and a linear layer to the 10 classes, softmax cross-entropy, SGD with momentum 0.9 at lr {}, \
            batches of 16. The plain stack puts a sigmoid after every convolution with Xavier-normal weights; the \
            cures are ReLU with He-normal weights (He et al. 2015), identity connections around each convolution \
            after the first (He et al. 2016), and batch normalization before each sigmoid (Ioffe & Szegedy 2015; \
            float-only, so its fixed-point rows are marked as not run). The gradient norms are one backward pass \
            over 16 images at initialization; a format's horizon is the number of convolutions from the output \
            until the signal sent back falls below one LSB, measured in the format and predicted from the f64 \
            signal. I1F15 holds values in (−1, 1) only, so its logits cannot separate ten classes (see the digits \
            section for a fixed-point recipe).",
            cfg.depth,
            cnn::CHANNELS,
            cfg.lr
        ),
        findings,
        frames: out.frames,
        plots: out.plots,
    })
}
