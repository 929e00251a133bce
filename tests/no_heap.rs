//! No heap allocation inside any benchmarked kernel or training step (dense stacks, per sample and tiled, and a CNN): a counting global allocator sees zero
//! allocations while they run (the bench targets in `benches/` use the same kernels).

use gradscope_core::{
    Act, Activate, Adam, AdamParams, Clip, DenseStack, I1F15, I16F16, Init, LayerStats, Loss,
    LossScaler, NearestEven, Scalar, Sgd, StepCtx, TileLayer, matrix, step, step_tiled,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn workload<S: Scalar>() -> f64
where
    Act: Activate<S>,
{
    let q = |v: f64| S::from_f64(v, &mut NearestEven).0;
    let w: [[S; 16]; 16] = core::array::from_fn(|i| {
        core::array::from_fn(|j| q(((i * 7 + j * 3) % 11) as f64 / 40.0 - 0.1))
    });
    let x: [S; 16] = core::array::from_fn(|i| q(i as f64 / 32.0));
    let mut y = [S::ZERO; 16];
    let mut c = [[S::ZERO; 16]; 16];
    let mut acc = 0.0;
    matrix::matvec(&w, &x, &mut y, &mut NearestEven, &mut ());
    matrix::matmul(&w, &w, &mut c, &mut NearestEven, &mut ());
    acc += matrix::dot(&x, &x, &mut NearestEven, &mut ()).to_f64()
        + matrix::l2_norm(&y, &mut ()).to_f64();
    for a in Act::all() {
        let (v, _) = a.f(x[3], &mut NearestEven);
        acc += a.df(x[3], v, &mut NearestEven).0.to_f64();
    }
    // Full training steps (forward, loss, backward, global-norm clipping, update, per-layer statistics) on a
    // 4-layer, 16-wide stack, with each optimizer; their state lives in arrays.
    let mut net: Box<DenseStack<S, 16, 4>> = Box::new(DenseStack::new(Act::Tanh, 4));
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(1);
    net.init(
        &Init::XavierUniform { gain: 1.0 },
        &Init::Zeros,
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    const PARAMS: usize = 4 * (16 * 16 + 16);
    let data = [(x, y)];
    let mut stats = [LayerStats::default(); 4];
    let sgd = Sgd::with_momentum(0.01, 0.9, 0.0, [S::ZERO; PARAMS]).unwrap();
    let adam = Adam::new(AdamParams::adamw(0.01, 0.01), [S::ZERO; 2 * PARAMS]).unwrap();
    let mut tile = Box::new(net.tile::<2>());
    let region = Region::new(GLOBAL);
    let mut ctx = StepCtx::new(Loss::Mse, sgd, NearestEven);
    ctx.clip = Clip::Global(1.0);
    for _ in 0..3 {
        acc += step(&mut *net, &data[..], &mut ctx, &mut stats).loss;
    }
    let mut ctx = StepCtx::new(Loss::Mse, adam, NearestEven);
    ctx.scaler = Some(LossScaler::dynamic(256.0, 2).unwrap());
    for _ in 0..3 {
        acc += step(&mut *net, &data[..], &mut ctx, &mut ()).loss;
    }
    // Tiled steps, with the tile cache made before the region (a caller's buffer, like the network).
    let tiled = [(x, y); 5];
    let mut ctx = StepCtx::new(Loss::Mse, Sgd::new(0.01, 0.0).unwrap(), NearestEven);
    for _ in 0..2 {
        acc += step_tiled(&mut *net, &mut *tile, &tiled[..], &mut ctx, &mut stats).loss;
    }
    // A CNN's training steps: convolution, max pooling, flattening and a linear head (the firmware's).
    let mut cnn = gradscope_core::parity::digits_cnn::<S>();
    let mut t = [S::ZERO; 10];
    t[2] = q(1.0);
    let images = [([[[q(0.25); 8]; 8]; 1], t)];
    let mut ctx = StepCtx::new(
        Loss::SoftmaxCrossEntropy,
        Sgd::new(0.01, 0.0).unwrap(),
        NearestEven,
    );
    for _ in 0..2 {
        acc += step(&mut cnn, &images[..], &mut ctx, &mut ()).loss;
    }
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{} allocated in a training step",
        S::NAME
    );
    acc
}

/// Run without libtest (`harness = false` in Cargo.toml): the counting allocator counts every thread's
/// allocations, and libtest's threads may allocate while a test runs, so this process has only its main thread.
fn main() {
    kernels_and_training_steps_do_not_allocate();
    println!(
        "no_heap: kernels and training steps in f32, I16F16 and I1F15 made no heap allocation"
    );
}

fn kernels_and_training_steps_do_not_allocate() {
    // Measure the kernels themselves in their own region (the setup above allocated the Box only).
    let region = Region::new(GLOBAL);
    let w: [[f32; 16]; 16] = [[0.01; 16]; 16];
    let mut y = [0.0f32; 16];
    matrix::matvec(&w, &[1.0; 16], &mut y, &mut NearestEven, &mut ());
    let mut c = [[0.0f32; 16]; 16];
    matrix::matmul(&w, &w, &mut c, &mut NearestEven, &mut ());
    assert_eq!(region.change().allocations, 0);
    assert!(workload::<f32>().is_finite());
    assert!(workload::<I16F16>().is_finite());
    assert!(workload::<I1F15>().is_finite());
}
