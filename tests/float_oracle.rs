//! `f32` operations and kernels against `f64`, 100 000 proptest cases each.
//!
//! For `+`, `−`, `×` the exact result of two `f32` operands rounded once to `f64` and then to `f32` equals the
//! correctly rounded `f32` result (53 ≥ 2·24 + 2), so `f64` is an exact oracle for values and flags.

use gradscope_core::{Coef, Flags, Floor, NearestEven, Rounding, Scalar, Stochastic, matrix};
use proptest::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

/// Nearest-even by comparing neighbours ([`Rounding::round_up`]): [`NearestEven`] without its claim to be the
/// hardware's conversion, so a conversion takes the general path.
struct Neighbours;

impl Rounding for Neighbours {
    fn shr(&mut self, x: i64, s: u32) -> i64 {
        NearestEven.shr(x, s)
    }
    fn round_up(&mut self, below: f64, gap: f64, lo_is_even: bool) -> bool {
        NearestEven.round_up(below, gap, lo_is_even)
    }
    fn round_frac(&mut self, q: i64, rem: u64, den: u64) -> i64 {
        NearestEven.round_frac(q, rem, den)
    }
    fn name(&self) -> &'static str {
        "nearest, by neighbours"
    }
}

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: gradscope_suite::oracle_cases(100_000),
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
    fn from_f64_rounds_as_asked(x in prop_oneof![
        any::<f64>(),
        -1e3f64..1e3,
        (-1.0f64..1.0).prop_map(|u| u * 1e-40),
        Just(0.0f64),
        Just(-0.0f64),
        // Exact midpoints between neighbouring f32 values: the ties nearest-even must break to even.
        f32s().prop_filter("finite, below the largest", |a| a.is_finite() && *a < f32::MAX)
            .prop_map(|a| (a as f64 + a.next_up() as f64) / 2.0),
    ], seed in any::<u64>()) {
        let (n, _) = f32::from_f64(x, &mut NearestEven);
        let (fl, _) = f32::from_f64(x, &mut Floor);
        let (st, _) = f32::from_f64(x, &mut Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed)));
        // Nearest-even converts in hardware (`Rounding::nearest_even`); the mode that compares the neighbours
        // instead must agree with it in value and events.
        let (by_neighbours, nf) = (f32::from_f64(x, &mut Neighbours), f32::from_f64(x, &mut NearestEven).1);
        prop_assert!(same(by_neighbours.0, n) && by_neighbours.1 == nf, "{}: {:?} against {} {:?}", x, by_neighbours, n, nf);
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
    fn scale_by_multiplies_by_the_coefficient_rounded_once(
        a in f32s(),
        c in prop_oneof![-4.0f64..4.0, -1e-30f64..1e-30, -1e40f64..1e40, Just(f64::NAN), Just(f64::INFINITY)],
    ) {
        let coef = Coef::new(c);
        // f32: c rounded to f32 as `from_f64` does (saturating, tested above), then one IEEE product.
        let c32 = if c.is_nan() { f32::NAN } else if c.is_infinite() { f32::INFINITY } else { (c as f32).clamp(f32::MIN, f32::MAX) };
        let want = (a as f64 * c32 as f64) as f32;
        let (v, f) = a.scale_by(&coef, &mut NearestEven);
        prop_assert!(same(v, want), "{} · {} = {} want {}", a, c, v, want);
        prop_assert_eq!(f, op_flags(want, a, c32, a != 0.0 && c32 != 0.0));
        // f64: the exact IEEE product with c itself.
        let a64 = a as f64;
        let want = a64 * c;
        let (v, f) = a64.scale_by(&coef, &mut NearestEven);
        prop_assert!(v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()), "{} · {} = {} want {}", a64, c, v, want);
        prop_assert_eq!(f.contains(Flags::NONFINITE), !want.is_finite());
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

/// The documented summation orders (`matrix.rs`), written out plainly: the dot order (lane `k mod 4`, then
/// `(l₀ + l₂) + (l₁ + l₃)`), and the sequential order of the transposed and matrix products.
fn dot_in_order(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0.0f32; 4];
    for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
        l[k % 4] += x * y;
    }
    (l[0] + l[2]) + (l[1] + l[3])
}

