//! Optimizers against step-by-step f64 re-implementations of PyTorch's update rules.

use gradscope_core::{Adam, Momentum, NearestEven, ParamTensor, Params, StepError, param_count};

/// Two tensors of parameters with fixed gradients that change every step.
struct Toy {
    w: [f64; 3],
    gw: [f64; 3],
    b: [f64; 2],
    gb: [f64; 2],
}

impl Params<f64> for Toy {
    fn visit(&mut self, f: &mut dyn FnMut(ParamTensor<'_, f64>)) {
        f(ParamTensor::vector(&mut self.w, &mut self.gw));
        f(ParamTensor::vector(&mut self.b, &mut self.gb));
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
fn momentum_matches_pytorch_rule() {
    let (lr, mu, wd) = (0.1, 0.9, 0.01);
    let opt = Momentum::new(lr, mu, wd).unwrap();
    let mut t = toy();
    let mut state = vec![0.0f64; param_count(&mut t)];
    let mut w = values(&t);
    let mut buf = [0.0f64; 5];
    for step in 0..10 {
        set_grads(&mut t, step);
        opt.step(&mut t, &mut state, &mut NearestEven, &mut ())
            .unwrap();
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

#[test]
fn adam_matches_pytorch_rule() {
    let (lr, b1, b2, eps, wd) = (0.01, 0.9, 0.999, 1e-8, 0.001);
    let mut opt = Adam::new(lr, b1, b2, eps, wd).unwrap();
    let mut t = toy();
    let mut state = vec![0.0f64; 2 * param_count(&mut t)];
    let mut w = values(&t);
    let (mut m, mut v) = ([0.0f64; 5], [0.0f64; 5]);
    for step in 0..20 {
        set_grads(&mut t, step);
        opt.step(&mut t, &mut state, &mut NearestEven, &mut ())
            .unwrap();
        let n = (step + 1) as i32;
        for (k, g) in grads_at(step).iter().enumerate() {
            let g = g + wd * w[k];
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
fn bad_state_hyperparameters_and_nan_gradients_are_errors() {
    let mut t = toy();
    set_grads(&mut t, 1);
    let mut short = [0.0f64; 4];
    assert_eq!(
        Momentum::new(0.1, 0.9, 0.0)
            .unwrap()
            .step(&mut t, &mut short, &mut NearestEven, &mut ()),
        Err(StepError::StateTooSmall { need: 5 })
    );
    assert_eq!(
        Adam::with_lr(0.1)
            .unwrap()
            .step(&mut t, &mut [0.0; 9], &mut NearestEven, &mut ()),
        Err(StepError::StateTooSmall { need: 10 })
    );
    assert!(Momentum::new(0.1, 1.0, 0.0).is_err() && Momentum::new(-0.1, 0.5, 0.0).is_err());
    assert!(
        Adam::new(0.1, 0.9, 1.0, 1e-8, 0.0).is_err()
            && Adam::new(0.1, 0.9, 0.99, 0.0, 0.0).is_err()
    );
    t.gb[1] = f64::NAN;
    let before = values(&t);
    let mut state = [0.5f64; 10];
    let mut adam = Adam::with_lr(0.1).unwrap();
    assert_eq!(
        adam.step(&mut t, &mut state, &mut NearestEven, &mut ()),
        Err(StepError::NonFiniteGradient {
            tensor: 1,
            element: 1
        })
    );
    assert_eq!(values(&t), before);
    assert_eq!(state, [0.5; 10]);
    assert_eq!(adam.steps(), 0);
}
