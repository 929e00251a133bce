//! Deterministic instruction counts on the host: valgrind's callgrind through gungraun, so kernel and
//! training-step ratios do not depend on a noisy machine (criterion measures time in `kernels` and `training`).
//!
//! Run: `bash ci/host-instructions.sh` (installs valgrind and the matching `gungraun-runner`, then
//! `cargo bench --bench instructions`); `python3 ci/figures.py` puts the counts into BENCHMARKS.md.
//!
//! - `matvec_32/*`, `matmul_32/*`: 32×32 kernels per format, nalgebra's f32 `SMatrix` beside ours, and the
//!   counting probe (`EventCounts`) beside the probe off; `matvec_16`, `matmul_64`, ...: f32 at 16×16 and
//!   64×64, ours and nalgebra's;
//! - `step_16_32_32_16/*`, `step_4_8_8_1/*`: one SGD step of the 16-32-32-16 ReLU and 4-8-8-1 tanh nets of
//!   the `training` bench at batch 1 and 32, per format, and the same step written with nalgebra;
//! - `conv_4x8x8_forward/*`, `conv_4x8x8_backward/*`: the `kernels` bench's 3×3 `same` convolution of 4
//!   channels of 8×8 into 4 per format, probe off (the backward pass after one forward pass in the setup).
//!
//! Only the measured call is counted. Setup (data, weights, contexts, output buffers, and one warm-up step
//! before a counted training step) runs before it. Every benchmark gets its inputs and outputs in one heap box,
//! works on them through references and hands the box back, and gungraun's `teardown` drops it: no count
//! includes a copy of a by-value argument, an allocation or a free, which would differ between our calling
//! shapes and nalgebra's rather than between the kernels.

use gradscope_core::{
    EventCounts, I1F15, I16F16, Layer, Loss, NearestEven, Probe, Scalar, Sgd, StepCtx, StepReport,
    TileLayer, matrix, step, step_tiled,
};
use gungraun::{LibraryBenchmarkConfig, library_benchmark, library_benchmark_group, main};
use nalgebra::{SMatrix, SVector};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;
use std::hint::black_box;

mod common;
use common::{Conv, Planes, ReluNet, TanhNet, conv_setup, data, fill, na, relu_net, tanh_net};

/// The size of the kernels counted in every format; f32 is also counted at 16 and 64, beside nalgebra.
const N: usize = 32;

type Square<S, const M: usize> = [[S; M]; M];

/// `W`, `x` and the output `y` of an M×M matvec.
type Mv<S, const M: usize = N> = Box<(Square<S, M>, [S; M], [S; M])>;
/// `A`, `B` and the output `C` of an M×M matmul.
type Mm<S, const M: usize = N> = Box<(Square<S, M>, Square<S, M>, Square<S, M>)>;

fn matvec_input<S: Scalar, const M: usize>() -> Mv<S, M> {
    let [x]: [[S; M]; 1] = fill(2);
    Box::new((fill(1), x, [S::ZERO; M]))
}

fn matmul_input<S: Scalar, const M: usize>() -> Mm<S, M> {
    Box::new((fill(1), fill(2), [[S::ZERO; M]; M]))
}

fn matvec<S: Scalar, P: Probe, const M: usize>(mut io: Mv<S, M>, p: &mut P) -> Mv<S, M> {
    let (w, x, y) = &mut *io;
    matrix::matvec(black_box(&*w), black_box(&*x), y, &mut NearestEven, p);
    io
}

fn matvec_off<S: Scalar, const M: usize>(io: Mv<S, M>) -> Mv<S, M> {
    matvec(io, &mut ())
}

fn matmul<S: Scalar, const M: usize>(mut io: Mm<S, M>) -> Mm<S, M> {
    let (a, b, c) = &mut *io;
    matrix::matmul(black_box(&*a), black_box(&*b), c, &mut NearestEven, &mut ());
    io
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = matvec_input::<f32, N>)]
#[bench::i16f16(setup = matvec_input::<I16F16, N>)]
#[bench::i1f15(setup = matvec_input::<I1F15, N>)]
fn matvec_32<S: Scalar>(io: Mv<S>) -> Mv<S> {
    matvec_off(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = matvec_input::<f32, N>)]
