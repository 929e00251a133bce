//! `gradscope inspect` on models PyTorch wrote (`tests/data/make_inspect.py`): the f64 gradients equal
//! autograd's, padding to a compiled width changes no bit, and bad files and data are one-line errors with no
//! output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gradscope_core::Act;
use gradscope_lab::data::Samples;
use gradscope_lab::inspect::{self, Model, Pass};
use gradscope_lab::options::{Precision, Rounding};
use safetensors::{Dtype, tensor::TensorView};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/inspect")
        .join(name)
}

fn gradscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(args)
        .output()
        .expect("run gradscope")
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn torch(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data(&format!("{name}.torch.json"))).unwrap())
        .unwrap()
}

fn load(name: &str) -> (Model, Samples, gradscope_core::Loss, Value) {
    let t = torch(name);
    let acts: Vec<Act> = t["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| Act::from_name(a.as_str().unwrap()).unwrap())
        .collect();
    let loss = gradscope_core::Loss::from_name(t["loss"].as_str().unwrap()).unwrap();
    let model = Model::load(&data(&format!("{name}.safetensors")), &acts).unwrap();
    let samples = inspect::load_data(&data(&format!("{name}.csv")), &model, loss).unwrap();
    (model, samples, loss, t)
}

#[test]
fn f64_gradients_equal_pytorch_autograd() {
    // Dense: f32 storage and softmax cross-entropy, f64 storage with a bias-free layer and MSE, bf16 storage
    // and BCE on logits. Recurrent: an LSTM with a head (f32, MSE, 20 steps), a GRU with a head (f64,
    // cross-entropy, 10 steps), a ReLU RNN alone (f32, MSE on its last state, 10 steps).
    for name in ["mlp", "regressor", "binary", "lstm", "gru", "rnn"] {
        let (model, samples, loss, t) = load(name);
        let tr = inspect::trace(&model, &samples, &Pass::new(loss, Precision::F64)).unwrap();
        let want_loss = t["loss_value"].as_f64().unwrap();
        assert!(
            (tr.loss - want_loss).abs() <= 1e-12 * want_loss.abs(),
            "{name}: loss {} against torch's {want_loss}",
            tr.loss
        );
        let grads = t["grads"].as_array().unwrap();
        assert_eq!(grads.len(), model.infos().len(), "{name}");
        for (k, (ours, theirs)) in tr.grads.iter().zip(grads).enumerate() {
            let theirs: Vec<f64> = theirs
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(ours.len(), theirs.len(), "{name} layer {k}");
            let scale = norm(&theirs);
            assert!(
                scale > 0.0,
                "{name} layer {k}: a zero reference proves nothing"
            );
            let diff: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| a - b).collect();
            assert!(
                norm(&diff) <= 1e-9 * scale,
                "{name} layer {k}: relative error {}",
                norm(&diff) / scale
            );
        }
    }
}

