//! Convolution and pooling against references we wrote independently of the core's kernels:
//!
//! - gradients of four small CNNs (stride 2 with padding, `same` padding, a residual convolution, `Conv1d`,
//!   max, average and global average pooling) against f64 central differences, on random weights and inputs;
//! - the forward pass against a textbook convolution (the input copied into a zero-padded buffer, then a
//!   sliding window), and the backward pass against its adjoint (each product scattered back);
//! - fixed point (I16F16, I8F24, I1F15): every output and gradient equal to the exact `i128` sum rounded once
//!   to nearest-even and saturated, with one `OVERFLOW` per saturated value;
//! - f16 and bf16 (sums in f32, one rounding per output) within one rounding of the f64 result.
//!
//! PyTorch's own results for three CNNs are in `tests/golden.rs`.

use gradscope_core::fixed::Fixed;
use gradscope_core::{
    Act, Activate, AvgPool2d, Conv1d, Conv2d, Dense, EventCounts, Flags, Flatten, GlobalAvgPool,
    I1F15, I8F24, I16F16, Layer, Loss, MaxPool2d, NearestEven, Objective, ParamTensor, Params,
    Phase, Pooled, Probes, Residual, Scalar, Tensor,
};
use proptest::prelude::*;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;

// ------------------------------------------------------------------------------------------------ references

/// A convolution's sizes: `c` channels of `h × w` in, `f` out, a `kh × kw` kernel, `stride`, padding.
#[derive(Copy, Clone, Debug)]
struct G {
    c: usize,
    h: usize,
    w: usize,
    f: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    ph: usize,
    pw: usize,
}

impl G {
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.ph, self.w + 2 * self.pw)
    }
    fn out(&self) -> (usize, usize) {
        let (hp, wp) = self.padded();
        (
            (hp - self.kh) / self.stride + 1,
            (wp - self.kw) / self.stride + 1,
        )
    }
    fn wi(&self, f: usize, c: usize, ky: usize, kx: usize) -> usize {
        ((f * self.c + c) * self.kh + ky) * self.kw + kx
    }
    /// The flat index in the zero-padded input of window `(oy, ox)`'s tap `(ky, kx)` of channel `c`.
    fn pi(&self, c: usize, oy: usize, ox: usize, ky: usize, kx: usize) -> usize {
        let (hp, wp) = self.padded();
        (c * hp + oy * self.stride + ky) * wp + ox * self.stride + kx
    }
    fn pad(&self, x: &[i128]) -> Vec<i128> {
        let (hp, wp) = self.padded();
        let mut xp = vec![0; self.c * hp * wp];
        for c in 0..self.c {
            for i in 0..self.h {
                for j in 0..self.w {
                    xp[(c * hp + i + self.ph) * wp + j + self.pw] =
                        x[(c * self.h + i) * self.w + j];
                }
            }
        }
        xp
    }
    fn crop(&self, xp: &[i128]) -> Vec<i128> {
        let (hp, wp) = self.padded();
        let mut x = Vec::new();
        for c in 0..self.c {
            for i in 0..self.h {
                for j in 0..self.w {
                    x.push(xp[(c * hp + i + self.ph) * wp + j + self.pw]);
                }
            }
        }
        x
    }

    /// `Σ w·x` per output (no bias), exactly, over the zero-padded input.
    fn forward(&self, x: &[i128], wt: &[i128]) -> Vec<i128> {
        let xp = self.pad(x);
        let (oh, ow) = self.out();
        let mut out = Vec::new();
        for f in 0..self.f {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0i128;
                    for c in 0..self.c {
                        for ky in 0..self.kh {
                            for kx in 0..self.kw {
                                s += wt[self.wi(f, c, ky, kx)] * xp[self.pi(c, oy, ox, ky, kx)];
                            }
                        }
                    }
                    out.push(s);
                }
            }
        }
        out
    }

    /// The adjoint: every product of the forward pass scattered back, giving `(Σ w·dz per input, Σ dz·x per
    /// weight)`, exactly.
    fn backward(&self, x: &[i128], wt: &[i128], dz: &[i128]) -> (Vec<i128>, Vec<i128>) {
        let xp = self.pad(x);
        let (oh, ow) = self.out();
        let (mut dxp, mut dw) = (vec![0i128; xp.len()], vec![0i128; wt.len()]);
        for f in 0..self.f {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dz[(f * oh + oy) * ow + ox];
                    for c in 0..self.c {
                        for ky in 0..self.kh {
                            for kx in 0..self.kw {
                                let (wi, pi) = (self.wi(f, c, ky, kx), self.pi(c, oy, ox, ky, kx));
                                dxp[pi] += wt[wi] * d;
                                dw[wi] += d * xp[pi];
                            }
                        }
                    }
                }
            }
        }
        (self.crop(&dxp), dw)
    }
}