fn sequential(terms: impl Iterator<Item = (f32, f32)>) -> f32 {
    terms.fold(0.0f32, |s, (x, y)| s + x * y)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..cfg() })]

    #[test]
    fn kernels_follow_the_documented_order_observed_or_not(
        v in prop::collection::vec(f32s(), 11 * 13 + 13 + 11 + 11),
    ) {
        let at = |k: usize| v.get(k).copied().unwrap_or(0.0);
        let w: [[f32; 13]; 11] = core::array::from_fn(|o| core::array::from_fn(|i| at(o * 13 + i)));
        let x: [f32; 13] = core::array::from_fn(|i| at(143 + i));
        let d: [f32; 11] = core::array::from_fn(|o| at(156 + o));
        let b: [f32; 11] = core::array::from_fn(|o| at(167 + o));
        // 11 rows: a block of eight and a tail on x86; 13 columns: three lanes' chunks and a tail.
        for observed in [false, true] {
            let (mut y, mut yb, mut yt) = ([0.0f32; 11], [0.0f32; 11], [0.0f32; 13]);
            let mut fl = Flags::NONE;
            if observed {
                matrix::matvec(&w, &x, &mut y, &mut NearestEven, &mut fl);
                matrix::affine(&w, &x, &b, &mut yb, &mut NearestEven, &mut fl);
                matrix::matvec_t(&w, &d, &mut yt, &mut NearestEven, &mut fl);
            } else {
                matrix::matvec(&w, &x, &mut y, &mut NearestEven, &mut ());
                matrix::affine(&w, &x, &b, &mut yb, &mut NearestEven, &mut ());
                matrix::matvec_t(&w, &d, &mut yt, &mut NearestEven, &mut ());
            }
            for o in 0..11 {
                let want = dot_in_order(&w[o], &x);
                prop_assert!(same(y[o], want), "row {o}: {} vs {}", y[o], want);
                prop_assert!(same(yb[o], want + b[o]), "affine row {o}");
            }
            for i in 0..13 {
                let want = sequential((0..11).map(|o| (w[o][i], d[o])));
                prop_assert!(same(yt[i], want), "column {i}: {} vs {}", yt[i], want);
            }
        }
    }

    #[test]
    fn transposed_products_sum_in_order_from_their_start(
        v in prop::collection::vec(f32s(), 5 * 35 + 5 + 35),
    ) {
        // 35 columns, wider than any target's vector of lanes; the accumulating form starts each sum from y's
        // value.
        let at = |k: usize| v.get(k).copied().unwrap_or(0.0);
        let w: [[f32; 35]; 5] = core::array::from_fn(|o| core::array::from_fn(|i| at(o * 35 + i)));
        let d: [f32; 5] = core::array::from_fn(|o| at(175 + o));
        let y0: [f32; 35] = core::array::from_fn(|i| at(180 + i));
        for observed in [false, true] {
            for add in [false, true] {
                let mut y = y0;
                let mut fl = Flags::NONE;
                match (observed, add) {
                    (true, true) => matrix::matvec_t_add(&w, &d, &mut y, &mut NearestEven, &mut fl),
                    (true, false) => matrix::matvec_t(&w, &d, &mut y, &mut NearestEven, &mut fl),
                    (false, true) => matrix::matvec_t_add(&w, &d, &mut y, &mut NearestEven, &mut ()),
                    (false, false) => matrix::matvec_t(&w, &d, &mut y, &mut NearestEven, &mut ()),
                }
                for i in 0..35 {
                    // Every float sum in the crate starts at +0 and takes a starting value as its first term,
                    // so a −0 start becomes +0 (`0 + −0`), as `y + Wᵀd` does with `Wᵀd` summed from +0.
                    let start = if add { 0.0 + y0[i] } else { 0.0 };
                    let want = (0..5).fold(start, |s, o| s + w[o][i] * d[o]);
                    prop_assert!(same(y[i], want), "column {i} (add: {add}): {} vs {}", y[i], want);
                }
            }
        }
    }

    #[test]
    fn matmul_follows_the_documented_order(
        v in prop::collection::vec(f32s(), 5 * 9 + 9 * 35),
    ) {
        // 6 columns run only the fast path's tail; 35 run whole column chunks (two or more on every target,
        // where x86 keeps finished chunks in memory) and a tail. 5 rows: whole row blocks and a last row.
        matmul_in_order::<6>(&v)?;
        matmul_in_order::<35>(&v)?;
    }
}

