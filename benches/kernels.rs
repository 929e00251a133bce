//! Kernel throughput per scalar type. Run: `cargo bench --bench kernels`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gradscope_core::{EventCounts, I1F15, I16F16, NearestEven, Scalar, matrix};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;
use std::hint::black_box;

fn fill<S: Scalar, const I: usize, const O: usize>(seed: u64) -> [[S; I]; O] {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    core::array::from_fn(|_| {
        core::array::from_fn(|_| {
            let u = rng.next_u32() as f64 / u32::MAX as f64;
            S::from_f64(u - 0.5, &mut NearestEven).0
        })
    })
}

fn matvec_for<S: Scalar, const N: usize>(c: &mut Criterion) {
    let w: [[S; N]; N] = fill(1);
    let [x]: [[S; N]; 1] = fill(2);
    let mut y = [S::ZERO; N];
    let mut g = c.benchmark_group(format!("matvec_{}/{N}", S::NAME.to_lowercase()));
    g.throughput(Throughput::Elements((2 * N * N) as u64));
    g.bench_function("gradscope", |b| {
        b.iter(|| {
            matrix::matvec(
                black_box(&w),
                black_box(&x),
                &mut y,
                &mut NearestEven,
                &mut (),
            );
            black_box(&y);
        })
    });
    g.finish();
}

/// The probe's cost: the same f32 matvec as a plain loop (no flags at all), through gradscope with the probe
/// off (`&mut ()`), and with a counting probe. Off should match plain: the flag computations are dead code.
fn probe_cost(c: &mut Criterion) {
    const N: usize = 32;
    let w: [[f32; N]; N] = fill(3);
    let [x]: [[f32; N]; 1] = fill(4);
    let mut y = [0.0f32; N];
    let mut g = c.benchmark_group(format!("probe_cost_f32/{N}"));
    g.throughput(Throughput::Elements((2 * N * N) as u64));
    g.bench_function("plain_loop", |b| {
        b.iter(|| {
            let (w, x) = (black_box(&w), black_box(&x));
            for (yo, row) in y.iter_mut().zip(w) {
                *yo = row.iter().zip(x).fold(0.0, |acc, (&a, &b)| acc + a * b);
            }
            black_box(&y);
        })
    });
    g.bench_function("probe_off", |b| {
        b.iter(|| {
            matrix::matvec(
                black_box(&w),
                black_box(&x),
                &mut y,
                &mut NearestEven,
                &mut (),
            );
            black_box(&y);
        })
    });
    let mut counts = EventCounts::default();
    g.bench_function("event_counts", |b| {
        b.iter(|| {
            matrix::matvec(
                black_box(&w),
                black_box(&x),
                &mut y,
                &mut NearestEven,
                &mut counts,
            );
            black_box(&y);
        })
    });
    g.finish();
}

fn kernels(c: &mut Criterion) {
    matvec_for::<f32, 16>(c);
    matvec_for::<I16F16, 16>(c);
    matvec_for::<I1F15, 16>(c);
}

criterion_group!(benches, kernels, probe_cost);
criterion_main!(benches);
