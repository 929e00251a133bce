//! Fixed-point operations and kernels against the `i128` oracle of `gradscope_suite::oracle`, 100 000 proptest
//! cases per operation and kernel, for `I16F16` and `I8F24` (and `I1F15` for the kernels).
//!
//! Each case checks the value (within the rounding mode: exactly for floor and nearest-even, one of the two
//! neighbours for stochastic), saturation exactly at the bounds, and every flag set exactly when information
//! was lost. Accumulators: the oracle sums in `i128` and so does the core's exact path, so every kernel's
//! result must equal the oracle's exactly, whatever the magnitudes; the wide-shape tests force each fast path
//! (blocks of rows, pairs of 16-bit values, odd lengths) and demand the same.

use gradscope_core::{
    AnyRounding, Coef, Flags, Floor, Fx, Fx16, I16F16, NearestEven, Scalar, Stochastic, matrix,
};
use gradscope_suite::oracle::{Mode, expect, outcome, round_pow2};
use proptest::prelude::*;

use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

const CASES: u32 = 100_000;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: gradscope_suite::oracle_cases(CASES),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Raw values that reach every regime: full range, moderate, near the LSB, and the extremes.
fn raw32() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => any::<i32>(),
        3 => -(1i32 << 20)..(1i32 << 20),
        2 => -300i32..300,
        1 => prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(0), Just(1), Just(-1)],
    ]
}

fn raw16() -> impl Strategy<Value = i16> {
    prop_oneof![
        3 => any::<i16>(),
        2 => -300i16..300,
        1 => prop_oneof![Just(i16::MIN), Just(i16::MAX), Just(0), Just(1), Just(-1)],
    ]
}

/// The oracle's deterministic modes next to the core's.
fn modes() -> [(Mode, AnyRounding<Xoshiro128PlusPlus>); 2] {
    [
        (Mode::Floor, AnyRounding::Floor),
        (Mode::NearestEven, AnyRounding::NearestEven),
    ]
}

/// The exact sum of the terms.
fn exact_sum(terms: impl IntoIterator<Item = i128>) -> i128 {
    terms.into_iter().sum()
}

/// Check a narrowed result against the oracle: the exact sum rounded once, with its flags.
fn check_narrow(got: (i128, Flags), terms: Vec<i128>, frac: u32, mode: Mode, min: i128, max: i128) {
    let num = exact_sum(terms);
    assert_eq!(got, expect(num, frac, mode, min, max), "exact sum {num}");
}

/// Stochastic rounding must return one of the two neighbours with exactly that neighbour's flags.
fn check_stochastic(got: (i128, Flags), num: i128, frac: u32, min: i128, max: i128) {
    let lo = round_pow2(num, frac, Mode::Floor);
    let a = outcome(num, frac, lo, min, max);
    let b = outcome(num, frac, lo + 1, min, max);
    assert!(got == a || got == b, "{got:?} is neither {a:?} nor {b:?}");
}

