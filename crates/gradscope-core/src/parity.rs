//! Deterministic workloads whose digests must be equal on every target (host, Cortex-M4F, Cortex-M0).
//!
//! The host (`gradscope firmware-digests`) and the firmware run the same functions and print one line per
//! workload, `digest <name> <hex>`; a test runs the firmware under QEMU and compares the lines. A digest is
//! FNV-1a (64-bit) over the storage bits of every value, so any difference in a single bit shows.

use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

use crate::activation::{Act, Activate};
use crate::fixed::{I1F15, I16F16};
use crate::float16::{bf16, f16};
use crate::init::{FanMode, Init, Nonlinearity, init_matrix, init_slice};
use crate::layer::{Conv2d, Dense, DenseStack, Flatten, Layer, MaxPool2d};
use crate::loss::{Loss, Objective};
use crate::net::Params;
use crate::optim::Sgd;
use crate::round::{NearestEven, Rounding, Stochastic};
use crate::scalar::Scalar;
use crate::train::{FromFn, StepCtx, Verdict, evaluate, step};

/// Seed of every parity workload.
pub const SEED: u64 = 2026;

/// FNV-1a, 64-bit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    /// Mix in the little-endian bytes of `x`.
    pub fn write_u64(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Mix in every value's storage bits.
    pub fn write_all<S: Scalar>(&mut self, xs: &[S]) {
        for x in xs {
            self.write_u64(x.raw_bits());
        }
    }

    /// The digest value.
    pub fn finish(self) -> u64 {
        self.0
    }
}

// Own stack frame: inlined together, the workloads' locals would add up beyond a Cortex-M0's RAM.
#[inline(never)]
fn init_digest<S: Scalar, R: Rounding>(init: &Init, seed: u64, r: &mut R) -> u64 {
    let mut w = [[S::ZERO; 16]; 8];
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut d = Digest::default();
    if init_matrix(&mut w, init, &mut rng, r, &mut ()).is_err() {
        d.write_u64(u64::MAX); // cannot happen for the named defaults; still a distinct, comparable digest
    }
    d.write_all(w.as_flattened());
    d.finish()
}

/// Every initializer (by [`Init::NAMES`], default parameters) into a 16×8 weight in `f32`, `I16F16` (nearest
/// and stochastic rounding) and `I1F15`: calls `emit("init/<name>/<format>", digest)`.
pub fn init_digests(emit: &mut dyn FnMut(&str, &str, u64)) {
    for (k, name) in Init::NAMES.iter().enumerate() {
        let Ok(init) = Init::from_name(name) else {
            continue;
        };
        let seed = SEED ^ k as u64;
        emit(
            name,
            "f32",
            init_digest::<f32, _>(&init, seed, &mut NearestEven),
        );
        emit(
            name,
            "I16F16",
            init_digest::<I16F16, _>(&init, seed, &mut NearestEven),
        );
        let mut st = Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed.rotate_left(17)));
        emit(
            name,
            "I16F16-stochastic",
            init_digest::<I16F16, _>(&init, seed, &mut st),
        );
        emit(
            name,
            "I1F15",
            init_digest::<I1F15, _>(&init, seed, &mut NearestEven),
        );
    }
}

/// Width and depth of the backprop parity workload (small enough for a Cortex-M0's 16 KiB of RAM).
const W: usize = 8;
const D: usize = 8;

// Own stack frame, as `init_digest`.
#[inline(never)]
fn backprop_digest<S: Scalar, R: Rounding>(act: Act, init: &Init, seed: u64, r: &mut R) -> u64
where
    Act: Activate<S>,
{
    let mut net: DenseStack<S, W, D> = DenseStack::new(act, D);
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut d = Digest::default();
    if net
        .init(init, &Init::Standard, &mut rng, &mut NearestEven, &mut ())
        .is_err()
    {
        d.write_u64(u64::MAX);
    }
    for _ in 0..4 {
        let (mut x, mut t) = ([S::ZERO; W], [S::ZERO; W]);
        let u = Init::Uniform { a: -0.9, b: 0.9 };
        if init_slice(&mut x, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).is_err()
            || init_slice(&mut t, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).is_err()
        {
            d.write_u64(u64::MAX);
        }
        let y = net.forward(&x, 0, r, &mut ());
        let mut dy = [S::ZERO; W];
        let loss = Objective::new(Loss::Mse).grad(&y, &t, 0.25, &mut dy, r, &mut ());
        d.write_u64(loss.to_bits());
        let dx = net.backward(&dy, 0, r, &mut ());
        d.write_all(&dx);
    }
    digest_params(&mut net, &mut d);
    d.finish()
}

