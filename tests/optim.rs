//! Optimizers against step-by-step f64 re-implementations of PyTorch's update rules.

use gradscope_core::{
    Adam, AdamParams, Coef, Flags, I1F15, I8F24, I16F16, NearestEven, Optimizer, ParamTensor,
    Params, Phase, Probes, Scalar, Sgd, StepError, param_count,
};

/// Two tensors of parameters with fixed gradients that change every step.
struct Toy {
    w: [f64; 3],
    gw: [f64; 3],
    b: [f64; 2],
    gb: [f64; 2],
}

impl Params<f64> for Toy {
    fn depth(&self) -> usize {
        2
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, f64>)) {
        f(ParamTensor::vector(at, &mut self.w, &mut self.gw));
        f(ParamTensor::vector(at + 1, &mut self.b, &mut self.gb));
    }
}

fn grads_at(step: usize) -> [f64; 5] {
    [0.5, -1.0, 2.0, 0.25, -0.125].map(|g| g * (1.0 + step as f64 * 0.3).sin())
}

fn toy() -> Toy {
    Toy {
        w: [1.0, -2.0, 0.5],
        gw: [0.0; 3],
        b: [0.1, 0.2],
        gb: [0.0; 2],
    }
}

fn set_grads(t: &mut Toy, step: usize) {
    let g = grads_at(step);
    t.gw.copy_from_slice(&g[..3]);
    t.gb.copy_from_slice(&g[3..]);
}

fn values(t: &Toy) -> Vec<f64> {
    t.w.iter().chain(&t.b).copied().collect()
}

#[test]
fn sgd_with_momentum_matches_pytorch_rule() {
    let (lr, mu, wd) = (0.1, 0.9, 0.01);
    let mut t = toy();
    let mut opt = Sgd::with_momentum(lr, mu, wd, vec![0.0f64; param_count(&mut t)]).unwrap();
    let mut w = values(&t);
    let mut buf = [0.0f64; 5];
    for step in 0..10 {
        set_grads(&mut t, step);
        opt.step(&mut t, 1.0, &mut NearestEven, &mut ()).unwrap();
        for (k, g) in grads_at(step).iter().enumerate() {
            let g = g + wd * w[k];
            buf[k] = if step == 0 { g } else { mu * buf[k] + g };
            w[k] -= lr * buf[k];
        }
        for (a, b) in values(&t).iter().zip(&w) {
            assert!((a - b).abs() < 1e-12, "step {step}: {a} vs {b}");
        }
    }
}

/// Adam or AdamW against PyTorch's rule, written out: `decoupled` applies `w ← w·(1 − lr·λ)` first and leaves
/// the gradient alone (AdamW), otherwise `g ← g + λ·w` (Adam).
fn adam_matches(decoupled: bool) {
    let (lr, b1, b2, eps, wd) = (0.01, 0.9, 0.999, 1e-8, 0.001);
    let p = AdamParams {
        lr,
        beta1: b1,
        beta2: b2,
        eps,
        weight_decay: wd,
        decoupled,
    };
    let mut t = toy();
    let mut opt = Adam::new(p, vec![0.0f64; 2 * param_count(&mut t)]).unwrap();
    let mut w = values(&t);
    let (mut m, mut v) = ([0.0f64; 5], [0.0f64; 5]);
    for step in 0..20 {
        set_grads(&mut t, step);
        opt.step(&mut t, 1.0, &mut NearestEven, &mut ()).unwrap();
        let n = (step + 1) as i32;
        for (k, g) in grads_at(step).iter().enumerate() {
            let g = if decoupled {
                w[k] *= 1.0 - lr * wd;
                *g
            } else {
                g + wd * w[k]
            };
            m[k] = b1 * m[k] + (1.0 - b1) * g;
            v[k] = b2 * v[k] + (1.0 - b2) * g * g;
            let mh = m[k] / (1.0 - b1.powi(n));
            let vh = v[k] / (1.0 - b2.powi(n));
            w[k] -= lr * mh / (vh.sqrt() + eps);
        }
        for (a, b) in values(&t).iter().zip(&w) {
            assert!((a - b).abs() < 1e-12, "step {step}: {a} vs {b}");
        }
    }
    assert_eq!(opt.steps(), 20);
}

#[test]
fn adam_matches_pytorch_rule() {
    adam_matches(false);
}

#[test]
fn adamw_matches_pytorch_rule() {
    adam_matches(true);
}

