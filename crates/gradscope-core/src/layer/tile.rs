//! Layers that run a tile of samples layer by layer: [`TileLayer`].

use super::{Layer, Probes, Stack};
use crate::net::Params;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// A [`Layer`] that also runs `T` samples at a time, for [`crate::train::step_tiled`].
///
/// A [`Layer`] caches one sample, so a batch through [`Layer`] alone is a sequence of forward/backward pairs.
/// A [`TileLayer`] keeps what its backward pass needs for `T` samples in a cache the caller owns
/// ([`TileLayer::Tile`]; the layer itself keeps one sample's size), so a tile goes forward through every layer
/// and back, and each layer accumulates its parameter gradients over the whole tile
/// ([`crate::matrix::outer_acc_tile`], [`crate::matrix::add_assign_tile`]).
///
/// **The same numbers.** For each sample a tile computes the same values with the same roundings as
/// [`Layer::forward`] and [`Layer::backward`], and the gradients accumulate in sample order, each sample's
/// term rounded on its own. With a rounding mode without random draws ([`Rounding::stateless`]) a tiled step
/// therefore gives bit for bit the parameters, gradients, caches and per-layer event counts of the per-sample
/// step; only the order in which a sink sees the events changes (layer by layer instead of sample by sample),
/// which an [`EventLog`](super::EventLog) shows.
pub trait TileLayer<S: Scalar>: Layer<S> {
    /// What the backward pass of a tile needs from its forward pass, for up to `T` samples.
    type Tile<const T: usize>;

    /// A cache for tiles of `T` samples, every value zero. It can be large (`T` times the layer's inputs and
    /// outputs): box it where the stack is small.
    fn tile<const T: usize>(&self) -> Self::Tile<T>;

    /// A zero input (the value a tile's buffers start from).
    fn zero_input() -> Self::Input;

    /// A zero output.
    fn zero_output() -> Self::Output;

    /// Forward the first `n` samples of `x` (`n` clamped to `T`) into `y`, caching them in `c`; events go to `p`
    /// under layer `at`. The layer's own one-sample cache holds the last sample afterwards, as after `n` calls of
    /// [`Layer::forward`].
    #[allow(clippy::too_many_arguments)]
    fn forward_tile<const T: usize, R, P>(
        &mut self,
        x: &[Self::Input; T],
        n: usize,
        c: &mut Self::Tile<T>,
        y: &mut [Self::Output; T],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probes + ?Sized;

    /// Given ∂L/∂output `dy` of the first `n` samples of the tile last forwarded through `c`, accumulate the
    /// parameter gradients (in sample order) and write ∂L/∂input to `dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward_tile<const T: usize, R, P>(
        &mut self,
        dy: &[Self::Output; T],
        n: usize,
        c: &Self::Tile<T>,
        dx: &mut [Self::Input; T],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probes + ?Sized;
}

/// Two layers in sequence; the tile keeps the intermediate signal.
impl<S, A, B> TileLayer<S> for (A, B)
where
    S: Scalar,
    A: TileLayer<S>,
    B: TileLayer<S, Input = A::Output>,
{
    type Tile<const T: usize> = (A::Tile<T>, B::Tile<T>, [A::Output; T]);

    fn tile<const T: usize>(&self) -> Self::Tile<T> {
        (self.0.tile(), self.1.tile(), [A::zero_output(); T])
    }

    fn zero_input() -> A::Input {
        A::zero_input()
    }

    fn zero_output() -> B::Output {
        B::zero_output()
    }

    fn forward_tile<const T: usize, R, P>(
        &mut self,
        x: &[A::Input; T],
        n: usize,
        c: &mut Self::Tile<T>,
        y: &mut [B::Output; T],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let (ca, cb, h) = c;
        self.0.forward_tile(x, n, ca, h, at, r, p);
        let next = at.saturating_add(self.0.depth());
        self.1.forward_tile(h, n, cb, y, next, r, p);
    }

    fn backward_tile<const T: usize, R, P>(
        &mut self,
        dy: &[B::Output; T],
        n: usize,
        c: &Self::Tile<T>,
        dx: &mut [A::Input; T],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let (ca, cb, h) = c;
        let mut dh = *h;
        let next = at.saturating_add(self.0.depth());
        self.1.backward_tile(dy, n, cb, &mut dh, next, r, p);
        self.0.backward_tile(&dh, n, ca, dx, at, r, p);
    }
}

/// The active layers of a stack in sequence.
impl<S, X, L, const D: usize> TileLayer<S> for Stack<L, D>
where
    S: Scalar,
    X: Copy,
    L: TileLayer<S, Input = X, Output = X>,
{
    type Tile<const T: usize> = [L::Tile<T>; D];

    fn tile<const T: usize>(&self) -> [L::Tile<T>; D] {
        self.layers.each_ref().map(|l| l.tile())
    }

    fn zero_input() -> X {
        L::zero_input()
    }

    fn zero_output() -> X {
        L::zero_output()
    }

    fn forward_tile<const T: usize, R, P>(
        &mut self,
        x: &[X; T],
        n: usize,
        c: &mut [L::Tile<T>; D],
        y: &mut [X; T],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        *y = *x;
        let mut idx = at;
        for (l, cl) in self.active_mut().iter_mut().zip(c.iter_mut()) {
            let h = *y;
            l.forward_tile(&h, n, cl, y, idx, r, p);
            idx = idx.saturating_add(l.depth());
        }
    }

    fn backward_tile<const T: usize, R, P>(
        &mut self,
        dy: &[X; T],
        n: usize,
        c: &[L::Tile<T>; D],
        dx: &mut [X; T],
        at: usize,
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut idx = at.saturating_add(Params::depth(self));
        *dx = *dy;
        for (l, cl) in self.active_mut().iter_mut().zip(c.iter()).rev() {
            idx = idx.saturating_sub(l.depth());
            let d = *dx;
            l.backward_tile(&d, n, cl, dx, idx, r, p);
        }
    }
}