/// The backprop workload's cases: (name, activation, initializer).
fn backprop_cases() -> [(&'static str, Act, Init); 4] {
    let he = Init::KaimingNormal {
        slope: 0.0,
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::Relu,
    };
    [
        (
            "sigmoid-xavier",
            Act::Sigmoid,
            Init::XavierNormal { gain: 1.0 },
        ),
        ("sigmoid-he", Act::Sigmoid, he),
        ("relu-xavier", Act::Relu, Init::XavierNormal { gain: 1.0 }),
        ("relu-he", Act::Relu, he),
    ]
}

/// Backpropagation through an 8-layer, 8-wide dense stack (MSE, batch of 4 accumulated), for sigmoid and
/// ReLU under Xavier and He init, in `f32`, `I16F16` (nearest and stochastic rounding) and `I1F15`: the
/// digest covers the loss, every input gradient, and every final weight and gradient. Calls
/// `emit("backprop/<act>-<init>", "<format>", digest)`.
pub fn backprop_digests(emit: &mut dyn FnMut(&str, &str, u64)) {
    for (k, (name, act, init)) in backprop_cases().iter().enumerate() {
        let seed = SEED ^ (0x100 + k as u64);
        emit(
            name,
            "f32",
            backprop_digest::<f32, _>(*act, init, seed, &mut NearestEven),
        );
        emit(
            name,
            "I16F16",
            backprop_digest::<I16F16, _>(*act, init, seed, &mut NearestEven),
        );
        let mut st = Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed.rotate_left(29)));
        emit(
            name,
            "I16F16-stochastic",
            backprop_digest::<I16F16, _>(*act, init, seed, &mut st),
        );
        emit(
            name,
            "I1F15",
            backprop_digest::<I1F15, _>(*act, init, seed, &mut NearestEven),
        );
    }
}

/// The fixed-point kernels each target makes fastest, on seeded values; equal digests on every target show the
/// fast paths equal to the host's safe one bit for bit:
///
/// - the matrix-vector product with probes off, for a square, an odd and a wide shape:
///   `emit("kernel/matvec-<rows>x<cols>", "<format>", digest)`. I1F15 over the whole raw range (−1 = −2¹⁵ and
///   1 − 2⁻¹⁵ included; on the Cortex-M4F, dual 16-bit multiply-accumulates in `asm!`). I16F16 (on the
///   Cortex-M4F, two rows' `smlal`s in `asm!`) at raw magnitudes below 2³¹, 2²³, 2¹⁹ and 2¹⁵ in turn, so that
///   both the exact path (sums beyond `i64` included) and the fast path with saturated outputs are covered;
/// - the SGD update `w ← w − c·g` with nearest rounding (on the Cortex-M4F, pairs of values through `QSUB16`
///   in `asm!`) for coefficients from 2·10⁻⁹ (beyond that path's exponents: the general one) to 1.5 (where
///   steps saturate) and every length up to 9, with the sink off and on (its events join the digest): `emit("kernel/sgd-update", "I1F15", digest)`.
pub fn kernel_digests(emit: &mut dyn FnMut(&str, &str, u64)) {
    matvec_digests("I1F15", 1, |w, _| I1F15::from_bits(w as i16), emit);
    let shifts = [0, 8, 12, 16];
    matvec_digests(
        "I16F16",
        5,
        |w, round| I16F16::from_bits(w as i32 >> shifts[round as usize % 4]),
        emit,
    );
    emit("kernel/sgd-update", "I1F15", update_digest(4));
}

/// The kernels a training step runs under its watching probe (`dot`, `matvec` of 6 and of 12 rows, `affine`,
/// `matvec_t`, `matvec_t_add`, `outer_acc`, `matmul`, `affine_pair`, a convolution's forward and backward
/// passes, and the SELU and ELU activations' backward passes), I1F15 from small magnitudes (nothing saturates)
/// to the whole raw range (many outputs saturate): their outputs and how many saturations the probe saw, which
/// on the Cortex-M4F the kernels read from the sticky Q flag once each (`matrix::deferred`) and elsewhere test
/// value by value: `emit("kernel/watched", "I1F15", digest)`. Apart from [`kernel_digests`]: on the micro:bit
/// they fit beside the 16-bit floats' code (the firmware's `half` binary), not beside the demo's.
pub fn watched_digests(emit: &mut dyn FnMut(&str, &str, u64)) {
    emit("kernel/watched", "I1F15", watched_digest(6).0);
}

/// A probe that watches without being active, as a training step's: it counts the events it is given by their
/// combination of flags (a count, since a target may report a kernel's saturations after its outputs).
struct WatchCounts([u64; 32]);

impl crate::probe::Probe for WatchCounts {
    const ACTIVE: bool = false;
    const WATCH: bool = true;
    fn record(&mut self, flags: crate::flags::Flags) {
        if !flags.is_empty() {
            self.0[(flags.bits() & 31) as usize] += 1;
        }
    }
}

impl crate::layer::Probes for WatchCounts {
    const ACTIVE: bool = false;
    const WATCH: bool = true;
    fn record(&mut self, _layer: usize, _phase: crate::layer::Phase, flags: crate::flags::Flags) {
        crate::probe::Probe::record(self, flags);
    }
}

