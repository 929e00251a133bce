//! Kernel throughput side by side with nalgebra, the cost of observing numeric events, and convolution.
//! Run: `cargo bench --bench kernels` (BENCHMARKS.md has one run's numbers).
//!
//! Groups `conv_<type>/4x8x8`: a 3×3 `same` convolution of 4 channels of 8×8 into 4 (the CNN experiment's
//! body layer), the core's forward and backward passes (identity activation, probes off) beside
//! `f32_reference`, a plain f32 direct convolution written here (zero-padded input, no rounding, no events);
//! throughput in multiply-accumulates of the forward pass (4·4·9·64, padding included).
//!
//! Groups `matvec_<type>/N` and `matmul_<type>/N` for N ∈ {4, 8, 16, 32, 64}; throughput in scalar operations
//! (2·N² for matvec, 2·N³ for matmul). In the f32 groups `nalgebra` is `SMatrix<f32, N, N>`; nalgebra has no
//! fixed point, so in the I16F16 and I1F15 groups its entry multiplies the raw `i32`/`i16` values (wrapping, no
//! rounding, no saturation, no flags): the cost of plain integer arithmetic, a lower bound, not the same result.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gradscope_core::{EventCounts, I1F15, I16F16, Layer, NearestEven, Scalar, matrix};
use nalgebra::{SMatrix, SVector};
use num_traits::Zero;
use std::hint::black_box;
use std::time::Duration;

mod common;
use common::{CONV_C, conv_setup, fill};

/// The nalgebra operand for a gradscope scalar: the float itself, or the raw integer of a fixed-point value.
trait Raw: Scalar {
    type N: nalgebra::Scalar
        + Copy
        + num_traits::Zero
        + num_traits::One
        + nalgebra::ClosedAddAssign
        + nalgebra::ClosedMulAssign;
    fn raw(self) -> Self::N;
}

impl Raw for f32 {
    type N = f32;
    fn raw(self) -> f32 {
        self
    }
}

impl Raw for I16F16 {
    type N = i32;
    fn raw(self) -> i32 {
        self.to_bits()
    }
}

impl Raw for I1F15 {
    type N = i16;
    fn raw(self) -> i16 {
        self.to_bits()
    }
}

fn group_name(kind: &str, s: &str, n: usize) -> String {
    format!("{kind}_{}/{n}", s.to_lowercase())
}

fn matvec_for<S: Raw, const N: usize>(c: &mut Criterion) {
    let w: [[S; N]; N] = fill(1);
    let [x]: [[S; N]; 1] = fill(2);
    let mut y = [S::ZERO; N];
    let a = SMatrix::<S::N, N, N>::from_fn(|i, j| w[i][j].raw());
    let v = SVector::<S::N, N>::from_fn(|i, _| x[i].raw());
    let mut g = c.benchmark_group(group_name("matvec", S::NAME, N));
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
    g.bench_function("nalgebra", |b| {
        b.iter(|| black_box(black_box(&a) * black_box(&v)))
    });
    g.finish();
}

fn matmul_for<S: Raw, const N: usize>(c: &mut Criterion) {
    let a: [[S; N]; N] = fill(3);
    let bm: [[S; N]; N] = fill(4);
    let mut out = [[S::ZERO; N]; N];
    let na = SMatrix::<S::N, N, N>::from_fn(|i, j| a[i][j].raw());
    let nb = SMatrix::<S::N, N, N>::from_fn(|i, j| bm[i][j].raw());
    let mut g = c.benchmark_group(group_name("matmul", S::NAME, N));
    g.throughput(Throughput::Elements((2 * N * N * N) as u64));
    g.bench_function("gradscope", |b| {
        b.iter(|| {
            matrix::matmul(
                black_box(&a),
                black_box(&bm),
                &mut out,
                &mut NearestEven,
                &mut (),
            );
            black_box(&out);
        })
    });
    g.bench_function("nalgebra", |b| {
        b.iter(|| black_box(black_box(&na) * black_box(&nb)))
    });
    g.finish();
}

fn sizes<S: Raw>(c: &mut Criterion) {
    matvec_for::<S, 4>(c);
    matvec_for::<S, 8>(c);
    matvec_for::<S, 16>(c);
    matvec_for::<S, 32>(c);
    matvec_for::<S, 64>(c);
    matmul_for::<S, 4>(c);
    matmul_for::<S, 8>(c);
    matmul_for::<S, 16>(c);
    matmul_for::<S, 32>(c);
    matmul_for::<S, 64>(c);
}

