//! Gradient clipping over a whole parameter set, through the [`Params`] visitor (so it works for any network).
//!
//! - [`clip_grad_value`]: clamp every gradient element to [−c, c] (PyTorch `clip_grad_value_`).
//! - [`clip_grad_norm_per_tensor`]: scale each tensor whose norm exceeds `max_norm`.
//! - [`clip_grad_norm`]: PyTorch `clip_grad_norm_`: the total norm is the norm of the per-tensor norms (types
//!   1, 2, ∞); every gradient is scaled by `min(1, max_norm / (total + 1e-6))`; the total is returned.
//! - [`clip_agc`]: adaptive gradient clipping (Brock et al. 2021): each unit (a weight row, a bias element)
//!   with ‖Gᵢ‖ > λ·max(‖Wᵢ‖, ε) is scaled to λ·max(‖Wᵢ‖, ε) / max(‖Gᵢ‖, 10⁻⁶); others are left bit-identical.
//!
//! Norms are computed without overflow: fixed point sums squares exactly in `u128` (a Q16.16 sum of squares
//! would saturate once the norm passes ≈181), floats in LAPACK's scaled form; results are reported as `f64`.
//! Scaling rounds once per element and reports its events to the probe.
//!
//! Non-finite gradients are reported, never spread: where PyTorch would multiply every gradient by a NaN
//! coefficient, these functions leave the gradients unchanged, record [`Flags::NONFINITE`] and (with
//! `error_if_nonfinite`) return [`ClipError::NonFiniteNorm`].
//!
//! Events go to a [`Probes`] sink under each tensor's layer, in phase [`Phase::Clip`]. [`Clip`] names a
//! policy as a value (what the training step and the command line use).

use core::fmt;

use crate::flags::Flags;
use crate::layer::{Phase, Probes};
use crate::matrix::sum_sq_acc;
use crate::net::Params;
use crate::round::Rounding;
use crate::scalar::{Coef, Scalar};

/// ε of adaptive gradient clipping in Brock et al. (2021): weight norms below it count as ε, so units with
/// zero-initialized weights can still learn.
pub const AGC_EPS: f64 = 1e-3;

/// A clipping policy, as a value.
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", content = "threshold", rename_all = "lowercase")
)]
pub enum Clip {
    /// No clipping.
    None,
    /// Each gradient value into [−V, V] ([`clip_grad_value`]).
    Value(f64),
    /// Each tensor's L2 norm to at most N ([`clip_grad_norm_per_tensor`]).
    Norm(f64),
    /// The global L2 norm to at most N ([`clip_grad_norm`], PyTorch's `clip_grad_norm_`).
    Global(f64),
    /// Adaptive gradient clipping with λ ([`clip_agc`], ε = [`AGC_EPS`]).
    Agc(f64),
}

/// What clipping did to one set of gradients: their global L2 norms, in the gradients' own units.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClipReport {
    /// Before clipping.
    pub norm_before: f64,
    /// After clipping.
    pub norm_after: f64,
}

impl Clip {
    /// The policy with its threshold multiplied by `k`: the same clipping for gradients held `k` times too
    /// large (loss scaling). AGC's λ scales too, since it bounds the gradient against the unscaled weights.
    pub fn scaled(self, k: f64) -> Clip {
        match self {
            Clip::None => Clip::None,
            Clip::Value(v) => Clip::Value(v * k),
            Clip::Norm(v) => Clip::Norm(v * k),
            Clip::Global(v) => Clip::Global(v * k),
            Clip::Agc(v) => Clip::Agc(v * k),
        }
    }

    /// Clip the gradients of `params`; rescaling events go to `probes` (phase [`Phase::Clip`]). A non-finite
    /// global norm leaves the gradients unchanged (reported, and visible in the returned norms).
    pub fn apply<S: Scalar>(
        self,
        params: &mut (impl Params<S> + ?Sized),
        r: &mut (impl Rounding + ?Sized),
        probes: &mut (impl Probes + ?Sized),
    ) -> Result<ClipReport, ClipError> {
        let norm_before = grad_norm(params, NormType::L2);
        match self {
            Clip::None => {
                return Ok(ClipReport {
                    norm_before,
                    norm_after: norm_before,
                });
            }
            Clip::Value(v) => clip_grad_value(params, v, r, probes)?,
            Clip::Norm(v) => clip_grad_norm_per_tensor(params, v, NormType::L2, r, probes)?,
            Clip::Global(v) => {
                clip_grad_norm(params, v, NormType::L2, false, r, probes)?;
            }
            Clip::Agc(v) => {
                clip_agc(params, v, AGC_EPS, r, probes)?;
            }
        }
        Ok(ClipReport {
            norm_before,
            norm_after: grad_norm(params, NormType::L2),
        })
    }
}