/// The `kernel/watched` digest, how many saturations the probe saw in the matrix kernels, in the convolution
/// and in the activations, and in how many rounds the 12-row product has an output on a bound in its first
/// eight rows and none in its last four.
// Own stack frame, as `init_digest`.
#[inline(never)]
fn watched_digest(seed: u64) -> (u64, [u64; 3], u64) {
    use crate::matrix::{
        affine, affine_pair, dot, matmul, matvec, matvec_t, matvec_t_add, outer_acc,
    };
    use rand_core::Rng;
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut d = Digest::default();
    let r = &mut NearestEven;
    let mut saturations = [0; 3];
    let mut restores = 0;
    // Raw magnitudes below 2^15 (the whole range), 2^13, 2^11 and 2^8.
    for shift in [0, 2, 4, 7, 0, 2] {
        let mut raw = || I1F15::from_bits(rng.next_u32() as i16 >> shift);
        let mut w = [[I1F15::ZERO; 8]; 6];
        let (mut x, mut b, mut dz) = ([I1F15::ZERO; 8], [I1F15::ZERO; 6], [I1F15::ZERO; 6]);
        w.iter_mut()
            .flatten()
            .chain(&mut x)
            .chain(&mut b)
            .chain(&mut dz)
            .for_each(|v| *v = raw());
        let mut p = WatchCounts([0; 32]);
        d.write_all(&[dot(&x, &w[0], r, &mut p)]);
        let mut y = [I1F15::ZERO; 6];
        matvec(&w, &x, &mut y, r, &mut p);
        d.write_all(&y);
        affine(&w, &x, &b, &mut y, r, &mut p);
        d.write_all(&y);
        // Twelve rows, three blocks of four on the Cortex-M4F, where each block clears Q for its 32-bit sums
        // and restores it: the last block's values are small and never saturate, so the earlier blocks'
        // saturations count only if the restore kept them.
        let tall: [[I1F15; 8]; 12] = core::array::from_fn(|k| {
            let shift = if k < 8 { 0 } else { 7 };
            w[k % 6].map(|v| I1F15::from_bits(v.to_bits() >> shift))
        });
        let mut y12 = [I1F15::ZERO; 12];
        matvec(&tall, &x, &mut y12, r, &mut p);
        d.write_all(&y12);
        let bound = |v: &I1F15| *v == I1F15::MIN || *v == I1F15::MAX;
        restores += u64::from(y12[..8].iter().any(bound) && !y12[8..].iter().any(bound));
        let mut g = x;
        matvec_t(&w, &dz, &mut g, r, &mut p);
        d.write_all(&g);
        matvec_t_add(&w, &dz, &mut g, r, &mut p);
        d.write_all(&g);
        let mut gw = w;
        outer_acc(&mut gw, &dz, &x, r, &mut p);
        outer_acc(&mut gw, &dz, &x, r, &mut p);
        d.write_all(gw.as_flattened());
        let mut c = [[I1F15::ZERO; 6]; 6];
        let wt: [[I1F15; 6]; 8] = core::array::from_fn(|i| core::array::from_fn(|o| w[o][i]));
        matmul(&w, &wt, &mut c, r, &mut p);
        d.write_all(c.as_flattened());
        affine_pair((&w, &x), (&c, &dz), &b, &mut y, r, &mut p);
        d.write_all(&y);
        // A 3×3 `same` convolution, 1 → 2 channels on 6×6: its output, input gradient and parameter gradients.
        let mut conv = Conv2d::<I1F15, 1, 6, 6, 2, 3, 6, 6, 1, 1>::new(Act::Identity);
        let mut image = [[[I1F15::ZERO; 6]; 6]; 1];
        let mut dy = [[[I1F15::ZERO; 6]; 6]; 2];
        let cells = conv
            .weight
            .iter_mut()
            .flatten()
            .flatten()
            .flatten()
            .chain(&mut conv.bias);
        cells
            .chain(image.iter_mut().flatten().flatten())
            .chain(dy.iter_mut().flatten().flatten())
            .for_each(|v| *v = raw());
        let mut pc = WatchCounts([0; 32]);
        let z = conv.forward(&image, 0, r, &mut pc);
        d.write_all(z.as_flattened().as_flattened());
        let dx = conv.backward(&dy, 0, r, &mut pc);
        d.write_all(dx.as_flattened().as_flattened());
        d.write_all(
            conv.grad_weight
                .as_flattened()
                .as_flattened()
                .as_flattened(),
        );
        d.write_all(&conv.grad_bias);
        // Activation gradients (their derivatives read the input only), with gradients of either extreme between
        // the round's own: SELU's from inputs across the range (λ > 1 where x > 0), which saturate in the
        // derivative's 32-bit product, and ELU's with α = 3 from inputs in (−0.2, 0], where the derivative is
        // beyond 2 and every gradient takes the wide path.
        let mut pa = WatchCounts([0; 32]);
        let spread: [I1F15; 8] =
            core::array::from_fn(|k| I1F15::from_bits((k as i32 * 9000 - 32000) as i16));
        let near_zero: [I1F15; 8] =
            core::array::from_fn(|k| I1F15::from_bits((k as i32 * -800) as i16));
        let dya: [I1F15; 8] = core::array::from_fn(|k| match k % 4 {
            0 => I1F15::MAX,
            2 => I1F15::MIN,
            _ => gw[0][k],
        });
        let elu = Act::elu(3.0).unwrap_or(Act::Selu);
        for (act, xa) in [(Act::Selu, &spread), (elu, &near_zero)] {
            let mut ga = [I1F15::ZERO; 8];
            act.backward_all((xa, xa), &dya, &mut ga, r, &mut pa);
            d.write_all(&ga);
        }
        let overflow = crate::flags::Flags::OVERFLOW.bits() as usize;
        for (counts, total) in [&p, &pc, &pa].into_iter().zip(&mut saturations) {
            counts.0.iter().for_each(|&n| d.write_u64(n));
            let overflowed = counts
                .0
                .iter()
                .enumerate()
                .filter(|(k, _)| k & overflow != 0);
            *total += overflowed.map(|(_, &n)| n).sum::<u64>();
        }
    }
    (d.finish(), saturations, restores)
}