/// The case the proptest above once shrank to (a CI run's random seed): a −0 start whose terms are all −0 ends
/// +0, observed or not, because the sum starts at +0; a +0 start stays +0 and a non-zero term keeps its sign.
#[test]
fn an_accumulating_transposed_sum_of_negative_zeros_starts_at_positive_zero() {
    let w: [[f32; 3]; 5] = [
        [-6.261147e-38, 0.0, 1.0],
        [0.0, -0.0, 1.0],
        [-5.79125e-20, 0.0, 1.0],
        [0.0, -0.0, 1.0],
        [-37.628, 0.0, 1.0],
    ];
    let d = [0.0, -165.71959, 0.0, -1545.5004, 0.0];
    for observed in [false, true] {
        let mut y = [-0.0f32, 0.0, -0.0];
        let mut fl = Flags::NONE;
        if observed {
            matrix::matvec_t_add(&w, &d, &mut y, &mut NearestEven, &mut fl);
        } else {
            matrix::matvec_t_add(&w, &d, &mut y, &mut NearestEven, &mut ());
        }
        // Every product is ±0: column 0's are all −0, column 1's +0 or −0·−x = +0.
        let column2 = d.iter().fold(0.0f32 + -0.0, |s, &dv| s + dv);
        assert_eq!(
            y.map(f32::to_bits),
            [0.0, 0.0, column2].map(f32::to_bits),
            "observed: {observed}"
        );
        assert_eq!(fl, Flags::NONE);
    }
}

/// [`matrix::matmul`] of a 5×9 and a 9×`N` matrix from `v`, probe off and active, against each element's sum
/// in order.
fn matmul_in_order<const N: usize>(v: &[f32]) -> Result<(), TestCaseError> {
    let at = |k: usize| v.get(k).copied().unwrap_or(0.0);
    let a: [[f32; 9]; 5] = core::array::from_fn(|i| core::array::from_fn(|k| at(i * 9 + k)));
    let bm: [[f32; N]; 9] = core::array::from_fn(|k| core::array::from_fn(|j| at(45 + k * N + j)));
    let mut c = [[0.0f32; N]; 5];
    matrix::matmul(&a, &bm, &mut c, &mut NearestEven, &mut ());
    let (mut co, mut fl) = ([[0.0f32; N]; 5], Flags::NONE);
    matrix::matmul(&a, &bm, &mut co, &mut NearestEven, &mut fl);
    for i in 0..5 {
        for j in 0..N {
            let want = sequential((0..9).map(|k| (a[i][k], bm[k][j])));
            prop_assert!(
                same(c[i][j], want) && same(co[i][j], want),
                "N = {N}, ({i}, {j})"
            );
        }
    }
    Ok(())
}

/// Every recorded value's flags, in order: active (every output) or only watching (non-finite outputs, with
/// the events of their exact recomputation).
struct Record<const ACTIVE: bool>(Vec<Flags>);

impl<const ACTIVE: bool> gradscope_core::Probe for Record<ACTIVE> {
    const ACTIVE: bool = ACTIVE;
    const WATCH: bool = true;
    fn record(&mut self, flags: Flags) {
        self.0.push(flags);
    }
}

