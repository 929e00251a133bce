//! The report's recurrent section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    let cfgs = [
        rnn_cfg(Cell::Rnn, 1.0, 0.0, 50, e.batch),
        rnn_cfg(Cell::Irnn, 1.0, 0.0, 50, e.batch),
        rnn_cfg(Cell::Lstm, 1.0, 0.0, 50, e.batch),
        rnn_cfg(Cell::Lstm, 1.0, 1.0, 50, e.batch),
        rnn_cfg(Cell::Gru, 1.0, 0.0, 50, e.batch),
        rnn_cfg(Cell::Gru, 1.0, 2.0, 50, e.batch),
    ];
    let runs = rnn_sweep("recurrent", &cfgs)?;
    let (f, p) = rnn::frame_and_plot("recurrent", "‖∂L/∂h_t‖ through 50 steps", &runs)?;
    let findings = runs
        .iter()
        .map(|r| {
            let bias = if r.cell.is_gated() {
                format!(" (gate bias {})", r.gate_bias)
            } else {
                String::new()
            };
            format!(
                "{}{bias}: ‖∂L/∂h_1‖ / ‖∂L/∂h_50‖ = {}.",
                r.cell,
                sci(r.first_over_last)
            )
        })
        .collect();
    Ok(Section {
        id: "recurrent".into(),
        title: "Through time: RNN, IRNN, LSTM and GRU".into(),
        explanation: "Hidden size 16, 50 steps, the loss on the last state, f32. The tanh RNN (orthogonal recurrent \
            weights) loses the gradient through tanh′ < 1 at every step; the IRNN (ReLU, identity recurrent \
            weights; Le et al. 2015) passes it unchanged through its active units; LSTM and GRU carry it through a \
            gated additive path whose strength depends on the gate: with every bias zero a gate sits at σ(0) = ½ \
            and halves the carried gradient each step; a positive forget-gate (LSTM, Gers et al. 2000) or \
            update-gate (GRU) bias opens it. The next section trains each cell: whether a carried gradient \
            turns into a learned dependency."
            .into(),
        findings,
        frames: vec![f],
        plots: vec![p],
    })
}
