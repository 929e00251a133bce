//! Bring your own model: a PyTorch `nn.Sequential` of `nn.Linear` layers, read from safetensors, and one
//! batch of the user's data, measured in every number format: which layers' gradients survive, which
//! underflow or saturate, and what loss scale rescues them.
//!
//! The core's layers have their sizes in their types, so a model of arbitrary widths runs as a uniform
//! [`DenseStack`] of the next compiled width ([`WIDTHS`]) at or above its widest layer. The padding is exact
//! zeros (weights, biases, inputs and targets), and the loss reads only the model's real outputs
//! ([`Objective::outputs`]), so the real units compute what an unpadded network computes, bit for bit (the
//! `padding_changes_no_bit` test). Every statistic below is taken over the real units only.
//!
//! Counts compare each value with the same value of the f64 run:
//! - *underflowed*: exactly zero here, nonzero in f64;
//! - *saturated*: at or beyond the format's largest finite magnitude;
//! - *non-finite*: NaN or ±∞.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use gradscope_core::{Act, Activate, DenseStack, Layer, Loss, Objective, Scalar};
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use crate::data::Samples;
use crate::depth::{MAX_DEPTH, WIDTHS};
use crate::options::{Precision, Rounding};
use crate::output::{Cell, Frame, Outcome};
use crate::plot::Plot;
use crate::with_scalar;

/// Most samples one inspection reads.
pub const MAX_SAMPLES: usize = 65_536;

/// One `nn.Linear` layer and the activation that follows it, in f64 (every stored dtype converts exactly).
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// The tensors' common prefix, e.g. `0` for `0.weight` and `0.bias`.
    pub name: String,
    /// `weight[out][in]`, PyTorch's layout.
    pub weight: Vec<Vec<f64>>,
    /// Biases (zeros when the file has none).
    pub bias: Vec<f64>,
    /// False for `nn.Linear(bias=False)`: the bias stays zero and is not a parameter (no gradient).
    pub has_bias: bool,
    /// The activation applied to this layer's output.
    pub act: Act,
}

impl Linear {
    /// Inputs.
    pub fn inputs(&self) -> usize {
        self.weight.first().map_or(0, Vec::len)
    }

    /// Outputs.
    pub fn outputs(&self) -> usize {
        self.weight.len()
    }
}

/// A stack of linear layers, or a recurrent layer and an optional linear head.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The recurrent first layer, if any; it reads a sequence and its last state feeds `layers`.
    pub recurrent: Option<Recurrent>,
    /// The linear layers, input first (after a recurrent layer: at most one, the head).
    pub layers: Vec<Linear>,
}

