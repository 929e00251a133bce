//! The curated report: every cause and every cure, measured, with plots and the data behind them.
//!
//! Each section (one module here, listed once in [`SECTIONS`]) runs its experiments (in parallel, seeded, so
//! any thread count gives the same numbers) and yields frames (tables), plots, and findings: sentences whose
//! every number is computed from the experiments' typed results. [`write_html`] turns the sections into
//! `index.html` beside each section's files, written by [`Outcome::save`] like every subcommand's.

use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use gradscope_core::{Act, Clip};

use crate::depth::{self, DepthConfig, DepthResult};
use crate::flow;
use crate::markup::escape;
use crate::options::{Cell, InitName, OptimizerKind, Precision, Rounding, Task};
use crate::output::{Frame, OutDir, Outcome};
use crate::plot::Plot;
use crate::rnn::{self, RnnConfig, RnnResult};
use crate::train::{self, TrainConfig, TrainResult};

mod adding;
mod architecture;
mod clipping;
mod cnn;
mod digits;
mod effects;
mod events;
mod exploding;
mod formats;
mod half;
mod horizon;
mod initialization;
mod loss;
mod recurrent;
mod regularization;
mod vanishing;

/// One section of the report.
#[derive(Clone, Debug)]
pub struct Section {
    /// Anchor and file-name prefix.
    pub id: String,
    /// Heading.
    pub title: String,
    /// What the section shows and why, in prose (no measured numbers: those are in `findings`).
    pub explanation: String,
    /// Sentences with measured numbers.
    pub findings: Vec<String>,
    /// The data.
    pub frames: Vec<Frame>,
    /// The plots.
    pub plots: Vec<Plot>,
}

impl Section {
    /// The section as an outcome: its frames, plots, and one JSON document (id, title, findings, every
    /// frame's rows), saved under the section's id.
    pub fn outcome(&self) -> Outcome {
        let data: serde_json::Map<String, serde_json::Value> = self
            .frames
            .iter()
            .map(|f| (f.name.clone(), f.json()))
            .collect();
        Outcome {
            name: self.id.clone(),
            heading: self.title.clone(),
            frames: self.frames.clone(),
            plots: self.plots.clone(),
            notes: self.findings.clone(),
            json: serde_json::json!({
                "id": self.id, "title": self.title, "findings": self.findings, "data": data,
            }),
        }
    }
}

/// How much work each measurement does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Effort {
    /// Samples per depth or recurrent batch.
    pub batch: usize,
    /// Epoch budget divisor for training runs (1 = the full run).
    pub shorten: usize,
    /// Products per cell of the formats section.
    pub products: u32,
}

impl Effort {
    /// The full report.
    pub const FULL: Effort = Effort {
        batch: 64,
        shorten: 1,
        products: 100_000,
    };
    /// `--quick`: small batches and short training, for CI.
    pub const QUICK: Effort = Effort {
        batch: 2,
        shorten: 10,
        products: 2_000,
    };
}

