//! Initializers against their published formulas: mean and variance over 102 400 samples within 4σ of the
//! formula, the distribution's shape by a Kolmogorov–Smirnov test (α = 0.001) for the uniform, normal and
//! truncated-normal families, orthogonality, and the fixed-point quantization report.

use gradscope_core::init::normal_quantile;
use gradscope_core::{
    EventCounts, FanMode, I1F15, Init, NearestEven, Nonlinearity, Scalar, calculate_gain,
    init_matrix, init_slice,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

const N: usize = 102_400;
const FAN_IN: usize = 64;
const FAN_OUT: usize = 32;

fn draw(init: Init, seed: u64) -> Vec<f64> {
    let mut x = vec![0.0f64; N];
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    init_slice(
        &mut x,
        &init,
        FAN_IN,
        FAN_OUT,
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    x
}

fn phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}
fn pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Sample mean and variance within 4 standard errors of `mean`, `var`; `mu4` is the 4th central moment.
fn check_moments(x: &[f64], mean: f64, var: f64, mu4: f64, what: &str) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0);
    let se_mean = (var / n).sqrt();
    let se_var = ((mu4 - var * var) / n).sqrt();
    assert!(
        (m - mean).abs() <= 4.0 * se_mean,
        "{what}: mean {m}, want {mean} ± {}",
        4.0 * se_mean
    );
    assert!(
        (v - var).abs() <= 4.0 * se_var,
        "{what}: var {v}, want {var} ± {}",
        4.0 * se_var
    );
}

/// Kolmogorov–Smirnov statistic against `cdf`, compared with the α = 0.001 critical value 1.949/√n.
fn check_ks(x: &mut [f64], cdf: impl Fn(f64) -> f64, what: &str) {
    x.sort_by(f64::total_cmp);
    let n = x.len() as f64;
    let d = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let f = cdf(v);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max);
    assert!(
        d < 1.949 / n.sqrt(),
        "{what}: KS statistic {d} exceeds {}",
        1.949 / n.sqrt()
    );
}

fn uniform(x: &mut [f64], a: f64, b: f64, what: &str) {
    let c = (b - a) / 2.0;
    check_moments(x, (a + b) / 2.0, c * c / 3.0, c.powi(4) / 5.0, what);
    check_ks(x, |v| ((v - a) / (b - a)).clamp(0.0, 1.0), what);
}

fn normal(x: &mut [f64], mean: f64, std: f64, what: &str) {
    check_moments(x, mean, std * std, 3.0 * std.powi(4), what);
    check_ks(x, |v| phi((v - mean) / std), what);
}

#[test]
fn uniform_family() {
    uniform(
        &mut draw(Init::Uniform { a: -0.3, b: 0.7 }, 1),
        -0.3,
        0.7,
        "uniform",
    );
    let b = (6.0 / (FAN_IN + FAN_OUT) as f64).sqrt() * 1.5;
    uniform(
        &mut draw(Init::XavierUniform { gain: 1.5 }, 2),
        -b,
        b,
        "xavier_uniform",
    );
    let b = 3f64.sqrt() * calculate_gain(Nonlinearity::Relu) / (FAN_IN as f64).sqrt();
    let he = Init::KaimingUniform {
        slope: 0.0,
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::Relu,
    };
    uniform(&mut draw(he, 3), -b, b, "kaiming_uniform fan_in");
    let b = 3f64.sqrt() * calculate_gain(Nonlinearity::LeakyRelu(0.2)) / (FAN_OUT as f64).sqrt();
    let he = Init::KaimingUniform {
        slope: 0.2,
        mode: FanMode::FanOut,
        nonlinearity: Nonlinearity::LeakyRelu(0.0),
    };
    uniform(&mut draw(he, 4), -b, b, "kaiming_uniform fan_out leaky 0.2");
    let b = (3.0 / FAN_IN as f64).sqrt();
    uniform(&mut draw(Init::LecunUniform, 5), -b, b, "lecun_uniform");
    let b = 1.0 / (FAN_IN as f64).sqrt();
    uniform(&mut draw(Init::Standard, 6), -b, b, "standard");
}

#[test]
fn normal_family() {
    normal(
        &mut draw(
            Init::Normal {
                mean: 0.25,
                std: 2.0,
            },
            7,
        ),
        0.25,
        2.0,
        "normal",
    );
    let s = 0.8 * (2.0 / (FAN_IN + FAN_OUT) as f64).sqrt();
    normal(
        &mut draw(Init::XavierNormal { gain: 0.8 }, 8),
        0.0,
        s,
        "xavier_normal",
    );
    let he = Init::KaimingNormal {
        slope: 0.0,
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::Tanh,
    };
    normal(
        &mut draw(he, 9),
        0.0,
        (5.0 / 3.0) / (FAN_IN as f64).sqrt(),
        "kaiming_normal tanh",
    );
    normal(
        &mut draw(Init::LecunNormal, 10),
        0.0,
        (1.0 / FAN_IN as f64).sqrt(),
        "lecun_normal",
    );
}

