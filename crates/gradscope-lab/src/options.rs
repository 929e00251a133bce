//! Typed options, parsed once: every subcommand shares one parser per concept, each producing the core's types
//! (or a small enum that builds them), with one canonical spelling per name and aliases where users come from
//! elsewhere (Keras's `he_normal`, `glorot_uniform`). After parsing, nothing is stored or matched as a string.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, anyhow, bail};
use clap::ValueEnum;
use gradscope_core::{AnyRounding, Clip, Init, LossScaler};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

/// An enum of named choices: a clap `ValueEnum` whose variants have one canonical name (and optional
/// aliases, listed in their help), `name()`, `Display`, `FromStr` (any case, aliases too) and `Serialize`,
/// all from one list.
macro_rules! choice {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident: $what:literal {
            $($(#[doc = $doc:literal])* $variant:ident = $name:literal $(| $alias:literal)*,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
        pub enum $enum {
            $($(#[doc = $doc])* #[value(name = $name $(, alias = $alias)*)] #[serde(rename = $name)] $variant,)+
        }

        impl $enum {
            /// Every choice, in declaration order.
            pub const ALL: &[$enum] = &[$($enum::$variant),+];

            /// The canonical name.
            pub fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)+
                }
            }
        }

        impl fmt::Display for $enum {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $enum {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> Result<$enum> {
                parse_value(s, $what)
            }
        }
    };
}

choice! {
    /// A number format (widest range first).
    pub enum Precision: "precision" {
        /// IEEE binary64 (the reference).
        F64 = "f64",
        /// IEEE binary32.
        F32 = "f32",
        /// bfloat16 (f32's range, 8 significand bits), summing in f32; a software format on MCUs.
        Bf16 = "bf16",
        /// Q16.16 fixed point in an i32.
        I16F16 = "i16f16",
        /// Q8.24 fixed point in an i32.
        I8F24 = "i8f24",
        /// IEEE binary16 (±65504, 11 significand bits), summing in f32; a software format on MCUs.
        F16 = "f16",
        /// Q15 (CMSIS q15_t) fixed point in an i16.
        I1F15 = "i1f15",
    }
}

impl Precision {
    /// A binary floating-point format (the float-only layers run in it).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Precision::F32 | Precision::F64 | Precision::F16 | Precision::Bf16
        )
    }
}

/// Run `$body` with the scalar type of a [`Precision`] bound to the type name `$s`.
#[macro_export]
macro_rules! with_scalar {
    ($p:expr, $s:ident => $body:expr) => {
        match $p {
            $crate::options::Precision::F32 => {
                type $s = f32;
                $body
            }
            $crate::options::Precision::F64 => {
                type $s = f64;
                $body
            }
            $crate::options::Precision::Bf16 => {
                type $s = gradscope_core::bf16;
                $body
            }
            $crate::options::Precision::F16 => {
                type $s = gradscope_core::f16;
                $body
            }
            $crate::options::Precision::I16F16 => {
                type $s = gradscope_core::I16F16;
                $body
            }
            $crate::options::Precision::I8F24 => {
                type $s = gradscope_core::I8F24;
                $body
            }
            $crate::options::Precision::I1F15 => {
                type $s = gradscope_core::I1F15;
                $body
            }
        }
    };
}

choice! {
    /// Rounding of fixed-point results (floats always round to nearest-even).
    pub enum Rounding: "rounding" {
        /// Toward −∞ (an arithmetic shift).
        Floor = "floor",
        /// To nearest, ties to even.
        Nearest = "nearest",
        /// Up with probability equal to the discarded fraction (unbiased).
        Stochastic = "stochastic",
    }
}

impl Rounding {
    /// The core's rounding mode; stochastic rounding draws from its own stream of `seed`.
    pub fn build(self, seed: u64) -> AnyRounding<Xoshiro128PlusPlus> {
        match self {
            Rounding::Floor => AnyRounding::Floor,
            Rounding::Nearest => AnyRounding::NearestEven,
            Rounding::Stochastic => {
                AnyRounding::Stochastic(Xoshiro128PlusPlus::seed_from_u64(seed ^ 0x5eed))
            }
        }
    }
}

