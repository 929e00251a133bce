//! The `gradscope` binary end to end: every subcommand on small inputs, and bad input giving a one-line error
//! and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gradscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(args)
        .output()
        .expect("run gradscope")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty temporary directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradscope-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch directory");
    d
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn version_and_help() {
    let v = gradscope(&["--version"]);
    assert!(v.status.success() && stdout(&v).starts_with("gradscope "));
    let h = gradscope(&["--help"]);
    for cmd in [
        "depth",
        "rnn",
        "train",
        "precision",
        "precision-effects",
        "horizon",
        "formats",
        "activations",
        "firmware-digests",
        "inspect",
        "report",
    ] {
        assert!(stdout(&h).contains(cmd), "--help lacks {cmd}");
    }
    // Every activation and initializer name of the core is accepted and listed.
    let d = stdout(&gradscope(&["depth", "--help"]));
    for name in gradscope_core::Act::NAMES
        .iter()
        .chain(&gradscope_core::Init::NAMES)
    {
        assert!(d.contains(name), "depth --help lacks {name}");
    }
    let r = stdout(&gradscope(&["rnn", "--help"]));
    for name in [
        "rnn", "irnn", "lstm", "gru", "value:V", "global:N", "agc:L", "i1f15",
    ] {
        assert!(r.contains(name), "rnn --help lacks {name}");
    }
    let t = stdout(&gradscope(&["train", "--help"]));
    for name in [
        "xor",
        "spiral",
        "sine",
        "adding",
        "digits",
        "adam",
        "dynamic:S",
        "stochastic",
    ] {
        assert!(t.contains(name), "train --help lacks {name}");
    }
}