/// `v · 2^−shift` rounded to nearest, ties to even, then saturated to `[lo, hi]`: whether it saturated.
fn round_sat(v: i128, shift: u32, lo: i64, hi: i64) -> (i64, bool) {
    let q = v >> shift;
    let rem = v - (q << shift);
    let half = if shift == 0 { 0 } else { 1i128 << (shift - 1) };
    let q = if shift > 0 && (rem > half || (rem == half && q & 1 == 1)) {
        q + 1
    } else {
        q
    };
    let c = q.clamp(lo as i128, hi as i128);
    (c as i64, c != q)
}

// ------------------------------------------------------------------------------------------------ fixed point

fn raws<Q: Fixed>(v: &[Q]) -> Vec<i128> {
    v.iter().map(|q| q.raw() as i128).collect()
}

fn random_raw<Q: Fixed>(rng: &mut Xoshiro128PlusPlus, bits: u32) -> Q {
    let span = 1i64 << bits;
    let raw = (rng.next_u64() % (2 * span as u64 + 1)) as i64 - span;
    Q::from_wide(raw, Q::FRAC, &mut NearestEven).0
}

/// Each value of `got` against the oracle's exact sums (`shift` fraction bits to drop), and one OVERFLOW per
/// saturated value in `events`.
fn check_rounded<Q: Fixed>(
    what: &str,
    got: &[Q],
    exact: &[i128],
    shift: u32,
    events: &EventCounts,
) {
    assert_eq!(got.len(), exact.len(), "{what}: size");
    let (lo, hi) = (Q::MIN.raw(), Q::MAX.raw());
    let mut saturated = 0;
    for (k, (g, &e)) in got.iter().zip(exact).enumerate() {
        let (want, sat) = round_sat(e, shift, lo, hi);
        saturated += sat as u32;
        assert_eq!(g.raw(), want, "{} {what}[{k}]", Q::NAME);
    }
    assert_eq!(
        events.overflow,
        saturated,
        "{} {what}: overflow events",
        Q::NAME
    );
}

/// A Conv2d (identity) of the given shape on random raw values of `bits` bits: the forward pass and every
/// gradient against the oracle, then a second backward pass whose weight and bias gradients add to the first
/// ones (each sum starts from the rounded old value). Returns how many values saturated, so callers can show
/// both regimes ran.
#[allow(clippy::too_many_arguments)]
fn fixed_conv2d_matches_the_oracle<
    Q: Fixed,
    const C: usize,
    const H: usize,
    const W: usize,
    const F: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
    const STRIDE: usize,
    const PAD: usize,
>(
    seed: u64,
    bits: u32,
) -> u32
where
    Act: Activate<Q>,
{
    let g = G {
        c: C,
        h: H,
        w: W,
        f: F,
        kh: K,
        kw: K,
        stride: STRIDE,
        ph: PAD,
        pw: PAD,
    };
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut conv = Conv2d::<Q, C, H, W, F, K, OH, OW, STRIDE, PAD>::new(Act::Identity);
    for v in conv.weight.flat_mut_all() {
        *v = random_raw(&mut rng, bits);
    }
    for v in conv.bias.iter_mut() {
        *v = random_raw(&mut rng, bits);
    }
    let mut x = <[[[Q; W]; H]; C]>::zeros();
    for v in x.flat_mut() {
        *v = random_raw(&mut rng, bits);
    }
    let frac = Q::FRAC;
    let (wt, xr, b) = (
        raws(conv.weight.flat_all()),
        raws(x.flat()),
        raws(&conv.bias),
    );
    let mut events = EventCounts::default();
    let y = conv.forward(&x, 0, &mut NearestEven, &mut Pooled(&mut events));
    let mut z = g.forward(&xr, &wt);
    for (k, v) in z.iter_mut().enumerate() {
        *v += b[k / (OH * OW)] << frac;
    }
    // The identity's events come with every output too; only the sums saturate.
    check_rounded("forward", y.flat(), &z, frac, &events);
    let mut saturated = events.overflow;

    let mut dy = <[[[Q; OW]; OH]; F]>::zeros();
    for v in dy.flat_mut() {
        *v = random_raw(&mut rng, bits);
    }
    let dz = raws(dy.flat());
    let (dx_exact, dw_exact) = g.backward(&xr, &wt, &dz);
    let db_exact: Vec<i128> = dz
        .chunks(OH * OW)
        .map(|c| c.iter().sum::<i128>() << frac)
        .collect();
    for pass in ["first", "second"] {
        // The second pass starts each parameter gradient's sum from the first pass's rounded value.
        let (gw0, gb0) = (raws(conv.grad_weight.flat_all()), raws(&conv.grad_bias));
        let plus = |old: &[i128], exact: &[i128]| -> Vec<i128> {
            old.iter()
                .zip(exact)
                .map(|(o, e)| (o << frac) + e)
                .collect()
        };
        let (dw_want, db_want) = (plus(&gw0, &dw_exact), plus(&gb0, &db_exact));
        let mut events = EventCounts::default();
        let dx = conv.backward(&dy, 0, &mut NearestEven, &mut Pooled(&mut events));
        let mut parts = [EventCounts::default(); 3];
        for (part, got, exact) in [
            (0, dx.flat(), &dx_exact),
            (1, conv.grad_weight.flat_all(), &dw_want),
            (2, &conv.grad_bias[..], &db_want),
        ] {
            let (lo, hi) = (Q::MIN.raw(), Q::MAX.raw());
            parts[part].overflow = exact
                .iter()
                .map(|&e| round_sat(e, frac, lo, hi).1 as u32)
                .sum();
            check_rounded(
                &format!("{pass} {}", ["dx", "grad weight", "grad bias"][part]),
                got,
                exact,
                frac,
                &parts[part],
            );
        }
        let total: u32 = parts.iter().map(|p| p.overflow).sum();
        assert_eq!(
            events.overflow,
            total,
            "{} {pass} backward overflow events",
            Q::NAME
        );
        saturated += total;
    }
    saturated
}

