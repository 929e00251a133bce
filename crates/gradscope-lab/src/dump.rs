//! The `gradscope-dump/1` schema: a network, its data and every gradient as plain numbers (fixed-point values
//! decoded to reals), kept as typed tensors and rendered to JSON only when written.
//!
//! ```text
//! {"format": "gradscope-dump/1", "precision": "i16f16", "loss": "mse", "loss_value": 0.0123,
//!  "input": [[...], ...], "target": [[...], ...], "layers": [...]}
//! ```
//!
//! A tensor of shape `[rows, cols]` is written as a list of rows, a vector as a flat list, and a tensor of
//! higher rank as lists nested the same way (a convolution's weight `[out, in, kh, kw]`, PyTorch's order; an
//! image input `[channels, height, width]`).

use gradscope_core::{Params, Scalar};
use serde_json::{Map, Value, json};

/// A named tensor of reals, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The key it is written under.
    pub name: String,
    /// Its shape: `[n]` for a vector, `[rows, cols]` for a matrix, `[steps, inputs]` for a sequence.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f64>,
}

impl Tensor {
    /// A vector.
    pub fn vector<S: Scalar>(name: &str, v: &[S]) -> Tensor {
        Tensor {
            name: name.into(),
            shape: vec![v.len()],
            values: v.iter().map(|x| x.to_f64()).collect(),
        }
    }

    /// A matrix (or a sequence), one row per array.
    pub fn matrix<S: Scalar, const N: usize>(name: &str, m: &[[S; N]]) -> Tensor {
        Tensor {
            name: name.into(),
            shape: vec![m.len(), N],
            values: m.iter().flatten().map(|x| x.to_f64()).collect(),
        }
    }

    /// Values of any shape (e.g. a convolution's `[out, in, kh, kw]`); `values.len()` must be the shape's
    /// product.
    pub fn shaped(name: &str, shape: Vec<usize>, values: Vec<f64>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            values,
        }
    }

    fn json(&self) -> Value {
        nest(&self.shape, &self.values)
    }
}

/// `values` as nested lists by `shape` (row-major); a vector (or an empty shape) as a flat list.
fn nest(shape: &[usize], values: &[f64]) -> Value {
    match shape {
        [_, inner @ ..] if !inner.is_empty() => {
            let size: usize = inner.iter().product();
            if size == 0 {
                return json!(values);
            }
            values.chunks(size).map(|c| nest(inner, c)).collect()
        }
        _ => json!(values),
    }
}

/// One layer of a dump.
#[derive(Clone, Debug, PartialEq)]
pub struct DumpLayer {
    /// `dense`, `rnn`, `lstm`, `gru`.
    pub kind: &'static str,
    /// Further string attributes (`activation`, `gates`).
    pub attributes: Vec<(&'static str, String)>,
    /// Parameters and gradients.
    pub tensors: Vec<Tensor>,
}

impl DumpLayer {
    /// A layer of kind `kind` whose tensors are its parameters and then their gradients (`grad_<name>`), by
    /// the parameter visitor's names and shapes (a matrix's rows are its units).
    pub fn from_params<S: Scalar>(
        kind: &'static str,
        attributes: Vec<(&'static str, String)>,
        params: &mut (impl Params<S> + ?Sized),
    ) -> DumpLayer {
        let (mut values, mut grads) = (Vec::new(), Vec::new());
        params.visit(0, &mut |t| {
            let shape = if t.matrix && t.unit > 0 {
                vec![t.value.len() / t.unit, t.unit]
            } else {
                vec![t.value.len()]
            };
            let real = |v: &[S]| v.iter().map(|x| x.to_f64()).collect();
            values.push(Tensor {
                name: t.name.to_string(),
                shape: shape.clone(),
                values: real(t.value),
            });
            grads.push(Tensor {
                name: format!("grad_{}", t.name),
                shape,
                values: real(t.grad),
            });
        });
        values.extend(grads);
        DumpLayer {
            kind,
            attributes,
            tensors: values,
        }
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The values of every gradient tensor (`grad_*`), in order, concatenated.
    pub fn gradients(&self) -> Vec<f64> {
        self.tensors
            .iter()
            .filter(|t| t.name.starts_with("grad_"))
            .flat_map(|t| t.values.iter().copied())
            .collect()
    }
}

/// A whole dump.
#[derive(Clone, Debug, PartialEq)]
pub struct Dump {
    /// The precision's name.
    pub precision: String,
    /// The rounding's name.
    pub rounding: String,
    /// The loss's name.
    pub loss: String,
    /// Mean loss over the batch.
    pub loss_value: f64,
    /// Static loss scale (gradients are the scaled ones), when the experiment has one.
    pub loss_scale: Option<f64>,
    /// One tensor per sample.
    pub input: Vec<Tensor>,
    /// One tensor per sample.
    pub target: Vec<Tensor>,
    /// The layers, from the input.
    pub layers: Vec<DumpLayer>,
}

impl Dump {
    /// The JSON document.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("format".into(), "gradscope-dump/1".into());
        m.insert("precision".into(), self.precision.clone().into());
        m.insert("rounding".into(), self.rounding.clone().into());
        m.insert("loss".into(), self.loss.clone().into());
        m.insert("loss_value".into(), json!(self.loss_value));
        if let Some(s) = self.loss_scale {
            m.insert("loss_scale".into(), json!(s));
        }
        m.insert(
            "input".into(),
            self.input.iter().map(Tensor::json).collect(),
        );
        m.insert(
            "target".into(),
            self.target.iter().map(Tensor::json).collect(),
        );
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let mut o = Map::new();
                o.insert("kind".into(), l.kind.into());
                for (k, v) in &l.attributes {
                    o.insert((*k).into(), v.clone().into());
                }
                for t in &l.tensors {
                    o.insert(t.name.clone(), t.json());
                }
                Value::Object(o)
            })
            .collect();
        m.insert("layers".into(), layers);
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_are_rows_and_vectors_flat() {
        let m = Tensor::matrix("w", &[[1.0f64, 2.0], [3.0, 4.0]]);
        assert_eq!(m.json(), json!([[1.0, 2.0], [3.0, 4.0]]));
        assert_eq!(Tensor::vector("b", &[5.0f64]).json(), json!([5.0]));
        let mut d = gradscope_core::Dense::<f64, 2, 3>::new(gradscope_core::Act::Tanh);
        d.grad_bias[2] = 0.5;
        let l = DumpLayer::from_params("dense", vec![], &mut d);
        let names: Vec<&str> = l.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["weight", "bias", "grad_weight", "grad_bias"]);
        assert_eq!(
            l.tensor("weight").map(|t| t.shape.clone()),
            Some(vec![3, 2])
        );
        assert_eq!(l.gradients()[6..], [0.0, 0.0, 0.5]);
        let t = Tensor::shaped("w", vec![2, 1, 2, 2], (0..8).map(f64::from).collect());
        assert_eq!(
            t.json(),
            json!([[[[0.0, 1.0], [2.0, 3.0]]], [[[4.0, 5.0], [6.0, 7.0]]]])
        );
    }
}