#[bench::i16f16(setup = matvec_input::<I16F16, N>)]
#[bench::i1f15(setup = matvec_input::<I1F15, N>)]
fn matvec_32_counted<S: Scalar>(io: Mv<S>) -> (Mv<S>, EventCounts) {
    let mut counts = EventCounts::default();
    let io = matvec(io, &mut counts);
    (io, counts)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = matmul_input::<f32, N>)]
#[bench::i16f16(setup = matmul_input::<I16F16, N>)]
#[bench::i1f15(setup = matmul_input::<I1F15, N>)]
fn matmul_32<S: Scalar>(io: Mm<S>) -> Mm<S> {
    matmul(io)
}

/// nalgebra's `W`, `x` and output `y`: the same values as [`matvec_input`]'s.
type NaMv<const M: usize> = Box<(SMatrix<f32, M, M>, SVector<f32, M>, SVector<f32, M>)>;
/// nalgebra's `A`, `B` and output `C`: the same values as [`matmul_input`]'s.
type NaMm<const M: usize> = Box<(SMatrix<f32, M, M>, SMatrix<f32, M, M>, SMatrix<f32, M, M>)>;

fn na_matvec_input<const M: usize>() -> NaMv<M> {
    let (w, x, _) = *matvec_input::<f32, M>();
    Box::new((
        SMatrix::from_fn(|i, j| w[i][j]),
        SVector::from_fn(|i, _| x[i]),
        SVector::zeros(),
    ))
}

fn na_matmul_input<const M: usize>() -> NaMm<M> {
    let (a, b, _) = *matmul_input::<f32, M>();
    Box::new((
        SMatrix::from_fn(|i, j| a[i][j]),
        SMatrix::from_fn(|i, j| b[i][j]),
        SMatrix::zeros(),
    ))
}

// `mul_to` is the product `a * v` (or `a * b`) computes, written into a given output rather than returned.
fn na_matvec<const M: usize>(mut io: NaMv<M>) -> NaMv<M> {
    let (a, v, y) = &mut *io;
    black_box(&*a).mul_to(black_box(&*v), y);
    io
}

fn na_matmul<const M: usize>(mut io: NaMm<M>) -> NaMm<M> {
    let (a, b, c) = &mut *io;
    black_box(&*a).mul_to(black_box(&*b), c);
    io
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = na_matvec_input::<N>)]
fn matvec_32_nalgebra(io: NaMv<N>) -> NaMv<N> {
    na_matvec(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = na_matmul_input::<N>)]
fn matmul_32_nalgebra(io: NaMm<N>) -> NaMm<N> {
    na_matmul(io)
}

// f32 at the target table's other sizes, ours beside nalgebra's, so that a time ratio there has an instruction
// ratio beside it. (A const-generic benchmark would be one function; gungraun's `consts` does not combine with a
// size-dependent `setup`, and its attribute does not expand inside `macro_rules!`.)

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = matvec_input::<f32, 16>)]
fn matvec_16(io: Mv<f32, 16>) -> Mv<f32, 16> {
    matvec_off(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = na_matvec_input::<16>)]
fn matvec_16_nalgebra(io: NaMv<16>) -> NaMv<16> {
    na_matvec(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = matvec_input::<f32, 64>)]
fn matvec_64(io: Mv<f32, 64>) -> Mv<f32, 64> {
    matvec_off(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = na_matvec_input::<64>)]
fn matvec_64_nalgebra(io: NaMv<64>) -> NaMv<64> {
    na_matvec(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = matmul_input::<f32, 16>)]
fn matmul_16(io: Mm<f32, 16>) -> Mm<f32, 16> {
    matmul(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = na_matmul_input::<16>)]
fn matmul_16_nalgebra(io: NaMm<16>) -> NaMm<16> {
    na_matmul(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = matmul_input::<f32, 64>)]
