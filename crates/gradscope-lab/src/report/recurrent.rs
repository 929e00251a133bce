//! The report's recurrent section.

use anyhow::Result;

use super::*;
use crate::train::ThroughTime;

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
    let findings: Vec<String> = runs
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
    let (trained, baseline) = training(e)?;
    let mut findings: Vec<String> = findings;
    findings.extend(trained.iter().map(|(cell, r)| {
        let last = r.last().map_or(f64::NAN, |l| l.test_loss);
        let tt = r.through_time.as_ref();
        let ratio = |p: Option<&Vec<f64>>| p.map_or(f64::NAN, |p| ThroughTime::ratio(p));
        format!(
            "Trained on the adding problem over {ADDING_TRAIN_STEPS} steps, {cell}: held-out MSE {} (predicting the mean: {}), {} of the held-out sums within 0.02; ‖∂L/∂h_1‖ / ‖∂L/∂h_{ADDING_TRAIN_STEPS}‖ {} before training, {} after.",
            sci(last),
            sci(baseline),
            pct(r.last().map_or(f64::NAN, |l| l.accuracy)),
            sci(ratio(tt.map(|t| &t.before))),
            sci(ratio(tt.map(|t| &t.after)))
        )
    }));
    let mut tf = Frame::new(
        "recurrent_training",
        "",
        &[
            "cell",
            "steps",
            "epochs",
            "test_mse",
            "mean_predictor_mse",
            "accuracy",
            "first_over_last_before",
            "first_over_last_after",
        ],
    );
    for (cell, r) in &trained {
        let tt = r.through_time.as_ref();
        let ratio = |p: Option<&Vec<f64>>| p.map_or(f64::NAN, |p| ThroughTime::ratio(p));
        tf.push(vec![
            cell.name().into(),
            ADDING_TRAIN_STEPS.into(),
            r.epochs.len().into(),
            r.last().map(|l| l.test_loss).into(),
            baseline.into(),
            r.last().map(|l| l.accuracy).into(),
            ratio(tt.map(|t| &t.before)).into(),
            ratio(tt.map(|t| &t.after)).into(),
        ]);
    }
    Ok(Section {
        id: "recurrent".into(),
        title: "Through time: RNN, IRNN, LSTM and GRU".into(),
        explanation: "Hidden size 16, 50 steps, the loss on the last state, f32. The tanh RNN (orthogonal recurrent \
            weights) loses the gradient through tanh′ < 1 at every step; the IRNN (ReLU, identity recurrent \
            weights; Le et al. 2015) passes it unchanged through its active units; LSTM and GRU carry it through a \
            gated additive path whose strength depends on the gate: with every bias zero a gate sits at σ(0) = ½ \
            and halves the carried gradient each step; a positive forget-gate (LSTM, Gers et al. 2000) or \
            update-gate (GRU) bias opens it. Below, each cell is trained on the adding problem (Hochreiter & \
            Schmidhuber 1997) over 50 steps: the target is the mean of the two marked values, so the answer depends \
            on inputs up to 50 steps back (Adam, learning rate 0.003, batch 16, the IRNN's recipe; the LSTM's \
            forget-gate bias starts at 1)."
            .into(),
        findings,
        frames: vec![f, tf],
        plots: vec![p],
    })
}

/// The sequence length of the trained runs.
const ADDING_TRAIN_STEPS: usize = 50;

/// Each cell trained on the adding problem over [`ADDING_TRAIN_STEPS`] steps in f32, and the held-out MSE of
/// predicting the training targets' mean (the loss of a network that learned nothing).
fn training(e: Effort) -> Result<(Vec<(Cell, TrainResult)>, f64)> {
    let data = crate::data::load_adding(1, ADDING_TRAIN_STEPS)?;
    let base = TrainConfig::for_task(Task::Adding);
    let cells = [Cell::Rnn, Cell::Irnn, Cell::Lstm, Cell::Gru];
    let cfgs: Vec<TrainConfig> = cells
        .iter()
        .map(|&cell| TrainConfig {
            cell,
            epochs: (base.epochs / e.shorten).max(1),
            ..base.clone()
        })
        .collect();
    let runs = crate::par::sweep("recurrent training", &cfgs, |c| train::run(c, &data))?;
    let mean = data.train.iter().map(|(_, t)| t[0]).sum::<f64>() / data.train.len().max(1) as f64;
    let baseline = data
        .test
        .iter()
        .map(|(_, t)| {
            gradscope_core::loss::loss_grad_f64(gradscope_core::Loss::Mse, &[mean], &[t[0]]).0
        })
        .sum::<f64>()
        / data.test.len().max(1) as f64;
    Ok((cells.into_iter().zip(runs).collect(), baseline))
}
