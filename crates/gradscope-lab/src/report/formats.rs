//! The report's formats section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    use crate::formats::{KS, find, outcome_of, underflow_sweep};
    let cells = underflow_sweep(&KS, e.products, 1);
    let o = outcome_of(&cells, e.products);
    let rate = |fmt, k, mode| {
        find(&cells, fmt, k, mode)
            .map(|c| c.underflow_rate)
            .ok_or_else(|| anyhow!("no {fmt} {mode} cell at k = {k}"))
    };
    Ok(Section {
        id: "formats".into(),
        title: "Number formats, and the products that vanish".into(),
        explanation: "Every gradient is a sum of products. A product smaller than half a format's LSB rounds to \
            zero: that is fixed-point underflow, before any network is involved. Floor rounding (a plain arithmetic \
            shift) loses positive small products and turns negative ones into −1 LSB, biasing every sum downward; \
            round-to-nearest loses them without bias; stochastic rounding keeps them on average."
            .into(),
        findings: vec![
            format!(
                "Products of operands ~2^-10 in I16F16: {} vanish with floor rounding, {} with round-to-nearest, {} with stochastic rounding; in f32, {}.",
                pct(rate(Precision::I16F16, 10, Rounding::Floor)?),
                pct(rate(Precision::I16F16, 10, Rounding::Nearest)?),
                pct(rate(Precision::I16F16, 10, Rounding::Stochastic)?),
                pct(rate(Precision::F32, 10, Rounding::Nearest)?)
            ),
            format!(
                "In I1F15 (Q15) the same happens at operands ~2^-8: {} vanish with round-to-nearest.",
                pct(rate(Precision::I1F15, 8, Rounding::Nearest)?)
            ),
            format!(
                "f16's subnormals end at 2^-24: products of operands ~2^-12 vanish {} of the time; in bf16, with f32's exponent range, {}.",
                pct(rate(Precision::F16, 12, Rounding::Nearest)?),
                pct(rate(Precision::Bf16, 12, Rounding::Nearest)?)
            ),
        ],
        frames: o.frames,
        plots: o.plots,
    })
}
