//! Fixed-size kernels on const-generic arrays, generic over [`Scalar`].
//!
//! Conventions: matrices are row-major, `w[out][in]`; a layer's weight is `[[S; I]; O]`. Every kernel
//! accumulates in [`Scalar::Acc`] and narrows **once per output value**, so for fixed point the only error is
//! that one rounding (plus saturation, flagged). Each produced value's [`Flags`] go to the probe
//! `p`; pass `&mut ()` to turn reporting off at no cost.
//!
//! | kernel | computes | roundings per output |
//! |---|---|---|
//! | [`dot`] | `Σ aᵢ bᵢ` | 1 |
//! | [`matvec`] | `y = W x` | 1 |
//! | [`affine`] | `y = W x + b` | 1 |
//! | [`matvec_t`], [`matvec_t_add`] | `y = Wᵀ d`, `y += Wᵀ d` (backprop of a dense layer) | 1 |
//! | [`affine_pair`] | `y = W₁ x₁ + W₂ x₂ + b` (a recurrent cell) | 1 |
//! | [`outer_acc`] | `G += d xᵀ` (weight gradient) | 1 |
//! | [`matmul`] | `C = A B` | 1 |
//! | [`axpy`] | `y += α x` | 1 |
//! | [`add_assign`] | `y += x` | 0 (saturation only) |
//! | [`map`], [`zip`] | `y = f(x)`, `y = f(a, b)` | as `f` |
//! | [`sum_sq`], [`l2_norm`] | `Σ xᵢ²`, `‖x‖₂` | 1 (exact wide sum) |
//!
//! All kernels are total: any input, NaN and ±∞ included, gives values plus flags. They use iterators, never
//! indexing, so no bounds check can panic.

use crate::flags::Flags;
use crate::probe::Probe;
use crate::round::Rounding;
use crate::scalar::Scalar;

/// `acc + a·b`, with the event checks only when probe `P` records events.
#[inline(always)]
pub(crate) fn mac<S: Scalar, P: Probe + ?Sized>(acc: S::Acc, a: S, b: S) -> S::Acc {
    if P::ACTIVE {
        S::mac(acc, a, b)
    } else {
        S::mac_unobserved(acc, a, b)
    }
}

/// Dot product `Σ aᵢ bᵢ`.
#[inline]
pub fn dot<S, const N: usize, R, P>(a: &[S; N], b: &[S; N], r: &mut R, p: &mut P) -> S
where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    let acc = a
        .iter()
        .zip(b)
        .fold(S::acc_zero(), |acc, (&x, &y)| mac::<S, P>(acc, x, y));
    let (v, f) = S::narrow(acc, r);
    p.record(f);
    v
}

/// Matrix–vector product `y = W x`, with `W` row-major `[[S; I]; O]`.
#[inline]
pub fn matvec<S, const I: usize, const O: usize, R, P>(
    w: &[[S; I]; O],
    x: &[S; I],
    y: &mut [S; O],
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    for (yo, row) in y.iter_mut().zip(w) {
        *yo = dot(row, x, r, p);
    }
}

/// Affine map `y = W x + b`; the bias joins the exact sum before the one rounding.
#[inline]
pub fn affine<S, const I: usize, const O: usize, R, P>(
    w: &[[S; I]; O],
    x: &[S; I],
    b: &[S; O],
    y: &mut [S; O],
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    for ((yo, row), &bo) in y.iter_mut().zip(w).zip(b) {
        let acc = row
            .iter()
            .zip(x)
            .fold(S::acc_add(S::acc_zero(), bo), |acc, (&a, &c)| {
                mac::<S, P>(acc, a, c)
            });
        let (v, f) = S::narrow(acc, r);
        p.record(f);
        *yo = v;
    }
}

/// Transposed product `y = Wᵀ d`: `y[i] = Σ_o w[o][i] d[o]`, the signal a dense layer sends backward.
#[inline]
pub fn matvec_t<S, const I: usize, const O: usize, R, P>(
    w: &[[S; I]; O],
    d: &[S; O],
    y: &mut [S; I],
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    transposed(w, d, y, [S::acc_zero(); I], r, p);
}

