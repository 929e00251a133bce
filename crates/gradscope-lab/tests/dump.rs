//! `--dump` files read back and every gradient recomputed by an independent f64 implementation of the
//! network (plain loops, the activations' textbook formulas), itself checked by central differences.

use std::path::PathBuf;

use gradscope_core::Act;
use gradscope_lab::cnn::Arch;
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

/// Every number of a nested list, flattened in order.
fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().expect("finite")],
        other => panic!("not a number: {other}"),
    }
}

/// Per layer: ∂L/∂w and ∂L/∂b, flattened.
type FlatGrads = Vec<(Vec<f64>, Vec<f64>)>;

/// A `conv2d` layer of a CNN dump: 3×3 kernels, stride 1, one zero of padding, on 8×8 images.
struct ConvRef {
    w: Vec<f64>,
    b: Vec<f64>,
    cin: usize,
    cout: usize,
    f: Fn1,
    df: Fn1,
    residual: bool,
}

const SIDE: usize = 8;
const PADDED: usize = SIDE + 2;

/// `c` channels of an 8×8 image copied into the middle of 10×10 zeros.
fn pad(h: &[f64], c: usize) -> Vec<f64> {
    let mut p = vec![0.0; c * PADDED * PADDED];
    for ch in 0..c {
        for i in 0..SIDE {
            for j in 0..SIDE {
                p[(ch * PADDED + i + 1) * PADDED + j + 1] = h[(ch * SIDE + i) * SIDE + j];
            }
        }
    }
    p
}

/// Batch-mean softmax cross-entropy of the dumped CNN (convolutions, 2×2 max pool, flatten, linear head)
/// and its gradients: per convolution (∂w, ∂b), then the head's (∂W flattened, ∂b). Written from the
/// textbook definitions: a zero-padded sliding window forward, every product scattered back.
fn cnn_loss_and_grads(
    convs: &[ConvRef],
    head: (&[Vec<f64>], &[f64]),
    xs: &[Vec<f64>],
    ts: &[Vec<f64>],
) -> (f64, FlatGrads) {
    let (hw, hb) = head;
    let mut grads: FlatGrads = convs
        .iter()
        .map(|c| (vec![0.0; c.w.len()], vec![0.0; c.b.len()]))
        .collect();
    let mut ghead = (vec![0.0; hw.len() * hw[0].len()], vec![0.0; hb.len()]);
    let n = xs.len() as f64;
    let mut total = 0.0;
    for (x, t) in xs.iter().zip(ts) {
        // Forward: keep each convolution's input and pre-activation.
        let mut ins = vec![x.clone()];
        let mut zs = Vec::new();
        for c in convs {
            let h = ins.last().unwrap();
            let hp = pad(h, c.cin);
            let mut z = vec![0.0; c.cout * SIDE * SIDE];
            for f in 0..c.cout {
                for oy in 0..SIDE {
                    for ox in 0..SIDE {
                        let mut s = c.b[f];
                        for ch in 0..c.cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    s += c.w[((f * c.cin + ch) * 3 + ky) * 3 + kx]
                                        * hp[(ch * PADDED + oy + ky) * PADDED + ox + kx];
                                }
                            }
                        }
                        z[(f * SIDE + oy) * SIDE + ox] = s;
                    }
                }
            }
            let a: Vec<f64> = z.iter().map(|&v| (c.f)(v)).collect();
            let out = if c.residual {
                a.iter().zip(h).map(|(a, h)| a + h).collect()
            } else {
                a
            };
            ins.push(out);
            zs.push(z);
        }
        let h = ins.last().unwrap();
        let ch = convs.last().unwrap().cout;
        let (mut pooled, mut from) = (Vec::new(), Vec::new());
        for c in 0..ch {
            for i in 0..SIDE / 2 {
                for j in 0..SIDE / 2 {
                    let mut best = (f64::NEG_INFINITY, 0);
                    for (di, dj) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let k = (c * SIDE + 2 * i + di) * SIDE + 2 * j + dj;
                        if h[k] > best.0 {
                            best = (h[k], k);
                        }
                    }
                    pooled.push(best.0);
                    from.push(best.1);
                }
            }
        }
        let y: Vec<f64> = hw
            .iter()
            .zip(hb)
            .map(|(row, b)| row.iter().zip(&pooled).map(|(w, v)| w * v).sum::<f64>() + b)
            .collect();
        let m = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = y.iter().map(|v| (v - m).exp()).collect();
        let z: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / z).collect();
        total -= t.iter().zip(&p).map(|(t, p)| t * p.ln()).sum::<f64>() / n;
        // Backward.
        let dy: Vec<f64> = p.iter().zip(t).map(|(p, t)| (p - t) / n).collect();
        for (o, &d) in dy.iter().enumerate() {
            for (i, &v) in pooled.iter().enumerate() {
                ghead.0[o * pooled.len() + i] += d * v;
            }
            ghead.1[o] += d;
        }
        let dpool: Vec<f64> = (0..pooled.len())
            .map(|i| dy.iter().zip(hw).map(|(d, row)| d * row[i]).sum())
            .collect();
        let mut dh = vec![0.0; h.len()];
        for (&k, &d) in from.iter().zip(&dpool) {
            dh[k] += d;
        }
        for (k, c) in convs.iter().enumerate().rev() {
            let hp = pad(&ins[k], c.cin);
            let dz: Vec<f64> = dh.iter().zip(&zs[k]).map(|(d, &z)| d * (c.df)(z)).collect();
            let mut dhp = vec![0.0; hp.len()];
            for f in 0..c.cout {
                for oy in 0..SIDE {
                    for ox in 0..SIDE {
                        let d = dz[(f * SIDE + oy) * SIDE + ox];
                        grads[k].1[f] += d;
                        for ch in 0..c.cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (wi, pi) = (
                                        ((f * c.cin + ch) * 3 + ky) * 3 + kx,
                                        (ch * PADDED + oy + ky) * PADDED + ox + kx,
                                    );
                                    grads[k].0[wi] += d * hp[pi];
                                    dhp[pi] += c.w[wi] * d;
                                }
                            }
                        }
                    }
                }
            }
            let mut din = vec![0.0; ins[k].len()];
            for ch in 0..c.cin {
                for i in 0..SIDE {
                    for j in 0..SIDE {
                        din[(ch * SIDE + i) * SIDE + j] =
                            dhp[(ch * PADDED + i + 1) * PADDED + j + 1];
                    }
                }
            }
            if c.residual {
                for (a, b) in din.iter_mut().zip(&dh) {
                    *a += b;
                }
            }
            dh = din;
        }
    }
    grads.push(ghead);
    (total, grads)
}