/// A tensor's values as f64, row-major, with its shape.
struct Values {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn read_values(name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Values> {
    let bytes = view.data();
    let data: Vec<f64> = match view.dtype() {
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| gradscope_core::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| gradscope_core::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        other => bail!("tensor {name}: dtype {other:?} is not a float (F64, F32, F16 or BF16)"),
    };
    if let Some(k) = data.iter().position(|v| !v.is_finite()) {
        bail!(
            "tensor {name}: element {k} is {}, not a finite number",
            data[k]
        );
    }
    Ok(Values {
        shape: view.shape().to_vec(),
        data,
    })
}

fn shape_str(s: &[usize]) -> String {
    format!(
        "({})",
        s.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The layer index of a tensor prefix: its last dot-separated component, which `nn.Sequential` numbers.
fn layer_index(prefix: &str) -> Option<usize> {
    prefix.rsplit('.').next()?.parse().ok()
}

/// A recurrent cell as PyTorch names it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// `nn.RNN` (Elman; tanh or ReLU).
    Rnn,
    /// `nn.LSTM` (gates i, f, g, o).
    Lstm,
    /// `nn.GRU` (gates r, z, n).
    Gru,
}

impl CellKind {
    /// Gate blocks in the weights.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

/// A single-layer, unidirectional `nn.RNN`, `nn.LSTM` or `nn.GRU` in PyTorch's layout (gate blocks stacked
/// along the rows), in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Recurrent {
    /// The tensors' prefix (empty for a bare module's state dict).
    pub name: String,
    /// The cell.
    pub cell: CellKind,
    /// The cell's nonlinearity: tanh or ReLU for `nn.RNN`, tanh for the gated cells.
    pub act: Act,
    /// Inputs per step.
    pub inputs: usize,
    /// Hidden units.
    pub hidden: usize,
    /// `weight_ih_l0`: (gates · hidden) × inputs.
    pub weight_ih: Vec<Vec<f64>>,
    /// `weight_hh_l0`: (gates · hidden) × hidden.
    pub weight_hh: Vec<Vec<f64>>,
    /// `bias_ih_l0` (zeros when absent).
    pub bias_ih: Vec<f64>,
    /// `bias_hh_l0` (zeros when absent).
    pub bias_hh: Vec<f64>,
    /// False for `bias=False`.
    pub has_bias: bool,
}

/// What the analysis needs to know of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerInfo {
    /// The tensors' prefix.
    pub name: String,
    /// Inputs (per step for a recurrent layer).
    pub inputs: usize,
    /// Outputs (hidden units for a recurrent layer).
    pub outputs: usize,
    /// The activation, or the cell (`rnn:tanh`, `lstm`, `gru`).
    pub activation: String,
    /// Parameters as the core stores them.
    pub params: usize,
    /// Values the core keeps from forward for backward (per step for a recurrent layer: its inputs, states
    /// and gates), plus a recurrent layer's initial states.
    pub caches: usize,
}

const RECURRENT_TENSORS: [&str; 4] = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"];

fn matrix(name: &str, v: &Values, source: &str) -> Result<(usize, usize, Vec<Vec<f64>>)> {
    let [rows, cols] = v.shape[..] else {
        bail!(
            "{source}: tensor {name} has shape {}, expected a matrix",
            shape_str(&v.shape)
        );
    };
    if rows == 0 || cols == 0 {
        bail!(
            "{source}: tensor {name} has shape {}, an empty layer",
            shape_str(&v.shape)
        );
    }
    Ok((
        rows,
        cols,
        v.data.chunks(cols).map(<[f64]>::to_vec).collect(),
    ))
}

fn linear(
    prefix: &str,
    weight: Option<Values>,
    bias: Option<Values>,
    act: Act,
    source: &str,
) -> Result<Linear> {
    let w = weight.ok_or_else(|| anyhow!("{source}: layer {prefix} has a bias but no weight"))?;
    let (out, _, rows) = matrix(&format!("{prefix}.weight"), &w, source)?;
    let has_bias = bias.is_some();
    let bias = match bias {
        Some(b) if b.shape[..] != [out] => bail!(
            "{source}: tensor {prefix}.bias has shape {}, expected ({out}) to match {prefix}.weight {}",
            shape_str(&b.shape),
            shape_str(&w.shape)
        ),
        Some(b) => b.data,
        None => vec![0.0; out],
    };
    Ok(Linear {
        name: prefix.to_string(),
        weight: rows,
        bias,
        has_bias,
        act,
    })
}

fn recurrent(
    prefix: &str,
    mut tensors: BTreeMap<String, Values>,
    act: Act,
    source: &str,
) -> Result<Recurrent> {
    let full = |t: &str| {
        if prefix.is_empty() {
            t.to_string()
        } else {
            format!("{prefix}.{t}")
        }
    };
    let mut take = |t: &str| tensors.remove(t);
    let (Some(ih), Some(hh)) = (take("weight_ih_l0"), take("weight_hh_l0")) else {
        bail!(
            "{source}: a recurrent layer needs {} and {}",
            full("weight_ih_l0"),
            full("weight_hh_l0")
        );
    };
    let (b_ih, b_hh) = (take("bias_ih_l0"), take("bias_hh_l0"));
    let (gh, inputs, weight_ih) = matrix(&full("weight_ih_l0"), &ih, source)?;
    let (gh2, hidden, weight_hh) = matrix(&full("weight_hh_l0"), &hh, source)?;
    let cell = match gh / hidden {
        1 => CellKind::Rnn,
        3 => CellKind::Gru,
        4 => CellKind::Lstm,
        _ => bail!(
            "{source}: tensor {} has shape {} for hidden size {hidden}: not 1, 3 or 4 gate blocks (nn.RNN, \
             nn.GRU, nn.LSTM)",
            full("weight_ih_l0"),
            shape_str(&ih.shape)
        ),
    };
    if gh != cell.gates() * hidden || gh2 != gh {
        bail!(
            "{source}: tensors {} {} and {} {} do not make one cell",
            full("weight_ih_l0"),
            shape_str(&ih.shape),
            full("weight_hh_l0"),
            shape_str(&hh.shape)
        );
    }
    let has_bias = match (&b_ih, &b_hh) {
        (Some(_), Some(_)) => true,
        (None, None) => false,
        _ => bail!(
            "{source}: {} and {} come together (bias=True) or not at all",
            full("bias_ih_l0"),
            full("bias_hh_l0")
        ),
    };
    let bias = |b: Option<Values>, t: &str| -> Result<Vec<f64>> {
        match b {
            Some(b) if b.shape[..] != [gh] => bail!(
                "{source}: tensor {} has shape {}, expected ({gh})",
                full(t),
                shape_str(&b.shape)
            ),
            Some(b) => Ok(b.data),
            None => Ok(vec![0.0; gh]),
        }
    };
    let bias_ih = bias(b_ih, "bias_ih_l0")?;
    let bias_hh = bias(b_hh, "bias_hh_l0")?;
    let ok_act = match cell {
        CellKind::Rnn => matches!(act, Act::Tanh | Act::Relu),
        CellKind::Lstm | CellKind::Gru => act == Act::Tanh,
    };
    if !ok_act {
        bail!(
            "--activations: the {} layer {} takes {}, not {act}",
            match cell {
                CellKind::Rnn => "nn.RNN",
                CellKind::Lstm => "nn.LSTM",
                CellKind::Gru => "nn.GRU",
            },
            if prefix.is_empty() {
                "(unnamed)"
            } else {
                prefix
            },
            if cell == CellKind::Rnn {
                "tanh or relu (its nonlinearity)"
            } else {
                "tanh (its fixed nonlinearity)"
            }
        );
    }
    Ok(Recurrent {
        name: prefix.to_string(),
        cell,
        act,
        inputs,
        hidden,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        has_bias,
    })
}

impl Model {
    /// Read a model from safetensors bytes (`source` names the file in errors), one activation per layer:
    /// - an `nn.Sequential` of `nn.Linear` layers: tensors grouped by the prefix before `.weight` / `.bias`,
    ///   ordered by the number that ends it; shapes must chain;
    /// - or a single-layer, unidirectional `nn.RNN`, `nn.LSTM` or `nn.GRU` (`weight_ih_l0`, `weight_hh_l0`,
    ///   `bias_ih_l0`, `bias_hh_l0`), optionally followed by one `nn.Linear` head on its last state (any
    ///   prefix). The recurrent layer's activation is its nonlinearity (tanh or relu for `nn.RNN`, tanh for
    ///   the gated cells).
    pub fn from_safetensors(bytes: &[u8], source: &str, acts: &[Act]) -> Result<Model> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow!("{source}: not a safetensors file ({e})"))?;
        let mut rec: BTreeMap<String, Values> = BTreeMap::new();
        let mut rec_prefix: Option<String> = None;
        let mut groups: BTreeMap<String, (Option<Values>, Option<Values>)> = BTreeMap::new();
        // By name, so that which bad tensor an error names does not depend on a hash map's order.
        let mut tensors = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, view) in &tensors {
            let name = name.as_str();
            let (prefix, last) = name.rsplit_once('.').unwrap_or(("", name));
            if last.contains("_l") && (last.starts_with("weight_") || last.starts_with("bias_")) {
                if !RECURRENT_TENSORS.contains(&last) {
                    bail!(
                        "{source}: tensor {name}: only single-layer, unidirectional recurrent layers are \
                         supported (tensors {})",
                        RECURRENT_TENSORS.join(", ")
                    );
                }
                if rec_prefix.get_or_insert_with(|| prefix.to_string()) != prefix {
                    bail!("{source}: tensor {name}: only one recurrent layer is supported");
                }
                rec.insert(last.to_string(), read_values(name, view)?);
                continue;
            }
            if last != "weight" && last != "bias" {
                bail!(
                    "{source}: tensor {name} is not a layer's weight or bias (an nn.Sequential of \
                     nn.Linear layers stores N.weight and N.bias; a recurrent layer weight_ih_l0, \
                     weight_hh_l0, bias_ih_l0, bias_hh_l0)"
                );
            }
            let v = read_values(name, view)?;
            let entry = groups.entry(prefix.to_string()).or_default();
            if last == "weight" {
                entry.0 = Some(v);
            } else {
                entry.1 = Some(v);
            }
        }
        if rec.is_empty() && groups.is_empty() {
            bail!("{source}: no tensors");
        }
        let names: Vec<String> = rec_prefix
            .iter()
            .cloned()
            .chain(groups.keys().cloned())
            .collect();
        if names.len() != acts.len() {
            bail!(
                "{source} has {} layers ({}) but --activations names {}",
                names.len(),
                names.join(", "),
                acts.len()
            );
        }
        let model = if let Some(prefix) = rec_prefix {
            let r = recurrent(&prefix, rec, acts[0], source)?;
            if groups.len() > 1 {
                bail!(
                    "{source}: a recurrent layer may be followed by one linear head, not {} ({})",
                    groups.len(),
                    groups.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            let mut layers = Vec::new();
            for ((p, (w, b)), &act) in groups.into_iter().zip(&acts[1..]) {
                let l = linear(&p, w, b, act, source)?;
                if l.inputs() != r.hidden {
                    bail!(
                        "{source}: tensor {p}.weight has shape ({}, {}) but the recurrent layer has {} hidden units",
                        l.outputs(),
                        l.inputs(),
                        r.hidden
                    );
                }
                layers.push(l);
            }
            Model {
                recurrent: Some(r),
                layers,
            }
        } else {
            let mut ordered: BTreeMap<usize, (String, Option<Values>, Option<Values>)> =
                BTreeMap::new();
            for (prefix, (w, b)) in groups {
                let index = layer_index(&prefix).ok_or_else(|| {
                    anyhow!("{source}: tensor {prefix}.weight: '{prefix}' does not end in a layer number")
                })?;
                if let Some((other, ..)) = ordered.insert(index, (prefix.clone(), w, b)) {
                    bail!("{source}: layers {other} and {prefix} both claim number {index}");
                }
            }
            let mut layers: Vec<Linear> = Vec::with_capacity(ordered.len());
            for ((prefix, w, b), &act) in ordered.into_values().zip(acts) {
                let l = linear(&prefix, w, b, act, source)?;
                if let Some(prev) = layers.last()
                    && prev.outputs() != l.inputs()
                {
                    bail!(
                        "{source}: tensor {prefix}.weight has shape ({}, {}) but layer {} gives {} outputs",
                        l.outputs(),
                        l.inputs(),
                        prev.name,
                        prev.outputs()
                    );
                }
                layers.push(l);
            }
            Model {
                recurrent: None,
                layers,
            }
        };
        let widest = model.widest();
        let depth = model.infos().len();
        if widest > WIDTHS[WIDTHS.len() - 1] || depth > MAX_DEPTH {
            bail!(
                "{source}: {depth} layers, widest {widest}: gradscope compiles widths up to {} and depths up to {MAX_DEPTH}",
                WIDTHS[WIDTHS.len() - 1]
            );
        }
        Ok(model)
    }

    /// Read a model file (see [`Model::from_safetensors`]).
    pub fn load(path: &Path, acts: &[Act]) -> Result<Model> {
        let bytes = std::fs::read(path).with_context(|| format!("--model {}", path.display()))?;
        Model::from_safetensors(&bytes, &path.display().to_string(), acts)
    }

    /// Inputs of the first layer (per step for a recurrent model).
    pub fn inputs(&self) -> usize {
        match &self.recurrent {
            Some(r) => r.inputs,
            None => self.layers.first().map_or(0, Linear::inputs),
        }
    }

    /// Outputs of the last layer.
    pub fn outputs(&self) -> usize {
        match (&self.recurrent, self.layers.last()) {
            (_, Some(l)) => l.outputs(),
            (Some(r), None) => r.hidden,
            (None, None) => 0,
        }
    }

    /// The widest input or output.
    pub fn widest(&self) -> usize {
        self.infos()
            .iter()
            .map(|l| l.inputs.max(l.outputs))
            .max()
            .unwrap_or(0)
    }

    /// Every layer, input first, as the analysis sees it; `steps` is the sequence length (caches of a
    /// recurrent layer grow with it).
    pub fn infos_for(&self, steps: usize) -> Vec<LayerInfo> {
        let mut v = Vec::with_capacity(self.layers.len() + 1);
        if let Some(r) = &self.recurrent {
            let (g, h, i) = (r.cell.gates(), r.hidden, r.inputs);
            // The core's storage: one bias per gate row for RNN and LSTM (PyTorch's two summed), both for GRU.
            let biases = if r.cell == CellKind::Gru { 2 } else { 1 } * g * h;
            let per_step = match r.cell {
                CellKind::Rnn => i + 2 * h,
                CellKind::Lstm => i + 2 * h + 4 * h,
                CellKind::Gru => i + h + 4 * h,
            };
            let initial = if r.cell == CellKind::Lstm { 2 * h } else { h };
            v.push(LayerInfo {
                name: r.name.clone(),
                inputs: i,
                outputs: h,
                activation: match r.cell {
                    CellKind::Rnn => format!("rnn:{}", r.act),
                    CellKind::Lstm => "lstm".into(),
                    CellKind::Gru => "gru".into(),
                },
                params: g * h * (i + h) + biases,
                caches: steps * per_step + initial,
            });
        }
        v.extend(self.layers.iter().map(|l| LayerInfo {
            name: l.name.clone(),
            inputs: l.inputs(),
            outputs: l.outputs(),
            activation: l.act.to_string(),
            params: l.inputs() * l.outputs() + l.outputs(),
            caches: l.inputs() + 2 * l.outputs(),
        }));
        v
    }

    /// [`Model::infos_for`] one step.
    pub fn infos(&self) -> Vec<LayerInfo> {
        self.infos_for(1)
    }

    /// `in-h1-...-out`, a recurrent layer as its cell and hidden size (`3-lstm16-2`).
    pub fn shape(&self) -> String {
        let mut v = vec![self.inputs().to_string()];
        if let Some(r) = &self.recurrent {
            v.push(format!("{:?}{}", r.cell, r.hidden).to_lowercase());
        }
        v.extend(self.layers.iter().map(|l| l.outputs().to_string()));
        v.join("-")
    }

    /// The compiled width the model runs at: the smallest of [`WIDTHS`] that holds its widest layer.
    pub fn padded_width(&self) -> usize {
        let w = self.widest();
        WIDTHS
            .iter()
            .copied()
            .find(|&c| c >= w)
            .unwrap_or(WIDTHS[WIDTHS.len() - 1])
    }
}

/// Parse the data: per line the model's inputs, then the targets (one class index for `ce`, one value per
/// output otherwise). A first line without a single number is a header and skipped. Errors name the line
/// and column.
pub fn parse_data(
    text: &str,
    source: &str,
    inputs: usize,
    outputs: usize,
    loss: Loss,
) -> Result<Samples> {
    let classes = loss == Loss::SoftmaxCrossEntropy;
    let targets = if classes { 1 } else { outputs };
    let want = inputs + targets;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if n == 0 && cells.iter().all(|c| c.parse::<f64>().is_err()) {
            continue;
        }
        if cells.len() != want {
            bail!(
                "{source}, line {line_no}: {} columns, expected {want} ({inputs} inputs for the model's first \
                 layer, then {})",
                cells.len(),
                if classes {
                    "one class index for ce".to_string()
                } else {
                    format!("{outputs} targets for its last layer")
                }
            );
        }
        let mut v = Vec::with_capacity(want);
        for (c, cell) in cells.iter().enumerate() {
            let x: f64 = cell.parse().map_err(|_| {
                anyhow!(
                    "{source}, line {line_no}, column {}: '{cell}' is not a number",
                    c + 1
                )
            })?;
            if !x.is_finite() {
                bail!(
                    "{source}, line {line_no}, column {}: {cell} is not a finite number",
                    c + 1
                );
            }
            v.push(x);
        }
        let t = v.split_off(inputs);
        let t = if classes {
            let k = t[0];
            if k.fract() != 0.0 || k < 0.0 || k >= outputs as f64 {
                bail!(
                    "{source}, line {line_no}, column {want}: class {k} is not an index 0..{} of the model's \
                     {outputs} outputs",
                    outputs - 1
                );
            }
            let mut one_hot = vec![0.0; outputs];
            one_hot[k as usize] = 1.0;
            one_hot
        } else {
            t
        };
        out.push((v, t));
        if out.len() > MAX_SAMPLES {
            bail!("{source}: more than {MAX_SAMPLES} samples; use --batch to take the first N");
        }
    }
    if out.is_empty() {
        bail!("{source}: no samples");
    }
    Ok(out)
}