/// Accumulating transposed product `y += Wᵀ d`: the sum starts from `y`'s value and rounds once per output
/// (a gated cell sums its gates' contributions this way).
#[inline]
pub fn matvec_t_add<S, const I: usize, const O: usize, R, P>(
    w: &[[S; I]; O],
    d: &[S; O],
    y: &mut [S; I],
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    let start = y.map(|v| S::acc_add(S::acc_zero(), v));
    transposed(w, d, y, start, r, p);
}

/// `y = start + Wᵀ d`, walking `W` row by row (cache order) with one accumulator per output.
#[inline]
fn transposed<S, const I: usize, const O: usize, R, P>(
    w: &[[S; I]; O],
    d: &[S; O],
    y: &mut [S; I],
    mut acc: [S::Acc; I],
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    for (row, &dv) in w.iter().zip(d) {
        for (a, &wv) in acc.iter_mut().zip(row) {
            *a = mac::<S, P>(*a, wv, dv);
        }
    }
    for (yi, a) in y.iter_mut().zip(acc) {
        let (v, f) = S::narrow(a, r);
        p.record(f);
        *yi = v;
    }
}

/// Two affine terms as one exact sum, `y = W₁ x₁ + W₂ x₂ + b` (a recurrent cell's input and recurrent paths),
/// rounded once per output; the bias joins first.
#[inline]
pub fn affine_pair<S, const I: usize, const J: usize, const O: usize, R, P>(
    (w1, x1): (&[[S; I]; O], &[S; I]),
    (w2, x2): (&[[S; J]; O], &[S; J]),
    b: &[S; O],
    y: &mut [S; O],
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    for (((yo, row1), row2), &bo) in y.iter_mut().zip(w1).zip(w2).zip(b) {
        let acc = row1
            .iter()
            .zip(x1)
            .fold(S::acc_add(S::acc_zero(), bo), |a, (&w, &v)| {
                mac::<S, P>(a, w, v)
            });
        let acc = row2
            .iter()
            .zip(x2)
            .fold(acc, |a, (&w, &v)| mac::<S, P>(a, w, v));
        let (v, f) = S::narrow(acc, r);
        p.record(f);
        *yo = v;
    }
}

/// Outer-product accumulate `G += d xᵀ`: `g[o][i] += d[o] x[i]`, rounded once per element.
#[inline]
pub fn outer_acc<S, const I: usize, const O: usize, R, P>(
    g: &mut [[S; I]; O],
    d: &[S; O],
    x: &[S; I],
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    for (row, &dv) in g.iter_mut().zip(d) {
        for (gv, &xv) in row.iter_mut().zip(x) {
            let (v, f) = S::narrow(mac::<S, P>(S::acc_add(S::acc_zero(), *gv), dv, xv), r);
            p.record(f);
            *gv = v;
        }
    }
}

/// Matrix product `C = A B` with `A: [[S; K]; M]`, `B: [[S; N]; K]`, `C: [[S; N]; M]`.
///
/// Loop order i–k–j so `B` and `C` rows are read contiguously; one accumulator row of `N` values.
#[inline]
pub fn matmul<S, const M: usize, const K: usize, const N: usize, R, P>(
    a: &[[S; K]; M],
    b: &[[S; N]; K],
    c: &mut [[S; N]; M],
    r: &mut R,
    p: &mut P,
) where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    for (crow, arow) in c.iter_mut().zip(a) {
        let mut acc = [S::acc_zero(); N];
        for (&av, brow) in arow.iter().zip(b) {
            for (ac, &bv) in acc.iter_mut().zip(brow) {
                *ac = mac::<S, P>(*ac, av, bv);
            }
        }
        for (cv, ac) in crow.iter_mut().zip(acc) {
            let (v, f) = S::narrow(ac, r);
            p.record(f);
            *cv = v;
        }
    }
}