macro_rules! fixed_suite {
    ($modname:ident, $t:ty, $raw:ty, $strat:expr) => {
        mod $modname {
            use super::*;
            type T = $t;
            const F: u32 = <T>::FRAC_BITS;
            const MIN: i128 = <$raw>::MIN as i128;
            const MAX: i128 = <$raw>::MAX as i128;

            fn t(x: $raw) -> T {
                T::from_bits(x)
            }
            fn raw(v: (T, Flags)) -> (i128, Flags) {
                (v.0.to_bits() as i128, v.1)
            }

            /// `A B` against the exact sums, observed and not: 3 × 33 is a block of rows and a tail row, two or
            /// more chunks of columns and a tail (x86: 2 rows, 16 columns, or 8 in I1F15's pair lanes; Cortex-M:
            /// 1 row and 8 columns), and an odd `K` leaves I1F15's pair lanes a last product alone.
            fn check_matmul<const K: usize>(a: &[[$raw; K]; 3], b: &[[$raw; 33]; K]) -> Result<(), TestCaseError> {
                for (mode, mut r) in modes() {
                    let mut c = [[T::ZERO; 33]; 3];
                    let mut fc = Flags::NONE;
                    matrix::matmul(&a.map(|r| r.map(t)), &b.map(|r| r.map(t)), &mut c, &mut r, &mut fc);
                    let mut unobserved = [[T::ZERO; 33]; 3];
                    matrix::matmul(&a.map(|r| r.map(t)), &b.map(|r| r.map(t)), &mut unobserved, &mut r, &mut ());
                    prop_assert_eq!(c, unobserved);
                    let mut want_flags = Flags::NONE;
                    for m in 0..3 {
                        for n in 0..33 {
                            let terms: Vec<i128> = (0..K).map(|k| a[m][k] as i128 * b[k][n] as i128).collect();
                            let (value, flags) = expect(exact_sum(terms), F, mode, MIN, MAX);
                            prop_assert_eq!(c[m][n].to_bits() as i128, value);
                            want_flags |= flags;
                        }
                    }
                    prop_assert_eq!(fc, want_flags);
                }
                Ok(())
            }

            /// `y = Wᵀ d` and `y = y₀ + Wᵀ d` over 33 columns, each output's start one more exact term.
            fn check_matvec_t<const K: usize>(
                w: &[[$raw; 33]; K],
                d: &[$raw; K],
                y0: &[$raw; 33],
            ) -> Result<(), TestCaseError> {
                let (wt, dt) = (w.map(|r| r.map(t)), d.map(t));
                for (mode, mut r) in modes() {
                    for add in [false, true] {
                        let (mut y, mut unobserved, mut fl) = (y0.map(t), y0.map(t), Flags::NONE);
                        if add {
                            matrix::matvec_t_add(&wt, &dt, &mut y, &mut r, &mut fl);
                            matrix::matvec_t_add(&wt, &dt, &mut unobserved, &mut r, &mut ());
                        } else {
                            matrix::matvec_t(&wt, &dt, &mut y, &mut r, &mut fl);
                            matrix::matvec_t(&wt, &dt, &mut unobserved, &mut r, &mut ());
                        }
                        prop_assert_eq!(y, unobserved);
                        let mut want_flags = Flags::NONE;
                        for i in 0..33 {
                            let start = if add { (y0[i] as i128) << F } else { 0 };
                            let terms: Vec<i128> = std::iter::once(start)
                                .chain((0..K).map(|o| w[o][i] as i128 * d[o] as i128))
                                .collect();
                            let (value, flags) = expect(exact_sum(terms), F, mode, MIN, MAX);
                            prop_assert_eq!(y[i].to_bits() as i128, value);
                            want_flags |= flags;
                        }
                        prop_assert_eq!(fl, want_flags);
                    }
                }
                Ok(())
            }

            proptest! {
                #![proptest_config(cfg())]

                #[test]
                fn add_sub_neg(a in $strat, b in $strat) {
                    let (a128, b128) = (a as i128, b as i128);
                    prop_assert_eq!(raw(t(a).add(t(b))), expect(a128 + b128, 0, Mode::Floor, MIN, MAX));
                    prop_assert_eq!(raw(t(a).sub(t(b))), expect(a128 - b128, 0, Mode::Floor, MIN, MAX));
                    prop_assert_eq!(raw(t(a).neg()), expect(-a128, 0, Mode::Floor, MIN, MAX));
                }

                #[test]
                fn mul_all_modes(a in $strat, b in $strat, seed in any::<u64>()) {
                    let num = a as i128 * b as i128;
                    for (mode, mut r) in modes() {
                        prop_assert_eq!(raw(t(a).mul(t(b), &mut r)), expect(num, F, mode, MIN, MAX));
                    }
                    let mut st = Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed));
                    check_stochastic(raw(t(a).mul(t(b), &mut st)), num, F, MIN, MAX);
                }

                #[test]
                fn scale_by_a_prepared_coefficient(
                    a in $strat,
                    c in prop_oneof![-4.0f64..4.0, -1e-6f64..1e-6, -1e-13f64..1e-13, -1e5f64..1e5, Just(1e-300)],
                ) {
                    let coef = Coef::new(c);
                    // The coefficient as m · 2^−e with 15 (16-bit formats) or 31 significant bits, within its
                    // stated error of c; the product exact in i128, rounded once.
                    let bits = if <$raw>::BITS == 16 { 15 } else { 31 };
                    let (m, e) = if bits == 15 { coef.mantissa15() } else { coef.mantissa31() };
                    let c_hat = m as f64 * (-(e as f64)).exp2();
                    prop_assert!((c_hat - c).abs() <= c.abs() * (-(bits as f64)).exp2(), "{} vs {}", c_hat, c);
                    let (num, frac) = if e >= 0 { (a as i128 * m as i128, e as u32) } else { ((a as i128 * m as i128) << -e, 0) };
                    for (mode, mut r) in modes() {
                        prop_assert_eq!(raw(t(a).scale_by(&coef, &mut r)), expect(num, frac, mode, MIN, MAX));
                        prop_assert_eq!(t(a).scale_by(&coef, &mut r), t(a).scale(c, &mut r));
                    }
                }

                #[test]
                fn from_f64_all_modes(x in prop_oneof![
                    any::<f64>(),
                    (-1.0f64..1.0).prop_map(|u| u * (MAX as f64 + 2.0) / (1u64 << F) as f64),
                    (-1.0f64..1.0).prop_map(|u| u * 4.0 / (1u64 << F) as f64),
                    (any::<$raw>(), 0u32..4).prop_map(|(r, h)| (r as f64 + h as f64 * 0.25) / (1u64 << F) as f64),
                ], seed in any::<u64>()) {
                    let mut st = Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed));
                    if x.is_nan() {
                        prop_assert_eq!(raw(T::from_f64(x, &mut Floor)), (0, Flags::NONFINITE));
                    } else if x.is_infinite() {
                        let sat = if x > 0.0 { MAX } else { MIN };
                        let want = (sat, Flags::OVERFLOW | Flags::INEXACT | Flags::NONFINITE);
                        prop_assert_eq!(raw(T::from_f64(x, &mut NearestEven)), want);
                    } else {
                        let (num, shift) = exact_scaled(x, F);
                        for (mode, mut r) in modes() {
                            prop_assert_eq!(raw(T::from_f64(x, &mut r)), expect(num, shift, mode, MIN, MAX));
                        }
                        check_stochastic(raw(T::from_f64(x, &mut st)), num, shift, MIN, MAX);
                    }
                }

                #[test]
                fn to_f32_is_nearest(a in $strat) {
                    let exact = a as f64 / (1u64 << F) as f64;
                    let (y, f) = t(a).to_f32();
                    prop_assert_eq!(y, exact as f32);
                    prop_assert_eq!(f, if y as f64 == exact { Flags::NONE } else { Flags::INEXACT });
                }

                #[test]
                fn dot_kernel(a in prop::array::uniform8($strat), b in prop::array::uniform8($strat)) {
                    let terms: Vec<i128> = a.iter().zip(&b).map(|(&x, &y)| x as i128 * y as i128).collect();
                    for (mode, mut r) in modes() {
                        let mut fl = Flags::NONE;
                        let v = matrix::dot(&a.map(t), &b.map(t), &mut r, &mut fl);
                        check_narrow((v.to_bits() as i128, fl), terms.clone(), F, mode, MIN, MAX);
                    }
                }

                #[test]
                fn matvec_affine_and_transposed(
                    w in prop::array::uniform3(prop::array::uniform4($strat)),
                    x in prop::array::uniform4($strat),
                    bias in prop::array::uniform3($strat),
                    d in prop::array::uniform3($strat),
                ) {
                    let wt = w.map(|r| r.map(t));
                    for (mode, mut r) in modes() {
                        let mut y = [T::ZERO; 3];
                        let mut fl = [Flags::NONE; 3];
                        for o in 0..3 {
                            // One output at a time so each value's flags can be compared.
                            let mut one = [T::ZERO; 1];
                            matrix::matvec(&[wt[o]], &x.map(t), &mut one, &mut r, &mut fl[o]);
                            y[o] = one[0];
                        }
                        let mut y_all = [T::ZERO; 3];
                        matrix::matvec(&wt, &x.map(t), &mut y_all, &mut r, &mut ());
                        prop_assert_eq!(y, y_all);
                        for o in 0..3 {
                            let terms = w[o].iter().zip(&x).map(|(&p, &q)| p as i128 * q as i128).collect();
                            check_narrow((y[o].to_bits() as i128, fl[o]), terms, F, mode, MIN, MAX);
                        }
                        let mut ya = [T::ZERO; 3];
                        matrix::affine(&wt, &x.map(t), &bias.map(t), &mut ya, &mut r, &mut ());
                        for o in 0..3 {
                            let mut fo = Flags::NONE;
                            let mut one = [T::ZERO; 1];
                            matrix::affine(&[wt[o]], &x.map(t), &[t(bias[o])], &mut one, &mut r, &mut fo);
                            prop_assert_eq!(one[0], ya[o]);
                            let terms = std::iter::once((bias[o] as i128) << F)
                                .chain(w[o].iter().zip(&x).map(|(&p, &q)| p as i128 * q as i128))
                                .collect();
                            check_narrow((ya[o].to_bits() as i128, fo), terms, F, mode, MIN, MAX);
                        }
                        let mut yt = [T::ZERO; 4];
                        let mut counts = gradscope_core::EventCounts::default();
                        matrix::matvec_t(&wt, &d.map(t), &mut yt, &mut r, &mut counts);
                        prop_assert_eq!(counts.values, 4);
                        let mut ft = Flags::NONE;
                        matrix::matvec_t(&wt, &d.map(t), &mut yt, &mut r, &mut ft);
                        let mut want_flags = Flags::NONE;
                        for i in 0..4 {
                            let terms: Vec<i128> = (0..3).map(|o| w[o][i] as i128 * d[o] as i128).collect();
                            let got = yt[i].to_bits() as i128;
                            let (value, flags) = expect(exact_sum(terms), F, mode, MIN, MAX);
                            prop_assert_eq!(got, value);
                            want_flags |= flags;
                        }
                        // Every output's events, and no others.
                        prop_assert_eq!(ft, want_flags);
                    }
                }

                #[test]
                fn outer_acc_and_axpy(
                    g in prop::array::uniform2(prop::array::uniform3($strat)),
                    d in prop::array::uniform2($strat),
                    x in prop::array::uniform3($strat),
                    alpha in $strat,
                ) {
                    for (mode, mut r) in modes() {
                        let mut gt = g.map(|row| row.map(t));
                        let mut counts = gradscope_core::EventCounts::default();
                        matrix::outer_acc(&mut gt, &d.map(t), &x.map(t), &mut r, &mut counts);
                        let mut want_counts = gradscope_core::EventCounts::default();
                        for o in 0..2 {
                            for i in 0..3 {
                                let num = ((g[o][i] as i128) << F) + d[o] as i128 * x[i] as i128;
                                let want = expect(num, F, mode, MIN, MAX);
                                prop_assert_eq!(gt[o][i].to_bits() as i128, want.0);
                                gradscope_core::Probe::record(&mut want_counts, want.1);
                            }
                        }
                        prop_assert_eq!(counts, want_counts);
                        let mut y = x.map(t);
                        let mut fl = Flags::NONE;
                        matrix::axpy(t(alpha), &d.map(t), &mut [y[0], y[1]], &mut r, &mut ());
                        matrix::axpy(t(alpha), &x.map(t), &mut y, &mut r, &mut fl);
                        let mut want_fl = Flags::NONE;
                        for i in 0..3 {
                            let num = ((x[i] as i128) << F) + alpha as i128 * x[i] as i128;
                            let want = expect(num, F, mode, MIN, MAX);
                            prop_assert_eq!(y[i].to_bits() as i128, want.0);
                            want_fl |= want.1;
                        }
                        prop_assert_eq!(fl, want_fl);
                    }
                }

                #[test]
                fn affine_pair_and_accumulating_transpose(
                    w1 in prop::array::uniform3(prop::array::uniform2($strat)),
                    x1 in prop::array::uniform2($strat),
                    w2 in prop::array::uniform3(prop::array::uniform4($strat)),
                    x2 in prop::array::uniform4($strat),
                    bias in prop::array::uniform3($strat),
                    d in prop::array::uniform3($strat),
                    y0 in prop::array::uniform4($strat),
                ) {
                    let (w1t, w2t) = (w1.map(|r| r.map(t)), w2.map(|r| r.map(t)));
                    for (mode, mut r) in modes() {
                        // y = W₁x₁ + W₂x₂ + b: one exact sum, rounded once per output.
                        for o in 0..3 {
                            let (mut y, mut fo) = ([T::ZERO; 1], Flags::NONE);
                            matrix::affine_pair((&[w1t[o]], &x1.map(t)), (&[w2t[o]], &x2.map(t)), &[t(bias[o])], &mut y, &mut r, &mut fo);
                            let terms = std::iter::once((bias[o] as i128) << F)
                                .chain(w1[o].iter().zip(&x1).map(|(&p, &q)| p as i128 * q as i128))
                                .chain(w2[o].iter().zip(&x2).map(|(&p, &q)| p as i128 * q as i128))
                                .collect();
                            check_narrow((y[0].to_bits() as i128, fo), terms, F, mode, MIN, MAX);
                        }
                        let mut all = [T::ZERO; 3];
                        matrix::affine_pair((&w1t, &x1.map(t)), (&w2t, &x2.map(t)), &bias.map(t), &mut all, &mut r, &mut ());
                        for o in 0..3 {
                            let mut y = [T::ZERO; 1];
                            matrix::affine_pair((&[w1t[o]], &x1.map(t)), (&[w2t[o]], &x2.map(t)), &[t(bias[o])], &mut y, &mut r, &mut ());
                            prop_assert_eq!(y[0], all[o]);
                        }
                        // y += W₂ᵀ d: the start value is one more exact term.
                        let mut y = y0.map(t);
                        let mut ft = Flags::NONE;
                        matrix::matvec_t_add(&w2t, &d.map(t), &mut y, &mut r, &mut ft);
                        let mut f_all = Flags::NONE;
                        for i in 0..4 {
                            let terms: Vec<i128> = std::iter::once((y0[i] as i128) << F)
                                .chain((0..3).map(|o| w2[o][i] as i128 * d[o] as i128))
                                .collect();
                            let (want, f) = expect(exact_sum(terms), F, mode, MIN, MAX);
                            prop_assert_eq!(y[i].to_bits() as i128, want);
                            f_all |= f;
                        }
                        prop_assert_eq!(ft, f_all);
                    }
                }

                #[test]
                fn wide_shapes_take_every_fast_path(
                    v in prop::collection::vec($strat, 11 * 13 + 13 + 9 * 16 + 16),
                    no_min in any::<bool>(),
                ) {
                    // 11×13: a block of eight rows and a tail, an odd length; 9×16: whole pairs and lanes.
                    // `no_min` keeps the vector free of the most negative value, as I1F15's pair lanes need.
                    let at = |k: usize| {
                        let x = v.get(k).copied().unwrap_or(0);
                        if no_min && x == <$raw>::MIN { x + 1 } else { x }
                    };
                    let w1: [[$raw; 13]; 11] = core::array::from_fn(|o| core::array::from_fn(|i| at(o * 13 + i)));
                    let x1: [$raw; 13] = core::array::from_fn(|i| at(143 + i));
                    let w2: [[$raw; 16]; 9] = core::array::from_fn(|o| core::array::from_fn(|i| at(156 + o * 16 + i)));
                    let x2: [$raw; 16] = core::array::from_fn(|i| at(300 + i));
                    for (mode, mut r) in modes() {
                        let (mut y1, mut y1o) = ([T::ZERO; 11], [T::ZERO; 11]);
                        matrix::matvec(&w1.map(|r| r.map(t)), &x1.map(t), &mut y1, &mut r, &mut ());
                        let mut counts = gradscope_core::EventCounts::default();
                        matrix::matvec(&w1.map(|r| r.map(t)), &x1.map(t), &mut y1o, &mut r, &mut counts);
                        prop_assert_eq!(y1, y1o);
                        for o in 0..11 {
                            let num = exact_sum(w1[o].iter().zip(&x1).map(|(&p, &q)| p as i128 * q as i128));
                            prop_assert_eq!(y1[o].to_bits() as i128, expect(num, F, mode, MIN, MAX).0);
                        }
                        let mut y2 = [T::ZERO; 9];
                        matrix::matvec(&w2.map(|r| r.map(t)), &x2.map(t), &mut y2, &mut r, &mut ());
                        for o in 0..9 {
                            let num = exact_sum(w2[o].iter().zip(&x2).map(|(&p, &q)| p as i128 * q as i128));
                            prop_assert_eq!(y2[o].to_bits() as i128, expect(num, F, mode, MIN, MAX).0);
                        }
                    }
                }

                #[test]
                fn matmul_and_transposed_kernels(
                    av in prop::collection::vec($strat, 12),
                    bv in prop::collection::vec($strat, 4 * 33),
                    y0 in prop::collection::vec($strat, 33),
                    no_min in any::<bool>(),
                ) {
                    // (Vector strategies: nested arrays of this size overflow the test thread's stack.)
                    // `no_min` keeps B free of the most negative value, as I1F15's pair lanes (x86) need.
                    let at = |k: usize| {
                        let x = bv[k];
                        if no_min && x == <$raw>::MIN { x + 1 } else { x }
                    };
                    let a3: [[$raw; 3]; 3] = core::array::from_fn(|m| core::array::from_fn(|k| av[m * 4 + k]));
                    let a4: [[$raw; 4]; 3] = core::array::from_fn(|m| core::array::from_fn(|k| av[m * 4 + k]));
                    let b3: [[$raw; 33]; 3] = core::array::from_fn(|k| core::array::from_fn(|n| at(k * 33 + n)));
                    let b4: [[$raw; 33]; 4] = core::array::from_fn(|k| core::array::from_fn(|n| at(k * 33 + n)));
                    check_matmul(&a3, &b3)?;
                    check_matmul(&a4, &b4)?;
                    // The transposed products over the same wide rows, with and without a start value.
                    let d: [$raw; 4] = core::array::from_fn(|k| av[k]);
                    let w3: [[$raw; 33]; 3] = core::array::from_fn(|k| core::array::from_fn(|n| bv[k * 33 + n]));
                    let w4: [[$raw; 33]; 4] = core::array::from_fn(|k| core::array::from_fn(|n| bv[k * 33 + n]));
                    let y0: [$raw; 33] = core::array::from_fn(|i| y0[i]);
                    check_matvec_t(&w3, &[d[0], d[1], d[2]], &y0)?;
                    check_matvec_t(&w4, &d, &y0)?;
                }

                #[test]
                fn map_zip_kernels(a in prop::array::uniform5($strat), b in prop::array::uniform5($strat)) {
                    let mut y = [T::ZERO; 5];
                    let mut fl = Flags::NONE;
                    matrix::zip(&a.map(t), &b.map(t), &mut y, |p, q| p.mul(q, &mut NearestEven), &mut fl);
                    let mut want_fl = Flags::NONE;
                    for i in 0..5 {
                        let want = expect(a[i] as i128 * b[i] as i128, F, Mode::NearestEven, MIN, MAX);
                        prop_assert_eq!(y[i].to_bits() as i128, want.0);
                        want_fl |= want.1;
                    }
                    prop_assert_eq!(fl, want_fl);
                    let mut z = [T::ZERO; 5];
                    matrix::map(&a.map(t), &mut z, |p| p.neg(), &mut ());
                    for i in 0..5 {
                        prop_assert_eq!(z[i].to_bits() as i128, expect(-(a[i] as i128), 0, Mode::Floor, MIN, MAX).0);
                    }
                }

                #[test]
                fn sum_sq_and_l2_norm(x in prop::collection::vec($strat, 0..12)) {
                    let num: i128 = x.iter().map(|&v| v as i128 * v as i128).sum();
                    let xs: Vec<T> = x.iter().map(|&v| t(v)).collect();
                    for (mode, mut r) in modes() {
                        let mut fl = Flags::NONE;
                        let s = matrix::sum_sq(&xs, &mut r, &mut fl);
                        // The oracle's i128 narrowing saturates exactly where the core's does.
                        let want = if num > i64::MAX as i128 { (MAX, Flags::OVERFLOW | Flags::INEXACT) } else { expect(num, F, mode, MIN, MAX) };
                        prop_assert_eq!((s.to_bits() as i128, fl), want);
                    }
                    // Norm: nearest integer to sqrt(num), by exact integer comparison.
                    let mut fl = Flags::NONE;
                    let n = matrix::l2_norm(&xs, &mut fl).to_bits() as i128;
                    if fl.contains(Flags::OVERFLOW) {
                        // Saturated exactly when sqrt(num) rounds above MAX, i.e. 4·num >= (2·MAX + 1)².
                        prop_assert_eq!(n, MAX);
                        prop_assert!(4 * num >= (2 * MAX + 1) * (2 * MAX + 1));
                    } else {
                        let (lo, hi) = ((2 * n - 1) * (2 * n - 1), (2 * n + 1) * (2 * n + 1));
                        prop_assert!(n >= 0 && (n == 0 || lo <= 4 * num) && 4 * num < hi, "norm {} of {}", n, num);
                        prop_assert_eq!(fl.contains(Flags::INEXACT), n * n != num);
                    }
                }
            }
        }
    };
}

