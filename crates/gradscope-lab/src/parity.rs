//! The host side of the firmware parity check: the same `digest <name> <hex>` lines the firmware prints.

use anyhow::{Context, Result, bail};
use gradscope_core::parity::DigitSample;

/// Digits samples the firmware keeps in flash: the first [`SUBSET`] rows of the bundled file.
pub const SUBSET: usize = 200;
/// Of those, the first [`TRAIN`] train and the rest test.
pub const TRAIN: usize = 160;

/// The firmware's digits subset, parsed from the bundled file as raw pixels (0..=16) and labels.
pub fn digits_subset() -> Result<Vec<DigitSample>> {
    let text = crate::data::digits_csv()?;
    let mut out = Vec::with_capacity(SUBSET);
    for (n, line) in text.lines().take(SUBSET).enumerate() {
        let v: Vec<u8> = line
            .split(',')
            .map(|c| c.trim().parse::<u8>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("digits line {}", n + 1))?;
        let (Some(pixels), Some(&label)) = (v.get(..64), v.get(64)) else {
            bail!("digits line {}: expected 65 values", n + 1);
        };
        let mut p = [0u8; 64];
        p.copy_from_slice(pixels);
        out.push((p, label));
    }
    Ok(out)
}

/// Every parity line, in the firmware's order: the `demo` binary's, then the `half` binary's.
pub fn digest_lines() -> Result<Vec<String>> {
    let mut out = Vec::new();
    gradscope_core::parity::init_digests(&mut |name, format, d| {
        out.push(format!("digest init/{name}/{format} {d:x}"))
    });
    gradscope_core::parity::backprop_digests(&mut |name, format, d| {
        out.push(format!("digest backprop/{name}/{format} {d:x}"))
    });
    gradscope_core::parity::kernel_digests(&mut |name, format, d| {
        out.push(format!("digest {name}/{format} {d:x}"))
    });
    let digits = digits_subset()?;
    let (train, test) = digits.split_at(TRAIN.min(digits.len()));
    gradscope_core::parity::train_digests(
        Some((train, test)),
        &mut |name, format, d| out.push(format!("digest {name}/{format} {d:x}")),
        &mut |_, _, _, _, _| {},
    );
    out.extend(half_digest_lines()?);
    Ok(out)
}

/// The lines of the firmware's `half` binary: the 16-bit float workloads, then the watched kernels.
pub fn half_digest_lines() -> Result<Vec<String>> {
    let mut out = Vec::new();
    let digits = digits_subset()?;
    let (train, test) = digits.split_at(TRAIN.min(digits.len()));
    gradscope_core::parity::half_digests(
        Some((train, test)),
        &mut |kind, name, format, d| out.push(format!("digest {kind}/{name}/{format} {d:x}")),
        &mut |_, _, _, _, _| {},
    );
    gradscope_core::parity::watched_digests(&mut |name, format, d| {
        out.push(format!("digest {name}/{format} {d:x}"))
    });
    Ok(out)
}

/// One epoch of a firmware training workload: task, format, epoch, mean loss, held-out accuracy (NaN for XOR).
pub type EpochPoint = (String, String, usize, f64, f64);

/// The training curves of the firmware's workloads, computed on the host.
pub fn train_curves() -> Result<Vec<EpochPoint>> {
    let digits = digits_subset()?;
    let (train, test) = digits.split_at(TRAIN.min(digits.len()));
    let mut out = Vec::new();
    gradscope_core::parity::train_digests(
        Some((train, test)),
        &mut |_, _, _| {},
        &mut |t, f, e, l, a| out.push((t.to_string(), f.to_string(), e, l, a)),
    );
    gradscope_core::parity::half_digests(
        Some((train, test)),
        &mut |_, _, _, _| {},
        &mut |t, f, e, l, a| out.push((t.to_string(), f.to_string(), e, l, a)),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firmware_workloads_learn() {
        let curves = train_curves().unwrap();
        let last = |task: &str, format: &str| {
            curves
                .iter()
                .rev()
                .find(|c| c.0 == task && c.1 == format)
                .cloned()
                .unwrap()
        };
        for f in ["f32", "I16F16", "f16", "bf16"] {
            assert!(last("xor", f).3 < 0.05, "xor {f}: {:?}", last("xor", f));
            assert!(
                last("digits", f).4 >= 0.9,
                "digits {f}: {:?}",
                last("digits", f)
            );
        }
        // I1F15's logit lives in (−1, 1): binary cross-entropy cannot go below ln(1 + e^−1) ≈ 0.3133, and XOR
        // stops right there; digits learn, but far less than in the wider formats.
        let floor = (1.0 + (-1.0f64).exp()).ln();
        let x = last("xor", "I1F15").3;
        assert!(
            x >= floor - 1e-3 && x < floor + 0.01,
            "xor I1F15: {x}, floor {floor}"
        );
        assert!(
            last("digits", "I1F15").4 > 0.4,
            "{:?}",
            last("digits", "I1F15")
        );
        // The numbers README quotes (the firmware computes the same bits: crates/gradscope-lab/tests/firmware_parity.rs).
        assert_eq!(format!("{:.3}", last("xor", "f32").3), "0.036");
        assert_eq!(format!("{:.3}", last("xor", "I1F15").3), "0.313");
        assert_eq!(last("digits", "f32").4, 0.925);
        assert_eq!(last("digits", "I16F16").4, 0.925);
        assert_eq!(last("digits", "I1F15").4, 0.5);
        // The CNN (3×3 convolution, max pool, linear) after 8 epochs on 160 digits: 37 of 40 held out right, in
        // f32 and I16F16 alike.
        assert_eq!(last("cnn", "f32").4, 0.925);
        assert_eq!(last("cnn", "I16F16").4, 0.925);
    }
}