/// [`kernel_digests`]' three matvec shapes in one format, seeded from `seed` on.
fn matvec_digests<S: Scalar>(
    format: &str,
    seed: u64,
    raw: impl Fn(u32, u32) -> S + Copy,
    emit: &mut dyn FnMut(&str, &str, u64),
) {
    emit(
        "kernel/matvec-16x16",
        format,
        matvec_digest::<S, 16, 16>(seed, raw),
    );
    emit(
        "kernel/matvec-9x7",
        format,
        matvec_digest::<S, 9, 7>(seed + 1, raw),
    );
    emit(
        "kernel/matvec-3x64",
        format,
        matvec_digest::<S, 3, 64>(seed + 2, raw),
    );
}

// Own stack frame, as `init_digest`.
#[inline(never)]
fn update_digest(seed: u64) -> u64 {
    use crate::scalar::Coef;
    use rand_core::Rng;
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut d = Digest::default();
    let coefs = [0.01, 0.3, 0.75, 1.5, 2e-9, 1.0 / 3.0, 0.999, 3e-5];
    for c in coefs {
        let c = Coef::new(c);
        for len in 0..10 {
            for observed in [false, true] {
                let mut raw = || I1F15::from_bits(rng.next_u32() as i16);
                let (mut w, mut g) = ([I1F15::ZERO; 9], [I1F15::ZERO; 9]);
                w.iter_mut().chain(g.iter_mut()).for_each(|v| *v = raw());
                let (w, g) = (&mut w[..len], &g[..len]);
                if observed {
                    // How many values had each combination of events (a count, since a target may visit
                    // values in another order).
                    let mut events = [0u64; 32];
                    I1F15::sub_scaled(w, g, &c, &mut NearestEven, |f| {
                        events[(f.bits() & 31) as usize] += 1;
                    });
                    events.iter().for_each(|&n| d.write_u64(n));
                } else {
                    I1F15::sub_scaled(w, g, &c, &mut NearestEven, |_| {});
                }
                d.write_all(w);
            }
        }
    }
    d.finish()
}

// Own stack frame, as `init_digest`. `raw(word, round)` makes a value from a random word.
#[inline(never)]
fn matvec_digest<S: Scalar, const O: usize, const I: usize>(
    seed: u64,
    raw: impl Fn(u32, u32) -> S,
) -> u64 {
    let mut d = Digest::default();
    matvec_rounds::<S, O, I>(seed, raw, |w, x| {
        let mut y = [S::ZERO; O];
        crate::matrix::matvec(w, x, &mut y, &mut NearestEven, &mut ());
        d.write_all(&y);
    });
    d.finish()
}

/// [`matvec_digest`]'s eight rounds of seeded `W` and `x`, each given to `f`.
fn matvec_rounds<S: Scalar, const O: usize, const I: usize>(
    seed: u64,
    raw: impl Fn(u32, u32) -> S,
    mut f: impl FnMut(&[[S; I]; O], &[S; I]),
) {
    use rand_core::Rng;
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    for round in 0..8 {
        let mut w = [[S::ZERO; I]; O];
        let mut x = [S::ZERO; I];
        w.as_flattened_mut()
            .iter_mut()
            .chain(x.iter_mut())
            .for_each(|v| *v = raw(rng.next_u32(), round));
        // The extremes, in the first round: every product of the most negative and the largest value with each
        // other.
        if round == 0 {
            let (lo, hi) = (S::MIN, S::MAX);
            for (k, v) in w.as_flattened_mut().iter_mut().enumerate() {
                *v = if k % 3 == 0 { hi } else { lo };
            }
            x.iter_mut().for_each(|v| *v = lo);
        }
        f(&w, &x);
    }
}

