//! Weight initializers, seeded, generic over any [`rand_core::Rng`]; the documented default generator is
//! `rand_xoshiro::Xoshiro128PlusPlus` (32-bit state words: fast on 32-bit MCUs).
//!
//! Formulas follow `torch.nn.init` where PyTorch defines them; `fan_in` and `fan_out` of a weight
//! `[[S; I]; O]` are `I` and `O` (PyTorch's `Linear` layout):
//!
//! | init | distribution |
//! |---|---|
//! | `Zeros`, `Constant(c)` | 0, c |
//! | `Uniform { a, b }` | U(a, b) |
//! | `Normal { mean, std }` | N(mean, std²) |
//! | `TruncatedNormal { mean, std, a, b }` | N(mean, std²) restricted to [a, b] (inverse-CDF sampling, as PyTorch) |
//! | `XavierUniform { gain }` | U(±gain·√(6/(fan_in + fan_out))) (Glorot & Bengio 2010) |
//! | `XavierNormal { gain }` | N(0, gain²·2/(fan_in + fan_out)) |
//! | `KaimingUniform { slope, mode, nonlinearity }` | U(±√3·gain/√fan), gain = [`calculate_gain`] (He et al. 2015) |
//! | `KaimingNormal { slope, mode, nonlinearity }` | N(0, gain²/fan) |
//! | `LecunUniform`, `LecunNormal` | U(±√(3/fan_in)), N(0, 1/fan_in) (LeCun et al. 1998; not in PyTorch) |
//! | `Orthogonal { gain }` | gain · Q of the QR decomposition of a Gaussian matrix, signs fixed so diag(R) > 0 (Saxe et al. 2014) |
//! | `Identity { gain }` | gain on the diagonal, 0 elsewhere (IRNN, Le et al. 2015) |
//! | `Standard` | U(±1/√fan_in), the "standard" heuristic of Glorot & Bengio 2010, eq. 1 |
//!
//! Sampling is done in `f64` from 53 random bits per uniform (normals by inverse CDF, one uniform each), then
//! rounded into the weight type with the caller's rounding; each weight's [`Flags`](crate::Flags) go to the probe, so an
//! [`EventCounts`](crate::EventCounts) tells how many weights underflowed to zero or saturated. The arithmetic
//! is integer or IEEE `f64` with libm, so the same seed gives the same bits on every target.

use core::fmt;

use rand_core::Rng;

use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// Which fan Kaiming initialization preserves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// Preserve the forward signal's variance (PyTorch default).
    FanIn,
    /// Preserve the backward signal's variance.
    FanOut,
}

/// A nonlinearity for [`calculate_gain`].
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Nonlinearity {
    /// Identity (also PyTorch's conv/linear entries).
    Linear,
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// ReLU.
    Relu,
    /// Leaky ReLU with the given negative slope.
    LeakyRelu(f64),
    /// SELU.
    Selu,
}

/// The recommended gain of PyTorch's `calculate_gain`: linear and sigmoid 1, tanh 5/3, ReLU √2,
/// leaky ReLU √(2/(1 + α²)), SELU 3/4.
pub fn calculate_gain(n: Nonlinearity) -> f64 {
    match n {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => libm::sqrt(2.0),
        Nonlinearity::LeakyRelu(a) => libm::sqrt(2.0 / (1.0 + a * a)),
        Nonlinearity::Selu => 0.75,
    }
}

