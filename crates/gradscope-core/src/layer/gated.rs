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

use super::{At, Layer, Phase, Probes};
use crate::matrix::{add_assign, affine, affine_pair, matvec_t_add, outer_acc};
use crate::net::{ParamTensor, Params};
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::{Float, float_value_flags};

fn z<S: Float>() -> S {
    S::c(0.0)
}

/// `f` applied to every element, each result's events reported to `p`.
fn map_flagged<S: Float, const H: usize, P: Probe + ?Sized>(
    x: &[S; H],
    p: &mut P,
    f: impl Fn(S) -> S,
) -> [S; H] {
    x.map(|v| {
        let y = f(v);
        p.record(float_value_flags(y));
        y
    })
}

/// Per-gate biases `b[gate][unit]` as one vector (PyTorch's layout), a unit per element.
fn gate_bias<'a, S: Float, const H: usize, const G: usize>(
    at: usize,
    name: &'static str,
    b: &'a mut [[S; H]; G],
    g: &'a mut [[S; H]; G],
) -> ParamTensor<'a, S> {
    ParamTensor::vector(at, b.as_flattened_mut(), g.as_flattened_mut()).named(name)
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
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(
            ParamTensor::blocks(at, &mut self.weight_ih, &mut self.grad_weight_ih)
                .named("weight_ih"),
        );
        f(
            ParamTensor::blocks(at, &mut self.weight_hh, &mut self.grad_weight_hh)
                .named("weight_hh"),
        );
        f(gate_bias(at, "bias", &mut self.bias, &mut self.grad_bias));
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Params<S> for Gru<S, I, H, T> {
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(
            ParamTensor::blocks(at, &mut self.weight_ih, &mut self.grad_weight_ih)
                .named("weight_ih"),
        );
        f(
            ParamTensor::blocks(at, &mut self.weight_hh, &mut self.grad_weight_hh)
                .named("weight_hh"),
        );
        f(gate_bias(
            at,
            "bias_ih",
            &mut self.bias_ih,
            &mut self.grad_bias_ih,
        ));
        f(gate_bias(
            at,
            "bias_hh",
            &mut self.bias_hh,
            &mut self.grad_bias_hh,
        ));
    }
}

impl<S: Float, const I: usize, const H: usize, const T: usize> Layer<S> for Lstm<S, I, H, T> {
    type Input = [[S; I]; T];
    type Output = [[S; H]; T];

