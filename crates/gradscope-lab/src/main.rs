//! `gradscope`: make vanishing and exploding gradients, and fixed-point underflow and overflow, visible.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use gradscope_core::{Act, Init};
use gradscope_lab::depth::{self, DepthConfig};
use gradscope_lab::output::{Format, OutDir, Outcome, write_atomic};
use gradscope_lab::report::{self, Effort};
use gradscope_lab::rnn::{self, RnnConfig};
use gradscope_lab::spec::Clip;
use gradscope_lab::train::{self, Scaling, TrainConfig};

#[derive(Parser, Debug)]
#[command(name = "gradscope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where the data goes.
#[derive(Args, Debug, Clone)]
struct Output {
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also write the data (CSV, JSON) and plots (SVG) into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn parse_act(s: &str) -> Result<Act, String> {
    Act::from_name(s).map_err(|e| e.to_string())
}

fn parse_clip(s: &str) -> Result<Clip, String> {
    s.parse::<Clip>().map_err(|e| e.to_string())
}

fn parse_scaling(s: &str) -> Result<Scaling, String> {
    s.parse::<Scaling>().map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
enum Command {
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
        /// Static loss scale applied to the output gradient (gradients are reported scaled).
        #[arg(long, default_value_t = 1.0)]
        loss_scale: f64,
        /// Write weights, data and gradients as JSON (schema gradscope-dump/1).
        #[arg(long, value_name = "FILE.json")]
        dump: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
    /// Per-time-step gradient norms ‖∂L/∂h_t‖ of a recurrent layer (vanishing and exploding through time).
    Rnn {
        /// Cell: rnn (tanh), irnn (ReLU, identity recurrent weights), lstm, gru.
        #[arg(long, default_value = "rnn", value_parser = clap::builder::PossibleValuesParser::new(rnn::CELLS))]
        cell: String,
        /// Time steps: 10, 20, 50 or 100.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Hidden units: 8, 16 or 32.
        #[arg(long, default_value_t = 16)]
        hidden: usize,
        /// Gain of the recurrent weights (every singular value for rnn/lstm/gru, the diagonal for irnn).
        #[arg(long, default_value_t = 1.0)]
        recurrent_scale: f64,
        /// Bias of the LSTM forget gate or GRU update gate.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        gate_bias: f64,
        /// Clipping of the parameter gradients: none, value:V, norm:N (per tensor), global:N, agc:L.
        #[arg(long, default_value = "none", value_parser = parse_clip)]
        clip: Clip,
        /// Number format (lstm and gru: f32 or f64).
        #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(depth::PRECISIONS))]
        precision: String,
        /// Rounding of fixed-point results.
        #[arg(long, default_value = "nearest", value_parser = ["floor", "nearest", "stochastic"])]
        rounding: String,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Sequences in the batch, 1 to 1024.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Write weights, data and gradients as JSON (schema gradscope-dump/1).
        #[arg(long, value_name = "FILE.json")]
        dump: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
    /// Train a small network and print the loss and accuracy per epoch with underflow and saturation rates;
    /// a divergence is reported with the step, layer and pass where it began.
    Train {
        #[command(flatten)]
        train: TrainArgs,
        /// Number format.
        #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(depth::PRECISIONS))]
        precision: String,
        #[command(flatten)]
        output: Output,
    },
    /// One training workload in every precision side by side: loss, accuracy, underflow and saturation rates,
    /// divergence step.
    Precision {
        #[command(flatten)]
        train: TrainArgs,
        /// Precisions to compare, comma-separated.
        #[arg(long, default_value = "f64,f32,i16f16,i8f24,i1f15", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(depth::PRECISIONS))]
        precisions: Vec<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Each format's gradients against f64 on fixed workloads (a deep tanh stack, BPTT through a tanh RNN,
    /// digits training): relative gradient error per layer, underflowed gradients, final accuracy.
    PrecisionEffects {
        /// Small batches and one training epoch.
        #[arg(long)]
        quick: bool,
        #[command(flatten)]
        output: Output,
    },
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
        #[command(flatten)]
        output: Output,
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
        #[command(flatten)]
        output: Output,
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
    /// The curated report (what `cargo run --release` runs): writes DIR/index.html with SVG plots and the CSV
    /// and JSON behind each, and prints a summary.
    Report {
        /// Small batches and short training, for CI.
        #[arg(long)]
        quick: bool,
        /// Output format of the summary on stdout.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Directory of the report.
        #[arg(long, value_name = "DIR", default_value = "report")]
        out: PathBuf,
    },
}

/// Options shared by `train` and `precision`.
#[derive(Args, Debug, Clone)]
struct TrainArgs {
    /// Task: xor, spiral, sine, adding (Hochreiter & Schmidhuber's adding problem, 20 steps), digits (8×8
    /// handwritten digits).
    #[arg(long, default_value = "xor", value_parser = clap::builder::PossibleValuesParser::new(gradscope_lab::data::TASKS))]
    task: String,
    /// Digits data file instead of the bundled one: CSV rows of 64 pixels (0..16) and a label (0..9).
    #[arg(long, value_name = "FILE.csv")]
    data: Option<PathBuf>,
    /// Rounding of fixed-point results.
    #[arg(long, default_value = "nearest", value_parser = ["floor", "nearest", "stochastic"])]
    rounding: String,
    /// Hidden-layer activation (default: the task's; see `gradscope activations` for names).
    #[arg(long, value_parser = parse_act)]
    activation: Option<Act>,
    /// Optimizer: sgd, momentum (0.9) or adam.
    #[arg(long, default_value = "momentum", value_parser = clap::builder::PossibleValuesParser::new(train::OPTIMIZERS))]
    optimizer: String,
    /// Learning rate (default: the task's).
    #[arg(long)]
    lr: Option<f64>,
    /// Coupled L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Passes over the training set (default: the task's).
    #[arg(long)]
    epochs: Option<usize>,
    /// Minibatch size (default: the task's).
    #[arg(long)]
    batch: Option<usize>,
    /// Loss scaling: none, static:S, dynamic or dynamic:S.
    #[arg(long, default_value = "none", value_parser = parse_scaling)]
    loss_scale: Scaling,
    /// Clipping: none, value:V, norm:N (per tensor), global:N, agc:L.
    #[arg(long, default_value = "none", value_parser = parse_clip)]
    clip: Clip,
    /// The loss reads the outputs multiplied by this; e.g. 8 lets I1F15 outputs stand for logits in (−8, 8).
    #[arg(long, default_value_t = 1.0)]
    output_scale: f64,
    /// Seed of data, weights, shuffling and stochastic rounding.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl TrainArgs {
    fn config(&self, precision: &str) -> TrainConfig {
        let d = TrainConfig::for_task(&self.task);
        TrainConfig {
            precision: precision.into(),
            rounding: self.rounding.clone(),
            activation: self.activation,
            optimizer: self.optimizer.clone(),
            lr: self.lr.unwrap_or(d.lr),
            weight_decay: self.weight_decay,
            epochs: self.epochs.unwrap_or(d.epochs),
            batch: self.batch.unwrap_or(d.batch),
            loss_scale: self.loss_scale,
            clip: self.clip,
            output_scale: self.output_scale,
            seed: self.seed,
            ..d
        }
    }

    fn data(&self, seed: u64) -> Result<gradscope_lab::data::Dataset> {
        gradscope_lab::data::load(&self.task, seed, self.data.as_deref())
    }
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
    let mut t = gradscope_lab::table::Table::new(header.clone());
    for r in body {
        t.push(r.clone());
    }
    t.render()
}

/// Check every output path before any work, so a bad path fails fast and nothing is half-written.
fn prepare(out: &Option<PathBuf>, dump: Option<&Path>) -> Result<Option<OutDir>> {
    if let Some(d) = dump {
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            anyhow::bail!(
                "--dump {}: the directory {} does not exist",
                d.display(),
                parent.display()
            );
        }
        if d.is_dir() {
            anyhow::bail!("--dump {}: is a directory", d.display());
        }
    }
    out.as_deref().map(OutDir::check).transpose()
}

fn emit(o: &Outcome, output: &Output, dir: Option<&OutDir>) -> Result<String> {
    let text = o.render(output.format)?;
    if let Some(d) = dir {
        o.save(d)?;
    }
    Ok(text)
}

fn run(cli: Cli) -> Result<String> {
    let command = cli.command.unwrap_or(Command::Report {
        quick: false,
        format: Format::Table,
        out: PathBuf::from("report"),
    });
    Ok(match command {
        Command::Formats {
            samples,
            seed,
            output,
        } => {
            let dir = prepare(&output.out, None)?;
            emit(
                &gradscope_lab::formats::outcome(samples, seed),
                &output,
                dir.as_ref(),
            )?
        }
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
            loss_scale,
            dump,
            output,
        } => {
            let dir = prepare(&output.out, dump.as_deref())?;
            let cfg = DepthConfig {
                act: activation,
                init,
                depth,
                width,
                precision,
                rounding,
                seed,
                batch,
                loss_scale,
            };
            let r = depth::run(&cfg)?;
            if let Some(path) = &dump {
                write_atomic(
                    path,
                    (serde_json::to_string_pretty(&r.dump)? + "\n").as_bytes(),
                )?;
            }
            emit(&depth::outcome(&r)?, &output, dir.as_ref())?
        }
        Command::Rnn {
            cell,
            steps,
            hidden,
            recurrent_scale,
            gate_bias,
            clip,
            precision,
            rounding,
            seed,
            batch,
            dump,
            output,
        } => {
            let dir = prepare(&output.out, dump.as_deref())?;
            let cfg = RnnConfig {
                cell,
                steps,
                hidden,
                recurrent_scale,
                gate_bias,
                clip,
                precision,
                rounding,
                seed,
                batch,
            };
            let r = rnn::run(&cfg)?;
            if let Some(path) = &dump {
                write_atomic(
                    path,
                    (serde_json::to_string_pretty(&r.dump)? + "\n").as_bytes(),
                )?;
            }
            emit(&rnn::outcome(&r)?, &output, dir.as_ref())?
        }
        Command::Train {
            train: args,
            precision,
            output,
        } => {
            let dir = prepare(&output.out, None)?;
            let cfg = args.config(&precision);
            train::validate(&cfg)?;
            let data = args.data(cfg.seed)?;
            let r = train::run(&cfg, &data)?;
            emit(&train::outcome(&r)?, &output, dir.as_ref())?
        }
        Command::Precision {
            train: args,
            precisions,
            output,
        } => {
            let dir = prepare(&output.out, None)?;
            let cfg = args.config("f32");
            train::validate(&cfg)?;
            let data = args.data(cfg.seed)?;
            let names: Vec<&str> = precisions.iter().map(String::as_str).collect();
            let runs = train::across_precisions(&cfg, &data, &names)?;
            emit(&train::precision_outcome(&runs)?, &output, dir.as_ref())?
        }
        Command::PrecisionEffects { quick, output } => {
            let dir = prepare(&output.out, None)?;
            emit(
                &gradscope_lab::effects::outcome(quick)?,
                &output,
                dir.as_ref(),
            )?
        }
        Command::Horizon {
            depth,
            width,
            batch,
            seed,
            output,
        } => {
            let dir = prepare(&output.out, None)?;
            emit(
                &depth::horizon_outcome(depth, width, batch, seed)?,
                &output,
                dir.as_ref(),
            )?
        }
        Command::FirmwareDigests => gradscope_lab::parity::digest_lines()?.join("\n") + "\n",
        Command::Report { quick, format, out } => {
            let dir = OutDir::check(&out)?;
            let sections = report::sections(if quick { Effort::QUICK } else { Effort::FULL })?;
            let index = report::write_html(&sections, &dir, quick)?;
            let summary = report::summary(&sections);
            let mut text = summary.render(format)?;
            if format == Format::Table {
                text += &format!("\nReport written to {}\n", index.display());
            }
            text
        }
    })
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
