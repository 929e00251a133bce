//! How far each activation backend is from the f64 formula: the numbers behind the core README's accuracy
//! table (`gradscope activations --markdown` prints it).

use gradscope_core::activation::{Activate, FastAct};
use gradscope_core::{Act, I1F15, I8F24, I16F16, NearestEven, Scalar, bf16, f16};

use crate::output::{Cell, Frame};

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
    /// IEEE half precision (evaluated in f32, rounded once).
    F16,
    /// bfloat16 (evaluated in f32, rounded once).
    Bf16,
}

impl Backend {
    /// Every backend, in table order.
    pub const ALL: [Backend; 7] = [
        Backend::Libm32,
        Backend::Fast32,
        Backend::I16F16,
        Backend::I8F24,
        Backend::I1F15,
        Backend::F16,
        Backend::Bf16,
    ];

    /// Column title.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Libm32 => "f32 libm",
            Backend::Fast32 => "f32 micromath",
            Backend::I16F16 => "I16F16",
            Backend::I8F24 => "I8F24",
            Backend::I1F15 => "I1F15",
            Backend::F16 => "f16",
            Backend::Bf16 => "bf16",
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
            Backend::F16 => run::<f16, _>(act, x),
            Backend::Bf16 => run::<bf16, _>(act, x),
        }
    }
}

/// The f64 reference: f(x) and f′(x), from the core's f64 path. That path is not its own judge:
/// `tests/golden.rs` holds it to PyTorch's float64 values within 10⁻¹² for every activation.
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
        Backend::F16 => (f16::MIN.to_f64(), f16::MAX.to_f64()),
        Backend::Bf16 => (bf16::MIN.to_f64(), bf16::MAX.to_f64()),
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

/// One activation's maximum errors: (f, f′) per backend, in [`Backend::ALL`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct AccuracyRow {
    /// The activation.
    pub act: Act,
    /// Maximum absolute error of f and of f′, per backend.
    pub errors: Vec<(f64, f64)>,
}

/// Every activation's maximum errors over x = k/256 for |x| ≤ 20.
pub fn rows() -> Vec<AccuracyRow> {
    let xs = || (-20 * 256..=20 * 256).map(|k| k as f64 / 256.0);
    Act::all()
        .iter()
        .map(|act| AccuracyRow {
            act: *act,
            errors: Backend::ALL
                .iter()
                .map(|&b| max_error(b, act, xs()))
                .collect(),
        })
        .collect()
}

/// The rows as a frame: one row per activation, f and f′ per backend.
pub fn frame(rows: &[AccuracyRow]) -> Frame {
    let mut columns = vec!["activation".to_string()];
    for b in Backend::ALL {
        columns.push(format!("{} f", b.name()));
        columns.push(format!("{} f′", b.name()));
    }
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut f = Frame::new("activations", "", &columns);
    for r in rows {
        let mut cells = vec![Cell::Code(r.act.to_string())];
        for &(ef, ed) in &r.errors {
            cells.push(Cell::Approx(ef));
            cells.push(Cell::Approx(ed));
        }
        f.push(cells);
    }
    f
}

/// The core README's accuracy table, as Markdown.
pub fn markdown_table() -> String {
    frame(&rows()).markdown()
}