/// `x · 2^f` as an exact rational `num / 2^shift`, read off the f64 bits (independent of the core's code).
fn exact_scaled(x: f64, f: u32) -> (i128, u32) {
    let bits = x.to_bits();
    let sign = if bits >> 63 == 1 { -1i128 } else { 1 };
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = (bits & ((1u64 << 52) - 1)) as i128;
    let (m, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1 << 52), exp - 1075)
    };
    let e = e + f as i32;
    if m == 0 {
        return (0, 0);
    }
    if e >= 0 {
        // Beyond ~2^70 every format saturates; cap so i128 cannot overflow while keeping the sign.
        (sign * (m << e.min(60)), 0)
    } else if -e > 100 {
        // Far below one LSB: only the sign and non-zero-ness matter to every rounding mode.
        (sign, 100)
    } else {
        (sign * m, (-e) as u32)
    }
}

fixed_suite!(i16f16, Fx<16>, i32, raw32());
fixed_suite!(i8f24, Fx<24>, i32, raw32());
fixed_suite!(i1f15, Fx16<15>, i16, raw16());

/// Q15's pair lanes (two products summed in 32 bits) overflow only for (−1)·(−1) + (−1)·(−1) = 2: the kernels
/// must leave them whenever the vector holds −1. Rows of −1 against a vector of −1 and +1 (its largest and
/// smallest values) must give the exact sums of the `i128` oracle.
#[test]
fn q15_pair_lanes_are_left_when_the_vector_holds_minus_one() {
    type Q = Fx16<15>;
    let (min, max) = (i16::MIN, i16::MAX);
    let x: [i16; 16] = core::array::from_fn(|i| if i % 4 < 2 { min } else { max });
    let w: [[i16; 16]; 9] =
        core::array::from_fn(|o| core::array::from_fn(|i| if i <= o { min } else { 3 }));
    let q = |v: i16| Q::from_bits(v);
    for (mode, mut r) in modes() {
        let mut y = [Q::ZERO; 9];
        let mut fl = Flags::NONE;
        matrix::matvec(&w.map(|r| r.map(q)), &x.map(q), &mut y, &mut r, &mut fl);
        for o in 0..9 {
            let num = exact_sum(w[o].iter().zip(&x).map(|(&p, &s)| p as i128 * s as i128));
            assert_eq!(
                y[o].to_bits() as i128,
                expect(num, 15, mode, min as i128, max as i128).0,
                "row {o}"
            );
        }
    }
}

