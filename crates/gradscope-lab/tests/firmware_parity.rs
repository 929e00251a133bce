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
#[allow(dead_code)]
mod mlp_f32 {
    include!("../../../firmware/models/mlp_f32.rs");
}
#[allow(dead_code)]
mod mlp_i16f16 {
    include!("../../../firmware/models/mlp_i16f16.rs");
}
#[allow(dead_code)]
mod lstm_f32 {
    include!("../../../firmware/models/lstm_f32.rs");
}

/// The `byom` binary's digest lines, computed on the host from the same files; the LSTM's only with
/// `lstm` (the micro:bit build leaves it out: it needs more stack than the board's RAM).
fn byom_lines(lstm: bool) -> Vec<String> {
    use gradscope_core::parity::{BYOM_EPOCHS, BYOM_LR, BYOM_LR_RECURRENT, train_batch};
    macro_rules! line {
        ($m:ident, $lr:expr) => {{
            let mut net = $m::net().expect("the core knows the model's activations");
            let d = train_batch(
                &mut net,
                $m::SAMPLES,
                $m::sample,
                $m::LOSS,
                BYOM_EPOCHS,
                $lr,
                &mut |_, _| {},
            );
            format!("digest byom/{} {d:x}", stringify!($m))
        }};
    }
    let mut lines = vec![line!(mlp_f32, BYOM_LR), line!(mlp_i16f16, BYOM_LR)];
    if lstm {
        lines.push(line!(lstm_f32, BYOM_LR_RECURRENT));
    }
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
    // in f32, I16F16 (two roundings), I1F15 (the `demo` binary), f16 and bf16 (the `half` binary); the digits
    // CNN in f32 and I16F16 (`demo`); the fixed-point kernels (`kernel/*`: `demo`, and `half` under a watching
    // probe).
    assert_eq!(host.len(), 128, "{} lines", host.len());
    // Users' models emitted by `inspect --emit-rust` and trained (the `byom` binary): 3 lines on the M4F, 2
    // on the M0.
    for (args, lstm) in [(&["run", "--release"][..], true), (&["run-m0"][..], false)] {
        let host = [host.clone(), byom_lines(lstm)].concat();
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
