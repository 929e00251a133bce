//! Every binary `I1F15` operation over all 2³² input pairs, against an `f64` oracle.
//!
//! The oracle is independent of the core's integer code: a Q15 product is at most 2³⁰ in magnitude, so
//! `a·b / 2¹⁵` is exact in `f64`, and `floor` / `round_ties_even` give the reference rounding. The same holds
//! for the chain rule of the output-based derivatives, tanh's `(1 − y²)·dy` and the sigmoid's `y(1 − y)·dy`:
//! their products are integers below 2⁴⁷ at 45 fraction bits. In release builds
//! every pair is checked (a few seconds a core per operation); debug builds check every 61st `b` for each `a`
//! so the suite still runs in both.

use std::sync::atomic::{AtomicU64, Ordering};

use gradscope_core::{
    Act, Activate, Flags, Floor, I1F15, NearestEven, Rounding, Scalar, Stochastic,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

const B_STRIDE: usize = if cfg!(debug_assertions) { 61 } else { 1 };

/// Expected (raw, flags) for an exact value `exact` (in LSB units, exactly representable in f64) after it was
/// rounded to the integer `rounded`.
fn expected(exact: f64, rounded: f64) -> (i16, Flags) {
    let clamped = rounded.clamp(-32768.0, 32767.0);
    let mut f = Flags::NONE;
    if clamped != rounded {
        f |= Flags::OVERFLOW;
    }
    if clamped != exact {
        f |= Flags::INEXACT;
    }
    if exact != 0.0 && clamped == 0.0 {
        f |= Flags::UNDERFLOW;
    }
    (clamped as i16, f)
}

/// Run `check(a, b, rng) -> ok` over all `a` (split across threads) and every `B_STRIDE`-th `b`.
fn all_pairs(check: impl Fn(i16, i16, &mut Xoshiro128PlusPlus) -> bool + Sync) -> u64 {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let bad = AtomicU64::new(0);
    let first = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (bad, first, check) = (&bad, &first, &check);
            s.spawn(move || {
                let mut local = 0u64;
                for a in (i16::MIN as i32 + t as i32..=i16::MAX as i32).step_by(threads) {
                    // One RNG per row keeps the stochastic check deterministic for any thread count.
                    let mut rng = Xoshiro128PlusPlus::seed_from_u64(a as u64);
                    for b in (i16::MIN as i32..=i16::MAX as i32).step_by(B_STRIDE) {
                        if !check(a as i16, b as i16, &mut rng) {
                            local += 1;
                            first.lock().unwrap().get_or_insert((a, b));
                        }
                    }
                }
                bad.fetch_add(local, Ordering::Relaxed);
            });
        }
    });
    let n = bad.load(Ordering::Relaxed);
    assert_eq!(
        n,
        0,
        "{n} mismatches, first at (a, b) = {:?}",
        first.lock().unwrap()
    );
    n
}

fn q(x: i16) -> I1F15 {
    I1F15::from_bits(x)
}

#[test]
fn add_all_pairs() {
    all_pairs(|a, b, _| {
        let e = a as f64 + b as f64;
        let (v, f) = q(a).add(q(b));
        (v.to_bits(), f) == expected(e, e)
    });
}

#[test]
fn sub_all_pairs() {
    all_pairs(|a, b, _| {
        let e = a as f64 - b as f64;
        let (v, f) = q(a).sub(q(b));
        (v.to_bits(), f) == expected(e, e)
    });
}

#[test]
fn mul_floor_all_pairs() {
    all_pairs(|a, b, _| {
        let e = (a as f64 * b as f64) / 32768.0;
        let (v, f) = q(a).mul(q(b), &mut Floor);
        (v.to_bits(), f) == expected(e, e.floor())
    });
}

#[test]
fn mul_nearest_even_all_pairs() {
    all_pairs(|a, b, _| {
        let e = (a as f64 * b as f64) / 32768.0;
        let (v, f) = q(a).mul(q(b), &mut NearestEven);
        (v.to_bits(), f) == expected(e, e.round_ties_even())
    });
}