fn matmul_64(io: Mm<f32, 64>) -> Mm<f32, 64> {
    matmul(io)
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = na_matmul_input::<64>)]
fn matmul_64_nalgebra(io: NaMm<64>) -> NaMm<64> {
    na_matmul(io)
}

type Ctx = StepCtx<Sgd, NearestEven>;
type StepInput<N, S, const I: usize, const O: usize> = Box<(Box<N>, Vec<([S; I], [S; O])>, Ctx)>;

fn step_input<
    N: Layer<S, Input = [S; I], Output = [S; O]>,
    S: Scalar,
    const I: usize,
    const O: usize,
>(
    net: fn(&mut Xoshiro128PlusPlus) -> Box<N>,
    batch: usize,
) -> StepInput<N, S, I, O> {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(4);
    let mut ctx = StepCtx::new(Loss::Mse, Sgd::new(1e-3, 0.0).expect("lr"), NearestEven);
    let (mut net, samples) = (net(&mut rng), data::<S, I, O>(batch));
    // One step in the setup: the counted one is a steady-state step, without the optimizer's once-per-scale
    // coefficient preparation and the divergence watch's first-loss bookkeeping.
    step(&mut *net, samples.as_slice(), &mut ctx, &mut ());
    Box::new((net, samples, ctx))
}

type Relu<S> = StepInput<ReluNet<S>, S, 16, 16>;
type Tanh<S> = StepInput<TanhNet<S>, S, 4, 1>;

fn relu<S: Scalar>(batch: usize) -> Relu<S>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    step_input(relu_net, batch)
}
fn tanh<S: Scalar>(batch: usize) -> Tanh<S>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    step_input(tanh_net, batch)
}

/// One step of `net` on its samples, probes off.
fn one_step<S: Scalar, N, const I: usize, const O: usize>(
    mut input: StepInput<N, S, I, O>,
) -> (StepInput<N, S, I, O>, StepReport)
where
    N: Layer<S, Input = [S; I], Output = [S; O]>,
{
    let (net, samples, ctx) = &mut *input;
    let report = step(&mut **net, black_box(samples.as_slice()), ctx, &mut ());
    (input, report)
}

#[library_benchmark(teardown = drop)]
#[bench::f32_b1(args = (1), setup = relu::<f32>)]
#[bench::f32_b32(args = (32), setup = relu::<f32>)]
#[bench::i16f16_b1(args = (1), setup = relu::<I16F16>)]
#[bench::i16f16_b32(args = (32), setup = relu::<I16F16>)]
#[bench::i1f15_b1(args = (1), setup = relu::<I1F15>)]
#[bench::i1f15_b32(args = (32), setup = relu::<I1F15>)]
fn step_16_32_32_16<S: Scalar>(input: Relu<S>) -> (Relu<S>, StepReport)
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    one_step(input)
}

#[library_benchmark(teardown = drop)]
#[bench::f32_b1(args = (1), setup = tanh::<f32>)]
#[bench::f32_b32(args = (32), setup = tanh::<f32>)]
#[bench::i16f16_b1(args = (1), setup = tanh::<I16F16>)]
#[bench::i16f16_b32(args = (32), setup = tanh::<I16F16>)]
#[bench::i1f15_b1(args = (1), setup = tanh::<I1F15>)]
#[bench::i1f15_b32(args = (32), setup = tanh::<I1F15>)]
fn step_4_8_8_1<S: Scalar>(input: Tanh<S>) -> (Tanh<S>, StepReport)
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    one_step(input)
}

/// A step's input with a tile cache for the whole batch of 32.
type Tiled<N, S, const I: usize, const O: usize> =
    Box<(StepInput<N, S, I, O>, Box<<N as TileLayer<S>>::Tile<32>>)>;

fn tiled<N, S, const I: usize, const O: usize>(input: StepInput<N, S, I, O>) -> Tiled<N, S, I, O>
where
    S: Scalar,
    N: TileLayer<S, Input = [S; I], Output = [S; O]>,
{
    let tile = Box::new(input.0.tile::<32>());
    Box::new((input, tile))
}

