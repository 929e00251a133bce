//! `--dump` files read back and every gradient recomputed by an independent f64 implementation of the
//! network (plain loops, the activations' textbook formulas), itself checked by central differences.

use std::path::PathBuf;

use gradscope_core::Act;
use gradscope_lab::depth::{self, DepthConfig};
use gradscope_lab::dump::Dump;
use gradscope_lab::options::{Cell, InitName, Precision};
use gradscope_lab::output::write_atomic;
use gradscope_lab::rnn::{self, RnnConfig};
use serde_json::Value;

type Fn1 = fn(f64) -> f64;
/// Per layer: ∂L/∂W and ∂L/∂b.
type Grads = Vec<(Vec<Vec<f64>>, Vec<f64>)>;

fn act(name: &str) -> (Fn1, Fn1) {
    match name {
        "sigmoid" => (
            |x| 1.0 / (1.0 + (-x).exp()),
            |x| {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            },
        ),
        "tanh" => (f64::tanh, |x| 1.0 - x.tanh().powi(2)),
        "relu" => (|x| x.max(0.0), |x| if x > 0.0 { 1.0 } else { 0.0 }),
        other => panic!("no reference for {other}"),
    }
}

fn mat(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("matrix")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect()
}

fn vec1(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("vector")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A dense layer read from a dump.
struct DenseRef {
    w: Vec<Vec<f64>>,
    b: Vec<f64>,
    f: fn(f64) -> f64,
    df: fn(f64) -> f64,
}

/// Batch-mean MSE of a dense stack and its gradients (dW, db per layer).
fn dense_loss_and_grads(layers: &[DenseRef], xs: &[Vec<f64>], ts: &[Vec<f64>]) -> (f64, Grads) {
    let mut grads: Grads = layers
        .iter()
        .map(|l| {
            (
                vec![vec![0.0; l.w[0].len()]; l.w.len()],
                vec![0.0; l.b.len()],
            )
        })
        .collect();
    let n = xs.len() as f64;
    let mut total = 0.0;
    for (x, t) in xs.iter().zip(ts) {
        let mut inputs = vec![x.clone()];
        let mut zs = Vec::new();
        for l in layers {
            let h = inputs.last().unwrap();
            let z: Vec<f64> =
                l.w.iter()
                    .zip(&l.b)
                    .map(|(row, b)| row.iter().zip(h).map(|(w, v)| w * v).sum::<f64>() + b)
                    .collect();
            inputs.push(z.iter().map(|&v| (l.f)(v)).collect());
            zs.push(z);
        }
        let y = inputs.last().unwrap();
        let m = y.len() as f64;
        total += y.iter().zip(t).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / m / n;
        let mut dy: Vec<f64> = y
            .iter()
            .zip(t)
            .map(|(a, b)| 2.0 * (a - b) / m / n)
            .collect();
        for k in (0..layers.len()).rev() {
            let dz: Vec<f64> = dy
                .iter()
                .zip(&zs[k])
                .map(|(d, &z)| d * (layers[k].df)(z))
                .collect();
            for (i, &d) in dz.iter().enumerate() {
                for (j, &v) in inputs[k].iter().enumerate() {
                    grads[k].0[i][j] += d * v;
                }
                grads[k].1[i] += d;
            }
            dy = (0..inputs[k].len())
                .map(|j| dz.iter().zip(&layers[k].w).map(|(d, row)| d * row[j]).sum())
                .collect();
        }
    }
    (total, grads)
}

fn read_back(dump: &Dump, name: &str) -> Value {
    let path: PathBuf =
        std::env::temp_dir().join(format!("gradscope-dump-{}-{name}.json", std::process::id()));
    write_atomic(
        &path,
        serde_json::to_string_pretty(&dump.json())
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let v = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    v
}

/// max |a − b| over matching entries, and max |b|.
fn compare(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0.0f64, 0.0f64), |(e, m), (x, y)| {
        (e.max((x - y).abs()), m.max(y.abs()))
    })
}

