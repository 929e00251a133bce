//! Generates the knot tables of the fixed-point activations from f64 reference formulas (libm), so that no
//! table value is typed in. Each table samples a function on u ∈ [0, 24] at step 1/64 (1537 knots), stored in
//! Q2.30 (`i32`), rounded to nearest, up to where the stored values stop changing (plus two knots).

use std::fmt::Write as _;

const STEP_LOG2: u32 = 6;
const RANGE: f64 = 24.0;
const KNOTS: usize = (RANGE as usize) * (1 << STEP_LOG2) + 1;
const FRAC: u32 = 30;

fn sigmoid(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}
fn phi_cdf(u: f64) -> f64 {
    0.5 * (1.0 + libm::erf(u / std::f64::consts::SQRT_2))
}
fn phi_pdf(u: f64) -> f64 {
    (-0.5 * u * u).exp() / (2.0 * std::f64::consts::PI).sqrt()
}
const GELU_C: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)
const GELU_A: f64 = 0.044715;
fn gelu_tanh_gate(u: f64) -> f64 {
    0.5 * (1.0 + (GELU_C * (u + GELU_A * u * u * u)).tanh())
}
fn gelu_tanh_deriv(u: f64) -> f64 {
    let inner = GELU_C * (u + GELU_A * u * u * u);
    let t = inner.tanh();
    0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * u * u)
}

/// A table: constant name, what it holds (for its doc comment), and the f64 formula.
type Spec = (&'static str, &'static str, fn(f64) -> f64);

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // Dual 16-bit multiply-accumulates (src/dsp.rs) on the Cortex-M4/M7; stable Rust has no DSP target cfg.
    if std::env::var("TARGET").is_ok_and(|t| t.starts_with("thumbv7em")) {
        println!("cargo::rustc-cfg=gradscope_dsp");
    }
    // Per-kind copies of the activation loops with their formulas inlined (src/activation/mod.rs, `per_kind!`)
    // trade flash for speed: on hosts and the Cortex-M4/M7. The M0 demo no longer fit its 256 KiB with them.
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os != "none")
        || std::env::var("TARGET").is_ok_and(|t| t.starts_with("thumbv7em"))
    {
        println!("cargo::rustc-cfg=gradscope_per_kind");
    }
    // ARMv6-M and ARMv8-M Baseline have no 32 × 32 → 64-bit multiply (src/activation/fixed.rs, `mul64`).
    if std::env::var("TARGET")
        .is_ok_and(|t| t.starts_with("thumbv6m") || t.starts_with("thumbv8m.base"))
    {
        println!("cargo::rustc-cfg=gradscope_no_long_mul");
    }
    let tables: [Spec; 8] = [
        ("SIGMOID", "σ(u)", sigmoid),
        ("TANH", "tanh(u)", f64::tanh),
        ("EXPM1_NEG", "e^(−u) − 1", |u| (-u).exp_m1()),
        ("SOFTPLUS_NEG", "ln(1 + e^(−u))", |u| (-u).exp().ln_1p()),
        ("PHI", "Φ(u), the standard normal CDF", phi_cdf),
        (
            "GELU_ERF_D",
            "Φ(u) + u·φ(u), the derivative of u·Φ(u)",
            |u| phi_cdf(u) + u * phi_pdf(u),
        ),
        (
            "GELU_TANH_G",
            "½(1 + tanh(√(2/π)(u + 0.044715u³)))",
            gelu_tanh_gate,
        ),
        (
            "GELU_TANH_D",
            "the derivative of u·GELU_TANH_G(u)",
            gelu_tanh_deriv,
        ),
    ];
    let mut out = String::new();
    writeln!(
        out,
        "/// log2 of the knot spacing's reciprocal: knots are 2^-{STEP_LOG2} apart."
    )
    .unwrap();
    writeln!(out, "pub(crate) const STEP_LOG2: u32 = {STEP_LOG2};").unwrap();
    writeln!(
        out,
        "/// Fraction bits of the stored knot values (Q2.{FRAC})."
    )
    .unwrap();
    writeln!(out, "pub(crate) const TABLE_FRAC: u32 = {FRAC};").unwrap();
    for (name, what, f) in tables {
        let knots: Vec<i32> = (0..KNOTS)
            .map(|k| {
                let u = k as f64 / (1u32 << STEP_LOG2) as f64;
                let v = (f(u) * (1u64 << FRAC) as f64).round_ties_even();
                assert!(
                    v.abs() < i32::MAX as f64,
                    "{name} overflows Q2.{FRAC} at {u}"
                );
                v as i32
            })
            .collect();
        // Where the stored values stop changing (most of these functions are flat at 30 bits well before
        // u = 24), keep two more knots and drop the rest: the lookup reads past a table's end as its last value,
        // and with two equal knots at the end every interpolation equals the full table's (M0 flash).
        let last = knots[KNOTS - 1];
        let flat = knots.iter().rposition(|&v| v != last).map_or(0, |k| k + 1);
        let len = (flat + 2).min(KNOTS);
        writeln!(
            out,
            "/// {what} at u = k/2^{STEP_LOG2}, k = 0..{len}, in Q2.{FRAC}; {last} from k = {flat} to u = {RANGE}."
        )
        .unwrap();
        write!(out, "pub(crate) static {name}: [i32; {len}] = [").unwrap();
        for v in &knots[..len] {
            write!(out, "{v},").unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(std::path::Path::new(&dir).join("activation_tables.rs"), out)
        .expect("write tables");
}