/// One digits sample: 64 pixels in 0..=16 and the label 0..=9 (the layout of scikit-learn's `digits.csv`).
pub type DigitSample = ([u8; 64], u8);

/// XOR's four samples: inputs ±0.9, target 1 when the signs differ.
pub const XOR: [([f64; 2], f64); 4] = [
    ([-0.9, -0.9], 0.0),
    ([-0.9, 0.9], 1.0),
    ([0.9, -0.9], 1.0),
    ([0.9, 0.9], 0.0),
];

/// Epochs of the XOR workload.
pub const XOR_EPOCHS: usize = 60;
/// Epochs of the digits workload.
pub const DIGITS_EPOCHS: usize = 8;
const XOR_LR: f64 = 1.0;
const DIGITS_LR: f64 = 0.1;
const DIGITS_BATCH: usize = 10;
/// Hidden units of the digits network (64-`DIGITS_HIDDEN`-10: small enough for a Cortex-M0's 16 KiB).
pub const DIGITS_HIDDEN: usize = 12;

fn digest_params<S: Scalar, P: Params<S> + ?Sized>(net: &mut P, d: &mut Digest) {
    net.visit(0, &mut |t| {
        d.write_all(t.value);
        d.write_all(t.grad);
    });
}

/// Initialize a two-layer network in place (it is not returned: a copy would double an MCU's stack frame):
/// weights from `inits`, zero biases, from one generator seeded with `seed`. Returns a digest that records an
/// initializer's refusal.
fn init_two<S: Scalar, const I: usize, const H: usize, const O: usize>(
    net: &mut (Dense<S, I, H>, Dense<S, H, O>),
    inits: [&Init; 2],
    seed: u64,
) -> Digest {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut d = Digest::default();
    let zeros = &Init::Zeros;
    if net
        .0
        .init(inits[0], zeros, &mut rng, &mut NearestEven, &mut ())
        .and_then(|()| {
            net.1
                .init(inits[1], zeros, &mut rng, &mut NearestEven, &mut ())
        })
        .is_err()
    {
        d.write_u64(u64::MAX);
    }
    d
}

/// Train a 2-8-1 tanh network on XOR with full-batch SGD (binary cross-entropy on the logit); `on_epoch`
/// sees each epoch's mean loss. Returns the digest of every loss and the final weights and gradients.
// Own stack frame, as `init_digest`.
#[inline(never)]
pub fn xor_run<S: Scalar, R: Rounding>(r: &mut R, on_epoch: &mut dyn FnMut(usize, f64)) -> u64
where
    Act: Activate<S>,
{
    let xavier = Init::XavierNormal { gain: 1.0 };
    let mut net = (
        Dense::<S, 2, 8>::new(Act::Tanh),
        Dense::<S, 8, 1>::new(Act::Identity),
    );
    let mut d = init_two(&mut net, [&xavier; 2], SEED ^ 0x0a0);
    let Ok(sgd) = Sgd::new(XOR_LR, 0.0) else {
        return u64::MAX;
    };
    let mut ctx = StepCtx::new(Loss::BceWithLogits, sgd, r);
    let data = FromFn {
        count: XOR.len(),
        sample: |k: usize| {
            let (x, t) = XOR.get(k)?;
            let q = |v: f64| S::from_f64(v, &mut NearestEven).0;
            Some((x.map(q), [q(*t)]))
        },
    };
    for epoch in 1..=XOR_EPOCHS {
        let report = step(&mut net, &data, &mut ctx, &mut ());
        if report.verdict != Verdict::Updated {
            d.write_u64(u64::MAX - 1);
        }
        d.write_u64(report.loss.to_bits());
        on_epoch(epoch, report.loss);
    }
    digest_params(&mut net, &mut d);
    d.finish()
}

/// Steps of the `byom` firmware's training (see [`train_batch`]).
pub const BYOM_EPOCHS: usize = 60;
/// Its learning rate for the dense models.
pub const BYOM_LR: f64 = 2.0;
/// Its learning rate for the recurrent model (an LSTM over 20 steps: smaller steps keep it stable).
pub const BYOM_LR_RECURRENT: f64 = 0.1;

/// Full-batch SGD (no momentum, nearest rounding) of any network on `count` samples from `sample`, for
/// `epochs` steps at learning rate `lr`: what the firmware's `byom` binary runs on a model emitted by
/// `gradscope inspect --emit-rust`, and the host runs on the same file. `on_epoch` sees each step's loss
/// (measured before its update). Returns the digest of every loss and the final weights and gradients
/// (`u64::MAX` for a learning rate SGD refuses).
// Own stack frame, as `init_digest`.
#[inline(never)]
pub fn train_batch<S, N, F, const OUT: usize>(
    net: &mut N,
    count: usize,
    sample: F,
    loss: Loss,
    epochs: usize,
    lr: f64,
    on_epoch: &mut dyn FnMut(usize, f64),
) -> u64
where
    S: Scalar,
    N: Layer<S, Output = [S; OUT]>,
    F: Fn(usize) -> Option<(N::Input, [S; OUT])>,
{
    let Ok(sgd) = Sgd::new(lr, 0.0) else {
        return u64::MAX;
    };
    let mut ctx = StepCtx::new(loss, sgd, NearestEven);
    let data = FromFn { count, sample };
    let mut d = Digest::default();
    for epoch in 1..=epochs {
        let report = step(net, &data, &mut ctx, &mut ());
        if report.verdict != Verdict::Updated {
            d.write_u64(u64::MAX - 1);
        }
        d.write_u64(report.loss.to_bits());
        on_epoch(epoch, report.loss);
    }
    digest_params(net, &mut d);
    d.finish()
}

