//! Training data: four synthetic tasks generated from a seed, and the 8×8 handwritten digits.
//!
//! Every value is scaled into (−1, 1) so that the same data fits every format, `I1F15` included.
//!
//! The digits are scikit-learn's copy of the UCI test set (1797 samples, 64 pixels with values 0..16, then
//! the label), committed as `data/digits.csv.gz` (CC BY 4.0; see `data/README.md`). Pixels are divided by 16;
//! the 20% held out for testing are chosen by a seeded shuffle.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;

use crate::options::Task;

/// Steps of the adding problem.
pub const ADDING_STEPS: usize = 20;

/// What the outputs mean, which decides the loss and the accuracy.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One logit; the target is 0 or 1 (binary cross-entropy on logits).
    Binary,
    /// One logit per class; the target is one-hot (softmax cross-entropy).
    Classes,
    /// Real targets (MSE); a prediction counts as correct when within [`Dataset::tolerance`].
    Regression,
}

/// Samples as (input, target) rows of reals.
pub type Samples = Vec<(Vec<f64>, Vec<f64>)>;

/// Samples as flat rows of reals.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The task.
    pub task: Task,
    /// Inputs per sample (for the adding task: 2 per step, step-major).
    pub inputs: usize,
    /// Outputs per sample.
    pub outputs: usize,
    /// Loss and accuracy.
    pub kind: Kind,
    /// Regression accuracy threshold on |prediction − target|.
    pub tolerance: f64,
    /// Training samples (input, target).
    pub train: Samples,
    /// Held-out samples.
    pub test: Samples,
}

fn uniform(rng: &mut Xoshiro128PlusPlus) -> f64 {
    // 53 random bits → [0, 1).
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn split(
    mut all: Vec<(Vec<f64>, Vec<f64>)>,
    test_share: f64,
    rng: &mut Xoshiro128PlusPlus,
) -> (Samples, Samples) {
    shuffle(&mut all, rng);
    let n_test = ((all.len() as f64) * test_share).round() as usize;
    let test = all.split_off(all.len() - n_test);
    (all, test)
}

/// Fisher–Yates with the given generator.
pub fn shuffle<T>(v: &mut [T], rng: &mut Xoshiro128PlusPlus) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// The sequence lengths the adding task's networks are compiled for.
pub const ADDING_LENGTHS: [usize; 3] = [20, 50, 100];

/// Build a task's data from its seed (`digits` from the committed file, or `file` when given).
pub fn load(task: Task, seed: u64, file: Option<&Path>) -> Result<Dataset> {
    load_with(task, seed, file, ADDING_STEPS)
}

/// The adding problem with sequences of `steps` steps (one of [`ADDING_LENGTHS`]).
pub fn load_adding(seed: u64, steps: usize) -> Result<Dataset> {
    if !ADDING_LENGTHS.contains(&steps) {
        bail!(
            "--steps {steps}: the adding task takes {}",
            ADDING_LENGTHS.map(|n| n.to_string()).join(", ")
        );
    }
    load_with(Task::Adding, seed, None, steps)
}

fn load_with(task: Task, seed: u64, file: Option<&Path>, steps: usize) -> Result<Dataset> {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed ^ 0xda7a);
    if file.is_some() && task != Task::Digits {
        bail!("--data applies to the digits task only");
    }
    // Per task: what the outputs mean, the regression tolerance, the samples and the share held out.
    let ((kind, tolerance), all, test_share) = match task {
        Task::Xor => {
            let all: Vec<(Vec<f64>, Vec<f64>)> =
                [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)]
                    .iter()
                    .map(|&(a, b): &(f64, f64)| {
                        (
                            vec![0.9 * a, 0.9 * b],
                            vec![if a * b < 0.0 { 1.0 } else { 0.0 }],
                        )
                    })
                    .collect();
            ((Kind::Binary, 0.0), all, 0.0)
        }
        Task::Spiral => {
            // Two interleaved spirals (Lang & Witbrock 1988), 1.5 turns, radius up to 0.9, small noise.
            let mut all = Vec::new();
            for k in 0..400 {
                let class = k % 2;
                let t = uniform(&mut rng);
                let angle = 3.0 * std::f64::consts::PI * t + std::f64::consts::PI * class as f64;
                let radius = 0.85 * t + 0.05;
                let noise = |r: &mut Xoshiro128PlusPlus| 0.02 * (uniform(r) - 0.5);
                let x = radius * angle.cos() + noise(&mut rng);
                let y = radius * angle.sin() + noise(&mut rng);
                all.push((vec![x, y], vec![class as f64]));
            }
            ((Kind::Binary, 0.0), all, 0.25)
        }
        Task::Sine => {
            let mut all = Vec::new();
            for _ in 0..384 {
                let x = 1.8 * uniform(&mut rng) - 0.9;
                all.push((vec![x], vec![0.8 * (std::f64::consts::PI * x).sin()]));
            }
            ((Kind::Regression, 0.05), all, 1.0 / 3.0)
        }
        Task::Adding => {
            // Hochreiter & Schmidhuber (1997): values U(0, 1), two markers (one in each half); the target is
            // the mean of the two marked values, so it stays in [0, 1).
            let mut all = Vec::new();
            for _ in 0..1200 {
                let half = steps / 2;
                let a = (rng.next_u64() % half as u64) as usize;
                let b = half + (rng.next_u64() % half as u64) as usize;
                let mut x = Vec::with_capacity(2 * steps);
                let mut target = 0.0;
                for t in 0..steps {
                    let v = uniform(&mut rng);
                    let marked = t == a || t == b;
                    if marked {
                        target += v / 2.0;
                    }
                    x.push(v);
                    x.push(if marked { 1.0 - 1.0 / 1024.0 } else { 0.0 });
                }
                all.push((x, vec![target]));
            }
            ((Kind::Regression, 0.02), all, 1.0 / 6.0)
        }
        Task::Digits => {
            let text = match file {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read --data {}", p.display()))?,
                None => digits_csv()?,
            };
            let where_ = file.map_or_else(
                || "data/digits.csv.gz".to_string(),
                |p| p.display().to_string(),
            );
            let all = parse_digits(&text).with_context(|| format!("in {where_}"))?;
            ((Kind::Classes, 0.0), all, 0.2)
        }
    };
    let (train, test) = if test_share > 0.0 {
        split(all, test_share, &mut rng)
    } else {
        (all.clone(), all)
    };
    let (inputs, outputs) = train.first().map_or((0, 0), |(x, t)| (x.len(), t.len()));
    Ok(Dataset {
        task,
        inputs,
        outputs,
        kind,
        tolerance,
        train,
        test,
    })
}