choice! {
    /// A weight initializer by name, with PyTorch's default parameters.
    pub enum InitName: "initializer" {
        /// All zeros.
        Zeros = "zeros",
        /// All 0.1.
        Constant = "constant",
        /// U(0, 1).
        Uniform = "uniform",
        /// N(0, 1).
        Normal = "normal",
        /// N(0, 1) truncated to [−2, 2].
        TruncatedNormal = "truncated_normal",
        /// Glorot & Bengio 2010, uniform (Keras: glorot_uniform).
        XavierUniform = "xavier_uniform" | "glorot_uniform",
        /// Glorot & Bengio 2010, normal (Keras: glorot_normal).
        XavierNormal = "xavier_normal" | "glorot_normal",
        /// He et al. 2015 for ReLU, uniform (Keras: he_uniform).
        KaimingUniform = "kaiming_uniform" | "he_uniform",
        /// He et al. 2015 for ReLU, normal (Keras: he_normal).
        KaimingNormal = "kaiming_normal" | "he_normal",
        /// U(±√(3/fan_in)).
        LecunUniform = "lecun_uniform",
        /// N(0, 1/fan_in).
        LecunNormal = "lecun_normal",
        /// Scaled orthogonal matrix (Saxe et al. 2014).
        Orthogonal = "orthogonal",
        /// The identity matrix (IRNN).
        Identity = "identity",
        /// U(±1/√fan_in), Glorot & Bengio's "standard" heuristic.
        Standard = "standard",
    }
}

impl InitName {
    /// The core's initializer with its default parameters.
    pub fn init(self) -> Result<Init> {
        Init::from_name(self.name()).map_err(|e| anyhow!("{e}"))
    }
}

choice! {
    /// A training task.
    pub enum Task: "task" {
        /// XOR of two inputs (four samples).
        Xor = "xor",
        /// Two interleaved spirals (Lang & Witbrock 1988).
        Spiral = "spiral",
        /// Regression of y = 0.8·sin(πx).
        Sine = "sine",
        /// Hochreiter & Schmidhuber's adding problem, 20 steps (50 or 100 with `--steps`).
        Adding = "adding",
        /// The 8×8 handwritten digits.
        Digits = "digits",
    }
}

choice! {
    /// An optimizer.
    pub enum OptimizerKind: "optimizer" {
        /// SGD, with `--momentum` (0 for plain SGD) and coupled L2 weight decay.
        Sgd = "sgd",
        /// Adam with coupled L2 weight decay.
        Adam = "adam",
        /// Adam with decoupled weight decay (Loshchilov & Hutter 2019).
        AdamW = "adamw",
    }
}

choice! {
    /// A recurrent cell.
    pub enum Cell: "cell" {
        /// Elman RNN with tanh.
        Rnn = "rnn",
        /// Elman RNN with ReLU and identity recurrent weights (Le et al. 2015).
        Irnn = "irnn",
        /// LSTM (float formats only).
        Lstm = "lstm",
        /// GRU (float formats only).
        Gru = "gru",
    }
}

impl Cell {
    /// A gated cell (float-only, with a gate bias).
    pub fn is_gated(self) -> bool {
        matches!(self, Cell::Lstm | Cell::Gru)
    }
}

/// Parse a [`ValueEnum`] from its name or an alias (any case), with an error that lists the choices.
fn parse_value<T: ValueEnum>(s: &str, what: &str) -> Result<T> {
    T::from_str(s, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        anyhow!("unknown {what} '{s}': choose one of {}", names.join(", "))
    })
}

/// Parse an activation, `name` or `name:value` (a clap value parser).
pub fn parse_act(s: &str) -> std::result::Result<gradscope_core::Act, String> {
    gradscope_core::Act::from_name(s).map_err(|e| e.to_string())
}

/// A loss by name ([`gradscope_core::Loss::NAMES`], or mse, bce, ce) as a clap value parser.
pub fn parse_loss(s: &str) -> std::result::Result<gradscope_core::Loss, String> {
    gradscope_core::Loss::from_name(s).ok_or_else(|| {
        format!(
            "unknown loss {s:?}; expected one of {} (or bce, ce)",
            gradscope_core::Loss::NAMES.join(", ")
        )
    })
}

/// [`parse_clip`] as a clap value parser.
pub fn parse_clip_arg(s: &str) -> std::result::Result<Clip, String> {
    parse_clip(s).map_err(|e| e.to_string())
}

/// [`Scaling`]'s parser as a clap value parser.
pub fn parse_scaling(s: &str) -> std::result::Result<Scaling, String> {
    s.parse::<Scaling>().map_err(|e| e.to_string())
}

/// Parse a clipping policy: `none`, `value:V`, `norm:N` (each tensor's L2 norm), `global:N` (PyTorch's
/// `clip_grad_norm_`) or `agc:L` (adaptive gradient clipping with λ = L), thresholds positive.
pub fn parse_clip(s: &str) -> Result<Clip> {
    const FORMS: &str = "none, value:V, norm:N, global:N or agc:L with a positive number";
    if s == "none" {
        return Ok(Clip::None);
    }
    let bad = || anyhow!("malformed --clip '{s}': use {FORMS}");
    let (kind, v) = s.split_once(':').ok_or_else(bad)?;
    let v: f64 = v
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .ok_or_else(bad)?;
    Ok(match kind {
        "value" => Clip::Value(v),
        "norm" => Clip::Norm(v),
        "global" => Clip::Global(v),
        "agc" => Clip::Agc(v),
        _ => return Err(bad()),
    })
}