/// Flat access to a 4-D weight tensor (the [`Tensor`] trait stops at three dimensions).
trait Flat4<S> {
    fn flat_all(&self) -> &[S];
    fn flat_mut_all(&mut self) -> &mut [S];
}

impl<S, const A: usize, const B: usize, const C: usize, const D: usize> Flat4<S>
    for [[[[S; A]; B]; C]; D]
{
    fn flat_all(&self) -> &[S] {
        self.as_flattened().as_flattened().as_flattened()
    }
    fn flat_mut_all(&mut self) -> &mut [S] {
        self.as_flattened_mut()
            .as_flattened_mut()
            .as_flattened_mut()
    }
}

#[test]
fn fixed_point_convolution_is_the_exact_sum_rounded_once() {
    fn each<Q: Fixed>()
    where
        Act: Activate<Q>,
    {
        // Small values stay in range; values of the type's full width saturate many sums.
        let total = Q::FRAC + if Q::NAME == "I1F15" { 0 } else { 31 - Q::FRAC };
        let (mut quiet, mut loud) = (0, 0);
        for seed in 0..40 {
            // Stride 2 with padding; then rows wider than the kernels' blocks of 16 positions, at stride 2
            // and stride 1.
            quiet +=
                fixed_conv2d_matches_the_oracle::<Q, 2, 5, 6, 3, 3, 3, 3, 2, 1>(seed, Q::FRAC / 2);
            loud += fixed_conv2d_matches_the_oracle::<Q, 2, 5, 6, 3, 3, 3, 3, 2, 1>(seed, total);
            quiet += fixed_conv2d_matches_the_oracle::<Q, 2, 4, 37, 2, 3, 2, 19, 2, 1>(
                seed,
                Q::FRAC / 2,
            );
            loud += fixed_conv2d_matches_the_oracle::<Q, 2, 4, 37, 2, 3, 2, 19, 2, 1>(seed, total);
            quiet += fixed_conv2d_matches_the_oracle::<Q, 1, 3, 20, 2, 3, 3, 20, 1, 1>(
                seed,
                Q::FRAC / 2,
            );
            loud += fixed_conv2d_matches_the_oracle::<Q, 1, 3, 20, 2, 3, 3, 20, 1, 1>(seed, total);
            quiet += fixed_conv2d_matches_the_oracle::<Q, 1, 6, 19, 2, 5, 6, 19, 1, 2>(
                seed,
                Q::FRAC / 2,
            );
            loud += fixed_conv2d_matches_the_oracle::<Q, 1, 6, 19, 2, 5, 6, 19, 1, 2>(seed, total);
            quiet +=
                fixed_conv2d_matches_the_oracle::<Q, 1, 5, 17, 2, 2, 2, 6, 3, 0>(seed, Q::FRAC / 2);
            loud += fixed_conv2d_matches_the_oracle::<Q, 1, 5, 17, 2, 2, 2, 6, 3, 0>(seed, total);
        }
        assert_eq!(quiet, 0, "{}: small values never saturate", Q::NAME);
        assert!(
            loud > 0,
            "{}: full-range values saturate some sums",
            Q::NAME
        );
    }
    each::<I16F16>();
    each::<I8F24>();
    each::<I1F15>();
}