/// Products too large for the fast lanes (three of 2⁶² overflow an `i64`) must take the exact path in every
/// kernel, observed or not: the exact sum saturates at the top, a wrapped one would land at the bottom.
#[test]
fn extreme_products_take_the_exact_path() {
    type Q = Fx<16>;
    let m = Q::from_bits(i32::MIN);
    let a = [[m; 3]; 3];
    let b = [[m; 20]; 3];
    for observed in [false, true] {
        let mut c = [[Q::ZERO; 20]; 3];
        let mut fl = Flags::NONE;
        if observed {
            matrix::matmul(&a, &b, &mut c, &mut NearestEven, &mut fl);
            assert!(fl.contains(Flags::OVERFLOW));
        } else {
            matrix::matmul(&a, &b, &mut c, &mut NearestEven, &mut ());
        }
        assert!(
            c.iter().flatten().all(|v| *v == Q::MAX),
            "observed {observed}"
        );
        let mut y = [Q::ZERO; 3];
        matrix::matvec(&a, &[m; 3], &mut y, &mut NearestEven, &mut ());
        assert_eq!(y, [Q::MAX; 3]);
        let mut yt = [Q::ZERO; 3];
        matrix::matvec_t(&a, &[m; 3], &mut yt, &mut NearestEven, &mut ());
        assert_eq!(yt, [Q::MAX; 3]);
    }
}

