//! Backpropagation through time: gradient checks, exploding gradients and their clipping (Pascanu et al.
//! 2013), and the IRNN's preserved gradient (Le et al. 2015).

use gradscope_core::{
    Act, I16F16, Init, Layer, Loss, NearestEven, NormType, Objective, Optimizer, ParamTensor,
    Params, Rnn, Scalar, Sgd, StepNorms, clip_grad_norm, init_matrix,
};
use proptest::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

const T: usize = 5;
type Small<S> = Rnn<S, 2, 3, T>;
const N_PARAMS: usize = 3 * 2 + 3 * 3 + 3;

fn build<S: Scalar>(act: Act, w: &[f64], h0: [f64; 3]) -> Small<S> {
    let mut net = Small::<S>::new(act);
    let mut it = w.iter();
    net.visit(0, &mut |t: ParamTensor<'_, S>| {
        for v in t.value.iter_mut() {
            *v = S::from_f64(*it.next().unwrap_or(&0.0), &mut NearestEven).0;
        }
    });
    net.h0 = h0.map(|v| S::from_f64(v, &mut NearestEven).0);
    net
}

/// Mean over steps of the per-step MSE; gradients via `loss_grad` with batch = T.
fn run<S: Scalar>(net: &mut Small<S>, x: &[[S; 2]; T], target: &[[S; 3]; T]) -> (f64, [[S; 3]; T])
where
    Act: gradscope_core::Activate<S>,
{
    let hs = net.forward(x, 0, &mut NearestEven, &mut ());
    let mut dy = [[S::ZERO; 3]; T];
    let mut total = 0.0;
    for ((h, tg), d) in hs.iter().zip(target).zip(dy.iter_mut()) {
        total +=
            Objective::new(Loss::Mse).grad(h, tg, 1.0 / T as f64, d, &mut NearestEven, &mut ())
                / T as f64;
    }
    (total, dy)
}

fn grads<S: Scalar>(
    net: &mut Small<S>,
    x: &[[S; 2]; T],
    target: &[[S; 3]; T],
) -> (Vec<f64>, Vec<f64>)
where
    Act: gradscope_core::Activate<S>,
{
    net.zero_grad();
    let (_, dy) = run(net, x, target);
    let dx = net.backward(&dy, 0, &mut NearestEven, &mut ());
    let mut g = Vec::new();
    net.visit(0, &mut |t: ParamTensor<'_, S>| {
        g.extend(t.grad.iter().map(|v| v.to_f64()))
    });
    (g, dx.as_flattened().iter().map(|v| v.to_f64()).collect())
}