fn check_cnn(arch: &str, precision: &str, tol: f64) {
    let data = gradscope_lab::data::load(gradscope_lab::options::Task::Digits, 1, None).unwrap();
    let cfg = gradscope_lab::cnn::CnnConfig {
        archs: vec![<Arch as clap::ValueEnum>::from_str(arch, false).unwrap()],
        precisions: vec![precision.parse().unwrap()],
        depth: 3,
        activation: Act::Tanh,
        ..Default::default()
    };
    let d = read_back(
        &gradscope_lab::cnn::dump(&cfg, &data).unwrap(),
        &format!("cnn-{arch}-{precision}"),
    );
    assert_eq!(d["loss"], "softmax_cross_entropy");
    let layers = d["layers"].as_array().unwrap();
    let kinds: Vec<&str> = layers.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "conv2d",
            "conv2d",
            "conv2d",
            "maxpool2d",
            "flatten",
            "dense"
        ]
    );
    let convs: Vec<ConvRef> = layers[..3]
        .iter()
        .map(|l| {
            let (f, df) = act(l["activation"].as_str().unwrap());
            let w = &l["weight"];
            let cout = w.as_array().unwrap().len();
            let cin = w[0].as_array().unwrap().len();
            assert_eq!(
                (
                    w[0][0].as_array().unwrap().len(),
                    w[0][0][0].as_array().unwrap().len()
                ),
                (3, 3)
            );
            ConvRef {
                w: flat(w),
                b: vec1(&l["bias"]),
                cin,
                cout,
                f,
                df,
                residual: l["residual"] == "true",
            }
        })
        .collect();
    assert_eq!(
        convs.iter().filter(|c| c.residual).count(),
        if arch == "residual" { 2 } else { 0 }
    );
    let head = &layers[5];
    let (hw, hb) = (mat(&head["weight"]), vec1(&head["bias"]));
    let xs: Vec<Vec<f64>> = d["input"].as_array().unwrap().iter().map(flat).collect();
    assert_eq!(xs[0].len(), 64);
    let ts = mat(&d["target"]);
    let (loss, grads) = cnn_loss_and_grads(&convs, (&hw, &hb), &xs, &ts);
    let dumped = d["loss_value"].as_f64().unwrap();
    assert!(
        (loss - dumped).abs() <= tol * loss.abs(),
        "{arch} {precision} loss {loss} vs {dumped}"
    );
    let with_grads: Vec<&Value> = layers
        .iter()
        .filter(|l| l.get("grad_weight").is_some())
        .collect();
    for (k, (l, (gw, gb))) in with_grads.iter().zip(&grads).enumerate() {
        let got: Vec<f64> = flat(&l["grad_weight"])
            .into_iter()
            .chain(vec1(&l["grad_bias"]))
            .collect();
        let want: Vec<f64> = gw.iter().chain(gb).copied().collect();
        let (err, scale) = compare(&got, &want);
        let bound = if precision.starts_with('i') {
            tol
        } else {
            tol * scale
        };
        assert!(
            err <= bound,
            "{arch} {precision} layer {k}: max error {err:e}, largest gradient {scale:e}"
        );
    }
}

