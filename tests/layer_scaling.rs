//! Per-layer gradient scaling recovers the gradients that a uniform fixed-point format loses past the
//! underflow horizon: in I16F16, every layer of a 64-deep sigmoid stack gets its gradient back, matching f64.

use gradscope_core::{
    Act, DenseStack, GradStats, I16F16, Init, Layer, LayerScales, NearestEven, Scalar, init_slice,
};
use gradscope_suite::big_stack;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;

const W: usize = 32;
const D: usize = 64;
const BATCH: usize = 8;

type Q = DenseStack<I16F16, W, D>;
type F = DenseStack<f64, W, D>;

struct Setup {
    q: Box<Q>,
    f: Box<F>,
    xs: Vec<[I16F16; W]>,
    dys: Vec<[I16F16; W]>,
}

fn setup() -> Setup {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(2022);
    let mut q: Box<Q> = Box::new(DenseStack::new(Act::Sigmoid, D));
    q.init(
        &Init::XavierNormal { gain: 1.0 },
        &Init::Zeros,
        &mut rng,
        &mut NearestEven,
        &mut (),
    )
    .unwrap();
    let mut f: Box<F> = Box::new(DenseStack::new(Act::Sigmoid, D));
    for (lf, lq) in f.layers.iter_mut().zip(&q.layers) {
        lf.weight = lq.weight.map(|r| r.map(|v| v.to_f64()));
    }
    let mut xs = Vec::new();
    let mut dys = Vec::new();
    for _ in 0..BATCH {
        let mut x = [I16F16::ZERO; W];
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
        xs.push(x);
        dys.push(core::array::from_fn(|_| {
            let sign = if rng.next_u32() & 1 == 0 { 1.0 } else { -1.0 };
            I16F16::from_f64(sign * 0.05, &mut NearestEven).0
        }));
    }
    Setup { q, f, xs, dys }
}

#[test]
fn per_layer_scaling_recovers_every_layers_gradient_in_i16f16() {
    big_stack(|| {
        let Setup {
            mut q,
            mut f,
            xs,
            dys,
        } = setup();
        // f64 reference, and plain I16F16 (no scaling): the plain run loses the deep layers entirely.
        f.zero_grad();
        q.zero_grad();
        for (x, dy) in xs.iter().zip(&dys) {
            f.forward(&x.map(|v| v.to_f64()), 0, &mut NearestEven, &mut ());
            f.backward(&dy.map(|v| v.to_f64()), 0, &mut NearestEven, &mut ());
            q.forward(x, 0, &mut NearestEven, &mut ());
            q.backward(dy, 0, &mut NearestEven, &mut ());
        }
        let plain_dead = (0..D)
            .filter(|&k| GradStats::of(&mut q.layers[k]).zero_fraction() == 1.0)
            .count();
        assert!(
            plain_dead > 50,
            "plain I16F16: only {plain_dead} layers lost their gradient"
        );
        // Calibrate: each pass sees the signal as deep as the current scales let it survive; repeat until every
        // boundary has been observed (a few passes), then run the batch once more with the settled scales.
        let mut scales = LayerScales::<D>::new();
        let mut passes = 0;
        loop {
            q.zero_grad();
            for (x, dy) in xs.iter().zip(&dys) {
                q.forward(x, 0, &mut NearestEven, &mut ());
                q.backward_scaled(dy, &mut scales, 0, &mut NearestEven, &mut ());
            }
            passes += 1;
            if scales.adapt(D, 8.0) == 0 || passes == 20 {
                break;
            }
        }
        assert!(passes < 20, "scales did not settle");
        q.zero_grad();
        for (x, dy) in xs.iter().zip(&dys) {
            q.forward(x, 0, &mut NearestEven, &mut ());
            q.backward_scaled(dy, &mut scales, 0, &mut NearestEven, &mut ());
        }
        // Every layer now has its gradient, and unscaled it matches f64: norm within 0.1%, cosine ≥ 0.9999.
        let (mut worst_norm, mut worst_cos) = (0.0f64, 1.0f64);
        for k in 0..D {
            let e = scales.exponent(k);
            let got: Vec<f64> = q.layers[k]
                .grad_weight
                .as_flattened()
                .iter()
                .map(|v| v.to_f64() * (-e as f64).exp2())
                .collect();
            let want: Vec<f64> = f.layers[k].grad_weight.as_flattened().to_vec();
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let dot: f64 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            let (ng, nw) = (norm(&got), norm(&want));
            worst_norm = worst_norm.max((ng / nw - 1.0).abs());
            worst_cos = worst_cos.min(dot / (ng * nw));
            assert!(
                nw > 0.0 && (ng / nw - 1.0).abs() < 1e-3,
                "layer {k}: norm {ng:e} vs {nw:e} (E = {e})"
            );
            assert!(
                dot / (ng * nw) > 0.9999,
                "layer {k}: cosine {}",
                dot / (ng * nw)
            );
        }
        eprintln!("worst relative norm error {worst_norm:e}, worst cosine {worst_cos}");
        // The deepest layer's gradient is far below anything I16F16 can hold unscaled.
        eprintln!("calibration passes: {passes}; E_0 = {}", scales.exponent(0));
        let deepest = GradStats::of(&mut f.layers[0]).norm;
        assert!(deepest < 1e-20, "{deepest:e}");
        assert_eq!(scales.lr(0, 1.0), (-(scales.exponent(0) as f64)).exp2());
    });
}
