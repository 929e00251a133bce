//! Activations against f64: every derivative against central differences, and the fixed-point error bounds
//! stated in `gradscope_core::activation`'s docs (in LSB).
//!
//! The f64 reference is the core's f64 path, the same one the lab's accuracy table uses; it is not its own
//! judge: `tests/golden.rs` holds it to PyTorch's float64 values within 10⁻¹² for every activation.

use gradscope_core::activation::Activate;
use gradscope_core::{
    Act, FastAct, Fixed, Flags, Floor, Fx16, I1F15, I8F24, I16F16, NearestEven, Rounding, bf16, f16,
};

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
    for act in &all_with_parameters() {
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
                "{act:?} at {x}: analytic {analytic}, numeric {numeric}"
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
                "{act:?} at {x}: {d} vs {want}"
            );
        }
    }
}

#[derive(Clone, Copy)]
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

/// Every activation with its default parameter, and with other α and β (whose fixed-point forms, and β's
/// reciprocal, are computed separately).
fn all_with_parameters() -> Vec<Act> {
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
    acts
}

fn check_format<S: Fixed>(xs: impl Iterator<Item = i64> + Clone, nearest: Bound, floor: Bound)
where
    Act: Activate<S>,
{
    for act in all_with_parameters() {
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

/// Where f(x) and f′(x) are exactly zero, from the definitions (PyTorch's conventions at the kinks): a zero
/// result there is exact, anywhere else an underflow.
fn exact_zeros(act: &Act, x: f64) -> (bool, bool) {
    match act {
        Act::Relu => (x <= 0.0, x <= 0.0),
        Act::LeakyRelu(a) | Act::Elu(a) if a.value() == 0.0 => (x <= 0.0, x <= 0.0),
        Act::HardSigmoid => (x <= -3.0, x <= -3.0 || x >= 3.0),
        Act::HardTanh => (x == 0.0, x.abs() >= 1.0),
        // 1/(1 + e^−x) and ln(1 + e^βx)/β are positive everywhere, and so are their derivatives.
        Act::Sigmoid | Act::Softplus(_) => (false, false),
        // Odd or sign-preserving functions with f(0) = 0, whose derivatives vanish at no representable point.
        _ => (x == 0.0, false),
    }
}

#[test]
fn exact_zeros_follow_the_definitions() {
    let mut acts = all_with_parameters();
    acts.extend([Act::leaky_relu(0.0), Act::elu(0.0)].map(Result::unwrap));
    let xs = [
        -700.0, -30.0, -3.5, -3.0, -2.999, -1.5, -1.0, -0.999, -0.5, -1e-30, 0.0, 1e-30, 0.5,
        0.999, 1.0, 1.5, 2.999, 3.0, 3.5, 30.0, 700.0,
    ];
    for act in &acts {
        for x in xs {
            assert_eq!(
                (act.is_exact_zero(x), act.is_exact_zero_derivative(x)),
                exact_zeros(act, x),
                "{act:?} at {x}"
            );
        }
    }
}

#[test]
fn a_zero_is_an_underflow_only_where_the_exact_value_is_not_zero() {
    use gradscope_core::{Flags, Scalar};
    let q = |v: f64| I16F16::from_f64(v, &mut NearestEven).0;
    let r = &mut NearestEven;
    // Exact zeros: no event, in fixed point and in f32.
    assert_eq!(Act::Relu.f(q(-2.0), r), (I16F16::ZERO, Flags::NONE));
    assert_eq!(Act::HardSigmoid.f(q(-3.0), r), (I16F16::ZERO, Flags::NONE));
    assert_eq!(
        Act::HardTanh.df(q(1.5), q(1.0), r),
        (I16F16::ZERO, Flags::NONE)
    );
    assert_eq!(Act::HardSigmoid.df(-4.0f32, 0.0, r), (0.0, Flags::NONE));
    assert_eq!(Act::Relu.backward(-1.0f32, 0.0, 5.0, r), (0.0, Flags::NONE));
    // Values below half an LSB of non-zero exact results: underflow.
    assert_eq!(
        Act::Sigmoid.f(q(-30.0), r),
        (I16F16::ZERO, Flags::UNDERFLOW | Flags::INEXACT)
    );
    assert_eq!(
        Act::softplus(1.0).unwrap().f(q(-30.0), r).1,
        Flags::UNDERFLOW | Flags::INEXACT
    );
    assert_eq!(Act::Sigmoid.f(-200.0f32, r), (0.0, Flags::UNDERFLOW));
    // A leaky ReLU with α = 0 is a ReLU: its zeros are exact.
    assert_eq!(
        Act::leaky_relu(0.0).unwrap().f(q(-2.0), r),
        (I16F16::ZERO, Flags::NONE)
    );
}

#[test]
fn parameters_and_names_read_back() {
    let p = |a: Act| match a {
        Act::LeakyRelu(p) | Act::Elu(p) | Act::Softplus(p) => p.value(),
        _ => f32::NAN,
    };
    assert_eq!(p(Act::leaky_relu(0.2).unwrap()), 0.2);
    assert_eq!(p(Act::elu(-1.5).unwrap()), -1.5);
    assert_eq!(p(Act::softplus(4.0).unwrap()), 4.0);
    assert_eq!(
        gradscope_core::ActError::UnknownName.to_string(),
        format!(
            "unknown activation; expected one of: {}",
            Act::NAMES.join(", ")
        )
    );
}

/// What a probe that is not active keeps of an activation's events ([`gradscope_core::Probe::note`]).
const KEPT: Flags = Flags::NONFINITE.union(Flags::OVERFLOW);

/// The watching paths (`f_watched`, `backward_watched`) give the full path's value bit for bit (any NaN for a
/// NaN: Rust leaves a NaN's sign and payload unspecified), and every
/// event a watching probe keeps: the full flags wherever those include a kept event, and no kept event
/// elsewhere. Inputs include NaN, ±∞, ±0, subnormals, values that overflow and gradients that do.
fn watched_paths_keep_what_a_watching_probe_sees<S, A>(act: &A, bits: impl Fn(S) -> u64)
where
    S: gradscope_core::Scalar,
    A: Activate<S> + std::fmt::Debug,
{
    let bits = |v: S| {
        if v.to_f64().is_nan() {
            u64::MAX
        } else {
            bits(v)
        }
    };
    let specials = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        1e-40,
        -1e-310,
        3e38,
        -3e38,
        1e300,
        -1e300,
        89.0,
        710.0,
        -710.0,
    ];
    let xs = (-40..=40).map(|k| k as f64 * 0.37).chain(specials);
    let dys = [1.0, -0.5, 1e-30, 3e38, 1e300, 0.0, f64::INFINITY, f64::NAN];
    let r = &mut NearestEven;
    for x in xs {
        let x = S::from_f64(x, r).0;
        let full = act.f(x, r);
        let watched = act.f_watched(x, r);
        assert_eq!(bits(full.0), bits(watched.0), "{act:?} f({x:?}) value");
        if full.1.intersects(KEPT) {
            assert_eq!(full.1, watched.1, "{act:?} f({x:?}) flags");
        } else {
            assert!(
                !watched.1.intersects(KEPT),
                "{act:?} f({x:?}) flags {:?}",
                watched.1
            );
        }
        for dy in dys {
            let dy = S::from_f64(dy, r).0;
            let full = act.backward(x, full.0, dy, r);
            let watched = act.backward_watched(x, act.f(x, r).0, dy, r);
            assert_eq!(
                bits(full.0),
                bits(watched.0),
                "{act:?} backward({x:?}, {dy:?}) value"
            );
            if full.1.intersects(KEPT) {
                assert_eq!(full.1, watched.1, "{act:?} backward({x:?}, {dy:?}) flags");
            } else {
                assert!(
                    !watched.1.intersects(KEPT),
                    "{act:?} backward({x:?}, {dy:?})"
                );
            }
        }
    }
}

#[test]
fn watched_paths_equal_the_full_paths_where_a_watching_probe_looks() {
    for act in &all_with_parameters() {
        watched_paths_keep_what_a_watching_probe_sees::<f32, _>(act, |v| v.to_bits() as u64);
        watched_paths_keep_what_a_watching_probe_sees::<f64, _>(act, f64::to_bits);
        watched_paths_keep_what_a_watching_probe_sees::<f32, _>(&FastAct(*act), |v| {
            v.to_bits() as u64
        });
        watched_paths_keep_what_a_watching_probe_sees::<f16, _>(act, |v| v.to_bits() as u64);
        watched_paths_keep_what_a_watching_probe_sees::<bf16, _>(act, |v| v.to_bits() as u64);
        watched_paths_keep_what_a_watching_probe_sees::<I16F16, _>(act, |v| v.raw() as u64);
        watched_paths_keep_what_a_watching_probe_sees::<I8F24, _>(act, |v| v.raw() as u64);
        watched_paths_keep_what_a_watching_probe_sees::<I1F15, _>(act, |v| v.raw() as u64);
    }
}

/// PyTorch's `Softplus(beta, threshold=20)` "reverts to the linear function when input × β > threshold": x
/// strictly above it, and log(1 + exp(βx))/β at it, which exceeds x by ln(1 + e⁻²⁰)/β ≈ 2·10⁻⁹/β. Its
/// backward likewise passes the gradient through above it and multiplies by σ(βx) = 1 − 2·10⁻⁹ at it.
#[test]
fn softplus_is_linear_strictly_above_the_threshold() {
    for beta in [1.0f32, 2.0, 0.5] {
        let act = Act::softplus(beta).unwrap();
        let b = beta as f64;
        let at = 20.0 / b;
        let (y, _) = Activate::<f64>::f(&act, at, &mut NearestEven);
        let want = (20.0 + (-20.0f64).exp().ln_1p()) / b;
        assert!(
            y > at && (y - want).abs() <= 1e-12 * want,
            "β = {beta}: softplus({at}) = {y}, want {want}"
        );
        let (d, _) = Activate::<f64>::df(&act, at, y, &mut NearestEven);
        let sigma = 1.0 / (1.0 + (-20.0f64).exp());
        assert!(
            d < 1.0 && (d - sigma).abs() <= 1e-15,
            "β = {beta}: softplus′({at}) = {d}, want σ(20) = {sigma}"
        );
        for x in [at * (1.0 + 1e-12), 21.0 / b, 30.0 / b] {
            let (y, _) = Activate::<f64>::f(&act, x, &mut NearestEven);
            assert_eq!(y, x, "β = {beta}: softplus({x}) must be x");
            let (d, _) = Activate::<f64>::df(&act, x, y, &mut NearestEven);
            assert_eq!(d, 1.0, "β = {beta}: softplus′({x}) must be 1");
        }
    }
}

/// The same rule in fixed point (I8F24, LSB 2⁻²⁴): at β·x = 20 the value is x plus log1p(e⁻²⁰)/β ≈ 2·10⁻⁹/β,
/// below half an LSB, so it rounds to x but is inexact, and the derivative σ(20) rounds to 1, inexact too;
/// strictly above, both are exact: x and 1, with no event at all.
#[test]
fn fixed_point_softplus_is_exactly_linear_strictly_above_the_threshold() {
    use gradscope_core::Scalar;
    let q = |v: f64| I8F24::from_f64(v, &mut NearestEven).0;
    let r = &mut NearestEven;
    for beta in [1.0f32, 2.0, 0.5] {
        let act = Act::softplus(beta).unwrap();
        let at = 20.0 / beta as f64;
        let (y, f) = act.f(q(at), r);
        assert_eq!(
            (y, f),
            (q(at), Flags::INEXACT),
            "β = {beta}: softplus({at})"
        );
        let (d, f) = act.df(q(at), y, r);
        assert_eq!(
            (d, f),
            (q(1.0), Flags::INEXACT),
            "β = {beta}: softplus′({at})"
        );
        let above = I8F24::from_bits(q(at).to_bits() + 1);
        for x in [above, q(21.0 / beta as f64), q(30.0 / beta as f64)] {
            assert_eq!(act.f(x, r), (x, Flags::NONE), "β = {beta}: softplus({x:?})");
            assert_eq!(
                act.df(x, x, r),
                (q(1.0), Flags::NONE),
                "β = {beta}: softplus′({x:?})"
            );
        }
    }
}

/// At x = 0 PyTorch's backward for ReLU, Leaky-ReLU, ELU and SELU takes the negative side (its kernels test
/// `x > 0`): 0, the slope a, α·e⁰ = α and λα (λ and α as published by Klambauer et al. and used by
/// `torch.nn.SELU`).
#[test]
fn kinked_activations_take_the_negative_side_derivative_at_zero() {
    let (lambda, alpha) = (1.050_700_987_355_480_5, 1.673_263_242_354_377_3);
    let cases = [
        (Act::Relu, 0.0),
        (Act::leaky_relu(0.25).unwrap(), 0.25),
        (Act::leaky_relu(-0.5).unwrap(), -0.5),
        (Act::elu(0.5).unwrap(), 0.5),
        (Act::elu(2.0).unwrap(), 2.0),
        (Act::Selu, lambda * alpha),
    ];
    for (act, want) in cases {
        let (y, _) = Activate::<f64>::f(&act, 0.0, &mut NearestEven);
        let (d, _) = Activate::<f64>::df(&act, 0.0, y, &mut NearestEven);
        assert!(
            (d - want).abs() <= 1e-15 * f64::max(1.0, want.abs()),
            "{act:?}: f′(0) = {d}, want {want}"
        );
    }
}

/// PyTorch's hardsigmoid and hardtanh backward pass nothing at their corners (x = ±3 and x = ±1: its kernels
/// test `x > −3 && x < 3` and `x <= −1 || x >= 1`), and 1/6 and 1 just inside them.
#[test]
fn hard_activations_pass_no_gradient_at_their_corners() {
    let cases = [
        (Act::HardSigmoid, 3.0, 1.0 / 6.0),
        (Act::HardTanh, 1.0, 1.0),
    ];
    for (act, corner, inside) in cases {
        for side in [-1.0, 1.0] {
            let x = side * corner;
            let (y, _) = Activate::<f64>::f(&act, x, &mut NearestEven);
            let (d, _) = Activate::<f64>::df(&act, x, y, &mut NearestEven);
            assert_eq!(d, 0.0, "{act:?}: f′({x})");
            let x = side * corner * (1.0 - 1e-12);
            let (y, _) = Activate::<f64>::f(&act, x, &mut NearestEven);
            let (d, _) = Activate::<f64>::df(&act, x, y, &mut NearestEven);
            assert_eq!(d, inside, "{act:?}: f′({x})");
        }
    }
}

/// Coarse formats read the tables without interpolating: at 6 fraction bits each input is a knot (the tables'
/// step is 1/64), and below that the input is rescaled onto the knots. Every input, within the same LSB bounds.
#[test]
fn coarse_formats_read_the_knots_within_stated_lsb_bounds() {
    let xs = i16::MIN as i64..=i16::MAX as i64;
    let (nearest, floor) = (Bound { f: 1.0, df: 2.0 }, Bound { f: 2.0, df: 3.0 });
    check_format::<Fx16<6>>(xs.clone(), nearest, floor);
    check_format::<Fx16<4>>(xs.clone(), nearest, floor);
    check_format::<Fx16<0>>(xs, nearest, floor);
}
