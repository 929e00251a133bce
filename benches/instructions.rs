//! Deterministic instruction counts on the host: valgrind's callgrind through gungraun, so kernel and
//! training-step ratios do not depend on a noisy machine (criterion measures time in `kernels` and `training`).
//!
//! Run: `bash ci/host-instructions.sh` (installs valgrind and the matching `gungraun-runner`, then
//! `cargo bench --bench instructions`); `python3 ci/figures.py` puts the counts into BENCHMARKS.md.
//!
//! - `matvec_32/*`, `matmul_32/*`: 32×32 kernels per format, nalgebra's f32 `SMatrix` beside ours, and the
//!   counting probe (`EventCounts`) beside the probe off;
//! - `step_16_32_32_16/*`, `step_4_8_8_1/*`: one SGD step of the 16-32-32-16 ReLU and 4-8-8-1 tanh nets of
//!   the `training` bench at batch 1 and 32, per format, and the same step written with nalgebra;
//! - `conv_4x8x8_forward/*`, `conv_4x8x8_backward/*`: the `kernels` bench's 3×3 `same` convolution of 4
//!   channels of 8×8 into 4 per format, probe off (the backward pass after one forward pass in the setup).
//!
//! Setup (data, weights, contexts, and one warm-up step before a counted training step) is excluded from the
//! counts.

use gradscope_core::{
    EventCounts, I1F15, I16F16, Layer, Loss, NearestEven, Scalar, Sgd, StepCtx, StepReport,
    TileLayer, matrix, step, step_tiled,
};
use gungraun::{library_benchmark, library_benchmark_group, main};
use nalgebra::{SMatrix, SVector};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;
use std::hint::black_box;

mod common;
use common::{Conv, Planes, ReluNet, TanhNet, conv_setup, data, fill, na, relu_net, tanh_net};

const N: usize = 32;

type Square<S> = Box<[[S; N]; N]>;

fn matvec_input<S: Scalar>() -> (Square<S>, [S; N]) {
    let [x]: [[S; N]; 1] = fill(2);
    (Box::new(fill(1)), x)
}

fn matmul_input<S: Scalar>() -> (Square<S>, Square<S>) {
    (Box::new(fill(1)), Box::new(fill(2)))
}

fn matvec_f32() -> (Square<f32>, [f32; N]) {
    matvec_input()
}
fn matvec_i16f16() -> (Square<I16F16>, [I16F16; N]) {
    matvec_input()
}
fn matvec_i1f15() -> (Square<I1F15>, [I1F15; N]) {
    matvec_input()
}
fn matmul_f32() -> (Square<f32>, Square<f32>) {
    matmul_input()
}
fn matmul_i16f16() -> (Square<I16F16>, Square<I16F16>) {
    matmul_input()
}
fn matmul_i1f15() -> (Square<I1F15>, Square<I1F15>) {
    matmul_input()
}

fn matvec<S: Scalar>((w, x): (Square<S>, [S; N])) -> [S; N] {
    let mut y = [S::ZERO; N];
    matrix::matvec(
        black_box(&*w),
        black_box(&x),
        &mut y,
        &mut NearestEven,
        &mut (),
    );
    y
}

fn matvec_counted<S: Scalar>((w, x): (Square<S>, [S; N])) -> ([S; N], EventCounts) {
    let mut y = [S::ZERO; N];
    let mut counts = EventCounts::default();
    matrix::matvec(
        black_box(&*w),
        black_box(&x),
        &mut y,
        &mut NearestEven,
        &mut counts,
    );
    (y, counts)
}

fn matmul<S: Scalar>((a, b): (Square<S>, Square<S>)) -> Square<S> {
    let mut c = Box::new([[S::ZERO; N]; N]);
    matrix::matmul(
        black_box(&*a),
        black_box(&*b),
        &mut c,
        &mut NearestEven,
        &mut (),
    );
    c
}

#[library_benchmark]
#[bench::f32(setup = matvec_f32)]
#[bench::i16f16(setup = matvec_i16f16)]
#[bench::i1f15(setup = matvec_i1f15)]
fn matvec_32<S: Scalar>(input: (Square<S>, [S; N])) -> [S; N] {
    black_box(matvec(input))
}