/// Read a data file for `model` (see [`parse_data`]). For a recurrent model a line holds T steps of its
/// inputs, step-major, then the targets; T is read from the first data line and must be one of [`STEPS`].
pub fn load_data(path: &Path, model: &Model, loss: Loss) -> Result<Samples> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--data {}", path.display()))?;
    let source = path.display().to_string();
    let inputs = match &model.recurrent {
        Some(r) => sequence_inputs(&text, &source, r.inputs, model.outputs(), loss)?,
        None => model.inputs(),
    };
    parse_data(&text, &source, inputs, model.outputs(), loss)
}

/// Inputs per line of a sequence file: its first data line's columns less the targets, which must be a
/// compiled number of steps ([`STEPS`]) times `per_step`.
fn sequence_inputs(
    text: &str,
    source: &str,
    per_step: usize,
    outputs: usize,
    loss: Loss,
) -> Result<usize> {
    let targets = if loss == Loss::SoftmaxCrossEntropy {
        1
    } else {
        outputs
    };
    let first = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .find(|l| l.split(',').any(|c| c.trim().parse::<f64>().is_ok()))
        .ok_or_else(|| anyhow!("{source}: no samples"))?;
    let cols = first.split(',').count();
    let inputs = cols.saturating_sub(targets);
    let steps = inputs / per_step.max(1);
    if inputs % per_step.max(1) != 0 || !STEPS.contains(&steps) {
        bail!(
            "{source}: {cols} columns, expected T × {per_step} inputs (T steps of the recurrent layer's \
             {per_step}, T one of {STEPS:?}) then {targets} target{}",
            if targets == 1 { "" } else { "s" }
        );
    }
    Ok(inputs)
}

/// Everything one format computed on the real units, as f64.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// The batch-mean loss.
    pub loss: f64,
    /// Per layer: the weights and biases as stored in the format, row-major then biases (if the layer has
    /// them).
    pub params: Vec<Vec<f64>>,
    /// Per layer: the outputs, sample-major.
    pub outputs: Vec<Vec<f64>>,
    /// Per layer: ∂L/∂weight row-major, then ∂L/∂bias if the layer has one (the batch mean, times the loss
    /// scale).
    pub grads: Vec<Vec<f64>>,
    /// Per layer: the signal it sends back (∂L/∂input), sample-major.
    pub backward: Vec<Vec<f64>>,
    /// The raw bits of every gradient, for bit-exact comparisons.
    pub grad_bits: Vec<Vec<u64>>,
}

/// How one format runs: [`Pass::new`] gives nearest rounding, seed 1, no loss scale, the model's own
/// padded width.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Pass {
    /// The loss.
    pub loss: Loss,
    /// The format.
    pub precision: Precision,
    /// Its rounding.
    pub rounding: Rounding,
    /// Seed of stochastic rounding.
    pub seed: u64,
    /// Static loss scale: gradients come out multiplied by it.
    pub loss_scale: f64,
    /// The compiled width to run at (`None`: [`Model::padded_width`]).
    pub width: Option<usize>,
}

impl Pass {
    /// `loss` in `precision`, with the defaults above.
    pub fn new(loss: Loss, precision: Precision) -> Pass {
        Pass {
            loss,
            precision,
            rounding: Rounding::Nearest,
            seed: 1,
            loss_scale: 1.0,
            width: None,
        }
    }
}

/// Run `model` on `samples` as `pass` says: one forward and backward pass per sample, gradients accumulated
/// over the batch as its mean, times the loss scale.
pub fn trace(model: &Model, samples: &[(Vec<f64>, Vec<f64>)], pass: &Pass) -> Result<Trace> {
    let w = pass.width.unwrap_or_else(|| model.padded_width());
    if w < model.widest() || !WIDTHS.contains(&w) {
        bail!(
            "width {w} cannot hold the model (widest layer {}); compiled widths: {WIDTHS:?}",
            model.widest()
        );
    }
    if let Some(r) = &model.recurrent {
        let steps = samples
            .first()
            .map_or(0, |(x, _)| x.len() / r.inputs.max(1));
        if !STEPS.contains(&steps) {
            bail!("{steps} time steps: the recurrent layers are compiled for {STEPS:?}");
        }
        if let Some((k, _)) = samples
            .iter()
            .enumerate()
            .find(|(_, (x, _))| x.len() != steps * r.inputs)
        {
            bail!("sample {k}: not {steps} steps of {} inputs", r.inputs);
        }
        return crate::par::on_worker(|| trace_recurrent(r, model, samples, pass, w, steps))?;
    }
    // The network lives in fixed-size arrays: build it on a worker's large stack.
    crate::par::on_worker(|| {
        with_scalar!(pass.precision, S => match w {
            8 => trace_typed::<S, 8>(model, samples, pass),
            16 => trace_typed::<S, 16>(model, samples, pass),
            32 => trace_typed::<S, 32>(model, samples, pass),
            _ => trace_typed::<S, 64>(model, samples, pass),
        })
    })
}

/// Whether the core runs `cell` in `precision` (the gated cells are float-only).
pub fn supports(cell: CellKind, precision: Precision) -> bool {
    cell == CellKind::Rnn
        || matches!(
            precision,
            Precision::F64 | Precision::F32 | Precision::F16 | Precision::Bf16
        )
}

/// Sequence lengths the recurrent layers are compiled for (the `rnn` experiment's).
pub use crate::rnn::STEPS;

fn trace_recurrent(
    r: &Recurrent,
    model: &Model,
    samples: &[(Vec<f64>, Vec<f64>)],
    pass: &Pass,
    w: usize,
    steps: usize,
) -> Result<Trace> {
    use gradscope_core::{Gru, I1F15, I8F24, I16F16, Lstm, Rnn, bf16, f16};
    macro_rules! sizes {
        ($cell:ident, $s:ty) => {
            match (w, steps) {
                (8, 10) => trace_cell::<$s, $cell<$s, 8, 8, 10>, 8, 10>(r, model, samples, pass),
                (8, 20) => trace_cell::<$s, $cell<$s, 8, 8, 20>, 8, 20>(r, model, samples, pass),
                (8, 50) => trace_cell::<$s, $cell<$s, 8, 8, 50>, 8, 50>(r, model, samples, pass),
                (8, 100) => trace_cell::<$s, $cell<$s, 8, 8, 100>, 8, 100>(r, model, samples, pass),
                (16, 10) => {
                    trace_cell::<$s, $cell<$s, 16, 16, 10>, 16, 10>(r, model, samples, pass)
                }
                (16, 20) => {
                    trace_cell::<$s, $cell<$s, 16, 16, 20>, 16, 20>(r, model, samples, pass)
                }
                (16, 50) => {
                    trace_cell::<$s, $cell<$s, 16, 16, 50>, 16, 50>(r, model, samples, pass)
                }
                (16, 100) => {
                    trace_cell::<$s, $cell<$s, 16, 16, 100>, 16, 100>(r, model, samples, pass)
                }
                (32, 10) => {
                    trace_cell::<$s, $cell<$s, 32, 32, 10>, 32, 10>(r, model, samples, pass)
                }
                (32, 20) => {
                    trace_cell::<$s, $cell<$s, 32, 32, 20>, 32, 20>(r, model, samples, pass)
                }
                (32, 50) => {
                    trace_cell::<$s, $cell<$s, 32, 32, 50>, 32, 50>(r, model, samples, pass)
                }
                (32, 100) => {
                    trace_cell::<$s, $cell<$s, 32, 32, 100>, 32, 100>(r, model, samples, pass)
                }
                (64, 10) => {
                    trace_cell::<$s, $cell<$s, 64, 64, 10>, 64, 10>(r, model, samples, pass)
                }
                (64, 20) => {
                    trace_cell::<$s, $cell<$s, 64, 64, 20>, 64, 20>(r, model, samples, pass)
                }
                (64, 50) => {
                    trace_cell::<$s, $cell<$s, 64, 64, 50>, 64, 50>(r, model, samples, pass)
                }
                (64, 100) => {
                    trace_cell::<$s, $cell<$s, 64, 64, 100>, 64, 100>(r, model, samples, pass)
                }
                (w, t) => bail!("width {w} with {t} steps is not compiled in"),
            }
        };
    }
    Ok(match (r.cell, pass.precision) {
        (CellKind::Rnn, Precision::F64) => sizes!(Rnn, f64),
        (CellKind::Rnn, Precision::F32) => sizes!(Rnn, f32),
        (CellKind::Rnn, Precision::F16) => sizes!(Rnn, f16),
        (CellKind::Rnn, Precision::Bf16) => sizes!(Rnn, bf16),
        (CellKind::Rnn, Precision::I16F16) => sizes!(Rnn, I16F16),
        (CellKind::Rnn, Precision::I8F24) => sizes!(Rnn, I8F24),
        (CellKind::Rnn, Precision::I1F15) => sizes!(Rnn, I1F15),
        (CellKind::Lstm, Precision::F64) => sizes!(Lstm, f64),
        (CellKind::Lstm, Precision::F32) => sizes!(Lstm, f32),
        (CellKind::Lstm, Precision::F16) => sizes!(Lstm, f16),
        (CellKind::Lstm, Precision::Bf16) => sizes!(Lstm, bf16),
        (CellKind::Gru, Precision::F64) => sizes!(Gru, f64),
        (CellKind::Gru, Precision::F32) => sizes!(Gru, f32),
        (CellKind::Gru, Precision::F16) => sizes!(Gru, f16),
        (CellKind::Gru, Precision::Bf16) => sizes!(Gru, bf16),
        (c, p) => bail!("the core runs {c:?} cells in f64, f32, f16 and bf16 only, not {p}"),
    })
}