/// A kernel run under an active probe (the exact path, every output's flags) and under a watching one (the
/// fast path, then the recomputation of each non-finite output): the same values, the watching probe's
/// records are the active probe's records of the non-finite outputs, and `expect_overflow` of them overflowed.
fn check_watch<const N: usize>(
    what: &str,
    active: ([f32; N], Vec<Flags>),
    watched: ([f32; N], Vec<Flags>),
    expect_overflow: usize,
) {
    let (ya, fa) = active;
    let (yw, fw) = watched;
    assert!(
        ya.iter().zip(&yw).all(|(a, b)| same(*a, *b)),
        "{what}: {ya:?} vs {yw:?}"
    );
    let nonfinite: Vec<Flags> = ya
        .iter()
        .zip(&fa)
        .filter(|(v, _)| !v.is_finite())
        .map(|(_, &f)| f)
        .collect();
    assert_eq!(fw, nonfinite, "{what}");
    let overflowed = fw.iter().filter(|f| f.contains(Flags::OVERFLOW)).count();
    assert_eq!(overflowed, expect_overflow, "{what}: {fw:?}");
}

// Each case overflows only when every part of the sum is counted (both products, the bias, the start value),
// so a recomputation that drops or alters one part reports a different event than the exact path.
#[test]
fn a_watching_probe_reports_non_finite_outputs_like_the_exact_path() {
    let big = 1.5e38f32;
    // affine_pair: two rows' products of 1.5e38 each and a bias of 1e38 exceed f32::MAX only together.
    let (w1, w2) = ([[1.0f32, 0.0], [1.0, 0.0]], [[1.0f32], [1.0]]);
    let (x1, x2) = ([big, 0.0], [big]);
    let b = [1e38f32, -1e38];
    let mut fa = Record::<true>(vec![]);
    let mut ya = [0.0f32; 2];
    matrix::affine_pair(
        (&w1, &x1),
        (&w2, &x2),
        &b,
        &mut ya,
        &mut NearestEven,
        &mut fa,
    );
    let mut fw = Record::<false>(vec![]);
    let mut yw = [0.0f32; 2];
    matrix::affine_pair(
        (&w1, &x1),
        (&w2, &x2),
        &b,
        &mut yw,
        &mut NearestEven,
        &mut fw,
    );
    check_watch("affine_pair", (ya, fa.0), (yw, fw.0), 1);

    // matvec_t_add: a start value of 3e38 plus Wᵀd = 1e38 overflows; without the start it would not.
    let w = [[1.0f32, 1.0], [0.0, 0.0]];
    let d = [1e38f32, 0.0];
    let start = [3e38f32, -1.0];
    let mut fa = Record::<true>(vec![]);
    let mut ya = start;
    matrix::matvec_t_add(&w, &d, &mut ya, &mut NearestEven, &mut fa);
    let mut fw = Record::<false>(vec![]);
    let mut yw = start;
    matrix::matvec_t_add(&w, &d, &mut yw, &mut NearestEven, &mut fw);
    check_watch("matvec_t_add", (ya, fa.0), (yw, fw.0), 1);

    // axpy: y = 3e38 plus 2·5e37 overflows; an infinite x gives a non-finite output that is not an overflow.
    let x = [5e37f32, f32::INFINITY, 1.0];
    let start = [3e38f32, 1.0, 1.0];
    let mut fa = Record::<true>(vec![]);
    let mut ya = start;
    matrix::axpy(2.0, &x, &mut ya, &mut NearestEven, &mut fa);
    let mut fw = Record::<false>(vec![]);
    let mut yw = start;
    matrix::axpy(2.0, &x, &mut yw, &mut NearestEven, &mut fw);
    check_watch("axpy", (ya, fa.0), (yw, fw.0), 1);
}

/// Finite values only, the largest and smallest among them.
fn finite_f32s() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => -1e3f32..1e3,
        2 => (-1.0f32..1.0).prop_map(|u| u * 3.4e38),
        1 => prop_oneof![Just(f32::MAX), Just(f32::MIN), Just(0.0f32), Just(-0.0), Just(1e-45)],
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..cfg() })]

    /// `all_finite` gives each value's `is_finite` verdict on slices of every length, with finite values of
    /// every size and with non-finite values at any position.
    #[test]
    fn all_finite_answers_as_each_value_would(
        v in prop::collection::vec(finite_f32s(), 0..19),
        bad in prop::collection::vec(
            (0usize..19, prop_oneof![Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(f32::NAN)]),
            0..3,
        ),
    ) {
        let mut v = v;
        for (at, x) in bad {
            if let Some(slot) = v.get_mut(at) {
                *slot = x;
            }
        }
        let each = v.iter().all(|x| x.is_finite());
        prop_assert_eq!(f32::all_finite(&v), each, "{:?}", v);
        let wide: Vec<f64> = v.iter().map(|&x| x as f64 * 5e269).collect();
        prop_assert_eq!(f64::all_finite(&wide), each, "{:?}", wide);
    }
}

