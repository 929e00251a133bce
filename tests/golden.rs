//! The core's formulas against PyTorch: activations and their derivatives, the three losses, a dense stack,
//! the Elman RNN (tanh and ReLU), LSTM and GRU in PyTorch's gate order, BatchNorm1d in training and evaluation
//! mode with its running statistics, a residual block, convolution and pooling (`Conv2d` with padding, stride and
//! a residual connection, `Conv1d`, max, average and global average pooling, flattening, BatchNorm2d in training
//! and evaluation mode), and the rounding of f16 and bf16 (conversion from f32
//! and +, −, ×, bit for bit). The references are `tests/data/golden.json`,
//! written by `tests/data/make_golden.py` with PyTorch's autograd in float64 (code we did not write).
//!
//! Tolerances: the f64 path within 1e-12 and the f32 path within 1e-5, relative to each compared array's
//! largest magnitude.

use gradscope_core::loss::loss_grad_f64;
use gradscope_core::{
    Act, Activate, AvgPool2d, BatchNorm, BatchNorm2d, Conv1d, Conv2d, Dense, Flatten,
    GlobalAvgPool, Gru, Layer, Loss, Lstm, MaxPool2d, NearestEven, Objective, ParamTensor, Params,
    Residual, Rnn, Scalar, Tensor, bf16, f16,
};
use serde_json::Value;

fn golden() -> Value {
    serde_json::from_str(include_str!("data/golden.json")).expect("golden.json parses")
}

/// Every number in `v`, flattened in order.
fn nums(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(nums).collect(),
        Value::Number(n) => vec![n.as_f64().expect("a finite number")],
        other => panic!("not a number or array: {other}"),
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

/// `got` against `want`, within `rel` of the largest |want|.
fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64) {
    assert_close_scaled(what, got, want, rel, 0.0)
}

/// `got` against `want`, within `rel` of the largest of |want| and `terms` (the size of the terms a result
/// is the difference of, where that is larger).
fn assert_close_scaled(what: &str, got: &[f64], want: &[f64], rel: f64, terms: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(terms, |m, w| m.max(w.abs()));
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{what}[{k}]: got {g}, PyTorch {w} (tolerance {rel} of {scale})"
        );
    }
}

fn rel_tol<S: Scalar>() -> f64 {
    if S::NAME == "f64" { 1e-12 } else { 1e-5 }
}

fn to_s<S: Scalar>(v: f64) -> S {
    S::from_f64(v, &mut NearestEven).0
}

/// Fill `dst` (flattened) from `src` in order.
fn fill<S: Scalar>(dst: &mut [S], src: &[f64]) {
    assert_eq!(dst.len(), src.len(), "parameter size");
    for (d, s) in dst.iter_mut().zip(src) {
        *d = to_s(*s);
    }
}

fn f64s<S: Scalar>(v: &[S]) -> Vec<f64> {
    v.iter().map(|s| s.to_f64()).collect()
}

fn array<S: Scalar, const N: usize>(v: &[f64]) -> [S; N] {
    core::array::from_fn(|k| to_s(v[k]))
}

fn rows<S: Scalar, const N: usize, const M: usize>(v: &Value) -> [[S; N]; M] {
    let flat = nums(v);
    assert_eq!(flat.len(), N * M, "shape");
    core::array::from_fn(|r| array(&flat[r * N..]))
}

// ------------------------------------------------------------------------------------------------ activations

fn activations_match<S: Scalar>(g: &Value)
where
    Act: Activate<S>,
{
    let a = &g["activations"];
    let xs = nums(&a["x"]);
    let rel = rel_tol::<S>();
    for name in Act::NAMES {
        let act = Act::from_name(name).expect("a core activation");
        let (want_f, want_d) = (nums(&a["f"][name]), nums(&a["df"][name]));
        // Both sides lose relative accuracy where a formula cancels: f′ from the output (σ′ = y(1 − y),
        // tanh′ = 1 − y², as PyTorch's backward) near saturation, and GELU's 1 + erf in its far tail, where
        // PyTorch's tanh form rounds to 0. So each array is held to the tolerance of its largest value.
        let scale = |v: &[f64]| v.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        let (f_scale, d_scale) = (scale(&want_f), scale(&want_d));
        for ((&x, wf), &wd) in xs.iter().zip(&want_f).zip(&want_d) {
            // PyTorch's float64 hardsigmoid backward multiplies by 1/6 rounded to float32; the slope is 1/6.
            let wd = if name == "hardsigmoid" && wd == (1.0f32 / 6.0) as f64 {
                1.0 / 6.0
            } else {
                wd
            };
            let xs: S = to_s(x);
            assert_eq!(xs.to_f64(), x, "grid points are exact in {}", S::NAME);
            let (y, _) = act.f(xs, &mut NearestEven);
            let (d, _) = act.df(xs, y, &mut NearestEven);
            for (what, got, want, scale) in [
                ("f", y.to_f64(), *wf, f_scale),
                ("f'", d.to_f64(), wd, d_scale),
            ] {
                assert!(
                    (got - want).abs() <= rel * scale,
                    "{} {name} {what}({x}): got {got}, PyTorch {want} (tolerance {rel} of {scale})",
                    S::NAME
                );
            }
        }
    }
}