fn pixels<S: Scalar>(p: &[u8; 64]) -> [S; 64] {
    p.map(|v| S::from_f64(v as f64 / 16.0, &mut NearestEven).0)
}

fn one_hot<S: Scalar>(label: u8) -> [S; 10] {
    let mut t = [S::ZERO; 10];
    if let Some(v) = t.get_mut(label as usize) {
        *v = S::from_f64(1.0, &mut NearestEven).0;
    }
    t
}

/// The index of the largest value (the first of equals).
fn argmax<S: Scalar, const N: usize>(y: &[S; N]) -> usize {
    y.iter()
        .enumerate()
        .fold((0usize, S::MIN), |b, (k, v)| {
            if v.to_f64() > b.1.to_f64() {
                (k, *v)
            } else {
                b
            }
        })
        .0
}

/// Train a 64-12-10 ReLU network on digits with minibatch SGD (batch 10, softmax cross-entropy), in the
/// samples' order; `on_epoch` sees each epoch's mean training loss and the accuracy on `test`. Returns the
/// digest of every epoch's loss and the final weights and gradients.
// Own stack frame, as `init_digest`.
#[inline(never)]
pub fn digits_run<'a, S: Scalar, R: Rounding>(
    train: &'a [DigitSample],
    test: &'a [DigitSample],
    r: &mut R,
    on_epoch: &mut dyn FnMut(usize, f64, f64),
) -> u64
where
    Act: Activate<S>,
{
    let he = Init::KaimingNormal {
        slope: 0.0,
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::Relu,
    };
    let xavier = Init::XavierNormal { gain: 1.0 };
    let mut net = (
        Dense::<S, 64, DIGITS_HIDDEN>::new(Act::Relu),
        Dense::<S, DIGITS_HIDDEN, 10>::new(Act::Identity),
    );
    let d = init_two(&mut net, [&he, &xavier], SEED ^ 0xd16);
    digits_train(
        &mut net,
        d,
        DIGITS_LR,
        (train, test),
        pixels::<S>,
        r,
        on_epoch,
    )
}

/// Train `net` on the digits subset for [`DIGITS_EPOCHS`] epochs (SGD at `lr`, batches of [`DIGITS_BATCH`],
/// softmax cross-entropy), each digit's pixels made an input by `input`; `on_epoch` sees each epoch's mean loss
/// and held-out accuracy. Continues digest `d` with every epoch's loss and the final parameters and gradients.
fn digits_train<'a, S, N, R>(
    net: &mut N,
    mut d: Digest,
    lr: f64,
    (train, test): (&'a [DigitSample], &'a [DigitSample]),
    input: fn(&[u8; 64]) -> N::Input,
    r: &mut R,
    on_epoch: &mut dyn FnMut(usize, f64, f64),
) -> u64
where
    S: Scalar,
    N: Layer<S, Output = [S; 10]>,
    R: Rounding,
{
    let Ok(sgd) = Sgd::new(lr, 0.0) else {
        return u64::MAX;
    };
    let mut ctx = StepCtx::new(Loss::SoftmaxCrossEntropy, sgd, r);
    let samples = |set: &'a [DigitSample]| FromFn {
        count: set.len(),
        sample: move |k: usize| {
            set.get(k)
                .map(|(p, label)| (input(p), one_hot::<S>(*label)))
        },
    };
    for epoch in 1..=DIGITS_EPOCHS {
        let mut loss = 0.0;
        for batch in train.chunks(DIGITS_BATCH) {
            let report = step(net, &samples(batch), &mut ctx, &mut ());
            if report.verdict != Verdict::Updated {
                d.write_u64(u64::MAX - 1);
            }
            loss += report.backprop.loss_sum;
        }
        let mean = loss / train.len().max(1) as f64;
        let (_, right) = evaluate(
            net,
            &samples(test),
            &Objective::new(Loss::SoftmaxCrossEntropy),
            &mut NearestEven,
            |y, t| argmax(y) == argmax(t),
        );
        d.write_u64(mean.to_bits());
        on_epoch(epoch, mean, right as f64 / test.len().max(1) as f64);
    }
    digest_params(net, &mut d);
    d.finish()
}

