//! The cost of each kernel and of a training step on the target, per format, in the unit of
//! [`COST_UNIT`]: what `mcu-report.py` tabulates. A binary of its own so that each image fits the micro:bit's
//! flash; the demo (`demo.rs`) runs the parity workloads.
#![no_std]
#![no_main]

use cortex_m as _;
use gradscope_core::{
    Act, Activate, Dense, I1F15, I8F24, I16F16, Init, Layer, Loss, NearestEven, Optimizer, Scalar,
    Sgd, StepCtx, bf16, f16, init_slice, step,
};
use gradscope_firmware::{COST_UNIT, Cost, exit, stack};
use rand_xoshiro::Xoshiro128PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

/// The cost of each kernel and of a training step in one format (probes off).
#[inline(never)]
fn costs<S: Scalar>(cost: &mut Cost)
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(7);
    let u = Init::Uniform { a: -0.5, b: 0.5 };
    let mut w = [[S::ZERO; 16]; 16];
    let mut x = [S::ZERO; 16];
    let ok = init_slice(
        w.as_flattened_mut(),
        &u,
        16,
        16,
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .is_ok()
        && init_slice(&mut x, &u, 16, 16, &mut rng, &mut NearestEven, &mut ()).is_ok();
    if !ok {
        defmt::println!("cost {=str}: inputs rejected", S::NAME);
        return;
    }
    let mut y = [S::ZERO; 16];
    let n = cost.measure(16, || {
        gradscope_core::matrix::matvec(
            core::hint::black_box(&w),
            core::hint::black_box(&x),
            &mut y,
            &mut NearestEven,
            &mut (),
        );
        core::hint::black_box(&mut y);
    });
    defmt::println!(
        "cost matvec16x16 {=str} {=u64} {=str}",
        S::NAME,
        n,
        COST_UNIT
    );
    let n = cost.measure(16, || {
        for (o, v) in y.iter_mut().zip(core::hint::black_box(&x)) {
            *o = Act::Sigmoid.f(*v, &mut NearestEven).0;
        }
        core::hint::black_box(&mut y);
    });
    defmt::println!("cost sigmoid16 {=str} {=u64} {=str}", S::NAME, n, COST_UNIT);
    let xavier = Init::XavierNormal { gain: 1.0 };
    let mut net = (
        (
            Dense::<S, 4, 8>::new(Act::Tanh),
            Dense::<S, 8, 8>::new(Act::Tanh),
        ),
        Dense::<S, 8, 1>::new(Act::Identity),
    );
    let ok = net
        .0
        .0
        .init(&xavier, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
        .is_ok()
        && net
            .0
            .1
            .init(&xavier, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
            .is_ok()
        && net
            .1
            .init(&xavier, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
            .is_ok();
    let Ok(mut sgd) = Sgd::new(0.01, 0.0) else {
        return;
    };
    if !ok {
        return;
    }
    let xs = [x[0], x[1], x[2], x[3]];
    let t = [x[4]];
    let n = cost.measure(8, || {
        core::hint::black_box(net.forward(
            core::hint::black_box(&xs),
            0,
            &mut NearestEven,
            &mut (),
        ));
    });
    defmt::println!(
        "cost forward_4-8-8-1 {=str} {=u64} {=str}",
        S::NAME,
        n,
        COST_UNIT
    );
    let dy = [x[5]];
    let n = cost.measure(8, || {
        core::hint::black_box(net.backward(
            core::hint::black_box(&dy),
            0,
            &mut NearestEven,
            &mut (),
        ));
    });
    defmt::println!(
        "cost backward_4-8-8-1 {=str} {=u64} {=str}",
        S::NAME,
        n,
        COST_UNIT
    );
    // The steady state: the first update prepares the coefficients for this gradient scale (in f64, in
    // software on both cores), which later updates reuse. Warming up here, not in `measure`, keeps each
    // measured closure at one call site, where it is inlined.
    let _ = sgd.step(&mut net, 1.0, &mut NearestEven, &mut ());
    let n = cost.measure(8, || {
        let _ = sgd.step(&mut net, 1.0, &mut NearestEven, &mut ());
    });
    defmt::println!(
        "cost sgd_update_4-8-8-1 {=str} {=u64} {=str}",
        S::NAME,
        n,
        COST_UNIT
    );
    // The update's loop alone: one `sub_scaled` over 128 values (the learning rate above), without the visit of
    // each tensor and the checks before it.
    let lr = gradscope_core::Coef::new(0.01);
    let mut wk = [S::ZERO; 128];
    let mut gk = [S::ZERO; 128];
    let wm = &w;
    for (k, (w, g)) in wk.iter_mut().zip(gk.iter_mut()).enumerate() {
        *w = wm[k / 16 % 16][k % 16];
        *g = x[k % 16];
    }
    let n = cost.measure(8, || {
        S::sub_scaled(
            core::hint::black_box(&mut wk),
            core::hint::black_box(&gk),
            &lr,
            &mut NearestEven,
            |_| {},
        );
    });
    defmt::println!(
        "cost sgd_values_128 {=str} {=u64} {=str}",
        S::NAME,
        n,
        COST_UNIT
    );
    // One training step (zero, forward, loss, backward, update) on one sample, probes off.
    let mut ctx = StepCtx::new(Loss::Mse, sgd, NearestEven);
    let sample = [(xs, t)];
    let n = cost.measure(8, || {
        core::hint::black_box(step(
            &mut net,
            core::hint::black_box(&sample[..]),
            &mut ctx,
            &mut (),
        ));
    });
    defmt::println!(
        "cost train_step_4-8-8-1 {=str} {=u64} {=str}",
        S::NAME,
        n,
        COST_UNIT
    );
}

/// The parity CNN's costs (`gradscope_core::parity::DigitsCnn`, probes off): its convolution's forward pass
/// (1×8×8 → 2×8×8, 3×3 `same`: 968 multiply-accumulates, the border's padded taps skipped) and one training
/// step on one digit (zero, forward, cross-entropy, backward, SGD update).
#[inline(never)]
fn cnn_costs<S: Scalar>(cost: &mut Cost)
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(11);
    let mut net = gradscope_core::parity::digits_cnn::<S>();
    let mut x = [[[S::ZERO; 8]; 8]; 1];
    let he = Init::KaimingNormal {
        slope: 0.0,
        mode: gradscope_core::FanMode::FanIn,
        nonlinearity: gradscope_core::Nonlinearity::Relu,
    };
    let u = Init::Uniform { a: 0.0, b: 1.0 };
    let ok = net
        .0
        .init(&he, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
        .is_ok()
        && net
            .1
            .1
            .1
            .init(&u, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
            .is_ok()
        && init_slice(
            x.as_flattened_mut().as_flattened_mut(),
            &u,
            1,
            1,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .is_ok();
    let Ok(sgd) = Sgd::new(0.01, 0.0) else {
        return;
    };
    if !ok {
        defmt::println!("cost cnn {=str}: inputs rejected", S::NAME);
        return;
    }
    let n = cost.measure(4, || {
        core::hint::black_box(net.0.forward(
            core::hint::black_box(&x),
            0,
            &mut NearestEven,
            &mut (),
        ));
    });
    defmt::println!(
        "cost conv3x3_1x8x8-2 {=str} {=u64} {=str}",
        S::NAME,
        n,
        COST_UNIT
    );
    let mut t = [S::ZERO; 10];
    t[3] = S::from_f64(1.0, &mut NearestEven).0;
    let mut ctx = StepCtx::new(Loss::SoftmaxCrossEntropy, sgd, NearestEven);
    let sample = [(x, t)];
    let n = cost.measure(4, || {
        core::hint::black_box(step(
            &mut net,
            core::hint::black_box(&sample[..]),
            &mut ctx,
            &mut (),
        ));
    });
    defmt::println!(
        "cost train_step_cnn_digits {=str} {=u64} {=str}",
        S::NAME,
        n,
        COST_UNIT
    );
}

#[cortex_m_rt::entry]
fn main() -> ! {
    stack::paint();
    defmt::println!("gradscope costs {=str}", env!("CARGO_PKG_VERSION"));
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        defmt::println!("core peripherals already taken");
        exit(false)
    };
    let mut cost = Cost::new(peripherals);
    costs::<f32>(&mut cost);
    costs::<I16F16>(&mut cost);
    costs::<I8F24>(&mut cost);
    costs::<I1F15>(&mut cost);
    costs::<f16>(&mut cost);
    costs::<bf16>(&mut cost);
    cnn_costs::<f32>(&mut cost);
    cnn_costs::<I16F16>(&mut cost);
    defmt::println!(
        "stack peak {=usize} of {=usize} bytes",
        stack::peak(),
        stack::size()
    );
    exit(true)
}