fn kernels(c: &mut Criterion) {
    sizes::<f32>(c);
    sizes::<I16F16>(c);
    sizes::<I1F15>(c);
}

/// The probe's cost: the same 32×32 matvec as a plain loop (no flags, no rounding: for fixed point the raw
/// integers' wrapping products, as nalgebra's entry above), through gradscope with the probe off (`&mut ()`),
/// and with a counting probe.
fn probe_cost_for<S: Raw>(c: &mut Criterion) {
    const N: usize = 32;
    let w: [[S; N]; N] = fill(3);
    let [x]: [[S; N]; 1] = fill(4);
    let (wr, xr): ([[S::N; N]; N], [S::N; N]) = (w.map(|r| r.map(S::raw)), x.map(S::raw));
    let mut y = [S::ZERO; N];
    let mut g = c.benchmark_group(group_name("probe_cost", S::NAME, N));
    g.throughput(Throughput::Elements((2 * N * N) as u64));
    g.bench_function("plain_loop", |b| {
        let mut yr = [S::N::zero(); N];
        b.iter(|| {
            let (w, x) = (black_box(&wr), black_box(&xr));
            for (yo, row) in yr.iter_mut().zip(w) {
                *yo = row
                    .iter()
                    .zip(x)
                    .fold(S::N::zero(), |acc, (&a, &b)| acc + a * b);
            }
            black_box(&yr);
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

fn probe_cost(c: &mut Criterion) {
    probe_cost_for::<f32>(c);
    probe_cost_for::<I16F16>(c);
    probe_cost_for::<I1F15>(c);
}

/// A 3×3 `same` convolution of `C` channels of 8×8 into `C`, as a plain f32 loop over a zero-padded copy.
fn conv_reference<const C: usize>(
    w: &[[[[f32; 3]; 3]; C]; C],
    b: &[f32; C],
    x: &[[[f32; 8]; 8]; C],
) -> [[[f32; 8]; 8]; C] {
    let mut xp = [[[0.0f32; 10]; 10]; C];
    for (p, c) in xp.iter_mut().zip(x) {
        for (pr, r) in p.iter_mut().skip(1).zip(c) {
            pr[1..9].copy_from_slice(r);
        }
    }
    let mut y = [[[0.0f32; 8]; 8]; C];
    for ((yf, wf), bf) in y.iter_mut().zip(w).zip(b) {
        for (oy, row) in yf.iter_mut().enumerate() {
            for (ox, out) in row.iter_mut().enumerate() {
                let mut s = 0.0;
                for (wc, pc) in wf.iter().zip(&xp) {
                    for (ky, wr) in wc.iter().enumerate() {
                        for (kx, wv) in wr.iter().enumerate() {
                            s += wv * pc[oy + ky][ox + kx];
                        }
                    }
                }
                *out = s + bf;
            }
        }
    }
    y
}

fn conv_for<S: Scalar>(c: &mut Criterion)
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    const C: usize = CONV_C;
    let (mut conv, x) = conv_setup::<S>();
    let dy = x;
    let mut g = c.benchmark_group(format!("conv_{}/{C}x8x8", S::NAME.to_lowercase()));
    g.throughput(Throughput::Elements((C * C * 9 * 64) as u64));
    g.bench_function("forward", |b| {
        b.iter(|| black_box(conv.forward(black_box(&x), 0, &mut NearestEven, &mut ())))
    });
    conv.forward(&x, 0, &mut NearestEven, &mut ());
    g.bench_function("backward", |b| {
        b.iter(|| black_box(conv.backward(black_box(&dy), 0, &mut NearestEven, &mut ())))
    });
    if S::NAME == "f32" {
        let w = conv
            .weight
            .map(|f| f.map(|c| c.map(|r| r.map(|v| v.to_f64() as f32))));
        let bias = [0.0f32; C];
        let xf = x.map(|c| c.map(|r| r.map(|v| v.to_f64() as f32)));
        g.bench_function("f32_reference", |b| {
            b.iter(|| {
                black_box(conv_reference(
                    black_box(&w),
                    black_box(&bias),
                    black_box(&xf),
                ))
            })
        });
    }
    g.finish();
}

fn conv(c: &mut Criterion) {
    conv_for::<f32>(c);
    conv_for::<I16F16>(c);
    conv_for::<I1F15>(c);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! { name = benches; config = config(); targets = kernels, probe_cost, conv }
criterion_main!(benches);