#[library_benchmark]
#[bench::f32(setup = matvec_f32)]
#[bench::i16f16(setup = matvec_i16f16)]
#[bench::i1f15(setup = matvec_i1f15)]
fn matvec_32_counted<S: Scalar>(input: (Square<S>, [S; N])) -> ([S; N], EventCounts) {
    black_box(matvec_counted(input))
}

fn na_matvec_input() -> (SMatrix<f32, N, N>, SVector<f32, N>) {
    let (w, x) = matvec_f32();
    (
        SMatrix::from_fn(|i, j| w[i][j]),
        SVector::from_fn(|i, _| x[i]),
    )
}

#[library_benchmark]
#[bench::f32(setup = na_matvec_input)]
fn matvec_32_nalgebra((a, v): (SMatrix<f32, N, N>, SVector<f32, N>)) -> SVector<f32, N> {
    black_box(black_box(&a) * black_box(&v))
}

#[library_benchmark]
#[bench::f32(setup = matmul_f32)]
#[bench::i16f16(setup = matmul_i16f16)]
#[bench::i1f15(setup = matmul_i1f15)]
fn matmul_32<S: Scalar>(input: (Square<S>, Square<S>)) -> Square<S> {
    black_box(matmul(input))
}

fn na_matmul_input() -> Box<(SMatrix<f32, N, N>, SMatrix<f32, N, N>)> {
    let (a, b) = matmul_f32();
    Box::new((
        SMatrix::from_fn(|i, j| a[i][j]),
        SMatrix::from_fn(|i, j| b[i][j]),
    ))
}

#[library_benchmark]
#[bench::f32(setup = na_matmul_input)]
fn matmul_32_nalgebra(ab: Box<(SMatrix<f32, N, N>, SMatrix<f32, N, N>)>) -> SMatrix<f32, N, N> {
    black_box(black_box(&ab.0) * black_box(&ab.1))
}

type Ctx = StepCtx<Sgd, NearestEven>;
type StepInput<N, S, const I: usize, const O: usize> = (Box<N>, Vec<([S; I], [S; O])>, Ctx);

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
    (net, samples, ctx)
}

type Relu<S> = StepInput<ReluNet<S>, S, 16, 16>;
type Tanh<S> = StepInput<TanhNet<S>, S, 4, 1>;

fn relu_f32(batch: usize) -> Relu<f32> {
    step_input(relu_net, batch)
}
fn relu_i16f16(batch: usize) -> Relu<I16F16> {
    step_input(relu_net, batch)
}
fn relu_i1f15(batch: usize) -> Relu<I1F15> {
    step_input(relu_net, batch)
}
fn tanh_f32(batch: usize) -> Tanh<f32> {
    step_input(tanh_net, batch)
}
fn tanh_i16f16(batch: usize) -> Tanh<I16F16> {
    step_input(tanh_net, batch)
}
fn tanh_i1f15(batch: usize) -> Tanh<I1F15> {
    step_input(tanh_net, batch)
}

/// One step of `net` on its samples, probes off.
fn one_step<S: Scalar, N, const I: usize, const O: usize>(
    (mut net, samples, mut ctx): StepInput<N, S, I, O>,
) -> StepReport
where
    N: Layer<S, Input = [S; I], Output = [S; O]>,
{
    black_box(step(
        &mut *net,
        black_box(samples.as_slice()),
        &mut ctx,
        &mut (),
    ))
}

#[library_benchmark]
#[bench::f32_b1(args = (1), setup = relu_f32)]
#[bench::f32_b32(args = (32), setup = relu_f32)]
#[bench::i16f16_b1(args = (1), setup = relu_i16f16)]
#[bench::i16f16_b32(args = (32), setup = relu_i16f16)]
#[bench::i1f15_b1(args = (1), setup = relu_i1f15)]
#[bench::i1f15_b32(args = (32), setup = relu_i1f15)]
fn step_16_32_32_16<S: Scalar>(input: Relu<S>) -> StepReport
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    one_step(input)
}