/// An initialization scheme; see the [module docs](self) for each formula.
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All `c`.
    Constant(f64),
    /// U(a, b).
    Uniform {
        /// Lower bound.
        a: f64,
        /// Upper bound.
        b: f64,
    },
    /// N(mean, std²).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (≥ 0).
        std: f64,
    },
    /// N(mean, std²) truncated to [a, b].
    TruncatedNormal {
        /// Mean.
        mean: f64,
        /// Standard deviation (> 0).
        std: f64,
        /// Lower bound.
        a: f64,
        /// Upper bound.
        b: f64,
    },
    /// Glorot uniform.
    XavierUniform {
        /// Gain (see [`calculate_gain`]).
        gain: f64,
    },
    /// Glorot normal.
    XavierNormal {
        /// Gain (see [`calculate_gain`]).
        gain: f64,
    },
    /// He uniform.
    KaimingUniform {
        /// Negative slope for `LeakyRelu` (ignored by other nonlinearities).
        slope: f64,
        /// Fan to preserve.
        mode: FanMode,
        /// Nonlinearity that sets the gain.
        nonlinearity: Nonlinearity,
    },
    /// He normal.
    KaimingNormal {
        /// Negative slope for `LeakyRelu` (ignored by other nonlinearities).
        slope: f64,
        /// Fan to preserve.
        mode: FanMode,
        /// Nonlinearity that sets the gain.
        nonlinearity: Nonlinearity,
    },
    /// LeCun uniform.
    LecunUniform,
    /// LeCun normal.
    LecunNormal,
    /// Scaled orthogonal matrix.
    Orthogonal {
        /// Gain.
        gain: f64,
    },
    /// Scaled identity.
    Identity {
        /// Gain on the diagonal.
        gain: f64,
    },
    /// U(±1/√fan_in).
    Standard,
}

/// Why an initializer could not run.
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum InitError {
    /// A parameter is NaN or infinite.
    NonFinite,
    /// A standard deviation is negative (or zero for a truncated normal).
    NegativeStd,
    /// A range is empty or inverted (`a > b`, or a truncated normal with `a >= b`).
    EmptyRange,
    /// Fan-in or fan-out is zero where the formula divides by it.
    ZeroFan,
    /// The name is not one of [`Init::NAMES`].
    UnknownName,
    /// `Orthogonal` or `Identity` was asked of a flat tensor.
    NeedsMatrix,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitError::NonFinite => "initializer parameter is NaN or infinite",
            InitError::NegativeStd => "initializer standard deviation must be positive",
            InitError::EmptyRange => "initializer range is empty: need a < b",
            InitError::ZeroFan => "initializer needs a non-zero fan-in and fan-out",
            InitError::NeedsMatrix => "orthogonal and identity initialization need a matrix, not a flat tensor",
            InitError::UnknownName => {
                "unknown initializer; expected one of: zeros, constant, uniform, normal, truncated_normal, \
                 xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal, lecun_uniform, lecun_normal, \
                 orthogonal, identity, standard"
            }
        })
    }
}

impl core::error::Error for InitError {}

/// How one element is drawn: a uniform on [lo, hi), a (truncated) normal, or a constant.
#[derive(Copy, Clone, Debug, PartialEq)]
enum Dist {
    Const(f64),
    Uniform(f64, f64),
    Normal(f64, f64),
    /// mean, std, and the CDF interval [Φ(α), Φ(β)] of the standardized bounds, and the bounds themselves.
    Truncated {
        mean: f64,
        std: f64,
        lo_p: f64,
        hi_p: f64,
        a: f64,
        b: f64,
    },
}

impl Init {
    /// Names accepted by [`Init::from_name`] (PyTorch's defaults for each scheme's parameters: gain 1,
    /// Kaiming with `fan_in` and ReLU, uniform on [0, 1), normal N(0, 1), truncated normal N(0, 1) on [−2, 2]).
    pub const NAMES: [&'static str; 14] = [
        "zeros",
        "constant",
        "uniform",
        "normal",
        "truncated_normal",
        "xavier_uniform",
        "xavier_normal",
        "kaiming_uniform",
        "kaiming_normal",
        "lecun_uniform",
        "lecun_normal",
        "orthogonal",
        "identity",
        "standard",
    ];

    /// The scheme called `name`, with PyTorch's default parameters (`constant` is 0.1).
    pub fn from_name(name: &str) -> Result<Init, InitError> {
        let kaiming = |normal: bool| {
            let (slope, mode, nonlinearity) = (0.0, FanMode::FanIn, Nonlinearity::Relu);
            if normal {
                Init::KaimingNormal {
                    slope,
                    mode,
                    nonlinearity,
                }
            } else {
                Init::KaimingUniform {
                    slope,
                    mode,
                    nonlinearity,
                }
            }
        };
        Ok(match name {
            "zeros" => Init::Zeros,
            "constant" => Init::Constant(0.1),
            "uniform" => Init::Uniform { a: 0.0, b: 1.0 },
            "normal" => Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
            "truncated_normal" => Init::TruncatedNormal {
                mean: 0.0,
                std: 1.0,
                a: -2.0,
                b: 2.0,
            },
            "xavier_uniform" | "glorot_uniform" => Init::XavierUniform { gain: 1.0 },
            "xavier_normal" | "glorot_normal" => Init::XavierNormal { gain: 1.0 },
            "kaiming_uniform" | "he_uniform" => kaiming(false),
            "kaiming_normal" | "he_normal" => kaiming(true),
            "lecun_uniform" => Init::LecunUniform,
            "lecun_normal" => Init::LecunNormal,
            "orthogonal" => Init::Orthogonal { gain: 1.0 },
            "identity" | "eye" => Init::Identity { gain: 1.0 },
            "standard" => Init::Standard,
            _ => return Err(InitError::UnknownName),
        })
    }

