//! The `gradscope` binary end to end: every subcommand on small inputs, and bad input giving a one-line error
//! and a non-zero exit, never a panic.

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

#[test]
fn version_and_help() {
    let v = gradscope(&["--version"]);
    assert!(v.status.success() && stdout(&v).starts_with("gradscope "));
    let h = gradscope(&["--help"]);
    for cmd in [
        "depth",
        "formats",
        "activations",
        "firmware-digests",
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
    assert_eq!(rows.len(), 27);
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
fn other_subcommands_run() {
    for args in [
        &["formats", "--samples", "100"][..],
        &["activations"][..],
        &["firmware-digests"][..],
    ] {
        let o = gradscope(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(!stdout(&o).is_empty());
    }
    let r = gradscope(&["report", "--quick"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stdout(&r).contains("Vanishing with depth"));
}

#[test]
fn bad_input_is_a_one_line_error_and_a_nonzero_exit() {
    let cases: [(&[&str], &str); 8] = [
        (
            &["depth", "--width", "12"],
            "width 12 is not supported: choose one of [8, 16, 32, 64]",
        ),
        (
            &["depth", "--depth", "0"],
            "depth 0 is not supported: choose 1 to 64",
        ),
        (&["depth", "--depth", "65"], "choose 1 to 64"),
        (&["depth", "--batch", "0"], "batch 0 is not supported"),
        (&["depth", "--activation", "swishy"], "unknown activation"),
        (
            &["depth", "--activation", "elu:nan"],
            "invalid activation coefficient",
        ),
        (&["depth", "--init", "he"], "invalid value 'he'"),
        (&["depth", "--precision", "bf16"], "invalid value 'bf16'"),
    ];
    for (args, want) in cases {
        let o = gradscope(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{args:?}: {err}"
        );
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("error:"), "{args:?}: {err}");
    }
}