#[test]
fn truncated_normal_matches_its_moments_and_cdf() {
    let (mean, std, a, b) = (0.5, 2.0, -1.0, 4.0);
    let mut x = draw(Init::TruncatedNormal { mean, std, a, b }, 11);
    assert!(x.iter().all(|&v| (a..=b).contains(&v)));
    let (al, be) = ((a - mean) / std, (b - mean) / std);
    let z = phi(be) - phi(al);
    let m = mean + std * (pdf(al) - pdf(be)) / z;
    let var =
        std * std * (1.0 + (al * pdf(al) - be * pdf(be)) / z - ((pdf(al) - pdf(be)) / z).powi(2));
    // 4th central moment for the standard error: from the sample itself (only the tolerance depends on it).
    let n = x.len() as f64;
    let mu4 = x.iter().map(|v| (v - m).powi(4)).sum::<f64>() / n;
    check_moments(&x, m, var, mu4, "truncated_normal");
    check_ks(
        &mut x,
        |v| ((phi((v - mean) / std) - phi(al)) / z).clamp(0.0, 1.0),
        "truncated_normal",
    );
}

#[test]
fn ks_test_rejects_a_wrong_distribution() {
    // Negative control: a uniform sample with the normal's variance must fail the normal KS test.
    let b = 3f64.sqrt();
    let mut x = draw(Init::Uniform { a: -b, b }, 12);
    let r = std::panic::catch_unwind(move || check_ks(&mut x, phi, "uniform as normal"));
    assert!(r.is_err());
    assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
}

fn max_gram_error<const I: usize, const O: usize>(w: &[[f32; I]; O], gain: f64) -> f64 {
    let mut worst = 0.0f64;
    if O <= I {
        for (i, a) in w.iter().enumerate() {
            for (j, b) in w.iter().enumerate() {
                let d: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
                let want = if i == j { gain * gain } else { 0.0 };
                worst = worst.max((d - want).abs());
            }
        }
    } else {
        for i in 0..I {
            for j in 0..I {
                let d: f64 = w.iter().map(|r| r[i] as f64 * r[j] as f64).sum();
                let want = if i == j { gain * gain } else { 0.0 };
                worst = worst.max((d - want).abs());
            }
        }
    }
    worst
}

#[test]
fn orthogonal_is_orthogonal_in_f32() {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(13);
    let mut wide = [[0.0f32; 64]; 32];
    init_matrix(
        &mut wide,
        &Init::Orthogonal { gain: 1.0 },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    assert!(max_gram_error(&wide, 1.0) < 1e-5);
    let mut tall = [[0.0f32; 32]; 64];
    init_matrix(
        &mut tall,
        &Init::Orthogonal { gain: 1.0 },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    assert!(max_gram_error(&tall, 1.0) < 1e-5);
    let mut square = [[0.0f32; 64]; 64];
    init_matrix(
        &mut square,
        &Init::Orthogonal { gain: 2.0 },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    assert!(
        max_gram_error(&square, 2.0) < 4e-5,
        "{}",
        max_gram_error(&square, 2.0)
    );
}

#[test]
fn identity_and_same_seed_same_bits() {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(14);
    let mut w = [[1.0f32; 4]; 3];
    init_matrix(
        &mut w,
        &Init::Identity { gain: 0.5 },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    assert_eq!(
        w,
        [
            [0.5, 0.0, 0.0, 0.0],
            [0.0, 0.5, 0.0, 0.0],
            [0.0, 0.0, 0.5, 0.0]
        ]
    );
    let run = |seed| {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
        let mut w = [[0.0f32; 16]; 8];
        init_matrix(
            &mut w,
            &Init::Orthogonal { gain: 1.0 },
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
        w
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn fixed_point_init_reports_saturated_and_vanished_weights() {
    // He normal with fan_in 1: std √2, so about 48% of the samples have |w| >= 1 and saturate in Q15.
    // The expected count comes from the same draws in f64.
    let init = Init::KaimingNormal {
        slope: 0.0,
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::Relu,
    };
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(15);
    let mut q = vec![I1F15::ZERO; 10_000];
    let mut counts = EventCounts::default();
    init_slice(&mut q, &init, 1, 1, &mut rng, &mut NearestEven, &mut counts).unwrap();
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(15);
    let mut x = vec![0.0f64; 10_000];
    init_slice(&mut x, &init, 1, 1, &mut rng, &mut NearestEven, &mut ()).unwrap();
    let over = x
        .iter()
        .filter(|&&v| v >= I1F15::MAX.to_f64() + I1F15::RESOLUTION / 2.0 || v < -1.0)
        .count();
    assert_eq!(counts.overflow as usize, over);
    assert!(counts.overflow > 4000);
    // A tiny std: most weights round to zero, and each one that does is counted.
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(16);
    let mut counts = EventCounts::default();
    init_slice(
        &mut q,
        &Init::Normal {
            mean: 0.0,
            std: 1e-5,
        },
        1,
        1,
        &mut rng,
        &mut NearestEven,
        &mut counts,
    )
    .unwrap();
    let zeros = q.iter().filter(|v| v.is_zero()).count();
    assert_eq!(counts.underflow as usize, zeros);
    assert!(zeros > 5000, "{zeros}");
}