#[test]
fn fixed_point_pooling_is_exact_where_it_can_be() {
    fn each<Q: Fixed>() {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(7);
        for _ in 0..50 {
            let mut x = <[[[Q; 5]; 4]; 2]>::zeros();
            for v in x.flat_mut() {
                *v = random_raw(&mut rng, Q::FRAC - 2);
            }
            // 2x2 windows: a quarter is exact in fixed point, so the mean is the exact sum rounded once.
            let y =
                AvgPool2d::<Q, 2, 4, 5, 2, 2, 2>::new().forward(&x, 0, &mut NearestEven, &mut ());
            let xr = raws(x.flat());
            for c in 0..2 {
                for oy in 0..2 {
                    for ox in 0..2 {
                        let s: i128 = (0..2)
                            .flat_map(|ky| (0..2).map(move |kx| (ky, kx)))
                            .map(|(ky, kx)| xr[(c * 4 + 2 * oy + ky) * 5 + 2 * ox + kx])
                            .sum();
                        let (want, _) = round_sat(s, 2, Q::MIN.raw(), Q::MAX.raw());
                        assert_eq!(y[c][oy][ox].raw(), want, "{} avg pool", Q::NAME);
                    }
                }
            }
            // A 4x5 mean: the exact sum of 20 values divided by 20, rounded once, even where the sum itself
            // is beyond the format's range (I1F15's values here reach 1/4, their sum 5).
            let g = GlobalAvgPool::<Q, 2, 4, 5>::new().forward(&x, 0, &mut NearestEven, &mut ());
            for c in 0..2 {
                let s: i128 = raws(x[c].flat()).iter().sum();
                let (q, rem) = (s.div_euclid(20), s.rem_euclid(20));
                let want = if rem > 10 || (rem == 10 && q & 1 == 1) {
                    q + 1
                } else {
                    q
                };
                assert_eq!(g[c].raw() as i128, want, "{} global pool", Q::NAME);
            }
            // Max pooling copies values and routes gradients to them: exact.
            let mut mp = MaxPool2d::<Q, 2, 4, 5, 2, 2, 2>::new();
            let m = mp.forward(&x, 0, &mut NearestEven, &mut ());
            let dx = mp.backward(&m, 0, &mut NearestEven, &mut ());
            let routed: f64 = dx.flat().iter().map(|v| v.to_f64()).sum();
            let kept: f64 = m.flat().iter().map(|v| v.to_f64()).sum();
            assert_eq!(routed, kept);
        }
    }
    each::<I16F16>();
    each::<I8F24>();
    each::<I1F15>();
}

// ------------------------------------------------------------------------------------------------ f64

/// The forward pass in f64 against the textbook convolution (f64 sums in a different association: the
/// reference adds zeros for the padding and the bias first), on random shapes' values.
#[test]
fn f64_convolution_matches_a_zero_padded_sliding_window() {
    const G2: G = G {
        c: 3,
        h: 7,
        w: 5,
        f: 2,
        kh: 3,
        kw: 3,
        stride: 2,
        ph: 1,
        pw: 1,
    };
    const G1: G = G {
        c: 2,
        h: 1,
        w: 9,
        f: 4,
        kh: 1,
        kw: 3,
        stride: 1,
        ph: 0,
        pw: 1,
    };
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(11);
    // Values with 20 significant bits keep every product and sum exact in f64 and in the i128 oracle
    // (at 2^-20 per unit), so the comparison is exact.
    let mut u =
        move || ((rng.next_u64() % (1 << 21)) as i64 - (1 << 20)) as f64 / (1u64 << 20) as f64;
    let to_int = |v: &[f64]| -> Vec<i128> {
        v.iter()
            .map(|x| (x * (1u64 << 20) as f64) as i128)
            .collect()
    };
    for _ in 0..20 {
        let mut c2 = Conv2d::<f64, 3, 7, 5, 2, 3, 4, 3, 2, 1>::new(Act::Identity);
        c2.weight.flat_mut_all().iter_mut().for_each(|v| *v = u());
        let mut x = <[[[f64; 5]; 7]; 3]>::zeros();
        x.flat_mut().iter_mut().for_each(|v| *v = u());
        let y = c2.forward(&x, 0, &mut NearestEven, &mut ());
        let want = G2.forward(&to_int(x.flat()), &to_int(c2.weight.flat_all()));
        let got: Vec<i128> = y
            .flat()
            .iter()
            .map(|v| (v * (1u64 << 40) as f64) as i128)
            .collect();
        assert_eq!(got, want, "Conv2d");
        let mut c1 = Conv1d::<f64, 2, 9, 4, 3, 9, 1, 1>::new(Act::Identity);
        c1.weight
            .as_flattened_mut()
            .as_flattened_mut()
            .iter_mut()
            .for_each(|v| *v = u());
        let mut x1 = <[[f64; 9]; 2]>::zeros();
        x1.flat_mut().iter_mut().for_each(|v| *v = u());
        let y1 = c1.forward(&x1, 0, &mut NearestEven, &mut ());
        let want = G1.forward(
            &to_int(x1.flat()),
            &to_int(c1.weight.as_flattened().as_flattened()),
        );
        let got: Vec<i128> = y1
            .flat()
            .iter()
            .map(|v| (v * (1u64 << 40) as f64) as i128)
            .collect();
        assert_eq!(got, want, "Conv1d");
    }
}