/// A recurrent cell of width `W` over `T` steps, loaded from and read back in PyTorch's layout.
trait RecurrentCell<S: Scalar, const W: usize, const T: usize>:
    Layer<S, Input = [[S; W]; T], Output = [[S; W]; T]>
{
    /// The cell with `r`'s weights (padded with zeros), converted with `rnd`.
    fn load(r: &Recurrent, rnd: &mut impl gradscope_core::Rounding) -> Box<Self>;
    /// The real parameters as stored, and the real gradients in PyTorch's layout (`weight_ih`,
    /// `weight_hh`, then `bias_ih` and `bias_hh` if the model has them).
    fn export(&self, r: &Recurrent) -> (Vec<S>, Vec<S>);
}

fn load_gates<S: Scalar, const W: usize>(
    dst: &mut [[[S; W]; W]],
    src: &[Vec<f64>],
    h: usize,
    rnd: &mut impl gradscope_core::Rounding,
) {
    for (g, block) in dst.iter_mut().enumerate() {
        for (u, row) in block.iter_mut().enumerate().take(h) {
            if let Some(v) = src.get(g * h + u) {
                *row = padded(v, rnd);
            }
        }
    }
}

/// Gate biases: `a + b` per row (PyTorch's two biases as the core's one; one rounding), or `a` alone.
fn load_bias<S: Scalar, const W: usize>(
    dst: &mut [[S; W]],
    a: &[f64],
    b: Option<&[f64]>,
    h: usize,
    rnd: &mut impl gradscope_core::Rounding,
) {
    for (g, row) in dst.iter_mut().enumerate() {
        for (u, d) in row.iter_mut().enumerate().take(h) {
            let k = g * h + u;
            let v =
                a.get(k).copied().unwrap_or(0.0) + b.and_then(|b| b.get(k)).copied().unwrap_or(0.0);
            *d = S::from_f64(v, rnd).0;
        }
    }
}

fn gather_gates<S: Scalar, const W: usize>(src: &[[[S; W]; W]], h: usize, cols: usize) -> Vec<S> {
    src.iter()
        .flat_map(|block| {
            block[..h]
                .iter()
                .flat_map(move |row| row[..cols].iter().copied())
        })
        .collect()
}

fn gather_bias<S: Scalar, const W: usize>(src: &[[S; W]], h: usize) -> Vec<S> {
    src.iter()
        .flat_map(|row| row[..h].iter().copied())
        .collect()
}

/// A cell's real parameters as stored and its real gradients in PyTorch's layout, from its gate blocks:
/// `weights` and `grads` are (input, recurrent); `biases` as the core stores them; `grad_biases` are
/// PyTorch's (ih, hh), the core's one bias gradient twice where it keeps one bias.
fn export_cell<S: Scalar, const W: usize>(
    r: &Recurrent,
    weights: [&[[[S; W]; W]]; 2],
    grads: [&[[[S; W]; W]]; 2],
    biases: &[&[[S; W]]],
    grad_biases: [&[[S; W]]; 2],
) -> (Vec<S>, Vec<S>) {
    let (h, i) = (r.hidden, r.inputs);
    let mut p = gather_gates(weights[0], h, i);
    p.extend(gather_gates(weights[1], h, h));
    let mut g = gather_gates(grads[0], h, i);
    g.extend(gather_gates(grads[1], h, h));
    if r.has_bias {
        p.extend(biases.iter().flat_map(|b| gather_bias(b, h)));
        g.extend(grad_biases.iter().flat_map(|b| gather_bias(b, h)));
    }
    (p, g)
}

impl<S: Scalar, const W: usize, const T: usize> RecurrentCell<S, W, T>
    for gradscope_core::Rnn<S, W, W, T>
where
    Act: Activate<S>,
{
    fn load(r: &Recurrent, rnd: &mut impl gradscope_core::Rounding) -> Box<Self> {
        let mut c = Box::new(gradscope_core::Rnn::new(r.act));
        load_gates(
            std::slice::from_mut(&mut c.weight_ih),
            &r.weight_ih,
            r.hidden,
            rnd,
        );
        load_gates(
            std::slice::from_mut(&mut c.weight_hh),
            &r.weight_hh,
            r.hidden,
            rnd,
        );
        load_bias(
            std::slice::from_mut(&mut c.bias),
            &r.bias_ih,
            Some(&r.bias_hh),
            r.hidden,
            rnd,
        );
        c
    }
    fn export(&self, r: &Recurrent) -> (Vec<S>, Vec<S>) {
        use std::slice::from_ref as one;
        export_cell(
            r,
            [one(&self.weight_ih), one(&self.weight_hh)],
            [one(&self.grad_weight_ih), one(&self.grad_weight_hh)],
            &[one(&self.bias)],
            [one(&self.grad_bias), one(&self.grad_bias)],
        )
    }
}

impl<S: gradscope_core::Float, const W: usize, const T: usize> RecurrentCell<S, W, T>
    for gradscope_core::Lstm<S, W, W, T>
{
    fn load(r: &Recurrent, rnd: &mut impl gradscope_core::Rounding) -> Box<Self> {
        let mut c = Box::new(gradscope_core::Lstm::new());
        load_gates(&mut c.weight_ih, &r.weight_ih, r.hidden, rnd);
        load_gates(&mut c.weight_hh, &r.weight_hh, r.hidden, rnd);
        load_bias(&mut c.bias, &r.bias_ih, Some(&r.bias_hh), r.hidden, rnd);
        c
    }
    fn export(&self, r: &Recurrent) -> (Vec<S>, Vec<S>) {
        export_cell(
            r,
            [&self.weight_ih, &self.weight_hh],
            [&self.grad_weight_ih, &self.grad_weight_hh],
            &[&self.bias],
            [&self.grad_bias, &self.grad_bias],
        )
    }
}

impl<S: gradscope_core::Float, const W: usize, const T: usize> RecurrentCell<S, W, T>
    for gradscope_core::Gru<S, W, W, T>
{
    fn load(r: &Recurrent, rnd: &mut impl gradscope_core::Rounding) -> Box<Self> {
        let mut c = Box::new(gradscope_core::Gru::new());
        load_gates(&mut c.weight_ih, &r.weight_ih, r.hidden, rnd);
        load_gates(&mut c.weight_hh, &r.weight_hh, r.hidden, rnd);
        load_bias(&mut c.bias_ih, &r.bias_ih, None, r.hidden, rnd);
        load_bias(&mut c.bias_hh, &r.bias_hh, None, r.hidden, rnd);
        c
    }
    fn export(&self, r: &Recurrent) -> (Vec<S>, Vec<S>) {
        export_cell(
            r,
            [&self.weight_ih, &self.weight_hh],
            [&self.grad_weight_ih, &self.grad_weight_hh],
            &[&self.bias_ih, &self.bias_hh],
            [&self.grad_bias_ih, &self.grad_bias_hh],
        )
    }
}

