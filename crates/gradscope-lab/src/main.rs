//! `gradscope`: make vanishing and exploding gradients, and fixed-point underflow and overflow, visible.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use gradscope_core::{Act, Clip, Loss};
use gradscope_lab::depth::{self, DepthConfig};
use gradscope_lab::options::{
    Cell, InitName, OptimizerKind, Precision, Rounding, Scaling, Task, parse_act, parse_clip_arg,
    parse_loss, parse_scaling,
};
use gradscope_lab::output::{Format, OutDir, Outcome, write_atomic};
use gradscope_lab::report::{self, Effort};
use gradscope_lab::rnn::{self, RnnConfig};
use gradscope_lab::train::{self, TrainConfig};

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

#[derive(Subcommand, Debug)]
enum Command {
    /// Per-layer gradient norms of a deep dense stack (vanishing and exploding through depth), with the
    /// fixed-point underflow horizon measured and predicted.
    Depth {
        #[command(flatten)]
        cfg: DepthConfig,
        /// Write weights, data and gradients as JSON (schema gradscope-dump/1).
        #[arg(long, value_name = "FILE.json")]
        dump: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
    /// Per-time-step gradient norms ‖∂L/∂h_t‖ of a recurrent layer (vanishing and exploding through time).
    Rnn {
        #[command(flatten)]
        cfg: RnnConfig,
        /// Write weights, data and gradients as JSON (schema gradscope-dump/1).
        #[arg(long, value_name = "FILE.json")]
        dump: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
    /// Deep convolutional networks on the 8x8 digits: per-convolution gradient norms at initialization, the
    /// underflow horizon per format, and held-out accuracy after training, for a plain sigmoid or tanh stack
    /// and three cures (ReLU with He init, residual connections, batch normalization).
    Cnn {
        #[command(flatten)]
        cfg: gradscope_lab::cnn::CnnConfig,
        /// Digits data file instead of the bundled one: CSV rows of 64 pixels (0..16) and a label (0..9).
        #[arg(long, value_name = "FILE.csv")]
        data: Option<PathBuf>,
        /// Write the first stack's profile pass in the first format (weights, images, gradients; conv weights
        /// in PyTorch's (out, in, kh, kw) order) as JSON (schema gradscope-dump/1).
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
        #[arg(long, value_enum, default_value_t = Precision::F32, ignore_case = true)]
        precision: Precision,
        #[command(flatten)]
        output: Output,
    },
    /// One training workload in every precision side by side: loss, accuracy, underflow and saturation rates,
    /// divergence step.
    Precision {
        #[command(flatten)]
        train: TrainArgs,
        /// Precisions to compare, comma-separated.
        #[arg(
            long,
            value_enum,
            default_value = "f64,f32,bf16,i16f16,i8f24,f16,i1f15",
            value_delimiter = ',',
            ignore_case = true
        )]
        precisions: Vec<Precision>,
        #[command(flatten)]
        output: Output,
    },
    /// Each format's gradients against f64 on fixed workloads (a deep tanh stack, BPTT through a tanh RNN,
    /// digits training): relative gradient error per layer, underflowed gradients, final accuracy.
    PrecisionEffects {
        /// Small batches and one training epoch.
        #[arg(long)]
        quick: bool,
        /// Formats to compare with f64, comma-separated (default: f32, bf16, i16f16, i8f24, f16 and i1f15,
        /// the fixed-point ones with nearest and stochastic rounding where the summary has both).
        #[arg(long, value_enum, value_delimiter = ',', ignore_case = true)]
        precisions: Vec<Precision>,
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
        /// Formats to measure, comma-separated (a float's LSB here is its smallest subnormal).
        #[arg(
            long,
            value_enum,
            default_value = "i16f16,i8f24,f16,i1f15",
            value_delimiter = ',',
            ignore_case = true
        )]
        precisions: Vec<Precision>,
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
        /// Print the Markdown table (the one in crates/gradscope-core/README.md) instead.
        #[arg(long)]
        markdown: bool,
        #[command(flatten)]
        output: Output,
    },
    /// The parity digests the firmware prints (`digest <workload> <hex>`), computed on the host; a test
    /// runs the firmware under QEMU and compares the lines.
    FirmwareDigests,
    /// Bring your own model: a PyTorch nn.Sequential of nn.Linear layers saved with
    /// safetensors.torch.save_file(model.state_dict(), path), and one batch of your data, measured in every
    /// format: per-layer gradient norms and their error against f64, underflowed and saturated weights,
    /// activations and gradients, horizons, a recommended loss scale and a training state's bytes. With
    /// --out, also an HTML page with plots.
    Inspect {
        #[command(flatten)]
        args: InspectArgs,
        #[command(flatten)]
        output: Output,
    },
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