    fn forward<R, P>(&mut self, x: &[[S; I]; T], at_: usize, r: &mut R, p: &mut P) -> [[S; H]; T]
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
            let mut fp = At::new(&mut *p, at_, Phase::Forward);
            for (k, ((g, b), (wi, wh))) in gt
                .iter_mut()
                .zip(&self.bias)
                .zip(self.weight_ih.iter().zip(&self.weight_hh))
                .enumerate()
            {
                let mut a = [z::<S>(); H];
                affine_pair((wi, xt), (wh, &h), b, &mut a, r, &mut fp);
                *g = map_flagged(&a, &mut fp, |v| if k == 2 { v.tanh() } else { v.sigmoid() });
            }
            let [i, f, g, o] = *gt;
            for (((((cu, hu), &iu), &fu), &gu), &ou) in c
                .iter_mut()
                .zip(h.iter_mut())
                .zip(&i)
                .zip(&f)
                .zip(&g)
                .zip(&o)
            {
                *cu = fu * *cu + iu * gu;
                *hu = ou * cu.tanh();
                fp.record(float_value_flags(*cu) | float_value_flags(*hu));
            }
            *ht = h;
            *ct = c;
            p.signal(at_, Phase::Forward, &h);
        }
        self.hs
    }

    fn backward<R, P>(&mut self, dy: &[[S; H]; T], at_: usize, r: &mut R, p: &mut P) -> [[S; I]; T]
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
            add_assign(
                &mut dh,
                &dh_next,
                &mut At::new(&mut *p, at_, Phase::Backward),
            );
            p.step(at_, t, &dh);
            let mut da = [[o0; H]; 4];
            let mut dc_prev = [o0; H];
            {
                let mut bp = At::new(&mut *p, at_, Phase::Backward);
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
                            bp.record(float_value_flags(gk));
                        }
                    }
                    if let Some(v) = dc_prev.get_mut(u) {
                        *v = dc * fu;
                    }
                }
            }
            let mut dh_prev = [o0; H];
            for ((dak, (wi, wh)), ((gwi, gwh), gb)) in da
                .iter()
                .zip(self.weight_ih.iter().zip(&self.weight_hh))
                .zip(
                    self.grad_weight_ih
                        .iter_mut()
                        .zip(self.grad_weight_hh.iter_mut())
                        .zip(self.grad_bias.iter_mut()),
                )
            {
                let mut gp = At::new(&mut *p, at_, Phase::Grad);
                add_assign(gb, dak, &mut gp);
                outer_acc(gwi, dak, xt, r, &mut gp);
                outer_acc(gwh, dak, &h_prev, r, &mut gp);
                let mut bp = At::new(&mut *p, at_, Phase::Backward);
                matvec_t_add(wi, dak, dxt, r, &mut bp);
                matvec_t_add(wh, dak, &mut dh_prev, r, &mut bp);
            }
            p.signal(at_, Phase::Backward, dxt);
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

    fn forward<R, P>(&mut self, x: &[[S; I]; T], at_: usize, r: &mut R, p: &mut P) -> [[S; H]; T]
    where
        R: Rounding + ?Sized,
        P: Probes + ?Sized,
    {
        self.xs = *x;
        let one = S::c(1.0);
        let mut h = self.h0;
        for ((xt, ht), gt) in x.iter().zip(self.hs.iter_mut()).zip(self.gates.iter_mut()) {
            let mut fp = At::new(&mut *p, at_, Phase::Forward);
            let [wir, wiz, win] = &self.weight_ih;
            let [whr, whz, whn] = &self.weight_hh;
            let [bir, biz, bin] = &self.bias_ih;
            let [bhr, bhz, bhn] = &self.bias_hh;
            let mut gate = |wx: &[[S; I]; H], bx: &[S; H], wh: &[[S; H]; H], bh: &[S; H]| {
                let mut b = *bx;
                add_assign(&mut b, bh, &mut fp);
                let mut a = [z::<S>(); H];
                affine_pair((wx, xt), (wh, &h), &b, &mut a, r, &mut fp);
                map_flagged(&a, &mut fp, |v| v.sigmoid())
            };
            let rg = gate(wir, bir, whr, bhr);
            let zg = gate(wiz, biz, whz, bhz);
            let (mut hn, mut an) = ([z::<S>(); H], [z::<S>(); H]);
            affine(whn, &h, bhn, &mut hn, r, &mut fp);
            affine(win, xt, bin, &mut an, r, &mut fp);
            let mut n = [z::<S>(); H];
            for (((nv, &a), &rv), &hv) in n.iter_mut().zip(&an).zip(&rg).zip(&hn) {
                *nv = (a + rv * hv).tanh();
                fp.record(float_value_flags(*nv));
            }
            for ((hv, &zv), &nv) in h.iter_mut().zip(&zg).zip(&n) {
                *hv = (one - zv) * nv + zv * *hv;
                fp.record(float_value_flags(*hv));
            }
            *gt = [rg, zg, n, hn];
            *ht = h;
            p.signal(at_, Phase::Forward, &h);
        }
        self.hs
    }

    fn backward<R, P>(&mut self, dy: &[[S; H]; T], at_: usize, r: &mut R, p: &mut P) -> [[S; I]; T]
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
            let [r_, zg, n, hn] = *gt;
            let mut dh = *dyt;
            add_assign(
                &mut dh,
                &dh_next,
                &mut At::new(&mut *p, at_, Phase::Backward),
            );
            p.step(at_, t, &dh);
            let (mut dar, mut daz, mut dan, mut dhn) = ([o0; H], [o0; H], [o0; H], [o0; H]);
            let mut dh_prev = [o0; H];
            {
                let mut bp = At::new(&mut *p, at_, Phase::Backward);
                for u in 0..H {
                    let get = |a: &[S; H]| a.get(u).copied().unwrap_or(o0);
                    let (ru, zu, nu, hnu, hp, d) = (
                        get(&r_),
                        get(&zg),
                        get(&n),
                        get(&hn),
                        get(&h_prev),
                        get(&dh),
                    );
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
                            bp.record(float_value_flags(v));
                        }
                    }
                }
            }
            // Input side: every gate's pre-activation gradient; recurrent side: r and z, and n through r⊙(…).
            let ins = self.weight_ih.iter().zip(
                self.grad_weight_ih
                    .iter_mut()
                    .zip(self.grad_bias_ih.iter_mut()),
            );
            for (dk, (wi, (gwi, gbi))) in [dar, daz, dan].iter().zip(ins) {
                add_assign(gbi, dk, &mut At::new(&mut *p, at_, Phase::Grad));
                outer_acc(gwi, dk, xt, r, &mut At::new(&mut *p, at_, Phase::Grad));
                matvec_t_add(wi, dk, dxt, r, &mut At::new(&mut *p, at_, Phase::Backward));
            }
            let recs = self.weight_hh.iter().zip(
                self.grad_weight_hh
                    .iter_mut()
                    .zip(self.grad_bias_hh.iter_mut()),
            );
            for (dk, (wh, (gwh, gbh))) in [dar, daz, dhn].iter().zip(recs) {
                add_assign(gbh, dk, &mut At::new(&mut *p, at_, Phase::Grad));
                outer_acc(gwh, dk, &h_prev, r, &mut At::new(&mut *p, at_, Phase::Grad));
                matvec_t_add(
                    wh,
                    dk,
                    &mut dh_prev,
                    r,
                    &mut At::new(&mut *p, at_, Phase::Backward),
                );
            }
            p.signal(at_, Phase::Backward, dxt);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Flags;
    use crate::layer::Pooled;
    use crate::round::NearestEven;

    #[test]
    fn each_cell_is_one_layer_of_its_tensors_and_zero_grad_clears_them() {
        let mut net = (Lstm::<f64, 2, 3, 2>::new(), Gru::<f64, 3, 3, 2>::new());
        assert_eq!((net.0.depth(), net.1.depth(), net.depth()), (1, 1, 2));
        let mut k = 0;
        net.visit(0, &mut |t| {
            for v in t.value.iter_mut() {
                k += 1;
                *v = 0.05 * (k % 13) as f64 - 0.3;
            }
        });
        let x = [[0.5, -1.0], [1.5, 0.25]];
        let y = net.forward(&x, 0, &mut NearestEven, &mut ());
        net.backward(&y, 0, &mut NearestEven, &mut ());
        let mut seen = [(9, ""); 7];
        let (mut n, mut nonzero) = (0, 0);
        net.visit(0, &mut |t| {
            if let Some(slot) = seen.get_mut(n) {
                *slot = (t.layer, t.name);
            }
            n += 1;
            nonzero += t.grad.iter().filter(|g| **g != 0.0).count();
        });
        let names = [
            "weight_ih",
            "weight_hh",
            "bias",
            "weight_ih",
            "weight_hh",
            "bias_ih",
        ];
        let want: [(usize, &str); 7] = core::array::from_fn(|i| match names.get(i) {
            Some(&name) => (usize::from(i >= 3), name),
            None => (1, "bias_hh"),
        });
        assert_eq!((n, seen), (7, want));
        assert!(nonzero > 0);
        net.zero_grad();
        net.visit(0, &mut |t| {
            assert!(t.grad.iter().all(|g| *g == 0.0), "{}", t.name)
        });
    }

    /// An LSTM unit's flags for one step from `x = 0` with the gates' biases `(i, f, g, o)`.
    fn lstm_step_flags(bias: [f32; 4]) -> ([[f32; 1]; 1], Flags) {
        let mut cell = Lstm::<f32, 1, 1, 1>::new();
        cell.bias = bias.map(|b| [b]);
        let mut flags = Flags::NONE;
        let y = cell.forward(&[[0.0]], 0, &mut NearestEven, &mut Pooled(&mut flags));
        (y, flags)
    }

    #[test]
    fn an_lstm_reports_its_cell_state_and_output_events_separately() {
        // σ(−80) ≈ 1.8·10⁻³⁵ and tanh(10⁻⁵) are normal gates, but c = i·g ≈ 1.8·10⁻⁴⁰ is subnormal; with
        // o = σ(−23) ≈ 10⁻¹⁰ the output h = o·tanh(c) is 0, which has no event of its own.
        let (y, flags) = lstm_step_flags([-80.0, 0.0, 1e-5, -23.0]);
        assert_eq!((y, flags), ([[0.0]], Flags::SUBNORMAL));
        // The other way round: c = σ(20)·tanh(10⁻⁴) ≈ 10⁻⁴ is normal and h = σ(−80)·tanh(c) ≈ 1.8·10⁻³⁹ is not.
        let (y, flags) = lstm_step_flags([20.0, 0.0, 1e-4, -80.0]);
        assert!(y[0][0] > 0.0 && y[0][0] < f32::MIN_POSITIVE);
        assert_eq!(flags, Flags::SUBNORMAL);
    }
}
