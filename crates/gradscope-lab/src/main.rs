//! `gradscope`: make vanishing and exploding gradients, and fixed-point underflow and overflow, visible.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gradscope_lab::formats::{ROUNDINGS, format_infos, underflow_sweep};
use gradscope_lab::table::{Table, num};

#[derive(Parser, Debug)]
#[command(name = "gradscope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
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

fn run(cli: Cli) -> anyhow::Result<String> {
    Ok(
        match cli.command.unwrap_or(Command::Report { quick: false }) {
            Command::Formats { samples, seed } => formats(samples, seed),
            Command::Activations { markdown } => {
                let md = gradscope_lab::accuracy::markdown_table();
                if markdown { md } else { markdown_to_text(&md) }
            }
            Command::FirmwareDigests => gradscope_lab::parity::digest_lines().join("\n") + "\n",
            Command::Report { quick } => {
                let mut out = String::from("gradscope report\n================\n\n");
                out.push_str(&formats(if quick { 2_000 } else { 20_000 }, 1));
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
