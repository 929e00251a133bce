//! Activations per backend, full SGD training steps, and global-norm clipping.
//! Run: `cargo bench --bench training` (BENCHMARKS.md has one run's numbers).
//!
//! - `activation_<backend>/<name>`: f(x) over 256 inputs spread over [−4, 4] (throughput in elements), for
//!   every activation, with backends `f32_libm`, `f32_micromath` (`FastAct`), `i16f16` and `i1f15` (tables).
//! - `train_step/<net>/<batch>`, function = precision: one SGD step (zero the gradients, forward and backward
//!   for every sample of the batch, update) for 4-8-8-1 tanh, 16-32-32-16 ReLU and eight 64-wide sigmoid
//!   layers (throughput in samples): `gradscope_core::train::step` at batch 1, and at batch 32
//!   `step_tiled` with the batch as one tile, beside `step` sample by sample as `<precision>_per_sample`
//!   (the same numbers, bit for bit).
//!   The function `nalgebra_f32` in the same groups is that step written with nalgebra `SMatrix` operations
//!   (module [`na`]): a batch as one matrix (a column per sample), forward, backward and SGD as matrix
//!   products, libm activations; the peer the host target compares against.
//! - `clip_grad_norm/4x32`: PyTorch's `clip_grad_norm_` (L2) over a 4-layer, 32-wide dense stack.
//!
//! Probes are off (`&mut ()`), as in a production step; seeded inputs.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gradscope_core::{
    Act, Activate, DenseStack, FastAct, I1F15, I16F16, Init, Layer, Loss, NearestEven, NormType,
    Objective, Scalar, Sgd, StepCtx, TileLayer, clip_grad_norm, step, step_tiled,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use std::hint::black_box;

mod common;
use common::{data, na, relu_net, tanh_net};
use std::time::Duration;

fn inputs<S: Scalar>() -> Vec<S> {
    (0..256)
        .map(|k| S::from_f64(-4.0 + 8.0 * k as f64 / 255.0, &mut NearestEven).0)
        .collect()
}

fn activations(c: &mut Criterion) {
    fn backend<S: Scalar, A: Activate<S>>(c: &mut Criterion, group: &str, wrap: impl Fn(Act) -> A) {
        let xs = inputs::<S>();
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(xs.len() as u64));
        for name in Act::NAMES {
            let Ok(act) = Act::from_name(name) else {
                continue;
            };
            let a = wrap(act);
            g.bench_function(name, |b| {
                b.iter(|| {
                    for &x in black_box(&xs) {
                        black_box(a.f(x, &mut NearestEven));
                    }
                })
            });
        }
        g.finish();
    }
    backend::<f32, Act>(c, "activation_f32_libm", |a| a);
    backend::<f32, FastAct>(c, "activation_f32_micromath", FastAct);
    backend::<I16F16, Act>(c, "activation_i16f16", |a| a);
    backend::<I1F15, Act>(c, "activation_i1f15", |a| a);
}

fn train_steps(c: &mut Criterion) {
    // Boxed: the 8×64 stack with its gradients and caches is too big to move around on the stack.
    #[allow(clippy::boxed_local)]
    fn bench<S, N, const I: usize, const O: usize>(
        c: &mut Criterion,
        net_name: &str,
        name: &str,
        mut net: Box<N>,
    ) where
        S: Scalar,
        N: TileLayer<S, Input = [S; I], Output = [S; O]>,
    {
        let mut ctx = StepCtx::new(Loss::Mse, Sgd::new(1e-3, 0.0).expect("lr"), NearestEven);
        let mut tile = Box::new(net.tile::<32>());
        for batch in [1usize, 32] {
            let samples = data::<S, I, O>(batch);
            let mut g = c.benchmark_group(format!("train_step/{net_name}/{batch}"));
            g.throughput(Throughput::Elements(batch as u64));
            if batch == 1 {
                g.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| step(&mut *net, black_box(samples.as_slice()), &mut ctx, &mut ()))
                });
            } else {
                g.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| {
                        let batch = black_box(samples.as_slice());
                        step_tiled(&mut *net, &mut *tile, batch, &mut ctx, &mut ())
                    })
                });
                g.bench_function(
                    BenchmarkId::from_parameter(format!("{name}_per_sample")),
                    |b| {
                        b.iter(|| step(&mut *net, black_box(samples.as_slice()), &mut ctx, &mut ()))
                    },
                );
            }
            g.finish();
        }
    }
    fn nets<S: Scalar>(c: &mut Criterion, name: &str)
    where
        Act: Activate<S>,
    {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(4);
        let small = tanh_net::<S>(&mut rng);
        bench::<S, _, 4, 1>(c, "4-8-8-1_tanh", name, small);
        let relu = relu_net::<S>(&mut rng);
        bench::<S, _, 16, 16>(c, "16-32-32-16_relu", name, relu);
        let mut deep: Box<DenseStack<S, 64, 8>> = Box::new(DenseStack::new(Act::Sigmoid, 8));
        deep.init(
            &Init::XavierNormal { gain: 1.0 },
            &Init::Zeros,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .expect("init");
        bench::<S, _, 64, 64>(c, "8x64_sigmoid", name, deep);
    }
    nets::<f32>(c, "f32");
    nets::<I16F16>(c, "i16f16");
    nets::<I1F15>(c, "i1f15");
}