// `matvec_t_add`'s start value is one more term of the sum: with two products of (2³¹ − 1)·2³¹ raw units and a
// start of −2³¹ (at 2F fraction bits, −2⁴⁷), the i64 lanes would wrap, so the bound that picks them must count
// the start and both products. The exact path saturates, flagged.
#[test]
fn a_start_value_counts_toward_the_fast_lanes_bound() {
    let w = [[I16F16::MIN], [I16F16::MIN]];
    let d = [I16F16::MAX, I16F16::MAX];
    let mut y = [I16F16::MIN];
    let mut flags = Flags::NONE;
    matrix::matvec_t_add(&w, &d, &mut y, &mut NearestEven, &mut flags);
    assert_eq!(y, [I16F16::MIN]);
    assert!(flags.contains(Flags::OVERFLOW), "{flags:?}");
    // The same sum without a start fits the lanes' bound and must still be exact (and saturate).
    let mut y = [I16F16::ZERO];
    let mut flags = Flags::NONE;
    matrix::matvec_t(&w, &d, &mut y, &mut NearestEven, &mut flags);
    assert_eq!(y, [I16F16::MIN]);
    assert!(flags.contains(Flags::OVERFLOW), "{flags:?}");
}

/// `Scalar::sub_scaled` (the SGD update's loop, which a format may specialize) against `scale_by` then `sub`
/// per value: the same values, flags and random draws for every format, rounding mode and kind of coefficient
/// (the fixed-point fast paths' exponents up to 31 and 62, beyond, negative, zero and non-finite).
#[test]
fn sub_scaled_equals_scale_by_then_sub_per_value() {
    use gradscope_core::{I1F15, I8F24, Rounding, bf16, f16};

    fn check<S: Scalar, R: Rounding + Clone + PartialEq + std::fmt::Debug>(r: R) {
        let xs = [
            0.0, 1e-9, -3e-5, 0.3, -0.7, 0.999, -1.0, 2.5, -7.75, 100.0, -3e4, 1e9, -1e12,
        ];
        let vals: Vec<S> = xs
            .iter()
            .map(|&x| S::from_f64(x, &mut NearestEven).0)
            .collect();
        let coefs = [
            0.01,
            1.0,
            -0.5,
            3e-5,
            2f64.powi(-31),
            2f64.powi(-32),
            2f64.powi(-62),
            2f64.powi(-70),
            1e-30,
            3e5,
            1e7,
            -1e9,
            0.0,
            f64::NAN,
            f64::INFINITY,
        ];
        for c in coefs {
            let c = Coef::new(c);
            let mut w: Vec<S> = vals.iter().rev().copied().collect();
            let g = vals.clone();
            let mut want = w.clone();
            let (mut ra, mut rb) = (r.clone(), r.clone());
            let mut want_flags = Vec::new();
            for (w, &g) in want.iter_mut().zip(&g) {
                let (d, f1) = g.scale_by(&c, &mut ra);
                let (v, f2) = w.sub(d);
                want_flags.push(f1 | f2);
                *w = v;
            }
            let mut flags = Vec::new();
            S::sub_scaled(&mut w, &g, &c, &mut rb, |f| flags.push(f));
            let bits = |v: &[S]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&w), bits(&want), "{} c = {c:?}", S::NAME);
            assert_eq!(flags, want_flags, "{} c = {c:?}", S::NAME);
            assert_eq!(ra, rb, "{} c = {c:?}: the random draws differ", S::NAME);
        }
    }
    fn all<S: Scalar>() {
        check::<S, _>(NearestEven);
        check::<S, _>(Floor);
        check::<S, _>(Stochastic(Xoshiro128PlusPlus::seed_from_u64(3)));
    }
    all::<I1F15>();
    all::<I16F16>();
    all::<I8F24>();
    all::<f32>();
    all::<f64>();
    all::<f16>();
    all::<bf16>();
}