    /// The distribution of each element for these fans, after validating every parameter.
    fn dist(&self, fan_in: usize, fan_out: usize) -> Result<Dist, InitError> {
        let finite = |xs: &[f64]| {
            if xs.iter().all(|x| x.is_finite()) {
                Ok(())
            } else {
                Err(InitError::NonFinite)
            }
        };
        let fan = |n: usize| {
            if n == 0 {
                Err(InitError::ZeroFan)
            } else {
                Ok(n as f64)
            }
        };
        let sym = |bound: f64| Dist::Uniform(-bound, bound);
        Ok(match *self {
            Init::Zeros => Dist::Const(0.0),
            Init::Constant(c) => {
                finite(&[c])?;
                Dist::Const(c)
            }
            Init::Uniform { a, b } => {
                finite(&[a, b])?;
                if a > b {
                    return Err(InitError::EmptyRange);
                }
                Dist::Uniform(a, b)
            }
            Init::Normal { mean, std } => {
                finite(&[mean, std])?;
                if std < 0.0 {
                    return Err(InitError::NegativeStd);
                }
                Dist::Normal(mean, std)
            }
            Init::TruncatedNormal { mean, std, a, b } => {
                finite(&[mean, std, a, b])?;
                if std <= 0.0 {
                    return Err(InitError::NegativeStd);
                }
                if a >= b {
                    return Err(InitError::EmptyRange);
                }
                let (lo_p, hi_p) = (normal_cdf((a - mean) / std), normal_cdf((b - mean) / std));
                Dist::Truncated {
                    mean,
                    std,
                    lo_p,
                    hi_p,
                    a,
                    b,
                }
            }
            Init::XavierUniform { gain } | Init::XavierNormal { gain } => {
                finite(&[gain])?;
                let std = gain * libm::sqrt(2.0 / (fan(fan_in)? + fan(fan_out)?));
                if matches!(self, Init::XavierUniform { .. }) {
                    sym(libm::sqrt(3.0) * std)
                } else {
                    Dist::Normal(0.0, std)
                }
            }
            Init::KaimingUniform {
                slope,
                mode,
                nonlinearity,
            }
            | Init::KaimingNormal {
                slope,
                mode,
                nonlinearity,
            } => {
                finite(&[slope])?;
                let n = match nonlinearity {
                    Nonlinearity::LeakyRelu(_) => Nonlinearity::LeakyRelu(slope),
                    other => other,
                };
                let f = fan(if mode == FanMode::FanIn {
                    fan_in
                } else {
                    fan_out
                })?;
                let std = calculate_gain(n) / libm::sqrt(f);
                if !std.is_finite() {
                    return Err(InitError::NonFinite);
                }
                if matches!(self, Init::KaimingUniform { .. }) {
                    sym(libm::sqrt(3.0) * std)
                } else {
                    Dist::Normal(0.0, std)
                }
            }
            Init::LecunUniform => sym(libm::sqrt(3.0 / fan(fan_in)?)),
            Init::LecunNormal => Dist::Normal(0.0, libm::sqrt(1.0 / fan(fan_in)?)),
            Init::Standard => sym(1.0 / libm::sqrt(fan(fan_in)?)),
            Init::Orthogonal { gain } | Init::Identity { gain } => {
                finite(&[gain])?;
                Dist::Const(gain)
            }
        })
    }
}

/// A uniform on [0, 1) from the top 53 bits of one draw.
#[inline]
fn unit<G: Rng + ?Sized>(rng: &mut G) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal CDF.
fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * core::f64::consts::FRAC_1_SQRT_2)
}

