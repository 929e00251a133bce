//! The number formats side by side: their ranges, and what happens to products of small values in each.
//!
//! [`underflow_sweep`] multiplies random pairs of magnitude about `2^−k` in each format and rounding mode and
//! measures how many products vanish (the core's `UNDERFLOW` flag) and how biased the rounding is. It shows the
//! mechanism behind fixed-point gradient underflow before any network is involved: floor rounding both loses
//! small products and biases every sum downward; nearest-even loses them symmetrically; stochastic rounding
//! keeps them on average.

use gradscope_core::{Flags, Scalar};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;

use crate::options::{Precision, Rounding};
use crate::output::{Frame, Outcome};
use crate::plot::Plot;
use crate::with_scalar;

/// Range and resolution of one format, read off the type.
#[derive(Clone, Debug, PartialEq)]
pub struct FormatInfo {
    /// The format.
    pub precision: Precision,
    /// Smallest positive step (LSB, or smallest normal for floats).
    pub resolution: f64,
    /// Most negative value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

fn info<S: Scalar>(precision: Precision) -> FormatInfo {
    FormatInfo {
        precision,
        resolution: S::RESOLUTION,
        min: S::MIN.to_f64(),
        max: S::MAX.to_f64(),
    }
}

/// Every format of the core, in order of decreasing range.
pub fn format_infos() -> Vec<FormatInfo> {
    Precision::ALL
        .iter()
        .map(|&p| with_scalar!(p, S => info::<S>(p)))
        .collect()
}

/// The rounding modes, in table order.
pub const ROUNDINGS: [Rounding; 3] = [Rounding::Floor, Rounding::Nearest, Rounding::Stochastic];

/// The formats of the product sweep: f32 (the baseline), the 16-bit floats and the fixed-point formats.
pub const SWEPT: [Precision; 6] = [
    Precision::F32,
    Precision::Bf16,
    Precision::I16F16,
    Precision::I8F24,
    Precision::F16,
    Precision::I1F15,
];

/// One measured cell of the sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct UnderflowCell {
    /// The format.
    pub format: Precision,
    /// Operands have magnitude in `[2^−k−1, 2^−k)`.
    pub k: u32,
    /// The rounding mode.
    pub rounding: Rounding,
    /// Products of non-zero operands measured.
    pub samples: u32,
    /// Fraction of those products that became zero.
    pub underflow_rate: f64,
    /// `Σ(result − exact) / Σ|exact|`: the rounding's systematic error relative to the products' size.
    pub relative_bias: f64,
    /// Two standard errors of `relative_bias` (sampling noise, chiefly of stochastic rounding).
    pub bias_2se: f64,
}

fn cell<S: Scalar>(
    format: Precision,
    k: u32,
    mode: Rounding,
    samples: u32,
    seed: u64,
) -> UnderflowCell {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed ^ (k as u64) << 32);
    let mut r = mode.build(seed.wrapping_add(k as u64));
    let scale = libm_pow2(-(k as i32));
    let draw = |rng: &mut Xoshiro128PlusPlus| {
        let u = 0.5 + 0.5 * (rng.next_u32() as f64 / (u32::MAX as f64 + 1.0));
        let sign = if rng.next_u32() & 1 == 0 { 1.0 } else { -1.0 };
        S::from_f64(sign * u * scale, &mut gradscope_core::NearestEven).0
    };
    let (mut n, mut under, mut err, mut err_sq, mut mag) = (0u32, 0u32, 0.0f64, 0.0f64, 0.0f64);
    while n < samples {
        let (a, b) = (draw(&mut rng), draw(&mut rng));
        if a.is_zero() || b.is_zero() {
            continue; // the operands themselves underflowed; only products are measured here
        }
        let exact = a.to_f64() * b.to_f64();
        let (p, f) = a.mul(b, &mut r);
        n += 1;
        under += f.contains(Flags::UNDERFLOW) as u32;
        let e = p.to_f64() - exact;
        err += e;
        err_sq += e * e;
        mag += exact.abs();
    }
    UnderflowCell {
        format,
        k,
        rounding: mode,
        samples: n,
        underflow_rate: under as f64 / n as f64,
        relative_bias: if mag > 0.0 { err / mag } else { 0.0 },
        bias_2se: if mag > 0.0 {
            let nf = n as f64;
            2.0 * ((err_sq / nf - (err / nf).powi(2)).max(0.0) * nf).sqrt() / mag
        } else {
            0.0
        },
    }
}

fn libm_pow2(e: i32) -> f64 {
    2f64.powi(e)
}

/// Measure product underflow and rounding bias for `k` in `ks`, in every format of [`SWEPT`],
/// for every rounding mode. Cells come grouped by magnitude, then format, then mode (in [`ROUNDINGS`] order).
/// A format is measured only at magnitudes it can hold (operands above its LSB), as the operands themselves
/// would otherwise be zero.
pub fn underflow_sweep(ks: &[u32], samples: u32, seed: u64) -> Vec<UnderflowCell> {
    let mut out = Vec::new();
    for &k in ks {
        for p in SWEPT {
            with_scalar!(p, S => {
                if libm_pow2(-(k as i32) - 1) >= S::RESOLUTION {
                    out.extend(
                        ROUNDINGS
                            .iter()
                            .map(|&mode| cell::<S>(p, k, mode, samples, seed)),
                    );
                }
            })
        }
    }
    out
}