/// The parity CNN: a 3×3 `same` convolution of [`CNN_CHANNELS`] channels (ReLU, He-normal), 2×2 max pooling,
/// flattening and a linear layer to the 10 classes.
pub type DigitsCnn<S> = (
    Conv2d<S, 1, 8, 8, CNN_CHANNELS, 3, 8, 8, 1, 1>,
    (
        MaxPool2d<S, CNN_CHANNELS, 8, 8, 2, 4, 4>,
        (
            Flatten<[[[S; 4]; 4]; CNN_CHANNELS], { 16 * CNN_CHANNELS }>,
            Dense<S, { 16 * CNN_CHANNELS }, 10>,
        ),
    ),
);
/// Channels of the parity CNN's convolution.
pub const CNN_CHANNELS: usize = 2;
const CNN_LR: f64 = 0.1;

/// An image `[1][8][8]` from a digit's pixels.
fn image<S: Scalar>(p: &[u8; 64]) -> [[[S; 8]; 8]; 1] {
    let flat = pixels::<S>(p);
    let mut img = [[[S::ZERO; 8]; 8]; 1];
    for (d, v) in img
        .as_flattened_mut()
        .as_flattened_mut()
        .iter_mut()
        .zip(flat)
    {
        *d = v;
    }
    img
}

/// Train [`DigitsCnn`] on the digits subset for [`DIGITS_EPOCHS`] epochs (SGD, batches of 10, softmax
/// cross-entropy); `on_epoch` sees each epoch's mean loss and held-out accuracy. Returns the digest of every
/// epoch's loss and the final parameters and gradients. The network (about 4.4 KiB in a 32-bit format, most of
/// it the convolution's caches and the linear layer's weights and gradients) lives in this function's frame,
/// which exists only while it runs.
// Own stack frame, as `digits_run`.
#[inline(never)]
pub fn cnn_run<'a, S: Scalar, R: Rounding>(
    train: &'a [DigitSample],
    test: &'a [DigitSample],
    r: &mut R,
    on_epoch: &mut dyn FnMut(usize, f64, f64),
) -> u64
where
    Act: Activate<S>,
{
    let mut net = digits_cnn::<S>();
    let net = &mut net;
    let he = Init::KaimingNormal {
        slope: 0.0,
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::Relu,
    };
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(SEED ^ 0xc22);
    let mut d = Digest::default();
    let zeros = &Init::Zeros;
    let xavier = Init::XavierNormal { gain: 1.0 };
    if net
        .0
        .init(&he, zeros, &mut rng, &mut NearestEven, &mut ())
        .and_then(|()| {
            net.1
                .1
                .1
                .init(&xavier, zeros, &mut rng, &mut NearestEven, &mut ())
        })
        .is_err()
    {
        d.write_u64(u64::MAX);
    }
    digits_train(net, d, CNN_LR, (train, test), image::<S>, r, on_epoch)
}

/// A fresh [`DigitsCnn`] with zero weights.
pub fn digits_cnn<S: Scalar>() -> DigitsCnn<S> {
    (
        Conv2d::new(Act::Relu),
        (
            MaxPool2d::new(),
            (Flatten::new(), Dense::new(Act::Identity)),
        ),
    )
}

/// The training workloads in `f32`, `I16F16` and `I1F15` (round-to-nearest): XOR, and digits when samples
/// are given (the firmware keeps the first 200 of scikit-learn's digits in flash: 160 to train, 40 to test),
/// then the CNN ([`cnn_run`]) on the same digits in `f32` and `I16F16`.
/// Calls `emit("train/<task>", "<format>", digest)`; `on_epoch(task, format, epoch, loss, accuracy)` sees
/// every epoch (XOR's accuracy is NaN: it is not measured).
pub fn train_digests(
    digits: Option<(&[DigitSample], &[DigitSample])>,
    emit: &mut dyn FnMut(&str, &str, u64),
    on_epoch: &mut dyn FnMut(&str, &str, usize, f64, f64),
) {
    macro_rules! xor {
        ($s:ty, $name:expr) => {{
            let d = xor_run::<$s, _>(&mut NearestEven, &mut |e, l| {
                on_epoch("xor", $name, e, l, f64::NAN)
            });
            emit("train/xor", $name, d);
        }};
    }
    xor!(f32, "f32");
    xor!(I16F16, "I16F16");
    xor!(I1F15, "I1F15");
    if let Some((train, test)) = digits {
        macro_rules! digits {
            ($s:ty, $name:expr) => {{
                let d = digits_run::<$s, _>(train, test, &mut NearestEven, &mut |e, l, a| {
                    on_epoch("digits", $name, e, l, a)
                });
                emit("train/digits", $name, d);
            }};
        }
        digits!(f32, "f32");
        digits!(I16F16, "I16F16");
        digits!(I1F15, "I1F15");
        macro_rules! cnn {
            ($s:ty, $name:expr) => {{
                let d = cnn_run::<$s, _>(train, test, &mut NearestEven, &mut |e, l, a| {
                    on_epoch("cnn", $name, e, l, a)
                });
                emit("train/cnn", $name, d);
            }};
        }
        cnn!(f32, "f32");
        cnn!(I16F16, "I16F16");
    }
}