/// The recurrent model's pass: the cell over every step, its last state into the head (if any), the loss,
/// and back.
fn trace_cell<S, C, const W: usize, const T: usize>(
    r: &Recurrent,
    model: &Model,
    samples: &[(Vec<f64>, Vec<f64>)],
    a: &Pass,
) -> Trace
where
    S: Scalar,
    C: RecurrentCell<S, W, T>,
    Act: Activate<S>,
{
    let mut rnd = a.rounding.build(a.seed);
    let mut cell = C::load(r, &mut rnd);
    let mut head = model.layers.first().map(|m| {
        let mut l: Box<gradscope_core::Dense<S, W, W>> =
            Box::new(gradscope_core::Dense::new(m.act));
        for (row, src) in l.weight.iter_mut().zip(&m.weight) {
            *row = padded(src, &mut rnd);
        }
        l.bias = padded(&m.bias, &mut rnd);
        l
    });
    let objective = Objective {
        outputs: Some(model.outputs()),
        ..Objective::new(a.loss)
    };
    let depth = 1 + model.layers.len().min(1);
    let n = samples.len();
    let factor = a.loss_scale / n.max(1) as f64;
    let mut t = Trace {
        outputs: vec![Vec::new(); depth],
        backward: vec![Vec::new(); depth],
        ..Trace::default()
    };
    let (i, h) = (r.inputs, r.hidden);
    let mut sum = 0.0;
    for (x, target) in samples {
        let mut seq = [[S::ZERO; W]; T];
        for (step, xs) in seq.iter_mut().zip(x.chunks(i.max(1))) {
            *step = padded(xs, &mut rnd);
        }
        let states = cell.forward(&seq, 0, &mut rnd, &mut ());
        t.outputs[0].extend(
            states
                .iter()
                .flat_map(|s| s[..h].iter().map(|v| v.to_f64())),
        );
        let last = states.last().copied().unwrap_or([S::ZERO; W]);
        let y = match (&mut head, model.layers.first()) {
            (Some(l), Some(m)) => {
                let y = l.forward(&last, 1, &mut rnd, &mut ());
                t.outputs[1].extend(y[..m.outputs()].iter().map(|v| v.to_f64()));
                y
            }
            _ => last,
        };
        let tp: [S; W] = padded(target, &mut rnd);
        let mut dy = [S::ZERO; W];
        sum += objective.grad(&y, &tp, factor, &mut dy, &mut rnd, &mut ());
        let dlast = match &mut head {
            Some(l) => {
                let d = l.backward(&dy, 1, &mut rnd, &mut ());
                t.backward[1].extend(d[..h].iter().map(|v| v.to_f64()));
                d
            }
            None => dy,
        };
        let mut dseq = [[S::ZERO; W]; T];
        if let Some(d) = dseq.last_mut() {
            *d = dlast;
        }
        let dx = cell.backward(&dseq, 0, &mut rnd, &mut ());
        t.backward[0].extend(dx.iter().flat_map(|s| s[..i].iter().map(|v| v.to_f64())));
    }
    t.loss = sum / n.max(1) as f64;
    let (p, g) = cell.export(r);
    t.params.push(p.iter().map(|v| v.to_f64()).collect());
    t.grads.push(g.iter().map(|v| v.to_f64()).collect());
    t.grad_bits.push(g.iter().map(|v| v.raw_bits()).collect());
    if let (Some(l), Some(m)) = (&head, model.layers.first()) {
        let (o, hi) = (m.outputs(), m.inputs());
        let nb = if m.has_bias { o } else { 0 };
        let p: Vec<S> = l.weight[..o]
            .iter()
            .flat_map(|row| row[..hi].iter().copied())
            .chain(l.bias[..nb].iter().copied())
            .collect();
        let g: Vec<S> = l.grad_weight[..o]
            .iter()
            .flat_map(|row| row[..hi].iter().copied())
            .chain(l.grad_bias[..nb].iter().copied())
            .collect();
        t.params.push(p.iter().map(|v| v.to_f64()).collect());
        t.grads.push(g.iter().map(|v| v.to_f64()).collect());
        t.grad_bits.push(g.iter().map(|v| v.raw_bits()).collect());
    }
    t
}

fn padded<S: Scalar, const W: usize>(v: &[f64], r: &mut impl gradscope_core::Rounding) -> [S; W] {
    let mut a = [S::ZERO; W];
    for (d, &x) in a.iter_mut().zip(v) {
        *d = S::from_f64(x, r).0;
    }
    a
}

fn trace_typed<S: Scalar, const W: usize>(
    model: &Model,
    samples: &[(Vec<f64>, Vec<f64>)],
    a: &Pass,
) -> Trace
where
    Act: Activate<S>,
{
    let mut r = a.rounding.build(a.seed);
    let depth = model.layers.len();
    let mut net: Box<DenseStack<S, W, MAX_DEPTH>> = Box::new(DenseStack::new(Act::Identity, depth));
    for (l, m) in net.active_mut().iter_mut().zip(&model.layers) {
        l.act = m.act;
        for (row, src) in l.weight.iter_mut().zip(&m.weight) {
            *row = padded(src, &mut r);
        }
        l.bias = padded(&m.bias, &mut r);
    }
    let objective = Objective {
        outputs: Some(model.outputs()),
        ..Objective::new(a.loss)
    };
    let n = samples.len();
    let factor = a.loss_scale / n.max(1) as f64;
    let mut t = Trace {
        outputs: vec![Vec::new(); depth],
        backward: vec![Vec::new(); depth],
        ..Trace::default()
    };
    let mut sum = 0.0;
    for (x, target) in samples {
        let mut h: [S; W] = padded(x, &mut r);
        for (k, (l, m)) in net.active_mut().iter_mut().zip(&model.layers).enumerate() {
            h = l.forward(&h, k, &mut r, &mut ());
            t.outputs[k].extend(h[..m.outputs()].iter().map(|v| v.to_f64()));
        }
        let tp: [S; W] = padded(target, &mut r);
        let mut dy = [S::ZERO; W];
        sum += objective.grad(&h, &tp, factor, &mut dy, &mut r, &mut ());
        for (k, (l, m)) in net
            .active_mut()
            .iter_mut()
            .zip(&model.layers)
            .enumerate()
            .rev()
        {
            dy = l.backward(&dy, k, &mut r, &mut ());
            t.backward[k].extend(dy[..m.inputs()].iter().map(|v| v.to_f64()));
        }
    }
    t.loss = sum / n.max(1) as f64;
    for (l, m) in net.active().iter().zip(&model.layers) {
        let (o, i) = (m.outputs(), m.inputs());
        let nb = if m.has_bias { o } else { 0 };
        let real = |w: &[[S; W]; W], b: &[S; W]| -> Vec<S> {
            w[..o]
                .iter()
                .flat_map(|row| row[..i].iter().copied())
                .chain(b[..nb].iter().copied())
                .collect()
        };
        t.params.push(
            real(&l.weight, &l.bias)
                .iter()
                .map(|v| v.to_f64())
                .collect(),
        );
        let g = real(&l.grad_weight, &l.grad_bias);
        t.grads.push(g.iter().map(|v| v.to_f64()).collect());
        t.grad_bits.push(g.iter().map(|v| v.raw_bits()).collect());
    }
    t
}

/// Underflowed, saturated and non-finite values among `n`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Values compared.
    pub values: usize,
    /// Exactly zero here, nonzero in f64.
    pub underflowed: usize,
    /// At or beyond the format's largest finite magnitude.
    pub saturated: usize,
    /// NaN or infinite.
    pub nonfinite: usize,
}

impl Counts {
    fn of(v: &[f64], reference: &[f64], max: f64) -> Counts {
        let mut c = Counts {
            values: v.len(),
            ..Counts::default()
        };
        for (&x, &x64) in v.iter().zip(reference) {
            if !x.is_finite() {
                c.nonfinite += 1;
            } else if x.abs() >= max {
                c.saturated += 1;
            } else if x == 0.0 && x64 != 0.0 {
                c.underflowed += 1;
            }
        }
        c
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn rms(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
    }
}

/// One layer in one format.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerReport {
    /// 1-based, input first.
    pub layer: usize,
    /// The tensors' prefix in the model file.
    pub name: String,
    /// Inputs.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
    /// The activation.
    pub activation: String,
    /// ‖∂L/∂(weights, biases)‖₂.
    pub grad_norm: f64,
    /// ‖g − g_f64‖₂ / ‖g_f64‖₂ (0 for f64 itself; ∞ when the f64 gradient is zero and this one is not).
    pub grad_rel_error: f64,
    /// RMS of the signal sent back (∂L/∂input), per element and sample.
    pub backward_rms: f64,
    /// Weights and biases as stored in the format.
    pub weights: Counts,
    /// Outputs over the batch.
    pub activations: Counts,
    /// Weight and bias gradients.
    pub gradients: Counts,
}

/// The static loss scale computed from the f64 run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// A power of two: among the scales that keep every gradient and backward signal of the f64 run below
    /// half the format's largest value, one that lifts the most layers' gradient RMS to one LSB or above;
    /// of those, one that leaves the fewest f64 gradients below half an LSB; of those, the nearest to 1.
    pub loss_scale: f64,
    /// Layers whose gradient RMS is at least one LSB without scaling.
    pub layers_above_lsb_unscaled: usize,
    /// ... and with the recommended scale.
    pub layers_above_lsb: usize,
    /// True when no single scale lifts every layer: per-layer scaling is needed.
    pub per_layer_scaling_needed: bool,
    /// Underflowed gradients of this format run at the recommended scale (measured).
    pub underflowed_gradients_scaled: usize,
}

/// Bytes of one training state as the core stores it at the model's own sizes (a dense layer always has a
/// bias; PyTorch's two recurrent biases are one for RNN and LSTM): values × `size_of::<S>()`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Bytes per value.
    pub bytes_per_value: usize,
    /// Weights and biases.
    pub weights: usize,
    /// Their gradients.
    pub gradients: usize,
    /// What backward needs from forward: each dense layer keeps its input, pre-activation and output; a
    /// recurrent layer its inputs, states and gates at every step, and its initial state(s).
    pub caches: usize,
    /// SGD with momentum: one velocity per parameter.
    pub momentum: usize,
    /// Adam: two moments per parameter.
    pub adam: usize,
}

impl Memory {
    fn of(infos: &[LayerInfo], bytes_per_value: usize) -> Memory {
        let params: usize = infos.iter().map(|l| l.params).sum();
        let caches: usize = infos.iter().map(|l| l.caches).sum();
        Memory {
            bytes_per_value,
            weights: params * bytes_per_value,
            gradients: params * bytes_per_value,
            caches: caches * bytes_per_value,
            momentum: params * bytes_per_value,
            adam: 2 * params * bytes_per_value,
        }
    }
}

/// One format's findings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrecisionReport {
    /// The format.
    pub precision: Precision,
    /// One LSB: fixed point's, or a float's smallest subnormal.
    pub lsb: f64,
    /// The largest finite magnitude.
    pub max: f64,
    /// The batch-mean loss.
    pub loss: f64,
    /// Per layer, input first.
    pub layers: Vec<LayerReport>,
    /// The first layer (1-based) with a non-finite weight, output or gradient.
    pub first_nonfinite: Option<usize>,
    /// Layers from the output (the last layer is 1) to the first whose backward signal's RMS is below one
    /// LSB, in this format's run.
    pub measured_horizon: Option<usize>,
    /// The same from the f64 run's signal against this format's LSB: where the exact signal falls below
    /// what the format can hold.
    pub predicted_horizon: Option<usize>,
    /// The loss scale.
    pub recommendation: Recommendation,
    /// A training state's size.
    pub memory: Memory,
}

