//! Loss scaling in fixed point and f16 (Micikevicius et al. 2018): a static scale moves the underflow horizon
//! where the mean-field model says it will (bf16, with f32's range, has no horizon to move), and a dynamic
//! scale backs off from overflow until the backward pass is clean.

use gradscope_core::horizon::DepthModel;
use gradscope_core::layer::Probes;
use gradscope_core::{
    Act, Activate, DenseStack, Flags, I16F16, Init, Layer, LayerStats, LossScaler, NearestEven,
    Phase, Scalar, ScaleDecision, bf16, f16, init_slice,
};
use gradscope_suite::big_stack;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;

const W: usize = 32;
const D: usize = 64;

/// Measured underflow horizon of a 64-layer sigmoid stack (Xavier) in `S` for output gradients of RMS `g0`
/// multiplied by the loss scale `scale` (the horizon is in scaled units, as the backward pass sees them); one
/// LSB is `S::SMALLEST` (a float's smallest subnormal).
fn horizon_with_scale<S: Scalar>(g0: f64, scale: f64) -> Option<usize>
where
    Act: Activate<S>,
{
    let mut s: Box<DenseStack<S, W, D>> = Box::new(DenseStack::new(Act::Sigmoid, D));
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(1);
    s.init(
        &Init::XavierNormal { gain: 1.0 },
        &Init::Zeros,
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    let scaler = LossScaler::fixed(scale).unwrap();
    let mut stats = [LayerStats::default(); D];
    for _ in 0..16 {
        let mut x = [S::ZERO; W];
        init_slice(
            &mut x,
            &Init::Uniform { a: -0.9, b: 0.9 },
            1,
            1,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
        s.forward(&x, 0, &mut NearestEven, &mut stats);
        let mut dy: [S; W] = core::array::from_fn(|_| {
            let sign = if rng.next_u32() & 1 == 0 { 1.0 } else { -1.0 };
            S::from_f64(sign * g0, &mut NearestEven).0
        });
        for v in dy.iter_mut() {
            *v = v.scale(scaler.scale(), &mut NearestEven).0;
        }
        s.backward(&dy, 0, &mut NearestEven, &mut stats);
    }
    (1..=D).find(|&k| {
        let st = &stats[D - k];
        (st.backward_sq / (st.backward_passes as f64 * W as f64)).sqrt() < S::SMALLEST
    })
}

/// The mean-field model of the stacks above (Xavier: σ² = 1/n; inputs U(±0.9): E[x²] = 0.27).
fn sigmoid_model() -> DepthModel {
    DepthModel {
        act: Act::Sigmoid,
        width: W,
        weight_var: 1.0 / W as f64,
        input_second_moment: 0.27,
    }
}

#[test]
fn a_static_loss_scale_moves_the_horizon_where_the_model_predicts() {
    let model = sigmoid_model();
    let g0 = 0.001;
    for (name, lsb, plain, scaled) in big_stack(move || {
        vec![
            (
                "I16F16",
                I16F16::LSB,
                horizon_with_scale::<I16F16>(g0, 1.0),
                horizon_with_scale::<I16F16>(g0, 4096.0),
            ),
            (
                "f16",
                f16::SMALLEST,
                horizon_with_scale::<f16>(g0, 1.0),
                horizon_with_scale::<f16>(g0, 4096.0),
            ),
        ]
    }) {
        let (p_plain, p_scaled) = (
            model.horizon(D, g0, lsb),
            model.horizon(D, g0 * 4096.0, lsb),
        );
        let (Some(m0), Some(p0)) = (plain, p_plain) else {
            panic!("{name} plain: measured {plain:?}, predicted {p_plain:?}")
        };
        assert!(
            m0.abs_diff(p0) <= 2,
            "{name} plain: measured {m0}, predicted {p0}"
        );
        let (Some(m), Some(p)) = (scaled, p_scaled) else {
            panic!("{name} scaled: measured {scaled:?}, predicted {p_scaled:?}")
        };
        assert!(
            m.abs_diff(p) <= 2,
            "{name} scaled: measured {m}, predicted {p}"
        );
        // 2^12 buys 12 bits: with sigmoid's ×¼ per layer (Xavier) that is 6 more layers of signal.
        assert!(m >= m0 + 5, "{name}: plain {m0}, scaled {m}");
    }
}

#[test]
fn bf16_has_almost_no_horizon_to_move() {
    // f32's exponent range: the same stack's signal stays above bf16's smallest subnormal for more than 50 of
    // the 64 layers (against f16's and I16F16's handful), where the model predicts it.
    let model = sigmoid_model();
    let m = big_stack(|| horizon_with_scale::<bf16>(0.001, 1.0));
    let p = model.horizon(D, 0.001, bf16::SMALLEST);
    let (Some(m), Some(p)) = (m, p) else {
        panic!("bf16: measured {m:?}, predicted {p:?}")
    };
    assert!(
        m > 50 && m.abs_diff(p) <= 2,
        "bf16: measured {m}, predicted {p}"
    );
    let f16 = big_stack(|| horizon_with_scale::<f16>(0.001, 1.0)).unwrap_or(D);
    assert!(f16 < 10, "f16: {f16}");
}

/// Union of the events of the backward pass (signal and gradients).
struct BackwardEvents(Flags);

impl Probes for BackwardEvents {
    fn record(&mut self, _layer: usize, phase: Phase, flags: Flags) {
        if phase != Phase::Forward {
            self.0 |= flags;
        }
    }
}

/// The dynamic scaler in `S`: starting at 2²⁴, it must skip steps until the backward pass is clean, and its
/// unscaled gradients must match a plain run within `tol(plain value)`.
fn dynamic_scale_backs_off<S: Scalar>(tol: fn(f64) -> f64)
where
    Act: Activate<S>,
{
    big_stack(move || {
        let mut s: Box<DenseStack<S, 16, 8>> = Box::new(DenseStack::new(Act::Tanh, 8));
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(7);
        s.init(
            &Init::XavierUniform { gain: 1.0 },
            &Init::Zeros,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
        let x = [S::from_f64(0.3, &mut NearestEven).0; 16];
        let dy0 = [S::from_f64(0.05, &mut NearestEven).0; 16];
        // 2^24 · 0.05 is far beyond I16F16's and f16's range: the first steps must overflow and be skipped.
        let mut scaler = LossScaler::dynamic((1u64 << 24) as f64, 1000).unwrap();
        let mut decisions = Vec::new();
        for _ in 0..30 {
            s.zero_grad();
            s.forward(&x, 0, &mut NearestEven, &mut ());
            let mut dy = dy0;
            let mut events = BackwardEvents(Flags::NONE);
            for v in dy.iter_mut() {
                let (scaled, f) = v.scale(scaler.scale(), &mut NearestEven);
                events.0 |= f & Flags::OVERFLOW;
                *v = scaled;
            }
            s.backward(&dy, 0, &mut NearestEven, &mut events);
            let d = scaler.update(events.0);
            decisions.push(d);
            if d == ScaleDecision::Step {
                break;
            }
        }
        assert_eq!(decisions.last(), Some(&ScaleDecision::Step));
        assert!(scaler.skipped() >= 5, "skipped {}", scaler.skipped());
        // The scale it settled on keeps 0.05·s inside the range, and the unscaled gradients match a plain run.
        assert!(0.05 * scaler.scale() < S::MAX.to_f64());
        let mut scaled_grads = Vec::new();
        scaler.unscale(&mut *s, &mut NearestEven, &mut ());
        gradscope_core::Params::visit(&mut *s, 0, &mut |t| {
            scaled_grads.extend(t.grad.iter().map(|v| v.to_f64()))
        });
        s.zero_grad();
        s.forward(&x, 0, &mut NearestEven, &mut ());
        s.backward(&dy0, 0, &mut NearestEven, &mut ());
        let mut plain = Vec::new();
        gradscope_core::Params::visit(&mut *s, 0, &mut |t| {
            plain.extend(t.grad.iter().map(|v| v.to_f64()))
        });
        let zeros = |v: &[f64]| v.iter().filter(|&&g| g == 0.0).count();
        assert!(
            zeros(&scaled_grads) <= zeros(&plain),
            "{} vs {}",
            zeros(&scaled_grads),
            zeros(&plain)
        );
        for (a, b) in scaled_grads.iter().zip(&plain) {
            assert!((a - b).abs() <= tol(*b), "{} {a} vs {b}", S::NAME);
        }
    });
}

#[test]
fn dynamic_loss_scale_backs_off_from_overflow_until_the_backward_pass_is_clean() {
    // Fixed point: within 8 LSB. f16: within 2⁻⁷ relative (four of its ulps) or 8 of its smallest subnormals.
    dynamic_scale_backs_off::<I16F16>(|_| 8.0 * I16F16::LSB);
    dynamic_scale_backs_off::<f16>(|b| b.abs() / 128.0 + 8.0 * f16::SMALLEST);
}

#[test]
fn the_training_step_sees_fixed_point_overflow_when_the_caller_observes_nothing() {
    use gradscope_core::train::{StepCtx, Verdict, step};
    use gradscope_core::{Dense, Loss, Sgd};
    // Output weights of 8 send back Σ 8·∂L/∂y: with the loss scaled by 2¹⁰ the output gradient (≈ 17 600) still
    // fits I16F16, the signal sent back (≈ 281 000) does not. The step must see that saturation inside the
    // kernel, and skip the update, even when the caller passes no probe.
    let q = |v: f64| I16F16::from_f64(v, &mut NearestEven).0;
    let mut net = (
        Dense::<I16F16, 4, 4>::new(Act::Tanh),
        Dense::<I16F16, 4, 2>::new(Act::Identity),
    );
    net.0.weight = [[q(0.5); 4]; 4];
    net.1.weight = [[q(8.0); 4]; 2];
    let before = (net.0.weight, net.1.weight);
    let mut ctx = StepCtx::new(Loss::Mse, Sgd::new(0.01, 0.0).unwrap(), NearestEven);
    ctx.scaler = Some(LossScaler::dynamic(1024.0, 1000).unwrap());
    let batch = [([q(0.3); 4], [q(0.0); 2])];
    let report = step(&mut net, batch.as_slice(), &mut ctx, &mut ());
    assert_eq!(report.verdict, Verdict::Skipped { nonfinite: false });
    assert_eq!(ctx.scaler.map(|s| s.scale()), Some(512.0));
    assert_eq!((net.0.weight, net.1.weight), before);
}

#[test]
fn an_unobserved_float_kernel_overflow_is_located_where_it_happened() {
    use gradscope_core::train::{Cause, Divergence, StepCtx, Verdict, step};
    use gradscope_core::{Dense, Loss, Sgd};
    // Weights of 10³⁰: the first layer's outputs (1.2·10³⁰) are finite, the second layer's sums (≈ 5·10⁶⁰)
    // overflow f32. With no probe from the caller the fast kernel must still report the overflow, so that the
    // divergence says that layer 1's forward pass overflowed (its two sums and their two outputs are counted),
    // rather than that an ∞ arrived there.
    let mut net = (
        Dense::<f32, 4, 4>::new(Act::Identity),
        Dense::<f32, 4, 2>::new(Act::Identity),
    );
    net.0.weight = [[1e30; 4]; 4];
    net.1.weight = [[1e30; 4]; 2];
    let mut ctx = StepCtx::new(Loss::Mse, Sgd::new(0.01, 0.0).unwrap(), NearestEven);
    let batch = [([0.3f32; 4], [0.0f32; 2])];
    let fresh = net.clone();
    let report = step(&mut net, batch.as_slice(), &mut ctx, &mut ());
    // An observing caller sees the same four values counted once each.
    let mut observed = fresh;
    let mut stats = [LayerStats::default(); 2];
    let seen = step(
        &mut observed,
        batch.as_slice(),
        &mut ctx,
        stats.as_mut_slice(),
    );
    assert_eq!(seen.verdict, report.verdict);
    assert_eq!(
        (stats[1].forward.nonfinite, stats[1].forward.overflow),
        (4, 2)
    );
    assert_eq!(
        report.verdict,
        Verdict::Diverged(Divergence {
            layer: Some(1),
            phase: Some(Phase::Forward),
            cause: Cause::NonFinite {
                count: 4,
                overflow: true
            },
        })
    );
}
