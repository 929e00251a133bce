//! Backpropagation against f64 central differences, f32 against f64, the optimizer's NaN guard, deep stacks,
//! and the papers' effects (He et al. 2015; Hochreiter 1991) as asserted numbers.

use gradscope_core::layer::Probes;
use gradscope_core::{
    Act, Dense, DenseStack, FanMode, Flags, GradStats, I16F16, Init, Layer, LayerStats, Loss,
    NearestEven, Nonlinearity, Objective, Optimizer, ParamTensor, Params, Scalar, Sgd, Stack,
    StepCtx, StepError, Verdict, step, train::Cause,
};
use gradscope_suite::big_stack;
use proptest::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

type Net<S> = (Dense<S, 3, 4>, Dense<S, 4, 2>);

fn acts() -> Vec<Act> {
    let mut a = Act::all().to_vec();
    a.extend([Act::leaky_relu(0.2), Act::elu(0.5), Act::softplus(2.0)].map(Result::unwrap));
    a
}

/// Kinks and regime switches, where central differences are not valid.
fn kinks(act: &Act) -> Vec<f64> {
    match act {
        Act::Relu | Act::LeakyRelu(_) | Act::Elu(_) | Act::Selu => vec![0.0],
        Act::HardSigmoid => vec![-3.0, 3.0],
        Act::HardTanh => vec![-1.0, 1.0],
        Act::Softplus(b) => vec![20.0 / b.value() as f64],
        _ => vec![],
    }
}

fn build<S: Scalar>(a1: Act, a2: Act, w: &[f64]) -> Net<S> {
    let mut net: Net<S> = (Dense::new(a1), Dense::new(a2));
    let mut it = w.iter();
    net.visit(0, &mut |t: ParamTensor<'_, S>| {
        for v in t.value.iter_mut() {
            *v = S::from_f64(*it.next().unwrap_or(&0.0), &mut NearestEven).0;
        }
    });
    net
}

fn loss_of(net: &mut Net<f64>, x: &[f64; 3], t: &[f64; 2], loss: Loss) -> f64 {
    let y = net.forward(x, 0, &mut NearestEven, &mut ());
    let mut dy = [0.0; 2];
    Objective::new(loss).grad(&y, t, 1.0, &mut dy, &mut NearestEven, &mut ())
}

/// Backprop's parameter and input gradients for one sample.
fn backprop<S: Scalar>(net: &mut Net<S>, x: &[S; 3], t: &[S; 2], loss: Loss) -> (Vec<f64>, Vec<f64>)
where
    Act: gradscope_core::Activate<S>,
{
    net.zero_grad();
    let y = net.forward(x, 0, &mut NearestEven, &mut ());
    let mut dy = [S::ZERO; 2];
    Objective::new(loss).grad(&y, t, 1.0, &mut dy, &mut NearestEven, &mut ());
    let dx = net.backward(&dy, 0, &mut NearestEven, &mut ());
    let mut g = Vec::new();
    net.visit(0, &mut |p: ParamTensor<'_, S>| {
        g.extend(p.grad.iter().map(|v| v.to_f64()))
    });
    (g, dx.iter().map(|v| v.to_f64()).collect())
}

fn set_param(net: &mut Net<f64>, k: usize, value: f64) {
    let mut i = 0;
    net.visit(0, &mut |t: ParamTensor<'_, f64>| {
        for v in t.value.iter_mut() {
            if i == k {
                *v = value;
            }
            i += 1;
        }
    });
}

const N_PARAMS: usize = 3 * 4 + 4 + 4 * 2 + 2;

