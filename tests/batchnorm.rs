//! Batch normalization: gradients through the batch statistics against f64 central differences, PyTorch's
//! running statistics, and the gradient flow it restores when the weights are badly scaled (Ioffe & Szegedy
//! 2015).

use gradscope_core::{
    Act, ActLayer, BatchNorm, Batched, Dense, Init, Layer, LayerStats, Loss, NearestEven,
    Objective, ParamTensor, Params, Stack, init_slice,
};
use gradscope_suite::big_stack;
use proptest::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

const B: usize = 5;
type Net = (
    (Batched<f64, Dense<f64, 3, 4>, B>, BatchNorm<f64, 4, B>),
    (
        Batched<f64, ActLayer<[f64; 4]>, B>,
        Batched<f64, Dense<f64, 4, 2>, B>,
    ),
);
const N_PARAMS: usize = 3 * 4 + 4 + 4 + 4 + 4 * 2 + 2;

fn build(act: Act, w: &[f64]) -> Net {
    let mut net: Net = (
        (Batched::new(Dense::new(Act::Identity)), BatchNorm::new()),
        (
            Batched::new(ActLayer::new(act)),
            Batched::new(Dense::new(Act::Identity)),
        ),
    );
    let mut it = w.iter();
    net.visit(0, &mut |t: ParamTensor<'_, f64>| {
        for v in t.value.iter_mut() {
            *v = *it.next().unwrap_or(&0.0);
        }
    });
    net
}

/// Mean over the batch of each sample's MSE, and its gradient.
fn run(net: &mut Net, x: &[[f64; 3]; B], t: &[[f64; 2]; B]) -> (f64, [[f64; 2]; B]) {
    let y = net.forward(x, 0, &mut NearestEven, &mut ());
    let mut dy = [[0.0; 2]; B];
    let mut total = 0.0;
    for ((yi, ti), di) in y.iter().zip(t).zip(dy.iter_mut()) {
        total +=
            Objective::new(Loss::Mse).grad(yi, ti, 1.0 / B as f64, di, &mut NearestEven, &mut ())
                / B as f64;
    }
    (total, dy)
}

