//! Deterministic workloads whose digests must be equal on every target (host, Cortex-M4F, Cortex-M0).
//!
//! The host (`gradscope firmware-digests`) and the firmware run the same functions and print one line per
//! workload, `digest <name> <hex>`; a test runs the firmware under QEMU and compares the lines. A digest is
//! FNV-1a (64-bit) over the storage bits of every value, so any difference in a single bit shows.

use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

use crate::activation::{Act, Activate};
use crate::fixed::{I1F15, I16F16};
use crate::init::{FanMode, Init, Nonlinearity, init_matrix, init_slice};
use crate::layer::{DenseStack, Layer};
use crate::loss::{Loss, loss_grad};
use crate::net::Params;
use crate::round::{NearestEven, Rounding, Stochastic};
use crate::scalar::Scalar;

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
        let loss = loss_grad(Loss::Mse, &y, &t, 4, &mut dy, r, &mut ());
        d.write_u64(loss.to_bits());
        let dx = net.backward(&dy, 0, r, &mut ());
        d.write_all(&dx);
    }
    net.visit(&mut |t| {
        d.write_all(t.value);
        d.write_all(t.grad);
    });
    d.finish()
}

/// Backpropagation through an 8-layer, 8-wide dense stack (MSE, batch of 4 accumulated), for sigmoid and
/// ReLU under Xavier and He init, in `f32`, `I16F16` (nearest and stochastic rounding) and `I1F15`: the
/// digest covers the loss, every input gradient, and every final weight and gradient. Calls
/// `emit("backprop/<act>-<init>", "<format>", digest)`.
pub fn backprop_digests(emit: &mut dyn FnMut(&str, &str, u64)) {
    let he = Init::KaimingNormal {
        slope: 0.0,
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::Relu,
    };
    let cases: [(&str, Act, Init); 4] = [
        (
            "sigmoid-xavier",
            Act::Sigmoid,
            Init::XavierNormal { gain: 1.0 },
        ),
        ("sigmoid-he", Act::Sigmoid, he),
        ("relu-xavier", Act::Relu, Init::XavierNormal { gain: 1.0 }),
        ("relu-he", Act::Relu, he),
    ];
    for (k, (name, act, init)) in cases.iter().enumerate() {
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