#[test]
fn all_finite_at_its_edges() {
    // The largest finite magnitudes, of both signs, and subnormals.
    assert!(f32::all_finite(&[f32::MAX, f32::MIN, 1e-45, -0.0]));
    assert!(f64::all_finite(&[f64::MAX, f64::MIN, 5e-324, -0.0]));
    // NaNs with any payload and sign.
    for bits in [
        0x7fc0_0000u32,
        0x7f80_0001,
        0xffc0_0000,
        0xff80_0001,
        0xffff_ffff,
    ] {
        assert!(!f32::all_finite(&[1.0, f32::from_bits(bits)]), "{bits:#x}");
    }
    assert!(!f64::all_finite(&[f64::from_bits(0xfff0_0000_0000_0001)]));
    // One non-finite value in each position.
    for n in 1..10 {
        for at in 0..n {
            for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
                let mut v = vec![1.0f32; n];
                v[at] = bad;
                assert!(!f32::all_finite(&v), "{v:?}");
                let w: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                assert!(!f64::all_finite(&w), "{w:?}");
            }
        }
    }
    assert!(f32::all_finite(&[]));
}

/// `v` moved by `k` steps to the next representable value (up for `k > 0`).
fn ulps(mut v: f32, k: i32) -> f32 {
    for _ in 0..k.unsigned_abs() {
        v = if k > 0 { v.next_up() } else { v.next_down() };
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 50_000, ..cfg() })]

    /// `quiet_if_finite` (one vectorized compare per value) says yes only when no product of non-zero values
    /// can fall below the normal range (the lower half of `quiet` of the values' bound), and says yes whenever
    /// every non-zero magnitude lies clearly above that threshold, whatever their size (overflow is left to
    /// the kernels' check of their outputs): tested with vectors of every scale, values a few ulps from the
    /// threshold, and zeros, NaN and ∞ at any position.
    #[test]
    fn quiet_if_finite_rules_out_products_below_the_normal_range(
        a in prop::collection::vec(f32s(), 0..12),
        b in prop::collection::vec(f32s(), 1..6),
        b_scale in -120i32..=4,
        n in 1usize..200,
        near in prop::collection::vec((0usize..12, -3i32..=3, any::<bool>()), 0..4),
        special in prop::collection::vec(
            (0usize..12, prop_oneof![Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(f32::NAN)]),
            0..2,
        ),
    ) {
        // Vectors of every scale, so that the threshold can leave the format's range.
        let b: Vec<f32> = b.iter().map(|&v| v * 2f32.powi(b_scale)).collect();
        let bb = f32::bound(&b);
        // The smallest non-zero magnitude in `b` (∞ when it has none), and the least magnitude whose products
        // with it are normal.
        let b_min = b.iter().map(|v| v.abs()).filter(|&m| m > 0.0).fold(f32::INFINITY, f32::min);
        let lo = f32::MIN_POSITIVE as f64 / b_min as f64;
        let mut a = a;
        for (at, k, negative) in near {
            if let Some(slot) = a.get_mut(at) && lo.is_finite() && lo > 0.0 && lo < f32::MAX as f64 {
                let v = ulps(lo as f32, k);
                *slot = if negative { -v } else { v };
            }
        }
        for (at, v) in special {
            if let Some(slot) = a.get_mut(at) {
                *slot = v;
            }
        }
        let yes = f32::quiet_if_finite(&a, bb, n);
        // Sound: every product of non-zero values (NaN aside) is at least the normal range's smallest.
        let small = a.iter().any(|&v| {
            let m = v.abs() as f64;
            m > 0.0 && (m * b_min as f64) < f32::MIN_POSITIVE as f64
        });
        prop_assert!(!yes || !small, "says yes with a product below normal: {:?} {:?}", a, b);
        // Not much more cautious than that: yes whenever every non-zero magnitude clears it by 1e-6 (unless
        // every non-zero value of `b` is NaN, which leaves no threshold: then it may say no).
        let b_nan = b_min == f32::INFINITY && b.iter().any(|v| v.is_nan());
        let clear = !b_nan && a.iter().all(|&v| {
            let m = v.abs() as f64;
            m == 0.0 || v.is_nan() || m >= lo * (1.0 + 1e-6)
        });
        prop_assert!(!clear || yes, "more cautious than its margin: {:?} {:?}", a, b);
        // f64 takes the same code at its own width.
        let (a64, b64): (Vec<f64>, Vec<f64>) =
            (a.iter().map(|&v| v as f64 * 1e300).collect(), b.iter().map(|&v| v as f64 * 1e-300).collect());
        let small64 = a64.iter().any(|&v| {
            v != 0.0 && !v.is_nan() && b64.iter().any(|&w| w != 0.0 && !w.is_nan() && (v * w).abs() < f64::MIN_POSITIVE)
        });
        prop_assert!(!f64::quiet_if_finite(&a64, f64::bound(&b64), n) || !small64);
    }
}

