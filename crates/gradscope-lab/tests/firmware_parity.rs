//! The firmware's parity digests (its `demo`, `half` and `byom` binaries), run under QEMU on the Cortex-M4F
//! (mps2-an386) and the Cortex-M0 (micro:bit), must equal the host's line for line: the same seed gives
//! bit-identical weights everywhere.
//!
//! Needs `qemu-system-arm`, `defmt-print`, `flip-link` and the thumb targets. Without them the test says so and passes,
//! unless `GRADSCOPE_REQUIRE_QEMU` is set (CI sets it, so there it always runs).

use std::path::Path;
use std::process::Command;

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
}

// The models the `byom` binary trains, emitted by `gradscope inspect --emit-rust` (see firmware/models/).
mod mlp_f32 {
    include!("../../../firmware/models/mlp_f32.rs");
}
mod mlp_i16f16 {
    include!("../../../firmware/models/mlp_i16f16.rs");
}

/// The `byom` binary's digest lines, computed on the host from the same files.
fn byom_lines() -> Vec<String> {
    use gradscope_core::parity::{BYOM_EPOCHS, BYOM_LR, train_batch};
    let mut lines = Vec::new();
    let mut net = mlp_f32::net().expect("the core knows the model's activations");
    let d = train_batch(
        &mut net,
        mlp_f32::SAMPLES,
        mlp_f32::sample,
        mlp_f32::LOSS,
        BYOM_EPOCHS,
        BYOM_LR,
        &mut |_, _| {},
    );
    lines.push(format!("digest byom/mlp/{} {d:x}", mlp_f32::FORMAT));
    let mut net = mlp_i16f16::net().expect("the core knows the model's activations");
    let d = train_batch(
        &mut net,
        mlp_i16f16::SAMPLES,
        mlp_i16f16::sample,
        mlp_i16f16::LOSS,
        BYOM_EPOCHS,
        BYOM_LR,
        &mut |_, _| {},
    );
    lines.push(format!("digest byom/mlp/{} {d:x}", mlp_i16f16::FORMAT));
    lines
}

fn firmware_digests(cargo_args: &[&str]) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware");
    let out = Command::new(env!("CARGO"))
        .args(cargo_args)
        .current_dir(&dir)
        .env("QEMU_TIMEOUT", "300")
        .output()
        .expect("run cargo in firmware/");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "firmware `cargo {}` failed ({}):\n{stdout}\n{}",
        cargo_args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with("digest "))
        .map(str::to_string)
        .collect()
}

#[test]
fn firmware_digests_equal_the_hosts_on_m4f_and_m0() {
    if !(on_path("qemu-system-arm") && on_path("defmt-print") && on_path("flip-link")) {
        assert!(
            std::env::var_os("GRADSCOPE_REQUIRE_QEMU").is_none(),
            "GRADSCOPE_REQUIRE_QEMU is set but qemu-system-arm, defmt-print or flip-link is not on PATH"
        );
        eprintln!(
            "skipped: qemu-system-arm, defmt-print and flip-link are needed (CI installs them)"
        );
        return;
    }
    let host = gradscope_lab::parity::digest_lines().expect("the host's digests");
    // Initializers, backpropagation, and the training workloads (XOR and digits, every epoch's loss included),
    // in f32, I16F16 (two roundings), I1F15 (the `demo` binary), f16 and bf16 (the `half` binary).
    assert_eq!(host.len(), 121, "{} lines", host.len());
    // A user's model emitted by `inspect --emit-rust` and trained (the `byom` binary): 2 lines.
    let host = [host, byom_lines()].concat();
    for args in [&["run", "--release"][..], &["run-m0"][..]] {
        let mut target = firmware_digests(&[args, &["--bin", "demo"]].concat());
        target.extend(firmware_digests(&[args, &["--bin", "half"]].concat()));
        target.extend(firmware_digests(&[args, &["--bin", "byom"]].concat()));
        assert_eq!(
            target,
            host,
            "firmware `cargo {}` disagrees with the host",
            args.join(" ")
        );
    }
}
