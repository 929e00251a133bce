//! How far each activation backend is from the f64 formula: the numbers behind the core README's accuracy
//! table (`gradscope activations --markdown` prints it).

use gradscope_core::activation::{Activate, FastAct};
use gradscope_core::{Act, I1F15, I8F24, I16F16, NearestEven, Scalar};

/// An evaluation backend of the activations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// f32 through libm.
    Libm32,
    /// f32 through micromath.
    Fast32,
    /// Q16.16 tables.
    I16F16,
    /// Q8.24 tables.
    I8F24,
    /// Q15 tables.
    I1F15,
}

impl Backend {
    /// Every backend, in table order.
    pub const ALL: [Backend; 5] = [
        Backend::Libm32,
        Backend::Fast32,
        Backend::I16F16,
        Backend::I8F24,
        Backend::I1F15,
    ];

    /// Column title.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Libm32 => "f32 libm",
            Backend::Fast32 => "f32 micromath",
            Backend::I16F16 => "I16F16",
            Backend::I8F24 => "I8F24",
            Backend::I1F15 => "I1F15",
        }
    }

    /// f(x) and f′(x) at the input `x` rounded to the backend's type (nearest-even), with that rounded input
    /// as f64; `None` if `x` is outside the type's range.
    pub fn eval(self, act: &Act, x: f64) -> Option<(f64, f64, f64)> {
        fn run<S: Scalar, A: Activate<S>>(a: &A, x: f64) -> Option<(f64, f64, f64)> {
            let (xs, fl) = S::from_f64(x, &mut NearestEven);
            if fl.contains(gradscope_core::Flags::OVERFLOW) {
                return None;
            }
            let (y, _) = a.f(xs, &mut NearestEven);
            let (d, _) = a.df(xs, y, &mut NearestEven);
            Some((xs.to_f64(), y.to_f64(), d.to_f64()))
        }
        match self {
            Backend::Libm32 => run::<f32, _>(act, x),
            Backend::Fast32 => run::<f32, _>(&FastAct(*act), x),
            Backend::I16F16 => run::<I16F16, _>(act, x),
            Backend::I8F24 => run::<I8F24, _>(act, x),
            Backend::I1F15 => run::<I1F15, _>(act, x),
        }
    }
}

/// The f64 reference: f(x) and f′(x).
pub fn reference(act: &Act, x: f64) -> (f64, f64) {
    let (y, _) = Activate::<f64>::f(act, x, &mut NearestEven);
    let (d, _) = Activate::<f64>::df(act, x, y, &mut NearestEven);
    (y, d)
}

/// Maximum absolute error of f and of f′ against f64 over `xs`, for one backend. Inputs the backend cannot
/// represent are skipped; so are results whose exact value lies beyond the backend's range (they saturate,
/// flagged).
pub fn max_error(backend: Backend, act: &Act, xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = match backend {
        Backend::I16F16 => (I16F16::MIN.to_f64(), I16F16::MAX.to_f64()),
        Backend::I8F24 => (I8F24::MIN.to_f64(), I8F24::MAX.to_f64()),
        Backend::I1F15 => (I1F15::MIN.to_f64(), I1F15::MAX.to_f64()),
        _ => (f64::MIN, f64::MAX),
    };
    let (mut ef, mut ed) = (0.0f64, 0.0f64);
    for x in xs {
        let Some((xq, y, d)) = backend.eval(act, x) else {
            continue;
        };
        let (ry, rd) = reference(act, xq);
        if (lo..=hi).contains(&ry) {
            ef = ef.max((y - ry).abs());
        }
        if (lo..=hi).contains(&rd) {
            ed = ed.max((d - rd).abs());
        }
    }
    (ef, ed)
}

/// The accuracy table over x = k/256 for |x| <= 20, as markdown: one row per activation, f and f′ per backend.
pub fn markdown_table() -> String {
    let xs = || (-20 * 256..=20 * 256).map(|k| k as f64 / 256.0);
    let mut out = String::from("| activation |");
    for b in Backend::ALL {
        out.push_str(&format!(" {} f | {} f′ |", b.name(), b.name()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|---|".repeat(Backend::ALL.len()));
    out.push('\n');
    for act in Act::all() {
        out.push_str(&format!("| `{act}` |"));
        for b in Backend::ALL {
            let (ef, ed) = max_error(b, &act, xs());
            out.push_str(&format!(" {} | {} |", sci(ef), sci(ed)));
        }
        out.push('\n');
    }
    out
}

fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else {
        format!("{x:.1e}")
    }
}