#[test]
fn cnn_dumps_recompute_in_f64() {
    for arch in ["plain", "relu", "residual"] {
        check_cnn(arch, "f64", 1e-12);
        check_cnn(arch, "f32", 1e-5);
        // 64 LSB of I16F16, the bound the dense dumps use.
        check_cnn(arch, "i16f16", 64.0 / 65536.0);
    }
}

#[test]
fn the_cnn_reference_matches_central_differences() {
    let data = gradscope_lab::data::load(gradscope_lab::options::Task::Digits, 1, None).unwrap();
    let cfg = gradscope_lab::cnn::CnnConfig {
        archs: vec![Arch::Residual],
        precisions: vec![Precision::F64],
        depth: 2,
        activation: Act::Tanh,
        ..Default::default()
    };
    let d = read_back(
        &gradscope_lab::cnn::dump(&cfg, &data).unwrap(),
        "cnn-reference",
    );
    let layers = d["layers"].as_array().unwrap();
    let (f, df) = act("tanh");
    let mut convs: Vec<ConvRef> = layers[..2]
        .iter()
        .map(|l| ConvRef {
            w: flat(&l["weight"]),
            b: vec1(&l["bias"]),
            cin: l["weight"][0].as_array().unwrap().len(),
            cout: l["weight"].as_array().unwrap().len(),
            f,
            df,
            residual: l["residual"] == "true",
        })
        .collect();
    let (hw, hb) = (mat(&layers[4]["weight"]), vec1(&layers[4]["bias"]));
    let xs: Vec<Vec<f64>> = d["input"].as_array().unwrap().iter().map(flat).collect();
    let ts = mat(&d["target"]);
    let (_, grads) = cnn_loss_and_grads(&convs, (&hw, &hb), &xs, &ts);
    for (k, i) in [(0, 0), (0, 17), (1, 5), (1, 140)] {
        let h = 1e-6;
        let w0 = convs[k].w[i];
        convs[k].w[i] = w0 + h;
        let up = cnn_loss_and_grads(&convs, (&hw, &hb), &xs, &ts).0;
        convs[k].w[i] = w0 - h;
        let down = cnn_loss_and_grads(&convs, (&hw, &hb), &xs, &ts).0;
        convs[k].w[i] = w0;
        let fd = (up - down) / (2.0 * h);
        assert!(
            (fd - grads[k].0[i]).abs() < 1e-8 + 1e-5 * fd.abs(),
            "conv {k} weight {i}: {fd} vs {}",
            grads[k].0[i]
        );
    }
}
