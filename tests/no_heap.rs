//! No heap allocation inside any benchmarked kernel or training step: a counting global allocator sees zero
//! allocations while they run (the bench targets in `benches/` use the same kernels).

use gradscope_core::{
    Act, Activate, DenseStack, I1F15, I16F16, Init, Layer, Loss, NearestEven, NormType, Scalar,
    Sgd, clip_grad_norm, loss_grad, matrix,
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
    // A full SGD training step on a 4-layer, 16-wide stack, with clipping.
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
    let region = Region::new(GLOBAL);
    for _ in 0..3 {
        net.zero_grad();
        let out = net.forward(&x, 0, &mut NearestEven, &mut ());
        let mut dy = [S::ZERO; 16];
        acc += loss_grad(Loss::Mse, &out, &y, 1, &mut dy, &mut NearestEven, &mut ());
        net.backward(&dy, 0, &mut NearestEven, &mut ());
        acc += clip_grad_norm(
            &mut *net,
            1.0,
            NormType::L2,
            false,
            &mut NearestEven,
            &mut (),
        )
        .unwrap_or(0.0);
        Sgd::new(0.01, 0.0)
            .unwrap()
            .step(&mut *net, &mut NearestEven, &mut ())
            .unwrap();
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

#[test]
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