/// The same workloads in the 16-bit floats `f16` and `bf16` (sums in `f32`, round-to-nearest), with the same
/// seeds: every initializer, the backprop cases, XOR, and digits when samples are given. Calls
/// `emit(kind, name, format, digest)` with kind `init`, `backprop` or `train` (the line is
/// `digest <kind>/<name>/<format> <hex>`); `on_epoch` as in [`train_digests`]. A function of its own so that
/// the firmware can run it in a binary of its own: the micro:bit's 256 KiB of flash do not hold every
/// format's code in one image.
pub fn half_digests(
    digits: Option<(&[DigitSample], &[DigitSample])>,
    emit: &mut dyn FnMut(&str, &str, &str, u64),
    on_epoch: &mut dyn FnMut(&str, &str, usize, f64, f64),
) {
    fn one<S: Scalar>(
        format: &str,
        digits: Option<(&[DigitSample], &[DigitSample])>,
        emit: &mut dyn FnMut(&str, &str, &str, u64),
        on_epoch: &mut dyn FnMut(&str, &str, usize, f64, f64),
    ) where
        Act: Activate<S>,
    {
        for (k, name) in Init::NAMES.iter().enumerate() {
            let Ok(init) = Init::from_name(name) else {
                continue;
            };
            let d = init_digest::<S, _>(&init, SEED ^ k as u64, &mut NearestEven);
            emit("init", name, format, d);
        }
        for (k, (name, act, init)) in backprop_cases().iter().enumerate() {
            let seed = SEED ^ (0x100 + k as u64);
            let d = backprop_digest::<S, _>(*act, init, seed, &mut NearestEven);
            emit("backprop", name, format, d);
        }
        let d = xor_run::<S, _>(&mut NearestEven, &mut |e, l| {
            on_epoch("xor", format, e, l, f64::NAN)
        });
        emit("train", "xor", format, d);
        if let Some((train, test)) = digits {
            let d = digits_run::<S, _>(train, test, &mut NearestEven, &mut |e, l, a| {
                on_epoch("digits", format, e, l, a)
            });
            emit("train", "digits", format, d);
        }
    }
    one::<f16>("f16", digits, emit, on_epoch);
    one::<bf16>("bf16", digits, emit, on_epoch);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The I1F15 `kernel/matvec-*` workloads reach both of the Cortex-M4F's paths: blocks of four rows whose
    /// `SMLAD` sums (two products per step, in the order of `crate::dsp::dots_each`) stay within 32 bits, and
    /// blocks where one leaves them and the block is summed again in 64 bits.
    #[test]
    fn q15_matvec_workloads_overflow_32_bits_in_some_blocks() {
        fn count<const O: usize, const I: usize>(seed: u64, counts: &mut [u32; 2]) {
            let raw = |w: u32, _| I1F15::from_bits(w as i16);
            matvec_rounds::<I1F15, O, I>(seed, raw, |w, x| {
                for block in w.as_chunks::<4>().0 {
                    let over = block.iter().any(|row| {
                        let mut s = 0i64;
                        row.chunks(2).zip(x.chunks(2)).any(|(a, b)| {
                            let pair = a.iter().zip(b);
                            s += pair
                                .map(|(a, b)| i64::from(a.to_bits()) * i64::from(b.to_bits()))
                                .sum::<i64>();
                            i32::try_from(s).is_err()
                        })
                    });
                    counts[usize::from(over)] += 1;
                }
            });
        }
        // `kernel_digests`' seeds for I1F15: 1 for 16×16, 2 for 9×7 (3×64 has no block of four rows).
        let mut counts = [0; 2];
        count::<16, 16>(1, &mut counts);
        count::<9, 7>(2, &mut counts);
        assert!(
            counts[0] >= 1 && counts[1] >= 1,
            "{} blocks within 32 bits, {} beyond",
            counts[0],
            counts[1]
        );
    }

    /// The watched workload's 12-row product has a round whose last block of four rows (on the Cortex-M4F) puts
    /// no output on a bound while an earlier block does: there, a block that did not restore the sticky flag
    /// would lose the earlier saturations.
    #[test]
    fn watched_tall_product_needs_the_restore() {
        let (_, _, restores) = watched_digest(6);
        assert!(restores >= 1, "{restores} rounds");
    }

    /// The watched kernels' workload saturates often enough, in the matrix kernels, in the convolution and in
    /// the activations' gradients, to
    /// show whether a target reports saturations: on the host each narrowing tests its own value, the path the
    /// Cortex-M4F's sticky flag must match.
    #[test]
    fn watched_kernels_saturate() {
        let (_, [matrix, conv, act], _) = super::watched_digest(6);
        assert!(
            matrix >= 50 && conv >= 50 && act >= 30,
            "{matrix}, {conv} and {act} saturations"
        );
    }
}