fn relu_tiled<S: Scalar>(batch: usize) -> Tiled<ReluNet<S>, S, 16, 16>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    tiled(relu(batch))
}
fn tanh_tiled<S: Scalar>(batch: usize) -> Tiled<TanhNet<S>, S, 4, 1>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    tiled(tanh(batch))
}

/// One tiled step (the batch as one tile), probes off.
fn one_tiled_step<S: Scalar, N, const I: usize, const O: usize>(
    mut input: Tiled<N, S, I, O>,
) -> (Tiled<N, S, I, O>, StepReport)
where
    N: TileLayer<S, Input = [S; I], Output = [S; O]>,
{
    let (inner, tile) = &mut *input;
    let (net, samples, ctx) = &mut **inner;
    let report = step_tiled(
        &mut **net,
        &mut **tile,
        black_box(samples.as_slice()),
        ctx,
        &mut (),
    );
    (input, report)
}

#[library_benchmark(teardown = drop)]
#[bench::f32_b32(args = (32), setup = relu_tiled::<f32>)]
#[bench::i16f16_b32(args = (32), setup = relu_tiled::<I16F16>)]
#[bench::i1f15_b32(args = (32), setup = relu_tiled::<I1F15>)]
fn step_16_32_32_16_tiled<S: Scalar>(
    input: Tiled<ReluNet<S>, S, 16, 16>,
) -> (Tiled<ReluNet<S>, S, 16, 16>, StepReport)
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    one_tiled_step(input)
}

#[library_benchmark(teardown = drop)]
#[bench::f32_b32(args = (32), setup = tanh_tiled::<f32>)]
#[bench::i16f16_b32(args = (32), setup = tanh_tiled::<I16F16>)]
#[bench::i1f15_b32(args = (32), setup = tanh_tiled::<I1F15>)]
fn step_4_8_8_1_tiled<S: Scalar>(
    input: Tiled<TanhNet<S>, S, 4, 1>,
) -> (Tiled<TanhNet<S>, S, 4, 1>, StepReport)
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    one_tiled_step(input)
}

type NaNet<const I: usize, const H: usize, const O: usize, const B: usize> = Box<(
    Box<na::Dense<I, H, B>>,
    Box<na::Dense<H, H, B>>,
    Box<na::Dense<H, O, B>>,
    SMatrix<f32, I, B>,
    SMatrix<f32, O, B>,
)>;

fn na_step_input<const I: usize, const H: usize, const O: usize, const B: usize>(
    hidden: na::Act,
) -> NaNet<I, H, O, B> {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(9);
    let mut u = move || rng.next_u32() as f32 / u32::MAX as f32 - 0.5;
    Box::new((
        na::Dense::new(hidden, 1),
        na::Dense::new(hidden, 2),
        na::Dense::new(na::Act::Identity, 3),
        SMatrix::from_fn(|_, _| u()),
        SMatrix::from_fn(|_, _| u()),
    ))
}

fn na_step<const I: usize, const H: usize, const O: usize, const B: usize>(
    mut net: NaNet<I, H, O, B>,
) -> (NaNet<I, H, O, B>, f32) {
    let (l1, l2, l3, x, t) = &mut *net;
    let y = l3.forward(&l2.forward(&l1.forward(black_box(&*x))));
    let (loss, dy) = na::mse(&y, t);
    l1.backward(&l2.backward(&l3.backward(&dy)));
    l1.sgd(1e-3);
    l2.sgd(1e-3);
    l3.sgd(1e-3);
    (net, loss)
}

#[library_benchmark(teardown = drop)]
#[bench::f32_b1(args = (na::Act::Relu), setup = na_step_input::<16, 32, 16, 1>)]
fn step_16_32_32_16_nalgebra_b1(net: NaNet<16, 32, 16, 1>) -> (NaNet<16, 32, 16, 1>, f32) {
    na_step(net)
}

#[library_benchmark(teardown = drop)]
#[bench::f32_b32(args = (na::Act::Relu), setup = na_step_input::<16, 32, 16, 32>)]
fn step_16_32_32_16_nalgebra_b32(net: NaNet<16, 32, 16, 32>) -> (NaNet<16, 32, 16, 32>, f32) {
    na_step(net)
}

