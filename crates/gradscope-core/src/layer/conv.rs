//! Convolution, pooling and flattening on CHW tensors (PyTorch's layout, one sample, no batch axis).
//!
//! A 2-D signal of `C` channels is `[[[S; W]; H]; C]` (`x[channel][row][column]`), a 1-D one `[[S; L]; C]`;
//! a convolution's weight is PyTorch's `(out, in, kh, kw)`: `[[[[S; K]; K]; C]; F]` (1-D: `[[[S; K]; C]; F]`).
//!
//! Sizes are type parameters. Stable Rust cannot compute an output size in a type, so the output size is its
//! own parameter and the constructor checks it at compile time: `OH = ⌊(H + 2·PAD − K) / STRIDE⌋ + 1`
//! (`PAD = 0` is PyTorch's `valid`; `PAD = K / 2` with odd `K` and stride 1 is `same`), and a wrong size does
//! not compile. The kernels take the sizes as values, so one copy of each serves every shape of a scalar type.
//!
//! Every output is one exact wide sum rounded once, as in [`crate::matrix`]; padding contributes nothing (its
//! products are exact zeros, skipped). Float sums run sequentially in the loop order written on each kernel.
//! As in [`crate::matrix`], the kernels run fast lanes without per-product checks whenever a bound on the
//! operands proves that no product or sum can have an event (or, for floats, nobody observes the events),
//! and an exact path otherwise; both give the same values bit for bit.

use core::marker::PhantomData;

use rand_core::Rng;

use super::{At, Layer, Phase, Probes, activate, activate_back};
use crate::activation::{Act, Activate};
use crate::init::{Init, InitError, init_slice};
use crate::matrix::{begin, bound_if_needed, fast, put, put_fast, watch};
use crate::net::{ParamTensor, Params};
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::{Coef, Scalar};

/// A fixed-size array of scalars of any rank (a vector, a CHW image, a channel-major sequence), seen flat in
/// row-major order: what shape-agnostic layers ([`Flatten`], [`super::Residual`]) work on.
pub trait Tensor: Copy {
    /// The scalar type.
    type Elem: Scalar;
    /// Number of scalars.
    const LEN: usize;
    /// All zeros.
    fn zeros() -> Self;
    /// The scalars in row-major order.
    fn flat(&self) -> &[Self::Elem];
    /// The scalars in row-major order, mutable.
    fn flat_mut(&mut self) -> &mut [Self::Elem];
}

impl<S: Scalar, const N: usize> Tensor for [S; N] {
    type Elem = S;
    const LEN: usize = N;
    fn zeros() -> Self {
        [S::ZERO; N]
    }
    fn flat(&self) -> &[S] {
        self
    }
    fn flat_mut(&mut self) -> &mut [S] {
        self
    }
}

impl<S: Scalar, const N: usize, const M: usize> Tensor for [[S; N]; M] {
    type Elem = S;
    const LEN: usize = N * M;
    fn zeros() -> Self {
        [[S::ZERO; N]; M]
    }
    fn flat(&self) -> &[S] {
        self.as_flattened()
    }
    fn flat_mut(&mut self) -> &mut [S] {
        self.as_flattened_mut()
    }
}

impl<S: Scalar, const N: usize, const M: usize, const L: usize> Tensor for [[[S; N]; M]; L] {
    type Elem = S;
    const LEN: usize = N * M * L;
    fn zeros() -> Self {
        [[[S::ZERO; N]; M]; L]
    }
    fn flat(&self) -> &[S] {
        self.as_flattened().as_flattened()
    }
    fn flat_mut(&mut self) -> &mut [S] {
        self.as_flattened_mut().as_flattened_mut()
    }
}

/// The geometry of a sliding-window operation, as values: `c` input channels of `h × w`, `f` output channels
/// of `oh × ow`, a `kh × kw` window moved by `stride` over the input padded by `pad_h`, `pad_w` zeros.
#[derive(Copy, Clone, Debug)]
struct Geom {
    c: usize,
    h: usize,
    w: usize,
    f: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad_h: usize,
    pad_w: usize,
}

/// The input index that output position `o` reads at window offset `k`, or `None` in the padding.
#[inline(always)]
fn src(o: usize, k: usize, stride: usize, pad: usize, n: usize) -> Option<usize> {
    (o * stride + k).checked_sub(pad).filter(|&i| i < n)
}

/// The output position that reads input index `i` at window offset `k`, if one does.
#[inline(always)]
fn dst(i: usize, k: usize, stride: usize, pad: usize, n_out: usize) -> Option<usize> {
    let t = (i + pad).checked_sub(k)?;
    let o = t.checked_div(stride)?;
    (t.checked_rem(stride) == Some(0) && o < n_out).then_some(o)
}

/// Output positions per block of the fast lanes: one accumulator each, on the stack (a block covers a row of
/// up to 16 positions; wider rows take several).
const ROW: usize = 16;

/// The `K` values of `v` from `at`, if they are all there. A window row that lies inside its input row (an
/// interior position) gets them and runs its `K` products unrolled, without checks; a border position (`at`
/// wrapped below zero, or too close to the end) gets `None` and checks each offset.
#[inline(always)]
fn window<S: Copy, const K: usize>(v: &[S], at: usize) -> Option<&[S; K]> {
    v.get(at..)?.first_chunk::<K>()
}

/// Every output `k` of a kernel from its exact sum `exact(k)`, in order, with every product's events: the
/// path for operands that may have events. Out of line, one copy per scalar type.
#[cold]
#[inline(never)]
fn exact_outputs<S: Scalar, R, P>(
    out: &mut [S],
    r: &mut R,
    p: &mut P,
    exact: impl Fn(usize) -> S::Acc,
) where
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    for (k, o) in out.iter_mut().enumerate() {
        *o = put(exact(k), r, p);
    }
}