/// The cell for `format`, `k` and `rounding` in a sweep's results.
pub fn find(
    cells: &[UnderflowCell],
    format: Precision,
    k: u32,
    rounding: Rounding,
) -> Option<&UnderflowCell> {
    cells
        .iter()
        .find(|c| c.format == format && c.k == k && c.rounding == rounding)
}

/// The `formats` subcommand's outcome: the formats' ranges, and product underflow per rounding mode.
pub fn outcome(samples: u32, seed: u64) -> Outcome {
    outcome_of(&underflow_sweep(&KS, samples, seed), samples)
}

/// Operand magnitudes of the sweep: 2^−k for these k.
pub const KS: [u32; 4] = [4, 8, 10, 12];

/// The outcome of a sweep's `cells` (measured with `samples` products each).
pub fn outcome_of(cells: &[UnderflowCell], samples: u32) -> Outcome {
    let mut ranges = Frame::new(
        "formats",
        "Number formats (resolution = one LSB, or the smallest normal for floats)",
        &["format", "resolution", "min", "max"],
    );
    for i in format_infos() {
        ranges.push(vec![
            i.precision.name().into(),
            i.resolution.into(),
            i.min.into(),
            i.max.into(),
        ]);
    }
    let mut products = Frame::new(
        "products",
        format!(
            "Products of two random values of magnitude ~2^-k ({samples} per cell): the share that vanish (UNDERFLOW)\n\
             and the rounding's systematic error sum(result - exact) / sum|exact| with two standard errors.\n\
             Float arithmetic (f32, bf16, f16) always rounds to nearest-even, so their three rows agree."
        ),
        &[
            "format",
            "k",
            "rounding",
            "vanished",
            "relative_bias",
            "bias_2se",
        ],
    );
    let mut plot = Plot::new(
        "products",
        "Share of products that vanish, by operand magnitude",
        "k (operands ~2^-k)",
        "share vanished",
        false,
    );
    let mut by_line: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in cells {
        products.push(vec![
            c.format.name().into(),
            c.k.into(),
            c.rounding.name().into(),
            c.underflow_rate.into(),
            c.relative_bias.into(),
            c.bias_2se.into(),
        ]);
        let key = format!("{} {}", c.format, c.rounding);
        match by_line.iter_mut().find(|(k, _)| *k == key) {
            Some((_, pts)) => pts.push((c.k as f64, c.underflow_rate)),
            None => by_line.push((key, vec![(c.k as f64, c.underflow_rate)])),
        }
    }
    for (k, pts) in by_line {
        plot.line(k, pts);
    }
    let json = serde_json::json!({
        "formats": ranges.json(),
        "products": products.json(),
    });
    Outcome {
        name: "formats".into(),
        heading: String::new(),
        frames: vec![products, ranges],
        plots: vec![plot],
        notes: Vec::new(),
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_ranges_come_from_the_types() {
        let infos = format_infos();
        let q15 = infos
            .iter()
            .find(|i| i.precision == Precision::I1F15)
            .map(|i| (i.min, i.max));
        assert_eq!(q15, Some((-1.0, 1.0 - 1.0 / 32768.0)));
    }

    #[test]
    fn floor_is_biased_and_loses_small_products_while_stochastic_is_not() {
        // Products of magnitude ~2^-20 are below the I16F16 LSB (2^-16).
        let cells = underflow_sweep(&[10], 4000, 1);
        let get = |fmt, mode| find(&cells, fmt, 10, mode).cloned().unwrap();
        let floor = get(Precision::I16F16, Rounding::Floor);
        let nearest = get(Precision::I16F16, Rounding::Nearest);
        let stoch = get(Precision::I16F16, Rounding::Stochastic);
        // Floor: positive products vanish (about half), negative ones become -1 LSB: huge negative bias.
        assert!((floor.underflow_rate - 0.5).abs() < 0.05, "{floor:?}");
        assert!(floor.relative_bias < -1.0, "{floor:?}");
        assert!(nearest.underflow_rate > 0.99, "{nearest:?}");
        // Stochastic rounding keeps the expectation: its bias is within three standard errors of zero (the
        // seed is fixed, so this is deterministic), while floor's is many standard errors away.
        assert!(stoch.bias_2se > 0.0, "{stoch:?}");
        assert!(
            stoch.relative_bias.abs() <= 1.5 * stoch.bias_2se,
            "{stoch:?}"
        );
        assert!(
            floor.relative_bias.abs() > 20.0 * floor.bias_2se,
            "{floor:?}"
        );
        assert!(get(Precision::F32, Rounding::Floor).underflow_rate == 0.0);
    }
}