/// A whole inspection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InspectResult {
    /// The model file.
    pub model: String,
    /// `in-h1-...-out`; a recurrent layer shows as its cell, e.g. `3-lstm16-2`.
    pub shape: String,
    /// The compiled width the model ran at.
    pub padded_width: usize,
    /// Time steps per sample (1 for a dense model).
    pub steps: usize,
    /// Formats asked for that the model's cell does not run in (the gated cells are float-only).
    pub skipped: Vec<Precision>,
    /// Samples in the batch.
    pub samples: usize,
    /// The loss.
    pub loss: Loss,
    /// The rounding of every format.
    pub rounding: Rounding,
    /// One report per format, in the order asked.
    pub precisions: Vec<PrecisionReport>,
}

/// What to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct InspectConfig {
    /// Formats, compared with f64 (which always runs).
    pub precisions: Vec<Precision>,
    /// Rounding of every format.
    pub rounding: Rounding,
    /// The loss.
    pub loss: Loss,
    /// Seed of stochastic rounding.
    pub seed: u64,
}

fn horizon(backward: &[Vec<f64>], lsb: f64) -> Option<usize> {
    let depth = backward.len();
    (1..=depth).find(|&k| rms(&backward[depth - k]) < lsb)
}

/// Power-of-two loss scales tried: 2⁻³² to 2⁶⁴.
const SCALE_EXPONENTS: std::ops::RangeInclusive<i32> = -32..=64;

fn recommend(reference: &Trace, lsb: f64, max: f64) -> (f64, usize, usize) {
    let peak = reference
        .grads
        .iter()
        .chain(&reference.backward)
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let rmss: Vec<f64> = reference.grads.iter().map(|g| rms(g)).collect();
    let above = |s: f64| rmss.iter().filter(|&&r| r * s >= lsb).count();
    // Nonzero f64 gradients that round to zero at scale s (below half an LSB).
    let lost = |s: f64| {
        reference
            .grads
            .iter()
            .flatten()
            .filter(|&&g| g != 0.0 && g.abs() * s < lsb / 2.0)
            .count()
    };
    // Most layers lifted, then fewest gradients lost, then nearest to 1. When even the smallest scale
    // overflows, 1: there is nothing to recommend.
    let mut best: Option<(i32, usize, usize)> = None;
    for e in SCALE_EXPONENTS {
        let s = 2f64.powi(e);
        if peak * s >= max / 2.0 {
            continue;
        }
        let (n, l) = (above(s), lost(s));
        if best.is_none_or(|(be, bn, bl)| {
            (n, std::cmp::Reverse(l), std::cmp::Reverse(e.abs()))
                > (bn, std::cmp::Reverse(bl), std::cmp::Reverse(be.abs()))
        }) {
            best = Some((e, n, l));
        }
    }
    let (e, n, _) = best.unwrap_or((0, above(1.0), 0));
    (2f64.powi(e), above(1.0), n)
}

/// Measure every format of `cfg` on `model` and `samples`.
pub fn run(
    model: &Model,
    model_name: &str,
    samples: &[(Vec<f64>, Vec<f64>)],
    cfg: &InspectConfig,
) -> Result<InspectResult> {
    if cfg.precisions.is_empty() {
        bail!("--precisions: name at least one format");
    }
    let go = |p: Precision, loss_scale: f64| {
        let pass = Pass {
            rounding: cfg.rounding,
            seed: cfg.seed,
            loss_scale,
            ..Pass::new(cfg.loss, p)
        };
        trace(model, samples, &pass)
    };
    let reference = go(Precision::F64, 1.0)?;
    let steps = match &model.recurrent {
        Some(r) => samples
            .first()
            .map_or(1, |(x, _)| x.len() / r.inputs.max(1)),
        None => 1,
    };
    let infos = model.infos_for(steps);
    let mut precisions = Vec::with_capacity(cfg.precisions.len());
    let mut skipped = Vec::new();
    for &p in &cfg.precisions {
        if let Some(r) = &model.recurrent
            && !supports(r.cell, p)
        {
            skipped.push(p);
            continue;
        }
        let t = if p == Precision::F64 {
            reference.clone()
        } else {
            go(p, 1.0)?
        };
        let (lsb, max, size) =
            with_scalar!(p, S => (S::SMALLEST, S::MAX.to_f64(), std::mem::size_of::<S>()));
        let layers: Vec<LayerReport> = infos
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let g = &t.grads[k];
                let g64 = &reference.grads[k];
                let diff: Vec<f64> = g.iter().zip(g64).map(|(a, b)| a - b).collect();
                let (dn, rn) = (norm(&diff), norm(g64));
                LayerReport {
                    layer: k + 1,
                    name: m.name.clone(),
                    inputs: m.inputs,
                    outputs: m.outputs,
                    activation: m.activation.clone(),
                    grad_norm: norm(g),
                    grad_rel_error: if dn == 0.0 {
                        0.0
                    } else if rn == 0.0 {
                        f64::INFINITY
                    } else {
                        dn / rn
                    },
                    backward_rms: rms(&t.backward[k]),
                    weights: Counts::of(&t.params[k], &reference.params[k], max),
                    activations: Counts::of(&t.outputs[k], &reference.outputs[k], max),
                    gradients: Counts::of(g, g64, max),
                }
            })
            .collect();
        let first_nonfinite = layers
            .iter()
            .find(|l| l.weights.nonfinite + l.activations.nonfinite + l.gradients.nonfinite > 0)
            .map(|l| l.layer);
        let (loss_scale, unscaled, scaled) = recommend(&reference, lsb, max);
        let underflowed_gradients_scaled = if loss_scale == 1.0 {
            layers.iter().map(|l| l.gradients.underflowed).sum()
        } else {
            let ts = go(p, loss_scale)?;
            ts.grads
                .iter()
                .zip(&reference.grads)
                .map(|(g, g64)| Counts::of(g, g64, max).underflowed)
                .sum()
        };
        precisions.push(PrecisionReport {
            precision: p,
            lsb,
            max,
            loss: t.loss,
            measured_horizon: horizon(&t.backward, lsb),
            predicted_horizon: horizon(&reference.backward, lsb),
            first_nonfinite,
            recommendation: Recommendation {
                loss_scale,
                layers_above_lsb_unscaled: unscaled,
                layers_above_lsb: scaled,
                per_layer_scaling_needed: scaled < infos.len(),
                underflowed_gradients_scaled,
            },
            memory: Memory::of(&infos, size),
            layers,
        });
    }
    if precisions.is_empty() {
        bail!(
            "--precisions: the core runs {} cells in f64, f32, f16 and bf16 only",
            infos.first().map_or("", |i| i.activation.as_str())
        );
    }
    Ok(InspectResult {
        model: model_name.to_string(),
        shape: model.shape(),
        padded_width: model.padded_width(),
        steps,
        skipped,
        samples: samples.len(),
        loss: cfg.loss,
        rounding: cfg.rounding,
        precisions,
    })
}

fn opt(h: Option<usize>) -> Cell {
    h.map_or(Cell::Text("none".into()), |v| Cell::Int(v as i64))
}