/// A float sum and its events as the crate documents them (`Scalar::mac`, `acc_merge`, `acc_add`, `narrow`),
/// written out plainly: a product that underflows to zero, is subnormal or overflows; a sum that overflows;
/// an output that is not finite or is subnormal.
#[derive(Clone, Copy)]
struct Ev(f32, Flags);

impl Ev {
    const ZERO: Ev = Ev(0.0, Flags::NONE);
    fn mac(self, a: f32, b: f32) -> Ev {
        let (p, s) = (a * b, self.0 + a * b);
        let mut f = self.1;
        if p == 0.0 && a != 0.0 && b != 0.0 {
            f |= Flags::UNDERFLOW;
        }
        if p.is_subnormal() {
            f |= Flags::SUBNORMAL;
        }
        if (p.is_infinite() && a.is_finite() && b.is_finite())
            || (s.is_infinite() && self.0.is_finite() && p.is_finite())
        {
            f |= Flags::OVERFLOW;
        }
        Ev(s, f)
    }
    fn merge(self, o: Ev) -> Ev {
        let s = self.0 + o.0;
        let overflow = s.is_infinite() && self.0.is_finite() && o.0.is_finite();
        Ev(
            s,
            self.1
                | o.1
                | if overflow {
                    Flags::OVERFLOW
                } else {
                    Flags::NONE
                },
        )
    }
    fn add(self, x: f32) -> Ev {
        let s = self.0 + x;
        Ev(s, self.1 | op_flags(s, self.0, x, false))
    }
    /// The output and the flags its probe record carries.
    fn out(self) -> (f32, Flags) {
        let mut f = self.1;
        if !self.0.is_finite() {
            f |= Flags::NONFINITE;
        }
        if self.0.is_subnormal() {
            f |= Flags::SUBNORMAL;
        }
        (self.0, f)
    }
    /// A dot product in the documented order: lane `k mod 4`, then `(l₀ + l₂) + (l₁ + l₃)`.
    fn dot(a: &[f32], b: &[f32]) -> Ev {
        let mut l = [Ev::ZERO; 4];
        for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
            l[k % 4] = l[k % 4].mac(x, y);
        }
        l[0].merge(l[2]).merge(l[1].merge(l[3]))
    }
}