fn loss_of<N: Layer<f64, Output = [f64; O]>, const O: usize>(
    net: &mut N,
    x: &N::Input,
    t: &[f64; O],
) -> f64 {
    let y = net.forward(x, 0, &mut NearestEven, &mut ());
    Objective::new(Loss::Mse).grad(&y, t, 1.0, &mut [0.0; O], &mut NearestEven, &mut ())
}

fn set<N: Params<f64>>(net: &mut N, k: usize, v: f64) {
    let mut i = 0;
    net.visit(0, &mut |t: ParamTensor<'_, f64>| {
        for p in t.value.iter_mut() {
            if i == k {
                *p = v;
            }
            i += 1;
        }
    });
}

/// Backprop's gradients of every parameter and input of `net` against central differences (ε = 10⁻⁶,
/// within 10⁻⁶ + 10⁻⁴·|numeric|). Where the loss has a kink within ε (a ReLU at zero, a near-tie in a max
/// pool), central differences are meaningless: a comparison is skipped when the differences with ε and ε/2
/// disagree, and the number skipped is returned (the caller bounds it).
fn gradients_match_central_differences<N, const O: usize>(
    net: &mut N,
    params: &[f64],
    x: &N::Input,
    t: &[f64; O],
) -> Result<(usize, usize), TestCaseError>
where
    N: Layer<f64, Output = [f64; O]>,
    N::Input: Tensor<Elem = f64>,
{
    for (k, &v) in params.iter().enumerate() {
        set(net, k, v);
    }
    net.zero_grad();
    let y = net.forward(x, 0, &mut NearestEven, &mut ());
    let mut dy = [0.0; O];
    Objective::new(Loss::Mse).grad(&y, t, 1.0, &mut dy, &mut NearestEven, &mut ());
    let dx = net.backward(&dy, 0, &mut NearestEven, &mut ());
    let mut g = Vec::new();
    net.visit(0, &mut |p: ParamTensor<'_, f64>| {
        g.extend_from_slice(p.grad)
    });
    prop_assert_eq!(g.len(), params.len());
    let (mut skipped, mut compared) = (0, 0);
    let mut check = |what: &str, k: usize, got: f64, at: &mut dyn FnMut(f64) -> f64| {
        let eps = 1e-6;
        let n = (at(eps) - at(-eps)) / (2.0 * eps);
        let n2 = (at(eps / 2.0) - at(-eps / 2.0)) / eps;
        let tol = 1e-6 + 1e-4 * n.abs();
        if (n - n2).abs() > tol {
            skipped += 1;
            return Ok(());
        }
        compared += 1;
        prop_assert!(
            (got - n).abs() <= tol,
            "{} {}: backprop {} vs numeric {}",
            what,
            k,
            got,
            n
        );
        Ok(())
    };
    for (k, &gk) in g.iter().enumerate() {
        check("param", k, gk, &mut |e| {
            set(net, k, params[k] + e);
            let l = loss_of(net, x, t);
            set(net, k, params[k]);
            l
        })?;
    }
    for i in 0..N::Input::LEN {
        check("input", i, dx.flat()[i], &mut |e| {
            let mut xe = *x;
            xe.flat_mut()[i] += e;
            loss_of(net, &xe, t)
        })?;
    }
    Ok((skipped, compared))
}

type StridedNet = (
    Conv2d<f64, 2, 5, 5, 3, 3, 3, 3, 2, 1>,
    (Flatten<[[[f64; 3]; 3]; 3], 27>, Dense<f64, 27, 2>),
);
type PooledNet = (
    Conv2d<f64, 1, 6, 6, 2, 3, 6, 6, 1, 1>,
    (
        MaxPool2d<f64, 2, 6, 6, 2, 3, 3>,
        (
            Residual<Conv2d<f64, 2, 3, 3, 2, 3, 3, 3, 1, 1>>,
            (GlobalAvgPool<f64, 2, 3, 3>, Dense<f64, 2, 1>),
        ),
    ),
);
type AvgNet = (
    Conv2d<f64, 1, 5, 5, 2, 2, 4, 4>,
    (
        AvgPool2d<f64, 2, 4, 4, 2, 2, 2>,
        (Flatten<[[[f64; 2]; 2]; 2], 8>, Dense<f64, 8, 1>),
    ),
);
type SeqNet = (
    Conv1d<f64, 2, 7, 3, 3, 4, 2, 1>,
    (Flatten<[[f64; 4]; 3], 12>, Dense<f64, 12, 2>),
);