/// Options of `inspect`.
#[derive(Args, Debug, Clone)]
struct InspectArgs {
    /// The model: a safetensors file of N.weight (out, in) and N.bias (out) tensors, in F32, F64, F16 or BF16.
    #[arg(long, value_name = "MODEL.safetensors")]
    model: PathBuf,
    /// One activation per linear layer, input first, comma-separated (e.g. tanh,tanh,identity).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_act)]
    activations: Vec<Act>,
    /// CSV rows: the model's inputs, then its targets (one class index for ce, one value per output
    /// otherwise). A first line without numbers is a header.
    #[arg(long, value_name = "DATA.csv")]
    data: PathBuf,
    /// The loss of the batch mean: mse, bce (on the outputs as logits), ce (softmax cross-entropy) or
    /// softmax_mse.
    #[arg(long, default_value = "mse", value_parser = parse_loss)]
    loss: Loss,
    /// Formats to measure (f64 always runs as the reference).
    #[arg(
        long,
        value_enum,
        default_value = "f64,f32,bf16,f16,i16f16,i8f24,i1f15",
        value_delimiter = ',',
        ignore_case = true
    )]
    precisions: Vec<Precision>,
    /// Rounding of every format.
    #[arg(long, value_enum, default_value_t = Rounding::Nearest)]
    rounding: Rounding,
    /// Use the first N samples of the file as the batch (default: all).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    batch: Option<u32>,
    /// Seed of stochastic rounding.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the model and the batch as Rust constants in format --precision, for the firmware
    /// (`mod model { include!("FILE.rs"); }`, then `model::net()` and `model::sample(k)`).
    #[arg(long, value_name = "FILE.rs", requires = "precision")]
    emit_rust: Option<PathBuf>,
    /// The format of --emit-rust.
    #[arg(long, value_enum, ignore_case = true, requires = "emit_rust")]
    precision: Option<Precision>,
}

/// Options shared by `train` and `precision`.
#[derive(Args, Debug, Clone)]
struct TrainArgs {
    /// Task.
    #[arg(long, value_enum, default_value_t = Task::Xor)]
    task: Task,
    /// Digits data file instead of the bundled one: CSV rows of 64 pixels (0..16) and a label (0..9).
    #[arg(long, value_name = "FILE.csv")]
    data: Option<PathBuf>,
    /// Rounding of fixed-point results.
    #[arg(long, value_enum, default_value_t = Rounding::Nearest)]
    rounding: Rounding,
    /// Hidden-layer activation (default: the task's; see `gradscope activations` for names).
    #[arg(long, value_parser = parse_act)]
    activation: Option<Act>,
    /// Optimizer (default: the task's: SGD with momentum 0.9, Adam for the adding task).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// SGD's momentum, from 0 (plain SGD) to below 1 (default 0.9).
    #[arg(long)]
    momentum: Option<f64>,
    /// Learning rate (default: the task's).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay: coupled L2 for sgd and adam, decoupled for adamw.
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
    #[arg(long, default_value = "none", value_parser = parse_clip_arg)]
    clip: Clip,
    /// The loss reads the outputs multiplied by this; e.g. 8 lets I1F15 outputs stand for logits in (−8, 8).
    #[arg(long, default_value_t = 1.0)]
    output_scale: f64,
    /// Loss (default: the task's): xor and spiral take bce or mse (a sigmoid output trained with MSE), digits
    /// ce or mse (softmax MSE), sine and adding mse.
    #[arg(long, value_parser = parse_loss)]
    loss: Option<Loss>,
    /// The first output unit's bias starts here (digits: class 0's), e.g. -8 to start confidently wrong.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    output_bias: f64,
    /// Seed of data, weights, shuffling and stochastic rounding.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The adding task's recurrent cell (rnn: tanh; lstm and gru train in f32 or f64).
    #[arg(long, value_enum, default_value_t = Cell::Irnn)]
    cell: Cell,
    /// The adding task's sequence length: 20, 50 or 100 (other than 20: f32 or f64).
    #[arg(long)]
    steps: Option<usize>,
    /// Gain of the adding task's rnn or irnn recurrent weights (above 1 the gradient grows through time).
    #[arg(long, default_value_t = 1.0)]
    recurrent_scale: f64,
}

