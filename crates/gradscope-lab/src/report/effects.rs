//! The report's precision-effects section: each format's error against f64, beside its cost on the cores.

use anyhow::Result;

use super::*;
use crate::effects::{self, DIGITS, EffectRow};

pub(super) fn build(e: Effort) -> Result<Section> {
    let (rows, outcome) = effects::run(e.shorten > 1, &[])?;
    let find = |workload: &str, p: Precision| {
        rows.iter()
            .find(|r| r.workload == workload && r.precision == p && r.rounding == Rounding::Nearest)
            .ok_or_else(|| anyhow!("no {workload} {p} nearest row"))
    };
    let cost_ratio = |r: &EffectRow, base: &EffectRow, m4f: bool| {
        let pick = |r: &EffectRow| {
            if m4f {
                r.m4f_step_instructions
            } else {
                r.m0_step_instructions
            }
        };
        pick(r)
            .zip(pick(base))
            .map(|(a, b)| a as f64 / b as f64)
            .ok_or_else(|| anyhow!("no step cost for {}", r.precision))
    };
    let f32 = find(DIGITS, Precision::F32)?;
    let mut findings = Vec::new();
    for p in [Precision::I16F16, Precision::I8F24, Precision::I1F15] {
        let r = find(DIGITS, p)?;
        let (acc, acc64) = r
            .accuracy
            .zip(r.accuracy_f64)
            .ok_or_else(|| anyhow!("no digits accuracy for {p}"))?;
        findings.push(format!(
            "{p} trains the digits to {} held-out accuracy (f64: {}); one training step costs {:.2}× f32's \
             instructions on the Cortex-M4F (hardware float) and {:.2}× on the Cortex-M0 (soft float).",
            pct(acc),
            pct(acc64),
            cost_ratio(r, f32, true)?,
            cost_ratio(r, f32, false)?,
        ));
    }
    Ok(Section {
        id: "effects".into(),
        title: "Precision effects, and what each format costs".into(),
        explanation: "The same three workloads (a 16-layer tanh stack, BPTT through a 50-step tanh RNN, and \
            training on the digits) in every format, with f64's weights and data rounded into it: the gradient \
            error against f64, the gradients lost to underflow, and the accuracy reached. Beside them, what one \
            training step of the firmware's 4-8-8-1 network costs in that format, counted in instructions under \
            QEMU on a Cortex-M4F and a Cortex-M0: the accuracy a format keeps, and what it costs on a \
            microcontroller, read from one table."
            .into(),
        findings,
        frames: outcome.frames,
        plots: outcome.plots,
    })
}