#[test]
fn a_scaled_gradient_gives_the_unscaled_update() {
    // Loss scaling hands the optimizer s·g; the update must be that of g.
    for s in [1.0, 8.0, 1024.0] {
        let mut t = toy();
        let mut sgd = Sgd::with_momentum(0.1, 0.9, 0.01, vec![0.0f64; 5]).unwrap();
        let mut adam = Adam::new(AdamParams::new(0.01), vec![0.0f64; 10]).unwrap();
        let mut u = toy();
        let (mut sgd1, mut adam1) = (sgd.clone(), adam.clone());
        for step in 0..5 {
            set_grads(&mut t, step);
            set_grads(&mut u, step);
            t.gw.iter_mut().chain(t.gb.iter_mut()).for_each(|g| *g *= s);
            sgd.step(&mut t, s, &mut NearestEven, &mut ()).unwrap();
            sgd1.step(&mut u, 1.0, &mut NearestEven, &mut ()).unwrap();
            adam.step(&mut t, s, &mut NearestEven, &mut ()).unwrap();
            adam1.step(&mut u, 1.0, &mut NearestEven, &mut ()).unwrap();
        }
        for (a, b) in values(&t).iter().zip(&values(&u)) {
            assert!((a - b).abs() < 1e-12, "scale {s}: {a} vs {b}");
        }
    }
}

#[test]
fn bad_state_hyperparameters_and_nan_gradients_are_errors() {
    let mut t = toy();
    set_grads(&mut t, 1);
    assert_eq!(
        Sgd::with_momentum(0.1, 0.9, 0.0, [0.0f64; 4])
            .unwrap()
            .step(&mut t, 1.0, &mut NearestEven, &mut ()),
        Err(StepError::StateTooSmall { need: 5 })
    );
    assert_eq!(
        Adam::new(AdamParams::new(0.1), [0.0f64; 9]).unwrap().step(
            &mut t,
            1.0,
            &mut NearestEven,
            &mut ()
        ),
        Err(StepError::StateTooSmall { need: 10 })
    );
    assert!(
        Sgd::with_momentum(0.1, 1.0, 0.0, ()).is_err()
            && Sgd::with_momentum(-0.1, 0.5, 0.0, ()).is_err()
    );
    let bad = |f: fn(&mut AdamParams)| {
        let mut p = AdamParams::new(0.1);
        f(&mut p);
        Adam::new(p, ()).is_err()
    };
    assert!(bad(|p| p.beta2 = 1.0) && bad(|p| p.eps = 0.0) && bad(|p| p.lr = f64::NAN));
    // A NaN first in a tensor of three, and last in one of two: the quick check over a tensor must see both.
    let mut first = toy();
    set_grads(&mut first, 1);
    first.gw[0] = f64::NAN;
    assert_eq!(
        Sgd::new(0.1, 0.0)
            .unwrap()
            .step(&mut first, 1.0, &mut NearestEven, &mut ()),
        Err(StepError::NonFiniteGradient {
            tensor: 0,
            element: 0,
            layer: 0
        })
    );
    t.gb[1] = f64::NAN;
    let before = values(&t);
    let mut adam = Adam::new(AdamParams::new(0.1), [0.5f64; 10]).unwrap();
    assert_eq!(
        adam.step(&mut t, 1.0, &mut NearestEven, &mut ()),
        Err(StepError::NonFiniteGradient {
            tensor: 1,
            element: 1,
            layer: 1
        })
    );
    assert_eq!(values(&t), before);
    assert_eq!(adam.steps(), 0);
}

/// Two tensors (layers 3 and 4) of any scalar type, for the fixed-point rules.
struct Pair<S> {
    w: [S; 3],
    gw: [S; 3],
    b: [S; 2],
    gb: [S; 2],
}

impl<S: Scalar> Params<S> for Pair<S> {
    fn depth(&self) -> usize {
        2
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(ParamTensor::vector(at + 3, &mut self.w, &mut self.gw));
        f(ParamTensor::vector(at + 4, &mut self.b, &mut self.gb));
    }
}

fn pair<S: Scalar>(w: [f64; 5], g: [f64; 5]) -> Pair<S> {
    let q = |x: f64| S::from_f64(x, &mut NearestEven).0;
    Pair {
        w: [q(w[0]), q(w[1]), q(w[2])],
        gw: [q(g[0]), q(g[1]), q(g[2])],
        b: [q(w[3]), q(w[4])],
        gb: [q(g[3]), q(g[4])],
    }
}

fn exact<S: Scalar>(p: &Pair<S>) -> ([f64; 5], [f64; 5]) {
    let v = |x: &[S]| x.iter().map(|s| s.to_f64()).collect::<Vec<_>>();
    let w: Vec<f64> = [v(&p.w), v(&p.b)].concat();
    let g: Vec<f64> = [v(&p.gw), v(&p.gb)].concat();
    (w.try_into().unwrap(), g.try_into().unwrap())
}

