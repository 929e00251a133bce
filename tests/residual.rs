//! Residual connections: exact gradients through the identity path, and gradient flow that a plain stack
//! loses (He et al. 2016), in f64 and in fixed point.

use gradscope_core::{
    Act, Activate, Dense, I16F16, Init, Layer, LayerStats, Loss, NearestEven, Objective,
    ParamTensor, Params, Residual, Scalar, Stack, init_slice,
};
use gradscope_suite::big_stack;
use proptest::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

type Net = (Residual<Dense<f64, 3, 3>>, Dense<f64, 3, 2>);

fn loss_of(net: &mut Net, x: &[f64; 3], t: &[f64; 2]) -> f64 {
    let y = net.forward(x, 0, &mut NearestEven, &mut ());
    Objective::new(Loss::Mse).grad(&y, t, 1.0, &mut [0.0; 2], &mut NearestEven, &mut ())
}

fn set(net: &mut Net, k: usize, v: f64) {
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
    fn residual_gradients_match_central_differences(
        w in prop::collection::vec(-1.0f64..1.0, 3 * 3 + 3 + 3 * 2 + 2),
        x in prop::array::uniform3(-1.0f64..1.0),
        t in prop::array::uniform2(-1.0f64..1.0),
        a in 0usize..3,
    ) {
        let act = [Act::Tanh, Act::Sigmoid, Act::Silu][a];
        let mut net: Net = (Residual(Dense::new(act)), Dense::new(Act::Identity));
        for (k, &v) in w.iter().enumerate() {
            set(&mut net, k, v);
        }
        let y = net.forward(&x, 0, &mut NearestEven, &mut ());
        let mut dy = [0.0; 2];
        Objective::new(Loss::Mse).grad(&y, &t, 1.0, &mut dy, &mut NearestEven, &mut ());
        let dx = net.backward(&dy, 0, &mut NearestEven, &mut ());
        let mut g = Vec::new();
        net.visit(0, &mut |p: ParamTensor<'_, f64>| g.extend_from_slice(p.grad));
        let eps = 1e-6;
        for (k, &gk) in g.iter().enumerate() {
            set(&mut net, k, w[k] + eps);
            let up = loss_of(&mut net, &x, &t);
            set(&mut net, k, w[k] - eps);
            let down = loss_of(&mut net, &x, &t);
            set(&mut net, k, w[k]);
            let n = (up - down) / (2.0 * eps);
            prop_assert!((gk - n).abs() <= 1e-6 + 1e-4 * n.abs(), "param {}: {} vs {}", k, gk, n);
        }
        for i in 0..3 {
            let (mut xp, mut xm) = (x, x);
            xp[i] += eps;
            xm[i] -= eps;
            let n = (loss_of(&mut net, &xp, &t) - loss_of(&mut net, &xm, &t)) / (2.0 * eps);
            prop_assert!((dx[i] - n).abs() <= 1e-6 + 1e-4 * n.abs(), "input {}: {} vs {}", i, dx[i], n);
        }
    }
}

const W: usize = 16;
const D: usize = 30;

/// RMS of the signal reaching the input of a 30-layer tanh network of width 16 under the "standard" init
/// U(±1/√n) (n·Var(W) = 1/3: a plain stack loses about √3 per layer), with and without residual connections,
/// for output gradients of RMS 0.05, over 8 samples.
fn input_signal_rms<S: Scalar>(residual: bool) -> f64
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(2016);
    let mut layers: Box<Stack<Residual<Dense<S, W, W>>, D>> =
        Box::new(Stack::from_fn(D, |_| Residual(Dense::new(Act::Tanh))));
    for l in layers.active_mut() {
        l.0.init(
            &Init::Standard,
            &Init::Zeros,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
    }
    let mut plain: Box<Stack<Dense<S, W, W>, D>> =
        Box::new(Stack::from_fn(D, |k| layers.layers[k].0.clone()));
    let mut stats = [LayerStats::default(); D];
    for _ in 0..8 {
        let mut x = [S::ZERO; W];
        init_slice(
            &mut x,
            &Init::Uniform { a: -0.5, b: 0.5 },
            1,
            1,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
        let mut dy = [S::ZERO; W];
        init_slice(
            &mut dy,
            &Init::Uniform {
                a: -0.0866,
                b: 0.0866,
            },
            1,
            1,
            &mut rng,
            &mut NearestEven,
            &mut (),
        )
        .unwrap();
        if residual {
            layers.forward(&x, 0, &mut NearestEven, &mut stats);
            layers.backward(&dy, 0, &mut NearestEven, &mut stats);
        } else {
            plain.forward(&x, 0, &mut NearestEven, &mut stats);
            plain.backward(&dy, 0, &mut NearestEven, &mut stats);
        }
    }
    let first = stats[0];
    (first.backward_sq / (first.backward_passes as f64 * W as f64)).sqrt()
}

#[test]
fn residual_connections_keep_the_gradient_a_plain_stack_loses() {
    let (plain, res) = big_stack(|| {
        (
            input_signal_rms::<f64>(false),
            input_signal_rms::<f64>(true),
        )
    });
    // Plain: about 0.05·3^(−15) ≈ 4e-9. Residual: the identity path alone carries 0.05.
    assert!(plain < 1e-6, "plain {plain:e}");
    assert!(res > 0.03, "residual {res:e}");
    // In I16F16 the plain stack's signal is below one LSB (it underflowed); the residual one is not.
    let (plain_q, res_q) = big_stack(|| {
        (
            input_signal_rms::<I16F16>(false),
            input_signal_rms::<I16F16>(true),
        )
    });
    assert!(plain_q < I16F16::LSB, "plain I16F16 {plain_q:e}");
    assert!(res_q > 1000.0 * I16F16::LSB, "residual I16F16 {res_q:e}");
}
