//! The report's regularization section.

use anyhow::Result;

use super::*;

/// The decay strengths compared in both experiments.
const DECAYS: [f64; 3] = [0.0, 1e-3, 1e-2];

/// `base` trained at each of [`DECAYS`] on `data`.
fn decay_sweep(
    label: &str,
    base: &TrainConfig,
    data: &crate::data::Dataset,
) -> Result<Vec<TrainResult>> {
    let cfgs: Vec<TrainConfig> = DECAYS
        .iter()
        .map(|&wd| TrainConfig {
            weight_decay: wd,
            ..base.clone()
        })
        .collect();
    crate::par::sweep(label, &cfgs, |c| train::run(c, data))
}

/// Every run's epochs as one frame `name` (weight decay, epoch, weight and gradient norms, losses,
/// accuracy) and two plots per epoch: the weight norm (`name`) and the gradient norm (`name_grad`).
fn per_epoch(
    name: &str,
    title: &str,
    runs: &[TrainResult],
    log_weights: bool,
) -> (Frame, Plot, Plot) {
    let mut f = Frame::new(
        name,
        "",
        &[
            "weight_decay",
            "epoch",
            "weight_norm",
            "grad_norm",
            "train_loss",
            "test_loss",
            "accuracy",
        ],
    );
    let mut wplot = Plot::new(
        name,
        &format!("{title}: weight norm per epoch"),
        "epoch",
        "‖θ‖",
        log_weights,
    );
    let mut gplot = Plot::new(
        &format!("{name}_grad"),
        &format!("{title}: gradient norm per epoch"),
        "epoch",
        "mean ‖∂L/∂θ‖",
        true,
    );
    for r in runs {
        let wd = r.config.weight_decay;
        for ep in &r.epochs {
            f.push(vec![
                wd.into(),
                ep.epoch.into(),
                ep.weight_norm.into(),
                ep.grad_norm.into(),
                ep.train_loss.into(),
                ep.test_loss.into(),
                ep.accuracy.into(),
            ]);
        }
        let series = |v: fn(&train::EpochRow) -> f64| -> Vec<(f64, f64)> {
            r.epochs.iter().map(|e| (e.epoch as f64, v(e))).collect()
        };
        wplot.line(format!("weight decay {wd}"), series(|e| e.weight_norm));
        gplot.line(format!("weight decay {wd}"), series(|e| e.grad_norm));
    }
    (f, wplot, gplot)
}

pub(super) fn build(e: Effort) -> Result<Section> {
    let data = crate::data::load(Task::Spiral, 1, None)?;
    let base = TrainConfig {
        epochs: (300 / e.shorten).max(1),
        ..TrainConfig::for_task(Task::Spiral)
    };
    let runs = decay_sweep("regularization", &base, &data)?;
    let (f, plot, gplot) = per_epoch("regularization", "Spiral, 2-16-16-1 tanh", &runs, false);
    let mut findings: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r.last().map(|l| {
                format!(
                    "weight decay {}: final weight norm {:.3}, gradient norm {}, held-out accuracy {}.",
                    r.config.weight_decay,
                    l.weight_norm,
                    sci(l.grad_norm),
                    pct(l.accuracy)
                )
            })
        })
        .collect();
    let (rnn_frames, rnn_plots, rnn_findings) = growing_rnn(e)?;
    findings.extend(rnn_findings);
    let mut frames = vec![f];
    frames.extend(rnn_frames);
    let mut plots = vec![plot, gplot];
    plots.extend(rnn_plots);
    Ok(Section {
        id: "regularization".into(),
        title: "L2 regularization: weight and gradient norms".into(),
        explanation: "Two interleaved spirals, a 2-16-16-1 tanh network, SGD with momentum 0.9, coupled L2 weight \
            decay (PyTorch's weight_decay) at three strengths, f32. Decay pulls every weight toward zero each step, \
            bounding the weight norm, which bounds how far the activations saturate and how large the products of \
            Jacobians can grow. The spirals show what decay costs where nothing explodes. The second experiment is \
            the regime decay is for: a tanh RNN whose recurrent weights start at gain 2 (every singular value 2, \
            Pascanu et al. 2013's exploding regime), hidden size 16, trained on the adding problem with SGD (learning rate 0.05, momentum 0.9, batch 16, \
            30 epochs), where the weights grow and the gradient with them unless decay shrinks the recurrent \
            gain back below 1. Taming is all decay does there: whether the network then learns the task is a \
            separate question (compare its held-out MSE with the mean predictor's)."
            .into(),
        findings,
        frames,
        plots,
    })
}