impl Geom {
    /// `z[f][oy][ox] = Σ_{c, ky, kx} w[f][c][ky][kx] · x[c][iy][ix] + b[f]`: the sum in that loop order
    /// (floats), then the bias, rounded once. `K` is the window's width (`kw`).
    ///
    /// The fast lanes keep one accumulator per output position of a block of a row ([`ROW`]); for each
    /// window row `(c, ky)`, every interior position adds its `K` products (unrolled, no checks) and the border
    /// positions check each offset. Every output receives its terms in the order above, so the values are the
    /// exact path's bit for bit.
    fn forward<S: Scalar, R, P, const K: usize>(
        &self,
        x: &[S],
        w: &[S],
        b: &[S],
        z: &mut [S],
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probe + ?Sized,
    {
        let g = *self;
        if !fast::<S, P>(w, bound_if_needed::<S, P>(x, 0), g.c * g.kh * K) {
            return exact_outputs(z, r, p, |k| g.z_exact(x, w, b, k));
        }
        let mut out = z.iter_mut().enumerate();
        begin::<S, P>(r);
        for f in 0..g.f {
            let bias = b.get(f).copied().unwrap_or(S::ZERO);
            for oy in 0..g.oh {
                for ox0 in (0..g.ow).step_by(ROW) {
                    let n = ROW.min(g.ow - ox0);
                    let mut lanes = [S::LANE_ZERO; ROW];
                    g.z_lanes::<S, K>(x, w, (f, oy, ox0), lanes.get_mut(..n).unwrap_or_default());
                    for &l in lanes.iter().take(n) {
                        if let Some((k, o)) = out.next() {
                            *o = put_fast(S::acc_add(S::lane_acc(l), bias), r, p, || {
                                g.z_exact(x, w, b, k)
                            });
                        }
                    }
                }
            }
        }
        watch(z, r, p, |k| g.z_exact(x, w, b, k));
    }

    /// [`Geom::forward`]'s output `k` (flat), exactly, with every product's events.
    fn z_exact<S: Scalar>(&self, x: &[S], w: &[S], b: &[S], k: usize) -> S::Acc {
        let g = *self;
        let (f, oy, ox) = g.unflat(k, g.oh, g.ow);
        let mut acc = S::acc_zero();
        for c in 0..g.c {
            for ky in 0..g.kh {
                let Some(iy) = src(oy, ky, g.stride, g.pad_h, g.h) else {
                    continue;
                };
                let wr = ((f * g.c + c) * g.kh + ky) * g.kw;
                let xr = (c * g.h + iy) * g.w;
                for kx in 0..g.kw {
                    let Some(ix) = src(ox, kx, g.stride, g.pad_w, g.w) else {
                        continue;
                    };
                    if let (Some(&wv), Some(&xv)) = (w.get(wr + kx), x.get(xr + ix)) {
                        acc = S::mac(acc, wv, xv);
                    }
                }
            }
        }
        S::acc_add(acc, b.get(f).copied().unwrap_or(S::ZERO))
    }

    /// `dx[c][iy][ix] = Σ_{f, ky, kx} w[f][c][ky][kx] · dz[f][oy][ox]` over the outputs that read `x[c][iy][ix]`,
    /// in that loop order, rounded once. The fast lanes hold a block of a row of `dx` (as [`Geom::forward`]);
    /// at stride 1 an interior input is read by all `K` offsets of each window row, from `K` consecutive
    /// outputs (unrolled, no checks).
    fn backward_input<S: Scalar, R, P, const K: usize>(
        &self,
        w: &[S],
        dz: &[S],
        dx: &mut [S],
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probe + ?Sized,
    {
        let g = *self;
        if !fast::<S, P>(w, bound_if_needed::<S, P>(dz, 0), g.f * g.kh * K) {
            return exact_outputs(dx, r, p, |k| g.dx_exact(w, dz, k));
        }
        let mut out = dx.iter_mut().enumerate();
        begin::<S, P>(r);
        for c in 0..g.c {
            for iy in 0..g.h {
                for ix0 in (0..g.w).step_by(ROW) {
                    let n = ROW.min(g.w - ix0);
                    let mut lanes = [S::LANE_ZERO; ROW];
                    g.dx_lanes::<S, K>(w, dz, (c, iy, ix0), lanes.get_mut(..n).unwrap_or_default());
                    for &l in lanes.iter().take(n) {
                        if let Some((k, o)) = out.next() {
                            *o = put_fast(S::lane_acc(l), r, p, || g.dx_exact(w, dz, k));
                        }
                    }
                }
            }
        }
        watch(dx, r, p, |k| g.dx_exact(w, dz, k));
    }

    /// [`Geom::backward_input`]'s output `k` (flat), exactly, with every product's events.
    fn dx_exact<S: Scalar>(&self, w: &[S], dz: &[S], k: usize) -> S::Acc {
        let g = *self;
        let (c, iy, ix) = g.unflat(k, g.h, g.w);
        let mut acc = S::acc_zero();
        for f in 0..g.f {
            for ky in 0..g.kh {
                let Some(oy) = dst(iy, ky, g.stride, g.pad_h, g.oh) else {
                    continue;
                };
                let wr = ((f * g.c + c) * g.kh + ky) * g.kw;
                let dr = (f * g.oh + oy) * g.ow;
                for kx in 0..g.kw {
                    let Some(ox) = dst(ix, kx, g.stride, g.pad_w, g.ow) else {
                        continue;
                    };
                    if let (Some(&wv), Some(&dv)) = (w.get(wr + kx), dz.get(dr + ox)) {
                        acc = S::mac(acc, wv, dv);
                    }
                }
            }
        }
        acc
    }

    /// `gw[f][c][ky][kx] += Σ_{oy, ox} dz[f][oy][ox] · x[c][iy][ix]` and `gb[f] += Σ dz[f]`: each element's
    /// old value and its terms in one sum (from the old value, positions row by row), rounded once. The fast
    /// lanes hold the `K` gradients of a window row, and every interior position adds to all of them at once.
    #[allow(clippy::too_many_arguments)]
    fn backward_params<S: Scalar, R, P, const K: usize>(
        &self,
        x: &[S],
        dz: &[S],
        gw: &mut [S],
        gb: &mut [S],
        r: &mut R,
        p: &mut P,
    ) where
        R: Rounding + ?Sized,
        P: Probe + ?Sized,
    {
        let g = *self;
        // The old value counts as one more term; floats (which have a start) are checked exactly when observed.
        let terms = g.oh * g.ow + 1;
        let quiet = (S::IS_FLOAT && !P::ACTIVE)
            || (!S::IS_FLOAT && {
                let xb = bound_if_needed::<S, P>(x, terms);
                S::quiet(S::ANY, xb, terms) || S::quiet_if_finite(dz, xb, terms)
            });
        let (rows, _) = gw.as_chunks_mut::<K>();
        for (row, gr) in rows.iter_mut().enumerate() {
            let old = *gr;
            let (f, c, ky, _) = g.unflat_w(row * K);
            if !quiet {
                for (kx, (gv, &o)) in gr.iter_mut().zip(&old).enumerate() {
                    *gv = put(g.gw_exact(x, dz, row * K + kx, o), r, p);
                }
                continue;
            }
            let mut lanes = old.map(S::lane_of);
            g.gw_lanes::<S, K>(x, dz, (f, c, ky), &mut lanes);
            let exact = |kx: usize| {
                let o = old.get(kx).copied().unwrap_or(S::ZERO);
                g.gw_exact(x, dz, row * K + kx, o)
            };
            begin::<S, P>(r);
            for (kx, (gv, l)) in gr.iter_mut().zip(lanes).enumerate() {
                *gv = put_fast(S::lane_acc(l), r, p, || exact(kx));
            }
            watch(gr, r, p, exact);
        }
        let plane = g.oh * g.ow;
        for (f, gv) in gb.iter_mut().enumerate() {
            let terms = dz.iter().skip(f * plane).take(plane);
            let acc = terms.fold(S::acc_add(S::acc_zero(), *gv), |a, &d| S::acc_add(a, d));
            begin::<S, P>(r);
            *gv = put_fast(acc, r, p, || acc);
            // A watching probe sees a non-finite float only through this check.
            watch(core::slice::from_ref(gv), r, p, |_| acc);
        }
    }

    /// [`Geom::backward_params`]' weight gradient `k` (flat) from its old value `old`, exactly, with every
    /// product's events.
    fn gw_exact<S: Scalar>(&self, x: &[S], dz: &[S], k: usize, old: S) -> S::Acc {
        let g = *self;
        let (f, c, ky, kx) = g.unflat_w(k);
        let mut acc = S::acc_add(S::acc_zero(), old);
        for oy in 0..g.oh {
            let Some(iy) = src(oy, ky, g.stride, g.pad_h, g.h) else {
                continue;
            };
            let dr = (f * g.oh + oy) * g.ow;
            let xr = (c * g.h + iy) * g.w;
            for ox in 0..g.ow {
                let Some(ix) = src(ox, kx, g.stride, g.pad_w, g.w) else {
                    continue;
                };
                if let (Some(&dv), Some(&xv)) = (dz.get(dr + ox), x.get(xr + ix)) {
                    acc = S::mac(acc, dv, xv);
                }
            }
        }
        acc
    }

    /// [`Geom::forward`]'s fast lanes for the outputs `(f, oy, ox0 + j)` of one block: every product, in the
    /// sum's order, without checks. Inlined: with the layer's sizes as constants the loops unroll (a third
    /// of the instructions on the Cortex-M4F).
    #[inline(always)]
    fn z_lanes<S: Scalar, const K: usize>(
        &self,
        x: &[S],
        w: &[S],
        (f, oy, ox0): (usize, usize, usize),
        lanes: &mut [S::Lane],
    ) {
        let g = *self;
        for c in 0..g.c {
            for ky in 0..g.kh {
                let Some(iy) = src(oy, ky, g.stride, g.pad_h, g.h) else {
                    continue;
                };
                let (Some(wr), Some(xr)) = (
                    window::<S, K>(w, ((f * g.c + c) * g.kh + ky) * K),
                    x.get((c * g.h + iy) * g.w..).and_then(|v| v.get(..g.w)),
                ) else {
                    continue;
                };
                for (ox, l) in (ox0..).zip(lanes.iter_mut()) {
                    let at = (ox * g.stride).wrapping_sub(g.pad_w);
                    match window::<S, K>(xr, at) {
                        Some(xs) => {
                            for (&wv, &xv) in wr.iter().zip(xs) {
                                *l = S::lane_mac(*l, wv, xv);
                            }
                        }
                        None => {
                            for (kx, &wv) in wr.iter().enumerate() {
                                let ix = src(ox, kx, g.stride, g.pad_w, g.w);
                                if let Some(&xv) = ix.and_then(|i| xr.get(i)) {
                                    *l = S::lane_mac(*l, wv, xv);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`Geom::backward_input`]'s fast lanes for the inputs `(c, iy, ix0 + j)` of one block (as
    /// [`Geom::z_lanes`]).
    #[inline(always)]
    fn dx_lanes<S: Scalar, const K: usize>(
        &self,
        w: &[S],
        dz: &[S],
        (c, iy, ix0): (usize, usize, usize),
        lanes: &mut [S::Lane],
    ) {
        let g = *self;
        for f in 0..g.f {
            for ky in 0..g.kh {
                let Some(oy) = dst(iy, ky, g.stride, g.pad_h, g.oh) else {
                    continue;
                };
                let (Some(wr), Some(dr)) = (
                    window::<S, K>(w, ((f * g.c + c) * g.kh + ky) * K),
                    dz.get((f * g.oh + oy) * g.ow..).and_then(|v| v.get(..g.ow)),
                ) else {
                    continue;
                };
                for (ix, l) in (ix0..).zip(lanes.iter_mut()) {
                    let at = (ix + g.pad_w).wrapping_sub(K - 1);
                    // At stride 1, offset kx meets output `ix + pad − kx`: K consecutive outputs.
                    match window::<S, K>(dr, at).filter(|_| g.stride == 1) {
                        Some(ds) => {
                            for (&wv, &dv) in wr.iter().zip(ds.iter().rev()) {
                                *l = S::lane_mac(*l, wv, dv);
                            }
                        }
                        None => {
                            for (kx, &wv) in wr.iter().enumerate() {
                                let ox = dst(ix, kx, g.stride, g.pad_w, g.ow);
                                if let Some(&dv) = ox.and_then(|o| dr.get(o)) {
                                    *l = S::lane_mac(*l, wv, dv);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`Geom::backward_params`]' fast lanes for the `K` weight gradients of window row `(f, c, ky)`: every
    /// position's products, in order, added to the lanes (which hold the old values).
    #[inline(always)]
    fn gw_lanes<S: Scalar, const K: usize>(
        &self,
        x: &[S],
        dz: &[S],
        (f, c, ky): (usize, usize, usize),
        lanes: &mut [S::Lane; K],
    ) {
        let g = *self;
        for oy in 0..g.oh {
            let Some(iy) = src(oy, ky, g.stride, g.pad_h, g.h) else {
                continue;
            };
            let (Some(dr), Some(xr)) = (
                dz.get((f * g.oh + oy) * g.ow..).and_then(|v| v.get(..g.ow)),
                x.get((c * g.h + iy) * g.w..).and_then(|v| v.get(..g.w)),
            ) else {
                continue;
            };
            for (ox, &dv) in dr.iter().enumerate() {
                let at = (ox * g.stride).wrapping_sub(g.pad_w);
                match window::<S, K>(xr, at) {
                    Some(xs) => {
                        for (l, &xv) in lanes.iter_mut().zip(xs) {
                            *l = S::lane_mac(*l, dv, xv);
                        }
                    }
                    None => {
                        for (kx, l) in lanes.iter_mut().enumerate() {
                            let ix = src(ox, kx, g.stride, g.pad_w, g.w);
                            if let Some(&xv) = ix.and_then(|i| xr.get(i)) {
                                *l = S::lane_mac(*l, dv, xv);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Flat index `k` of a `[_; rows][cols]` plane stack as (plane, row, column).
    fn unflat(&self, k: usize, rows: usize, cols: usize) -> (usize, usize, usize) {
        let col = k.checked_rem(cols).unwrap_or(0);
        let k = k.checked_div(cols).unwrap_or(0);
        (
            k.checked_div(rows).unwrap_or(0),
            k.checked_rem(rows).unwrap_or(0),
            col,
        )
    }

    /// Flat index `k` of the weight `[f][c][ky][kx]` as its four indices.
    fn unflat_w(&self, k: usize) -> (usize, usize, usize, usize) {
        let (fc, ky, kx) = self.unflat(k, self.kh, self.kw);
        (
            fc.checked_div(self.c).unwrap_or(0),
            fc.checked_rem(self.c).unwrap_or(0),
            ky,
            kx,
        )
    }

    /// Max pooling over non-overlapping windows (stride = window, `c = f`): each output is its window's
    /// largest value, the first in row-major order on ties, NaN if the window holds one (PyTorch's rule);
    /// `arg` gets each maximum's flat input index.
    fn max_pool<S: Scalar>(&self, x: &[S], y: &mut [S], arg: &mut [u32]) {
        let g = *self;
        let mut out = y.iter_mut().zip(arg.iter_mut());
        for c in 0..g.c {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut best: Option<(S, usize)> = None;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let (iy, ix) = (oy * g.stride + ky, ox * g.stride + kx);
                            let k = (c * g.h + iy) * g.w + ix;
                            let Some(&v) = x.get(k).filter(|_| iy < g.h && ix < g.w) else {
                                continue;
                            };
                            #[allow(clippy::eq_op)]
                            let nan = v != v;
                            if best.is_none_or(|(m, _)| v > m || nan) {
                                best = Some((v, k));
                            }
                        }
                    }
                    if let (Some((yv, av)), Some((m, k))) = (out.next(), best) {
                        *yv = m;
                        *av = k as u32;
                    }
                }
            }
        }
    }

    /// Average pooling over non-overlapping windows: the window's sum (floats: in row-major order) divided by
    /// `kh·kw` with [`Scalar::narrow_mean`] (fixed point: the exact quotient rounded once).
    fn avg_pool<S: Scalar, R, P>(&self, x: &[S], y: &mut [S], r: &mut R, p: &mut P)
    where
        R: Rounding + ?Sized,
        P: Probe + ?Sized,
    {
        let g = *self;
        let n = (g.kh * g.kw) as u32;
        let mut out = y.iter_mut();
        for c in 0..g.c {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = S::acc_zero();
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let (iy, ix) = (oy * g.stride + ky, ox * g.stride + kx);
                            if iy < g.h
                                && ix < g.w
                                && let Some(&v) = x.get((c * g.h + iy) * g.w + ix)
                            {
                                acc = S::acc_add(acc, v);
                            }
                        }
                    }
                    let (v, f) = S::narrow_mean(acc, n, r);
                    p.note(f);
                    if let Some(o) = out.next() {
                        *o = v;
                    }
                }
            }
        }
    }

    /// The gradient of [`Geom::avg_pool`]: every input of a window gets `dy · 1/(kh·kw)`, rounded once;
    /// inputs no window covers get zero.
    fn avg_pool_back<S: Scalar, R, P>(&self, dy: &[S], dx: &mut [S], r: &mut R, p: &mut P)
    where
        R: Rounding + ?Sized,
        P: Probe + ?Sized,
    {
        let g = *self;
        let k = mean_coef(g.kh * g.kw);
        let mut out = dx.iter_mut();
        for c in 0..g.c {
            for iy in 0..g.h {
                for ix in 0..g.w {
                    let (oy, ox) = (iy / g.stride.max(1), ix / g.stride.max(1));
                    let d = if oy < g.oh && ox < g.ow {
                        let dv = dy.get((c * g.oh + oy) * g.ow + ox).copied();
                        let (v, f) = dv.unwrap_or(S::ZERO).scale_by(&k, r);
                        p.note(f);
                        v
                    } else {
                        S::ZERO
                    };
                    if let Some(o) = out.next() {
                        *o = d;
                    }
                }
            }
        }
    }
}

/// `1/n`, the factor of an average over `n` values.
fn mean_coef(n: usize) -> Coef {
    Coef::new(1.0 / n.max(1) as f64)
}

/// Route each pooled gradient to the input its maximum came from (the windows do not overlap, so no input
/// receives two); exact, no events.
fn max_pool_back<S: Scalar>(arg: &[u32], dy: &[S], dx: &mut [S]) {
    dx.fill(S::ZERO);
    for (&k, &d) in arg.iter().zip(dy) {
        if let Some(v) = dx.get_mut(k as usize) {
            *v = d;
        }
    }
}

/// A weight tensor whose units are the filters (fan-in `unit` values each).
fn filters<'a, S: Scalar>(
    at: usize,
    value: &'a mut [S],
    grad: &'a mut [S],
    unit: usize,
) -> ParamTensor<'a, S> {
    ParamTensor {
        value,
        grad,
        unit,
        layer: at,
        matrix: true,
        name: "weight",
    }
}

/// A 2-D convolution of `C` channels of `H × W` into `F` channels of `OH × OW`, with square `K × K` kernels,
/// stride `STRIDE` and `PAD` zeros on every side, then the activation `act`: `y = act(z)`,
/// `z[f][oy][ox] = Σ_{c, ky, kx} w[f][c][ky][kx] · x[c][oy·STRIDE + ky − PAD][ox·STRIDE + kx − PAD] + b[f]`.
///
/// One exact wide sum per output, rounded once (floats: in the loop order `c`, `ky`, `kx`, then the bias).
/// Backward: `dz = dy ⊙ act′(z)` (one rounding), `∂w[f][c][ky][kx] += Σ_{oy, ox} dz · x` and
/// `∂b[f] += Σ_{oy, ox} dz` (each from its old value in one sum, rounded once), `dx = Σ_{f, ky, kx} w · dz`
/// (one rounding). `OH` and `OW` must equal `⌊(H + 2·PAD − K) / STRIDE⌋ + 1` and `2·PAD ≤ K`, or
/// [`Conv2d::new`] does not compile.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d<
    S,
    const C: usize,
    const H: usize,
    const W: usize,
    const F: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
    const STRIDE: usize = 1,
    const PAD: usize = 0,
> {
    /// Weights, PyTorch's `(out, in, kh, kw)`.
    pub weight: [[[[S; K]; K]; C]; F],
    /// Biases, one per output channel.
    pub bias: [S; F],
    /// Accumulated ∂L/∂weight.
    pub grad_weight: [[[[S; K]; K]; C]; F],
    /// Accumulated ∂L/∂bias.
    pub grad_bias: [S; F],
    /// The activation.
    pub act: Act,
    x: [[[S; W]; H]; C],
    z: [[[S; OW]; OH]; F],
    y: [[[S; OW]; OH]; F],
}

/// Whether a window of `k` moved by `stride` over `n` values padded by `pad` on each side has `out` positions.
const fn window_fits(n: usize, k: usize, stride: usize, pad: usize, out: usize) -> bool {
    k >= 1
        && stride >= 1
        && 2 * pad <= k
        && n + 2 * pad >= k
        && out == (n + 2 * pad - k) / stride + 1
}

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const F: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
    const STRIDE: usize,
    const PAD: usize,
> Conv2d<S, C, H, W, F, K, OH, OW, STRIDE, PAD>
{
    const SHAPE_OK: () = assert!(
        window_fits(H, K, STRIDE, PAD, OH) && window_fits(W, K, STRIDE, PAD, OW),
        "Conv2d: OH and OW must be (H + 2*PAD - K) / STRIDE + 1 (rounded down), with 2*PAD <= K"
    );

    const GEOM: Geom = Geom {
        c: C,
        h: H,
        w: W,
        f: F,
        oh: OH,
        ow: OW,
        kh: K,
        kw: K,
        stride: STRIDE,
        pad_h: PAD,
        pad_w: PAD,
    };

    /// A layer with zero weights and biases. Does not compile if the sizes do not fit (see the type).
    pub fn new(act: Act) -> Self {
        let () = Self::SHAPE_OK;
        Conv2d {
            weight: [[[[S::ZERO; K]; K]; C]; F],
            bias: [S::ZERO; F],
            grad_weight: [[[[S::ZERO; K]; K]; C]; F],
            grad_bias: [S::ZERO; F],
            act,
            x: Tensor::zeros(),
            z: Tensor::zeros(),
            y: Tensor::zeros(),
        }
    }

    /// Initialize weights with `weight` and biases with `bias`, in place, with PyTorch's fans for a
    /// convolution: fan-in `C·K·K`, fan-out `F·K·K`. Orthogonal and identity initialization need a matrix and
    /// are refused.
    pub fn init(
        &mut self,
        weight: &Init,
        bias: &Init,
        rng: &mut (impl Rng + ?Sized),
        r: &mut (impl Rounding + ?Sized),
        p: &mut (impl Probe + ?Sized),
    ) -> Result<(), InitError> {
        let (fan_in, fan_out) = (C * K * K, F * K * K);
        init_slice(
            self.weight
                .as_flattened_mut()
                .as_flattened_mut()
                .as_flattened_mut(),
            weight,
            fan_in,
            fan_out,
            rng,
            r,
            p,
        )?;
        init_slice(&mut self.bias, bias, fan_in, fan_out, rng, r, p)
    }

    /// The pre-activations of the last forward pass.
    pub fn pre_activation(&self) -> &[[[S; OW]; OH]; F] {
        &self.z
    }
}

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const F: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
    const STRIDE: usize,
    const PAD: usize,
> Params<S> for Conv2d<S, C, H, W, F, K, OH, OW, STRIDE, PAD>
{
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        let (w, g) = (
            self.weight.as_flattened_mut().as_flattened_mut(),
            self.grad_weight.as_flattened_mut().as_flattened_mut(),
        );
        f(filters(
            at,
            w.as_flattened_mut(),
            g.as_flattened_mut(),
            C * K * K,
        ));
        f(ParamTensor::vector(at, &mut self.bias, &mut self.grad_bias).named("bias"));
    }
}

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const F: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
    const STRIDE: usize,
    const PAD: usize,
> Layer<S> for Conv2d<S, C, H, W, F, K, OH, OW, STRIDE, PAD>
where
    Act: Activate<S>,
{
    type Input = [[[S; W]; H]; C];
    type Output = [[[S; OW]; OH]; F];

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        self.x = *x;
        conv_forward::<S, R, P, K>(
            &Self::GEOM,
            (&self.act, x.flat()),
            (
                self.weight.as_flattened().as_flattened().as_flattened(),
                &self.bias,
            ),
            (self.z.flat_mut(), self.y.flat_mut()),
            at,
            r,
            p,
        );
        self.y
    }

    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dz: Self::Output = Tensor::zeros();
        let mut dx: Self::Input = Tensor::zeros();
        let w = self.weight.as_flattened().as_flattened().as_flattened();
        let gw = self
            .grad_weight
            .as_flattened_mut()
            .as_flattened_mut()
            .as_flattened_mut();
        conv_backward::<S, R, P, K>(
            &Self::GEOM,
            (&self.act, self.x.flat(), self.z.flat(), self.y.flat()),
            (w, gw, &mut self.grad_bias),
            (dy.flat(), dz.flat_mut(), dx.flat_mut()),
            at,
            r,
            p,
        );
        dx
    }

    fn zero_grad(&mut self) {
        self.grad_weight = [[[[S::ZERO; K]; K]; C]; F];
        self.grad_bias = [S::ZERO; F];
    }
}

/// The forward pass of a convolution layer on flat slices (window width `K`): `z` then `y = act(z)`, events
/// under `at`.
fn conv_forward<S: Scalar, R, P, const K: usize>(
    g: &Geom,
    (act, x): (&Act, &[S]),
    (w, b): (&[S], &[S]),
    (z, y): (&mut [S], &mut [S]),
    at: usize,
    r: &mut R,
    p: &mut P,
) where
    Act: Activate<S>,
    R: Rounding + ?Sized,
    P: Probes + ?Sized,
{
    let mut fp = At::new(&mut *p, at, Phase::Forward);
    g.forward::<S, _, _, K>(x, w, b, z, r, &mut fp);
    activate(act, z, y, r, &mut fp);
    p.signal(at, Phase::Forward, y);
}

/// The backward pass of a convolution layer on flat slices (window width `K`): `dz`, the parameter gradients,
/// then `dx`.
#[allow(clippy::type_complexity)]
fn conv_backward<S: Scalar, R, P, const K: usize>(
    g: &Geom,
    (act, x, z, y): (&Act, &[S], &[S], &[S]),
    (w, gw, gb): (&[S], &mut [S], &mut [S]),
    (dy, dz, dx): (&[S], &mut [S], &mut [S]),
    at: usize,
    r: &mut R,
    p: &mut P,
) where
    Act: Activate<S>,
    R: Rounding + ?Sized,
    P: Probes + ?Sized,
{
    activate_back(
        act,
        (z, y),
        dy,
        dz,
        r,
        &mut At::new(&mut *p, at, Phase::Backward),
    );
    g.backward_params::<S, _, _, K>(x, dz, gw, gb, r, &mut At::new(&mut *p, at, Phase::Grad));
    g.backward_input::<S, _, _, K>(w, dz, dx, r, &mut At::new(&mut *p, at, Phase::Backward));
    p.signal(at, Phase::Backward, dx);
}

/// A 1-D convolution of `C` channels of length `L` into `F` channels of length `OL`, kernel `K`, stride
/// `STRIDE`, `PAD` zeros at each end, then `act`: PyTorch's `Conv1d`, computed as [`Conv2d`] computes a single
/// row (same sums, same order, same rounding). `OL = ⌊(L + 2·PAD − K) / STRIDE⌋ + 1` and `2·PAD ≤ K`, or
/// [`Conv1d::new`] does not compile.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv1d<
    S,
    const C: usize,
    const L: usize,
    const F: usize,
    const K: usize,
    const OL: usize,
    const STRIDE: usize = 1,
    const PAD: usize = 0,
> {
    /// Weights, PyTorch's `(out, in, k)`.
    pub weight: [[[S; K]; C]; F],
    /// Biases, one per output channel.
    pub bias: [S; F],
    /// Accumulated ∂L/∂weight.
    pub grad_weight: [[[S; K]; C]; F],
    /// Accumulated ∂L/∂bias.
    pub grad_bias: [S; F],
    /// The activation.
    pub act: Act,
    x: [[S; L]; C],
    z: [[S; OL]; F],
    y: [[S; OL]; F],
}

impl<
    S: Scalar,
    const C: usize,
    const L: usize,
    const F: usize,
    const K: usize,
    const OL: usize,
    const STRIDE: usize,
    const PAD: usize,
> Conv1d<S, C, L, F, K, OL, STRIDE, PAD>
{
    const SHAPE_OK: () = assert!(
        window_fits(L, K, STRIDE, PAD, OL),
        "Conv1d: OL must be (L + 2*PAD - K) / STRIDE + 1 (rounded down), with 2*PAD <= K"
    );

    const GEOM: Geom = Geom {
        c: C,
        h: 1,
        w: L,
        f: F,
        oh: 1,
        ow: OL,
        kh: 1,
        kw: K,
        stride: STRIDE,
        pad_h: 0,
        pad_w: PAD,
    };

    /// A layer with zero weights and biases. Does not compile if the sizes do not fit (see the type).
    pub fn new(act: Act) -> Self {
        let () = Self::SHAPE_OK;
        Conv1d {
            weight: [[[S::ZERO; K]; C]; F],
            bias: [S::ZERO; F],
            grad_weight: [[[S::ZERO; K]; C]; F],
            grad_bias: [S::ZERO; F],
            act,
            x: Tensor::zeros(),
            z: Tensor::zeros(),
            y: Tensor::zeros(),
        }
    }

    /// Initialize in place with PyTorch's fans for a convolution: fan-in `C·K`, fan-out `F·K`. Orthogonal and
    /// identity initialization need a matrix and are refused.
    pub fn init(
        &mut self,
        weight: &Init,
        bias: &Init,
        rng: &mut (impl Rng + ?Sized),
        r: &mut (impl Rounding + ?Sized),
        p: &mut (impl Probe + ?Sized),
    ) -> Result<(), InitError> {
        let (fan_in, fan_out) = (C * K, F * K);
        init_slice(
            self.weight.as_flattened_mut().as_flattened_mut(),
            weight,
            fan_in,
            fan_out,
            rng,
            r,
            p,
        )?;
        init_slice(&mut self.bias, bias, fan_in, fan_out, rng, r, p)
    }

    /// The pre-activations of the last forward pass.
    pub fn pre_activation(&self) -> &[[S; OL]; F] {
        &self.z
    }
}

impl<
    S: Scalar,
    const C: usize,
    const L: usize,
    const F: usize,
    const K: usize,
    const OL: usize,
    const STRIDE: usize,
    const PAD: usize,
> Params<S> for Conv1d<S, C, L, F, K, OL, STRIDE, PAD>
{
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        let (w, g) = (
            self.weight.as_flattened_mut(),
            self.grad_weight.as_flattened_mut(),
        );
        f(filters(
            at,
            w.as_flattened_mut(),
            g.as_flattened_mut(),
            C * K,
        ));
        f(ParamTensor::vector(at, &mut self.bias, &mut self.grad_bias).named("bias"));
    }
}

impl<
    S: Scalar,
    const C: usize,
    const L: usize,
    const F: usize,
    const K: usize,
    const OL: usize,
    const STRIDE: usize,
    const PAD: usize,
> Layer<S> for Conv1d<S, C, L, F, K, OL, STRIDE, PAD>
where
    Act: Activate<S>,
{
    type Input = [[S; L]; C];
    type Output = [[S; OL]; F];

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        self.x = *x;
        conv_forward::<S, R, P, K>(
            &Self::GEOM,
            (&self.act, x.flat()),
            (self.weight.as_flattened().as_flattened(), &self.bias),
            (self.z.flat_mut(), self.y.flat_mut()),
            at,
            r,
            p,
        );
        self.y
    }

    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dz: Self::Output = Tensor::zeros();
        let mut dx: Self::Input = Tensor::zeros();
        let w = self.weight.as_flattened().as_flattened();
        let gw = self.grad_weight.as_flattened_mut().as_flattened_mut();
        conv_backward::<S, R, P, K>(
            &Self::GEOM,
            (&self.act, self.x.flat(), self.z.flat(), self.y.flat()),
            (w, gw, &mut self.grad_bias),
            (dy.flat(), dz.flat_mut(), dx.flat_mut()),
            at,
            r,
            p,
        );
        dx
    }

    fn zero_grad(&mut self) {
        self.grad_weight = [[[S::ZERO; K]; C]; F];
        self.grad_bias = [S::ZERO; F];
    }
}

/// Max pooling of `C` channels of `H × W` over non-overlapping `K × K` windows (PyTorch's `MaxPool2d(K)`:
/// stride `K`, no padding; rows and columns past the last whole window are dropped). Each output is its
/// window's largest value (the first in row-major order on ties; NaN if the window holds one). Backward sends
/// each gradient to the input its maximum came from: exact, no events. `OH = ⌊H / K⌋`, `OW = ⌊W / K⌋`, or
/// [`MaxPool2d::new`] does not compile. No parameters; one layer index (its signals are reported there).
#[derive(Clone, Debug, PartialEq)]
pub struct MaxPool2d<
    S,
    const C: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
> {
    arg: [[[u32; OW]; OH]; C],
    _s: PhantomData<S>,
}

/// Average pooling of `C` channels of `H × W` over non-overlapping `K × K` windows (PyTorch's `AvgPool2d(K)`).
/// Each output is its window's mean by [`Scalar::narrow_mean`]: in fixed point the exact sum divided by `K²`
/// and rounded once (so a mean is in range whenever its value is); floats round the sum (in row-major order),
/// then multiply by `1/K²`. Backward gives every input of a window `dy · 1/K²`, rounded once. `OH = ⌊H / K⌋`,
/// `OW = ⌊W / K⌋`, or [`AvgPool2d::new`] does not compile. No parameters; one layer index.
#[derive(Clone, Debug, PartialEq)]
pub struct AvgPool2d<
    S,
    const C: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
>(PhantomData<S>);

/// Global average pooling: each of `C` channels of `H × W` to its mean, `[S; C]` (PyTorch's
/// `AdaptiveAvgPool2d(1)` then flatten), computed as [`AvgPool2d`] with one `H × W` window. No parameters;
/// one layer index.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalAvgPool<S, const C: usize, const H: usize, const W: usize>(PhantomData<S>);

macro_rules! pool_geom {
    ($c:expr, $h:expr, $w:expr, $kh:expr, $kw:expr, $oh:expr, $ow:expr) => {
        Geom {
            c: $c,
            h: $h,
            w: $w,
            f: $c,
            oh: $oh,
            ow: $ow,
            kh: $kh,
            kw: $kw,
            stride: $kh,
            pad_h: 0,
            pad_w: 0,
        }
    };
}

/// Whether `K × K` windows tile `H × W` into `OH × OW` (the remainder dropped).
const fn pool_fits(h: usize, w: usize, k: usize, oh: usize, ow: usize) -> bool {
    k >= 1 && oh == h / k && ow == w / k && oh >= 1 && ow >= 1
}

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
> MaxPool2d<S, C, H, W, K, OH, OW>
{
    const SHAPE_OK: () = assert!(
        pool_fits(H, W, K, OH, OW),
        "MaxPool2d: OH must be H / K and OW must be W / K (rounded down, at least 1)"
    );
    const GEOM: Geom = pool_geom!(C, H, W, K, K, OH, OW);

    /// The layer. Does not compile if the sizes do not fit.
    pub fn new() -> Self {
        let () = Self::SHAPE_OK;
        MaxPool2d {
            arg: [[[0; OW]; OH]; C],
            _s: PhantomData,
        }
    }
}

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
> Default for MaxPool2d<S, C, H, W, K, OH, OW>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
> AvgPool2d<S, C, H, W, K, OH, OW>
{
    const SHAPE_OK: () = assert!(
        pool_fits(H, W, K, OH, OW),
        "AvgPool2d: OH must be H / K and OW must be W / K (rounded down, at least 1)"
    );
    const GEOM: Geom = pool_geom!(C, H, W, K, K, OH, OW);

    /// The layer. Does not compile if the sizes do not fit.
    pub fn new() -> Self {
        let () = Self::SHAPE_OK;
        AvgPool2d(PhantomData)
    }
}

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
> Default for AvgPool2d<S, C, H, W, K, OH, OW>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Scalar, const C: usize, const H: usize, const W: usize> GlobalAvgPool<S, C, H, W> {
    const SHAPE_OK: () = assert!(
        H >= 1 && W >= 1,
        "GlobalAvgPool: H and W must be at least 1"
    );
    const GEOM: Geom = pool_geom!(C, H, W, H, W, 1, 1);

    /// The layer.
    pub fn new() -> Self {
        let () = Self::SHAPE_OK;
        GlobalAvgPool(PhantomData)
    }
}

impl<S: Scalar, const C: usize, const H: usize, const W: usize> Default
    for GlobalAvgPool<S, C, H, W>
{
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! no_params {
    ($ty:ty, $depth:expr, [$($g:tt)*]) => {
        impl<S: Scalar, $($g)*> Params<S> for $ty {
            fn depth(&self) -> usize {
                $depth
            }
            fn visit(&mut self, _at: usize, _f: &mut dyn FnMut(ParamTensor<'_, S>)) {}
        }
    };
}

no_params!(MaxPool2d<S, C, H, W, K, OH, OW>, 1, [const C: usize, const H: usize, const W: usize, const K: usize, const OH: usize, const OW: usize]);
no_params!(AvgPool2d<S, C, H, W, K, OH, OW>, 1, [const C: usize, const H: usize, const W: usize, const K: usize, const OH: usize, const OW: usize]);
no_params!(GlobalAvgPool<S, C, H, W>, 1, [const C: usize, const H: usize, const W: usize]);

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
> Layer<S> for MaxPool2d<S, C, H, W, K, OH, OW>
{
    type Input = [[[S; W]; H]; C];
    type Output = [[[S; OW]; OH]; C];

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, _r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut y: Self::Output = Tensor::zeros();
        Self::GEOM.max_pool(
            x.flat(),
            y.flat_mut(),
            self.arg.as_flattened_mut().as_flattened_mut(),
        );
        p.signal(at, Phase::Forward, y.flat());
        y
    }

    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, _r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dx: Self::Input = Tensor::zeros();
        max_pool_back(
            self.arg.as_flattened().as_flattened(),
            dy.flat(),
            dx.flat_mut(),
        );
        p.signal(at, Phase::Backward, dx.flat());
        dx
    }

    fn zero_grad(&mut self) {}
}

/// The forward and backward passes of average pooling on flat slices, events and signals under `at`.
fn avg_forward<S: Scalar, R, P>(g: &Geom, x: &[S], y: &mut [S], at: usize, r: &mut R, p: &mut P)
where
    R: Rounding + ?Sized,
    P: Probes + ?Sized,
{
    g.avg_pool(x, y, r, &mut At::new(&mut *p, at, Phase::Forward));
    p.signal(at, Phase::Forward, y);
}

fn avg_backward<S: Scalar, R, P>(g: &Geom, dy: &[S], dx: &mut [S], at: usize, r: &mut R, p: &mut P)
where
    R: Rounding + ?Sized,
    P: Probes + ?Sized,
{
    g.avg_pool_back(dy, dx, r, &mut At::new(&mut *p, at, Phase::Backward));
    p.signal(at, Phase::Backward, dx);
}

impl<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
> Layer<S> for AvgPool2d<S, C, H, W, K, OH, OW>
{
    type Input = [[[S; W]; H]; C];
    type Output = [[[S; OW]; OH]; C];

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, r: &mut R, p: &mut P) -> Self::Output
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut y: Self::Output = Tensor::zeros();
        avg_forward(&Self::GEOM, x.flat(), y.flat_mut(), at, r, p);
        y
    }

    fn backward<R, P>(&mut self, dy: &Self::Output, at: usize, r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dx: Self::Input = Tensor::zeros();
        avg_backward(&Self::GEOM, dy.flat(), dx.flat_mut(), at, r, p);
        dx
    }

    fn zero_grad(&mut self) {}
}

impl<S: Scalar, const C: usize, const H: usize, const W: usize> Layer<S>
    for GlobalAvgPool<S, C, H, W>
{
    type Input = [[[S; W]; H]; C];
    type Output = [S; C];

    fn forward<R, P>(&mut self, x: &Self::Input, at: usize, r: &mut R, p: &mut P) -> [S; C]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut y = [S::ZERO; C];
        avg_forward(&Self::GEOM, x.flat(), &mut y, at, r, p);
        y
    }

    fn backward<R, P>(&mut self, dy: &[S; C], at: usize, r: &mut R, p: &mut P) -> Self::Input
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dx: Self::Input = Tensor::zeros();
        avg_backward(&Self::GEOM, dy, dx.flat_mut(), at, r, p);
        dx
    }

    fn zero_grad(&mut self) {}
}

/// Any [`Tensor`] `X` (a CHW image, a channel-major sequence) as a vector `[S; N]` in row-major order, so a
/// [`super::Dense`] head composes after convolutions; backward reshapes the gradient back. `N` must be
/// `X::LEN`, or [`Flatten::new`] does not compile. Exact, no events, no layer index (depth 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Flatten<X, const N: usize>(PhantomData<fn() -> X>);

impl<X: Tensor, const N: usize> Flatten<X, N> {
    const SHAPE_OK: () = assert!(
        X::LEN == N,
        "Flatten: N must be the number of values in the input"
    );

    /// The layer. Does not compile if `N` is not the input's size.
    pub fn new() -> Self {
        let () = Self::SHAPE_OK;
        Flatten(PhantomData)
    }
}

impl<X: Tensor, const N: usize> Default for Flatten<X, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Scalar, X: Tensor<Elem = S>, const N: usize> Params<S> for Flatten<X, N> {
    fn depth(&self) -> usize {
        0
    }
    fn visit(&mut self, _at: usize, _f: &mut dyn FnMut(ParamTensor<'_, S>)) {}
}

impl<S: Scalar, X: Tensor<Elem = S>, const N: usize> Layer<S> for Flatten<X, N> {
    type Input = X;
    type Output = [S; N];

    fn forward<R, P>(&mut self, x: &X, _at: usize, _r: &mut R, _p: &mut P) -> [S; N]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut y = [S::ZERO; N];
        for (o, &v) in y.iter_mut().zip(x.flat()) {
            *o = v;
        }
        y
    }

    fn backward<R, P>(&mut self, dy: &[S; N], _at: usize, _r: &mut R, _p: &mut P) -> X
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let mut dx = X::zeros();
        for (o, &v) in dx.flat_mut().iter_mut().zip(dy) {
            *o = v;
        }
        dx
    }

    fn zero_grad(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::I16F16;
    use crate::flags::Flags;
    use crate::probe::EventCounts;
    use crate::round::NearestEven;
    use std::vec;

    #[test]
    fn a_hand_computed_convolution_and_its_gradients() {
        let mut conv = Conv2d::<f64, 1, 3, 3, 1, 2, 2, 2>::new(Act::Identity);
        conv.weight = [[[[1.0, 2.0], [3.0, 4.0]]]];
        conv.bias = [0.5];
        let x = [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]];
        let y = conv.forward(&x, 0, &mut NearestEven, &mut ());
        assert_eq!(y, [[[37.5, 47.5], [67.5, 77.5]]]);
        let dx = conv.backward(&[[[1.0; 2]; 2]], 0, &mut NearestEven, &mut ());
        assert_eq!(conv.grad_weight, [[[[12.0, 16.0], [24.0, 28.0]]]]);
        assert_eq!(conv.grad_bias, [4.0]);
        assert_eq!(dx, [[[1.0, 3.0, 2.0], [4.0, 10.0, 6.0], [3.0, 7.0, 4.0]]]);
        // Gradients accumulate until zero_grad.
        conv.backward(&[[[1.0; 2]; 2]], 0, &mut NearestEven, &mut ());
        assert_eq!(conv.grad_bias, [8.0]);
        conv.zero_grad();
        assert_eq!(conv.grad_bias, [0.0]);
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn padding_and_stride_pick_the_right_inputs() {
        // A 3x3 kernel with a single 1 at (ky, kx) copies x[2·oy + ky − 1][2·ox + kx − 1], or 0 in the padding.
        for (ky, kx) in [(0, 0), (1, 1), (2, 0), (0, 2)] {
            let mut conv = Conv2d::<f64, 1, 5, 5, 1, 3, 3, 3, 2, 1>::new(Act::Identity);
            conv.weight[0][0][ky][kx] = 1.0;
            let mut x = [[[0.0; 5]; 5]];
            for (i, row) in x[0].iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (10 * i + j + 1) as f64;
                }
            }
            let y = conv.forward(&x, 0, &mut NearestEven, &mut ());
            for oy in 0..3 {
                for ox in 0..3 {
                    let (iy, ix) = ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                    let want = if (0..5).contains(&iy) && (0..5).contains(&ix) {
                        x[0][iy as usize][ix as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(y[0][oy][ox], want, "offset ({ky}, {kx}) at ({oy}, {ox})");
                }
            }
            // Backward sends each output's gradient to the input it copied.
            let dx = conv.backward(&y, 0, &mut NearestEven, &mut ());
            let copied: f64 = y.flat().iter().map(|v| v * v).sum();
            let back: f64 = dx.flat().iter().zip(x.flat()).map(|(d, x)| d * x).sum();
            assert_eq!(back, copied);
        }
        let mut c1 = Conv1d::<f64, 2, 5, 1, 3, 5, 1, 1>::new(Act::Identity);
        c1.weight = [[[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]];
        let y = c1.forward(
            &[[1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 20.0, 30.0, 40.0, 50.0]],
            0,
            &mut NearestEven,
            &mut (),
        );
        assert_eq!(y, [[41.0, 62.0, 83.0, 104.0, 5.0]]);
    }

    #[test]
    fn fixed_point_convolution_rounds_each_output_once() {
        // Products of 2^-9 and 3·2^-9 are far below one LSB each; only their exact sum survives rounding.
        let q = |v: f64| I16F16::from_f64(v, &mut NearestEven).0;
        let mut conv = Conv2d::<I16F16, 2, 3, 3, 1, 3, 1, 1>::new(Act::Identity);
        conv.weight = [[[[q(1.0 / 512.0); 3]; 3]; 2]];
        let x = [[[q(3.0 / 512.0); 3]; 3]; 2];
        let mut events = EventCounts::default();
        let y = conv.forward(
            &x,
            0,
            &mut NearestEven,
            &mut super::super::Pooled(&mut events),
        );
        let exact: f64 = 18.0 * 3.0 / (512.0 * 512.0);
        let lsb = 1.0 / 65536.0;
        assert_eq!(y[0][0][0].to_f64(), (exact / lsb).round_ties_even() * lsb);
        assert_eq!(events.values, 2, "one value and its activation");
    }

    #[test]
    fn a_fixed_point_sum_that_would_wrap_its_lanes_saturates_as_the_exact_sum_does() {
        // 72 terms (8 channels × 3 × 3) of 1.34·10¹⁷ each (raw, 32 fraction bits): 9.6·10¹⁸ wraps a 64-bit
        // lane. The quietness test must count all 72 (c·kh·kw; 33 or 27 terms would pass it) and take the
        // exact path; the exact sum saturates.
        let v = I16F16::from_f64(5585.0, &mut NearestEven).0;
        let mut conv = Conv2d::<I16F16, 8, 3, 3, 1, 3, 1, 1>::new(Act::Identity);
        conv.weight = [[[[v; 3]; 3]; 8]];
        let x = [[[v; 3]; 3]; 8];
        let y = conv.forward(&x, 0, &mut NearestEven, &mut ());
        assert_eq!(y[0][0][0], I16F16::MAX);
        let mut events = EventCounts::default();
        let y = conv.forward(
            &x,
            0,
            &mut NearestEven,
            &mut super::super::Pooled(&mut events),
        );
        assert_eq!((y[0][0][0], events.overflow), (I16F16::MAX, 1));
    }

    #[test]
    fn fixed_point_backward_sums_that_would_wrap_their_lanes_saturate_as_the_exact_sums_do() {
        // dx: the centre of a 5×5 input meets all 9 taps of 8 filters, 72 terms of 1.34·10¹⁷ (raw) that wrap
        // a 64-bit lane; f·kh·kw counts them, f·kh + kw or (f + kh)·kw would not.
        let v = I16F16::from_f64(5585.0, &mut NearestEven).0;
        let mut conv = Conv2d::<I16F16, 1, 5, 5, 8, 3, 3, 3>::new(Act::Identity);
        conv.weight = [[[[v; 3]; 3]; 1]; 8];
        conv.forward(&[[[v; 5]; 5]], 0, &mut NearestEven, &mut ());
        let dx = conv.backward(&[[[v; 3]; 3]; 8], 0, &mut NearestEven, &mut ());
        assert_eq!(dx[0][2][2], I16F16::MAX);
        // ∂w: a 1×1 kernel over a 9×9 output sums 81 terms of 1.6·10¹⁷ (raw) into each weight's gradient:
        // oh·ow counts them, oh + ow would not.
        let v = I16F16::from_f64(6104.0, &mut NearestEven).0;
        let mut conv = Conv2d::<I16F16, 1, 9, 9, 1, 1, 9, 9>::new(Act::Identity);
        conv.forward(&[[[v; 9]; 9]], 0, &mut NearestEven, &mut ());
        conv.backward(&[[[v; 9]; 9]], 0, &mut NearestEven, &mut ());
        assert_eq!(conv.grad_weight[0][0][0][0], I16F16::MAX);
    }

    #[test]
    fn a_weight_gradients_old_value_is_one_more_term_of_its_sum() {
        // Two products of 2⁶² − 2³¹ (raw, 32 fraction bits) and the old value I16F16::MAX (2⁴⁷ at 32 fraction
        // bits) pass 2⁶³: counted as 3 terms (oh·ow + 1) the sum is not quiet and takes the exact path, which saturates.
        // Counted as 1 (oh·ow − 1) it would pass the quietness test and wrap its lane.
        let x = I16F16::from_bits(i32::MIN + 1);
        let mut conv = Conv2d::<I16F16, 1, 1, 2, 1, 1, 1, 2>::new(Act::Identity);
        conv.forward(&[[[x; 2]]], 0, &mut NearestEven, &mut ());
        conv.grad_weight = [[[[I16F16::MAX]]]];
        conv.backward(&[[[I16F16::MIN; 2]]], 0, &mut NearestEven, &mut ());
        assert_eq!(conv.grad_weight[0][0][0][0], I16F16::MAX);
    }

    #[test]
    fn init_uses_pytorchs_convolution_fans() {
        use rand_core::SeedableRng;
        // PyTorch's fans for a convolution weight (out, in, *kernel): the channels times the receptive field.
        // Xavier uses fan_in + fan_out and the standard init fan_in alone, so each fan shows in the values.
        let (w, b) = (Init::XavierUniform { gain: 1.0 }, Init::Standard);
        let seeded = || rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(7);
        let want = |n: usize, fan_in: usize, fan_out: usize| {
            let (mut rng, mut v, mut bias) = (seeded(), [0.0f64; 54], [0.0f64; 2]);
            init_slice(
                &mut v[..n],
                &w,
                fan_in,
                fan_out,
                &mut rng,
                &mut NearestEven,
                &mut (),
            )
            .unwrap();
            init_slice(
                &mut bias,
                &b,
                fan_in,
                fan_out,
                &mut rng,
                &mut NearestEven,
                &mut (),
            )
            .unwrap();
            (v, bias)
        };
        let mut c2 = Conv2d::<f64, 3, 5, 5, 2, 3, 3, 3>::new(Act::Identity);
        c2.init(&w, &b, &mut seeded(), &mut NearestEven, &mut ())
            .unwrap();
        let (v, bias) = want(54, 27, 18);
        assert_eq!(
            c2.weight.as_flattened().as_flattened().as_flattened(),
            &v[..]
        );
        assert_eq!(c2.bias, bias);
        let mut c1 = Conv1d::<f64, 3, 9, 2, 3, 7>::new(Act::Identity);
        c1.init(&w, &b, &mut seeded(), &mut NearestEven, &mut ())
            .unwrap();
        let (v, bias) = want(18, 9, 6);
        assert_eq!(c1.weight.as_flattened().as_flattened(), &v[..18]);
        assert_eq!(c1.bias, bias);
        let orthogonal = Init::Orthogonal { gain: 1.0 };
        for got in [
            c2.init(&orthogonal, &b, &mut seeded(), &mut NearestEven, &mut ()),
            c1.init(&orthogonal, &b, &mut seeded(), &mut NearestEven, &mut ()),
        ] {
            assert_eq!(got, Err(InitError::NeedsMatrix));
        }
    }

    #[test]
    fn a_layers_pre_activations_depth_and_gradients_reset() {
        // ReLU makes the pre-activation differ from the output where it is negative.
        let mut c2 = Conv2d::<f64, 1, 2, 2, 1, 2, 1, 1>::new(Act::Relu);
        c2.weight = [[[[1.0, -2.0], [0.5, 0.0]]]];
        assert_eq!(
            c2.forward(&[[[1.0, 2.0], [4.0, 8.0]]], 0, &mut NearestEven, &mut ()),
            [[[0.0]]]
        );
        assert_eq!(c2.pre_activation(), &[[[-1.0]]]);
        let mut c1 = Conv1d::<f64, 1, 3, 1, 2, 2>::new(Act::Relu);
        c1.weight = [[[1.0, -1.0]]];
        c1.bias = [0.5];
        let y = c1.forward(&[[3.0, 1.0, 2.0]], 0, &mut NearestEven, &mut ());
        assert_eq!((y, c1.pre_activation()), ([[2.5, 0.0]], &[[2.5, -0.5]]));
        assert_eq!((c2.depth(), c1.depth()), (1, 1));
        let dx = c1.backward(&[[1.0, 1.0]], 0, &mut NearestEven, &mut ());
        assert_eq!(
            dx,
            [[1.0, -1.0, 0.0]],
            "the ReLU passes only the first output's gradient"
        );
        assert_eq!((c1.grad_weight, c1.grad_bias), ([[[3.0, 1.0]]], [1.0]));
        c1.zero_grad();
        assert_eq!((c1.grad_weight, c1.grad_bias), ([[[0.0; 2]]], [0.0]));
        // A filter of a 3-channel, width-3 Conv1d is one unit of C·K = 9 values.
        let mut c1 = Conv1d::<f64, 3, 9, 2, 3, 7>::new(Act::Identity);
        let mut tensors = [("", 0, 0); 2];
        let mut k = 0;
        c1.visit(4, &mut |t| {
            assert_eq!(t.layer, 4);
            if let Some(slot) = tensors.get_mut(k) {
                *slot = (t.name, t.unit, t.value.len());
            }
            k += 1;
        });
        assert_eq!((k, tensors), (2, [("weight", 9, 18), ("bias", 1, 2)]));
    }

    #[test]
    fn shape_checks_count_the_window_positions() {
        // An independent count: the start positions p with p·stride + k ≤ n + 2·pad.
        let count = |n: usize, k: usize, stride: usize, pad: usize| {
            (0..=n + 2 * pad)
                .filter(|&p| p * stride + k <= n + 2 * pad)
                .count()
        };
        for n in 0..7 {
            for k in 0..5 {
                for stride in 0..4 {
                    for pad in 0..4 {
                        let positions = if stride == 0 {
                            0
                        } else {
                            count(n, k, stride, pad)
                        };
                        for out in 0..9 {
                            let fits = k >= 1
                                && stride >= 1
                                && 2 * pad <= k
                                && out >= 1
                                && out == positions;
                            assert_eq!(
                                window_fits(n, k, stride, pad, out),
                                fits,
                                "{n} {k} {stride} {pad} {out}"
                            );
                        }
                    }
                }
            }
        }
        for (h, w) in [(0, 3), (3, 0), (4, 5), (5, 4), (6, 6)] {
            for k in 0..5 {
                for (oh, ow) in (0..8).flat_map(|a| (0..8).map(move |b| (a, b))) {
                    let fits = k >= 1
                        && (oh, ow) == (count(h, k, k, 0), count(w, k, k, 0))
                        && oh >= 1
                        && ow >= 1;
                    assert_eq!(pool_fits(h, w, k, oh, ow), fits, "{h} {w} {k} {oh} {ow}");
                }
            }
        }
    }

    #[test]
    fn max_pool_takes_the_first_maximum_and_propagates_nan() {
        let mut pool = MaxPool2d::<f32, 1, 5, 4, 2, 2, 2>::new();
        let x = [[
            [1.0, 3.0, 0.0, 0.0],
            [3.0, 2.0, f32::NAN, 5.0],
            [0.0; 4],
            [-1.0, -2.0, 7.0, 7.0],
            [9.0; 4],
        ]];
        let y = pool.forward(&x, 0, &mut NearestEven, &mut ());
        assert_eq!(y[0][0][0], 3.0);
        assert!(y[0][0][1].is_nan());
        assert_eq!((y[0][1][0], y[0][1][1]), (0.0, 7.0));
        let dx = pool.backward(&[[[1.0, 2.0], [3.0, 4.0]]], 0, &mut NearestEven, &mut ());
        let mut want = [[[0.0f32; 4]; 5]];
        want[0][0][1] = 1.0; // the first 3, not the one below it
        want[0][1][2] = 2.0; // the NaN
        want[0][2][0] = 3.0; // the first 0 of four
        want[0][3][2] = 4.0; // the first 7
        assert_eq!(dx, want, "the last row is in no window");
    }

    #[test]
    fn average_pooling_is_the_exact_mean_rounded_once() {
        let q = |v: f64| I16F16::from_f64(v, &mut NearestEven).0;
        let lsb = 1.0 / 65536.0;
        // Nine values whose sum is 10 LSB: the mean 10/9 LSB rounds to 1 LSB, once.
        let mut x = [[[q(0.0); 3]; 3]; 1];
        x[0][0][0] = q(2.0 * lsb);
        x[0][2][2] = q(8.0 * lsb);
        let mut g = GlobalAvgPool::<I16F16, 1, 3, 3>::new();
        assert_eq!(g.forward(&x, 0, &mut NearestEven, &mut ())[0].to_f64(), lsb);
        let mut a = AvgPool2d::<f64, 1, 4, 5, 2, 2, 2>::new();
        let xf = [[
            [1.0, 2.0, 3.0, 4.0, 99.0],
            [5.0, 6.0, 7.0, 8.0, 99.0],
            [0.0, 0.0, 1.0, 1.0, 99.0],
            [0.0, 4.0, 1.0, 1.0, 99.0],
        ]];
        assert_eq!(
            a.forward(&xf, 0, &mut NearestEven, &mut ()),
            [[[3.5, 5.5], [1.0, 1.0]]]
        );
        let dx = a.backward(&[[[4.0, 8.0], [-4.0, 0.0]]], 0, &mut NearestEven, &mut ());
        assert_eq!(dx[0][0], [1.0, 1.0, 2.0, 2.0, 0.0]);
        assert_eq!(dx[0][3], [-1.0, -1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn average_pooling_spreads_each_gradient_over_its_window_only() {
        // Two channels with a row and a column that no window covers: each output is its window's mean, each
        // input gets its window's gradient over kh·kw, the uncovered ones 0, and no channel reads another's.
        let dy = [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]];
        let mut a = AvgPool2d::<f64, 2, 5, 5, 2, 2, 2>::new();
        let mut x = [[[0.0; 5]; 5]; 2];
        for (k, v) in x
            .as_flattened_mut()
            .as_flattened_mut()
            .iter_mut()
            .enumerate()
        {
            *v = k as f64;
        }
        let y = a.forward(&x, 0, &mut NearestEven, &mut ());
        for (c, plane) in y.iter().enumerate() {
            for (oy, row) in plane.iter().enumerate() {
                for (ox, &v) in row.iter().enumerate() {
                    let (iy, ix) = (2 * oy, 2 * ox);
                    let sum =
                        x[c][iy][ix] + x[c][iy][ix + 1] + x[c][iy + 1][ix] + x[c][iy + 1][ix + 1];
                    assert_eq!(v, sum / 4.0, "({c}, {oy}, {ox})");
                }
            }
        }
        let dx = a.backward(&dy, 0, &mut NearestEven, &mut ());
        for (c, plane) in dx.iter().enumerate() {
            for (iy, row) in plane.iter().enumerate() {
                for (ix, &v) in row.iter().enumerate() {
                    let want = if iy < 4 && ix < 4 {
                        dy[c][iy / 2][ix / 2] / 4.0
                    } else {
                        0.0
                    };
                    assert_eq!(v, want, "({c}, {iy}, {ix})");
                }
            }
        }
        let mut g = GlobalAvgPool::<f64, 2, 3, 3>::new();
        g.forward(&[[[0.0; 3]; 3]; 2], 0, &mut NearestEven, &mut ());
        let dx = g.backward(&[9.0, -18.0], 0, &mut NearestEven, &mut ());
        assert_eq!(dx, [[[1.0; 3]; 3], [[-2.0; 3]; 3]]);
    }

    #[test]
    fn flatten_is_row_major_and_exact_both_ways() {
        let mut fl = Flatten::<[[[f32; 2]; 2]; 2], 8>::new();
        let x = [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]];
        let y = fl.forward(&x, 0, &mut NearestEven, &mut ());
        assert_eq!(y, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(fl.backward(&y, 0, &mut NearestEven, &mut ()), x);
        assert_eq!(Params::<f32>::depth(&fl), 0);
    }

    #[test]
    fn a_cnn_composes_by_tuples_and_counts_its_parameters() {
        type Head = (Flatten<[[[f32; 4]; 4]; 4], 64>, crate::Dense<f32, 64, 10>);
        type Cnn = (
            Conv2d<f32, 1, 8, 8, 4, 3, 8, 8, 1, 1>,
            (MaxPool2d<f32, 4, 8, 8, 2, 4, 4>, Head),
        );
        let mut net: Cnn = (
            Conv2d::new(Act::Relu),
            (
                MaxPool2d::new(),
                (Flatten::new(), crate::Dense::new(Act::Identity)),
            ),
        );
        assert_eq!(crate::param_count(&mut net), 4 * 9 + 4 + 64 * 10 + 10);
        assert_eq!(net.depth(), 3);
        let y = net.forward(&[[[0.5; 8]; 8]], 0, &mut NearestEven, &mut ());
        assert_eq!(y, [0.0; 10]);
        let mut units = [0usize; 2];
        net.visit(0, &mut |t| {
            if t.name == "weight" && units[0] == 0 {
                units = [t.unit, t.value.len()];
            }
        });
        assert_eq!(units, [9, 36]);
    }

    /// Every record, in order, under an active probe.
    struct Record(std::vec::Vec<Flags>);

    impl Probe for Record {
        fn record(&mut self, flags: Flags) {
            self.0.push(flags);
        }
    }

    /// Under an active probe, f32 operands whose products are all normal take the fast lanes even when sums
    /// overflow; the forward and input-gradient kernels then give the exact path's values and its records, in
    /// the same order (each non-finite output's events from its exact sum, in its place).
    #[test]
    fn an_active_probes_records_are_the_exact_paths_on_the_fast_lanes() {
        fn case(g: Geom, seed: u64) {
            let mut state = seed;
            let mut next = move || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                match state >> 61 {
                    0 => u * 3e38,
                    1 if state & 0xff == 0 => f32::NAN,
                    _ => u + 0.5,
                }
            };
            let wn = g.f * g.c * g.kh * g.kw;
            let w: std::vec::Vec<f32> = (0..wn).map(|_| next()).collect();
            let x: std::vec::Vec<f32> = (0..g.c * g.h * g.w).map(|_| next()).collect();
            let b: std::vec::Vec<f32> = (0..g.f).map(|_| next()).collect();
            let dz: std::vec::Vec<f32> = (0..g.f * g.oh * g.ow).map(|_| next()).collect();
            assert!(fast::<f32, Record>(&w, f32::bound(&x), g.c * g.kh * 3));
            assert!(fast::<f32, Record>(&w, f32::bound(&dz), g.f * g.kh * 3));

            let (mut z, mut ze) = (vec![0.0f32; dz.len()], vec![0.0f32; dz.len()]);
            let (mut p, mut pe) = (Record(vec![]), Record(vec![]));
            g.forward::<f32, _, _, 3>(&x, &w, &b, &mut z, &mut NearestEven, &mut p);
            exact_outputs(&mut ze, &mut NearestEven, &mut pe, |k| {
                g.z_exact(&x, &w, &b, k)
            });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<std::vec::Vec<_>>();
            assert_eq!(bits(&z), bits(&ze));
            assert_eq!(p.0, pe.0);
            assert!(z.iter().any(|v| v.is_finite()) && z.iter().any(|v| !v.is_finite()));
            assert!(p.0.iter().any(|f| f.contains(Flags::OVERFLOW)));

            let (mut dx, mut dxe) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
            let (mut p, mut pe) = (Record(vec![]), Record(vec![]));
            g.backward_input::<f32, _, _, 3>(&w, &dz, &mut dx, &mut NearestEven, &mut p);
            exact_outputs(&mut dxe, &mut NearestEven, &mut pe, |k| {
                g.dx_exact(&w, &dz, k)
            });
            assert_eq!(bits(&dx), bits(&dxe));
            assert_eq!(p.0, pe.0);
            assert!(dx.iter().any(|v| v.is_finite()) && dx.iter().any(|v| !v.is_finite()));
        }
        let geom =
            |(c, h, w, f, oh, ow, stride): (usize, usize, usize, usize, usize, usize, usize)| {
                Geom {
                    c,
                    h,
                    w,
                    f,
                    oh,
                    ow,
                    kh: 3,
                    kw: 3,
                    stride,
                    pad_h: 1,
                    pad_w: 1,
                }
            };
        for seed in 1..4 {
            // Rows wider than a block of 16 positions at stride 2, and at stride 1 (`same`).
            case(geom((2, 4, 37, 2, 2, 19, 2)), seed);
            case(geom((1, 3, 20, 2, 3, 20, 1)), seed);
        }
    }
}