/// `y += α x`, rounded once per element.
#[inline]
pub fn axpy<S, const N: usize, R, P>(alpha: S, x: &[S; N], y: &mut [S; N], r: &mut R, p: &mut P)
where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    for (yv, &xv) in y.iter_mut().zip(x) {
        let (v, f) = S::narrow(mac::<S, P>(S::acc_add(S::acc_zero(), *yv), alpha, xv), r);
        p.record(f);
        *yv = v;
    }
}

/// `y += x` elementwise (saturating for fixed point); each sum's events go to the probe. Used for gradient
/// accumulation and residual sums.
#[inline]
pub fn add_assign<S, P>(y: &mut [S], x: &[S], p: &mut P)
where
    S: Scalar,
    P: Probe + ?Sized,
{
    for (yv, &xv) in y.iter_mut().zip(x) {
        let (v, f) = yv.add(xv);
        p.record(f);
        *yv = v;
    }
}

/// Elementwise `y[i] = f(x[i])`, where `f` returns the value and its events.
#[inline]
pub fn map<S, T, const N: usize, P>(
    x: &[S; N],
    y: &mut [T; N],
    mut f: impl FnMut(S) -> (T, Flags),
    p: &mut P,
) where
    S: Copy,
    P: Probe + ?Sized,
{
    for (yv, &xv) in y.iter_mut().zip(x) {
        let (v, fl) = f(xv);
        p.record(fl);
        *yv = v;
    }
}

/// Elementwise `y[i] = f(a[i], b[i])`, where `f` returns the value and its events.
#[inline]
pub fn zip<S, T, U, const N: usize, P>(
    a: &[S; N],
    b: &[T; N],
    y: &mut [U; N],
    mut f: impl FnMut(S, T) -> (U, Flags),
    p: &mut P,
) where
    S: Copy,
    T: Copy,
    P: Probe + ?Sized,
{
    for ((yv, &av), &bv) in y.iter_mut().zip(a).zip(b) {
        let (v, fl) = f(av, bv);
        p.record(fl);
        *yv = v;
    }
}

/// The exact (fixed point) or scaled (float) sum of squares of a slice, for streaming over many tensors with
/// [`Scalar::sq_merge`].
#[inline]
pub fn sum_sq_acc<S: Scalar>(x: &[S]) -> S::SqAcc {
    x.iter().fold(S::sq_zero(), |acc, &v| S::sq_add(acc, v))
}

/// Sum of squares `Σ xᵢ²` as `S`, rounded once; saturation and non-finite inputs are reported.
#[inline]
pub fn sum_sq<S, R, P>(x: &[S], r: &mut R, p: &mut P) -> S
where
    S: Scalar,
    R: Rounding + ?Sized,
    P: Probe + ?Sized,
{
    let (v, f) = S::sq_total(sum_sq_acc(x), r);
    p.record(f);
    v
}