#[test]
fn activations_and_derivatives_match_pytorch_in_f64() {
    activations_match::<f64>(&golden());
}

#[test]
fn activations_and_derivatives_match_pytorch_in_f32() {
    activations_match::<f32>(&golden());
}

// ------------------------------------------------------------------------------------------------------ losses

#[test]
fn losses_and_their_gradients_match_pytorch() {
    let g = golden();
    let cases = g["losses"].as_array().expect("cases");
    assert!(cases.len() >= 6);
    for (k, case) in cases.iter().enumerate() {
        let y: [f64; 5] = array(&nums(&case["y"]));
        for (name, loss) in [
            ("mse", Loss::Mse),
            ("bce_with_logits", Loss::BceWithLogits),
            ("softmax_cross_entropy", Loss::SoftmaxCrossEntropy),
            ("softmax_mse", Loss::SoftmaxMse),
        ] {
            let c = &case[name];
            let t: [f64; 5] = array(&nums(&c["t"]));
            let (value, grad) = loss_grad_f64(loss, &y, &t);
            assert_close(
                &format!("case {k} {name} loss"),
                &[value],
                &[num(&c["loss"])],
                1e-12,
            );
            // Softmax MSE's gradient pⱼ·((pⱼ − tⱼ) − Σᵢ pᵢ(pᵢ − tᵢ)) is a difference of nearly equal terms when
            // one class takes almost all the probability, in PyTorch's evaluation as in ours: its error is
            // relative to the terms' size, 2·max pⱼ(|pⱼ − tⱼ| + Σᵢ pᵢ|pᵢ − tᵢ|)/N, not the result's.
            let terms = if loss == Loss::SoftmaxMse {
                let m = y.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let e = y.map(|v| (v - m).exp());
                let p = e.map(|v| v / e.iter().sum::<f64>());
                let shared: f64 = p.iter().zip(&t).map(|(p, t)| p * (p - t).abs()).sum();
                let n = p.len() as f64;
                p.iter()
                    .zip(&t)
                    .map(|(p, t)| 2.0 * p * ((p - t).abs() + shared) / n)
                    .fold(0.0, f64::max)
            } else {
                0.0
            };
            assert_close_scaled(
                &format!("case {k} {name} grad"),
                &grad,
                &nums(&c["grad"]),
                1e-12,
                terms,
            );
            // The same through the f32 path the layers use (one rounding per gradient value).
            let (ys, ts): ([f32; 5], [f32; 5]) = (array(&nums(&case["y"])), array(&nums(&c["t"])));
            let mut dy = [0f32; 5];
            let v = Objective::new(loss).grad(&ys, &ts, 1.0, &mut dy, &mut NearestEven, &mut ());
            assert_close(
                &format!("case {k} {name} f32 loss"),
                &[v],
                &[num(&c["loss"])],
                1e-5,
            );
            assert_close(
                &format!("case {k} {name} f32 grad"),
                &f64s(&dy),
                &nums(&c["grad"]),
                1e-5,
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------------ layers

/// MSE of one output against its target, averaged over `n` outputs or steps: the loss and ∂L/∂y.
fn mse<S: Scalar, const N: usize>(y: &[S; N], t: &[S; N], factor: f64) -> (f64, [S; N]) {
    let mut dy = [S::ZERO; N];
    let v = Objective::new(Loss::Mse).grad(y, t, factor, &mut dy, &mut NearestEven, &mut ());
    (v * factor, dy)
}

/// Set a stack of dense layers' weights and biases from PyTorch's `weights[layer]` and `biases[layer]`.
fn fill_dense<S: Scalar>(net: &mut impl Params<S>, c: &Value) {
    let mut tensors = 0;
    net.visit(0, &mut |t: ParamTensor<'_, S>| {
        let key = if t.matrix { "weights" } else { "biases" };
        fill(t.value, &nums(&c[key][t.layer]));
        tensors += 1;
    });
    assert_eq!(tensors, 2 * c["weights"].as_array().expect("a list").len());
}

/// Compare a stack of dense layers' gradients with PyTorch's `grad_weights[layer]` and `grad_biases[layer]`.
fn assert_dense_grads<S: Scalar>(what: &str, net: &mut impl Params<S>, c: &Value, rel: f64) {
    net.visit(0, &mut |t: ParamTensor<'_, S>| {
        let (key, label) = if t.matrix {
            ("grad_weights", "w")
        } else {
            ("grad_biases", "b")
        };
        let label = format!("{what}grad {label}{}", t.layer);
        assert_close(&label, &f64s(t.grad), &nums(&c[key][t.layer]), rel);
    });
}

fn dense_matches<S: Scalar>(g: &Value)
where
    Act: Activate<S>,
{
    let d = &g["dense"];
    let act = |k: usize| Act::from_name(d["acts"][k].as_str().expect("name")).expect("activation");
    let mut net = (
        (Dense::<S, 5, 7>::new(act(0)), Dense::<S, 7, 6>::new(act(1))),
        Dense::<S, 6, 3>::new(act(2)),
    );
    fill_dense(&mut net, d);
    let (xs, ts): ([[S; 5]; 4], [[S; 3]; 4]) = (rows(&d["x"]), rows(&d["t"]));
    let (mut loss, mut ys, mut dxs) = (0.0, Vec::new(), Vec::new());
    for (x, t) in xs.iter().zip(&ts) {
        // Layers cache one sample: forward and backward it before the next.
        let y = net.forward(x, 0, &mut NearestEven, &mut ());
        let (l, dy) = mse(&y, t, 1.0 / 4.0);
        loss += l;
        ys.extend(f64s(&y));
        dxs.extend(f64s(&net.backward(&dy, 0, &mut NearestEven, &mut ())));
    }
    let rel = rel_tol::<S>();
    let name = |what: &str| format!("{} dense {what}", S::NAME);
    assert_close(&name("output"), &ys, &nums(&d["y"]), rel);
    assert_close(&name("loss"), &[loss], &[num(&d["loss"])], rel);
    assert_close(&name("grad_x"), &dxs, &nums(&d["grad_x"]), rel);
    assert_dense_grads(&name(""), &mut net, d, rel);
}

#[test]
fn a_dense_stack_matches_pytorch() {
    let g = golden();
    dense_matches::<f64>(&g);
    dense_matches::<f32>(&g);
}

const I: usize = 3;
const H: usize = 4;
const T: usize = 6;

/// Run a recurrent layer over the golden sequence: the states, the loss and ∂L/∂x.
fn run_sequence<S: Scalar, L>(layer: &mut L, c: &Value) -> (Vec<f64>, f64, Vec<f64>)
where
    L: Layer<S, Input = [[S; I]; T], Output = [[S; H]; T]>,
{
    let (x, t): ([[S; I]; T], [[S; H]; T]) = (rows(&c["x"]), rows(&c["t"]));
    let hs = layer.forward(&x, 0, &mut NearestEven, &mut ());
    let mut dy = [[S::ZERO; H]; T];
    let mut loss = 0.0;
    for ((h, tg), d) in hs.iter().zip(&t).zip(dy.iter_mut()) {
        let (l, g) = mse(h, tg, 1.0 / T as f64);
        loss += l;
        *d = g;
    }
    let dx = layer.backward(&dy, 0, &mut NearestEven, &mut ());
    (f64s(hs.as_flattened()), loss, f64s(dx.as_flattened()))
}

fn check_sequence(what: &str, c: &Value, (hs, loss, dx): (Vec<f64>, f64, Vec<f64>), rel: f64) {
    assert_close(&format!("{what} states"), &hs, &nums(&c["hs"]), rel);
    assert_close(&format!("{what} loss"), &[loss], &[num(&c["loss"])], rel);
    assert_close(&format!("{what} grad_x"), &dx, &nums(&c["grad_x"]), rel);
}

/// PyTorch's two bias vectors summed: the core keeps one bias where `b_ih + b_hh` is the same function.
fn bias_sum(c: &Value) -> Vec<f64> {
    let p = &c["params"];
    nums(&p["bias_ih_l0"])
        .iter()
        .zip(nums(&p["bias_hh_l0"]))
        .map(|(a, b)| a + b)
        .collect()
}

fn rnn_matches<S: Scalar>(g: &Value, key: &str, act: Act)
where
    Act: Activate<S>,
{
    let c = &g[key];
    let mut rnn = Rnn::<S, I, H, T>::new(act);
    fill(
        rnn.weight_ih.as_flattened_mut(),
        &nums(&c["params"]["weight_ih_l0"]),
    );
    fill(
        rnn.weight_hh.as_flattened_mut(),
        &nums(&c["params"]["weight_hh_l0"]),
    );
    fill(&mut rnn.bias, &bias_sum(c));
    let rel = rel_tol::<S>();
    let what = format!("{} {key}", S::NAME);
    check_sequence(&what, c, run_sequence::<S, _>(&mut rnn, c), rel);
    let gr = &c["grads"];
    assert_close(
        &format!("{what} grad weight_ih"),
        &f64s(rnn.grad_weight_ih.as_flattened()),
        &nums(&gr["weight_ih_l0"]),
        rel,
    );
    assert_close(
        &format!("{what} grad weight_hh"),
        &f64s(rnn.grad_weight_hh.as_flattened()),
        &nums(&gr["weight_hh_l0"]),
        rel,
    );
    // ∂L/∂b_ih = ∂L/∂b_hh = ∂L/∂b.
    assert_close(
        &format!("{what} grad bias"),
        &f64s(&rnn.grad_bias),
        &nums(&gr["bias_ih_l0"]),
        rel,
    );
    assert_close(
        &format!("{what} grad bias"),
        &f64s(&rnn.grad_bias),
        &nums(&gr["bias_hh_l0"]),
        rel,
    );
}

#[test]
fn elman_rnns_match_pytorch() {
    let g = golden();
    rnn_matches::<f64>(&g, "rnn_tanh", Act::Tanh);
    rnn_matches::<f64>(&g, "rnn_relu", Act::Relu);
    rnn_matches::<f32>(&g, "rnn_tanh", Act::Tanh);
    rnn_matches::<f32>(&g, "rnn_relu", Act::Relu);
}

fn lstm_matches<S: Scalar + gradscope_core::Float>(g: &Value) {
    let c = &g["lstm"];
    let mut lstm = Lstm::<S, I, H, T>::new();
    fill(
        lstm.weight_ih.as_flattened_mut().as_flattened_mut(),
        &nums(&c["params"]["weight_ih_l0"]),
    );
    fill(
        lstm.weight_hh.as_flattened_mut().as_flattened_mut(),
        &nums(&c["params"]["weight_hh_l0"]),
    );
    fill(lstm.bias.as_flattened_mut(), &bias_sum(c));
    let rel = rel_tol::<S>();
    let what = format!("{} lstm", S::NAME);
    check_sequence(&what, c, run_sequence::<S, _>(&mut lstm, c), rel);
    let gr = &c["grads"];
    assert_close(
        &format!("{what} grad weight_ih"),
        &f64s(lstm.grad_weight_ih.as_flattened().as_flattened()),
        &nums(&gr["weight_ih_l0"]),
        rel,
    );
    assert_close(
        &format!("{what} grad weight_hh"),
        &f64s(lstm.grad_weight_hh.as_flattened().as_flattened()),
        &nums(&gr["weight_hh_l0"]),
        rel,
    );
    assert_close(
        &format!("{what} grad bias"),
        &f64s(lstm.grad_bias.as_flattened()),
        &nums(&gr["bias_ih_l0"]),
        rel,
    );
}

fn gru_matches<S: Scalar + gradscope_core::Float>(g: &Value) {
    let c = &g["gru"];
    let mut gru = Gru::<S, I, H, T>::new();
    let p = &c["params"];
    fill(
        gru.weight_ih.as_flattened_mut().as_flattened_mut(),
        &nums(&p["weight_ih_l0"]),
    );
    fill(
        gru.weight_hh.as_flattened_mut().as_flattened_mut(),
        &nums(&p["weight_hh_l0"]),
    );
    fill(gru.bias_ih.as_flattened_mut(), &nums(&p["bias_ih_l0"]));
    fill(gru.bias_hh.as_flattened_mut(), &nums(&p["bias_hh_l0"]));
    let rel = rel_tol::<S>();
    let what = format!("{} gru", S::NAME);
    check_sequence(&what, c, run_sequence::<S, _>(&mut gru, c), rel);
    let gr = &c["grads"];
    assert_close(
        &format!("{what} grad weight_ih"),
        &f64s(gru.grad_weight_ih.as_flattened().as_flattened()),
        &nums(&gr["weight_ih_l0"]),
        rel,
    );
    assert_close(
        &format!("{what} grad weight_hh"),
        &f64s(gru.grad_weight_hh.as_flattened().as_flattened()),
        &nums(&gr["weight_hh_l0"]),
        rel,
    );
    assert_close(
        &format!("{what} grad bias_ih"),
        &f64s(gru.grad_bias_ih.as_flattened()),
        &nums(&gr["bias_ih_l0"]),
        rel,
    );
    assert_close(
        &format!("{what} grad bias_hh"),
        &f64s(gru.grad_bias_hh.as_flattened()),
        &nums(&gr["bias_hh_l0"]),
        rel,
    );
}

#[test]
fn lstm_and_gru_match_pytorch_in_its_gate_order() {
    let g = golden();
    lstm_matches::<f64>(&g);
    lstm_matches::<f32>(&g);
    gru_matches::<f64>(&g);
    gru_matches::<f32>(&g);
}

fn batchnorm_matches<S: Scalar + gradscope_core::Float>(g: &Value) {
    const N: usize = 3;
    const B: usize = 5;
    let c = &g["batchnorm"];
    let mut bn = BatchNorm::<S, N, B>::new();
    fill(&mut bn.gamma, &nums(&c["gamma"]));
    fill(&mut bn.beta, &nums(&c["beta"]));
    let batches = c["batches"].as_array().expect("batches");
    let t: [[S; N]; B] = rows(&c["t"]);
    let x: [[S; N]; B] = rows(&batches[0]);
    let y = bn.forward(&x, 0, &mut NearestEven, &mut ());
    let mut dy = [[S::ZERO; N]; B];
    let mut loss = 0.0;
    for ((yi, ti), d) in y.iter().zip(&t).zip(dy.iter_mut()) {
        let (l, g) = mse(yi, ti, 1.0 / B as f64);
        loss += l;
        *d = g;
    }
    let dx = bn.backward(&dy, 0, &mut NearestEven, &mut ());
    let rel = rel_tol::<S>();
    let what = |w: &str| format!("{} batchnorm {w}", S::NAME);
    assert_close(
        &what("training output"),
        &f64s(y.as_flattened()),
        &nums(&c["y"]),
        rel,
    );
    assert_close(&what("loss"), &[loss], &[num(&c["loss"])], rel);
    assert_close(
        &what("grad_gamma"),
        &f64s(&bn.grad_gamma),
        &nums(&c["grad_gamma"]),
        rel,
    );
    assert_close(
        &what("grad_beta"),
        &f64s(&bn.grad_beta),
        &nums(&c["grad_beta"]),
        rel,
    );
    assert_close(
        &what("grad_x"),
        &f64s(dx.as_flattened()),
        &nums(&c["grad_x"]),
        rel,
    );
    for b in &batches[1..] {
        bn.forward(&rows(b), 0, &mut NearestEven, &mut ());
    }
    assert_close(
        &what("running_mean"),
        &f64s(&bn.running_mean),
        &nums(&c["running_mean"]),
        rel,
    );
    assert_close(
        &what("running_var"),
        &f64s(&bn.running_var),
        &nums(&c["running_var"]),
        rel,
    );
    bn.training = false;
    let y_eval = bn.forward(&rows(&c["x_eval"]), 0, &mut NearestEven, &mut ());
    assert_close(
        &what("evaluation output"),
        &f64s(y_eval.as_flattened()),
        &nums(&c["y_eval"]),
        rel,
    );
}

#[test]
fn batchnorm_matches_pytorch_in_training_and_evaluation() {
    let g = golden();
    batchnorm_matches::<f64>(&g);
    batchnorm_matches::<f32>(&g);
}

fn residual_matches<S: Scalar>(g: &Value)
where
    Act: Activate<S>,
{
    let c = &g["residual"];
    let mut block = Residual((
        Dense::<S, 4, 6>::new(Act::Tanh),
        Dense::<S, 6, 4>::new(Act::Identity),
    ));
    fill_dense(&mut block, c);
    let (x, t): ([S; 4], [S; 4]) = (array(&nums(&c["x"])), array(&nums(&c["t"])));
    let y = block.forward(&x, 0, &mut NearestEven, &mut ());
    let (loss, dy) = mse(&y, &t, 1.0);
    let dx = block.backward(&dy, 0, &mut NearestEven, &mut ());
    let rel = rel_tol::<S>();
    let what = |w: &str| format!("{} residual {w}", S::NAME);
    assert_close(&what("output"), &f64s(&y), &nums(&c["y"]), rel);
    assert_close(&what("loss"), &[loss], &[num(&c["loss"])], rel);
    assert_close(&what("grad_x"), &f64s(&dx), &nums(&c["grad_x"]), rel);
    assert_dense_grads(&what(""), &mut block, c, rel);
}

#[test]
fn a_residual_block_matches_pytorch() {
    let g = golden();
    residual_matches::<f64>(&g);
    residual_matches::<f32>(&g);
}

// ------------------------------------------------------------------------------------------------ convolution

/// PyTorch's `cnn2d` (see make_golden.py): conv (same) tanh, residual conv (same), max pool, conv (stride 2,
/// padding 1) relu, average pool, flatten, linear.
type Cnn2d<S> = (
    Conv2d<S, 2, 6, 6, 3, 3, 6, 6, 1, 1>,
    (
        Residual<Conv2d<S, 3, 6, 6, 3, 3, 6, 6, 1, 1>>,
        (
            MaxPool2d<S, 3, 6, 6, 2, 3, 3>,
            (
                Conv2d<S, 3, 3, 3, 4, 3, 2, 2, 2, 1>,
                (
                    AvgPool2d<S, 4, 2, 2, 2, 1, 1>,
                    (Flatten<[[[S; 1]; 1]; 4], 4>, Dense<S, 4, 2>),
                ),
            ),
        ),
    ),
);

/// PyTorch's `cnn1d`: conv (stride 2, padding 1) sigmoid, flatten, linear.
type Cnn1d<S> = (
    Conv1d<S, 2, 9, 3, 3, 5, 2, 1>,
    (Flatten<[[S; 5]; 3], 15>, Dense<S, 15, 2>),
);

fn cnn2d<S: Scalar>() -> Cnn2d<S>
where
    Act: Activate<S>,
{
    (
        Conv2d::new(Act::Tanh),
        (
            Residual(Conv2d::new(Act::Identity)),
            (
                MaxPool2d::new(),
                (
                    Conv2d::new(Act::Relu),
                    (
                        AvgPool2d::new(),
                        (Flatten::new(), Dense::new(Act::Identity)),
                    ),
                ),
            ),
        ),
    )
}

/// Set `net`'s parameters from PyTorch's `params` (its `parameters()` order is the visitor's), run one sample
/// and MSE, and compare the output, the loss and every gradient.
fn conv_case_matches<S, N, const O: usize>(name: &str, c: &Value, mut net: N)
where
    S: Scalar,
    N: Layer<S, Output = [S; O]>,
    N::Input: Tensor<Elem = S>,
{
    let params = &c["params"];
    let mut k = 0;
    net.visit(0, &mut |t: ParamTensor<'_, S>| {
        fill(t.value, &nums(&params[k]));
        k += 1;
    });
    assert_eq!(
        k,
        params.as_array().expect("a list").len(),
        "{name}: tensors"
    );
    let mut x = N::Input::zeros();
    fill(x.flat_mut(), &nums(&c["x"]));
    let t: [S; O] = array(&nums(&c["t"]));
    let y = net.forward(&x, 0, &mut NearestEven, &mut ());
    let (loss, dy) = mse(&y, &t, 1.0);
    let dx = net.backward(&dy, 0, &mut NearestEven, &mut ());
    let rel = rel_tol::<S>();
    let what = |w: &str| format!("{} {name} {w}", S::NAME);
    assert_close(&what("output"), &f64s(&y), &nums(&c["y"]), rel);
    assert_close(&what("loss"), &[loss], &[num(&c["loss"])], rel);
    assert_close(&what("grad_x"), &f64s(dx.flat()), &nums(&c["grad_x"]), rel);
    let mut k = 0;
    net.visit(0, &mut |t: ParamTensor<'_, S>| {
        let label = format!("grad of tensor {k} ({})", t.name);
        assert_close(&what(&label), &f64s(t.grad), &nums(&c["grads"][k]), rel);
        k += 1;
    });
}