#[test]
fn depth_outputs_table_csv_and_json() {
    let base = [
        "depth",
        "--depth",
        "6",
        "--width",
        "8",
        "--batch",
        "2",
        "--precision",
        "i1f15",
    ];
    let t = gradscope(&base);
    assert!(t.status.success(), "{}", stderr(&t));
    assert!(stdout(&t).contains("underflow horizon"));
    let c = gradscope(&[&base[..], &["--format", "csv"]].concat());
    let text = stdout(&c);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7);
    assert!(lines[0].starts_with("layer,grad_norm,"));
    let j = gradscope(
        &[
            &base[..],
            &[
                "--format",
                "json",
                "--activation",
                "leaky_relu:0.2",
                "--init",
                "orthogonal",
            ],
        ]
        .concat(),
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&j)).expect("valid JSON");
    assert_eq!(v["layers"].as_array().map(Vec::len), Some(6));
    assert_eq!(v["activation"], "leaky_relu:0.2");
    assert_eq!(v["precision"], "i1f15");
    for name in gradscope_core::Act::NAMES {
        let o = gradscope(&[
            "depth",
            "--depth",
            "2",
            "--width",
            "8",
            "--batch",
            "1",
            "--activation",
            name,
            "--format",
            "csv",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
    for name in gradscope_core::Init::NAMES {
        let o = gradscope(&[
            "depth", "--depth", "2", "--width", "8", "--batch", "1", "--init", name, "--format",
            "csv",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
    // Keras's names are aliases of the canonical ones, listed in --help.
    for (alias, canonical) in [
        ("he_normal", "kaiming_normal"),
        ("he_uniform", "kaiming_uniform"),
        ("glorot_normal", "xavier_normal"),
        ("glorot_uniform", "xavier_uniform"),
    ] {
        let o = gradscope(&[
            "depth", "--depth", "2", "--width", "8", "--batch", "1", "--init", alias, "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
        assert_eq!(v["init"], canonical, "{alias}");
    }
    let help = stdout(&gradscope(&["depth", "--help"]));
    assert!(
        help.contains("he_normal") && help.contains("glorot_uniform"),
        "{help}"
    );
}

#[test]
fn horizon_measured_and_predicted_agree() {
    // Width 32: at width 8 a ReLU layer can go entirely dead by chance, which the mean-field model ignores.
    let o = gradscope(&[
        "horizon", "--depth", "24", "--width", "32", "--batch", "2", "--format", "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    let rows = rows.as_array().expect("an array");
    // 3 activations × 3 initializers × 4 formats (I16F16, I8F24, f16, I1F15).
    assert_eq!(rows.len(), 36);
    for r in rows {
        // "None" means beyond the 24 layers: it agrees with a crossing within 2 layers of the depth.
        let beyond = |h: Option<u64>| h.unwrap_or(25);
        let (m, p) = (
            beyond(r["measured"].as_u64()),
            beyond(r["predicted"].as_u64()),
        );
        assert!(m.abs_diff(p) <= 2, "{r}");
    }
}

#[test]
fn every_subcommand_runs_on_small_inputs() {
    let runs: [&[&str]; 14] = [
        &["formats", "--samples", "100"],
        &[
            "cnn",
            "--depth",
            "3",
            "--epochs",
            "1",
            "--precisions",
            "f32,i1f15",
            "--archs",
            "relu,batchnorm",
        ],
        &["activations"],
        &["firmware-digests"],
        &["horizon", "--depth", "4", "--width", "8", "--batch", "1"],
        &[
            "rnn",
            "--cell",
            "rnn",
            "--steps",
            "10",
            "--hidden",
            "8",
            "--batch",
            "2",
            "--precision",
            "i16f16",
        ],
        &[
            "rnn",
            "--cell",
            "irnn",
            "--steps",
            "10",
            "--hidden",
            "8",
            "--batch",
            "2",
            "--precision",
            "i1f15",
            "--rounding",
            "stochastic",
        ],
        &[
            "rnn",
            "--cell",
            "lstm",
            "--steps",
            "10",
            "--hidden",
            "8",
            "--batch",
            "2",
            "--clip",
            "global:0.5",
        ],
        &[
            "rnn",
            "--cell",
            "gru",
            "--steps",
            "20",
            "--hidden",
            "16",
            "--batch",
            "1",
            "--precision",
            "f64",
            "--clip",
            "agc:0.01",
        ],
        &[
            "train",
            "--task",
            "xor",
            "--epochs",
            "3",
            "--precision",
            "i16f16",
            "--loss-scale",
            "dynamic",
        ],
        &[
            "train",
            "--task",
            "spiral",
            "--epochs",
            "2",
            "--clip",
            "global:1",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
        ],
        &[
            "train",
            "--task",
            "sine",
            "--epochs",
            "2",
            "--precision",
            "i1f15",
            "--rounding",
            "stochastic",
            "--loss-scale",
            "static:8",
        ],
        &[
            "precision",
            "--task",
            "xor",
            "--epochs",
            "2",
            "--precisions",
            "f64,i1f15",
        ],
        &["precision-effects", "--quick"],
    ];
    for args in runs {
        let o = gradscope(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(!stdout(&o).is_empty(), "{args:?}");
    }
    for task in ["adding", "digits"] {
        let o = gradscope(&["train", "--task", task, "--epochs", "1", "--format", "json"]);
        assert!(o.status.success(), "{task}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
        assert_eq!(v["epochs"].as_array().map(Vec::len), Some(1), "{task}");
        assert!(v["epochs"][0]["accuracy"].as_f64().is_some(), "{task}");
    }
    // CSV of rnn: a header and one row per step.
    let c = gradscope(&[
        "rnn", "--steps", "20", "--hidden", "8", "--batch", "1", "--format", "csv",
    ]);
    assert_eq!(stdout(&c).lines().count(), 21);
    assert!(stdout(&c).starts_with("step,grad_norm,zero_fraction\n"));
}

#[test]
fn divergence_is_reported_with_step_and_layer() {
    let o = gradscope(&[
        "train",
        "--task",
        "adding",
        "--epochs",
        "2",
        "--optimizer",
        "sgd",
        "--lr",
        "1",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    let d = &v["divergence"];
    assert!(d["step"].as_u64().is_some_and(|s| s >= 1), "{v}");
    assert!(d["layer"].as_u64().is_some(), "{v}");
    let t = gradscope(&[
        "train",
        "--task",
        "adding",
        "--epochs",
        "2",
        "--optimizer",
        "sgd",
        "--lr",
        "1",
    ]);
    assert!(stdout(&t).contains("diverged at step"), "{}", stdout(&t));
}

#[test]
fn out_writes_csv_json_and_svg() {
    let dir = scratch("out");
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["depth", "--depth", "4", "--width", "8", "--batch", "1"],
            &["depth.csv", "depth.json", "depth.svg"],
        ),
        (
            &["rnn", "--steps", "10", "--hidden", "8", "--batch", "1"],
            &["rnn.csv", "rnn.json", "rnn_steps.svg"],
        ),
        (
            &["train", "--task", "xor", "--epochs", "2"],
            &["train.csv", "train.json", "train_loss.svg"],
        ),
        (
            &["precision", "--task", "xor", "--epochs", "2"],
            &["precision.csv", "precision.json", "precision.svg"],
        ),
        (
            &["horizon", "--depth", "8", "--width", "8", "--batch", "1"],
            &["horizon.csv", "horizon.json", "horizon_model.svg"],
        ),
    ];
    for (args, files) in cases {
        let o = gradscope(&[args, &["--out", dir.to_str().unwrap()]].concat());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        for f in files {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            match f.rsplit('.').next() {
                Some("json") => {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .unwrap_or_else(|e| panic!("{f}: {e}"));
                }
                Some("svg") => assert!(
                    text.starts_with("<svg") && text.contains("<polyline"),
                    "{f}"
                ),
                _ => assert!(text.lines().count() >= 2, "{f}"),
            }
        }
    }
    assert!(
        files_in(&dir).iter().all(|f| !f.contains(".tmp")),
        "{:?}",
        files_in(&dir)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dumps_follow_the_schema() {
    let dir = scratch("dump");
    let path = dir.join("d.json");
    let o = gradscope(&[
        "depth",
        "--depth",
        "3",
        "--width",
        "8",
        "--batch",
        "2",
        "--precision",
        "i1f15",
        "--dump",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["format"], "gradscope-dump/1");
    assert_eq!(v["precision"], "i1f15");
    assert_eq!(v["loss"], "mse");
    assert!(v["loss_value"].as_f64().is_some());
    assert_eq!(v["input"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["target"][1].as_array().map(Vec::len), Some(8));
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for l in layers {
        assert_eq!(l["kind"], "dense");
        assert_eq!(l["weight"].as_array().map(Vec::len), Some(8));
        assert_eq!(l["grad_weight"][0].as_array().map(Vec::len), Some(8));
        assert_eq!(l["bias"].as_array().map(Vec::len), Some(8));
        assert_eq!(l["grad_bias"].as_array().map(Vec::len), Some(8));
    }
    let rpath = dir.join("r.json");
    let o = gradscope(&[
        "rnn",
        "--steps",
        "10",
        "--hidden",
        "8",
        "--batch",
        "2",
        "--dump",
        rpath.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rpath).unwrap()).unwrap();
    assert_eq!(v["layers"][0]["kind"], "rnn");
    assert_eq!(v["input"][0].as_array().map(Vec::len), Some(10));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn report_quick_writes_the_html_report() {
    let dir = scratch("report");
    let o = gradscope(&["report", "--quick", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for section in [
        "formats",
        "vanishing",
        "initialization",
        "exploding",
        "clipping",
        "architecture",
        "recurrent",
        "regularization",
        "horizon",
        "events",
        "digits",
    ] {
        assert!(text.contains(section), "summary lacks {section}");
        assert!(
            dir.join(format!("{section}.json")).exists(),
            "{section}.json"
        );
    }
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let svgs = files_in(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".svg"))
        .count();
    assert!(svgs >= 10, "{svgs} plots");
    assert_eq!(html.matches("<img src=").count(), svgs);
    for f in files_in(&dir) {
        if f.ends_with(".csv") || f.ends_with(".svg") {
            assert!(
                html.contains(&format!("\"{f}\"")),
                "index.html does not link {f}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sweeps_give_the_same_numbers_for_any_thread_count() {
    let run = |threads: &str, name: &str| {
        let dir = scratch(name);
        let o = Command::new(env!("CARGO_BIN_EXE_gradscope"))
            .args([
                "report",
                "--quick",
                "--format",
                "json",
                "--out",
                dir.to_str().unwrap(),
            ])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .expect("run gradscope");
        assert!(o.status.success(), "{}", stderr(&o));
        let mut files = Vec::new();
        for f in files_in(&dir) {
            files.push((f.clone(), std::fs::read(dir.join(&f)).unwrap()));
        }
        std::fs::remove_dir_all(&dir).unwrap();
        (o.stdout, files)
    };
    let (a, fa) = run("1", "threads1");
    let (b, fb) = run("2", "threads2");
    assert_eq!(a, b);
    assert_eq!(fa.len(), fb.len());
    for ((na, ca), (nb, cb)) in fa.iter().zip(&fb) {
        assert_eq!(na, nb);
        assert!(ca == cb, "{na} differs between 1 and 2 threads");
    }
}

#[test]
fn bad_input_is_a_one_line_error_and_a_nonzero_exit() {
    let dir = scratch("bad");
    let nan = dir.join("nan.csv");
    std::fs::write(
        &nan,
        format!("{}3\n{}NaN,4\n", "0,".repeat(64), "0,".repeat(63)),
    )
    .unwrap();
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out_under_file = blocker.join("out");
    let out = dir.join("never");
    let dump_nowhere = dir.join("missing").join("d.json");
    let (nan, under, out, dump) = (
        nan.to_str().unwrap(),
        out_under_file.to_str().unwrap(),
        out.to_str().unwrap(),
        dump_nowhere.to_str().unwrap(),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["depth", "--width", "12"],
            "width 12 is not supported: choose one of [8, 16, 32, 64]",
        ),
        (
            vec!["depth", "--depth", "0"],
            "depth 0 is not supported: choose 1 to 64",
        ),
        (
            vec!["cnn", "--depth", "17"],
            "--depth 17 is not supported: choose 2 to 16",
        ),
        (
            vec!["cnn", "--activation", "relu"],
            "--activation must be sigmoid or tanh",
        ),
        (vec!["cnn", "--archs", "dense"], "invalid value 'dense'"),
        (vec!["cnn", "--lr", "0"], "--lr must be a positive number"),
        (vec!["cnn", "--data", nan], "NaN"),
        (vec!["depth", "--depth", "65"], "choose 1 to 64"),
        (vec!["depth", "--batch", "0"], "batch 0 is not supported"),
        (
            vec!["depth", "--activation", "swishy"],
            "unknown activation",
        ),
        (
            vec!["depth", "--activation", "elu:nan"],
            "invalid activation coefficient",
        ),
        (vec!["depth", "--init", "he"], "invalid value 'he'"),
        (vec!["depth", "--precision", "bf15"], "invalid value 'bf15'"),
        (
            vec![
                "train",
                "--task",
                "adding",
                "--cell",
                "lstm",
                "--precision",
                "i16f16",
            ],
            "--cell lstm trains in f32 or f64",
        ),
        (
            vec!["train", "--task", "adding", "--steps", "30"],
            "--steps 30: the adding task takes 20, 50, 100",
        ),
        (
            vec!["train", "--task", "xor", "--steps", "50"],
            "--steps applies to the adding task only",
        ),
        (
            vec!["train", "--task", "xor", "--cell", "gru"],
            "--cell applies to the adding task only",
        ),
        (
            vec![
                "train",
                "--task",
                "adding",
                "--steps",
                "50",
                "--precision",
                "i16f16",
            ],
            "trains in f32 or f64, not i16f16",
        ),
        (
            vec!["precision-effects", "--precisions", "f64"],
            "precision-effects compares formats with f64: choose among f32, bf16",
        ),
        (
            vec!["depth", "--loss-scale", "0"],
            "--loss-scale must be a positive number",
        ),
        (
            vec!["train", "--task", "sine", "--loss", "bce"],
            "--loss bce_with_logits: task sine takes mse only",
        ),
        (
            vec!["train", "--task", "digits", "--loss", "bce"],
            "task digits takes ce (the default) or mse (softmax MSE)",
        ),
        (vec!["train", "--loss", "hinge"], "unknown loss \"hinge\""),
        (vec!["depth", "--loss", "hinge"], "unknown loss \"hinge\""),
        (
            vec!["train", "--output-bias", "inf"],
            "--output-bias must be a finite number",
        ),
        (vec!["rnn", "--cell", "elman"], "invalid value 'elman'"),
        (
            vec!["rnn", "--steps", "7"],
            "steps 7 is not supported: choose one of [10, 20, 50, 100]",
        ),
        (
            vec!["rnn", "--hidden", "12"],
            "hidden size 12 is not supported",
        ),
        (
            vec!["rnn", "--cell", "lstm", "--precision", "i16f16"],
            "float-only",
        ),
        (vec!["rnn", "--clip", "global"], "malformed --clip 'global'"),
        (vec!["rnn", "--clip", "norm:-1"], "malformed --clip"),
        (vec!["rnn", "--clip", "max:1"], "malformed --clip"),
        (vec!["train", "--task", "mnist"], "invalid value 'mnist'"),
        (
            vec!["train", "--optimizer", "rmsprop"],
            "invalid value 'rmsprop'",
        ),
        (
            vec!["train", "--lr", "nan"],
            "--lr must be a positive number",
        ),
        (
            vec!["train", "--epochs", "0"],
            "--epochs 0 is not supported: choose 1 to 100000",
        ),
        (
            vec!["train", "--momentum", "1"],
            "--momentum must be in [0, 1)",
        ),
        (
            vec!["train", "--loss-scale", "static"],
            "malformed --loss-scale",
        ),
        (
            vec!["train", "--task", "digits", "--data", nan, "--out", out],
            "line 2, column 64",
        ),
        (
            vec!["train", "--task", "xor", "--data", nan],
            "--data applies to the digits task only",
        ),
        (
            vec!["precision", "--precisions", "f32,bf17"],
            "invalid value 'bf17'",
        ),
        (vec!["depth", "--out", under], "is not a directory"),
        (vec!["depth", "--dump", dump], "does not exist"),
        (
            vec!["report", "--quick", "--out", under],
            "is not a directory",
        ),
    ];
    for (args, want) in cases {
        let o = gradscope(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{args:?}: {err}"
        );
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("error:"), "{args:?}: {err}");
        // clap's usage hints follow some errors; our own errors are one line.
        if !err.contains("Usage:") && !err.contains("For more information") {
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
    // Nothing was created by the failing runs.
    assert!(!dir.join("never").exists());
    assert!(!dir.join("missing").exists());
    assert_eq!(files_in(&dir), ["file", "nan.csv"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
