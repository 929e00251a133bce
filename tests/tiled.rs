//! `step_tiled` against `step`: a batch run in tiles, layer by layer, gives bit for bit the per-sample step's
//! parameters, gradients, caches, reports and per-layer counts, in every format, for full and partial tiles,
//! skipped samples and non-finite values; with stochastic rounding it is the per-sample step.

use gradscope_core::train::{FromFn, Samples, StepCtx, StepReport, step, step_tiled};
use gradscope_core::{
    Act, Dense, DenseStack, I1F15, I16F16, Init, LayerStats, Loss, NearestEven, Scalar, Sgd,
    Stochastic, TileLayer,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

type Net<S> = (Dense<S, 4, 6>, (DenseStack<S, 6, 3>, Dense<S, 6, 2>));

fn net<S: Scalar>(seed: u64) -> Net<S>
where
    Act: gradscope_core::Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let w = Init::XavierNormal { gain: 1.0 };
    let b = Init::Uniform { a: -0.1, b: 0.1 };
    let mut n: Net<S> = (
        Dense::new(Act::Tanh),
        (DenseStack::new(Act::Sigmoid, 2), Dense::new(Act::Identity)),
    );
    n.0.init(&w, &b, &mut rng, &mut NearestEven, &mut ())
        .unwrap();
    n.1.0
        .init(&w, &b, &mut rng, &mut NearestEven, &mut ())
        .unwrap();
    n.1.1
        .init(&w, &b, &mut rng, &mut NearestEven, &mut ())
        .unwrap();
    n
}

fn data<S: Scalar>(count: usize, scale: f64) -> Vec<([S; 4], [S; 2])> {
    let v = |k: usize, j: usize| {
        let u = ((k * 7 + j * 3) % 11) as f64 / 11.0 - 0.45;
        S::from_f64(u * scale, &mut NearestEven).0
    };
    (0..count)
        .map(|k| {
            (
                core::array::from_fn(|j| v(k, j)),
                core::array::from_fn(|j| v(k + 5, j + 1)),
            )
        })
        .collect()
}

/// Five steps each way, per-layer counts on and off; every step's report, counts and network must agree.
fn agree<S, B, const T: usize>(batch: &B, what: &str)
where
    S: Scalar,
    Act: gradscope_core::Activate<S>,
    B: Samples<[S; 4], [S; 2]> + ?Sized,
{
    for counting in [false, true] {
        let (mut a, mut b) = (net::<S>(3), net::<S>(3));
        let mut tile = Box::new(b.tile::<T>());
        let sgd = Sgd::new(0.05, 0.0).unwrap();
        let mut ca = StepCtx::new(Loss::Mse, sgd.clone(), NearestEven);
        let mut cb = StepCtx::new(Loss::Mse, sgd, NearestEven);
        for k in 0..5 {
            let (mut sa, mut sb) = ([LayerStats::default(); 4], [LayerStats::default(); 4]);
            let (ra, rb): (StepReport, StepReport) = if counting {
                (
                    step(&mut a, batch, &mut ca, &mut sa),
                    step_tiled(&mut b, &mut *tile, batch, &mut cb, &mut sb),
                )
            } else {
                (
                    step(&mut a, batch, &mut ca, &mut ()),
                    step_tiled(&mut b, &mut *tile, batch, &mut cb, &mut ()),
                )
            };
            let at = format!(
                "{what}, {}, T = {T}, step {k}, counting {counting}",
                S::NAME
            );
            // NaN compares unequal: compare the reports' bits through their debug form.
            assert_eq!(format!("{ra:?}"), format!("{rb:?}"), "{at}: reports");
            assert_eq!(format!("{sa:?}"), format!("{sb:?}"), "{at}: counts");
            assert!(format!("{a:?}") == format!("{b:?}"), "{at}: networks");
        }
    }
}

fn formats<const T: usize>(batch_f32: &[([f32; 4], [f32; 2])], what: &str) {
    agree::<f32, _, T>(batch_f32, what);
    let fixed16 = batch_f32
        .iter()
        .map(|(x, t)| (x.map(to::<I16F16>), t.map(to::<I16F16>)))
        .collect::<Vec<_>>();
    agree::<I16F16, _, T>(fixed16.as_slice(), what);
    let q15 = batch_f32
        .iter()
        .map(|(x, t)| (x.map(to::<I1F15>), t.map(to::<I1F15>)))
        .collect::<Vec<_>>();
    agree::<I1F15, _, T>(q15.as_slice(), what);
}

fn to<S: Scalar>(v: f32) -> S {
    S::from_f64(v as f64, &mut NearestEven).0
}

#[test]
fn tiles_full_and_partial_give_the_per_sample_step_in_every_format() {
    let batch = data::<f32>(13, 1.8);
    formats::<4>(&batch, "13 samples"); // tiles of 4, 4, 4 and 1
    formats::<16>(&batch, "13 samples"); // one partial tile
    formats::<1>(&batch, "13 samples");
    formats::<4>(&batch[..1], "1 sample");
    formats::<4>(&batch[..0], "no sample");
}

#[test]
fn samples_a_batch_skips_are_skipped_in_tiles_too() {
    let all = data::<f32>(11, 1.0);
    let holes = FromFn {
        count: 11,
        sample: |k: usize| all.get(k).copied().filter(|_| k % 3 != 1),
    };
    agree::<f32, _, 4>(&holes, "every third sample missing");
}

#[test]
fn saturation_and_non_finite_values_are_counted_and_located_alike() {
    // Fixed point saturates; f32 overflows to ∞ in the weight gradient (the outer product of large inputs
    // and a large loss gradient) and, with a NaN input, diverges in the forward pass.
    let big = data::<f32>(9, 3e3);
    formats::<4>(&big, "saturating values");
    let huge = data::<f32>(9, 1e25);
    agree::<f32, _, 4>(huge.as_slice(), "f32 gradients overflowing");
    let mut nan = data::<f32>(9, 1.0);
    nan[6].0[2] = f32::NAN;
    agree::<f32, _, 4>(nan.as_slice(), "a NaN input");
}

#[test]
fn with_stochastic_rounding_the_tiled_step_is_the_per_sample_step() {
    let batch = data::<f32>(10, 1.0)
        .iter()
        .map(|(x, t)| (x.map(to::<I1F15>), t.map(to::<I1F15>)))
        .collect::<Vec<_>>();
    let (mut a, mut b) = (net::<I1F15>(5), net::<I1F15>(5));
    let mut tile = Box::new(b.tile::<4>());
    let rng = || Stochastic(Xoshiro128PlusPlus::seed_from_u64(9));
    let sgd = Sgd::new(0.05, 0.0).unwrap();
    let mut ca = StepCtx::new(Loss::Mse, sgd.clone(), rng());
    let mut cb = StepCtx::new(Loss::Mse, sgd, rng());
    for _ in 0..3 {
        let ra = step(&mut a, batch.as_slice(), &mut ca, &mut ());
        let rb = step_tiled(&mut b, &mut *tile, batch.as_slice(), &mut cb, &mut ());
        assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
        assert_eq!(a, b);
    }
    // The same draws were used, in the same order.
    assert_eq!(ca.rounding, cb.rounding);
}
