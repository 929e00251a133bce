//! Activations against f64: every derivative against central differences, and the fixed-point error bounds
//! stated in `gradscope_core::activation`'s docs (in LSB).
//!
//! The f64 reference is the core's f64 path, the same one the lab's accuracy table uses; it is not its own
//! judge: `tests/golden.rs` holds it to PyTorch's float64 values within 10⁻¹² for every activation.

use gradscope_core::activation::Activate;
use gradscope_core::{Act, Fixed, Floor, I1F15, I8F24, I16F16, NearestEven, Rounding};

/// f(x) and f′(x) from the core's f64 path.
fn reference(act: &Act, x: f64) -> (f64, f64) {
    let (y, _) = Activate::<f64>::f(act, x, &mut NearestEven);
    let (d, _) = Activate::<f64>::df(act, x, y, &mut NearestEven);
    (y, d)
}

/// Points where a derivative has a kink (or softplus switches regime) and central differences are invalid.
fn near_kink(act: &Act, x: f64, h: f64) -> bool {
    let kinks: &[f64] = match act {
        Act::Relu | Act::LeakyRelu(_) | Act::Elu(_) | Act::Selu => &[0.0],
        Act::HardSigmoid => &[-3.0, 3.0],
        Act::HardTanh => &[-1.0, 1.0],
        Act::Softplus(b) => &[20.0 / b.value() as f64],
        _ => &[],
    };
    kinks.iter().any(|k| (x - k).abs() < 4.0 * h)
}

#[test]
fn every_derivative_matches_f64_central_differences() {
    let xs = (-4000..=4000)
        .map(|k| k as f64 * 0.0073)
        .chain([-700.0, -100.0, -30.0, 30.0, 100.0, 700.0]);
    let mut acts = Act::all().to_vec();
    acts.extend(
        [
            Act::leaky_relu(0.2),
            Act::elu(0.5),
            Act::softplus(2.0),
            Act::softplus(0.25),
        ]
        .map(Result::unwrap),
    );
    for act in &acts {
        for x in xs.clone() {
            let h = 1e-6 * x.abs().max(1.0);
            if near_kink(act, x, h) {
                continue;
            }
            let f = |x: f64| reference(act, x).0;
            let numeric = (f(x + h) - f(x - h)) / (2.0 * h);
            let analytic = reference(act, x).1;
            let tol = 1e-6 + 1e-4 * analytic.abs();
            assert!(
                (numeric - analytic).abs() <= tol,
                "{act} at {x}: analytic {analytic}, numeric {numeric}"
            );
        }
    }
}