fn close(a: f64, n: f64, scale: f64) -> bool {
    (a - n).abs() <= 1e-6 * scale.max(1.0) + 1e-4 * n.abs()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gradients_match_f64_central_differences(
        a1 in 0usize..17, a2 in 0usize..17, l in 0usize..3,
        w in prop::collection::vec(-1.5f64..1.5, N_PARAMS),
        x in prop::array::uniform3(-2.0f64..2.0),
        t in prop::array::uniform2(0.0f64..1.0),
    ) {
        let (acts, losses) = (acts(), [Loss::Mse, Loss::BceWithLogits, Loss::SoftmaxCrossEntropy]);
        let (a1, a2, loss) = (acts[a1], acts[a2], losses[l]);
        let mut net = build::<f64>(a1, a2, &w);
        let _ = net.forward(&x, 0, &mut NearestEven, &mut ());
        let near = |act: &Act, z: &[f64]| z.iter().any(|&zi| kinks(act).iter().any(|k| (zi - k).abs() < 1e-4));
        prop_assume!(!near(&a1, net.0.pre_activation()) && !near(&a2, net.1.pre_activation()));
        let (g, dx) = backprop(&mut net, &x, &t, loss);
        let scale = g.iter().chain(&dx).fold(0.0f64, |m, v| m.max(v.abs()));
        let eps = 1e-6;
        for (k, &gk) in g.iter().enumerate() {
            let w0 = w[k];
            set_param(&mut net, k, w0 + eps);
            let up = loss_of(&mut net, &x, &t, loss);
            set_param(&mut net, k, w0 - eps);
            let down = loss_of(&mut net, &x, &t, loss);
            set_param(&mut net, k, w0);
            let numeric = (up - down) / (2.0 * eps);
            prop_assert!(close(gk, numeric, scale), "{} {} {:?} param {}: {} vs {}", a1, a2, loss, k, gk, numeric);
        }
        for (i, &d) in dx.iter().enumerate() {
            let (mut xp, mut xm) = (x, x);
            xp[i] += eps;
            xm[i] -= eps;
            let numeric = (loss_of(&mut net, &xp, &t, loss) - loss_of(&mut net, &xm, &t, loss)) / (2.0 * eps);
            prop_assert!(close(d, numeric, scale), "{} {} {:?} input {}: {} vs {}", a1, a2, loss, i, d, numeric);
        }
    }

    #[test]
    fn f32_gradients_agree_with_f64(
        a1 in 0usize..17, a2 in 0usize..17, l in 0usize..3,
        w in prop::collection::vec(-1.5f64..1.5, N_PARAMS),
        x in prop::array::uniform3(-2.0f32..2.0),
        t in prop::array::uniform2(0.0f32..1.0),
    ) {
        let (acts, losses) = (acts(), [Loss::Mse, Loss::BceWithLogits, Loss::SoftmaxCrossEntropy]);
        let (a1, a2, loss) = (acts[a1], acts[a2], losses[l]);
        // Weights rounded to f32 first, so both nets compute the same function.
        let w32: Vec<f64> = w.iter().map(|&v| v as f32 as f64).collect();
        let mut n64 = build::<f64>(a1, a2, &w32);
        let mut n32 = build::<f32>(a1, a2, &w32);
        let _ = n64.forward(&x.map(f64::from), 0, &mut NearestEven, &mut ());
        let near = |act: &Act, z: &[f64]| z.iter().any(|&zi| kinks(act).iter().any(|k| (zi - k).abs() < 1e-3));
        prop_assume!(!near(&a1, n64.0.pre_activation()) && !near(&a2, n64.1.pre_activation()));
        let (g64, d64) = backprop(&mut n64, &x.map(f64::from), &t.map(f64::from), loss);
        let (g32, d32) = backprop(&mut n32, &x, &t, loss);
        let scale = g64.iter().chain(&d64).fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
        // 1e-4 of the largest gradient, plus 1e-5 absolute: derivatives near saturation are differences of
        // O(1) values (GELU-tanh's 1 + tanh(u) with tanh(u) ≈ −1, as in PyTorch's f32 backward), so f32 errs by a
        // few ulps of O(1), amplified by |W|·|x| ≈ 2.5 along the chain. (Correctness is the f64 check above.)
        for (a, b) in g32.iter().chain(&d32).zip(g64.iter().chain(&d64)) {
            prop_assert!((a - b).abs() <= 1e-4 * scale + 1e-5, "{} {} {:?}: {} vs {}", a1, a2, loss, a, b);
        }
    }
}