fn input<X: Tensor<Elem = f64>>(v: &[f64]) -> X {
    let mut x = X::zeros();
    for (d, s) in x.flat_mut().iter_mut().zip(v) {
        *d = *s;
    }
    x
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cnn_gradients_match_central_differences(
        w in prop::collection::vec(-1.0f64..1.0, 200),
        x in prop::collection::vec(-1.0f64..1.0, 50),
        t in prop::array::uniform2(-1.0f64..1.0),
        a in 0usize..3,
    ) {
        let act = [Act::Tanh, Act::Relu, Act::Silu][a];
        let mut strided: StridedNet = (Conv2d::new(act), (Flatten::new(), Dense::new(Act::Identity)));
        let mut pooled: PooledNet = (
            Conv2d::new(Act::Sigmoid),
            (MaxPool2d::new(), (Residual(Conv2d::new(act)), (GlobalAvgPool::new(), Dense::new(Act::Identity)))),
        );
        let mut avg: AvgNet = (Conv2d::new(act), (AvgPool2d::new(), (Flatten::new(), Dense::new(Act::Identity))));
        let mut seq: SeqNet = (Conv1d::new(act), (Flatten::new(), Dense::new(Act::Identity)));
        let sizes = [param_count(&mut strided), param_count(&mut pooled), param_count(&mut avg), param_count(&mut seq)];
        prop_assert!(sizes.iter().all(|&n| n <= w.len()));
        let counts = [
            gradients_match_central_differences(&mut strided, &w[..sizes[0]], &input(&x), &t)?,
            gradients_match_central_differences(&mut pooled, &w[..sizes[1]], &input(&x), &[t[0]])?,
            gradients_match_central_differences(&mut avg, &w[..sizes[2]], &input(&x), &[t[1]])?,
            gradients_match_central_differences(&mut seq, &w[..sizes[3]], &input(&x), &t)?,
        ];
        let (skipped, compared) = counts.iter().fold((0, 0), |(s, c), &(a, b)| (s + a, c + b));
        prop_assert!(skipped * 100 <= compared, "{} of {} comparisons at a kink", skipped, compared);
    }
}

fn param_count<N: Params<f64>>(net: &mut N) -> usize {
    gradscope_core::param_count(net)
}

/// The comparison can fail: the same central differences reject a gradient off by a factor of two.
#[test]
fn a_wrong_gradient_is_caught() {
    let mut net: SeqNet = (
        Conv1d::new(Act::Tanh),
        (Flatten::new(), Dense::new(Act::Identity)),
    );
    let w: Vec<f64> = (0..param_count(&mut net))
        .map(|k| ((k * 7 % 11) as f64 - 5.0) / 7.0)
        .collect();
    let x: [[f64; 7]; 2] = input(&[
        0.3, -0.2, 0.5, 0.1, -0.4, 0.7, 0.2, 0.6, -0.1, 0.0, 0.3, -0.5, 0.4, 0.2,
    ]);
    let t = [0.5, -0.5];
    let (skipped, compared) =
        gradients_match_central_differences(&mut net, &w, &x, &t).expect("exact gradients pass");
    assert_eq!((skipped, compared), (0, w.len() + 14));
    let y = net.forward(&x, 0, &mut NearestEven, &mut ());
    let mut dy = [0.0; 2];
    Objective::new(Loss::Mse).grad(&y, &t, 1.0, &mut dy, &mut NearestEven, &mut ());
    let dx = net.backward(&dy, 0, &mut NearestEven, &mut ());
    let mut xe = x;
    xe[0][2] += 1e-6;
    let up = loss_of(&mut net, &xe, &t);
    xe[0][2] -= 2e-6;
    let numeric = (up - loss_of(&mut net, &xe, &t)) / 2e-6;
    assert!(numeric.abs() > 1e-3, "a gradient large enough to test");
    assert!((dx[0][2] - numeric).abs() <= 1e-6 + 1e-4 * numeric.abs());
    assert!((2.0 * dx[0][2] - numeric).abs() > 1e-6 + 1e-4 * numeric.abs());
}