/// L2 norm `‖x‖₂`, rounded to nearest. The sum of squares never overflows on the way (exact `u128` for fixed
/// point, scaled for floats), so only a norm beyond the type's range saturates.
#[inline]
pub fn l2_norm<S, P>(x: &[S], p: &mut P) -> S
where
    S: Scalar,
    P: Probe + ?Sized,
{
    let (v, f) = S::sq_sqrt(sum_sq_acc(x));
    p.record(f);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::{I1F15, I16F16};
    use crate::probe::{EventCounts, Probe};
    use crate::round::{Floor, NearestEven};

    fn q(x: f64) -> I16F16 {
        I16F16::from_f64(x, &mut NearestEven).0
    }

    #[test]
    fn small_f32_kernels() {
        let w = [[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let x = [1.0f32, 0.5, -1.0];
        let mut y = [0.0; 2];
        matvec(&w, &x, &mut y, &mut NearestEven, &mut ());
        assert_eq!(y, [-1.0, 0.5]);
        let mut t = [0.0; 3];
        matvec_t(&w, &[1.0, -1.0], &mut t, &mut NearestEven, &mut ());
        assert_eq!(t, [-3.0, -3.0, -3.0]);
        let mut g = [[0.0f32; 3]; 2];
        outer_acc(&mut g, &[2.0, 1.0], &x, &mut NearestEven, &mut ());
        assert_eq!(g, [[2.0, 1.0, -2.0], [1.0, 0.5, -1.0]]);
        let mut c = [[0.0f32; 2]; 2];
        matmul(
            &w,
            &[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
            &mut c,
            &mut NearestEven,
            &mut (),
        );
        assert_eq!(c, [[4.0, 5.0], [10.0, 11.0]]);
        let mut yb = [0.0; 2];
        affine(&w, &x, &[1.0, 1.0], &mut yb, &mut NearestEven, &mut ());
        assert_eq!(yb, [0.0, 1.5]);
    }

    #[test]
    fn fixed_dot_rounds_once() {
        // Eight products of 2^-9 · 2^-9 = 2^-18 each: per-product rounding would give 0, the exact sum is 2^-15.
        let a = [q(1.0 / 512.0); 8];
        let mut counts = EventCounts::default();
        let d = dot(&a, &a, &mut Floor, &mut counts);
        assert_eq!(d.to_bits(), 2);
        assert_eq!(
            counts,
            EventCounts {
                values: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn probe_counts_underflow_and_saturation() {
        let tiny = [I1F15::from_bits(3); 4];
        let big = [I1F15::MIN; 4];
        let mut counts = EventCounts::default();
        let mut y = [I1F15::ZERO; 2];
        matvec(&[tiny, big], &tiny, &mut y, &mut NearestEven, &mut counts);
        assert_eq!((counts.values, counts.underflow), (2, 1));
        matvec(&[big, big], &big, &mut y, &mut NearestEven, &mut counts);
        assert_eq!(counts.overflow, 2);
        assert_eq!(y, [I1F15::MAX; 2]);
    }

    type Outputs = ([[f32; 3]; 4], [f32; 5], [[f32; 5]; 4], [f32; 4]);

    /// matmul, matvec_t, outer_acc and affine on fixed inputs (one value near underflow), with probe `p`.
    fn all_kernels<P: Probe>(p: &mut P) -> Outputs {
        let v = |i: usize, j: usize| {
            ((i * 31 + j * 17) % 23) as f32 / 7.0 - 1.5 + if i == j { 1e-30 } else { 0.0 }
        };
        let a: [[f32; 5]; 4] = core::array::from_fn(|i| core::array::from_fn(|j| v(i, j)));
        let b: [[f32; 3]; 5] = core::array::from_fn(|i| core::array::from_fn(|j| v(j + 7, i)));
        let x: [f32; 5] = core::array::from_fn(|j| v(9, j));
        let d: [f32; 4] = core::array::from_fn(|j| v(j, 3));
        let (mut c, mut t, mut g, mut y) = ([[0.0; 3]; 4], [0.0; 5], a, [0.0; 4]);
        matmul(&a, &b, &mut c, &mut NearestEven, p);
        matvec_t(&a, &d, &mut t, &mut NearestEven, p);
        outer_acc(&mut g, &d, &x, &mut NearestEven, p);
        affine(&a, &x, &d, &mut y, &mut NearestEven, p);
        (c, t, g, y)
    }

    #[test]
    fn probe_on_and_off_give_identical_values() {
        // With the probe off the kernels skip the event checks: the values must not change.
        const { assert!(!<() as Probe>::ACTIVE && <EventCounts as Probe>::ACTIVE) };
        let mut counts = EventCounts::default();
        let (off, on) = (all_kernels(&mut ()), all_kernels(&mut counts));
        assert_eq!(format!("{off:?}"), format!("{on:?}"));
        assert!(counts.values > 0);
    }

    #[test]
    fn nan_and_inf_give_values_and_flags() {
        let mut f = Flags::NONE;
        let x = [f32::NAN, 1.0, f32::INFINITY];
        let _ = dot(&x, &x, &mut NearestEven, &mut f);
        assert!(f.contains(Flags::NONFINITE));
        let mut f = Flags::NONE;
        let n = l2_norm(&x, &mut f);
        assert!(n.is_nan() && f.contains(Flags::NONFINITE));
    }
}
