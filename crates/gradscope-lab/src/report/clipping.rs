//! The report's clipping section.

use anyhow::Result;

use super::*;

pub(super) fn build(e: Effort) -> Result<Section> {
    let clips = [
        Clip::None,
        Clip::Value(0.01),
        Clip::Norm(1.0),
        Clip::Global(1.0),
        Clip::Agc(0.01),
    ];
    let cfgs: Vec<RnnConfig> = clips
        .iter()
        .map(|&c| RnnConfig {
            clip: c,
            ..rnn_cfg(Cell::Rnn, 2.0, 0.0, 50, e.batch)
        })
        .collect();
    let runs = rnn_sweep("clipping", &cfgs)?;
    let mut f = Frame::new("clipping", "", &["clip", "norm_before", "norm_after"]);
    let mut findings = Vec::new();
    for r in &runs {
        f.push(vec![
            r.clip.to_string().into(),
            r.clipping.norm_before.into(),
            r.clipping.norm_after.into(),
        ]);
        if r.clip != Clip::None {
            findings.push(format!(
                "{}: the parameter gradient's norm goes from {} to {}.",
                r.clip,
                sci(r.clipping.norm_before),
                sci(r.clipping.norm_after)
            ));
        }
    }
    // Training through the explosion: the adding task with the recurrent gain raised.
    let data = crate::data::load(Task::Adding, 1, None)?;
    let base = TrainConfig {
        epochs: (10 / e.shorten).max(1),
        optimizer: OptimizerKind::Sgd,
        momentum: 0.0,
        lr: 1.0,
        ..TrainConfig::for_task(Task::Adding)
    };
    let tcfgs: Vec<TrainConfig> = [Clip::None, Clip::Global(1.0), Clip::Agc(0.05)]
        .iter()
        .map(|&c| TrainConfig {
            clip: c,
            ..base.clone()
        })
        .collect();
    let trained = crate::par::sweep("clipping train", &tcfgs, |c| train::run(c, &data))?;
    let mut tf = Frame::new(
        "clipping_train",
        "",
        &["clip", "epoch", "train_loss", "test_loss", "grad_norm"],
    );
    let mut plot = Plot::new(
        "clipping_train",
        "Adding task, IRNN, SGD with lr 1: training loss",
        "epoch",
        "training loss",
        true,
    );
    for r in &trained {
        for ep in &r.epochs {
            tf.push(vec![
                r.config.clip.to_string().into(),
                ep.epoch.into(),
                ep.train_loss.into(),
                ep.test_loss.into(),
                ep.grad_norm.into(),
            ]);
        }
        plot.line(
            format!("clip {}", r.config.clip),
            r.epochs
                .iter()
                .map(|e| (e.epoch as f64, e.train_loss))
                .collect(),
        );
        findings.push(format!(
            "Adding task, clip {}: {}.",
            r.config.clip,
            match (&r.divergence, r.last()) {
                (Some(d), _) => train::describe(d),
                (None, Some(l)) =>
                    format!("held-out MSE {:.4} after {} epochs", l.test_loss, l.epoch),
                (None, None) => "no epochs".into(),
            }
        ));
    }
    Ok(Section {
        id: "clipping".into(),
        title: "Clipping tames the explosion".into(),
        explanation: "A tanh RNN whose recurrent matrix has every singular value 2, over 50 steps: the parameter \
            gradient's norm before and after each clipping rule. Value clipping bounds each element (and changes \
            the direction), per-tensor and global-norm clipping rescale (global keeps the direction; Pascanu et al. \
            2013), and adaptive gradient clipping bounds each unit's gradient relative to its weights (Brock et \
            al. 2021). Below, the adding problem (Hochreiter & Schmidhuber 1997) trained with a large learning rate, \
            with and without clipping."
            .into(),
        findings,
        frames: vec![f, tf],
        plots: vec![plot],
    })
}