/// Values that pass the fast lanes' check more often than `f32s` (no tiny magnitudes) and whose sums often
/// overflow: ordinary, huge, and now and then ±∞, NaN or zero.
fn loud_f32s() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1e3f32..1e3,
        3 => (-1.0f32..1.0).prop_map(|u| u * 3e38),
        1 => prop_oneof![Just(0.0f32), Just(-0.0), Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(f32::NAN)],
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..cfg() })]

    /// Under an active probe the kernels (which take their fast lanes whenever no product can fall below the
    /// normal range, even if a sum may overflow) record every output's events in output order, as the event
    /// model above computes them from each sum in its documented order: the same values, the same records.
    #[test]
    fn an_active_probe_records_each_outputs_events_in_order(
        v in prop::collection::vec(prop_oneof![3 => loud_f32s(), 1 => f32s()], 11 * 13 + 13 + 11 + 11 + 11 * 5 + 5),
    ) {
        let at = |k: usize| v.get(k).copied().unwrap_or(0.0);
        let w: [[f32; 13]; 11] = core::array::from_fn(|o| core::array::from_fn(|i| at(o * 13 + i)));
        let x: [f32; 13] = core::array::from_fn(|i| at(143 + i));
        let d: [f32; 11] = core::array::from_fn(|o| at(156 + o));
        let b: [f32; 11] = core::array::from_fn(|o| at(167 + o));
        let w2: [[f32; 5]; 11] = core::array::from_fn(|o| core::array::from_fn(|i| at(178 + o * 5 + i)));
        let x2: [f32; 5] = core::array::from_fn(|i| at(233 + i));
        let check = |what: &str, got: (&[f32], Vec<Flags>), want: Vec<Ev>| -> Result<(), TestCaseError> {
            let want: Vec<(f32, Flags)> = want.into_iter().map(Ev::out).collect();
            prop_assert_eq!(got.0.len(), want.len());
            for (k, (&y, &(e, _))) in got.0.iter().zip(&want).enumerate() {
                prop_assert!(same(y, e), "{} output {}: {} vs {}", what, k, y, e);
            }
            let flags: Vec<Flags> = want.iter().map(|&(_, f)| f).collect();
            prop_assert_eq!(got.1, flags, "{}", what);
            Ok(())
        };

        let mut p = Record::<true>(vec![]);
        let y = [matrix::dot(&x, &w[0], &mut NearestEven, &mut p)];
        check("dot", (&y, p.0), vec![Ev::dot(&x, &w[0])])?;

        let (mut y, mut p) = ([0.0f32; 11], Record::<true>(vec![]));
        matrix::matvec(&w, &x, &mut y, &mut NearestEven, &mut p);
        check("matvec", (&y, p.0), w.iter().map(|row| Ev::dot(row, &x)).collect())?;

        let (mut y, mut p) = ([0.0f32; 11], Record::<true>(vec![]));
        matrix::affine(&w, &x, &b, &mut y, &mut NearestEven, &mut p);
        let want = w.iter().zip(&b).map(|(row, &bo)| Ev::dot(row, &x).add(bo)).collect();
        check("affine", (&y, p.0), want)?;

        let (mut y, mut p) = ([0.0f32; 11], Record::<true>(vec![]));
        matrix::affine_pair((&w, &x), (&w2, &x2), &b, &mut y, &mut NearestEven, &mut p);
        let want = (0..11).map(|o| Ev::dot(&w[o], &x).merge(Ev::dot(&w2[o], &x2)).add(b[o])).collect();
        check("affine_pair", (&y, p.0), want)?;

        let (mut y, mut p) = ([0.0f32; 13], Record::<true>(vec![]));
        matrix::matvec_t(&w, &d, &mut y, &mut NearestEven, &mut p);
        let want = (0..13).map(|i| (0..11).fold(Ev::ZERO, |s, o| s.mac(w[o][i], d[o]))).collect();
        check("matvec_t", (&y, p.0), want)?;

        // C = W₂ᵀ-shaped product: [[f32; 5]; 11] · [[f32; 13]; 5] (the first five rows of W).
        let bm: [[f32; 13]; 5] = core::array::from_fn(|k| w[k]);
        let (mut c, mut p) = ([[0.0f32; 13]; 11], Record::<true>(vec![]));
        matrix::matmul(&w2, &bm, &mut c, &mut NearestEven, &mut p);
        let want = (0..11)
            .flat_map(|i| (0..13).map(move |j| (i, j)))
            .map(|(i, j)| (0..5).fold(Ev::ZERO, |s, k| s.mac(w2[i][k], bm[k][j])))
            .collect();
        check("matmul", (c.as_flattened(), p.0), want)?;
    }
}