impl fmt::Display for Clip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clip::None => write!(f, "none"),
            Clip::Value(v) => write!(f, "value:{v}"),
            Clip::Norm(v) => write!(f, "norm:{v}"),
            Clip::Global(v) => write!(f, "global:{v}"),
            Clip::Agc(v) => write!(f, "agc:{v}"),
        }
    }
}

/// Which vector norm.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NormType {
    /// Σ|x|.
    L1,
    /// √Σx².
    L2,
    /// max|x|.
    Inf,
}

/// Why clipping refused to run or to scale.
#[derive(Copy, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum ClipError {
    /// A threshold (clip value, max norm, λ, ε) is not a positive finite number.
    InvalidThreshold(f64),
    /// The total gradient norm is NaN or infinite; the gradients were left unchanged.
    NonFiniteNorm(f64),
}

impl fmt::Display for ClipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClipError::InvalidThreshold(v) => {
                write!(f, "clipping threshold must be positive and finite, got {v}")
            }
            ClipError::NonFiniteNorm(v) => {
                write!(f, "total gradient norm is {v}; gradients left unchanged")
            }
        }
    }
}

impl core::error::Error for ClipError {}

fn positive(x: f64) -> Result<f64, ClipError> {
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(ClipError::InvalidThreshold(x))
    }
}

/// The norm of a slice as `f64` (NaN or ∞ if any element is).
pub fn norm_of<S: Scalar>(x: &[S], norm: NormType) -> f64 {
    match norm {
        NormType::L2 => libm::sqrt(S::sq_to_f64(sum_sq_acc(x))),
        NormType::L1 => x.iter().map(|v| libm::fabs(v.to_f64())).sum(),
        NormType::Inf => x.iter().fold(0.0, |m, v| {
            let a = libm::fabs(v.to_f64());
            if a > m || a.is_nan() { a } else { m }
        }),
    }
}

fn combine(total: f64, n: f64, norm: NormType) -> f64 {
    match norm {
        NormType::L2 => libm::hypot(total, n),
        NormType::L1 => total + n,
        NormType::Inf => {
            if n > total || n.is_nan() {
                n
            } else {
                total
            }
        }
    }
}

/// The total gradient norm over all tensors: the norm of the per-tensor norms.
pub fn grad_norm<S: Scalar, P: Params<S> + ?Sized>(params: &mut P, norm: NormType) -> f64 {
    let mut total = 0.0f64;
    params.visit(0, &mut |t| {
        total = combine(total, norm_of(t.grad, norm), norm)
    });
    total
}

fn scale_all<S: Scalar, R: Rounding + ?Sized, P: Probes + ?Sized>(
    g: &mut [S],
    layer: usize,
    c: f64,
    r: &mut R,
    p: &mut P,
) {
    let c = Coef::new(c);
    for v in g.iter_mut() {
        let (s, f) = v.scale_by(&c, r);
        p.record(layer, Phase::Clip, f);
        *v = s;
    }
}

/// Clamp every gradient element to [−clip, clip]. NaN elements stay NaN and are reported.
pub fn clip_grad_value<S: Scalar>(
    params: &mut (impl Params<S> + ?Sized),
    clip: f64,
    r: &mut (impl Rounding + ?Sized),
    probe: &mut (impl Probes + ?Sized),
) -> Result<(), ClipError> {
    let clip = positive(clip)?;
    let (hi, _) = S::from_f64(clip, r);
    let (lo, _) = hi.neg();
    params.visit(0, &mut |t| {
        for g in t.grad.iter_mut() {
            if *g > hi {
                *g = hi;
            } else if *g < lo {
                *g = lo;
            }
            probe.record(
                t.layer,
                Phase::Clip,
                Flags::when(!g.is_finite(), Flags::NONFINITE),
            );
        }
    });
    Ok(())
}

/// Scale each tensor's gradient whose norm exceeds `max_norm` by `max_norm / (norm + 1e-6)`. Tensors with a
/// non-finite norm are left unchanged and reported.
pub fn clip_grad_norm_per_tensor<S: Scalar>(
    params: &mut (impl Params<S> + ?Sized),
    max_norm: f64,
    norm: NormType,
    r: &mut (impl Rounding + ?Sized),
    probe: &mut (impl Probes + ?Sized),
) -> Result<(), ClipError> {
    let max_norm = positive(max_norm)?;
    params.visit(0, &mut |t| {
        let n = norm_of(t.grad, norm);
        if !n.is_finite() {
            probe.record(t.layer, Phase::Clip, Flags::NONFINITE);
        } else {
            let c = max_norm / (n + 1e-6);
            if c < 1.0 {
                scale_all(t.grad, t.layer, c, r, probe);
            }
        }
    });
    Ok(())
}