#[test]
fn float_derivatives_from_the_output_agree_with_the_input_form() {
    // f32 computes sigmoid′, tanh′, elu′, softsign′ from y: check against f64 at the same input.
    for act in Act::all() {
        for k in -2000..=2000 {
            let x = k as f32 * 0.01;
            let (y, _) = act.f(x, &mut NearestEven);
            let (d, _) = act.df(x, y, &mut NearestEven);
            let want = reference(&act, x as f64).1;
            assert!(
                (d as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{act} at {x}: {d} vs {want}"
            );
        }
    }
}

struct Bound {
    f: f64,
    df: f64,
}

/// Max error in LSB of f, f′ and backward (dy = 1 LSB·k) over `xs`, with rounding `r`.
fn lsb_errors<S, R>(act: &Act, xs: impl Iterator<Item = i64>, mut r: R) -> (f64, f64)
where
    S: Fixed,
    Act: Activate<S>,
    R: Rounding,
{
    let lsb = S::RESOLUTION;
    let (lo, hi) = (S::MIN.to_f64(), S::MAX.to_f64());
    let (mut ef, mut ed) = (0.0f64, 0.0f64);
    for raw in xs {
        let (x, _) = S::from_wide(raw, S::FRAC, &mut NearestEven);
        let (y, _) = act.f(x, &mut r);
        let (d, _) = act.df(x, y, &mut r);
        let (ry, rd) = reference(act, x.to_f64());
        if (lo..=hi).contains(&ry) {
            ef = ef.max((y.to_f64() - ry).abs() / lsb);
        }
        if (lo..=hi).contains(&rd) {
            ed = ed.max((d.to_f64() - rd).abs() / lsb);
        }
    }
    (ef, ed)
}

fn check_format<S: Fixed>(xs: impl Iterator<Item = i64> + Clone, nearest: Bound, floor: Bound)
where
    Act: Activate<S>,
{
    for act in Act::all() {
        let (ef, ed) = lsb_errors::<S, _>(&act, xs.clone(), NearestEven);
        assert!(
            ef <= nearest.f && ed <= nearest.df,
            "{} {act} nearest: f {ef} LSB, f′ {ed} LSB",
            S::NAME
        );
        let (ef, ed) = lsb_errors::<S, _>(&act, xs.clone(), Floor);
        assert!(
            ef <= floor.f && ed <= floor.df,
            "{} {act} floor: f {ef} LSB, f′ {ed} LSB",
            S::NAME
        );
    }
}

/// Every raw value in [−25, 25] (the tables cover [0, 24]) at `dense` stride, plus the whole range at `sparse`.
fn inputs(
    frac: u32,
    min: i64,
    max: i64,
    dense: usize,
    sparse: usize,
) -> impl Iterator<Item = i64> + Clone {
    let r = 25i64 << frac;
    (-r.min(-min)..=r.min(max))
        .step_by(dense)
        .chain((min..=max).step_by(sparse))
}

#[test]
fn i1f15_within_stated_lsb_bounds_for_every_input() {
    let xs = i16::MIN as i64..=i16::MAX as i64;
    check_format::<I1F15>(xs, Bound { f: 1.0, df: 2.0 }, Bound { f: 2.0, df: 3.0 });
}

#[test]
fn i16f16_within_stated_lsb_bounds() {
    let dense = if cfg!(debug_assertions) { 13 } else { 1 };
    let xs = inputs(16, i32::MIN as i64, i32::MAX as i64, dense, 65_537);
    check_format::<I16F16>(xs, Bound { f: 1.0, df: 2.0 }, Bound { f: 2.0, df: 3.0 });
}

#[test]
fn i8f24_within_stated_lsb_bounds() {
    let dense = if cfg!(debug_assertions) { 4099 } else { 257 };
    let xs = inputs(24, i32::MIN as i64, i32::MAX as i64, dense, 65_537);
    check_format::<I8F24>(xs, Bound { f: 10.0, df: 10.0 }, Bound { f: 11.0, df: 11.0 });
}

#[test]
fn nielsens_bound_on_the_sigmoid_gradient() {
    // Nielsen, "Neural Networks and Deep Learning", ch. 5: |w·σ′(wa + b)| >= 1 only on an interval of a whose
    // width peaks at about 0.45 near |w| ≈ 6.9. σ′ is even and decreasing on z > 0, so the set is |z| <= z*
    // with w·σ′(z*) = 1 (z = wa + b), of width 2z*/w in a. σ′ here is the crate's f64 derivative.
    let dsig = |z: f64| reference(&Act::Sigmoid, z).1;
    let (mut best_w, mut best) = (0.0, 0.0);
    for k in 401..=1200 {
        let w = k as f64 / 100.0;
        let (mut lo, mut hi) = (0.0f64, 30.0f64);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if w * dsig(mid) >= 1.0 {
                lo = mid
            } else {
                hi = mid
            }
        }
        let width = 2.0 * lo / w;
        let closed_form = 2.0 / w * (w * (1.0 + (1.0 - 4.0 / w).sqrt()) / 2.0 - 1.0).ln();
        assert!(
            (width - closed_form).abs() < 1e-9,
            "w = {w}: {width} vs {closed_form}"
        );
        if width > best {
            (best_w, best) = (w, width);
        }
    }
    assert!((best - 0.448).abs() < 0.002, "peak width {best}");
    assert!((best_w - 6.9).abs() < 0.2, "peak at |w| = {best_w}");
}