/// Every event an optimizer records, by layer and phase.
#[derive(Default)]
struct Events(Vec<(usize, Phase, Flags)>);

impl Probes for Events {
    fn record(&mut self, layer: usize, phase: Phase, flags: Flags) {
        self.0.push((layer, phase, flags));
    }
}

/// Fixed-point SGD, step by step against the f64 rule applied to the exact values it holds: each product is
/// rounded once (nearest: ½ LSB each) and each sum is exact, so plain SGD is within 1 LSB and the momentum
/// buffer within 1 LSB, the weight within ½ LSB of `w − lr·b` for the buffer it holds.
fn fixed_sgd_follows_the_rule<S: Scalar>() {
    let lsb = S::RESOLUTION;
    let w0 = [0.5, -0.25, 0.125, 0.0625, -0.5];
    for (lr, mu, wd) in [
        (0.1, 0.0, 0.0),
        (0.1, 0.0, 0.03),
        (0.05, 0.9, 0.0),
        (0.05, 0.9, 0.01),
    ] {
        let mut t = pair::<S>(w0, [0.0; 5]);
        let mut opt = Sgd::with_momentum(lr, mu, wd, vec![S::ZERO; 5]).unwrap();
        let mut buf = [0.0f64; 5];
        for step in 0..6 {
            let g = grads_at(step).map(|g| g * 0.05);
            let fresh = pair::<S>([0.0; 5], g);
            (t.gw, t.gb) = (fresh.gw, fresh.gb);
            let (w_before, g) = exact(&t);
            let mut events = Events::default();
            opt.step(&mut t, 1.0, &mut NearestEven, &mut events)
                .unwrap();
            let (w_after, _) = exact(&t);
            let state: Vec<f64> = Optimizer::<S>::state(&mut opt)
                .iter()
                .map(|s| s.to_f64())
                .collect();
            for k in 0..5 {
                let (got, want, tol) = if mu == 0.0 {
                    (
                        w_after[k],
                        w_before[k] - lr * (g[k] + wd * w_before[k]),
                        lsb,
                    )
                } else {
                    let b = mu * buf[k] + g[k] + wd * w_before[k];
                    assert!(
                        (state[k] - b).abs() <= lsb * 1.000_001,
                        "{} step {step} buffer {k}: {} vs {b}",
                        S::NAME,
                        state[k]
                    );
                    buf[k] = state[k];
                    (w_after[k], w_before[k] - lr * state[k], 0.5 * lsb)
                };
                assert!(
                    (got - want).abs() <= tol * 1.000_001,
                    "{} lr {lr} μ {mu} decay {wd} step {step} value {k}: {got} vs {want}",
                    S::NAME
                );
            }
            // One clean event per value, each under its tensor's layer.
            let layers: Vec<usize> = events.0.iter().map(|e| e.0).collect();
            assert_eq!(layers, [3, 3, 3, 4, 4], "{}", S::NAME);
            assert!(
                events
                    .0
                    .iter()
                    .all(|e| e.1 == Phase::Update && !e.2.intersects(Flags::OVERFLOW))
            );
        }
    }
}

#[test]
fn fixed_point_sgd_rounds_once_per_product() {
    fixed_sgd_follows_the_rule::<I16F16>();
    fixed_sgd_follows_the_rule::<I8F24>();
    fixed_sgd_follows_the_rule::<I1F15>();
}