/// The per-layer table (one row per format and layer), the per-format summary and the gradient-norm plot.
pub fn outcome(r: &InspectResult) -> Result<Outcome> {
    let mut layers = Frame::new(
        "inspect_layers",
        "",
        &[
            "precision",
            "layer",
            "name",
            "shape",
            "activation",
            "grad_norm",
            "grad_rel_error",
            "backward_rms",
            "weights_underflowed",
            "weights_saturated",
            "activations_underflowed",
            "activations_saturated",
            "gradients_underflowed",
            "gradients_saturated",
            "nonfinite",
        ],
    );
    for p in &r.precisions {
        for l in &p.layers {
            layers.push(vec![
                Cell::Text(p.precision.to_string()),
                Cell::Int(l.layer as i64),
                Cell::Text(l.name.clone()),
                Cell::Text(format!("{}x{}", l.outputs, l.inputs)),
                Cell::Text(l.activation.clone()),
                Cell::Num(l.grad_norm),
                Cell::Num(l.grad_rel_error),
                Cell::Num(l.backward_rms),
                Cell::Int(l.weights.underflowed as i64),
                Cell::Int(l.weights.saturated as i64),
                Cell::Int(l.activations.underflowed as i64),
                Cell::Int(l.activations.saturated as i64),
                Cell::Int(l.gradients.underflowed as i64),
                Cell::Int(l.gradients.saturated as i64),
                Cell::Int(
                    (l.weights.nonfinite + l.activations.nonfinite + l.gradients.nonfinite) as i64,
                ),
            ]);
        }
    }
    let mut summary = Frame::new(
        "inspect_formats",
        "Per format: horizons, the recommended static loss scale, and a training state's bytes",
        &[
            "precision",
            "loss",
            "first_nonfinite_layer",
            "measured_horizon",
            "predicted_horizon",
            "loss_scale",
            "layers_above_lsb_unscaled",
            "layers_above_lsb_scaled",
            "per_layer_scaling_needed",
            "gradients_underflowed_scaled",
            "weights_bytes",
            "gradients_bytes",
            "caches_bytes",
            "momentum_bytes",
            "adam_bytes",
        ],
    );
    for p in &r.precisions {
        let rec = &p.recommendation;
        summary.push(vec![
            Cell::Text(p.precision.to_string()),
            Cell::Num(p.loss),
            opt(p.first_nonfinite),
            opt(p.measured_horizon),
            opt(p.predicted_horizon),
            Cell::Num(rec.loss_scale),
            Cell::Int(rec.layers_above_lsb_unscaled as i64),
            Cell::Int(rec.layers_above_lsb as i64),
            Cell::Text(rec.per_layer_scaling_needed.to_string()),
            Cell::Int(rec.underflowed_gradients_scaled as i64),
            Cell::Int(p.memory.weights as i64),
            Cell::Int(p.memory.gradients as i64),
            Cell::Int(p.memory.caches as i64),
            Cell::Int(p.memory.momentum as i64),
            Cell::Int(p.memory.adam as i64),
        ]);
    }
    let mut plot = Plot::new(
        "inspect_grad_norm",
        "Gradient norm per layer, by format",
        "layer",
        "‖∂L/∂(W, b)‖",
        true,
    );
    for p in &r.precisions {
        plot.line(
            p.precision.to_string(),
            p.layers
                .iter()
                .map(|l| (l.layer as f64, l.grad_norm))
                .collect(),
        );
    }
    let mut notes = Vec::new();
    if !r.skipped.is_empty() {
        notes.push(format!(
            "Not run: {} (the core's gated cells are float-only).",
            r.skipped
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for p in &r.precisions {
        let rec = &p.recommendation;
        let under: usize = p.layers.iter().map(|l| l.gradients.underflowed).sum();
        let total: usize = p.layers.iter().map(|l| l.gradients.values).sum();
        notes.push(format!(
            "{}: {under} of {total} gradients underflow; loss scale {} lifts {} of {} layers above one LSB \
             ({} without), leaving {} underflowed{}.",
            p.precision,
            rec.loss_scale,
            rec.layers_above_lsb,
            p.layers.len(),
            rec.layers_above_lsb_unscaled,
            rec.underflowed_gradients_scaled,
            if rec.per_layer_scaling_needed {
                "; no single scale lifts every layer: per-layer scaling is needed"
            } else {
                ""
            }
        ));
    }
    Ok(Outcome {
        name: "inspect".into(),
        heading: format!(
            "{} ({}, run at width {}{}), {} samples, loss {}, {} rounding",
            r.model,
            r.shape,
            r.padded_width,
            if r.steps > 1 {
                format!(" over {} steps", r.steps)
            } else {
                String::new()
            },
            r.samples,
            r.loss.name(),
            r.rounding
        ),
        json: serde_json::to_value(r)?,
        frames: vec![layers, summary],
        plots: vec![plot],
        notes,
    })
}

/// The outcome as one report-style section (for the HTML page of `inspect --out`).
pub fn section(r: &InspectResult, o: &Outcome) -> crate::report::Section {
    crate::report::Section {
        id: "inspect".into(),
        title: o.heading.clone(),
        explanation: format!(
            "The model ran once forward and backward over the batch in each format, its {} real units padded \
             to width {} with exact zeros. Counts compare every value with the f64 run: underflowed values are \
             exactly zero where f64's are not; saturated ones sit at the format's largest magnitude. The \
             measured horizon counts layers from the output to the first whose backward signal's RMS falls \
             below one LSB; the predicted one applies the same test to the f64 run's signal. The loss scale is \
             the power of two that lifts the most layers' gradient RMS to one LSB while every f64 gradient \
             and backward signal stays below half the format's largest value (then: fewest gradients below \
             half an LSB, then nearest to 1); its underflow count is measured by rerunning the format at it.",
            r.shape, r.padded_width
        ),
        findings: o.notes.clone(),
        frames: o.frames.clone(),
        plots: o.plots.clone(),
    }
}

/// How a format's storage bits are written in Rust: the integer type of the constants, how a constant
/// becomes a value, and the format's type.
struct RustFormat {
    raw: &'static str,
    decode: &'static str,
    scalar: &'static str,
}

fn rust_format(p: Precision) -> RustFormat {
    let (raw, decode, scalar) = match p {
        Precision::F64 => ("u64", "f64::from_bits", "f64"),
        Precision::F32 => ("u32", "f32::from_bits", "f32"),
        Precision::F16 => (
            "u16",
            "gradscope_core::f16::from_bits",
            "gradscope_core::f16",
        ),
        Precision::Bf16 => (
            "u16",
            "gradscope_core::bf16::from_bits",
            "gradscope_core::bf16",
        ),
        Precision::I16F16 => (
            "i32",
            "gradscope_core::I16F16::from_bits",
            "gradscope_core::I16F16",
        ),
        Precision::I8F24 => (
            "i32",
            "gradscope_core::I8F24::from_bits",
            "gradscope_core::I8F24",
        ),
        Precision::I1F15 => (
            "i16",
            "gradscope_core::I1F15::from_bits",
            "gradscope_core::I1F15",
        ),
    };
    RustFormat {
        raw,
        decode,
        scalar,
    }
}

/// `act` as a Rust expression: a variant, or a checked constructor with the parameter's exact bits (a
/// `?` for its `ActError`). Not `Act::from_name`: parsing a float from text would link core's decimal
/// parser, whose panic paths a `panic-never` firmware build rejects.
fn act_expr(act: Act) -> String {
    match act {
        Act::LeakyRelu(p) => format!(
            "gradscope_core::Act::leaky_relu(f32::from_bits({}))?",
            p.value().to_bits()
        ),
        Act::Elu(p) => format!(
            "gradscope_core::Act::elu(f32::from_bits({}))?",
            p.value().to_bits()
        ),
        Act::Softplus(p) => format!(
            "gradscope_core::Act::softplus(f32::from_bits({}))?",
            p.value().to_bits()
        ),
        other => format!("gradscope_core::Act::{other:?}"),
    }
}

/// Values in `precision` (nearest rounding) as Rust literals of its storage type, and how many saturated or
/// became non-finite on the way.
fn literals(precision: Precision, values: &[f64]) -> (Vec<String>, usize) {
    with_scalar!(precision, S => {
        let mut bad = 0;
        let lits = values
            .iter()
            .map(|&v| {
                let (s, f) = <S as Scalar>::from_f64(v, &mut gradscope_core::NearestEven);
                if f.intersects(gradscope_core::Flags::OVERFLOW | gradscope_core::Flags::NONFINITE) {
                    bad += 1;
                }
                let bits = s.raw_bits();
                match std::mem::size_of::<S>() {
                    // Fixed point is signed; the floats' bits are unsigned.
                    2 if !S::IS_FLOAT => (bits as u16 as i16).to_string(),
                    4 if !S::IS_FLOAT => (bits as u32 as i32).to_string(),
                    _ => bits.to_string(),
                }
            })
            .collect();
        (lits, bad)
    })
}

fn matrix_lit(rows: &[Vec<String>], indent: &str) -> String {
    let mut s = String::from("[\n");
    for r in rows {
        s += &format!("{indent}    [{}],\n", r.join(", "));
    }
    s + indent + "]"
}

/// Rust source holding `model` and `samples` in `precision` (nearest rounding), for the firmware: the
/// network as nested pairs of the core's exact-size `Dense` layers (no padding), `net()` to build it,
/// `sample(k)` to read the batch, and the loss. Every value is a constant of the format's storage bits.
/// `source` names the model in the header. Bias-free layers get a zero bias (the core's `Dense` always has
/// one, and training will move it).
pub fn emit_rust(
    model: &Model,
    samples: &[(Vec<f64>, Vec<f64>)],
    loss: Loss,
    precision: Precision,
    source: &str,
) -> Result<String> {
    if let Some(r) = &model.recurrent
        && !supports(r.cell, precision)
    {
        bail!(
            "--emit-rust --precision {precision}: the core runs {:?} cells in f64, f32, f16 and bf16 only",
            r.cell
        );
    }
    let f = rust_format(precision);
    let mut saturated = 0;
    let mut lits = |v: &[f64]| {
        let (l, bad) = literals(precision, v);
        saturated += bad;
        l
    };
    let mut body = String::new();
    for (k, l) in model.layers.iter().enumerate() {
        let rows: Vec<Vec<String>> = l.weight.iter().map(|r| lits(r)).collect();
        let bias = lits(&l.bias);
        body += &format!(
            "/// Layer {n} (`{name}`): weights (out × in).\nconst L{n}_WEIGHT: [[{raw}; {i}]; {o}] = {w};\n\
             /// Layer {n}: biases{nb}.\nconst L{n}_BIAS: [{raw}; {o}] = [{b}];\n",
            n = k + 1,
            name = l.name,
            raw = f.raw,
            i = l.inputs(),
            o = l.outputs(),
            w = matrix_lit(&rows, ""),
            nb = if l.has_bias {
                ""
            } else {
                " (the model has none: zeros)"
            },
            b = bias.join(", "),
        );
    }
    let steps = match &model.recurrent {
        Some(r) => samples
            .first()
            .map_or(0, |(x, _)| x.len() / r.inputs.max(1)),
        None => 1,
    };
    let (xs, ts): (Vec<String>, Vec<Vec<String>>) = samples
        .iter()
        .map(|(x, t)| {
            let x = match &model.recurrent {
                Some(r) => {
                    let steps: Vec<Vec<String>> =
                        x.chunks(r.inputs.max(1)).map(&mut lits).collect();
                    matrix_lit(&steps, "    ")
                }
                None => format!("[{}]", lits(x).join(", ")),
            };
            (x, lits(t))
        })
        .unzip();
    let dense = |l: &Linear| format!("gradscope_core::Dense<S, {}, {}>", l.inputs(), l.outputs());
    // (A, (B, C)): the core composes layers in pairs; a recurrent layer's last state feeds the head.
    let (mut net_type, mut net_value) = match model.layers.last() {
        Some(l) => (dense(l), format!("l{}", model.layers.len())),
        None => (String::new(), String::new()),
    };
    for (k, l) in model.layers.iter().enumerate().rev().skip(1) {
        net_type = format!("({}, {net_type})", dense(l));
        net_value = format!("(l{}, {net_value})", k + 1);
    }
    let mut builds: String = model
        .layers
        .iter()
        .enumerate()
        .map(|(k, l)| {
            format!(
                "    let l{n} = dense(&L{n}_WEIGHT, &L{n}_BIAS, {act});\n",
                n = k + 1,
                act = act_expr(l.act)
            )
        })
        .collect();
    let mut cell_fn = String::new();
    let input_type;
    let x_type;
    let x_decode;
    if let Some(r) = &model.recurrent {
        let (i, h) = (r.inputs, r.hidden);
        let g = r.cell.gates();
        let blocks = |m: &[Vec<f64>],
                      lits: &mut dyn FnMut(&[f64]) -> Vec<String>|
         -> Vec<Vec<Vec<String>>> {
            m.chunks(h)
                .map(|b| b.iter().map(|row| lits(row)).collect())
                .collect()
        };
        let wih = blocks(&r.weight_ih, &mut lits);
        let whh = blocks(&r.weight_hh, &mut lits);
        let sum: Vec<f64> = r
            .bias_ih
            .iter()
            .zip(&r.bias_hh)
            .map(|(a, b)| a + b)
            .collect();
        let nested = |bl: &[Vec<Vec<String>>]| {
            let inner: Vec<String> = bl.iter().map(|b| matrix_lit(b, "    ")).collect();
            format!("[\n    {},\n]", inner.join(",\n    "))
        };
        let rows_of =
            |v: &[String]| -> Vec<Vec<String>> { v.chunks(h).map(<[String]>::to_vec).collect() };
        let (ty, ctor, consts, assign) = match r.cell {
            CellKind::Rnn => (
                format!("gradscope_core::Rnn<S, {i}, {h}, {steps}>"),
                format!("gradscope_core::Rnn::new({})", act_expr(r.act)),
                format!(
                    "/// `{n}.weight_ih_l0` (hidden × in).\nconst RNN_WEIGHT_IH: [[{raw}; {i}]; {h}] = {wi};\n\
                     /// `{n}.weight_hh_l0` (hidden × hidden).\nconst RNN_WEIGHT_HH: [[{raw}; {h}]; {h}] = {wh};\n\
                     /// `bias_ih_l0 + bias_hh_l0`, rounded once.\nconst RNN_BIAS: [{raw}; {h}] = [{b}];\n",
                    n = r.name,
                    raw = f.raw,
                    wi = matrix_lit(&wih[0], ""),
                    wh = matrix_lit(&whh[0], ""),
                    b = lits(&sum).join(", ")
                ),
                format!(
                    "    c.weight_ih = RNN_WEIGHT_IH.map(|row| row.map({d}));\n    \
                     c.weight_hh = RNN_WEIGHT_HH.map(|row| row.map({d}));\n    c.bias = RNN_BIAS.map({d});\n",
                    d = f.decode
                ),
            ),
            CellKind::Lstm => (
                format!("gradscope_core::Lstm<S, {i}, {h}, {steps}>"),
                "gradscope_core::Lstm::new()".to_string(),
                format!(
                    "/// `{n}.weight_ih_l0` per gate (i, f, g, o): hidden × in.\nconst RNN_WEIGHT_IH: [[[{raw}; {i}]; {h}]; {g}] = {wi};\n\
                     /// `{n}.weight_hh_l0` per gate: hidden × hidden.\nconst RNN_WEIGHT_HH: [[[{raw}; {h}]; {h}]; {g}] = {wh};\n\
                     /// `bias_ih_l0 + bias_hh_l0` per gate, rounded once.\nconst RNN_BIAS: [[{raw}; {h}]; {g}] = {b};\n",
                    n = r.name,
                    raw = f.raw,
                    wi = nested(&wih),
                    wh = nested(&whh),
                    b = matrix_lit(&rows_of(&lits(&sum)), "")
                ),
                format!(
                    "    c.weight_ih = RNN_WEIGHT_IH.map(|gate| gate.map(|row| row.map({d})));\n    \
                     c.weight_hh = RNN_WEIGHT_HH.map(|gate| gate.map(|row| row.map({d})));\n    \
                     c.bias = RNN_BIAS.map(|gate| gate.map({d}));\n",
                    d = f.decode
                ),
            ),
            CellKind::Gru => (
                format!("gradscope_core::Gru<S, {i}, {h}, {steps}>"),
                "gradscope_core::Gru::new()".to_string(),
                format!(
                    "/// `{n}.weight_ih_l0` per gate (r, z, n): hidden × in.\nconst RNN_WEIGHT_IH: [[[{raw}; {i}]; {h}]; {g}] = {wi};\n\
                     /// `{n}.weight_hh_l0` per gate: hidden × hidden.\nconst RNN_WEIGHT_HH: [[[{raw}; {h}]; {h}]; {g}] = {wh};\n\
                     /// `bias_ih_l0` per gate.\nconst RNN_BIAS_IH: [[{raw}; {h}]; {g}] = {bi};\n\
                     /// `bias_hh_l0` per gate.\nconst RNN_BIAS_HH: [[{raw}; {h}]; {g}] = {bh};\n",
                    n = r.name,
                    raw = f.raw,
                    wi = nested(&wih),
                    wh = nested(&whh),
                    bi = matrix_lit(&rows_of(&lits(&r.bias_ih)), ""),
                    bh = matrix_lit(&rows_of(&lits(&r.bias_hh)), "")
                ),
                format!(
                    "    c.weight_ih = RNN_WEIGHT_IH.map(|gate| gate.map(|row| row.map({d})));\n    \
                     c.weight_hh = RNN_WEIGHT_HH.map(|gate| gate.map(|row| row.map({d})));\n    \
                     c.bias_ih = RNN_BIAS_IH.map(|gate| gate.map({d}));\n    \
                     c.bias_hh = RNN_BIAS_HH.map(|gate| gate.map({d}));\n",
                    d = f.decode
                ),
            ),
        };
        body = consts + &body;
        let seq = format!("({ty}, gradscope_core::LastStep<{h}, {steps}>)");
        net_type = if net_type.is_empty() {
            seq
        } else {
            format!("({seq}, {net_type})")
        };
        net_value = if net_value.is_empty() {
            "(rnn, gradscope_core::LastStep::new())".to_string()
        } else {
            format!("((rnn, gradscope_core::LastStep::new()), {net_value})")
        };
        builds = "    let rnn = cell()?;\n".to_string() + &builds;
        cell_fn = format!(
            "/// The recurrent layer with the model's weights.\n\
             fn cell() -> Result<{ty}, gradscope_core::ActError> {{\n    let mut c = {ctor};\n{assign}    Ok(c)\n}}\n\n"
        );
        input_type = "[[S; INPUTS]; STEPS]".to_string();
        x_type = format!("[[[{}; {i}]; {steps}]; {}]", f.raw, samples.len());
        x_decode = format!("X.get(k)?.map(|step| step.map({}))", f.decode);
    } else {
        input_type = "[S; INPUTS]".to_string();
        x_type = format!("[[{}; {}]; {}]", f.raw, model.inputs(), samples.len());
        x_decode = format!("X.get(k)?.map({})", f.decode);
    }
    let acts: Vec<String> = model.infos().iter().map(|l| l.activation.clone()).collect();
    let dense_fn = if model.layers.is_empty() {
        String::new()
    } else {
        format!(
            "fn dense<const I: usize, const O: usize>(\n    weight: &[[{raw}; I]; O],\n    bias: &[{raw}; O],\n    \
             act: gradscope_core::Act,\n) -> gradscope_core::Dense<S, I, O> {{\n    \
             let mut l = gradscope_core::Dense::new(act);\n    \
             l.weight = weight.map(|row| row.map({decode}));\n    l.bias = bias.map({decode});\n    l\n}}\n\n",
            raw = f.raw,
            decode = f.decode
        )
    };
    let x = format!("[\n    {},\n]", xs.join(",\n    "));
    Ok(format!(
        "// Generated by `gradscope inspect --emit-rust --precision {p}` from {source}: do not edit.\n\
         // Model {shape} ({acts}), loss {loss}, {n} samples, in {p} (nearest rounding){sat}.\n\
         // Use: `mod model {{ include!(\"this-file.rs\"); }}`, then `model::net()` and `model::sample(k)`.\n\n\
         /// The number format.\npub type S = {scalar};\n\
         /// The network at the model's own sizes, input first, in nested pairs.\npub type Net = {net_type};\n\
         /// The format's name.\npub const FORMAT: &str = \"{p}\";\n\
         /// Inputs per sample{per_step}.\npub const INPUTS: usize = {inputs};\n\
         /// Time steps per sample (1: not a sequence model).\npub const STEPS: usize = {steps};\n\
         /// Outputs per sample.\npub const OUTPUTS: usize = {outputs};\n\
         /// Samples in the batch.\npub const SAMPLES: usize = {n};\n\
         /// The loss the model was inspected with.\npub const LOSS: gradscope_core::Loss = gradscope_core::Loss::{loss_variant:?};\n\n\
         {body}\
         /// The batch's inputs.\nconst X: {x_type} = {x};\n\
         /// The batch's targets (one-hot for cross-entropy).\nconst T: [[{raw}; {outputs}]; {n}] = {t};\n\n\
         {dense_fn}{cell_fn}\
         /// The network with the model's weights (an error only if this core rejects an activation's parameter).\n\
         pub fn net() -> Result<Net, gradscope_core::ActError> {{\n{builds}    Ok({net_value})\n}}\n\n\
         /// Sample `k` of the batch as (input, target), `None` past the end.\n\
         pub fn sample(k: usize) -> Option<({input_type}, [S; OUTPUTS])> {{\n    \
         Some(({x_decode}, T.get(k)?.map({decode})))\n}}\n",
        p = precision,
        shape = model.shape(),
        acts = acts.join(", "),
        loss = loss.name(),
        loss_variant = loss,
        n = samples.len(),
        sat = if saturated > 0 {
            format!("; {saturated} values saturated or overflowed on conversion")
        } else {
            String::new()
        },
        per_step = if model.recurrent.is_some() {
            " per step"
        } else {
            ""
        },
        scalar = f.scalar,
        raw = f.raw,
        decode = f.decode,
        inputs = model.inputs(),
        outputs = model.outputs(),
        t = matrix_lit(&ts, ""),
    ))
}
