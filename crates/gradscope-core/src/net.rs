//! Network-wide access to parameters: the visitor every optimizer and clipper is written against, once.
//!
//! Every tensor carries the index of the layer it belongs to, the same index under which that layer reports
//! its forward and backward events, so clipping and update events name their layer too.

use crate::scalar::Scalar;

/// One parameter tensor, flattened row-major, with its gradient and its layer.
#[derive(Debug)]
pub struct ParamTensor<'a, S> {
    /// The parameter values.
    pub value: &'a mut [S],
    /// The gradient, same length as `value`.
    pub grad: &'a mut [S],
    /// Elements per unit (a row `w[out][..]` of a weight matrix: its fan-in; 1 for a bias), for unit-wise
    /// operations such as adaptive gradient clipping. 0 is treated as the whole tensor.
    pub unit: usize,
    /// Index of the layer the tensor belongs to (see [`Params::visit`]).
    pub layer: usize,
    /// A matrix whose rows are the units (`false`: a vector, e.g. a bias).
    pub matrix: bool,
    /// The tensor's name within its layer, PyTorch's where there is one (`weight`, `bias`, `weight_ih`, …);
    /// empty if not given.
    pub name: &'static str,
}

impl<'a, S: Scalar> ParamTensor<'a, S> {
    /// A weight matrix `w[out][in]` of layer `layer` and its gradient; a unit is one row.
    pub fn matrix<const I: usize, const O: usize>(
        layer: usize,
        value: &'a mut [[S; I]; O],
        grad: &'a mut [[S; I]; O],
    ) -> Self {
        ParamTensor {
            value: value.as_flattened_mut(),
            grad: grad.as_flattened_mut(),
            unit: I,
            layer,
            matrix: true,
            name: "",
        }
    }

    /// Stacked blocks of rows (a gated cell's per-gate weights `w[gate][out][in]`) of layer `layer` and their
    /// gradient; a unit is one row.
    pub fn blocks<const I: usize, const O: usize, const G: usize>(
        layer: usize,
        value: &'a mut [[[S; I]; O]; G],
        grad: &'a mut [[[S; I]; O]; G],
    ) -> Self {
        ParamTensor {
            value: value.as_flattened_mut().as_flattened_mut(),
            grad: grad.as_flattened_mut().as_flattened_mut(),
            unit: I,
            layer,
            matrix: true,
            name: "",
        }
    }

    /// A vector (a bias) of layer `layer` and its gradient; a unit is one element.
    pub fn vector(layer: usize, value: &'a mut [S], grad: &'a mut [S]) -> Self {
        ParamTensor {
            value,
            grad,
            unit: 1,
            layer,
            matrix: false,
            name: "",
        }
    }

    /// The tensor with its name.
    pub fn named(self, name: &'static str) -> Self {
        ParamTensor { name, ..self }
    }
}

/// Anything that can show its parameter tensors one at a time (a layer, a network, a list of tensors).
pub trait Params<S: Scalar> {
    /// Layer indices this occupies: 1 for a dense layer, the sum of its parts for a composition. A network
    /// whose first index is `at` uses `at..at + depth()`.
    fn depth(&self) -> usize;

    /// Call `f` on every parameter tensor, in a fixed order, each tagged with its layer's index; this value's
    /// first layer has index `at` (the index its `forward` and `backward` are given).
    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>));
}

/// A list of tensors: each keeps its own `layer`, offset by `at`.
impl<S: Scalar> Params<S> for [ParamTensor<'_, S>] {
    fn depth(&self) -> usize {
        self.iter()
            .map(|t| t.layer.saturating_add(1))
            .max()
            .unwrap_or(0)
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        for t in self.iter_mut() {
            f(ParamTensor {
                value: &mut *t.value,
                grad: &mut *t.grad,
                unit: t.unit,
                layer: at.saturating_add(t.layer),
                matrix: t.matrix,
                name: t.name,
            });
        }
    }
}

impl<S: Scalar, const N: usize> Params<S> for [ParamTensor<'_, S>; N] {
    fn depth(&self) -> usize {
        self.as_slice().depth()
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        self.as_mut_slice().visit(at, f)
    }
}

impl<S: Scalar, P: Params<S> + ?Sized> Params<S> for &mut P {
    fn depth(&self) -> usize {
        (**self).depth()
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        (**self).visit(at, f)
    }
}

/// The number of parameter values (the length of one optimizer state vector).
pub fn param_count<S: Scalar, P: Params<S> + ?Sized>(params: &mut P) -> usize {
    let mut n = 0usize;
    params.visit(0, &mut |t| n = n.saturating_add(t.value.len()));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_lists_keep_their_layers_offset_by_at() {
        let (mut w, mut gw, mut b, mut gb) = ([1.0f32; 4], [0.0f32; 4], [2.0f32; 2], [0.0f32; 2]);
        let mut list = [
            ParamTensor::vector(0, &mut w, &mut gw),
            ParamTensor::vector(3, &mut b, &mut gb),
        ];
        assert_eq!(list.depth(), 4);
        let mut seen = [(0usize, 0usize); 2];
        let mut k = 0;
        list.visit(10, &mut |t| {
            seen[k] = (t.layer, t.value.len());
            k += 1;
        });
        assert_eq!(seen, [(10, 4), (13, 2)]);
        assert_eq!(param_count(&mut list), 6);
        // A huge `at` saturates instead of overflowing.
        list.visit(usize::MAX, &mut |t| assert_eq!(t.layer, usize::MAX));
    }
}
