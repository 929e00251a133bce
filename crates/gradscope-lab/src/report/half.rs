//! The report's section on the three 16-bit formats: f16, bf16 and I16F16 side by side.

use anyhow::Result;
use gradscope_core::{Native, NearestEven, Scalar, f16, matrix};

use super::*;
use crate::effects;
use crate::with_scalar;

/// The formats compared, in table order.
const FORMATS: [Precision; 3] = [Precision::F16, Precision::Bf16, Precision::I16F16];
/// The static loss scale tried on the sigmoid stack (2¹²).
const LOSS_SCALE: f64 = 4096.0;
/// Terms of the long sum that shows the accumulation policies apart.
const TERMS: usize = 10_000;

/// `1 + TERMS × 10⁻⁴` as one dot product (ones times the terms) in `S`.
fn long_sum<S: Scalar>() -> f64 {
    let one = S::from_f64(1.0, &mut NearestEven).0;
    let tiny = S::from_f64(1e-4, &mut NearestEven).0;
    let ones = vec![one; TERMS + 1];
    let mut terms = vec![tiny; TERMS + 1];
    terms[0] = one;
    let (Ok(a), Ok(b)) = (
        <[S; TERMS + 1]>::try_from(ones.as_slice()),
        <[S; TERMS + 1]>::try_from(terms.as_slice()),
    ) else {
        return f64::NAN;
    };
    matrix::dot(&a, &b, &mut NearestEven, &mut ()).to_f64()
}