#[library_benchmark]
#[bench::f32_b1(args = (1), setup = tanh_f32)]
#[bench::f32_b32(args = (32), setup = tanh_f32)]
#[bench::i16f16_b1(args = (1), setup = tanh_i16f16)]
#[bench::i16f16_b32(args = (32), setup = tanh_i16f16)]
#[bench::i1f15_b1(args = (1), setup = tanh_i1f15)]
#[bench::i1f15_b32(args = (32), setup = tanh_i1f15)]
fn step_4_8_8_1<S: Scalar>(input: Tanh<S>) -> StepReport
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    one_step(input)
}

/// A step's input with a tile cache for the whole batch of 32.
type Tiled<N, S, const I: usize, const O: usize> =
    (StepInput<N, S, I, O>, Box<<N as TileLayer<S>>::Tile<32>>);

fn tiled<N, S, const I: usize, const O: usize>(input: StepInput<N, S, I, O>) -> Tiled<N, S, I, O>
where
    S: Scalar,
    N: TileLayer<S, Input = [S; I], Output = [S; O]>,
{
    let tile = Box::new(input.0.tile::<32>());
    (input, tile)
}

fn relu_f32_tiled(batch: usize) -> Tiled<ReluNet<f32>, f32, 16, 16> {
    tiled(relu_f32(batch))
}
fn relu_i16f16_tiled(batch: usize) -> Tiled<ReluNet<I16F16>, I16F16, 16, 16> {
    tiled(relu_i16f16(batch))
}
fn relu_i1f15_tiled(batch: usize) -> Tiled<ReluNet<I1F15>, I1F15, 16, 16> {
    tiled(relu_i1f15(batch))
}
fn tanh_f32_tiled(batch: usize) -> Tiled<TanhNet<f32>, f32, 4, 1> {
    tiled(tanh_f32(batch))
}
fn tanh_i16f16_tiled(batch: usize) -> Tiled<TanhNet<I16F16>, I16F16, 4, 1> {
    tiled(tanh_i16f16(batch))
}
fn tanh_i1f15_tiled(batch: usize) -> Tiled<TanhNet<I1F15>, I1F15, 4, 1> {
    tiled(tanh_i1f15(batch))
}

/// One tiled step (the batch as one tile), probes off.
fn one_tiled_step<S: Scalar, N, const I: usize, const O: usize>(
    ((mut net, samples, mut ctx), mut tile): Tiled<N, S, I, O>,
) -> StepReport
where
    N: TileLayer<S, Input = [S; I], Output = [S; O]>,
{
    black_box(step_tiled(
        &mut *net,
        &mut *tile,
        black_box(samples.as_slice()),
        &mut ctx,
        &mut (),
    ))
}

#[library_benchmark]
#[bench::f32_b32(args = (32), setup = relu_f32_tiled)]
#[bench::i16f16_b32(args = (32), setup = relu_i16f16_tiled)]
#[bench::i1f15_b32(args = (32), setup = relu_i1f15_tiled)]
fn step_16_32_32_16_tiled<S: Scalar>(input: Tiled<ReluNet<S>, S, 16, 16>) -> StepReport
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    one_tiled_step(input)
}

#[library_benchmark]
#[bench::f32_b32(args = (32), setup = tanh_f32_tiled)]
#[bench::i16f16_b32(args = (32), setup = tanh_i16f16_tiled)]
#[bench::i1f15_b32(args = (32), setup = tanh_i1f15_tiled)]
fn step_4_8_8_1_tiled<S: Scalar>(input: Tiled<TanhNet<S>, S, 4, 1>) -> StepReport
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    one_tiled_step(input)
}

type NaNet<const I: usize, const H: usize, const O: usize, const B: usize> = (
    Box<na::Dense<I, H, B>>,
    Box<na::Dense<H, H, B>>,
    Box<na::Dense<H, O, B>>,
    SMatrix<f32, I, B>,
    SMatrix<f32, O, B>,
);