fn conv_matches<S: Scalar>(g: &Value)
where
    Act: Activate<S>,
{
    let c = &g["conv"];
    conv_case_matches("cnn2d", &c["cnn2d"], cnn2d::<S>());
    let cnn1d: Cnn1d<S> = (
        Conv1d::new(Act::Sigmoid),
        (Flatten::new(), Dense::new(Act::Identity)),
    );
    conv_case_matches("cnn1d", &c["cnn1d"], cnn1d);
    let gap: (
        Conv2d<S, 1, 5, 5, 2, 3, 3, 3>,
        (GlobalAvgPool<S, 2, 3, 3>, Dense<S, 2, 1>),
    ) = (
        Conv2d::new(Act::Tanh),
        (GlobalAvgPool::new(), Dense::new(Act::Identity)),
    );
    conv_case_matches("gap", &c["gap"], gap);
}

/// BatchNorm2d: a training step (outputs, loss, every gradient), the running statistics after four batches,
/// and evaluation-mode outputs.
fn batchnorm2d_matches<S: Scalar + gradscope_core::Float>(g: &Value) {
    const C: usize = 2;
    const B: usize = 3;
    type X<S> = [[[[S; 3]; 3]; C]; B];
    let c = &g["conv"]["bn2d"];
    let mut bn = BatchNorm2d::<S, C, 3, 3, B>::new();
    fill(&mut bn.gamma, &nums(&c["gamma"]));
    fill(&mut bn.beta, &nums(&c["beta"]));
    let batch = |v: &Value| -> X<S> {
        let mut x = [[[[S::ZERO; 3]; 3]; C]; B];
        fill(
            x.as_flattened_mut().as_flattened_mut().as_flattened_mut(),
            &nums(v),
        );
        x
    };
    let flat = |x: &X<S>| f64s(x.as_flattened().as_flattened().as_flattened());
    let batches = c["batches"].as_array().expect("batches");
    let y = bn.forward(&batch(&batches[0]), 0, &mut NearestEven, &mut ());
    let (y64, t) = (flat(&y), nums(&c["t"]));
    let n = y64.len() as f64;
    let loss = y64
        .iter()
        .zip(&t)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / n;
    let mut dy = [[[[S::ZERO; 3]; 3]; C]; B];
    for ((d, a), b) in dy
        .as_flattened_mut()
        .as_flattened_mut()
        .as_flattened_mut()
        .iter_mut()
        .zip(&y64)
        .zip(&t)
    {
        *d = to_s(2.0 * (a - b) / n);
    }
    let dx = bn.backward(&dy, 0, &mut NearestEven, &mut ());
    let rel = rel_tol::<S>();
    let what = |w: &str| format!("{} batchnorm2d {w}", S::NAME);
    assert_close(&what("training output"), &y64, &nums(&c["y"]), rel);
    assert_close(&what("loss"), &[loss], &[num(&c["loss"])], rel);
    assert_close(
        &what("grad_gamma"),
        &f64s(&bn.grad_gamma),
        &nums(&c["grad_gamma"]),
        rel,
    );
    assert_close(
        &what("grad_beta"),
        &f64s(&bn.grad_beta),
        &nums(&c["grad_beta"]),
        rel,
    );
    assert_close(&what("grad_x"), &flat(&dx), &nums(&c["grad_x"]), rel);
    for b in &batches[1..] {
        bn.forward(&batch(b), 0, &mut NearestEven, &mut ());
    }
    assert_close(
        &what("running_mean"),
        &f64s(&bn.running_mean),
        &nums(&c["running_mean"]),
        rel,
    );
    assert_close(
        &what("running_var"),
        &f64s(&bn.running_var),
        &nums(&c["running_var"]),
        rel,
    );
    bn.training = false;
    let y = bn.forward(&batch(&c["x_eval"]), 0, &mut NearestEven, &mut ());
    assert_close(
        &what("evaluation output"),
        &flat(&y),
        &nums(&c["y_eval"]),
        rel,
    );
}