#[test]
fn mul_stochastic_all_pairs_picks_a_neighbour_with_matching_flags() {
    all_pairs(|a, b, rng| {
        let e = (a as f64 * b as f64) / 32768.0;
        let got = q(a).mul(q(b), &mut Stochastic(rng));
        let got = (got.0.to_bits(), got.1);
        got == expected(e, e.floor()) || got == expected(e, e.floor() + 1.0)
    });
}

#[test]
fn neg_and_conversions_all_values() {
    for a in i16::MIN..=i16::MAX {
        let e = -(a as f64);
        let (v, f) = q(a).neg();
        assert_eq!((v.to_bits(), f), expected(e, e), "neg {a}");
        // Q15 -> f32 -> Q15 is exact both ways.
        let (x, f) = q(a).to_f32();
        assert_eq!(f, Flags::NONE);
        assert_eq!(x as f64, a as f64 / 32768.0);
        assert_eq!(I1F15::from_f32(x, &mut Floor), (q(a), Flags::NONE));
    }
}

#[test]
fn stochastic_rounding_is_unbiased() {
    // 100 000 products of the same pair; the mean error must be within 3σ of zero, where σ is the standard
    // error of a two-point distribution with the exact fractional part as probability.
    let (a, b) = (q(3), q(5000)); // exact product = 15000 / 32768 LSB ≈ 0.4578 LSB
    let exact: f64 = 3.0 * 5000.0 / 32768.0;
    let p = exact - exact.floor();
    let n = 100_000;
    let mut r = Stochastic(Xoshiro128PlusPlus::seed_from_u64(2026));
    let sum: f64 = (0..n).map(|_| a.mul(b, &mut r).0.to_bits() as f64).sum();
    let mean_err = sum / n as f64 - exact;
    let sigma = (p * (1.0 - p) / n as f64).sqrt();
    assert!(
        mean_err.abs() < 3.0 * sigma,
        "mean error {mean_err} LSB, 3σ = {}",
        3.0 * sigma
    );
    // The same experiment with floor rounding is biased by −p LSB: the test can tell the difference.
    let floor_mean = (0..n)
        .map(|_| a.mul(b, &mut Floor).0.to_bits() as f64)
        .sum::<f64>()
        / n as f64;
    assert!((floor_mean - exact).abs() > 100.0 * sigma);
}

/// `act.backward(y, y, dy)` (x is unused by tanh and the sigmoid) for every output `y` and gradient `dy`,
/// against `d30(y)·dy / 2³⁰` in LSB units rounded by `round`. A derivative is never exactly zero for these two,
/// so a non-zero `dy` whose gradient rounds to zero is an underflow even where `y = ±1` made `d30` zero.
fn backward_all_pairs<R: Rounding + Default>(act: Act, d30: fn(f64) -> f64, round: fn(f64) -> f64) {
    all_pairs(|y, dy, _| {
        let e = d30(y as f64) * dy as f64 / (1u64 << 30) as f64;
        let (want, mut wf) = expected(e, round(e));
        if dy != 0 && want == 0 {
            wf |= Flags::UNDERFLOW | Flags::INEXACT;
        }
        let got = act.backward(q(y), q(y), q(dy), &mut R::default());
        let watched = act.backward_watched(q(y), q(y), q(dy), &mut R::default());
        (got.0.to_bits(), got.1) == (want, wf) && watched.0 == got.0
    });
}

#[test]
fn tanh_backward_nearest_even_all_pairs() {
    backward_all_pairs::<NearestEven>(
        Act::Tanh,
        |y| (1u64 << 30) as f64 - y * y,
        f64::round_ties_even,
    );
}

#[test]
fn tanh_backward_floor_all_pairs() {
    backward_all_pairs::<Floor>(Act::Tanh, |y| (1u64 << 30) as f64 - y * y, f64::floor);
}

#[test]
fn sigmoid_backward_nearest_even_all_pairs() {
    backward_all_pairs::<NearestEven>(Act::Sigmoid, |y| y * 32768.0 - y * y, f64::round_ties_even);
}