/// The 16-bit floats sum a convolution's products in f32 and round each output once: every output and
/// gradient of f16 and bf16 is within one unit of the format's rounding (relative 2⁻¹¹ and 2⁻⁸) of the f64
/// result on the same values, plus f32's sequential round-off (n·2⁻²⁴ of the sum of |products|).
#[test]
fn half_precision_convolution_rounds_the_f32_sum_once() {
    fn each<H: gradscope_core::Scalar>(unit: f64)
    where
        Act: Activate<H>,
    {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(21);
        let mut u = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let mut half = Conv2d::<H, 2, 5, 6, 3, 3, 3, 3, 2, 1>::new(Act::Identity);
        let mut wide = Conv2d::<f64, 2, 5, 6, 3, 3, 3, 3, 2, 1>::new(Act::Identity);
        for (h, w) in half
            .weight
            .flat_mut_all()
            .iter_mut()
            .zip(wide.weight.flat_mut_all())
        {
            *h = H::from_f64(u(), &mut NearestEven).0;
            *w = h.to_f64();
        }
        let mut x = <[[[H; 6]; 5]; 2]>::zeros();
        let mut xw = <[[[f64; 6]; 5]; 2]>::zeros();
        for (h, w) in x.flat_mut().iter_mut().zip(xw.flat_mut()) {
            *h = H::from_f64(u(), &mut NearestEven).0;
            *w = h.to_f64();
        }
        let y = half.forward(&x, 0, &mut NearestEven, &mut ());
        let yw = wide.forward(&xw, 0, &mut NearestEven, &mut ());
        // Each output sums at most 2·3·3 = 18 products, each below 1/4 in magnitude.
        let f32_sum = 18.0 * 0.25 * 18.0 * 2f64.powi(-24);
        for (a, b) in y.flat().iter().zip(yw.flat()) {
            let bound = unit * b.abs() + f32_sum;
            assert!(
                (a.to_f64() - b).abs() <= bound,
                "{} forward: {} vs {b}",
                H::NAME,
                a.to_f64()
            );
        }
        let mut dy = <[[[H; 3]; 3]; 3]>::zeros();
        let mut dyw = <[[[f64; 3]; 3]; 3]>::zeros();
        for (h, w) in dy.flat_mut().iter_mut().zip(dyw.flat_mut()) {
            *h = H::from_f64(u(), &mut NearestEven).0;
            *w = h.to_f64();
        }
        let dx = half.backward(&dy, 0, &mut NearestEven, &mut ());
        let dxw = wide.backward(&dyw, 0, &mut NearestEven, &mut ());
        let pairs = [
            (
                dx.flat().iter().map(|v| v.to_f64()).collect::<Vec<_>>(),
                dxw.flat().to_vec(),
            ),
            (
                half.grad_weight
                    .flat_all()
                    .iter()
                    .map(|v| v.to_f64())
                    .collect(),
                wide.grad_weight.flat_all().to_vec(),
            ),
        ];
        for (got, want) in pairs {
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= unit * b.abs() + f32_sum,
                    "{} backward: {a} vs {b}",
                    H::NAME
                );
            }
        }
    }
    each::<gradscope_core::f16>(2f64.powi(-11));
    each::<gradscope_core::bf16>(2f64.powi(-8));
}

// ------------------------------------------------------------------------------------------------ fast lanes

/// Every event with its phase. `A`: an active sink (the kernels' exact path whenever an operand may have an
/// event) or one that only watches (the fast lanes, then a check of each output).
struct Log<const A: bool>(Vec<(Phase, Flags)>);

impl<const A: bool> Probes for Log<A> {
    const ACTIVE: bool = A;
    const WATCH: bool = true;
    fn record(&mut self, _layer: usize, phase: Phase, flags: Flags) {
        self.0.push((phase, flags));
    }
}

fn bits<S: Scalar>(v: &[S]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().to_bits()).collect()
}

/// The convolution's three kernels run by an active sink (`a`) and by the off or watching sink (`b`) on the
/// same layer, input and gradient, twice (the second backward pass adds to the first one's parameter
/// gradients): every value equal bit for bit. Returns both sinks' events.
#[allow(clippy::too_many_arguments)]
fn both_paths<
    S: Scalar,
    B: Probes,
    const C: usize,
    const H: usize,
    const W: usize,
    const F: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
    const ST: usize,
    const PAD: usize,
>(
    conv: &Conv2d<S, C, H, W, F, K, OH, OW, ST, PAD>,
    x: &[[[S; W]; H]; C],
    dy: &[[[S; OW]; OH]; F],
    mut b_sink: B,
) -> (Vec<(Phase, Flags)>, B)
where
    Act: Activate<S>,
{
    let (mut a, mut b) = (conv.clone(), conv.clone());
    let mut a_sink = Log::<true>(vec![]);
    let ya = a.forward(x, 0, &mut NearestEven, &mut a_sink);
    let yb = b.forward(x, 0, &mut NearestEven, &mut b_sink);
    assert_eq!(bits(ya.flat()), bits(yb.flat()), "{} forward", S::NAME);
    for pass in ["first", "second"] {
        let dxa = a.backward(dy, 0, &mut NearestEven, &mut a_sink);
        let dxb = b.backward(dy, 0, &mut NearestEven, &mut b_sink);
        assert_eq!(bits(dxa.flat()), bits(dxb.flat()), "{} {pass} dx", S::NAME);
        assert_eq!(
            bits(a.grad_weight.flat_all()),
            bits(b.grad_weight.flat_all()),
            "{} {pass} grad weight",
            S::NAME
        );
        assert_eq!(
            bits(&a.grad_bias),
            bits(&b.grad_bias),
            "{} {pass} grad bias",
            S::NAME
        );
    }
    (a_sink.0, b_sink)
}