#[test]
fn batchnorm2d_matches_pytorch_in_training_and_evaluation() {
    let g = golden();
    batchnorm2d_matches::<f64>(&g);
    batchnorm2d_matches::<f32>(&g);
}

#[test]
fn convolution_and_pooling_match_pytorch() {
    let g = golden();
    conv_matches::<f64>(&g);
    conv_matches::<f32>(&g);
}

/// The comparison itself can fail: a perturbed reference is caught.
#[test]
fn a_perturbed_reference_is_caught() {
    let want = [1.0, -2.0, 3.0];
    let got = [1.0, -2.0, 3.0 + 3.0 * 2e-12];
    assert!(std::panic::catch_unwind(|| assert_close("control", &got, &want, 1e-12)).is_err());
    assert_close("control", &[1.0, -2.0, 3.0 + 1e-12], &want, 1e-12);
}

/// Bits of a 16-bit float, NaN canonicalised (PyTorch and `half` may pick different NaN payloads).
trait Bits16: Scalar {
    fn bits(self) -> u16;
    fn of_bits(b: u16) -> Self;
}

impl Bits16 for f16 {
    fn bits(self) -> u16 {
        if self.is_nan() {
            0x7e00
        } else {
            self.to_bits()
        }
    }
    fn of_bits(b: u16) -> Self {
        f16::from_bits(b)
    }
}