fn check_depth(act_name: &str, precision: &str, rel_tol: f64) {
    let cfg = DepthConfig {
        batch: 3,
        seed: 7,
        ..DepthConfig::new(
            Act::from_name(act_name).unwrap(),
            InitName::XavierNormal,
            4,
            8,
            precision.parse::<Precision>().unwrap(),
        )
    };
    let d = read_back(
        &depth::run(&cfg).unwrap().dump,
        &format!("{act_name}-{precision}"),
    );
    assert_eq!(d["format"], "gradscope-dump/1");
    assert_eq!(d["precision"], precision);
    assert_eq!(d["loss"], "mse");
    let (f, df) = act(act_name);
    let layers: Vec<DenseRef> = d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["kind"], "dense");
            assert_eq!(l["activation"], act_name);
            DenseRef {
                w: mat(&l["weight"]),
                b: vec1(&l["bias"]),
                f,
                df,
            }
        })
        .collect();
    let xs = mat(&d["input"]);
    let ts = mat(&d["target"]);
    let (loss, grads) = dense_loss_and_grads(&layers, &xs, &ts);
    let dumped_loss = d["loss_value"].as_f64().unwrap();
    assert!(
        (loss - dumped_loss).abs() <= rel_tol * loss.abs().max(1e-12) + 1e-12,
        "{precision} loss {loss} vs {dumped_loss}"
    );
    for (k, (l, (gw, gb))) in d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&grads)
        .enumerate()
    {
        let got: Vec<f64> = mat(&l["grad_weight"])
            .concat()
            .into_iter()
            .chain(vec1(&l["grad_bias"]))
            .collect();
        let want: Vec<f64> = gw.concat().into_iter().chain(gb.iter().copied()).collect();
        let (err, scale) = compare(&got, &want);
        // Fixed point: absolute error of a few LSB per value; floats: relative to the largest gradient.
        let tol = if precision.starts_with('i') {
            rel_tol
        } else {
            rel_tol * scale
        };
        assert!(
            err <= tol,
            "{act_name} {precision} layer {k}: max error {err:e}, largest gradient {scale:e}"
        );
    }
}

#[test]
fn depth_dumps_recompute_in_f64() {
    for a in ["sigmoid", "tanh", "relu"] {
        check_depth(a, "f64", 1e-12);
        check_depth(a, "f32", 1e-5);
        // 64 LSB of I16F16, the bound the backprop tests use.
        check_depth(a, "i16f16", 64.0 / 65536.0);
        // The 16-bit floats, relative to the largest gradient: 16 and 4 units of f16's and bf16's
        // round-off (2⁻¹¹, 2⁻⁸), as the values pass through every layer.
        check_depth(a, "f16", 16.0 / 2048.0);
        check_depth(a, "bf16", 4.0 / 256.0);
    }
}

#[test]
fn the_reference_matches_central_differences() {
    let cfg = DepthConfig {
        batch: 2,
        seed: 3,
        ..DepthConfig::new(Act::Tanh, InitName::XavierNormal, 3, 8, Precision::F64)
    };
    let d = read_back(&depth::run(&cfg).unwrap().dump, "reference");
    let (f, df) = act("tanh");
    let mut layers: Vec<DenseRef> = d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| DenseRef {
            w: mat(&l["weight"]),
            b: vec1(&l["bias"]),
            f,
            df,
        })
        .collect();
    let (xs, ts) = (mat(&d["input"]), mat(&d["target"]));
    let (_, grads) = dense_loss_and_grads(&layers, &xs, &ts);
    for (k, i, j) in [(0, 0, 0), (1, 3, 5), (2, 7, 2)] {
        let h = 1e-6;
        let w0 = layers[k].w[i][j];
        layers[k].w[i][j] = w0 + h;
        let up = dense_loss_and_grads(&layers, &xs, &ts).0;
        layers[k].w[i][j] = w0 - h;
        let down = dense_loss_and_grads(&layers, &xs, &ts).0;
        layers[k].w[i][j] = w0;
        let fd = (up - down) / (2.0 * h);
        assert!(
            (fd - grads[k].0[i][j]).abs() < 1e-8,
            "layer {k} ({i},{j}): {fd} vs {}",
            grads[k].0[i][j]
        );
    }
}