impl TrainArgs {
    fn config(&self, precision: Precision) -> TrainConfig {
        let d = TrainConfig::for_task(self.task);
        TrainConfig {
            precision,
            rounding: self.rounding,
            activation: self.activation,
            optimizer: self.optimizer.unwrap_or(d.optimizer),
            momentum: self.momentum.unwrap_or(d.momentum),
            lr: self.lr.unwrap_or(d.lr),
            weight_decay: self.weight_decay,
            epochs: self.epochs.unwrap_or(d.epochs),
            batch: self.batch.unwrap_or(d.batch),
            loss_scale: self.loss_scale,
            clip: self.clip,
            output_scale: self.output_scale,
            loss: self.loss,
            output_bias: self.output_bias,
            seed: self.seed,
            cell: self.cell,
            recurrent_scale: self.recurrent_scale,
            ..d
        }
    }

    fn data(&self, seed: u64) -> Result<gradscope_lab::data::Dataset> {
        match (self.task, self.steps) {
            (Task::Adding, Some(steps)) => gradscope_lab::data::load_adding(seed, steps),
            (_, Some(_)) => anyhow::bail!("--steps applies to the adding task only"),
            (task, None) => gradscope_lab::data::load(task, seed, self.data.as_deref()),
        }
    }
}

/// Check every output path before any work, so a bad path fails fast and nothing is half-written.
fn prepare(out: &Option<PathBuf>, file: Option<(&str, &Path)>) -> Result<Option<OutDir>> {
    if let Some((flag, d)) = file {
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            anyhow::bail!(
                "{flag} {}: the directory {} does not exist",
                d.display(),
                parent.display()
            );
        }
        if d.is_dir() {
            anyhow::bail!("{flag} {}: is a directory", d.display());
        }
    }
    out.as_deref().map(OutDir::check).transpose()
}