impl Bits16 for bf16 {
    fn bits(self) -> u16 {
        if self.is_nan() {
            0x7fc0
        } else {
            self.to_bits()
        }
    }
    fn of_bits(b: u16) -> Self {
        bf16::from_bits(b)
    }
}

/// A 16-bit float operation as the core computes it: the value and its events.
type Op<S> = fn(S, S) -> (S, gradscope_core::Flags);

fn half_matches<S: Bits16>(g: &Value, key: &str) {
    let h = &g["half"];
    let want = |k: &str| -> Vec<u16> { nums(&h[key][k]).iter().map(|&v| v as u16).collect() };
    let canon = |b: u16| S::of_bits(b).bits();
    let x = nums(&h["x"]);
    let rounded = want("from_f32");
    assert_eq!(x.len(), rounded.len());
    // One documented difference: where PyTorch's conversion overflows a finite input to ±∞, the core's
    // conversions saturate to ±MAX and flag OVERFLOW (the `Scalar` contract for every format).
    let mut saturated = 0;
    for (&v, &bits) in x.iter().zip(&rounded) {
        let (got, flags) = S::from_f64(v, &mut NearestEven);
        let want = S::of_bits(bits);
        if want.to_f64().is_infinite() && v.is_finite() {
            let max = if v > 0.0 { S::MAX } else { S::MIN };
            assert_eq!(got.bits(), max.bits(), "{key}: {v:e} saturates");
            assert!(
                flags.contains(gradscope_core::Flags::OVERFLOW),
                "{key}: {v:e}"
            );
            saturated += 1;
        } else {
            let got = got.bits();
            assert_eq!(
                got,
                canon(bits),
                "{key}: {v:e} rounds to {got:#06x}, PyTorch {bits:#06x}"
            );
        }
    }
    // f16 meets its overflow threshold (65520 rounds up) in the inputs; bf16's range is f32's.
    assert_eq!(saturated > 0, key == "f16", "{key}: {saturated} saturated");
    let (a, b) = (want("a"), want("b"));
    let ops: [(&str, Op<S>); 3] = [
        ("add", S::add),
        ("sub", S::sub),
        ("mul", |a, b| a.mul(b, &mut NearestEven)),
    ];
    for (name, op) in ops {
        for ((&ab, &bb), &rb) in a.iter().zip(&b).zip(&want(name)) {
            let got = op(S::of_bits(ab), S::of_bits(bb)).0.bits();
            assert_eq!(got, canon(rb), "{key} {name} {ab:#06x} {bb:#06x}");
        }
    }
}

#[test]
fn f16_and_bf16_rounding_and_arithmetic_match_pytorch_bit_for_bit() {
    let g = golden();
    half_matches::<f16>(&g, "f16");
    half_matches::<bf16>(&g, "bf16");
}
