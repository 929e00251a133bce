//! The last step of a sequence, as a layer: a recurrent layer's states `[[S; H]; T]` in, the last state
//! `[S; H]` out, so a dense head and a loss on the final state compose by tuples.

use core::marker::PhantomData;

use super::{Layer, Probes};
use crate::net::{ParamTensor, Params};
use crate::round::Rounding;
use crate::scalar::Scalar;

/// Keeps the last of `T` states of width `H`; backward sends the gradient to that step only (zeros elsewhere).
/// It has no parameters and occupies no layer index (depth 0).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LastStep<const H: usize, const T: usize>(PhantomData<()>);

impl<const H: usize, const T: usize> LastStep<H, T> {
    /// The layer.
    pub fn new() -> Self {
        LastStep(PhantomData)
    }
}

impl<S: Scalar, const H: usize, const T: usize> Params<S> for LastStep<H, T> {
    fn depth(&self) -> usize {
        0
    }
    fn visit(&mut self, _at: usize, _f: &mut dyn FnMut(ParamTensor<'_, S>)) {}
}

impl<S: Scalar, const H: usize, const T: usize> Layer<S> for LastStep<H, T> {
    type Input = [[S; H]; T];
    type Output = [S; H];

    fn forward<R, P>(&mut self, x: &[[S; H]; T], _at: usize, _r: &mut R, _p: &mut P) -> [S; H]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        x.last().copied().unwrap_or([S::ZERO; H])
    }

    fn backward<R, P>(&mut self, dy: &[S; H], _at: usize, _r: &mut R, _p: &mut P) -> [[S; H]; T]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut d = [[S::ZERO; H]; T];
        if let Some(l) = d.last_mut() {
            *l = *dy;
        }
        d
    }

    fn zero_grad(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::NearestEven;

    #[test]
    fn keeps_the_last_state_and_sends_its_gradient_there() {
        let mut l = LastStep::<2, 3>::new();
        let x = [[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
        assert_eq!(l.forward(&x, 0, &mut NearestEven, &mut ()), [5.0, 6.0]);
        let d = l.backward(&[0.5, -1.0], 0, &mut NearestEven, &mut ());
        assert_eq!(d, [[0.0, 0.0], [0.0, 0.0], [0.5, -1.0]]);
        assert_eq!(Params::<f32>::depth(&l), 0);
        let empty: [f32; 2] = LastStep::<2, 0>::new().forward(&[], 0, &mut NearestEven, &mut ());
        assert_eq!(empty, [0.0f32; 2]);
    }
}