fn wide_case<
    S: Scalar,
    const C: usize,
    const H: usize,
    const W: usize,
    const F: usize,
    const K: usize,
    const OH: usize,
    const OW: usize,
    const ST: usize,
    const PAD: usize,
>(
    seed: u64,
) where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut u = move || {
        let v = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        S::from_f64(v, &mut NearestEven).0
    };
    let mut conv = Conv2d::<S, C, H, W, F, K, OH, OW, ST, PAD>::new(Act::Identity);
    conv.weight.flat_mut_all().fill_with(&mut u);
    conv.bias.fill_with(&mut u);
    let mut x = <[[[S; W]; H]; C]>::zeros();
    x.flat_mut().fill_with(&mut u);
    let mut dy = <[[[S; OW]; OH]; F]>::zeros();
    dy.flat_mut().fill_with(&mut u);

    // √(smallest normal)/2 in each operand, where the first tap meets the input at (1, 1) and the gradient at
    // position (1, 1): their products fall below the normal range. f16's products are f32 products, never
    // that small, so there an infinity does it. No bound can then rule out an event, so the active sink takes
    // the exact path while the off sink runs the fast lanes.
    let mut force = S::from_f64(S::RESOLUTION.sqrt() / 2.0, &mut NearestEven).0;
    if S::quiet(S::bound(&[force]), S::bound(&[force]), 1) {
        force = S::from_f64(f64::INFINITY, &mut NearestEven).0;
    }
    conv.weight.flat_mut_all()[0] = force;
    x.flat_mut()[W + 1] = force;
    dy.flat_mut()[OW + 1] = force;
    let wb = S::bound(conv.weight.flat_all());
    assert!(!S::quiet(wb, S::bound(x.flat()), C * K * K), "{}", S::NAME);
    assert!(!S::quiet(wb, S::bound(dy.flat()), F * K * K), "{}", S::NAME);
    both_paths(&conv, &x, &dy, ());

    // Sums beyond the format's range: the watching sink runs the fast lanes, then must report exactly the
    // non-finite outputs, with the events of their exact sums.
    let big = S::from_f64(S::MAX.to_f64() / 2.0, &mut NearestEven).0;
    let one = S::from_f64(1.0, &mut NearestEven).0;
    conv.weight.flat_mut_all().fill(one);
    x.flat_mut().fill(big);
    let (events, watched) = both_paths(&conv, &x, &dy, Log::<false>(vec![]));
    let loud = Flags::NONFINITE.union(Flags::OVERFLOW);
    let expected: Vec<_> = events
        .into_iter()
        .filter(|(_, f)| f.intersects(loud))
        .collect();
    assert!(!expected.is_empty(), "{}: some sums overflow", S::NAME);
    assert_eq!(
        watched.0,
        expected,
        "{}: the watching sink's events",
        S::NAME
    );
}

#[test]
fn fast_lanes_equal_the_exact_path_bit_for_bit() {
    fn each<S: Scalar>()
    where
        Act: Activate<S>,
    {
        for seed in 0..3 {
            // Rows wider than a block of 16 positions, at stride 2 with padding and at stride 1 (`same`).
            wide_case::<S, 2, 4, 37, 2, 3, 2, 19, 2, 1>(seed);
            wide_case::<S, 1, 3, 20, 2, 3, 3, 20, 1, 1>(seed);
            wide_case::<S, 2, 5, 6, 3, 3, 3, 3, 2, 1>(seed);
            // `valid` (no padding), a 5-wide window with 2 of padding, stride 3, and a 1×1 window.
            wide_case::<S, 2, 5, 18, 2, 3, 3, 16, 1, 0>(seed);
            wide_case::<S, 1, 6, 19, 2, 5, 6, 19, 1, 2>(seed);
            wide_case::<S, 1, 5, 17, 2, 2, 2, 6, 3, 0>(seed);
            wide_case::<S, 2, 4, 17, 3, 1, 4, 17, 1, 0>(seed);
        }
    }
    each::<f32>();
    each::<f64>();
    each::<gradscope_core::f16>();
    each::<gradscope_core::bf16>();
}