fn loss_at(w: &[f64], act: Act, x: &[[f64; 3]; B], t: &[[f64; 2]; B]) -> f64 {
    // A fresh net each time: running statistics change on every training-mode forward pass, but the loss in
    // training mode depends only on the batch statistics.
    run(&mut build(act, w), x, t).0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn batchnorm_gradients_match_central_differences(
        a in 0usize..3,
        w in prop::collection::vec(-1.0f64..1.0, N_PARAMS),
        x in prop::array::uniform5(prop::array::uniform3(-1.0f64..1.0)),
        t in prop::array::uniform5(prop::array::uniform2(-1.0f64..1.0)),
    ) {
        let act = [Act::Tanh, Act::Sigmoid, Act::Silu][a];
        let mut net = build(act, &w);
        let (_, dy) = run(&mut net, &x, &t);
        let dx = net.backward(&dy, 0, &mut NearestEven, &mut ());
        let mut g = Vec::new();
        net.visit(0, &mut |p: ParamTensor<'_, f64>| g.extend_from_slice(p.grad));
        let scale = g.iter().chain(dx.as_flattened()).fold(1.0f64, |m, v| m.max(v.abs()));
        let eps = 1e-6;
        for (k, &gk) in g.iter().enumerate() {
            let (mut up, mut down) = (w.clone(), w.clone());
            up[k] += eps;
            down[k] -= eps;
            let n = (loss_at(&up, act, &x, &t) - loss_at(&down, act, &x, &t)) / (2.0 * eps);
            prop_assert!((gk - n).abs() <= 1e-6 * scale + 1e-4 * n.abs(), "{} param {}: {} vs {}", act, k, gk, n);
        }
        for i in 0..3 * B {
            let (mut xp, mut xm) = (x, x);
            xp.as_flattened_mut()[i] += eps;
            xm.as_flattened_mut()[i] -= eps;
            let n = (loss_at(&w, act, &xp, &t) - loss_at(&w, act, &xm, &t)) / (2.0 * eps);
            let d = dx.as_flattened()[i];
            prop_assert!((d - n).abs() <= 1e-6 * scale + 1e-4 * n.abs(), "{} input {}: {} vs {}", act, i, d, n);
        }
    }
}

#[test]
fn running_statistics_follow_pytorch_and_eval_mode_uses_them() {
    let mut bn = BatchNorm::<f64, 2, 4>::new();
    let x = [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 60.0]];
    let y = bn.forward(&x, 0, &mut NearestEven, &mut ());
    // Feature 0: mean 3, biased variance 3.5, unbiased 14/3.
    assert!((bn.running_mean[0] - 0.3).abs() < 1e-12);
    assert!((bn.running_var[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-12);
    let want = (1.0 - 3.0) / (3.5f64 + 1e-5).sqrt();
    assert!((y[0][0] - want).abs() < 1e-12);
    // Each feature of the output has mean 0 and (biased) variance ≈ 1.
    let m: f64 = y.iter().map(|r| r[1]).sum::<f64>() / 4.0;
    let v: f64 = y.iter().map(|r| (r[1] - m).powi(2)).sum::<f64>() / 4.0;
    assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-4);
    bn.training = false;
    let y = bn.forward(&x, 0, &mut NearestEven, &mut ());
    let want = (1.0 - bn.running_mean[0]) / (bn.running_var[0] + 1e-5).sqrt();
    assert!((y[0][0] - want).abs() < 1e-12);
    let dx = bn.backward(&[[1.0, 0.0]; 4], 0, &mut NearestEven, &mut ());
    assert!((dx[0][0] - 1.0 / (bn.running_var[0] + 1e-5).sqrt()).abs() < 1e-12);
}

const W: usize = 16;
const BATCH: usize = 16;
const DEPTH: usize = 10;
type Block = (
    (
        Batched<f64, Dense<f64, W, W>, BATCH>,
        BatchNorm<f64, W, BATCH>,
    ),
    Batched<f64, ActLayer<[f64; W]>, BATCH>,
);

/// RMS of the gradient reaching the input, relative to the output gradient's, for 10 tanh layers with
/// weights N(0, 0.01²): plain, or with batch normalization before each activation.
fn input_gradient_ratio(with_bn: bool) -> f64 {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(2015);
    let mut dense: Vec<Dense<f64, W, W>> = (0..DEPTH).map(|_| Dense::new(Act::Tanh)).collect();
    for d in dense.iter_mut() {
        d.init(
            &Init::Normal {
                mean: 0.0,
                std: 0.01,
            },
            &Init::Zeros,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
    }
    let mut x = [[0.0f64; W]; BATCH];
    init_slice(
        x.as_flattened_mut(),
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
    let mut dy = [[0.0f64; W]; BATCH];
    init_slice(
        dy.as_flattened_mut(),
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
    let rms = |a: &[[f64; W]; BATCH]| {
        (a.as_flattened().iter().map(|v| v * v).sum::<f64>() / (W * BATCH) as f64).sqrt()
    };
    let dx = if with_bn {
        let mut net: Box<Stack<Block, DEPTH>> = Box::new(Stack::from_fn(DEPTH, |k| {
            let mut d = dense[k].clone();
            d.act = Act::Identity;
            (
                (Batched::new(d), BatchNorm::new()),
                Batched::new(ActLayer::new(Act::Tanh)),
            )
        }));
        let mut stats = [LayerStats::default(); 3 * DEPTH];
        net.forward(&x, 0, &mut NearestEven, &mut stats);
        net.backward(&dy, 0, &mut NearestEven, &mut stats)
    } else {
        let mut net: Box<Stack<Batched<f64, Dense<f64, W, W>, BATCH>, DEPTH>> =
            Box::new(Stack::from_fn(DEPTH, |k| Batched::new(dense[k].clone())));
        net.forward(&x, 0, &mut NearestEven, &mut ());
        net.backward(&dy, 0, &mut NearestEven, &mut ())
    };
    rms(&dx) / rms(&dy)
}

#[test]
fn batch_norm_restores_gradient_flow_through_badly_scaled_weights() {
    // Each plain layer multiplies the signal's second moment by n·σ² = 16·10⁻⁴: over 10 layers the gradient
    // falls by about 0.04¹⁰ ≈ 10⁻¹⁴. Batch normalization divides each layer's output by its own scale, so the
    // weight scale cancels from the Jacobian and the gradient survives.
    let plain = big_stack(|| input_gradient_ratio(false));
    let bn = big_stack(|| input_gradient_ratio(true));
    eprintln!("input/output gradient RMS: plain {plain:e}, with batch norm {bn:e}");
    assert!(plain < 1e-10, "plain {plain:e}");
    assert!(bn > 1e-3, "with batch norm {bn:e}");
}
