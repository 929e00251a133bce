//! `gradscope`: make vanishing and exploding gradients, and fixed-point underflow and overflow, visible.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gradscope_core::{Act, Init};
use gradscope_lab::depth::{self, DepthConfig, DepthResult};
use gradscope_lab::formats::{ROUNDINGS, format_infos, underflow_sweep};
use gradscope_lab::table::{Table, num};

#[derive(Parser, Debug)]
#[command(name = "gradscope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// Output format of a subcommand's data.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Aligned text table.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// JSON.
    Json,
}

fn parse_act(s: &str) -> Result<Act, String> {
    Act::from_name(s).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The underflow horizon per format, activation and initializer: how many layers from the output the
    /// back-propagated signal of a deep stack stays above one LSB, measured and predicted by the mean-field
    /// model.
    Horizon {
        /// Number of layers, 1 to 64.
        #[arg(long, default_value_t = 64)]
        depth: usize,
        /// Width of every layer: 8, 16, 32 or 64.
        #[arg(long, default_value_t = 32)]
        width: usize,
        /// Samples in the batch, 1 to 4096.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Seed of weights and data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Per-layer gradient norms of a deep dense stack (vanishing and exploding through depth), with the
    /// fixed-point underflow horizon measured and predicted.
    Depth {
        /// Activation of every layer: identity, sigmoid, tanh, relu, leaky_relu, elu, selu, softplus, gelu,
        /// gelu_tanh, silu, softsign, hardsigmoid, hardtanh. leaky_relu, elu and softplus take a parameter as
        /// name:value, e.g. leaky_relu:0.2.
        #[arg(long, default_value = "sigmoid", value_parser = parse_act)]
        activation: Act,
        /// Weight initializer (biases are zero).
        #[arg(long, default_value = "xavier_normal", value_parser = clap::builder::PossibleValuesParser::new(Init::NAMES))]
        init: String,
        /// Number of layers, 1 to 64.
        #[arg(long, default_value_t = 32)]
        depth: usize,
        /// Width of every layer: 8, 16, 32 or 64.
        #[arg(long, default_value_t = 32)]
        width: usize,
        /// Number format.
        #[arg(long, default_value = "i16f16", value_parser = clap::builder::PossibleValuesParser::new(depth::PRECISIONS))]
        precision: String,
        /// Rounding of fixed-point results.
        #[arg(long, default_value = "nearest", value_parser = ["floor", "nearest", "stochastic"])]
        rounding: String,
        /// Seed of weights, data and stochastic rounding.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Samples in the batch, 1 to 4096.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The number formats: range, resolution, and how often products of small values underflow per rounding
    /// mode (floor, nearest, stochastic).
    Formats {
        /// Products measured per cell.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        samples: u32,
        /// Seed of the operand and stochastic-rounding generators.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Each activation backend's maximum absolute error against the f64 formula, for f and f′, over
    /// x = k/256 in [−20, 20] (f32 libm, f32 micromath, I16F16, I8F24, I1F15).
    Activations {
        /// Print the markdown table (the one in crates/gradscope-core/README.md).
        #[arg(long)]
        markdown: bool,
    },
    /// The parity digests the firmware prints (`digest <workload> <hex>`), computed on the host; a test
    /// runs the firmware under QEMU and compares the lines.
    FirmwareDigests,
    /// The curated report (what `cargo run --release` runs).
    Report {
        /// Fewer samples per measurement, for CI.
        #[arg(long)]
        quick: bool,
    },
}

fn formats(samples: u32, seed: u64) -> String {
    let mut out = String::new();
    let mut t = Table::new(["format", "resolution", "min", "max"]);
    for i in format_infos() {
        t.push([
            i.name.to_string(),
            num(i.resolution),
            num(i.min),
            format!("{:.10e}", i.max),
        ]);
    }
    out.push_str("Number formats (resolution = one LSB, or the smallest normal for floats)\n\n");
    out.push_str(&t.render());
    let cells = underflow_sweep(&[4, 8, 10, 12], samples, seed);
    let mut header = vec!["format".to_string(), "|operands|".to_string()];
    header.extend(ROUNDINGS.iter().map(|r| format!("vanish:{r}")));
    header.extend(ROUNDINGS.iter().map(|r| format!("bias:{r}")));
    let mut t = Table::new(header);
    for group in cells.chunks(ROUNDINGS.len()) {
        let Some(first) = group.first() else { continue };
        let mut row = vec![first.format.to_string(), format!("~2^-{}", first.k)];
        row.extend(
            group
                .iter()
                .map(|c| format!("{:.1}%", 100.0 * c.underflow_rate)),
        );
        row.extend(
            group
                .iter()
                .map(|c| format!("{:+.1}%±{:.1}", 100.0 * c.relative_bias, 100.0 * c.bias_2se)),
        );
        t.push(row);
    }
    out.push_str(&format!(
        "\nProducts of two random values of the given magnitude ({samples} per cell): the share that vanish\n\
         (UNDERFLOW) and the rounding's systematic error sum(result - exact) / sum|exact| (± two standard errors).\n\
         f32 arithmetic always rounds to nearest-even, so its three columns agree.\n\n"
    ));
    out.push_str(&t.render());
    out
}

/// Render a simple markdown table as an aligned text table.
fn markdown_to_text(md: &str) -> String {
    let rows: Vec<Vec<String>> = md
        .lines()
        .filter(|l| !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    let Some((header, body)) = rows.split_first() else {
        return String::new();
    };
    let mut t = Table::new(header.clone());
    for r in body {
        t.push(r.clone());
    }
    t.render()
}

fn opt(h: Option<usize>) -> String {
    h.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn render_depth(r: &DepthResult, format: Format) -> anyhow::Result<String> {
    let header = [
        "layer",
        "grad_norm",
        "backward_rms",
        "forward_rms",
        "zero_grads",
        "underflow",
        "saturated",
        "nonfinite",
    ];
    let rows = r.layers.iter().map(|l| {
        vec![
            l.layer.to_string(),
            format!("{:.4e}", l.grad_norm),
            format!("{:.4e}", l.backward_rms),
            format!("{:.4e}", l.forward_rms),
            format!("{:.1}%", 100.0 * l.zero_fraction),
            l.underflow.to_string(),
            l.saturated.to_string(),
            l.nonfinite.to_string(),
        ]
    });
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(r)? + "\n",
        Format::Csv => {
            let mut out = header.join(",") + "\n";
            for l in &r.layers {
                out += &format!(
                    "{},{:e},{:e},{:e},{},{},{},{}\n",
                    l.layer,
                    l.grad_norm,
                    l.backward_rms,
                    l.forward_rms,
                    l.zero_fraction,
                    l.underflow,
                    l.saturated,
                    l.nonfinite
                );
            }
            out
        }
        Format::Table => {
            let mut t = Table::new(header);
            for row in rows {
                t.push(row);
            }
            format!(
                "{} stack, {} init, depth {}, width {}, {} ({} rounding), batch {}, seed {}: mean loss {:.6}\n\n{}\n\
                 underflow horizon (layers from the output until the back-propagated RMS < 1 LSB): measured {}, predicted {}\n",
                r.activation,
                r.init,
                r.depth,
                r.width,
                r.precision,
                r.rounding,
                r.batch,
                r.seed,
                r.loss,
                t.render(),
                opt(r.measured_horizon),
                opt(r.predicted_horizon)
            )
        }
    })
}

/// One row of the horizon table.
#[derive(serde::Serialize)]
struct HorizonRow {
    precision: String,
    activation: String,
    init: String,
    measured: Option<usize>,
    predicted: Option<usize>,
}

fn horizon_rows(
    depth: usize,
    width: usize,
    batch: usize,
    seed: u64,
) -> anyhow::Result<Vec<HorizonRow>> {
    let mut rows = Vec::new();
    for precision in ["i16f16", "i8f24", "i1f15"] {
        for act in [Act::Sigmoid, Act::Tanh, Act::Relu] {
            for init in ["xavier_normal", "kaiming_normal", "standard"] {
                let r = depth::run(&DepthConfig {
                    act,
                    init: init.into(),
                    depth,
                    width,
                    precision: precision.into(),
                    rounding: "nearest".into(),
                    seed,
                    batch,
                })?;
                rows.push(HorizonRow {
                    precision: precision.into(),
                    activation: act.to_string(),
                    init: init.into(),
                    measured: r.measured_horizon,
                    predicted: r.predicted_horizon,
                });
            }
        }
    }
    Ok(rows)
}

fn render_horizon(rows: &[HorizonRow], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(rows)? + "\n",
        Format::Csv => {
            let mut out = String::from("precision,activation,init,measured,predicted\n");
            for r in rows {
                let o = |h: Option<usize>| h.map_or(String::new(), |v| v.to_string());
                out += &format!(
                    "{},{},{},{},{}\n",
                    r.precision,
                    r.activation,
                    r.init,
                    o(r.measured),
                    o(r.predicted)
                );
            }
            out
        }
        Format::Table => {
            let mut t = Table::new(["precision", "activation", "init", "measured", "predicted"]);
            for r in rows {
                t.push([
                    r.precision.clone(),
                    r.activation.clone(),
                    r.init.clone(),
                    opt(r.measured),
                    opt(r.predicted),
                ]);
            }
            format!(
                "Underflow horizon: layers from the output until the back-propagated signal's RMS is below one LSB\n\
                 (none: it never is within the depth). Predicted by the mean-field model of gradscope_core::horizon.\n\n{}",
                t.render()
            )
        }
    })
}

/// The report's depth section: first- and last-layer gradient norms and the horizons, per activation,
/// initializer and precision.
fn depth_section(batch: usize) -> anyhow::Result<String> {
    let mut t = Table::new([
        "activation",
        "init",
        "precision",
        "grad norm, layer 1",
        "grad norm, layer 32",
        "horizon measured",
        "horizon predicted",
    ]);
    for act in [Act::Sigmoid, Act::Tanh, Act::Relu] {
        for init in ["xavier_normal", "kaiming_normal"] {
            for precision in ["f32", "i16f16", "i1f15"] {
                let r = depth::run(&DepthConfig {
                    act,
                    init: init.into(),
                    depth: 32,
                    width: 32,
                    precision: precision.into(),
                    rounding: "nearest".into(),
                    seed: 1,
                    batch,
                })?;
                let g = |k: usize| r.layers.get(k).map_or(0.0, |l| l.grad_norm);
                t.push([
                    act.to_string(),
                    init.to_string(),
                    precision.to_string(),
                    format!("{:.3e}", g(0)),
                    format!("{:.3e}", g(31)),
                    opt(r.measured_horizon),
                    opt(r.predicted_horizon),
                ]);
            }
        }
    }
    Ok(format!(
        "\nVanishing with depth: 32 dense layers of width 32, MSE loss, batch {batch}, seed 1\n\
         (horizon: layers from the output until the back-propagated signal's RMS is below one LSB; floats have none.\n\
         The prediction treats a layer whose pre-activation RMS is below one LSB as all zeros, so where the forward\n\
         signal is only just underflowing, as for ReLU under Xavier at this depth, it is pessimistic.)\n\n{}",
        t.render()
    ))
}

fn run(cli: Cli) -> anyhow::Result<String> {
    Ok(
        match cli.command.unwrap_or(Command::Report { quick: false }) {
            Command::Formats { samples, seed } => formats(samples, seed),
            Command::Activations { markdown } => {
                let md = gradscope_lab::accuracy::markdown_table();
                if markdown { md } else { markdown_to_text(&md) }
            }
            Command::Depth {
                activation,
                init,
                depth,
                width,
                precision,
                rounding,
                seed,
                batch,
                format,
            } => {
                let cfg = DepthConfig {
                    act: activation,
                    init,
                    depth,
                    width,
                    precision,
                    rounding,
                    seed,
                    batch,
                };
                render_depth(&depth::run(&cfg)?, format)?
            }
            Command::Horizon {
                depth,
                width,
                batch,
                seed,
                format,
            } => render_horizon(&horizon_rows(depth, width, batch, seed)?, format)?,
            Command::FirmwareDigests => gradscope_lab::parity::digest_lines().join("\n") + "\n",
            Command::Report { quick } => {
                let mut out = String::from("gradscope report\n================\n\n");
                out.push_str(&formats(if quick { 2_000 } else { 20_000 }, 1));
                out.push_str(&depth_section(if quick { 2 } else { 16 })?);
                let rows = horizon_rows(64, 32, if quick { 2 } else { 16 }, 1)?;
                out.push('\n');
                out.push_str(&render_horizon(&rows, Format::Table)?);
                out
            }
        },
    )
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