pub(super) fn build(e: Effort) -> Result<Section> {
    // Range against resolution, read off the types.
    let mut ranges = Frame::new(
        "half_ranges",
        "",
        &[
            "precision",
            "smallest",
            "smallest_normal",
            "max",
            "storage_bits",
        ],
    );
    for p in FORMATS {
        let (smallest, normal, max, bits) = with_scalar!(p, S => (
            S::SMALLEST,
            S::RESOLUTION,
            S::MAX.to_f64(),
            8 * std::mem::size_of::<S>()
        ));
        ranges.push(vec![
            p.name().into(),
            smallest.into(),
            normal.into(),
            max.into(),
            bits.into(),
        ]);
    }

    // Underflow: the horizon section's sigmoid stack, without and with a static loss scale.
    let mk = |p: Precision, scale: f64| DepthConfig {
        batch: e.batch,
        loss_scale: scale,
        ..DepthConfig::new(Act::Sigmoid, InitName::XavierNormal, 32, 32, p)
    };
    let cfgs: Vec<DepthConfig> = FORMATS
        .iter()
        .flat_map(|&p| [mk(p, 1.0), mk(p, LOSS_SCALE)])
        .collect();
    let deep = depth::sweep("half: sigmoid stack", &cfgs)?;
    let mut under = Frame::new(
        "half_underflow",
        "",
        &[
            "precision",
            "loss_scale",
            "grad_norm_layer_1",
            "zero_grads_layer_1",
            "underflowed",
            "horizon_measured",
            "horizon_predicted",
        ],
    );
    for r in &deep {
        let l1 = r.layers.first();
        under.push(vec![
            r.precision.name().into(),
            r.loss_scale.into(),
            l1.map(|l| l.grad_norm).into(),
            l1.map(|l| l.zero_fraction).into(),
            r.layers
                .iter()
                .map(|l| l.underflow as u64)
                .sum::<u64>()
                .into(),
            r.measured_horizon.into(),
            r.predicted_horizon.into(),
        ]);
    }

    // Overflow: the events section's ReLU stack with N(0, 1) weights (about 4× per layer), 16 layers deep.
    let blow: Vec<DepthConfig> = FORMATS
        .iter()
        .map(|&p| DepthConfig {
            batch: e.batch,
            ..DepthConfig::new(Act::Relu, InitName::Normal, 16, 32, p)
        })
        .collect();
    let blown = depth::sweep("half: exploding stack", &blow)?;
    let mut over = Frame::new(
        "half_overflow",
        "",
        &[
            "precision",
            "saturated",
            "nonfinite",
            "first_forward_saturation",
            "first_nonfinite",
        ],
    );
    for r in &blown {
        let total =
            |g: fn(&depth::DepthRow) -> u32| r.layers.iter().map(|l| g(l) as u64).sum::<u64>();
        over.push(vec![
            r.precision.name().into(),
            total(|l| l.saturated).into(),
            total(|l| l.nonfinite).into(),
            r.first_forward_saturated.into(),
            r.first_nonfinite
                .as_ref()
                .map(|(k, p, _)| format!("layer {k}, {p} pass"))
                .into(),
        ]);
    }

    // The same deep stack, RNN and digits as the effects section, in these formats only.
    let (rows, _) = effects::run(e.shorten > 1, &FORMATS)?;
    let summary = effects::summary_frame(&rows)?;

    // The accumulation policies on one long sum.
    let (wide, native) = (long_sum::<f16>(), long_sum::<Native<f16>>());
    let mut sums = Frame::new(
        "half_accumulation",
        "",
        &["type", "accumulates_in", "sum_1_plus_10000_x_1e-4"],
    );
    sums.push(vec!["f16".into(), "f32".into(), wide.into()]);
    sums.push(vec!["Native<f16>".into(), "f16".into(), native.into()]);

    // Findings, from the frames above.
    let find = |p: Precision, scale: f64| {
        deep.iter()
            .find(|r| r.precision == p && r.loss_scale == scale)
            .ok_or_else(|| anyhow!("no {p} run at loss scale {scale}"))
    };
    let horizon = |r: &DepthResult| {
        r.measured_horizon.map_or_else(
            || "stays above one LSB through all 32 layers".to_string(),
            |h| format!("falls below one LSB {h} layers from the output"),
        )
    };
    let mut findings = Vec::new();
    for p in FORMATS {
        let (plain, scaled) = (find(p, 1.0)?, find(p, LOSS_SCALE)?);
        let zeros = |r: &DepthResult| pct(r.layers.first().map_or(0.0, |l| l.zero_fraction));
        findings.push(format!(
            "{p}, sigmoid stack: the back-propagated signal {} ({} of layer 1's gradients exactly zero); with a loss scale of 2^12 it {} ({}).",
            horizon(plain),
            zeros(plain),
            horizon(scaled),
            zeros(scaled)
        ));
    }
    for r in &blown {
        findings.push(match (&r.first_nonfinite, r.first_forward_saturated) {
            (Some((k, pass, _)), _) => format!(
                "{}, ReLU with N(0, 1) weights: overflows to ∞ first in layer {k}'s {pass} pass.",
                r.precision
            ),
            (None, Some(k)) => format!(
                "{}, ReLU with N(0, 1) weights: saturates from layer {k}'s forward pass, and nothing becomes non-finite.",
                r.precision
            ),
            (None, None) => format!(
                "{}, ReLU with N(0, 1) weights: all 16 layers stay in range.",
                r.precision
            ),
        });
    }
    let err = |w: &str, p: Precision| {
        rows.iter()
            .find(|r| r.workload == w && r.precision == p)
            .and_then(|r| r.max_relative_error.or(r.accuracy))
            .map_or_else(|| "-".to_string(), sci)
    };
    findings.push(format!(
        "Relative gradient error against f64, deep tanh stack: f16 {}, bf16 {}, I16F16 {}; tanh RNN through 50 steps: f16 {}, bf16 {}, I16F16 {}.",
        err(effects::DEPTH, Precision::F16),
        err(effects::DEPTH, Precision::Bf16),
        err(effects::DEPTH, Precision::I16F16),
        err(effects::RNN, Precision::F16),
        err(effects::RNN, Precision::Bf16),
        err(effects::RNN, Precision::I16F16),
    ));
    let acc = |p: Precision| {
        rows.iter()
            .find(|r| r.workload == effects::DIGITS && r.precision == p)
            .and_then(|r| r.accuracy)
            .map_or_else(|| "-".to_string(), pct)
    };
    let acc64 = rows
        .iter()
        .find_map(|r| r.accuracy_f64)
        .map_or_else(|| "-".to_string(), pct);
    findings.push(format!(
        "Digits (64-32-10) held-out accuracy after training: f16 {}, bf16 {}, I16F16 {} (f64: {acc64}).",
        acc(Precision::F16),
        acc(Precision::Bf16),
        acc(Precision::I16F16),
    ));
    findings.push(format!(
        "1 + 10,000 × 10⁻⁴ as one dot product: {wide:.4} with f32 accumulation (f16), {native:.4} accumulating in f16 itself (Native<f16>), whose partial sums stop growing once their half-ulp exceeds the terms."
    ));
    Ok(Section {
        id: "half".into(),
        title: "Three 16-bit formats: f16, bf16 and I16F16".into(),
        explanation: "Three ways to spend 16 bits. f16 keeps 11 significant bits and a range up to 65504, with \
            subnormals down to 2⁻²⁴; bf16 keeps f32's range but only 8 significant bits; I16F16 (here in 32 bits, \
            the closest fixed-point relative) has a uniform grid of 2⁻¹⁶ up to 32768. A small gradient underflows \
            where the format's grid ends (a float's subnormal LSB, fixed point's LSB), and a large activation \
            overflows (f16 to ∞, fixed point saturates) where its range ends. A static loss scale moves the \
            gradients up, away from the bottom of the grid: f16 needs it, as in mixed-precision training \
            (Micikevicius et al. 2018); bf16 has f32's range and does not, but pays in resolution. The 16-bit \
            floats here sum products in f32 and round once per output, as tensor cores do; summing in the format \
            itself stalls long sums. On these microcontrollers they are software formats."
            .into(),
        findings,
        frames: vec![ranges, under, over, summary, sums],
        plots: vec![rms_plot(
            "half",
            "Sigmoid, Xavier, 32 layers: back-propagated RMS per layer, 16-bit formats",
            &deep,
        )],
    })
}
