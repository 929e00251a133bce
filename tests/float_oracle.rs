//! `f32` operations and kernels against `f64`, 100 000 proptest cases each.
//!
//! For `+`, `−`, `×` the exact result of two `f32` operands rounded once to `f64` and then to `f32` equals the
//! correctly rounded `f32` result (53 ≥ 2·24 + 2), so `f64` is an exact oracle for values and flags.

use gradscope_core::{Flags, Floor, NearestEven, Scalar, Stochastic, matrix};
use proptest::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 100_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Values that reach every regime: any bit pattern, ordinary magnitudes, subnormals and tiny normals, huge.
fn f32s() -> impl Strategy<Value = f32> {
    prop_oneof![
        2 => any::<f32>(),
        3 => -1e3f32..1e3,
        2 => (-1.0f32..1.0).prop_map(|u| u * 1e-19),
        1 => (-1.0f32..1.0).prop_map(|u| u * 1e-37),
        1 => (-1.0f32..1.0).prop_map(|u| u * 3e38),
        1 => prop_oneof![Just(0.0f32), Just(-0.0), Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(f32::NAN), Just(f32::MAX), Just(f32::MIN_POSITIVE)],
    ]
}

/// Expected flags of an IEEE op whose correctly rounded result is `v`, from operands `a`, `b` with exact
/// value `exact` (as f64, NaN for invalid).
fn op_flags(v: f32, a: f32, b: f32, exact_nonzero: bool) -> Flags {
    let mut f = Flags::NONE;
    if !v.is_finite() {
        f |= Flags::NONFINITE;
        if a.is_finite() && b.is_finite() {
            f |= Flags::OVERFLOW;
        }
    }
    if v.is_subnormal() {
        f |= Flags::SUBNORMAL;
    }
    if v == 0.0 && exact_nonzero && a.is_finite() && b.is_finite() {
        f |= Flags::UNDERFLOW;
    }
    f
}

fn same(x: f32, y: f32) -> bool {
    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn add_sub_mul_match_f64(a in f32s(), b in f32s()) {
        let (a64, b64) = (a as f64, b as f64);
        let (s, f) = a.add(b);
        let want = (a64 + b64) as f32;
        prop_assert!(same(s, want), "{} + {} = {} want {}", a, b, s, want);
        prop_assert_eq!(f, op_flags(want, a, b, false));
        let (d, f) = a.sub(b);
        let want = (a64 - b64) as f32;
        prop_assert!(same(d, want));
        prop_assert_eq!(f, op_flags(want, a, b, false));
        let (p, f) = a.mul(b, &mut NearestEven);
        let want = (a64 * b64) as f32;
        prop_assert!(same(p, want));
        prop_assert_eq!(f, op_flags(want, a, b, a != 0.0 && b != 0.0));
    }

    #[test]
    fn from_f64_rounds_as_asked(x in prop_oneof![any::<f64>(), -1e3f64..1e3, (-1.0f64..1.0).prop_map(|u| u * 1e-40)], seed in any::<u64>()) {
        let (n, _) = f32::from_f64(x, &mut NearestEven);
        let (fl, _) = f32::from_f64(x, &mut Floor);
        let (st, _) = f32::from_f64(x, &mut Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed)));
        if x.is_nan() {
            prop_assert!(n.is_nan() && fl.is_nan() && st.is_nan());
        } else if x.abs() > f32::MAX as f64 && x.is_finite() {
            let sat = if x > 0.0 { f32::MAX } else { f32::MIN };
            prop_assert!(n == sat && fl == sat && st == sat);
        } else if x.is_finite() {
            prop_assert!(same(n, x as f32));
            prop_assert!(fl as f64 <= x && x < fl.next_up() as f64);
            prop_assert!(same(st, fl) || same(st, fl.next_up()));
            prop_assert!(st as f64 == x || (st as f64 - x).abs() < (fl.next_up() as f64 - fl as f64));
        }
    }

    #[test]
    fn dot_within_the_standard_error_bound(a in prop::array::uniform8(f32s()), b in prop::array::uniform8(f32s())) {
        let mut fl = Flags::NONE;
        let d = matrix::dot(&a, &b, &mut NearestEven, &mut fl);
        let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let abs_sum: f64 = a.iter().zip(&b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
        let any_product_underflows = a.iter().zip(&b).any(|(&x, &y)| x != 0.0 && y != 0.0 && x.is_finite() && y.is_finite() && x * y == 0.0);
        prop_assert_eq!(fl.contains(Flags::UNDERFLOW), any_product_underflows);
        prop_assert_eq!(fl.contains(Flags::NONFINITE), !d.is_finite());
        if d.is_finite() && exact.is_finite() {
            // Higham: |fl(dot) − dot| <= γ_n Σ|aᵢbᵢ| with γ_n = n·u/(1 − n·u); plus underflow slack.
            let u = f32::EPSILON as f64 / 2.0;
            let gamma = 8.0 * u / (1.0 - 8.0 * u);
            prop_assert!((d as f64 - exact).abs() <= gamma * abs_sum + 8.0 * 1.5e-45, "{} vs {}", d, exact);
        }
    }

    #[test]
    fn long_dots_are_within_the_bound_and_equal_observed_or_not(
        a in prop::array::uniform32(-1e3f32..1e3), b in prop::array::uniform32(-1e3f32..1e3), extra in prop::array::uniform5(-1e3f32..1e3)
    ) {
        // 37 values, with and without a recording probe: the same bits, within Higham's bound.
        let a: [f32; 37] = core::array::from_fn(|k| if k < 32 { a[k] } else { extra[k - 32] });
        let b: [f32; 37] = core::array::from_fn(|k| if k < 32 { b[k] } else { extra[36 - k] });
        let mut fl = Flags::NONE;
        let on = matrix::dot(&a, &b, &mut NearestEven, &mut fl);
        let off = matrix::dot(&a, &b, &mut NearestEven, &mut ());
        prop_assert_eq!(on.to_bits(), off.to_bits());
        let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let abs_sum: f64 = a.iter().zip(&b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
        let u = f32::EPSILON as f64 / 2.0;
        let gamma = 37.0 * u / (1.0 - 37.0 * u);
        prop_assert!((on as f64 - exact).abs() <= gamma * abs_sum, "{} vs {}", on, exact);
    }

    #[test]
    fn l2_norm_never_overflows_on_the_way(x in prop::collection::vec(f32s().prop_filter("finite", |v| v.is_finite()), 0..16)) {
        let mut fl = Flags::NONE;
        let n = matrix::l2_norm(&x, &mut fl);
        let exact = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
        if exact > f32::MAX as f64 * (1.0 + 1e-6) {
            prop_assert!(fl.contains(Flags::OVERFLOW));
        } else if exact < f32::MAX as f64 * (1.0 - 1e-6) {
            // scaled accumulation: a few ulps per term, whatever the magnitudes
            let tol = exact * 1e-6 + 1e-44;
            prop_assert!((n as f64 - exact).abs() <= tol, "norm {} vs {}", n, exact);
            prop_assert!(!fl.contains(Flags::OVERFLOW));
        }
    }
}