/// Write a dump as JSON, when asked to.
fn write_dump(path: Option<&Path>, dump: &gradscope_lab::dump::Dump) -> Result<()> {
    match path {
        Some(p) => write_atomic(
            p,
            (serde_json::to_string_pretty(&dump.json())? + "\n").as_bytes(),
        ),
        None => Ok(()),
    }
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
        Command::Activations { markdown, output } => {
            let dir = prepare(&output.out, None)?;
            let frame = gradscope_lab::accuracy::frame(&gradscope_lab::accuracy::rows());
            if markdown {
                frame.markdown()
            } else {
                let o = Outcome {
                    name: "activations".into(),
                    heading:
                        "Maximum absolute error against the f64 formula over x = k/256, |x| <= 20"
                            .into(),
                    json: frame.json(),
                    frames: vec![frame],
                    plots: Vec::new(),
                    notes: Vec::new(),
                };
                emit(&o, &output, dir.as_ref())?
            }
        }
        Command::Depth { cfg, dump, output } => {
            let dir = prepare(&output.out, dump.as_deref().map(|d| ("--dump", d)))?;
            let r = depth::run(&cfg)?;
            write_dump(dump.as_deref(), &r.dump)?;
            emit(&depth::outcome(&r)?, &output, dir.as_ref())?
        }
        Command::Rnn { cfg, dump, output } => {
            let dir = prepare(&output.out, dump.as_deref().map(|d| ("--dump", d)))?;
            let r = rnn::run(&cfg)?;
            write_dump(dump.as_deref(), &r.dump)?;
            emit(&rnn::outcome(&r)?, &output, dir.as_ref())?
        }
        Command::Cnn {
            cfg,
            data,
            dump,
            output,
        } => {
            let dir = prepare(&output.out, dump.as_deref().map(|d| ("--dump", d)))?;
            gradscope_lab::cnn::validate(&cfg)?;
            let data = gradscope_lab::data::load(Task::Digits, cfg.seed, data.as_deref())?;
            let dumped = match dump {
                Some(_) => Some(gradscope_lab::cnn::dump(&cfg, &data)?),
                None => None,
            };
            let runs = gradscope_lab::cnn::run(&cfg, &data)?;
            if let Some(d) = &dumped {
                write_dump(dump.as_deref(), d)?;
            }
            emit(
                &gradscope_lab::cnn::outcome(&cfg, &runs)?,
                &output,
                dir.as_ref(),
            )?
        }
        Command::Train {
            train: args,
            precision,
            output,
        } => {
            let dir = prepare(&output.out, None)?;
            let cfg = args.config(precision);
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
            let cfg = args.config(Precision::F32);
            train::validate(&cfg)?;
            let data = args.data(cfg.seed)?;
            let runs = train::across_precisions(&cfg, &data, &precisions)?;
            emit(&train::precision_outcome(&runs)?, &output, dir.as_ref())?
        }
        Command::PrecisionEffects {
            quick,
            precisions,
            output,
        } => {
            let dir = prepare(&output.out, None)?;
            emit(
                &gradscope_lab::effects::outcome(quick, &precisions)?,
                &output,
                dir.as_ref(),
            )?
        }
        Command::Horizon {
            depth,
            width,
            batch,
            seed,
            precisions,
            output,
        } => {
            let dir = prepare(&output.out, None)?;
            depth::validate(&DepthConfig {
                batch,
                ..DepthConfig::new(
                    Act::Sigmoid,
                    InitName::XavierNormal,
                    depth,
                    width,
                    Precision::I16F16,
                )
            })?;
            let runs = depth::horizon_runs(&precisions, depth, width, batch, seed)?;
            emit(&depth::horizon_outcome(&runs)?, &output, dir.as_ref())?
        }
        Command::FirmwareDigests => gradscope_lab::parity::digest_lines()?.join("\n") + "\n",
        Command::Inspect { args, output } => {
            use gradscope_lab::inspect::{self, InspectConfig, Model};
            let dir = prepare(
                &output.out,
                args.emit_rust.as_deref().map(|f| ("--emit-rust", f)),
            )?;
            let model = Model::load(&args.model, &args.activations)?;
            let mut data = inspect::load_data(&args.data, &model, args.loss)?;
            if let Some(b) = args.batch {
                data.truncate(b as usize);
            }
            let cfg = InspectConfig {
                precisions: args.precisions,
                rounding: args.rounding,
                loss: args.loss,
                seed: args.seed,
            };
            let r = inspect::run(&model, &args.model.display().to_string(), &data, &cfg)?;
            let o = inspect::outcome(&r)?;
            let text = o.render(output.format)?;
            if let (Some(file), Some(p)) = (&args.emit_rust, args.precision) {
                let rust = inspect::emit_rust(
                    &model,
                    &data,
                    args.loss,
                    p,
                    &args.model.display().to_string(),
                )?;
                write_atomic(file, rust.as_bytes())?;
            }
            if let Some(d) = &dir {
                report::write_page("gradscope inspect", "", &[inspect::section(&r, &o)], d)?;
            }
            text
        }
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