#[test]
fn fixed_point_gradients_agree_with_f64_within_lsb_bounds() {
    // I16F16 against f64 on the same (quantized) weights: forward values carry ≤ ½ LSB from the affine map and
    // ≤ 1 LSB from the activation; each backward step adds ≤ 1 LSB per rounding and multiplies earlier errors by
    // at most fan·max|w| (≤ 4·1.5). With two layers that bounds every gradient by 64 LSB.
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(3);
    let mut worst = 0.0f64;
    for case in 0..500 {
        let u =
            |rng: &mut Xoshiro128PlusPlus| rand_core::Rng::next_u32(rng) as f64 / u32::MAX as f64;
        let w: Vec<f64> = (0..N_PARAMS)
            .map(|_| (u(&mut rng) * 3.0 - 1.5) * 0.999)
            .collect();
        let wq: Vec<f64> = w
            .iter()
            .map(|&v| I16F16::from_f64(v, &mut NearestEven).0.to_f64())
            .collect();
        let x = [0, 1, 2].map(|_| I16F16::from_f64(u(&mut rng) * 2.0 - 1.0, &mut NearestEven).0);
        let t = [0, 1].map(|_| I16F16::from_f64(u(&mut rng), &mut NearestEven).0);
        let acts = [Act::Tanh, Act::Sigmoid, Act::Relu, Act::Silu, Act::Gelu];
        let (a1, a2) = (acts[case % 5], acts[(case / 5) % 5]);
        let mut nq = build::<I16F16>(a1, a2, &wq);
        let mut nf = build::<f64>(a1, a2, &wq);
        let (gq, dq) = backprop(&mut nq, &x, &t, Loss::Mse);
        let (gf, df) = backprop(
            &mut nf,
            &x.map(|v| v.to_f64()),
            &t.map(|v| v.to_f64()),
            Loss::Mse,
        );
        // Within one LSB of a kink (ReLU at 0) rounding may flip the derivative itself: no LSB bound exists.
        if near_kink_lsb(&a1, nf.0.pre_activation(), I16F16::LSB)
            || near_kink_lsb(&a2, nf.1.pre_activation(), I16F16::LSB)
        {
            continue;
        }
        for (a, b) in gq.iter().chain(&dq).zip(gf.iter().chain(&df)) {
            worst = worst.max((a - b).abs() / I16F16::LSB);
        }
    }
    assert!(worst <= 64.0, "worst gradient error {worst} LSB");
}

#[test]
fn a_nan_gradient_stops_the_step_and_leaves_weights_unchanged() {
    let mut net: Net<f32> = (Dense::new(Act::Tanh), Dense::new(Act::Identity));
    net.0.weight[1][2] = 0.5;
    net.1.grad_bias[1] = f32::NAN;
    let before = net.clone();
    let mut sgd = Sgd::new(0.1, 0.01).unwrap();
    assert_eq!(
        sgd.step(&mut net, 1.0, &mut NearestEven, &mut ()),
        Err(StepError::NonFiniteGradient {
            tensor: 3,
            element: 1,
            layer: 1
        })
    );
    assert_eq!(net.0, before.0);
    assert_eq!(net.1.weight, before.1.weight);
    assert!(
        Sgd::new(0.0, 0.0).is_err()
            && Sgd::new(f64::NAN, 0.0).is_err()
            && Sgd::new(0.1, -1.0).is_err()
    );
    // A finite step moves the weights by lr·(g + λw).
    net.1.grad_bias[1] = 2.0;
    net.0.grad_weight[1][2] = 1.0;
    sgd.step(&mut net, 1.0, &mut NearestEven, &mut ()).unwrap();
    assert_eq!(net.1.bias[1], -0.2);
    assert_eq!(net.0.weight[1][2], 0.5 - 0.1 * (1.0 + 0.01 * 0.5));
}