fn na_step_input<const I: usize, const H: usize, const O: usize, const B: usize>(
    hidden: na::Act,
) -> NaNet<I, H, O, B> {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(9);
    let mut u = move || rng.next_u32() as f32 / u32::MAX as f32 - 0.5;
    (
        na::Dense::new(hidden, 1),
        na::Dense::new(hidden, 2),
        na::Dense::new(na::Act::Identity, 3),
        SMatrix::from_fn(|_, _| u()),
        SMatrix::from_fn(|_, _| u()),
    )
}

fn na_step<const I: usize, const H: usize, const O: usize, const B: usize>(
    (mut l1, mut l2, mut l3, x, t): NaNet<I, H, O, B>,
) -> f32 {
    let y = l3.forward(&l2.forward(&l1.forward(black_box(&x))));
    let (loss, dy) = na::mse(&y, &t);
    l1.backward(&l2.backward(&l3.backward(&dy)));
    l1.sgd(1e-3);
    l2.sgd(1e-3);
    l3.sgd(1e-3);
    loss
}

#[library_benchmark]
#[bench::f32_b1(args = (na::Act::Relu), setup = na_step_input::<16, 32, 16, 1>)]
fn step_16_32_32_16_nalgebra_b1(net: NaNet<16, 32, 16, 1>) -> f32 {
    black_box(na_step(net))
}

#[library_benchmark]
#[bench::f32_b32(args = (na::Act::Relu), setup = na_step_input::<16, 32, 16, 32>)]
fn step_16_32_32_16_nalgebra_b32(net: NaNet<16, 32, 16, 32>) -> f32 {
    black_box(na_step(net))
}

#[library_benchmark]
#[bench::f32_b1(args = (na::Act::Tanh), setup = na_step_input::<4, 8, 1, 1>)]
fn step_4_8_8_1_nalgebra_b1(net: NaNet<4, 8, 1, 1>) -> f32 {
    black_box(na_step(net))
}

#[library_benchmark]
#[bench::f32_b32(args = (na::Act::Tanh), setup = na_step_input::<4, 8, 1, 32>)]
fn step_4_8_8_1_nalgebra_b32(net: NaNet<4, 8, 1, 32>) -> f32 {
    black_box(na_step(net))
}

/// [`conv_setup`] after one forward pass, ready for `backward`.
fn conv_forwarded<S: Scalar>() -> (Box<Conv<S>>, Planes<S>)
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    let (mut conv, x) = conv_setup::<S>();
    conv.forward(&x, 0, &mut NearestEven, &mut ());
    (conv, x)
}

#[library_benchmark]
#[bench::f32(setup = conv_setup::<f32>)]
#[bench::i16f16(setup = conv_setup::<I16F16>)]
#[bench::i1f15(setup = conv_setup::<I1F15>)]
fn conv_4x8x8_forward<S: Scalar>((mut conv, x): (Box<Conv<S>>, Planes<S>)) -> Planes<S>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    black_box(conv.forward(black_box(&x), 0, &mut NearestEven, &mut ()))
}

#[library_benchmark]
#[bench::f32(setup = conv_forwarded::<f32>)]
#[bench::i16f16(setup = conv_forwarded::<I16F16>)]
#[bench::i1f15(setup = conv_forwarded::<I1F15>)]
fn conv_4x8x8_backward<S: Scalar>((mut conv, dy): (Box<Conv<S>>, Planes<S>)) -> Planes<S>
where
    gradscope_core::Act: gradscope_core::Activate<S>,
{
    black_box(conv.backward(black_box(&dy), 0, &mut NearestEven, &mut ()))
}

library_benchmark_group!(
    name = kernels;
    benchmarks = matvec_32, matvec_32_counted, matvec_32_nalgebra, matmul_32, matmul_32_nalgebra,
        conv_4x8x8_forward, conv_4x8x8_backward
);

library_benchmark_group!(
    name = steps;
    benchmarks = step_16_32_32_16, step_16_32_32_16_tiled, step_16_32_32_16_nalgebra_b1,
        step_16_32_32_16_nalgebra_b32, step_4_8_8_1, step_4_8_8_1_tiled, step_4_8_8_1_nalgebra_b1,
        step_4_8_8_1_nalgebra_b32
);

main!(library_benchmark_groups = kernels, steps);