/// Loss scaling, as given on the command line: `none`, `static:S` or `dynamic` / `dynamic:S` (initial scale
/// S, default 2¹⁶, doubling after [`GROWTH_INTERVAL`] clean steps).
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "scale", rename_all = "lowercase")]
pub enum Scaling {
    /// No scaling.
    None,
    /// A fixed scale.
    Static(f64),
    /// Dynamic scaling from this initial scale.
    Dynamic(f64),
}

/// Clean steps after which a dynamic loss scale doubles.
pub const GROWTH_INTERVAL: u32 = 200;

impl Scaling {
    /// The core's loss scaler (none for [`Scaling::None`]).
    pub fn scaler(self) -> Result<Option<LossScaler>> {
        let e = |e: gradscope_core::ScaleError| anyhow!("{e}");
        Ok(match self {
            Scaling::None => None,
            Scaling::Static(s) => Some(LossScaler::fixed(s).map_err(e)?),
            Scaling::Dynamic(s) => Some(LossScaler::dynamic(s, GROWTH_INTERVAL).map_err(e)?),
        })
    }
}

impl fmt::Display for Scaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scaling::None => f.write_str("none"),
            Scaling::Static(s) => write!(f, "static {s}"),
            Scaling::Dynamic(s) => write!(f, "dynamic from {s}"),
        }
    }
}

impl FromStr for Scaling {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Scaling> {
        let bad = || {
            anyhow!(
                "malformed --loss-scale '{s}': use none, static:S, dynamic or dynamic:S with S > 0"
            )
        };
        let num = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(bad)
        };
        Ok(match s.split_once(':') {
            None if s == "none" => Scaling::None,
            None if s == "dynamic" => Scaling::Dynamic(65536.0),
            Some(("static", v)) => Scaling::Static(num(v)?),
            Some(("dynamic", v)) => Scaling::Dynamic(num(v)?),
            _ => return Err(bad()),
        })
    }
}

/// Check that `v` lies in `range`, naming the option and the range otherwise.
pub fn in_range<T: PartialOrd + fmt::Display + Copy>(
    what: &str,
    v: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T> {
    if range.contains(&v) {
        Ok(v)
    } else {
        bail!(
            "{what} {v} is not supported: choose {} to {}",
            range.start(),
            range.end()
        )
    }
}

/// Check that `v` is one of `allowed`, listing them otherwise.
pub fn one_of(what: &str, v: usize, allowed: &[usize]) -> Result<usize> {
    if allowed.contains(&v) {
        Ok(v)
    } else {
        bail!("{what} {v} is not supported: choose one of {allowed:?}")
    }
}

/// Check that `v` is a finite number satisfying `ok`, naming the option and the requirement otherwise.
pub fn number(what: &str, v: f64, ok: impl Fn(f64) -> bool, requirement: &str) -> Result<f64> {
    if v.is_finite() && ok(v) {
        Ok(v)
    } else {
        bail!("{what} must be {requirement}, got {v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_one_canonical_spelling_with_aliases() {
        assert_eq!("I16F16".parse::<Precision>().unwrap(), Precision::I16F16);
        assert_eq!(Precision::I16F16.to_string(), "i16f16");
        assert_eq!(
            "he_normal".parse::<InitName>().unwrap(),
            InitName::KaimingNormal
        );
        assert_eq!(
            "glorot_uniform".parse::<InitName>().unwrap(),
            InitName::XavierUniform
        );
        let e = "he".parse::<InitName>().unwrap_err().to_string();
        assert!(
            e.contains("kaiming_normal") && e.contains("standard"),
            "{e}"
        );
        // Every name is one of the core's, and every core name has a variant.
        for v in InitName::value_variants() {
            assert!(v.init().is_ok(), "{v}");
        }
        assert_eq!(InitName::value_variants().len(), Init::NAMES.len());
    }

    #[test]
    fn clip_and_scaling_specs_parse_and_reject_malformed_ones() {
        assert_eq!(parse_clip("none").unwrap(), Clip::None);
        assert_eq!(parse_clip("global:1.5").unwrap(), Clip::Global(1.5));
        assert_eq!(parse_clip("agc:0.01").unwrap(), Clip::Agc(0.01));
        for bad in [
            "",
            "global",
            "global:",
            "global:-1",
            "global:nan",
            "max:1",
            "value:0",
        ] {
            let e = parse_clip(bad).unwrap_err().to_string();
            assert!(e.contains("malformed --clip"), "{bad}: {e}");
        }
        assert_eq!(
            "dynamic".parse::<Scaling>().unwrap(),
            Scaling::Dynamic(65536.0)
        );
        assert_eq!("static:8".parse::<Scaling>().unwrap(), Scaling::Static(8.0));
        assert!("static:0".parse::<Scaling>().is_err() && "x".parse::<Scaling>().is_err());
    }
}