/// Inverse standard normal CDF: Acklam's rational approximation (relative error 1.15·10⁻⁹) refined by one
/// Halley step on erfc, which brings it to a few ulps. `p` is clamped into the open interval (0, 1).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = if p.is_nan() {
        0.5
    } else {
        p.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON / 2.0)
    };
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.02425 {
        tail(libm::sqrt(-2.0 * libm::log(p)))
    } else if p > 1.0 - 0.02425 {
        -tail(libm::sqrt(-2.0 * libm::log1p(-p)))
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // Halley refinement.
    let e = normal_cdf(x) - p;
    let u = e * libm::sqrt(2.0 * core::f64::consts::PI) * libm::exp(x * x / 2.0);
    let refined = x - u / (1.0 + x * u / 2.0);
    if refined.is_finite() { refined } else { x }
}

impl Dist {
    fn sample<G: Rng + ?Sized>(&self, rng: &mut G) -> f64 {
        match *self {
            Dist::Const(c) => c,
            Dist::Uniform(a, b) => a + (b - a) * unit(rng),
            Dist::Normal(m, s) => {
                // (k + 1/2)/2^53 keeps p strictly inside (0, 1).
                let p = ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
                m + s * normal_quantile(p)
            }
            Dist::Truncated {
                mean,
                std,
                lo_p,
                hi_p,
                a,
                b,
            } => {
                let p = lo_p + (hi_p - lo_p) * unit(rng);
                // max/min, not clamp: clamp asserts a <= b, which validation guarantees but the optimizer cannot
                // prove, and the core keeps no panic path.
                (mean + std * normal_quantile(p)).max(a).min(b)
            }
        }
    }
}

fn store<S: Scalar, R: Rounding + ?Sized, P: Probe + ?Sized>(x: f64, r: &mut R, p: &mut P) -> S {
    let (v, f) = S::from_f64(x, r);
    p.record(f);
    v
}

/// Initialize a flat tensor element by element (weights or biases; PyTorch's `Linear` bias is
/// `Init::Standard` with the layer's fan-in). `Orthogonal` and `Identity` need a matrix shape and give
/// [`InitError::NeedsMatrix`] here: use [`init_matrix`].
pub fn init_slice<S, G, R, P>(
    x: &mut [S],
    init: &Init,
    fan_in: usize,
    fan_out: usize,
    rng: &mut G,
    r: &mut R,
    p: &mut P,
) -> Result<(), InitError>
where
    S: Scalar,
    G: Rng + ?Sized,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    if matches!(init, Init::Orthogonal { .. } | Init::Identity { .. }) {
        return Err(InitError::NeedsMatrix);
    }
    let d = init.dist(fan_in, fan_out)?;
    for v in x.iter_mut() {
        *v = store(d.sample(rng), r, p);
    }
    Ok(())
}

/// Initialize a weight matrix `w[out][in]` (fan_in = `I`, fan_out = `O`). The only entry point for
/// `Orthogonal` and `Identity`.
pub fn init_matrix<S, const I: usize, const O: usize, G, R, P>(
    w: &mut [[S; I]; O],
    init: &Init,
    rng: &mut G,
    r: &mut R,
    p: &mut P,
) -> Result<(), InitError>
where
    S: Scalar,
    G: Rng + ?Sized,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    match *init {
        Init::Identity { gain } => {
            init.dist(I, O)?;
            for (o, row) in w.iter_mut().enumerate() {
                for (i, v) in row.iter_mut().enumerate() {
                    *v = store(if i == o { gain } else { 0.0 }, r, p);
                }
            }
            Ok(())
        }
        Init::Orthogonal { gain } => {
            init.dist(I, O)?;
            if I == 0 || O == 0 {
                return Ok(());
            }
            orthogonal(w, gain, rng, r, p);
            Ok(())
        }
        _ => init_slice(w.as_flattened_mut(), init, I, O, rng, r, p),
    }
}