#[test]
fn rnn_dumps_recompute_in_f64() {
    for precision in ["f64", "f32"] {
        let cfg = RnnConfig {
            hidden: 8,
            precision: precision.parse::<Precision>().unwrap(),
            seed: 5,
            batch: 2,
            ..RnnConfig::new(Cell::Rnn, 1.2, 0.0, 10)
        };
        let d = read_back(&rnn::run(&cfg).unwrap().dump, &format!("rnn-{precision}"));
        let l = &d["layers"][0];
        assert_eq!(l["kind"], "rnn");
        let (wih, whh, b) = (mat(&l["weight_ih"]), mat(&l["weight_hh"]), vec1(&l["bias"]));
        let hsz = b.len();
        let (mut gih, mut ghh, mut gb) = (
            vec![vec![0.0; wih[0].len()]; hsz],
            vec![vec![0.0; hsz]; hsz],
            vec![0.0; hsz],
        );
        let seqs = d["input"].as_array().unwrap();
        let targets = mat(&d["target"]);
        let n = seqs.len() as f64;
        let mut total = 0.0f64;
        for (seq, t) in seqs.iter().zip(&targets) {
            let xs = mat(seq);
            let mut hs = vec![vec![0.0; hsz]];
            let mut zs = Vec::new();
            for x in &xs {
                let prev = hs.last().unwrap();
                let z: Vec<f64> = (0..hsz)
                    .map(|i| {
                        wih[i].iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
                            + whh[i].iter().zip(prev).map(|(w, v)| w * v).sum::<f64>()
                            + b[i]
                    })
                    .collect();
                hs.push(z.iter().map(|v| v.tanh()).collect());
                zs.push(z);
            }
            let y = hs.last().unwrap();
            total += y.iter().zip(t).map(|(a, c)| (a - c).powi(2)).sum::<f64>() / hsz as f64 / n;
            let mut dh: Vec<f64> = y
                .iter()
                .zip(t)
                .map(|(a, c)| 2.0 * (a - c) / hsz as f64 / n)
                .collect();
            for s in (0..xs.len()).rev() {
                let dz: Vec<f64> = dh
                    .iter()
                    .zip(&zs[s])
                    .map(|(d, z)| d * (1.0 - z.tanh().powi(2)))
                    .collect();
                for i in 0..hsz {
                    for (j, v) in xs[s].iter().enumerate() {
                        gih[i][j] += dz[i] * v;
                    }
                    for j in 0..hsz {
                        ghh[i][j] += dz[i] * hs[s][j];
                    }
                    gb[i] += dz[i];
                }
                dh = (0..hsz)
                    .map(|j| (0..hsz).map(|i| dz[i] * whh[i][j]).sum())
                    .collect();
            }
        }
        let tol: f64 = if precision == "f64" { 1e-12 } else { 1e-5 };
        assert!((total - d["loss_value"].as_f64().unwrap()).abs() <= tol * total);
        for (name, want) in [
            ("grad_weight_ih", gih.concat()),
            ("grad_weight_hh", ghh.concat()),
            ("grad_bias", gb.clone()),
        ] {
            let got = if name == "grad_bias" {
                vec1(&l[name])
            } else {
                mat(&l[name]).concat()
            };
            let (err, scale) = compare(&got, &want);
            assert!(
                err <= tol * scale,
                "{precision} {name}: max error {err:e}, largest {scale:e}"
            );
        }
    }
}