fn clipping(c: &mut Criterion) {
    fn bench<S: Scalar>(c: &mut Criterion, name: &str)
    where
        Act: Activate<S>,
    {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(5);
        let mut net: Box<DenseStack<S, 32, 4>> = Box::new(DenseStack::new(Act::Tanh, 4));
        net.init(
            &Init::XavierNormal { gain: 1.0 },
            &Init::Zeros,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .expect("init");
        // Real gradients from one backward pass, then clipped below their norm so every call rescales.
        let samples = data::<S, 32, 32>(4);
        for (x, t) in &samples {
            let y = net.forward(x, 0, &mut NearestEven, &mut ());
            let mut dy = [S::ZERO; 32];
            Objective::new(Loss::Mse).grad(&y, t, 1.0 / 4.0, &mut dy, &mut NearestEven, &mut ());
            net.backward(&dy, 0, &mut NearestEven, &mut ());
        }
        let saved = net.clone();
        let mut g = c.benchmark_group("clip_grad_norm/4x32");
        g.throughput(Throughput::Elements(4 * (32 * 32 + 32)));
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || saved.clone(),
                |n| {
                    black_box(clip_grad_norm(
                        &mut **n,
                        1e-3,
                        NormType::L2,
                        false,
                        &mut NearestEven,
                        &mut (),
                    ))
                },
                criterion::BatchSize::SmallInput,
            )
        });
        g.finish();
    }
    bench::<f32>(c, "f32");
    bench::<I16F16>(c, "i16f16");
    bench::<I1F15>(c, "i1f15");
}

/// The nalgebra-written f32 step beside gradscope's in each `train_step/<net>/<batch>` group.
fn nalgebra_steps(c: &mut Criterion) {
    use na::{Act, Dense, mse};
    use nalgebra::SMatrix;
    use rand_core::Rng;

    fn data<const I: usize, const O: usize, const B: usize>()
    -> (SMatrix<f32, I, B>, SMatrix<f32, O, B>) {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(9);
        let mut u = move || rng.next_u32() as f32 / u32::MAX as f32 - 0.5;
        (SMatrix::from_fn(|_, _| u()), SMatrix::from_fn(|_, _| u()))
    }
    fn run(c: &mut Criterion, group: String, mut step: impl FnMut() -> f32) {
        let mut g = c.benchmark_group(group);
        g.bench_function(BenchmarkId::from_parameter("nalgebra_f32"), |b| {
            b.iter(|| black_box(step()))
        });
        g.finish();
    }
    fn three<const I: usize, const H: usize, const O: usize, const B: usize>(
        c: &mut Criterion,
        name: &str,
        hidden: Act,
    ) {
        let (x, t) = data::<I, O, B>();
        let (mut l1, mut l2, mut l3) = (
            Dense::<I, H, B>::new(hidden, 1),
            Dense::<H, H, B>::new(hidden, 2),
            Dense::<H, O, B>::new(Act::Identity, 3),
        );
        run(c, format!("train_step/{name}/{B}"), || {
            let y = l3.forward(&l2.forward(&l1.forward(black_box(&x))));
            let (loss, dy) = mse(&y, &t);
            l1.backward(&l2.backward(&l3.backward(&dy)));
            l1.sgd(1e-3);
            l2.sgd(1e-3);
            l3.sgd(1e-3);
            loss
        });
    }
    fn deep<const B: usize>(c: &mut Criterion) {
        let (x, t) = data::<64, 64, B>();
        let mut layers: Vec<Box<Dense<64, 64, B>>> =
            (0..8).map(|k| Dense::new(Act::Sigmoid, 10 + k)).collect();
        run(c, format!("train_step/8x64_sigmoid/{B}"), || {
            let mut h = *black_box(&x);
            for l in layers.iter_mut() {
                h = l.forward(&h);
            }
            let (loss, mut d) = mse(&h, &t);
            for l in layers.iter_mut().rev() {
                d = l.backward(&d);
            }
            for l in layers.iter_mut() {
                l.sgd(1e-3);
            }
            loss
        });
    }
    three::<4, 8, 1, 1>(c, "4-8-8-1_tanh", Act::Tanh);
    three::<4, 8, 1, 32>(c, "4-8-8-1_tanh", Act::Tanh);
    three::<16, 32, 16, 1>(c, "16-32-32-16_relu", Act::Relu);
    three::<16, 32, 16, 32>(c, "16-32-32-16_relu", Act::Relu);
    deep::<1>(c);
    deep::<32>(c);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! { name = benches; config = config(); targets = activations, train_steps, nalgebra_steps, clipping }
criterion_main!(benches);
