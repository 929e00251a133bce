//! The report's adding-problem section: each recurrent cell trained on a long dependency.

use anyhow::{Context, Result};

use super::*;
use crate::data::Dataset;
use crate::train::ThroughTime;

/// The sequence lengths trained.
const LENGTHS: [usize; 2] = [50, 100];

/// The cells trained, each with the same budget.
const CELLS: [Cell; 4] = [Cell::Rnn, Cell::Irnn, Cell::Lstm, Cell::Gru];

/// The linker scripts of the firmware's boards: the RAM the training state is compared with.
const M4F_BOARD: (&str, &str) = (
    "the nRF52840 (the M4F board)",
    include_str!("../../../../firmware/memory/nrf52840.x"),
);
const M0_BOARD: (&str, &str) = (
    "the micro:bit (the M0 board)",
    include_str!("../../../../firmware/memory/microbit.x"),
);

/// The `LENGTH` of the `RAM` region of a linker script, in bytes (`256K` → 262,144).
fn ram_bytes(script: &str) -> Result<usize> {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("RAM"))
        .context("no RAM region in the linker script")?;
    let length = line
        .split("LENGTH")
        .nth(1)
        .and_then(|r| r.split('=').nth(1))
        .map(str::trim)
        .context("the RAM region has no LENGTH")?;
    let (digits, unit) = match length.strip_suffix('K') {
        Some(d) => (d, 1024),
        None => match length.strip_suffix('M') {
            Some(d) => (d, 1024 * 1024),
            None => (length, 1),
        },
    };
    Ok(digits
        .parse::<usize>()
        .with_context(|| format!("RAM LENGTH {length}"))?
        * unit)
}

struct Trained {
    cell: Cell,
    steps: usize,
    run: TrainResult,
    /// Held-out MSE of predicting the training targets' mean.
    baseline: f64,
}

impl Trained {
    fn profiles(&self) -> Result<&ThroughTime> {
        self.run
            .through_time
            .as_ref()
            .context("an adding run without its gradient profile")
    }

    fn test_mse(&self) -> f64 {
        self.run.last().map_or(f64::NAN, |l| l.test_loss)
    }
}

/// The held-out MSE of predicting the training targets' mean: the loss of a network that learned nothing.
pub(super) fn mean_predictor(data: &Dataset) -> f64 {
    let mean = data.train.iter().map(|(_, t)| t[0]).sum::<f64>() / data.train.len().max(1) as f64;
    data.test
        .iter()
        .map(|(_, t)| {
            gradscope_core::loss::loss_grad_f64(gradscope_core::Loss::Mse, &[mean], &[t[0]]).0
        })
        .sum::<f64>()
        / data.test.len().max(1) as f64
}

fn train_all(e: Effort) -> Result<Vec<Trained>> {
    let base = TrainConfig::for_task(Task::Adding);
    let mut out = Vec::new();
    for steps in LENGTHS {
        let data = crate::data::load_adding(1, steps)?;
        let baseline = mean_predictor(&data);
        let cfgs: Vec<TrainConfig> = CELLS
            .iter()
            .map(|&cell| TrainConfig {
                cell,
                epochs: (base.epochs / e.shorten).max(1),
                ..base.clone()
            })
            .collect();
        let label = format!("adding problem, {steps} steps");
        let runs = crate::par::sweep(&label, &cfgs, |c| train::run(c, &data))?;
        out.extend(CELLS.iter().zip(runs).map(|(&cell, run)| Trained {
            cell,
            steps,
            run,
            baseline,
        }));
    }
    Ok(out)
}

