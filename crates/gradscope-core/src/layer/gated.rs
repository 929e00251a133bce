//! LSTM and GRU cells unrolled over `T` steps with full backpropagation through time (PyTorch's equations and
//! gate order). Float-only by design: both implement [`Layer`] for `S: Float`, so a fixed-point LSTM is a
//! compile error naming the bound.
//!
//! LSTM (gates i, f, g, o): `i = σ(aᵢ)`, `f = σ(a_f)`, `g = tanh(a_g)`, `o = σ(a_o)` with
//! `a = W_ih x + W_hh h + b`; `c′ = f⊙c + i⊙g`, `h′ = o⊙tanh(c′)`. One bias per gate (PyTorch's `b_ih + b_hh`
//! is the same function with two copies).
//!
//! GRU (gates r, z, n): `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(…)`,
//! `n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))`, `h′ = (1 − z)⊙n + z⊙h`.
//!
//! Both map the sequence `[[S; I]; T]` to all hidden states `[[S; H]; T]` and report `∂L/∂h_t` per step to
//! [`Probes::step`]. Non-finite or subnormal outputs (forward states, backward input gradients) are reported
//! to the probes.

use super::{Layer, Phase, Probes};
use crate::flags::Flags;
use crate::net::{ParamTensor, Params};
use crate::round::Rounding;
use crate::scalar::Float;

fn z<S: Float>() -> S {
    S::c(0.0)
}

/// `out += W x`.
fn mv_add<S: Float, const I: usize, const H: usize>(w: &[[S; I]; H], x: &[S; I], out: &mut [S; H]) {
    for (o, row) in out.iter_mut().zip(w) {
        *o = *o
            + row
                .iter()
                .zip(x)
                .fold(z::<S>(), |a, (&wv, &xv)| a + wv * xv);
    }
}

/// `out += Wᵀ d`.
fn mvt_add<S: Float, const I: usize, const H: usize>(
    w: &[[S; I]; H],
    d: &[S; H],
    out: &mut [S; I],
) {
    for (row, &dv) in w.iter().zip(d) {
        for (o, &wv) in out.iter_mut().zip(row) {
            *o = *o + wv * dv;
        }
    }
}

/// `G += d xᵀ`.
fn outer_add<S: Float, const I: usize, const H: usize>(
    g: &mut [[S; I]; H],
    d: &[S; H],
    x: &[S; I],
) {
    for (row, &dv) in g.iter_mut().zip(d) {
        for (gv, &xv) in row.iter_mut().zip(x) {
            *gv = *gv + dv * xv;
        }
    }
}

fn vec_add<S: Float, const H: usize>(acc: &mut [S; H], d: &[S; H]) {
    for (a, &v) in acc.iter_mut().zip(d) {
        *a = *a + v;
    }
}

fn report<S: Float, P: Probes + ?Sized>(p: &mut P, layer: usize, phase: Phase, values: &[S]) {
    for v in values {
        let f = v.to_f64();
        p.record(
            layer,
            phase,
            Flags::when(!f.is_finite(), Flags::NONFINITE)
                | Flags::when(f != 0.0 && f.abs() < S::RESOLUTION, Flags::SUBNORMAL),
        );
    }
    p.signal(layer, phase, values);
}

fn flat<S, const A: usize, const B: usize, const C: usize>(x: &mut [[[S; A]; B]; C]) -> &mut [S] {
    x.as_flattened_mut().as_flattened_mut()
}

/// An LSTM with `I` inputs and `H` hidden units, unrolled over `T` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Lstm<S, const I: usize, const H: usize, const T: usize> {
    /// Input weights per gate (i, f, g, o): `weight_ih[gate][hidden][input]`.
    pub weight_ih: [[[S; I]; H]; 4],
    /// Recurrent weights per gate: `weight_hh[gate][hidden][hidden]`.
    pub weight_hh: [[[S; H]; H]; 4],
    /// Bias per gate.
    pub bias: [[S; H]; 4],
    /// Accumulated ∂L/∂weight_ih.
    pub grad_weight_ih: [[[S; I]; H]; 4],
    /// Accumulated ∂L/∂weight_hh.
    pub grad_weight_hh: [[[S; H]; H]; 4],
    /// Accumulated ∂L/∂bias.
    pub grad_bias: [[S; H]; 4],
    /// Initial hidden state.
    pub h0: [S; H],
    /// Initial cell state.
    pub c0: [S; H],
    xs: [[S; I]; T],
    hs: [[S; H]; T],
    cs: [[S; H]; T],
    gates: [[[S; H]; 4]; T],
}