#[test]
fn plain_sgd_matches_pytorch_rule() {
    for wd in [0.0, 0.01] {
        let mut t = toy();
        let mut opt = Sgd::new(0.1, wd).unwrap();
        let mut w = values(&t);
        for step in 0..5 {
            set_grads(&mut t, step);
            opt.step(&mut t, 4.0, &mut NearestEven, &mut ()).unwrap();
            for (k, g) in grads_at(step).iter().enumerate() {
                w[k] -= 0.1 / 4.0 * g + 0.1 * wd * w[k];
            }
            for (a, b) in values(&t).iter().zip(&w) {
                assert!((a - b).abs() < 1e-12, "decay {wd} step {step}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn a_saturating_update_is_flagged_under_its_layer() {
    // 0.9 − 4·(−0.5) leaves Q15's range: the weight saturates at the top and the event says so.
    let mut t = pair::<I1F15>([0.9, 0.0, 0.0, 0.0, 0.0], [-0.5, 0.0, 0.0, 0.0, 0.0]);
    let mut events = Events::default();
    Sgd::new(4.0, 0.0)
        .unwrap()
        .step(&mut t, 1.0, &mut NearestEven, &mut events)
        .unwrap();
    assert_eq!(t.w[0], I1F15::MAX);
    assert!(
        events.0[0].0 == 3 && events.0[0].2.contains(Flags::OVERFLOW),
        "{:?}",
        events.0
    );
    assert!(
        events.0[1..].iter().all(|e| e.2.is_empty()),
        "{:?}",
        events.0
    );
}

/// The events of one update are the union of its operations' events, replayed here on the state before the
/// step: `w − g·lr − w·(lr·λ)` for plain SGD, `b ← b·μ + (g + w·λ)`, `w ← w − b·lr` with momentum.
fn events_are_the_union_of_the_operations<S: Scalar>() {
    let q = |x: f64| S::from_f64(x, &mut NearestEven).0;
    // A weight of one LSB makes w·λ underflow, alone; a zero gradient makes g·lr exact, and b·μ = 0.25·0.5 is
    // exact: each operation's own events must show.
    let w0 = [0.3, -0.7, 0.9, S::RESOLUTION, 0.6];
    let g0 = [0.9, -0.8, 0.45, 0.0, -0.6];
    let cases = [
        (0.37, 0.0, 0.0),
        (0.37, 0.0, 0.13),
        (1.7, 0.0, 0.3),
        (0.37, 0.9, 0.13),
        (1.7, 0.7, 0.0),
        (0.37, 0.5, 0.13),
    ];
    for (lr, mu, wd) in cases {
        let mut t = pair::<S>(w0, g0);
        let mut opt = Sgd::with_momentum(lr, mu, wd, vec![q(0.25); 5]).unwrap();
        let (w, g) = (w0.map(q), g0.map(q));
        let mut events = Events::default();
        opt.step(&mut t, 1.0, &mut NearestEven, &mut events)
            .unwrap();
        let r = &mut NearestEven;
        let (c_lr, c_mu) = (Coef::new(lr), Coef::new(mu));
        for k in 0..5 {
            let want = if mu == 0.0 {
                let (d, f1) = g[k].scale_by(&c_lr, r);
                let (v, f2) = w[k].sub(d);
                if lr * wd > 0.0 {
                    let (dw, f3) = w[k].scale_by(&Coef::new(lr * wd), r);
                    f1 | f2 | f3 | v.sub(dw).1
                } else {
                    f1 | f2
                }
            } else {
                // The buffer starts at 0.25 here, as the optimizer was given it.
                let (gd, f0) = if wd > 0.0 {
                    let (d, f1) = w[k].scale_by(&Coef::new(wd), r);
                    let (s, f2) = g[k].add(d);
                    (s, f1 | f2)
                } else {
                    (g[k], Flags::NONE)
                };
                let (mb, f3) = q(0.25).scale_by(&c_mu, r);
                let (nb, f4) = mb.add(gd);
                let (step, f5) = nb.scale_by(&c_lr, r);
                f0 | f3 | f4 | f5 | w[k].sub(step).1
            };
            assert_eq!(
                events.0[k].2,
                want,
                "{} lr {lr} μ {mu} λ {wd} value {k}",
                S::NAME
            );
        }
    }
}

#[test]
fn update_events_are_the_union_of_the_operations() {
    events_are_the_union_of_the_operations::<I16F16>();
    events_are_the_union_of_the_operations::<I1F15>();
}

#[test]
fn adam_update_events_are_the_union_of_its_three_roundings() {
    // First step, no decay: m = (1 − β₁)g, v = (1 − β₂)g², w′ = w − lr·g/(|g| + ε), each rounded once into
    // I16F16. A gradient of 0.01 makes v underflow alone.
    let q = |x: f64| I16F16::from_f64(x, &mut NearestEven).0;
    let mut t = pair::<I16F16>([0.3, -0.2, 0.5, 0.1, -0.4], [0.01, -0.5, 0.25, 0.0, 0.003]);
    let p = AdamParams::new(0.01);
    let mut adam = Adam::new(p, vec![q(0.0); 10]).unwrap();
    let (w, g) = exact(&t);
    let mut events = Events::default();
    adam.step(&mut t, 1.0, &mut NearestEven, &mut events)
        .unwrap();
    for k in 0..5 {
        let m = (1.0 - p.beta1) * g[k];
        let v = (1.0 - p.beta2) * g[k] * g[k];
        let new_w = w[k] - p.lr * (m / (1.0 - p.beta1)) / ((v / (1.0 - p.beta2)).sqrt() + p.eps);
        let f = |x: f64| I16F16::from_f64(x, &mut NearestEven).1;
        assert_eq!(events.0[k].2, f(m) | f(v) | f(new_w), "value {k}");
    }
    assert!(events.0[0].2.contains(Flags::UNDERFLOW));
}