/// PyTorch's `clip_grad_norm_`: returns the total norm (before clipping). When the total is non-finite the
/// gradients are left unchanged and [`Flags::NONFINITE`] is recorded; with `error_if_nonfinite` the call
/// returns [`ClipError::NonFiniteNorm`] instead of the norm.
pub fn clip_grad_norm<S: Scalar>(
    params: &mut (impl Params<S> + ?Sized),
    max_norm: f64,
    norm: NormType,
    error_if_nonfinite: bool,
    r: &mut (impl Rounding + ?Sized),
    probe: &mut (impl Probes + ?Sized),
) -> Result<f64, ClipError> {
    let max_norm = positive(max_norm)?;
    let total = grad_norm(params, norm);
    if !total.is_finite() {
        let mut first = None;
        params.visit(0, &mut |t| {
            first = first.or(t.grad.iter().any(|g| !g.is_finite()).then_some(t.layer))
        });
        probe.record(first.unwrap_or(0), Phase::Clip, Flags::NONFINITE);
        return if error_if_nonfinite {
            Err(ClipError::NonFiniteNorm(total))
        } else {
            Ok(total)
        };
    }
    let c = max_norm / (total + 1e-6);
    // PyTorch multiplies by min(c, 1); multiplying by exactly 1 changes nothing in floats and is skipped so
    // that formats without a 1 (Q15) are not disturbed.
    if c < 1.0 {
        params.visit(0, &mut |t| scale_all(t.grad, t.layer, c, r, probe));
    }
    Ok(total)
}

/// Adaptive gradient clipping with clipping threshold `lambda` and `eps` (the paper's is [`AGC_EPS`]). Returns the
/// number of units clipped. Units with a non-finite gradient norm are left unchanged and reported.
pub fn clip_agc<S: Scalar>(
    params: &mut (impl Params<S> + ?Sized),
    lambda: f64,
    eps: f64,
    r: &mut (impl Rounding + ?Sized),
    probe: &mut (impl Probes + ?Sized),
) -> Result<u32, ClipError> {
    let lambda = positive(lambda)?;
    let eps = positive(eps)?;
    let mut clipped = 0u32;
    params.visit(0, &mut |t| {
        let unit = if t.unit == 0 {
            t.value.len().max(1)
        } else {
            t.unit
        };
        for (w, g) in t.value.chunks(unit).zip(t.grad.chunks_mut(unit)) {
            let wn = norm_of(w, NormType::L2).max(eps);
            let gn = norm_of(g, NormType::L2);
            if !gn.is_finite() || !wn.is_finite() {
                probe.record(t.layer, Phase::Clip, Flags::NONFINITE);
                continue;
            }
            let max_g = lambda * wn;
            if gn > max_g {
                scale_all(g, t.layer, max_g / gn.max(1e-6), r, probe);
                clipped = clipped.saturating_add(1);
            }
        }
    });
    Ok(clipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn a_scaled_policy_scales_its_threshold() {
        assert_eq!(Clip::None.scaled(4.0), Clip::None);
        assert_eq!(Clip::Value(0.5).scaled(4.0), Clip::Value(2.0));
        assert_eq!(Clip::Norm(0.5).scaled(4.0), Clip::Norm(2.0));
        assert_eq!(Clip::Global(0.5).scaled(4.0), Clip::Global(2.0));
        assert_eq!(Clip::Agc(0.5).scaled(4.0), Clip::Agc(2.0));
    }

    #[test]
    fn names_and_errors_read_as_the_cli_writes_them() {
        let names: [(Clip, &str); 5] = [
            (Clip::None, "none"),
            (Clip::Value(0.5), "value:0.5"),
            (Clip::Norm(1.0), "norm:1"),
            (Clip::Global(2.5), "global:2.5"),
            (Clip::Agc(0.01), "agc:0.01"),
        ];
        for (c, name) in names {
            assert_eq!(c.to_string(), name);
        }
        assert_eq!(
            ClipError::InvalidThreshold(-1.0).to_string(),
            "clipping threshold must be positive and finite, got -1"
        );
        assert_eq!(
            ClipError::NonFiniteNorm(f64::INFINITY).to_string(),
            "total gradient norm is inf; gradients left unchanged"
        );
    }

    #[test]
    fn norms_of_a_slice_and_of_several() {
        let x = [3.0f64, -4.0, 0.0];
        assert_eq!(norm_of(&x, NormType::L2), 5.0);
        assert_eq!(norm_of(&x, NormType::L1), 7.0);
        assert_eq!(norm_of(&x, NormType::Inf), 4.0);
        assert!(norm_of(&[1.0, f64::NAN, 2.0], NormType::Inf).is_nan());
        assert_eq!(combine(3.0, 4.0, NormType::L2), 5.0);
        assert_eq!(combine(3.0, 4.0, NormType::L1), 7.0);
        assert_eq!(combine(3.0, 4.0, NormType::Inf), 4.0);
        assert_eq!(combine(4.0, 3.0, NormType::Inf), 4.0);
        assert!(combine(4.0, f64::NAN, NormType::Inf).is_nan());
    }
}