fn sci(x: f64) -> String {
    format!("{x:.2e}")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn act(name: &str) -> Result<Act> {
    Act::from_name(name).map_err(|e| anyhow!("{e}"))
}

fn first_last(r: &DepthResult) -> (f64, f64) {
    let g = |k: usize| r.layers.get(k).map_or(0.0, |l| l.grad_norm);
    (g(0), g(r.layers.len().saturating_sub(1)))
}

fn long_frame(name: &str, runs: &[DepthResult]) -> Result<Frame> {
    depth::long_frame(name, runs)
}

fn rms_plot(name: &str, title: &str, runs: &[DepthResult]) -> Plot {
    let y = "RMS of the signal sent back (∂L/∂input)";
    depth::layer_plot(name, title, y, runs, |l| l.backward_rms)
}

fn rnn_cfg(cell: Cell, scale: f64, gate_bias: f64, steps: usize, batch: usize) -> RnnConfig {
    RnnConfig {
        batch,
        ..RnnConfig::new(cell, scale, gate_bias, steps)
    }
}

fn rnn_sweep(label: &str, cfgs: &[RnnConfig]) -> Result<Vec<RnnResult>> {
    crate::par::sweep(label, cfgs, rnn::run)
}

/// One section of the report: its id and the function that measures it.
#[derive(Copy, Clone, Debug)]
pub struct SectionDef {
    /// The id (anchor and file-name prefix).
    pub id: &'static str,
    /// Runs the section's experiments.
    pub build: fn(Effort) -> Result<Section>,
}

/// Every section, in report order.
pub const SECTIONS: [SectionDef; 16] = [
    SectionDef {
        id: "formats",
        build: formats::build,
    },
    SectionDef {
        id: "vanishing",
        build: vanishing::build,
    },
    SectionDef {
        id: "initialization",
        build: initialization::build,
    },
    SectionDef {
        id: "loss",
        build: loss::build,
    },
    SectionDef {
        id: "exploding",
        build: exploding::build,
    },
    SectionDef {
        id: "clipping",
        build: clipping::build,
    },
    SectionDef {
        id: "architecture",
        build: architecture::build,
    },
    SectionDef {
        id: "recurrent",
        build: recurrent::build,
    },
    SectionDef {
        id: "adding",
        build: adding::build,
    },
    SectionDef {
        id: "regularization",
        build: regularization::build,
    },
    SectionDef {
        id: "horizon",
        build: horizon::build,
    },
    SectionDef {
        id: "events",
        build: events::build,
    },
    SectionDef {
        id: "half",
        build: half::build,
    },
    SectionDef {
        id: "digits",
        build: digits::build,
    },
    SectionDef {
        id: "cnn",
        build: cnn::build,
    },
    SectionDef {
        id: "effects",
        build: effects::build,
    },
];

/// One section by id (one of [`SECTIONS`]).
pub fn section(id: &str, e: Effort) -> Result<Section> {
    let def = SECTIONS.iter().find(|s| s.id == id).ok_or_else(|| {
        let ids: Vec<&str> = SECTIONS.iter().map(|s| s.id).collect();
        anyhow!("unknown section '{id}': choose one of {}", ids.join(", "))
    })?;
    (def.build)(e)
}

/// Every section, in order.
pub fn sections(e: Effort) -> Result<Vec<Section>> {
    SECTIONS.iter().map(|s| (s.build)(e)).collect()
}

/// The printed summary: one row per finding.
pub fn summary(sections: &[Section]) -> Outcome {
    let mut f = Frame::new("summary", "", &["section", "finding"]);
    for s in sections {
        for fd in &s.findings {
            f.push(vec![s.id.as_str().into(), fd.as_str().into()]);
        }
    }
    let json = sections
        .iter()
        .map(|s| serde_json::json!({"id": s.id, "title": s.title, "findings": s.findings}))
        .collect::<Vec<_>>()
        .into();
    Outcome {
        name: "summary".into(),
        heading: "gradscope report".into(),
        frames: vec![f],
        plots: Vec::new(),
        notes: Vec::new(),
        json,
    }
}

/// Write the report: `index.html`, and per section its CSVs, SVGs and one JSON. Returns the index's path.
pub fn write_html(sections: &[Section], dir: &OutDir, quick: bool) -> Result<std::path::PathBuf> {
    write_page(
        "gradscope report",
        if quick {
            " (<code>--quick</code>: small batches and short training)"
        } else {
            ""
        },
        sections,
        dir,
    )
}

/// Write `index.html` titled `title` in the report's style, and per section its CSVs, SVGs and one JSON.
/// `run_note` (HTML) follows "computed by this run" in the introduction. Returns the index's path.
pub fn write_page(
    title: &str,
    run_note: &str,
    sections: &[Section],
    dir: &OutDir,
) -> Result<std::path::PathBuf> {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>",
    ) + &escape(title)
        + "</title>\n<style>\
         body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}\
         table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.15rem .4rem}\
         td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}details{margin:.4rem 0}\
         </style></head><body>\n<h1>"
        + &escape(title)
        + "</h1>\n";
    let _ = writeln!(
        html,
        "<p>Vanishing and exploding gradients, and fixed-point underflow and overflow, measured. Every number below \
         is computed by this run{run_note}; each table's data is linked as CSV, each section's as JSON.</p>\n<ul>"
    );
    for s in sections {
        let _ = writeln!(
            html,
            "<li><a href=\"#{}\">{}</a></li>",
            s.id,
            escape(&s.title)
        );
    }
    html += "</ul>\n";
    for s in sections {
        s.outcome().save(dir)?;
        let _ = writeln!(
            html,
            "<h2 id=\"{}\">{}</h2>\n<p>{}</p>\n<ul>",
            s.id,
            escape(&s.title),
            escape(&s.explanation)
        );
        for fd in &s.findings {
            let _ = writeln!(html, "<li>{}</li>", escape(fd));
        }
        html += "</ul>\n";
        for p in &s.plots {
            let _ = writeln!(
                html,
                "<p><img src=\"{}.svg\" alt=\"{}\"></p>",
                p.name,
                escape(&p.title)
            );
        }
        for f in &s.frames {
            let rows = f.rows.len();
            if rows <= 40 {
                html += &f.html();
            } else {
                let _ = writeln!(
                    html,
                    "<details><summary>{} ({rows} rows)</summary>\n{}</details>",
                    f.name,
                    f.html()
                );
            }
            let _ = writeln!(html, "<p><a href=\"{0}.csv\">{0}.csv</a></p>", f.name);
        }
        let _ = writeln!(html, "<p><a href=\"{0}.json\">{0}.json</a></p>", s.id);
    }
    html += "</body></html>\n";
    dir.write("index.html", html.as_bytes())
}
