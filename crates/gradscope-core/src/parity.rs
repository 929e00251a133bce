//! Deterministic workloads whose digests must be equal on every target (host, Cortex-M4F, Cortex-M0).
//!
//! The host (`gradscope firmware-digests`) and the firmware run the same functions and print one line per
//! workload, `digest <name> <hex>`; a test runs the firmware under QEMU and compares the lines. A digest is
//! FNV-1a (64-bit) over the storage bits of every value, so any difference in a single bit shows.

use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

use crate::fixed::{I1F15, I16F16};
use crate::init::{Init, init_matrix};
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