fn set(net: &mut Small<f64>, k: usize, v: f64) {
    let mut i = 0;
    net.visit(0, &mut |t: ParamTensor<'_, f64>| {
        for p in t.value.iter_mut() {
            if i == k {
                *p = v;
            }
            i += 1;
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bptt_matches_f64_central_differences(
        a in 0usize..3,
        w in prop::collection::vec(-1.0f64..1.0, N_PARAMS),
        h0 in prop::array::uniform3(-0.5f64..0.5),
        x in prop::array::uniform5(prop::array::uniform2(-1.0f64..1.0)),
        target in prop::array::uniform5(prop::array::uniform3(-1.0f64..1.0)),
    ) {
        let act = [Act::Tanh, Act::Sigmoid, Act::Silu][a];
        let mut net = build::<f64>(act, &w, h0);
        let (g, dx) = grads(&mut net, &x, &target);
        let scale = g.iter().chain(&dx).fold(0.0f64, |m, v| m.max(v.abs())).max(1.0);
        let eps = 1e-6;
        for (k, &gk) in g.iter().enumerate() {
            set(&mut net, k, w[k] + eps);
            let up = run(&mut net, &x, &target).0;
            set(&mut net, k, w[k] - eps);
            let down = run(&mut net, &x, &target).0;
            set(&mut net, k, w[k]);
            let numeric = (up - down) / (2.0 * eps);
            prop_assert!((gk - numeric).abs() <= 1e-6 * scale + 1e-4 * numeric.abs(), "{} param {}: {} vs {}", act, k, gk, numeric);
        }
        for (i, &d) in dx.iter().enumerate() {
            let (mut xp, mut xm) = (x, x);
            xp.as_flattened_mut()[i] += eps;
            xm.as_flattened_mut()[i] -= eps;
            let numeric = (run(&mut net, &xp, &target).0 - run(&mut net, &xm, &target).0) / (2.0 * eps);
            prop_assert!((d - numeric).abs() <= 1e-6 * scale + 1e-4 * numeric.abs(), "{} input {}: {} vs {}", act, i, d, numeric);
        }
    }

    #[test]
    fn f32_and_i16f16_bptt_agree_with_f64(
        w in prop::collection::vec(-1.0f64..1.0, N_PARAMS),
        x in prop::array::uniform5(prop::array::uniform2(-1.0f64..1.0)),
        target in prop::array::uniform5(prop::array::uniform3(-1.0f64..1.0)),
    ) {
        // Same quantized weights and inputs everywhere, so the three compute the same function.
        let q = |v: f64| I16F16::from_f64(v, &mut NearestEven).0.to_f64();
        let w: Vec<f64> = w.iter().map(|&v| q(v)).collect();
        let x = x.map(|r| r.map(q));
        let target = target.map(|r| r.map(q));
        let (g64, d64) = grads(&mut build::<f64>(Act::Tanh, &w, [0.0; 3]), &x, &target);
        let (g32, d32) = grads(&mut build::<f32>(Act::Tanh, &w, [0.0; 3]), &x.map(|r| r.map(|v| v as f32)), &target.map(|r| r.map(|v| v as f32)));
        let qx = x.map(|r| r.map(|v| I16F16::from_f64(v, &mut NearestEven).0));
        let qt = target.map(|r| r.map(|v| I16F16::from_f64(v, &mut NearestEven).0));
        let (gq, dq) = grads(&mut build::<I16F16>(Act::Tanh, &w, [0.0; 3]), &qx, &qt);
        for ((a, b), c) in g32.iter().chain(&d32).zip(g64.iter().chain(&d64)).zip(gq.iter().chain(&dq)) {
            prop_assert!((a - b).abs() <= 1e-5, "f32 {} vs f64 {}", a, b);
            // Each of the T = 5 steps adds a few roundings of ≤ 1 LSB, amplified by at most |W| ≤ 3 per step
            // back: 128 LSB bounds the worst case comfortably.
            prop_assert!((c - b).abs() <= 128.0 * I16F16::LSB, "I16F16 {} vs f64 {}", c, b);
        }
    }
}

fn orthogonal_scaled<const H: usize>(gain: f64, seed: u64) -> [[f64; H]; H] {
    let mut w = [[0.0f64; H]; H];
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    init_matrix(
        &mut w,
        &Init::Orthogonal { gain },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    w
}

#[test]
fn recurrent_spectral_radius_2_explodes_and_global_norm_clipping_bounds_the_update() {
    // Pascanu et al. 2013. In tanh's linear regime (zero input and state), ∂L/∂h_1 = (W_hhᵀ)^49 ∂L/∂h_50;
    // with W_hh = 2·Q (Q orthogonal) every singular value is 2, so the norm grows by 2^49.
    let mut net: Box<Rnn<f64, 1, 8, 50>> = Box::new(Rnn::new(Act::Tanh));
    net.weight_hh = orthogonal_scaled::<8>(2.0, 1);
    net.weight_ih = [[0.5]; 8];
    let x = [[0.0f64]; 50];
    net.forward(&x, 0, &mut NearestEven, &mut ());
    let mut dy = [[0.0f64; 8]; 50];
    dy[49] = [0.1; 8];
    let mut norms = StepNorms::<50>::new(0);
    net.backward(&dy, 0, &mut NearestEven, &mut norms);
    let growth = norms.norms[0] / norms.norms[49];
    assert!(growth >= 1e3, "growth {growth}");
    assert!(
        (growth / 2f64.powi(49) - 1.0).abs() < 1e-9,
        "growth {growth} vs 2^49"
    );
    // The raw update would be astronomically large; after clipping it is at most lr·max_norm.
    let before: Vec<f64> = collect_values(&mut *net);
    let (lr, max_norm) = (0.1, 1.0);
    let total = clip_grad_norm(
        &mut *net,
        max_norm,
        NormType::L2,
        true,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    assert!(total > 1e12, "total norm {total}");
    Sgd::new(lr, 0.0)
        .unwrap()
        .step(&mut *net, 1.0, &mut NearestEven, &mut ())
        .unwrap();
    let after = collect_values(&mut *net);
    let step: f64 = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(step <= lr * max_norm * (1.0 + 1e-5), "update norm {step}");
    assert!(step >= lr * max_norm * 0.99, "update norm {step}");
}

fn collect_values<P: Params<f64> + ?Sized>(p: &mut P) -> Vec<f64> {
    let mut v = Vec::new();
    p.visit(0, &mut |t| v.extend_from_slice(t.value));
    v
}

#[test]
fn irnn_preserves_the_gradient_through_time_where_a_xavier_tanh_rnn_loses_it() {
    // Le et al. 2015: ReLU with W_hh = I, b = 0. With positive inputs every unit stays active, ReLU′ = 1, and
    // ∂L/∂h_t = ∂L/∂h_T at every step.
    let mut irnn: Box<Rnn<f64, 1, 4, 30>> = Box::new(Rnn::new(Act::Relu));
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(2);
    init_matrix(
        &mut irnn.weight_hh,
        &Init::Identity { gain: 1.0 },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    irnn.weight_ih = [[0.1], [0.2], [0.3], [0.4]];
    let x = [[1.0f64]; 30];
    let mut dy = [[0.0f64; 4]; 30];
    dy[29] = [1.0, -1.0, 0.5, 2.0];
    irnn.forward(&x, 0, &mut NearestEven, &mut ());
    let mut norms = StepNorms::<30>::new(0);
    irnn.backward(&dy, 0, &mut NearestEven, &mut norms);
    let last = norms.norms[29];
    assert!(
        norms
            .norms
            .iter()
            .all(|&n| (n - last).abs() <= 1e-12 * last),
        "{:?}",
        norms.norms
    );
    // The same task with a tanh RNN, Xavier-initialized recurrent weights: the gradient shrinks.
    let mut rnn: Box<Rnn<f64, 1, 4, 30>> = Box::new(Rnn::new(Act::Tanh));
    init_matrix(
        &mut rnn.weight_hh,
        &Init::XavierUniform { gain: 1.0 },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    rnn.weight_ih = irnn.weight_ih;
    rnn.forward(&x, 0, &mut NearestEven, &mut ());
    let mut tn = StepNorms::<30>::new(0);
    rnn.backward(&dy, 0, &mut NearestEven, &mut tn);
    assert!(tn.norms[0] < 1e-3 * tn.norms[29], "{:?}", tn.norms);
}

#[test]
fn fixed_point_bptt_shows_underflow_through_time_per_step() {
    // A sigmoid RNN in I16F16 with Xavier recurrent weights and a small loss gradient on the last step: going
    // back in time the signal shrinks (σ′ ≤ ¼) until ∂L/∂h_t is exactly zero; StepNorms shows where.
    let mut net: Box<Rnn<I16F16, 1, 8, 20>> = Box::new(Rnn::new(Act::Sigmoid));
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(5);
    init_matrix(
        &mut net.weight_hh,
        &Init::XavierUniform { gain: 1.0 },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    init_matrix(
        &mut net.weight_ih,
        &Init::XavierUniform { gain: 1.0 },
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    let x = [[I16F16::from_f64(0.5, &mut NearestEven).0]; 20];
    net.forward(&x, 0, &mut NearestEven, &mut ());
    let mut dy = [[I16F16::ZERO; 8]; 20];
    dy[19] = [I16F16::from_f64(0.01, &mut NearestEven).0; 8];
    let mut steps = StepNorms::<20>::new(0);
    net.backward(&dy, 0, &mut NearestEven, &mut steps);
    assert_eq!(steps.zeros[19], 0);
    assert_eq!(steps.zeros[0], 8, "{:?}", steps.zeros);
    assert_eq!(steps.norms[0], 0.0);
    // The zeros appear in order: once a step is all-zero, every earlier one is too.
    let first_dead = steps.zeros.iter().rposition(|&z| z == 8).unwrap();
    assert!(steps.zeros[..=first_dead].iter().all(|&z| z == 8));
    assert!(first_dead < 19);
}

#[test]
fn i1f15_bptt_agrees_with_f64() {
    // Q15 holds [−1, 1): weights ≤ 0.15 and inputs ≤ 0.5 keep every pre-activation in range through 5 steps.
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(16);
    let u = |rng: &mut Xoshiro128PlusPlus| rand_core::Rng::next_u32(rng) as f64 / u32::MAX as f64;
    let q = |v: f64| gradscope_core::I1F15::from_f64(v, &mut NearestEven).0;
    let mut worst = 0.0f64;
    for _ in 0..300 {
        let w: Vec<f64> = (0..N_PARAMS)
            .map(|_| q((u(&mut rng) * 2.0 - 1.0) * 0.15).to_f64())
            .collect();
        let x: [[f64; 2]; T] =
            core::array::from_fn(|_| [0, 1].map(|_| q((u(&mut rng) * 2.0 - 1.0) * 0.5).to_f64()));
        let target: [[f64; 3]; T] = core::array::from_fn(|_| {
            [0, 1, 2].map(|_| q((u(&mut rng) * 2.0 - 1.0) * 0.5).to_f64())
        });
        let (gf, df) = grads(&mut build::<f64>(Act::Tanh, &w, [0.0; 3]), &x, &target);
        let (gq, dq) = grads(
            &mut build::<gradscope_core::I1F15>(Act::Tanh, &w, [0.0; 3]),
            &x.map(|r| r.map(q)),
            &target.map(|r| r.map(q)),
        );
        for (a, b) in gq.iter().chain(&dq).zip(gf.iter().chain(&df)) {
            worst = worst.max((a - b).abs() / gradscope_core::I1F15::LSB);
        }
    }
    // T = 5 steps of ≤ a few LSB each, amplified by < 1 per step back: 64 LSB is a generous bound.
    assert!(worst <= 64.0, "worst gradient error {worst} LSB");
}