pub(super) fn build(e: Effort) -> Result<Section> {
    let trained = train_all(e)?;
    let mut table = Frame::new(
        "adding_training",
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
            "state_bytes",
        ],
    );
    let mut profiles = Frame::new(
        "adding_through_time",
        "",
        &["cell", "steps", "epoch", "t", "grad_norm"],
    );
    let mut ratios = Frame::new(
        "adding_ratio",
        "",
        &["cell", "steps", "epoch", "first_over_last"],
    );
    let mut curves = Frame::new(
        "adding_epochs",
        "",
        &[
            "cell",
            "steps",
            "epoch",
            "train_loss",
            "test_loss",
            "grad_norm",
        ],
    );
    let mut ratio_plot = Plot::new(
        "adding_ratio",
        "Adding problem: ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ during training",
        "epoch",
        "‖∂L/∂h_1‖ / ‖∂L/∂h_T‖",
        true,
    );
    let mut loss_plot = Plot::new(
        "adding_loss",
        "Adding problem: held-out MSE per epoch",
        "epoch",
        "held-out MSE",
        true,
    );
    let last_steps = LENGTHS[LENGTHS.len() - 1];
    let mut profile_plot = Plot::new(
        "adding_profile",
        &format!("Adding problem over {last_steps} steps: ‖∂L/∂h_t‖ after training"),
        "t",
        "‖∂L/∂h_t‖",
        true,
    );
    let mut findings = Vec::new();
    for t in &trained {
        let tt = t.profiles()?;
        let name = t.cell.name();
        let (before, after) = (
            ThroughTime::ratio(tt.before()),
            ThroughTime::ratio(tt.after()),
        );
        table.push(vec![
            name.into(),
            t.steps.into(),
            t.run.epochs.len().into(),
            t.test_mse().into(),
            t.baseline.into(),
            t.run.last().map(|l| l.accuracy).into(),
            before.into(),
            after.into(),
            t.run.state_bytes.into(),
        ]);
        for (epoch, p) in tt.epochs.iter().zip(&tt.profiles) {
            for (k, v) in p.iter().enumerate() {
                profiles.push(vec![
                    name.into(),
                    t.steps.into(),
                    (*epoch).into(),
                    (k + 1).into(),
                    (*v).into(),
                ]);
            }
        }
        for (epoch, p) in tt.epochs.iter().zip(&tt.profiles) {
            ratios.push(vec![
                name.into(),
                t.steps.into(),
                (*epoch).into(),
                ThroughTime::ratio(p).into(),
            ]);
        }
        for ep in &t.run.epochs {
            curves.push(vec![
                name.into(),
                t.steps.into(),
                ep.epoch.into(),
                ep.train_loss.into(),
                ep.test_loss.into(),
                ep.grad_norm.into(),
            ]);
        }
        let label = format!("{name}, T = {}", t.steps);
        ratio_plot.line(
            label.clone(),
            tt.epochs
                .iter()
                .zip(&tt.profiles)
                .map(|(&ep, p)| (ep as f64, ThroughTime::ratio(p)))
                .collect(),
        );
        loss_plot.line(
            label,
            t.run
                .epochs
                .iter()
                .map(|ep| (ep.epoch as f64, ep.test_loss))
                .collect(),
        );
        if t.steps == last_steps {
            profile_plot.line(
                name,
                tt.after()
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| ((k + 1) as f64, v))
                    .collect(),
            );
        }
        let during: Vec<String> = tt
            .epochs
            .iter()
            .zip(&tt.profiles)
            .map(|(ep, p)| format!("{} at epoch {ep}", sci(ThroughTime::ratio(p))))
            .collect();
        findings.push(format!(
            "{name} over {} steps: held-out MSE {} (predicting the mean: {}), {} of the held-out sums within 0.02; ‖∂L/∂h_1‖ / ‖∂L/∂h_{}‖ {}.",
            t.steps,
            sci(t.test_mse()),
            sci(t.baseline),
            pct(t.run.last().map_or(f64::NAN, |l| l.accuracy)),
            t.steps,
            during.join(", ")
        ));
    }
    findings.push(fit_finding(&trained)?);
    Ok(Section {
        id: "adding".into(),
        title: "Learning a long dependency: the adding problem".into(),
        explanation: "Each cell of the previous section trained on the adding problem (Hochreiter & Schmidhuber \
            1997): two of the sequence's values are marked and the target is their mean, so the answer depends on \
            inputs up to T steps back. Sequences of 50 and 100 steps, hidden size 16, a dense read-out of the last \
            state, f32, the same budget for every cell: Adam, learning rate 0.003, batch 16, 60 epochs, 1,000 \
            training and 200 held-out sequences (the IRNN's recipe from Le et al. 2015; the LSTM's forget-gate bias \
            starts at 1, the GRU's biases at 0). ‖∂L/∂h_t‖ is the root mean square over 32 training sequences, \
            measured before training, every 10 epochs and after the last. The training state's size is the \
            network (weights, gradients, the cell's caches for T steps) and Adam's two moments, by size_of; the \
            boards' RAM is read from the firmware's linker scripts. The firmware does not run this training: on a \
            device the sequences would be generated, not stored."
            .into(),
        findings,
        frames: vec![table, ratios, profiles, curves],
        plots: vec![loss_plot, ratio_plot, profile_plot],
    })
}

/// Which training states fit each board's RAM.
fn fit_finding(trained: &[Trained]) -> Result<String> {
    let mut parts = Vec::new();
    for (board, script) in [M4F_BOARD, M0_BOARD] {
        let ram = ram_bytes(script)?;
        let (fit, not): (Vec<&Trained>, Vec<&Trained>) =
            trained.iter().partition(|t| t.run.state_bytes <= ram);
        let list = |v: &[&Trained]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|t| format!("{} T = {}", t.cell.name(), t.steps))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        parts.push(format!(
            "{board}, {ram} bytes of RAM: fits {}; does not fit {}",
            list(&fit),
            list(&not)
        ));
    }
    let sizes: Vec<String> = trained
        .iter()
        .map(|t| format!("{} T = {}: {}", t.cell.name(), t.steps, t.run.state_bytes))
        .collect();
    Ok(format!(
        "Training state in bytes (f32, weights, gradients, caches and Adam's moments): {}. Against {}.",
        sizes.join(", "),
        parts.join("; against ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_is_read_from_the_linker_scripts() {
        assert_eq!(ram_bytes(M4F_BOARD.1).unwrap(), 256 * 1024);
        assert_eq!(ram_bytes(M0_BOARD.1).unwrap(), 16 * 1024);
        assert_eq!(
            ram_bytes("MEMORY {\n  RAM : ORIGIN = 0x20000000, LENGTH = 4M\n}").unwrap(),
            4 << 20
        );
        assert!(ram_bytes("MEMORY { FLASH : LENGTH = 4M }").is_err());
        assert!(ram_bytes("RAM : ORIGIN = 0, LENGTH = lots").is_err());
    }
}