/// Gram–Schmidt, applied twice per vector (numerically orthogonal to working precision), on the rows when
/// `O <= I` (W Wᵀ = gain²·I) and on the columns otherwise (Wᵀ W = gain²·I). Vectors already stored are read
/// back from `w` and re-normalized, so quantization of earlier rows is accounted for.
fn orthogonal<S, const I: usize, const O: usize, G, R, P>(
    w: &mut [[S; I]; O],
    gain: f64,
    rng: &mut G,
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    G: Rng + ?Sized,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    let normal = Dist::Normal(0.0, 1.0);
    if O <= I {
        for k in 0..O {
            let mut v = [0.0f64; I];
            v.iter_mut().for_each(|x| *x = normal.sample(rng));
            for _ in 0..2 {
                for prev in w.iter().take(k) {
                    project_out(&mut v, prev.iter().map(|s| s.to_f64()));
                }
            }
            let n = libm::sqrt(v.iter().map(|x| x * x).sum::<f64>());
            if let Some(row) = w.get_mut(k) {
                for (dst, x) in row.iter_mut().zip(v) {
                    *dst = store(gain * x / n, r, p);
                }
            }
        }
    } else {
        for k in 0..I {
            let mut v = [0.0f64; O];
            v.iter_mut().for_each(|x| *x = normal.sample(rng));
            for _ in 0..2 {
                for j in 0..k {
                    project_out(
                        &mut v,
                        w.iter().map(|row| row.get(j).map_or(0.0, |s| s.to_f64())),
                    );
                }
            }
            let n = libm::sqrt(v.iter().map(|x| x * x).sum::<f64>());
            for (row, x) in w.iter_mut().zip(v) {
                if let Some(dst) = row.get_mut(k) {
                    *dst = store(gain * x / n, r, p);
                }
            }
        }
    }
}

/// v −= (v·u / u·u) u, for u given as an iterator (read twice through a small copy-free pass).
fn project_out<const N: usize>(v: &mut [f64; N], u: impl Iterator<Item = f64> + Clone) {
    let uu: f64 = u.clone().map(|x| x * x).sum();
    if uu == 0.0 || !uu.is_finite() {
        return;
    }
    let vu: f64 = v.iter().zip(u.clone()).map(|(a, b)| a * b).sum();
    let c = vu / uu;
    for (a, b) in v.iter_mut().zip(u) {
        *a -= c * b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::NearestEven;
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro128PlusPlus;

    #[test]
    fn gains_match_pytorch() {
        assert_eq!(calculate_gain(Nonlinearity::Linear), 1.0);
        assert_eq!(calculate_gain(Nonlinearity::Sigmoid), 1.0);
        assert_eq!(calculate_gain(Nonlinearity::Tanh), 5.0 / 3.0);
        assert_eq!(calculate_gain(Nonlinearity::Relu), 2f64.sqrt());
        assert_eq!(
            calculate_gain(Nonlinearity::LeakyRelu(0.2)),
            (2.0 / 1.04f64).sqrt()
        );
        assert_eq!(calculate_gain(Nonlinearity::Selu), 0.75);
    }

    #[test]
    fn quantile_inverts_the_cdf() {
        for k in 1..1000 {
            let p = k as f64 / 1000.0;
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-14, "{p}");
        }
        assert!((normal_quantile(1e-300) + 37.0).abs() < 0.5);
    }

    #[test]
    fn bad_parameters_are_errors_not_panics() {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(1);
        let mut w = [[0.0f32; 3]; 2];
        let mut go = |init: Init| init_matrix(&mut w, &init, &mut rng, &mut NearestEven, &mut ());
        assert_eq!(
            go(Init::Normal {
                mean: 0.0,
                std: -1.0
            }),
            Err(InitError::NegativeStd)
        );
        assert_eq!(
            go(Init::Uniform { a: 1.0, b: 0.0 }),
            Err(InitError::EmptyRange)
        );
        assert_eq!(go(Init::Constant(f64::NAN)), Err(InitError::NonFinite));
        assert_eq!(
            go(Init::TruncatedNormal {
                mean: 0.0,
                std: 1.0,
                a: 1.0,
                b: 1.0
            }),
            Err(InitError::EmptyRange)
        );
        let mut empty: [[f32; 0]; 2] = [[]; 2];
        let r = init_matrix(
            &mut empty,
            &Init::LecunNormal,
            &mut rng,
            &mut NearestEven,
            &mut (),
        );
        assert_eq!(r, Err(InitError::ZeroFan));
        assert_eq!(Init::from_name("he"), Err(InitError::UnknownName));
        for n in Init::NAMES {
            assert!(Init::from_name(n).is_ok(), "{n}");
        }
    }
}