/// The committed digits file, decompressed.
pub fn digits_csv() -> Result<String> {
    static GZ: &[u8] = include_bytes!("../data/digits.csv.gz");
    let mut s = String::new();
    flate2::read::GzDecoder::new(GZ)
        .read_to_string(&mut s)
        .context("data/digits.csv.gz is corrupt")?;
    Ok(s)
}

/// Parse digits rows: 64 pixel values in 0..=16, then the label 0..=9. Errors name the line and column.
pub fn parse_digits(text: &str) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != 65 {
            bail!(
                "line {line_no}: expected 65 values (64 pixels and a label), found {}",
                cells.len()
            );
        }
        let mut x = Vec::with_capacity(64);
        for (c, cell) in cells.iter().take(64).enumerate() {
            let v: f64 = cell.parse().with_context(|| {
                format!("line {line_no}, column {}: '{cell}' is not a number", c + 1)
            })?;
            if !v.is_finite() {
                bail!(
                    "line {line_no}, column {}: {v} is not a finite number",
                    c + 1
                );
            }
            if !(0.0..=16.0).contains(&v) {
                bail!(
                    "line {line_no}, column {}: pixel {v} is outside 0..16",
                    c + 1
                );
            }
            x.push(v / 16.0);
        }
        let label: usize = cells[64]
            .parse::<f64>()
            .ok()
            .filter(|l| l.fract() == 0.0 && (0.0..=9.0).contains(l))
            .map(|l| l as usize)
            .with_context(|| {
                format!(
                    "line {line_no}, column 65: label '{}' is not a digit 0..9",
                    cells[64]
                )
            })?;
        let mut t = vec![0.0; 10];
        t[label] = 1.0;
        out.push((x, t));
    }
    if out.is_empty() {
        bail!("no samples");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_digits_are_complete() {
        let d = load(Task::Digits, 1, None).unwrap();
        assert_eq!(d.train.len() + d.test.len(), 1797);
        assert_eq!(d.test.len(), 359);
        let mut counts = [0usize; 10];
        for (x, t) in d.train.iter().chain(&d.test) {
            assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
            counts[t.iter().position(|&v| v == 1.0).unwrap()] += 1;
        }
        // scikit-learn's class counts.
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    }

    #[test]
    fn bad_rows_are_named() {
        let row = |last: &str| format!("{}{last}\n", "0,".repeat(64));
        assert!(parse_digits(&row("3")).is_ok());
        let e = parse_digits(&(row("3") + &row("NaN")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column 65"), "{e}");
        let nan = format!("NaN,{}3\n", "0,".repeat(63));
        let e = format!("{:#}", parse_digits(&nan).unwrap_err());
        assert!(
            e.contains("line 1, column 1") && e.contains("not a finite"),
            "{e}"
        );
        assert!(
            parse_digits("1,2\n")
                .unwrap_err()
                .to_string()
                .contains("expected 65")
        );
    }

    #[test]
    fn synthetic_tasks_are_seeded() {
        for t in [Task::Xor, Task::Spiral, Task::Sine, Task::Adding] {
            assert_eq!(load(t, 5, None).unwrap(), load(t, 5, None).unwrap());
        }
        let a = load(Task::Adding, 1, None).unwrap();
        assert_eq!(a.train[0].0.len(), 2 * ADDING_STEPS);
        assert!(
            a.train
                .iter()
                .all(|(x, _)| x.iter().skip(1).step_by(2).filter(|&&m| m > 0.5).count() == 2)
        );
    }
}