#[test]
fn the_cli_reports_pytorchs_gradient_norms_in_its_f64_rows() {
    let (model, _, _, t) = load("mlp");
    let o = gradscope(&[
        "inspect",
        "--model",
        data("mlp.safetensors").to_str().unwrap(),
        "--activations",
        "tanh,sigmoid,identity",
        "--data",
        data("mlp.csv").to_str().unwrap(),
        "--loss",
        "ce",
        "--precisions",
        "f64,i1f15",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["shape"], "5-12-7-3");
    assert_eq!(j["padded_width"], 16);
    assert_eq!(j["samples"], 16);
    let f64_layers = j["precisions"][0]["layers"].as_array().unwrap();
    assert_eq!(f64_layers.len(), model.layers.len());
    for (l, g) in f64_layers.iter().zip(t["grads"].as_array().unwrap()) {
        let g: Vec<f64> = g
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let want = norm(&g);
        let got = l["grad_norm"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{got} against {want}");
    }
    // Q15 loses some of this classifier's small first-layer gradients; the counts say how many.
    let q15 = &j["precisions"][1];
    assert_eq!(q15["precision"], "i1f15");
    let lost: u64 = q15["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["gradients"]["underflowed"].as_u64().unwrap())
        .sum();
    assert!(lost > 0, "{q15}");
}

/// A model whose sizes are compiled widths (8), with sigmoid hidden layers: padding units output ½, the
/// hardest case for exactness.
fn native_model() -> Model {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64 * 1.6 - 0.8
    };
    let layers = [Act::Sigmoid, Act::Tanh, Act::Identity]
        .into_iter()
        .enumerate()
        .map(|(k, act)| inspect::Linear {
            name: k.to_string(),
            weight: (0..8).map(|_| (0..8).map(|_| next()).collect()).collect(),
            bias: (0..8).map(|_| next() / 4.0).collect(),
            has_bias: true,
            act,
        })
        .collect();
    Model {
        recurrent: None,
        layers,
    }
}

#[test]
fn padding_changes_no_bit() {
    let model = native_model();
    let samples: Vec<(Vec<f64>, Vec<f64>)> = (0..6)
        .map(|s| {
            let x = (0..8)
                .map(|i| ((s * 8 + i) as f64 * 0.37).sin() * 0.9)
                .collect();
            let mut t = vec![0.0; 8];
            t[s % 8] = 1.0;
            (x, t)
        })
        .collect();
    for loss in [
        gradscope_core::Loss::Mse,
        gradscope_core::Loss::SoftmaxCrossEntropy,
    ] {
        for p in [
            Precision::F64,
            Precision::F32,
            Precision::Bf16,
            Precision::F16,
            Precision::I16F16,
            Precision::I8F24,
            Precision::I1F15,
        ] {
            for rounding in [Rounding::Nearest, Rounding::Floor] {
                let run = |w| {
                    let pass = Pass {
                        rounding,
                        width: Some(w),
                        ..Pass::new(loss, p)
                    };
                    inspect::trace(&model, &samples, &pass).unwrap()
                };
                let native = run(8);
                assert!(native.grads.iter().flatten().any(|&g| g != 0.0));
                for w in [16, 64] {
                    let padded = run(w);
                    assert_eq!(
                        padded.grad_bits, native.grad_bits,
                        "{p} {rounding} {loss:?} width {w}"
                    );
                    assert_eq!(
                        padded.loss.to_bits(),
                        native.loss.to_bits(),
                        "{p} {loss:?} width {w}"
                    );
                    assert_eq!(padded.outputs, native.outputs, "{p} {loss:?} width {w}");
                    assert_eq!(padded.backward, native.backward, "{p} {loss:?} width {w}");
                }
            }
        }
    }
    // A width that cannot hold the model is an error.
    let too_narrow = Pass {
        width: Some(4),
        ..Pass::new(gradscope_core::Loss::Mse, Precision::F32)
    };
    assert!(inspect::trace(&model, &samples, &too_narrow).is_err());
}

fn tensor_file(dir: &Path, name: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn f32s(n: usize, v: f32) -> Vec<u8> {
    (0..n).flat_map(|_| v.to_le_bytes()).collect()
}

#[test]
fn bad_files_and_data_are_one_line_errors_with_no_output() {
    let dir = std::env::temp_dir().join(format!("gradscope-inspect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good = data("mlp.safetensors");
    let csv = data("mlp.csv");
    let not_st = dir.join("model.safetensors");
    std::fs::write(&not_st, b"{\"0.weight\": [[1, 2]]}").unwrap();
    let chain = tensor_file(
        &dir,
        "chain.safetensors",
        &[
            ("0.weight", Dtype::F32, vec![4, 5], f32s(20, 0.1)),
            ("2.weight", Dtype::F32, vec![3, 6], f32s(18, 0.1)),
        ],
    );
    let bias = tensor_file(
        &dir,
        "bias.safetensors",
        &[
            ("0.weight", Dtype::F32, vec![4, 5], f32s(20, 0.1)),
            ("0.bias", Dtype::F32, vec![5], f32s(5, 0.1)),
        ],
    );
    let ints = tensor_file(
        &dir,
        "ints.safetensors",
        &[("0.weight", Dtype::I32, vec![2, 2], vec![0; 16])],
    );
    let nan = tensor_file(
        &dir,
        "nan.safetensors",
        &[("0.weight", Dtype::F32, vec![2, 2], f32s(4, f32::NAN))],
    );
    let stray = tensor_file(
        &dir,
        "stray.safetensors",
        &[("embedding.table", Dtype::F32, vec![2, 2], f32s(4, 0.0))],
    );
    let wide = tensor_file(
        &dir,
        "wide.safetensors",
        &[("0.weight", Dtype::F32, vec![65, 2], f32s(130, 0.0))],
    );
    let short = dir.join("short.csv");
    std::fs::write(&short, "1,2,3,0\n").unwrap();
    let nonfinite = dir.join("inf.csv");
    std::fs::write(&nonfinite, "1,2,3,inf,5,0\n").unwrap();
    let class = dir.join("class.csv");
    std::fs::write(&class, "1,2,3,4,5,3\n").unwrap();
    let out = dir.join("out");
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec![s(&not_st), "tanh".into(), s(&csv)], format!("{}: not a safetensors file", not_st.display())),
        (
            vec![s(&chain), "tanh,tanh".into(), s(&csv)],
            "tensor 2.weight has shape (3, 6) but layer 0 gives 4 outputs".into(),
        ),
        (
            vec![s(&bias), "tanh".into(), s(&csv)],
            "tensor 0.bias has shape (5), expected (4) to match 0.weight (4, 5)".into(),
        ),
        (vec![s(&ints), "tanh".into(), s(&csv)], "tensor 0.weight: dtype I32 is not a float".into()),
        (vec![s(&nan), "tanh".into(), s(&csv)], "tensor 0.weight: element 0 is NaN".into()),
        (vec![s(&stray), "tanh".into(), s(&csv)], "tensor embedding.table is not a layer's weight or bias".into()),
        (vec![s(&wide), "tanh".into(), s(&csv)], "widest 65: gradscope compiles widths up to 64".into()),
        (
            vec![s(&good), "tanh,tanh".into(), s(&csv)],
            "has 3 layers (0, 2, 4) but --activations names 2".into(),
        ),
        (
            vec![s(&good), "tanh,sigmoid,identity".into(), s(&short)],
            "line 1: 4 columns, expected 6 (5 inputs for the model's first layer, then one class index for ce)"
                .into(),
        ),
        (
            vec![s(&good), "tanh,sigmoid,identity".into(), s(&nonfinite)],
            "line 1, column 4: inf is not a finite number".into(),
        ),
        (
            vec![s(&good), "tanh,sigmoid,identity".into(), s(&class)],
            "line 1, column 6: class 3 is not an index 0..2 of the model's 3 outputs".into(),
        ),
        (
            vec![s(&good), "tanh,sigmoid,identity".into(), s(&dir.join("missing.csv"))],
            "--data".into(),
        ),
    ];
    let recurrent = |name: &str, t: &[(&str, Vec<usize>)]| {
        let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = t
            .iter()
            .map(|(n, s)| (*n, Dtype::F32, s.clone(), f32s(s.iter().product(), 0.1)))
            .collect();
        tensor_file(&dir, name, &tensors)
    };
    let two_layers = recurrent(
        "two.safetensors",
        &[
            ("lstm.weight_ih_l0", vec![8, 1]),
            ("lstm.weight_hh_l0", vec![8, 2]),
            ("lstm.weight_ih_l1", vec![8, 2]),
            ("lstm.weight_hh_l1", vec![8, 2]),
        ],
    );
    let reverse = recurrent(
        "reverse.safetensors",
        &[
            ("gru.weight_ih_l0", vec![6, 1]),
            ("gru.weight_hh_l0", vec![6, 2]),
            ("gru.weight_ih_l0_reverse", vec![6, 1]),
        ],
    );
    let gates = recurrent(
        "gates.safetensors",
        &[("weight_ih_l0", vec![10, 1]), ("weight_hh_l0", vec![5, 2])],
    );
    let lstm = data("lstm.safetensors");
    let lstm_csv = data("lstm.csv");
    let seven_steps = dir.join("seven.csv");
    std::fs::write(&seven_steps, format!("{}0.5,0.5\n", "0.1,".repeat(21))).unwrap();
    let mut cases = cases;
    cases.extend([
        (
            vec![s(&two_layers), "tanh".into(), s(&csv)],
            "tensor lstm.weight_hh_l1: only single-layer, unidirectional recurrent layers are supported".into(),
        ),
        (
            vec![s(&reverse), "tanh".into(), s(&csv)],
            "tensor gru.weight_ih_l0_reverse: only single-layer, unidirectional".into(),
        ),
        (
            vec![s(&gates), "tanh".into(), s(&csv)],
            "tensor weight_ih_l0 has shape (10, 1) for hidden size 2: not 1, 3 or 4 gate blocks".into(),
        ),
        (
            vec![s(&lstm), "relu,identity".into(), s(&lstm_csv)],
            "the nn.LSTM layer rnn takes tanh (its fixed nonlinearity), not relu".into(),
        ),
        (
            vec![s(&lstm), "tanh,identity".into(), s(&seven_steps)],
            "23 columns, expected T × 3 inputs (T steps of the recurrent layer's 3, T one of [10, 20, 50, 100]) then 1 target".into(),
        ),
    ]);
    for (args, want) in cases {
        let o = gradscope(&[
            "inspect",
            "--model",
            &args[0],
            "--activations",
            &args[1],
            "--data",
            &args[2],
            "--loss",
            "ce",
            "--out",
            out.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(&want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(o.stdout.is_empty());
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn out_writes_the_page_its_plot_and_the_tables() {
    let dir = std::env::temp_dir().join(format!("gradscope-inspect-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = gradscope(&[
        "inspect",
        "--model",
        data("regressor.safetensors").to_str().unwrap(),
        "--activations",
        "relu,gelu,identity",
        "--data",
        data("regressor.csv").to_str().unwrap(),
        "--precisions",
        "f32,i16f16",
        "--batch",
        "4",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("(3-20-20-2, run at width 32), 4 samples, loss mse"),
        "{text}"
    );
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "index.html",
            "inspect.json",
            "inspect_formats.csv",
            "inspect_grad_norm.svg",
            "inspect_layers.csv"
        ]
    );
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("<h1>gradscope inspect</h1>") && html.contains("inspect_grad_norm.svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The models the firmware's `byom` binary trains are what `--emit-rust` writes today.
#[test]
fn the_firmwares_emitted_models_are_current() {
    let (model, samples, loss, _) = load("mlp");
    for p in [Precision::F32, Precision::I16F16] {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../firmware/models/mlp_{p}.rs"));
        let committed = std::fs::read_to_string(&file).unwrap();
        let fresh = inspect::emit_rust(
            &model,
            &samples,
            loss,
            p,
            "tests/data/inspect/mlp.safetensors",
        )
        .unwrap();
        assert!(
            committed == fresh,
            "{} is stale: regenerate it with the command in firmware/models/README.md",
            file.display()
        );
    }
}

#[test]
fn emitted_constants_are_the_formats_storage_bits() {
    let (model, samples, loss, _) = load("mlp");
    let src = inspect::emit_rust(&model, &samples, loss, Precision::I16F16, "m").unwrap();
    // Q16.16: round-to-nearest of w·2¹⁶, checked independently of the core's conversion.
    let w = model.layers[0].weight[0][0];
    let first = format!("[{}, ", (w * 65536.0).round_ties_even() as i32);
    assert!(
        src.contains(&format!("const L1_WEIGHT: [[i32; 5]; 12] = [\n    {first}")),
        "{src}"
    );
    let src = inspect::emit_rust(&model, &samples, loss, Precision::F32, "m").unwrap();
    assert!(src.contains(&format!("[{}, ", (w as f32).to_bits())));
    assert!(src.contains("pub type Net = (gradscope_core::Dense<S, 5, 12>, (gradscope_core::Dense<S, 12, 7>, gradscope_core::Dense<S, 7, 3>));"));
    assert!(src.contains(
        "pub const LOSS: gradscope_core::Loss = gradscope_core::Loss::SoftmaxCrossEntropy;"
    ));
    assert!(src.contains("dense(&L1_WEIGHT, &L1_BIAS, gradscope_core::Act::Tanh);"));
    // A parameter goes through the checked constructor with its exact bits (no text parsing on the MCU).
    let mut leaky = model.clone();
    leaky.layers[1].act = Act::from_name("leaky_relu:0.2").unwrap();
    let src = inspect::emit_rust(&leaky, &samples, loss, Precision::F32, "m").unwrap();
    assert!(
        src.contains(&format!(
            "dense(&L2_WEIGHT, &L2_BIAS, gradscope_core::Act::leaky_relu(f32::from_bits({}))?);",
            0.2f32.to_bits()
        )),
        "{src}"
    );
    assert!(!src.contains("from_name"));
}

#[test]
fn recurrent_padding_changes_no_bit() {
    // Cells of 8 inputs and 8 hidden units (a compiled width), run at 8 and at 16: padded hidden units stay
    // exactly zero in every cell (tanh(0) = 0, and the gated cells' c and h start and stay at 0).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let samples: Vec<(Vec<f64>, Vec<f64>)> = (0..3)
        .map(|_| {
            (
                (0..80).map(|_| next()).collect(),
                (0..3).map(|_| next()).collect(),
            )
        })
        .collect();
    for (cell, gates, act) in [
        (inspect::CellKind::Rnn, 1, Act::Tanh),
        (inspect::CellKind::Lstm, 4, Act::Tanh),
        (inspect::CellKind::Gru, 3, Act::Tanh),
    ] {
        let mut m = |r: usize, c: usize| (0..r).map(|_| (0..c).map(|_| next()).collect()).collect();
        let weight_ih = m(8 * gates, 8);
        let weight_hh = m(8 * gates, 8);
        let head_w = m(3, 8);
        let model = Model {
            recurrent: Some(inspect::Recurrent {
                name: "rnn".into(),
                cell,
                act,
                inputs: 8,
                hidden: 8,
                weight_ih,
                weight_hh,
                bias_ih: (0..8 * gates).map(|_| next()).collect(),
                bias_hh: (0..8 * gates).map(|_| next()).collect(),
                has_bias: true,
            }),
            layers: vec![inspect::Linear {
                name: "head".into(),
                weight: head_w,
                bias: (0..3).map(|_| next()).collect(),
                has_bias: true,
                act: Act::Identity,
            }],
        };
        for p in [
            Precision::F64,
            Precision::F32,
            Precision::F16,
            Precision::I16F16,
            Precision::I1F15,
        ] {
            if !inspect::supports(cell, p) {
                continue;
            }
            let run = |w| {
                let pass = Pass {
                    width: Some(w),
                    ..Pass::new(gradscope_core::Loss::Mse, p)
                };
                inspect::trace(&model, &samples, &pass).unwrap()
            };
            let (native, padded) = (run(8), run(16));
            assert!(native.grads[0].iter().any(|&g| g != 0.0));
            assert_eq!(padded.grad_bits, native.grad_bits, "{cell:?} {p}");
            assert_eq!(padded.loss.to_bits(), native.loss.to_bits(), "{cell:?} {p}");
            assert_eq!(padded.outputs, native.outputs, "{cell:?} {p}");
            assert_eq!(padded.backward, native.backward, "{cell:?} {p}");
        }
    }
}

#[test]
fn gated_models_run_in_the_float_formats_and_say_which_they_skip() {
    let lstm = |precisions: &str, extra: &[&str]| {
        let mut args = vec![
            "inspect",
            "--model",
            data("lstm.safetensors")
                .to_str()
                .unwrap()
                .to_string()
                .leak(),
            "--activations",
            "tanh,identity",
            "--data",
            data("lstm.csv").to_str().unwrap().to_string().leak(),
            "--precisions",
            precisions,
        ];
        args.extend(extra);
        gradscope(&args)
    };
    let o = lstm("f64,f32,i16f16,f16", &["--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["shape"], "3-lstm10-2");
    assert_eq!(j["steps"], 20);
    assert_eq!(j["skipped"], serde_json::json!(["i16f16"]));
    let ran: Vec<&str> = j["precisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["precision"].as_str().unwrap())
        .collect();
    assert_eq!(ran, ["f64", "f32", "f16"]);
    let o = lstm("i16f16,i1f15", &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the core runs lstm cells in f64, f32, f16 and bf16 only"),
        "{err}"
    );
    let out = std::env::temp_dir().join(format!("gradscope-emit-{}.rs", std::process::id()));
    let o = lstm(
        "f32",
        &[
            "--emit-rust",
            out.to_str().unwrap().to_string().leak(),
            "--precision",
            "i16f16",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--emit-rust --precision i16f16: the core runs Lstm cells in f64, f32, f16 and bf16 only"),
        "{err}"
    );
    assert!(!out.exists());
}

/// A training state's bytes are the core's layer types at the model's own dimensions: per layer, weights,
/// gradients and caches fill `size_of` of the layer, less a dense layer's activation tag and alignment
/// padding; the reported totals are their sums.
#[test]
fn state_bytes_are_the_layer_types_sizes() {
    use gradscope_core::{Dense, I16F16, Lstm};
    use inspect::InspectConfig;
    use std::mem::{align_of, size_of};
    fn fills<L>(values_bytes: usize, tag: usize) {
        let padded = (values_bytes + tag).div_ceil(align_of::<L>()) * align_of::<L>();
        assert_eq!(padded, size_of::<L>(), "{}", std::any::type_name::<L>());
    }
    let act = size_of::<Act>();
    let layer_bytes = |model: &Model, steps: usize, value: usize| -> Vec<usize> {
        model
            .infos_for(steps)
            .iter()
            .map(|l| (2 * l.params + l.caches) * value)
            .collect()
    };
    let (mlp, samples, _, _) = load("mlp");
    let b = layer_bytes(&mlp, 1, 4);
    fills::<Dense<f32, 5, 12>>(b[0], act);
    fills::<Dense<f32, 12, 7>>(b[1], act);
    fills::<Dense<f32, 7, 3>>(b[2], act);
    let b = layer_bytes(&mlp, 1, 4);
    fills::<Dense<I16F16, 5, 12>>(b[0], act);
    fills::<Dense<I16F16, 12, 7>>(b[1], act);
    fills::<Dense<I16F16, 7, 3>>(b[2], act);
    let cfg = InspectConfig {
        precisions: vec![Precision::I16F16],
        rounding: Rounding::Nearest,
        loss: gradscope_core::Loss::SoftmaxCrossEntropy,
        seed: 1,
    };
    let r = inspect::run(&mlp, "mlp", &samples, &cfg).unwrap();
    let m = &r.precisions[0].memory;
    assert_eq!(m.weights + m.gradients + m.caches, b.iter().sum::<usize>());
    assert_eq!((m.momentum, m.adam), (m.weights, 2 * m.weights));
    let (lstm, _, _, _) = load("lstm");
    let b = layer_bytes(&lstm, 20, 4);
    fills::<Lstm<f32, 3, 10, 20>>(b[0], 0);
    fills::<Dense<f32, 10, 2>>(b[1], act);
}