/// A GRU with `I` inputs and `H` hidden units, unrolled over `T` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Gru<S, const I: usize, const H: usize, const T: usize> {
    /// Input weights per gate (r, z, n): `weight_ih[gate][hidden][input]`.
    pub weight_ih: [[[S; I]; H]; 3],
    /// Recurrent weights per gate: `weight_hh[gate][hidden][hidden]`.
    pub weight_hh: [[[S; H]; H]; 3],
    /// Input-side bias per gate.
    pub bias_ih: [[S; H]; 3],
    /// Recurrent-side bias per gate (`b_hn` sits inside `r⊙(…)`).
    pub bias_hh: [[S; H]; 3],
    /// Accumulated ∂L/∂weight_ih.
    pub grad_weight_ih: [[[S; I]; H]; 3],
    /// Accumulated ∂L/∂weight_hh.
    pub grad_weight_hh: [[[S; H]; H]; 3],
    /// Accumulated ∂L/∂bias_ih.
    pub grad_bias_ih: [[S; H]; 3],
    /// Accumulated ∂L/∂bias_hh.
    pub grad_bias_hh: [[S; H]; 3],
    /// Initial hidden state.
    pub h0: [S; H],
    xs: [[S; I]; T],
    hs: [[S; H]; T],
    /// Per step: r, z, n and W_hn h + b_hn.
    gates: [[[S; H]; 4]; T],
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Lstm<S, I, H, T> {
    /// An LSTM with zero weights and states.
    pub fn new() -> Self {
        let o = z::<S>();
        Lstm {
            weight_ih: [[[o; I]; H]; 4],
            weight_hh: [[[o; H]; H]; 4],
            bias: [[o; H]; 4],
            grad_weight_ih: [[[o; I]; H]; 4],
            grad_weight_hh: [[[o; H]; H]; 4],
            grad_bias: [[o; H]; 4],
            h0: [o; H],
            c0: [o; H],
            xs: [[o; I]; T],
            hs: [[o; H]; T],
            cs: [[o; H]; T],
            gates: [[[o; H]; 4]; T],
        }
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Default for Lstm<S, I, H, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Gru<S, I, H, T> {
    /// A GRU with zero weights and state.
    pub fn new() -> Self {
        let o = z::<S>();
        Gru {
            weight_ih: [[[o; I]; H]; 3],
            weight_hh: [[[o; H]; H]; 3],
            bias_ih: [[o; H]; 3],
            bias_hh: [[o; H]; 3],
            grad_weight_ih: [[[o; I]; H]; 3],
            grad_weight_hh: [[[o; H]; H]; 3],
            grad_bias_ih: [[o; H]; 3],
            grad_bias_hh: [[o; H]; 3],
            h0: [o; H],
            xs: [[o; I]; T],
            hs: [[o; H]; T],
            gates: [[[o; H]; 4]; T],
        }
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Default for Gru<S, I, H, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Params<S> for Lstm<S, I, H, T> {
    fn visit(&mut self, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(ParamTensor {
            value: flat(&mut self.weight_ih),
            grad: flat(&mut self.grad_weight_ih),
            unit: I,
        });
        f(ParamTensor {
            value: flat(&mut self.weight_hh),
            grad: flat(&mut self.grad_weight_hh),
            unit: H,
        });
        f(ParamTensor::vector(
            self.bias.as_flattened_mut(),
            self.grad_bias.as_flattened_mut(),
        ));
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Params<S> for Gru<S, I, H, T> {
    fn visit(&mut self, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(ParamTensor {
            value: flat(&mut self.weight_ih),
            grad: flat(&mut self.grad_weight_ih),
            unit: I,
        });
        f(ParamTensor {
            value: flat(&mut self.weight_hh),
            grad: flat(&mut self.grad_weight_hh),
            unit: H,
        });
        f(ParamTensor::vector(
            self.bias_ih.as_flattened_mut(),
            self.grad_bias_ih.as_flattened_mut(),
        ));
        f(ParamTensor::vector(
            self.bias_hh.as_flattened_mut(),
            self.grad_bias_hh.as_flattened_mut(),
        ));
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Layer<S> for Lstm<S, I, H, T> {
    type Input = [[S; I]; T];
    type Output = [[S; H]; T];

    fn depth(&self) -> usize {
        1
    }

    fn forward<R, P>(&mut self, x: &[[S; I]; T], at: usize, _r: &mut R, p: &mut P) -> [[S; H]; T]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        self.xs = *x;
        let (mut h, mut c) = (self.h0, self.c0);
        for (((xt, ht), ct), gt) in x
            .iter()
            .zip(self.hs.iter_mut())
            .zip(self.cs.iter_mut())
            .zip(self.gates.iter_mut())
        {
            for (k, g) in gt.iter_mut().enumerate() {
                let (Some(b), Some(wi), Some(wh)) = (
                    self.bias.get(k),
                    self.weight_ih.get(k),
                    self.weight_hh.get(k),
                ) else {
                    continue;
                };
                let mut a = *b;
                mv_add(wi, xt, &mut a);
                mv_add(wh, &h, &mut a);
                *g = a.map(|v| if k == 2 { v.tanh() } else { v.sigmoid() });
            }
            let [i, f, g, o] = *gt;
            for u in 0..H {
                let (Some(&iu), Some(&fu), Some(&gu), Some(&ou)) =
                    (i.get(u), f.get(u), g.get(u), o.get(u))
                else {
                    continue;
                };
                if let (Some(cu), Some(hu)) = (c.get_mut(u), h.get_mut(u)) {
                    *cu = fu * *cu + iu * gu;
                    *hu = ou * cu.tanh();
                }
            }
            *ht = h;
            *ct = c;
            report(p, at, Phase::Forward, &h);
        }
        self.hs
    }

    fn backward<R, P>(&mut self, dy: &[[S; H]; T], at: usize, _r: &mut R, p: &mut P) -> [[S; I]; T]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let o0 = z::<S>();
        let one = S::c(1.0);
        let mut dxs = [[o0; I]; T];
        let (mut dh_next, mut dc_next) = ([o0; H], [o0; H]);
        for t in (0..T).rev() {
            let (Some(dyt), Some(gt), Some(ct), Some(xt), Some(dxt)) = (
                dy.get(t),
                self.gates.get(t),
                self.cs.get(t),
                self.xs.get(t),
                dxs.get_mut(t),
            ) else {
                continue;
            };
            let (h_prev, c_prev) = match t.checked_sub(1) {
                Some(s) => (
                    self.hs.get(s).copied().unwrap_or(self.h0),
                    self.cs.get(s).copied().unwrap_or(self.c0),
                ),
                None => (self.h0, self.c0),
            };
            let [i, f, g, o] = *gt;
            let mut dh = *dyt;
            vec_add(&mut dh, &dh_next);
            p.step(at, t, &dh);
            let mut da = [[o0; H]; 4];
            let mut dc_prev = [o0; H];
            for u in 0..H {
                let get = |a: &[S; H]| a.get(u).copied().unwrap_or(o0);
                let (iu, fu, gu, ou, cu, cp, dhu) = (
                    get(&i),
                    get(&f),
                    get(&g),
                    get(&o),
                    get(ct),
                    get(&c_prev),
                    get(&dh),
                );
                let tc = cu.tanh();
                let dc = get(&dc_next) + dhu * ou * (one - tc * tc);
                let grads = [
                    dc * gu * iu * (one - iu),
                    dc * cp * fu * (one - fu),
                    dc * iu * (one - gu * gu),
                    dhu * tc * ou * (one - ou),
                ];
                for (dak, gk) in da.iter_mut().zip(grads) {
                    if let Some(v) = dak.get_mut(u) {
                        *v = gk;
                    }
                }
                if let Some(v) = dc_prev.get_mut(u) {
                    *v = dc * fu;
                }
            }
            let mut dh_prev = [o0; H];
            for k in 0..4 {
                let (Some(dak), Some(wi), Some(wh), Some(gwi), Some(gwh), Some(gb)) = (
                    da.get(k),
                    self.weight_ih.get(k),
                    self.weight_hh.get(k),
                    self.grad_weight_ih.get_mut(k),
                    self.grad_weight_hh.get_mut(k),
                    self.grad_bias.get_mut(k),
                ) else {
                    continue;
                };
                vec_add(gb, dak);
                outer_add(gwi, dak, xt);
                outer_add(gwh, dak, &h_prev);
                mvt_add(wi, dak, dxt);
                mvt_add(wh, dak, &mut dh_prev);
            }
            report(p, at, Phase::Backward, dxt);
            dh_next = dh_prev;
            dc_next = dc_prev;
        }
        dxs
    }

    fn zero_grad(&mut self) {
        let o = z::<S>();
        self.grad_weight_ih = [[[o; I]; H]; 4];
        self.grad_weight_hh = [[[o; H]; H]; 4];
        self.grad_bias = [[o; H]; 4];
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Layer<S> for Gru<S, I, H, T> {
    type Input = [[S; I]; T];
    type Output = [[S; H]; T];

    fn depth(&self) -> usize {
        1
    }

    fn forward<R, P>(&mut self, x: &[[S; I]; T], at: usize, _r: &mut R, p: &mut P) -> [[S; H]; T]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        self.xs = *x;
        let one = S::c(1.0);
        let mut h = self.h0;
        for ((xt, ht), gt) in x.iter().zip(self.hs.iter_mut()).zip(self.gates.iter_mut()) {
            let [wir, wiz, win] = &self.weight_ih;
            let [whr, whz, whn] = &self.weight_hh;
            let [bir, biz, bin] = &self.bias_ih;
            let [bhr, bhz, bhn] = &self.bias_hh;
            let affine2 = |wx: &[[S; I]; H], bx: &[S; H], wh: &[[S; H]; H], bh: &[S; H]| {
                let mut a = *bx;
                vec_add(&mut a, bh);
                mv_add(wx, xt, &mut a);
                mv_add(wh, &h, &mut a);
                a
            };
            let r = affine2(wir, bir, whr, bhr).map(|v| v.sigmoid());
            let zg = affine2(wiz, biz, whz, bhz).map(|v| v.sigmoid());
            let mut hn = *bhn;
            mv_add(whn, &h, &mut hn);
            let mut an = *bin;
            mv_add(win, xt, &mut an);
            let mut n = [z::<S>(); H];
            for (((nv, &a), &rv), &hv) in n.iter_mut().zip(&an).zip(&r).zip(&hn) {
                *nv = (a + rv * hv).tanh();
            }
            for ((hv, &zv), &nv) in h.iter_mut().zip(&zg).zip(&n) {
                *hv = (one - zv) * nv + zv * *hv;
            }
            *gt = [r, zg, n, hn];
            *ht = h;
            report(p, at, Phase::Forward, &h);
        }
        self.hs
    }

    fn backward<R, P>(&mut self, dy: &[[S; H]; T], at: usize, _r: &mut R, p: &mut P) -> [[S; I]; T]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        let o0 = z::<S>();
        let one = S::c(1.0);
        let mut dxs = [[o0; I]; T];
        let mut dh_next = [o0; H];
        for t in (0..T).rev() {
            let (Some(dyt), Some(gt), Some(xt), Some(dxt)) =
                (dy.get(t), self.gates.get(t), self.xs.get(t), dxs.get_mut(t))
            else {
                continue;
            };
            let h_prev = match t.checked_sub(1) {
                Some(s) => self.hs.get(s).copied().unwrap_or(self.h0),
                None => self.h0,
            };
            let [r, zg, n, hn] = *gt;
            let mut dh = *dyt;
            vec_add(&mut dh, &dh_next);
            p.step(at, t, &dh);
            let (mut dar, mut daz, mut dan, mut dhn) = ([o0; H], [o0; H], [o0; H], [o0; H]);
            let mut dh_prev = [o0; H];
            for u in 0..H {
                let get = |a: &[S; H]| a.get(u).copied().unwrap_or(o0);
                let (ru, zu, nu, hnu, hp, d) =
                    (get(&r), get(&zg), get(&n), get(&hn), get(&h_prev), get(&dh));
                let da_n = d * (one - zu) * (one - nu * nu);
                let vals = [
                    da_n * hnu * ru * (one - ru),
                    d * (hp - nu) * zu * (one - zu),
                    da_n,
                    da_n * ru,
                    d * zu,
                ];
                for (dst, v) in [&mut dar, &mut daz, &mut dan, &mut dhn, &mut dh_prev]
                    .into_iter()
                    .zip(vals)
                {
                    if let Some(x) = dst.get_mut(u) {
                        *x = v;
                    }
                }
            }
            // Input side: every gate's pre-activation gradient; recurrent side: r and z, and n through r⊙(…).
            for (k, dk) in [dar, daz, dan].iter().enumerate() {
                if let (Some(wi), Some(gwi), Some(gbi)) = (
                    self.weight_ih.get(k),
                    self.grad_weight_ih.get_mut(k),
                    self.grad_bias_ih.get_mut(k),
                ) {
                    vec_add(gbi, dk);
                    outer_add(gwi, dk, xt);
                    mvt_add(wi, dk, dxt);
                }
            }
            for (k, dk) in [dar, daz, dhn].iter().enumerate() {
                if let (Some(wh), Some(gwh), Some(gbh)) = (
                    self.weight_hh.get(k),
                    self.grad_weight_hh.get_mut(k),
                    self.grad_bias_hh.get_mut(k),
                ) {
                    vec_add(gbh, dk);
                    outer_add(gwh, dk, &h_prev);
                    mvt_add(wh, dk, &mut dh_prev);
                }
            }
            report(p, at, Phase::Backward, dxt);
            dh_next = dh_prev;
        }
        dxs
    }

    fn zero_grad(&mut self) {
        let o = z::<S>();
        self.grad_weight_ih = [[[o; I]; H]; 3];
        self.grad_weight_hh = [[[o; H]; H]; 3];
        self.grad_bias_ih = [[o; H]; 3];
        self.grad_bias_hh = [[o; H]; 3];
    }
}
