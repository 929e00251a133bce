//! Network-wide access to parameters: the visitor every optimizer and clipper is written against, once.

use crate::scalar::Scalar;

/// One parameter tensor, flattened row-major, with its gradient.
#[derive(Debug)]
pub struct ParamTensor<'a, S> {
    /// The parameter values.
    pub value: &'a mut [S],
    /// The gradient, same length as `value`.
    pub grad: &'a mut [S],
    /// Elements per unit (a row `w[out][..]` of a weight matrix: its fan-in; 1 for a bias), for unit-wise
    /// operations such as adaptive gradient clipping. 0 is treated as the whole tensor.
    pub unit: usize,
}

impl<'a, S: Scalar> ParamTensor<'a, S> {
    /// A weight matrix `w[out][in]` and its gradient; a unit is one row.
    pub fn matrix<const I: usize, const O: usize>(
        value: &'a mut [[S; I]; O],
        grad: &'a mut [[S; I]; O],
    ) -> Self {
        ParamTensor {
            value: value.as_flattened_mut(),
            grad: grad.as_flattened_mut(),
            unit: I,
        }
    }

    /// A vector (a bias) and its gradient; a unit is one element.
    pub fn vector(value: &'a mut [S], grad: &'a mut [S]) -> Self {
        ParamTensor {
            value,
            grad,
            unit: 1,
        }
    }
}

/// Anything that can show its parameter tensors one at a time (a layer, a network, a list of tensors).
pub trait Params<S: Scalar> {
    /// Call `f` on every parameter tensor, in a fixed order.
    fn visit(&mut self, f: &mut dyn FnMut(ParamTensor<'_, S>));
}

impl<S: Scalar> Params<S> for [ParamTensor<'_, S>] {
    fn visit(&mut self, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        for t in self.iter_mut() {
            f(ParamTensor {
                value: &mut *t.value,
                grad: &mut *t.grad,
                unit: t.unit,
            });
        }
    }
}

impl<S: Scalar, const N: usize> Params<S> for [ParamTensor<'_, S>; N] {
    fn visit(&mut self, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        self.as_mut_slice().visit(f)
    }
}
