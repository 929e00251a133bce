//! The underflow horizon: the mean-field prediction of `gradscope_core::horizon` against fixed-point
//! backpropagation through 64-layer, 32-wide stacks, for sigmoid, tanh and ReLU under Xavier, He and the
//! "standard" U(±1/√n) init, in I16F16, I1F15 and f16 (whose "LSB" is its smallest subnormal, 2⁻²⁴), at two
//! output-gradient scales. They must agree within ±2 layers (or both say the signal never drops below one LSB).

use gradscope_core::horizon::DepthModel;
use gradscope_core::{
    Act, Activate, DenseStack, FanMode, I1F15, I16F16, Init, Layer, LayerStats, NearestEven,
    Nonlinearity, Scalar, f16, init_slice,
};
use gradscope_suite::big_stack;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;

const WIDTH: usize = 32;
const DEPTH: usize = 64;
const BATCH: usize = 16;
const INPUT_BOUND: f64 = 0.9;

/// The schemes: Xavier (σ² = 1/n on square layers), He (2/n), and Glorot & Bengio's "standard" U(±1/√n)
/// (1/(3n)), which makes even tanh vanish.
#[derive(Copy, Clone, Debug)]
enum Scheme {
    Xavier,
    He,
    Standard,
}

fn init_of(s: Scheme) -> (Init, f64) {
    let n = WIDTH as f64;
    match s {
        Scheme::Xavier => (Init::XavierNormal { gain: 1.0 }, 1.0 / n),
        Scheme::He => (
            Init::KaimingNormal {
                slope: 0.0,
                mode: FanMode::FanIn,
                nonlinearity: Nonlinearity::Relu,
            },
            2.0 / n,
        ),
        Scheme::Standard => (Init::Standard, 1.0 / (3.0 * n)),
    }
}

/// Measured horizon: the first k (layers from the output) whose back-propagated signal has RMS below one LSB.
fn measured<S: Scalar>(act: Act, scheme: Scheme, g0: f64, seed: u64) -> Option<usize>
where
    Act: Activate<S>,
{
    let mut s: Box<DenseStack<S, WIDTH, DEPTH>> = Box::new(DenseStack::new(act, DEPTH));
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let (init, _) = init_of(scheme);
    s.init(&init, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
        .unwrap();
    let mut stats = [LayerStats::default(); DEPTH];
    for _ in 0..BATCH {
        let mut x = [S::ZERO; WIDTH];
        let u = Init::Uniform {
            a: -INPUT_BOUND,
            b: INPUT_BOUND,
        };
        init_slice(&mut x, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).unwrap();
        s.forward(&x, 0, &mut NearestEven, &mut stats);
        let dy: [S; WIDTH] = core::array::from_fn(|_| {
            let sign = if rng.next_u32() & 1 == 0 { 1.0 } else { -1.0 };
            S::from_f64(sign * g0, &mut NearestEven).0
        });
        s.backward(&dy, 0, &mut NearestEven, &mut stats);
    }
    (1..=DEPTH).find(|&k| {
        let st = &stats[DEPTH - k];
        let rms = (st.backward_sq / (st.backward_passes as f64 * WIDTH as f64)).sqrt();
        rms < S::SMALLEST
    })
}

fn predicted(act: Act, scheme: Scheme, g0: f64, lsb: f64) -> Option<usize> {
    let (_, weight_var) = init_of(scheme);
    let model = DepthModel {
        act,
        width: WIDTH,
        weight_var,
        input_second_moment: INPUT_BOUND * INPUT_BOUND / 3.0,
    };
    model.horizon(DEPTH, g0, lsb)
}

#[test]
fn predicted_and_measured_horizons_agree_within_two_layers() {
    let rows = big_stack(|| {
        let mut rows = Vec::new();
        // Two output-gradient scales: a typical loss gradient and a small one (late in training).
        for g0 in [0.05, 0.001] {
            for act in [Act::Sigmoid, Act::Tanh, Act::Relu] {
                for scheme in [Scheme::Xavier, Scheme::He, Scheme::Standard] {
                    let m16 = measured::<I16F16>(act, scheme, g0, 1);
                    let m15 = measured::<I1F15>(act, scheme, g0, 1);
                    let mh = measured::<f16>(act, scheme, g0, 1);
                    rows.push((
                        act,
                        scheme,
                        g0,
                        "I16F16",
                        predicted(act, scheme, g0, I16F16::LSB),
                        m16,
                    ));
                    rows.push((
                        act,
                        scheme,
                        g0,
                        "I1F15",
                        predicted(act, scheme, g0, I1F15::LSB),
                        m15,
                    ));
                    rows.push((
                        act,
                        scheme,
                        g0,
                        "f16",
                        predicted(act, scheme, g0, f16::SMALLEST),
                        mh,
                    ));
                }
            }
        }
        rows
    });
    let mut bad = Vec::new();
    for (act, scheme, g0, fmt, p, m) in &rows {
        eprintln!("{act:>8} {scheme:>8?} g0={g0} {fmt:>6}: predicted {p:?}, measured {m:?}");
        let ok = match (p, m) {
            (None, None) => true,
            (Some(p), Some(m)) => p.abs_diff(*m) <= 2,
            _ => false,
        };
        if !ok {
            bad.push(format!(
                "{act} {scheme:?} g0={g0} {fmt}: predicted {p:?}, measured {m:?}"
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    // Agreement must not come from "neither crosses": most configurations cross inside the stack.
    let crossings = rows
        .iter()
        .filter(|(.., p, m)| p.is_some() && m.is_some())
        .count();
    assert_eq!(rows.len(), 54);
    assert!(
        crossings >= 30,
        "only {crossings} of 54 configurations cross"
    );
}
