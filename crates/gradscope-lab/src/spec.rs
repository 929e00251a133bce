//! Options shared by the experiments: rounding modes, clipping specifications, and the dump format.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, anyhow, bail};
use gradscope_core::clip::{AGC_EPS, grad_norm};
use gradscope_core::{
    AnyRounding, EventCounts, NormType, Params, Scalar, clip_agc, clip_grad_norm,
    clip_grad_norm_per_tensor, clip_grad_value,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

/// Rounding mode names.
pub const ROUNDINGS: [&str; 3] = ["floor", "nearest", "stochastic"];

/// Check a rounding name.
pub fn check_rounding(name: &str) -> Result<()> {
    if ROUNDINGS.contains(&name) {
        Ok(())
    } else {
        bail!("unknown rounding '{name}': choose floor, nearest or stochastic")
    }
}

/// The rounding mode called `name`; stochastic rounding draws from its own stream of `seed`.
pub fn rounding(name: &str, seed: u64) -> AnyRounding<Xoshiro128PlusPlus> {
    match name {
        "floor" => AnyRounding::Floor,
        "stochastic" => AnyRounding::Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed ^ 0x5eed)),
        _ => AnyRounding::NearestEven,
    }
}

/// Gradient clipping, as given on the command line: `none`, `value:V`, `norm:N` (each tensor's L2 norm),
/// `global:N` (the L2 norm of all gradients together, PyTorch's `clip_grad_norm_`) or `agc:L` (adaptive
/// gradient clipping with λ = L, Brock et al. 2021).
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "threshold", rename_all = "lowercase")]
pub enum Clip {
    /// No clipping.
    None,
    /// Each gradient value into [−V, V].
    Value(f64),
    /// Each tensor's L2 norm to at most N.
    Norm(f64),
    /// The global L2 norm to at most N.
    Global(f64),
    /// Adaptive gradient clipping with λ.
    Agc(f64),
}

impl FromStr for Clip {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Clip> {
        const FORMS: &str = "none, value:V, norm:N, global:N or agc:L with a positive number";
        if s == "none" {
            return Ok(Clip::None);
        }
        let (kind, v) = s
            .split_once(':')
            .ok_or_else(|| anyhow!("malformed --clip '{s}': use {FORMS}"))?;
        let v: f64 = v
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .ok_or_else(|| anyhow!("malformed --clip '{s}': use {FORMS}"))?;
        Ok(match kind {
            "value" => Clip::Value(v),
            "norm" => Clip::Norm(v),
            "global" => Clip::Global(v),
            "agc" => Clip::Agc(v),
            _ => bail!("malformed --clip '{s}': use {FORMS}"),
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

/// What clipping did to one set of gradients.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClipReport {
    /// Global L2 norm before.
    pub norm_before: f64,
    /// Global L2 norm after.
    pub norm_after: f64,
}

impl Clip {
    /// Clip the gradients of `params`; events of the rescaling go to `events`.
    pub fn apply<S: Scalar, P: Params<S> + ?Sized>(
        self,
        params: &mut P,
        r: &mut AnyRounding<Xoshiro128PlusPlus>,
        events: &mut EventCounts,
    ) -> Result<ClipReport> {
        let norm_before = grad_norm(params, NormType::L2);
        let e = |e: gradscope_core::ClipError| anyhow!("clipping: {e}");
        match self {
            Clip::None => {}
            Clip::Value(v) => clip_grad_value(params, v, r, events).map_err(e)?,
            Clip::Norm(v) => {
                clip_grad_norm_per_tensor(params, v, NormType::L2, r, events).map_err(e)?
            }
            Clip::Global(v) => {
                // A non-finite norm leaves the gradients unchanged; the caller sees it in norm_before.
                let _ = clip_grad_norm(params, v, NormType::L2, false, r, events);
            }
            Clip::Agc(v) => {
                clip_agc(params, v, AGC_EPS, r, events).map_err(e)?;
            }
        }
        Ok(ClipReport {
            norm_before,
            norm_after: grad_norm(params, NormType::L2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_specs_parse_and_reject_malformed_ones() {
        assert_eq!("none".parse::<Clip>().unwrap(), Clip::None);
        assert_eq!("global:1.5".parse::<Clip>().unwrap(), Clip::Global(1.5));
        assert_eq!("agc:0.01".parse::<Clip>().unwrap(), Clip::Agc(0.01));
        for bad in [
            "",
            "global",
            "global:",
            "global:-1",
            "global:nan",
            "max:1",
            "value:0",
        ] {
            let e = bad.parse::<Clip>().unwrap_err().to_string();
            assert!(e.contains("malformed --clip"), "{bad}: {e}");
        }
        assert_eq!(Clip::Norm(2.0).to_string(), "norm:2");
    }
}