#[library_benchmark(teardown = drop)]
#[bench::f32_b1(args = (na::Act::Tanh), setup = na_step_input::<4, 8, 1, 1>)]
fn step_4_8_8_1_nalgebra_b1(net: NaNet<4, 8, 1, 1>) -> (NaNet<4, 8, 1, 1>, f32) {
    na_step(net)
}

#[library_benchmark(teardown = drop)]
#[bench::f32_b32(args = (na::Act::Tanh), setup = na_step_input::<4, 8, 1, 32>)]
fn step_4_8_8_1_nalgebra_b32(net: NaNet<4, 8, 1, 32>) -> (NaNet<4, 8, 1, 32>, f32) {
    na_step(net)
}

/// The convolution, its input (or, for `backward`, the output gradient) and room for the result.
type ConvIo<S> = Box<(Box<Conv<S>>, Planes<S>, Planes<S>)>;

fn conv_input<S: Scalar>() -> ConvIo<S>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    let (conv, x) = conv_setup::<S>();
    Box::new((conv, x, x))
}

/// [`conv_input`] after one forward pass, ready for `backward`.
fn conv_forwarded<S: Scalar>() -> ConvIo<S>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    let mut io = conv_input::<S>();
    let (conv, x, _) = &mut *io;
    conv.forward(x, 0, &mut NearestEven, &mut ());
    io
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = conv_input::<f32>)]
#[bench::i16f16(setup = conv_input::<I16F16>)]
#[bench::i1f15(setup = conv_input::<I1F15>)]
fn conv_4x8x8_forward<S: Scalar>(mut io: ConvIo<S>) -> ConvIo<S>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    let (conv, x, y) = &mut *io;
    *y = conv.forward(black_box(&*x), 0, &mut NearestEven, &mut ());
    io
}

#[library_benchmark(teardown = drop)]
#[bench::f32(setup = conv_forwarded::<f32>)]
#[bench::i16f16(setup = conv_forwarded::<I16F16>)]
#[bench::i1f15(setup = conv_forwarded::<I1F15>)]
fn conv_4x8x8_backward<S: Scalar>(mut io: ConvIo<S>) -> ConvIo<S>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    let (conv, dy, dx) = &mut *io;
    *dx = conv.backward(black_box(&*dy), 0, &mut NearestEven, &mut ());
    io
}

library_benchmark_group!(
    name = kernels;
    benchmarks = matvec_32, matvec_32_counted, matvec_32_nalgebra, matmul_32, matmul_32_nalgebra,
        matvec_16, matvec_16_nalgebra, matvec_64, matvec_64_nalgebra, matmul_16, matmul_16_nalgebra,
        matmul_64, matmul_64_nalgebra, conv_4x8x8_forward, conv_4x8x8_backward
);

library_benchmark_group!(
    name = steps;
    benchmarks = step_16_32_32_16, step_16_32_32_16_tiled, step_16_32_32_16_nalgebra_b1,
        step_16_32_32_16_nalgebra_b32, step_4_8_8_1, step_4_8_8_1_tiled, step_4_8_8_1_nalgebra_b1,
        step_4_8_8_1_nalgebra_b32
);

/// glibc's `memset` and `memcpy` switch to `rep stosb` / `rep movsb` from about 2 KiB on (`ld.so --list-tunables`), and
/// callgrind counts every byte such an instruction moves as one executed instruction (zeroing a layer's gradients
/// counted one per byte). Raising glibc's thresholds keeps both calls in their 32-byte vector loops, whose count
/// follows the work, for our code and nalgebra's alike (no benchmarked nalgebra call takes the `rep` path today: its
/// counts are the same either way).
const GLIBC_TUNABLES: &str =
    "glibc.cpu.x86_rep_stosb_threshold=1073741824:glibc.cpu.x86_rep_movsb_threshold=1073741824";

main!(
    config = LibraryBenchmarkConfig::default().env("GLIBC_TUNABLES", GLIBC_TUNABLES);
    library_benchmark_groups = kernels, steps
);