/// Forward std of the output and the norm of the first layer's weight gradient, over a batch of N(0, 1) inputs,
/// for a `depth`-layer ReLU stack of width 32 under `init` (biases zero), with MSE against zero targets.
fn relu_stack_signal(init: Init, depth: usize) -> (f64, f64) {
    let mut s: Box<DenseStack<f32, 32, 30>> = Box::new(Stack::new(Act::Relu, depth));
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(30);
    s.init(&init, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
        .unwrap();
    let (mut sq, mut n) = (0.0f64, 0usize);
    let batch = 64;
    for _ in 0..batch {
        let mut x = [0.0f32; 32];
        gradscope_core::init_slice(
            &mut x,
            &Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
            1,
            1,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
        let y = s.forward(&x, 0, &mut NearestEven, &mut ());
        sq += y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        n += 32;
        let mut dy = [0.0f32; 32];
        Objective::new(Loss::Mse).grad(
            &y,
            &[0.0; 32],
            1.0 / batch as f64,
            &mut dy,
            &mut NearestEven,
            &mut (),
        );
        s.backward(&dy, 0, &mut NearestEven, &mut ());
    }
    let g0 = s.layers[0]
        .grad_weight
        .as_flattened()
        .iter()
        .map(|&v| (v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    ((sq / n as f64).sqrt(), g0)
}

#[test]
fn he_init_keeps_a_30_layer_relu_stack_alive_where_xavier_does_not() {
    // He et al. 2015: with Xavier (gain 1) each ReLU layer halves the second moment, 2^-30 after 30 layers
    // (std 2^-15); He's gain √2 preserves it.
    let (he_std, he_g) = big_stack(|| {
        relu_stack_signal(
            Init::KaimingNormal {
                slope: 0.0,
                mode: FanMode::FanIn,
                nonlinearity: Nonlinearity::Relu,
            },
            30,
        )
    });
    let (xa_std, xa_g) = big_stack(|| relu_stack_signal(Init::XavierNormal { gain: 1.0 }, 30));
    assert!(
        he_std / xa_std >= 1e3,
        "forward std: He {he_std}, Xavier {xa_std}"
    );
    assert!(
        he_g / xa_g >= 1e3,
        "first-layer gradient norm: He {he_g}, Xavier {xa_g}"
    );
    // And the halving itself: std ratio within a factor 4 of 2^15.
    let ratio = he_std / xa_std;
    assert!(
        ratio > 2f64.powi(13) && ratio < 2f64.powi(17),
        "ratio {ratio}"
    );
}

#[test]
fn sigmoid_chain_shrinks_as_the_product_of_w_sigma_prime() {
    // Hochreiter 1991: ∂h_T/∂h_0 = Π_t w·σ′(z_t), and |w·σ′| ≤ |w|/4 < 1 for |w| < 4.
    for w in [0.5f64, 1.0, 2.0, 3.5, -3.0] {
        let t_max = 40;
        let mut s: Box<DenseStack<f64, 1, 40>> = Box::new(Stack::new(Act::Sigmoid, t_max));
        for l in s.active_mut() {
            l.weight = [[w]];
            l.bias = [0.1];
        }
        let _ = s.forward(&[0.3], 0, &mut NearestEven, &mut ());
        let product: f64 = s
            .active()
            .iter()
            .map(|l| w * l.output()[0] * (1.0 - l.output()[0]))
            .product();
        let dx = s.backward(&[1.0], 0, &mut NearestEven, &mut ())[0];
        assert!(
            (dx - product).abs() <= 1e-12 * product.abs(),
            "w {w}: {dx} vs {product}"
        );
        assert!(
            dx.abs() <= (w.abs() / 4.0).powi(t_max as i32),
            "w {w}: {dx}"
        );
    }
}

#[test]
fn a_64_deep_32_wide_stack_runs_in_f32_and_i16f16_with_per_layer_stats() {
    big_stack(|| {
        let mut s: Box<DenseStack<I16F16, 32, 64>> = Box::new(Stack::new(Act::Sigmoid, 64));
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(64);
        s.init(
            &Init::XavierUniform { gain: 1.0 },
            &Init::Zeros,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
        let mut stats = [LayerStats::default(); 64];
        let x = [I16F16::from_f64(0.5, &mut NearestEven).0; 32];
        let y = s.forward(&x, 0, &mut NearestEven, &mut stats);
        let dy = y.map(|v| v.sub(I16F16::from_f64(0.25, &mut NearestEven).0).0);
        s.backward(&dy, 0, &mut NearestEven, &mut stats);
        // Every layer produced 32 pre-activations and 32 outputs, and 32·32 + 32 gradient values.
        assert!(
            stats
                .iter()
                .all(|st| st.forward.values == 64 && st.grad.values == 32 * 32 + 32)
        );
        // Sigmoid backprop vanishes with depth: the backward signal underflows to zero on its way down, after
        // which the first layer's gradients are exactly zero while the last layer's are not.
        let first = GradStats::of(&mut s.layers[0]);
        let last = GradStats::of(&mut s.layers[63]);
        assert_eq!((first.zero_fraction(), first.norm), (1.0, 0.0));
        assert!(last.zero_fraction() < 1.0 && last.norm > 0.0, "{last:?}");
        let lost: u32 = stats.iter().map(|st| st.backward.underflow).sum();
        assert!(lost > 0, "no backward underflow recorded");
        let mut f = Box::new(DenseStack::<f32, 32, 64>::new(Act::Relu, 64));
        f.init(
            &Init::KaimingNormal {
                slope: 0.0,
                mode: FanMode::FanIn,
                nonlinearity: Nonlinearity::Relu,
            },
            &Init::Zeros,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
        let y = f.forward(&[1.0; 32], 0, &mut NearestEven, &mut ());
        let dx = f.backward(&y, 0, &mut NearestEven, &mut ());
        // ReLU under He init carries the signal through all 64 layers in f32: finite, non-zero input gradients
        // and a non-zero first-layer gradient.
        assert!(
            dx.iter().all(|v| v.is_finite()) && dx.iter().any(|&v| v != 0.0),
            "{dx:?}"
        );
        assert!(GradStats::of(&mut f.layers[0]).norm > 0.0);
        let mut sink = Flags::NONE;
        struct Sticky<'a>(&'a mut Flags);
        impl Probes for Sticky<'_> {
            fn record(&mut self, _: usize, _: gradscope_core::Phase, f: Flags) {
                *self.0 |= f;
            }
        }
        f.forward(&[f32::NAN; 32], 0, &mut NearestEven, &mut Sticky(&mut sink));
        assert!(sink.contains(Flags::NONFINITE));
    });
}

#[test]
fn gradients_accumulate_over_a_batch_to_the_gradient_of_the_mean_loss() {
    // Three samples, forward/backward each with the 1/batch factor in the loss gradient, no zero_grad in
    // between: the accumulated gradient must be that of the batch-mean loss (central differences in f64).
    let w: Vec<f64> = (0..N_PARAMS)
        .map(|k| ((k * 37 % 23) as f64 - 11.0) / 10.0)
        .collect();
    let xs = [[0.3, -1.2, 0.7], [1.1, 0.4, -0.5], [-0.8, 0.9, 1.6]];
    let ts = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]];
    for loss in [Loss::Mse, Loss::BceWithLogits, Loss::SoftmaxCrossEntropy] {
        let mut net = build::<f64>(Act::Tanh, Act::elu(1.0).unwrap(), &w);
        net.zero_grad();
        for (x, t) in xs.iter().zip(&ts) {
            let y = net.forward(x, 0, &mut NearestEven, &mut ());
            let mut dy = [0.0; 2];
            Objective::new(loss).grad(
                &y,
                t,
                1.0 / (xs.len()) as f64,
                &mut dy,
                &mut NearestEven,
                &mut (),
            );
            net.backward(&dy, 0, &mut NearestEven, &mut ());
        }
        let mut g = Vec::new();
        net.visit(0, &mut |p: ParamTensor<'_, f64>| {
            g.extend(p.grad.iter().copied())
        });
        let mean_loss = |net: &mut Net<f64>| {
            xs.iter()
                .zip(&ts)
                .map(|(x, t)| loss_of(net, x, t, loss))
                .sum::<f64>()
                / 3.0
        };
        for (k, &gk) in g.iter().enumerate() {
            set_param(&mut net, k, w[k] + 1e-6);
            let up = mean_loss(&mut net);
            set_param(&mut net, k, w[k] - 1e-6);
            let down = mean_loss(&mut net);
            set_param(&mut net, k, w[k]);
            let numeric = (up - down) / 2e-6;
            assert!(
                close(gk, numeric, 1.0),
                "{loss:?} param {k}: {gk} vs {numeric}"
            );
        }
    }
}

/// RMS norm of the signal each layer sends backward, for a 5-layer tanh stack of width 128 under `init`
/// (biases zero), over 32 samples with inputs U(−1, 1) and random N(0, 1) output gradients.
fn tanh_backward_norms(init: Init) -> [f64; 5] {
    let mut s: Box<DenseStack<f64, 128, 5>> = Box::new(Stack::new(Act::Tanh, 5));
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(2010);
    s.init(&init, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
        .unwrap();
    let mut stats = [LayerStats::default(); 5];
    for _ in 0..32 {
        let mut x = [0.0f64; 128];
        let mut dy = [0.0f64; 128];
        let u = Init::Uniform { a: -1.0, b: 1.0 };
        gradscope_core::init_slice(&mut x, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).unwrap();
        let n = Init::Normal {
            mean: 0.0,
            std: 1.0,
        };
        gradscope_core::init_slice(&mut dy, &n, 1, 1, &mut rng, &mut NearestEven, &mut ()).unwrap();
        s.forward(&x, 0, &mut NearestEven, &mut stats);
        s.backward(&dy, 0, &mut NearestEven, &mut stats);
    }
    stats.map(|st| st.backward_rms_norm())
}

#[test]
fn glorot_bengio_standard_init_shrinks_backprop_by_sqrt_one_third_per_layer_xavier_does_not() {
    // With U(±1/√n), n·Var(W) = 1/3: the back-propagated signal's std shrinks by √(1/3) ≈ 0.577 per layer
    // (tanh′ ≈ 1 while the activations are small). Xavier (n·Var(W) = 1) keeps it within a factor 2.
    let std = big_stack(|| tanh_backward_norms(Init::Standard));
    for k in 0..4 {
        let ratio = std[k] / std[k + 1]; // layer k is further from the output than k + 1
        assert!(
            (ratio - (1.0f64 / 3.0).sqrt()).abs() < 0.06,
            "standard: layer {k}/{} ratio {ratio}",
            k + 1
        );
    }
    let xavier = big_stack(|| tanh_backward_norms(Init::XavierUniform { gain: 1.0 }));
    let (lo, hi) = xavier
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(hi / lo < 2.0, "xavier: {xavier:?}");
}

#[test]
fn a_diverging_step_reports_layer_and_cause_and_leaves_the_weights_unchanged() {
    // Four f32 layers. Step 0 is clean. Before step 1 layer 2's weights blow up (as after a bad update), so
    // its pre-activations overflow to ∞ (the cause) and the non-finite values reach every gradient. The
    // training step's verdict names the layer, the pass and the cause, and nothing is updated.
    big_stack(|| {
        let mut s: Box<DenseStack<f32, 8, 4>> = Box::new(DenseStack::new(Act::Identity, 4));
        for l in s.active_mut() {
            l.weight = [[0.125; 8]; 8];
        }
        let mut ctx = StepCtx::new(Loss::Mse, Sgd::new(0.01, 0.0).unwrap(), NearestEven);
        let data = [([1.0f32; 8], [0.5f32; 8])];
        for step_no in 0..2u32 {
            if step_no == 1 {
                s.layers[2].weight = [[1e38; 8]; 8];
            }
            let before = s.clone();
            let mut stats = [LayerStats::default(); 4];
            let report = step(&mut *s, &data[..], &mut ctx, &mut stats);
            match step_no {
                0 => {
                    assert_eq!(gradscope_core::NonFinite::locate(&stats), None);
                    assert_eq!(report.verdict, Verdict::Updated);
                    assert_ne!(s.layers[0].weight, before.layers[0].weight);
                }
                _ => {
                    let nf = gradscope_core::NonFinite::locate(&stats).expect("non-finite located");
                    assert_eq!(
                        (nf.layer, nf.phase, nf.overflow),
                        (2, gradscope_core::Phase::Forward, true)
                    );
                    let Verdict::Diverged(d) = report.verdict else {
                        panic!("{:?}", report.verdict)
                    };
                    assert_eq!(
                        (d.layer, d.phase),
                        (Some(2), Some(gradscope_core::Phase::Forward))
                    );
                    assert!(matches!(d.cause, Cause::NonFinite { overflow: true, .. }));
                    let params = |l: &Dense<f32, 8, 8>| (l.weight, l.bias);
                    assert!(
                        s.layers
                            .iter()
                            .map(params)
                            .eq(before.layers.iter().map(params)),
                        "weights changed"
                    );
                    assert!(GradStats::of(&mut s.layers[0]).nonfinite > 0);
                }
            }
        }
    });
}

#[test]
fn stochastic_rounding_keeps_sub_lsb_gradients_alive_on_average() {
    // A 6-layer sigmoid stack in I16F16 with a small output gradient: by the first layer the gradients are
    // far below one LSB. Nearest-even rounds them all to zero. Stochastic rounding in the backward pass is
    // unbiased (every backward operation is linear in the signal and each rounding's error has mean zero), so
    // the mean over many backward passes approaches the exact gradient.
    use gradscope_core::Stochastic;
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(11);
    let mut q: Box<DenseStack<I16F16, 8, 6>> = Box::new(DenseStack::new(Act::Sigmoid, 6));
    q.init(
        &Init::XavierUniform { gain: 1.0 },
        &Init::Zeros,
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    // The same (quantized) weights in f64: the reference.
    let mut f: Box<DenseStack<f64, 8, 6>> = Box::new(DenseStack::new(Act::Sigmoid, 6));
    for (lf, lq) in f.layers.iter_mut().zip(&q.layers) {
        lf.weight = lq.weight.map(|r| r.map(|v| v.to_f64()));
    }
    let xq = [0.5, -0.25, 0.75, 0.1, -0.6, 0.3, 0.9, -0.8]
        .map(|v| I16F16::from_f64(v, &mut NearestEven).0);
    let dyq = [2e-3, -2e-3, 2e-3, 2e-3, -2e-3, 2e-3, -2e-3, 2e-3]
        .map(|v| I16F16::from_f64(v, &mut NearestEven).0);
    f.forward(&xq.map(|v| v.to_f64()), 0, &mut NearestEven, &mut ());
    f.backward(&dyq.map(|v| v.to_f64()), 0, &mut NearestEven, &mut ());
    let exact: Vec<f64> = f.layers[0].grad_weight.as_flattened().to_vec();
    let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        scale < 0.5 * I16F16::LSB,
        "the first layer's gradients must be below half an LSB: {scale:e}"
    );
    // Nearest-even: every first-layer gradient is exactly zero.
    q.zero_grad();
    q.forward(&xq, 0, &mut NearestEven, &mut ());
    q.backward(&dyq, 0, &mut NearestEven, &mut ());
    assert!(
        q.layers[0]
            .grad_weight
            .as_flattened()
            .iter()
            .all(|v| v.is_zero())
    );
    // Stochastic: average 4000 backward passes (forward rounded to nearest, so it is the same every time).
    let runs = 4000;
    let mut sum = vec![0.0f64; 64];
    let mut st = Stochastic(Xoshiro128PlusPlus::seed_from_u64(12));
    for _ in 0..runs {
        q.zero_grad();
        q.forward(&xq, 0, &mut NearestEven, &mut ());
        q.backward(&dyq, 0, &mut st, &mut ());
        for (s, v) in sum.iter_mut().zip(q.layers[0].grad_weight.as_flattened()) {
            *s += v.to_f64();
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / runs as f64).collect();
    // Each sample is 0 or ±1 LSB (mostly), so the standard error is at most LSB/√runs ≈ 2.4e-7; allow 4σ plus
    // the forward pass's own quantization (a few per cent of the gradient).
    let tol = 4.0 * I16F16::LSB / (runs as f64).sqrt() + 0.05 * scale;
    for (m, e) in mean.iter().zip(&exact) {
        assert!(
            (m - e).abs() <= tol,
            "mean {m:e} vs exact {e:e} (tol {tol:e})"
        );
    }
    let nonzero = mean.iter().filter(|m| **m != 0.0).count();
    assert!(nonzero >= 60, "only {nonzero} of 64 gradients survived");
}

/// Central-difference check of `Dense<I, H> → Dense<H, O>` with the given activations, weights and sample.
fn gradcheck_shape<const I: usize, const H: usize, const O: usize>(
    a1: Act,
    a2: Act,
    loss: Loss,
    w: &[f64],
    x: &[f64],
    t: &[f64],
) -> Result<(), String> {
    let mut net: (Dense<f64, I, H>, Dense<f64, H, O>) = (Dense::new(a1), Dense::new(a2));
    let mut it = w.iter().cycle();
    net.visit(0, &mut |p: ParamTensor<'_, f64>| {
        p.value
            .iter_mut()
            .for_each(|v| *v = *it.next().unwrap_or(&0.0))
    });
    let x: [f64; I] = core::array::from_fn(|i| x[i % x.len()]);
    let t: [f64; O] = core::array::from_fn(|i| t[i % t.len()]);
    let loss_of = |net: &mut (Dense<f64, I, H>, Dense<f64, H, O>), x: &[f64; I]| {
        let y = net.forward(x, 0, &mut NearestEven, &mut ());
        Objective::new(loss).grad(&y, &t, 1.0, &mut [0.0; O], &mut NearestEven, &mut ())
    };
    let y = net.forward(&x, 0, &mut NearestEven, &mut ());
    let near = |act: &Act, z: &[f64]| {
        z.iter()
            .any(|&zi| kinks(act).iter().any(|k| (zi - k).abs() < 1e-4))
    };
    if near(&a1, net.0.pre_activation()) || near(&a2, net.1.pre_activation()) {
        return Ok(()); // a kink: central differences do not apply
    }
    let mut dy = [0.0; O];
    Objective::new(loss).grad(&y, &t, 1.0, &mut dy, &mut NearestEven, &mut ());
    net.zero_grad();
    let dx = net.backward(&dy, 0, &mut NearestEven, &mut ());
    let (mut vals, mut grads) = (Vec::new(), Vec::new());
    net.visit(0, &mut |p: ParamTensor<'_, f64>| {
        vals.extend_from_slice(p.value);
        grads.extend_from_slice(p.grad);
    });
    let scale = grads.iter().chain(&dx).fold(1.0f64, |m, v| m.max(v.abs()));
    let eps = 1e-6;
    for k in 0..vals.len() {
        let mut bump = |delta: f64| {
            let mut i = 0;
            net.visit(0, &mut |p: ParamTensor<'_, f64>| {
                for v in p.value.iter_mut() {
                    if i == k {
                        *v = vals[k] + delta;
                    }
                    i += 1;
                }
            });
            loss_of(&mut net, &x)
        };
        let n = (bump(eps) - bump(-eps)) / (2.0 * eps);
        bump(0.0);
        if !close(grads[k], n, scale) {
            return Err(format!(
                "{I}x{H}x{O} {a1} {a2} {loss:?} param {k}: {} vs {n}",
                grads[k]
            ));
        }
    }
    for i in 0..I {
        let (mut xp, mut xm) = (x, x);
        xp[i] += eps;
        xm[i] -= eps;
        let n = (loss_of(&mut net, &xp) - loss_of(&mut net, &xm)) / (2.0 * eps);
        if !close(dx[i], n, scale) {
            return Err(format!(
                "{I}x{H}x{O} {a1} {a2} {loss:?} input {i}: {} vs {n}",
                dx[i]
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gradients_match_on_random_shapes(
        shape in 0usize..6, a1 in 0usize..17, a2 in 0usize..17, l in 0usize..3,
        w in prop::collection::vec(-1.5f64..1.5, 1..64),
        x in prop::collection::vec(-2.0f64..2.0, 1..16),
        t in prop::collection::vec(0.0f64..1.0, 1..8),
    ) {
        let (acts, losses) = (acts(), [Loss::Mse, Loss::BceWithLogits, Loss::SoftmaxCrossEntropy]);
        let (a1, a2, loss) = (acts[a1], acts[a2], losses[l]);
        // The shape is drawn at run time from a set of compiled instances (sizes are types).
        let r = match shape {
            0 => gradcheck_shape::<1, 1, 1>(a1, a2, loss, &w, &x, &t),
            1 => gradcheck_shape::<2, 5, 3>(a1, a2, loss, &w, &x, &t),
            2 => gradcheck_shape::<7, 2, 4>(a1, a2, loss, &w, &x, &t),
            3 => gradcheck_shape::<5, 8, 1>(a1, a2, loss, &w, &x, &t),
            4 => gradcheck_shape::<1, 6, 6>(a1, a2, loss, &w, &x, &t),
            _ => gradcheck_shape::<12, 3, 2>(a1, a2, loss, &w, &x, &t),
        };
        prop_assert_eq!(r, Ok(()));
    }
}

#[test]
fn i1f15_gradients_agree_with_f64_within_lsb_bounds() {
    // Q15 holds [−1, 1): weights ≤ 0.2, inputs ≤ 0.5, targets ≤ 0.5 keep every pre-activation and gradient in
    // range. The same error budget as for I16F16 (≤ 1 LSB per rounding, amplified by fan·max|w| < 1 here)
    // bounds every gradient by 64 LSB.
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(15);
    let u = |rng: &mut Xoshiro128PlusPlus| rand_core::Rng::next_u32(rng) as f64 / u32::MAX as f64;
    let (mut worst, mut skipped) = (0.0f64, 0);
    for case in 0..500 {
        let q = |v: f64| gradscope_core::I1F15::from_f64(v, &mut NearestEven).0;
        let w: Vec<f64> = (0..N_PARAMS)
            .map(|_| q((u(&mut rng) * 2.0 - 1.0) * 0.2).to_f64())
            .collect();
        let x = [0, 1, 2].map(|_| q((u(&mut rng) * 2.0 - 1.0) * 0.5));
        let t = [0, 1].map(|_| q(u(&mut rng) * 0.5));
        let acts = [Act::Tanh, Act::Sigmoid, Act::Relu, Act::Silu, Act::Gelu];
        let (a1, a2) = (acts[case % 5], acts[(case / 5) % 5]);
        let mut nq = build::<gradscope_core::I1F15>(a1, a2, &w);
        let mut nf = build::<f64>(a1, a2, &w);
        let (gq, dq) = backprop(&mut nq, &x, &t, Loss::Mse);
        let (gf, df) = backprop(
            &mut nf,
            &x.map(|v| v.to_f64()),
            &t.map(|v| v.to_f64()),
            Loss::Mse,
        );
        // Within one LSB of a kink (ReLU at 0) rounding may flip the derivative itself: no LSB bound exists.
        if near_kink_lsb(&a1, nf.0.pre_activation(), gradscope_core::I1F15::LSB)
            || near_kink_lsb(&a2, nf.1.pre_activation(), gradscope_core::I1F15::LSB)
        {
            skipped += 1;
            continue;
        }
        for (a, b) in gq.iter().chain(&dq).zip(gf.iter().chain(&df)) {
            worst = worst.max((a - b).abs() / gradscope_core::I1F15::LSB);
        }
    }
    assert!(skipped < 50, "{skipped} of 500 cases were at a kink");
    assert!(worst <= 64.0, "worst gradient error {worst} LSB");
}

fn near_kink_lsb(act: &Act, z: &[f64], lsb: f64) -> bool {
    z.iter()
        .any(|&zi| kinks(act).iter().any(|k| (zi - k).abs() <= lsb))
}