/// The recurrent gain of the RNN whose weights grow.
const GAIN: f64 = 2.0;

/// The regime where decay helps: a tanh RNN started with recurrent gain [`GAIN`] (Pascanu et al. 2013's
/// exploding regime) on the adding problem, SGD with momentum, at three decay strengths.
fn growing_rnn(e: Effort) -> Result<(Vec<Frame>, Vec<Plot>, Vec<String>)> {
    let data = crate::data::load(Task::Adding, 1, None)?;
    let baseline = super::adding::mean_predictor(&data);
    let steps = data.inputs / 2;
    let base = TrainConfig {
        cell: Cell::Rnn,
        recurrent_scale: GAIN,
        optimizer: OptimizerKind::Sgd,
        momentum: 0.9,
        lr: 0.05,
        epochs: (30 / e.shorten).max(1),
        ..TrainConfig::for_task(Task::Adding)
    };
    let runs = decay_sweep("regularization (rnn)", &base, &data)?;
    let title = format!("Tanh RNN, recurrent gain {GAIN}, adding problem over {steps} steps");
    let (per_epoch, wplot, gplot) = per_epoch("regularization_rnn", &title, &runs, true);
    let mut summary = Frame::new(
        "regularization_rnn_summary",
        "",
        &[
            "weight_decay",
            "initial_weight_norm",
            "final_weight_norm",
            "max_grad_norm",
            "final_grad_norm",
            "final_test_mse",
            "mean_predictor_mse",
            "first_over_last_before",
            "first_over_last_after",
        ],
    );
    let mut findings = Vec::new();
    for r in &runs {
        let wd = r.config.weight_decay;
        let max_grad = r.epochs.iter().map(|e| e.grad_norm).fold(0.0, f64::max);
        let last = r.last();
        let (ratio_before, ratio_after) =
            r.through_time.as_ref().map_or((f64::NAN, f64::NAN), |t| {
                (
                    train::ThroughTime::ratio(t.before()),
                    train::ThroughTime::ratio(t.after()),
                )
            });
        summary.push(vec![
            wd.into(),
            r.initial_weight_norm.into(),
            last.map(|l| l.weight_norm).into(),
            max_grad.into(),
            last.map(|l| l.grad_norm).into(),
            last.map(|l| l.test_loss).into(),
            baseline.into(),
            ratio_before.into(),
            ratio_after.into(),
        ]);
        findings.push(format!(
            "Tanh RNN at recurrent gain {GAIN}, weight decay {wd}: weight norm {:.3} → {:.3}, gradient norm up to {} (last epoch {}), held-out MSE {} (predicting the mean: {}), ‖∂L/∂h_1‖ / ‖∂L/∂h_{steps}‖ {} before training, {} after.",
            r.initial_weight_norm,
            last.map_or(f64::NAN, |l| l.weight_norm),
            sci(max_grad),
            sci(last.map_or(f64::NAN, |l| l.grad_norm)),
            sci(last.map_or(f64::NAN, |l| l.test_loss)),
            sci(baseline),
            sci(ratio_before),
            sci(ratio_after),
        ));
    }
    Ok((vec![per_epoch, summary], vec![wplot, gplot], findings))
}
