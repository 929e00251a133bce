//! Bring your own model: a PyTorch network emitted by `gradscope inspect --emit-rust`, trained on the device.
//!
//! `firmware/models/mlp_f32.rs` and `mlp_i16f16.rs` hold `tests/data/inspect/mlp.safetensors` (5-12-7-3,
//! tanh, sigmoid, logits) and its 16-sample batch in f32 and I16F16 (the commands are in
//! `firmware/models/README.md`; a lab test checks the files are current). Each trains with full-batch SGD
//! on its batch; the loss per epoch and a digest of every loss and the final weights are printed, and the
//! digests must equal the host's on the same files (`crates/gradscope-lab/tests/firmware_parity.rs`).
#![no_std]
#![no_main]

use cortex_m as _;
use gradscope_core::parity::train_batch;
use gradscope_firmware::{exit, stack};

mod mlp_f32 {
    include!("../../models/mlp_f32.rs");
}
mod mlp_i16f16 {
    include!("../../models/mlp_i16f16.rs");
}

/// Full-batch SGD steps and their learning rate (shared with the host's check).
const EPOCHS: usize = gradscope_core::parity::BYOM_EPOCHS;
const LR: f64 = gradscope_core::parity::BYOM_LR;

macro_rules! train {
    ($m:ident) => {{
        match $m::net() {
            Ok(mut net) => {
                let mut first = f64::NAN;
                let mut last = f64::NAN;
                let d = train_batch(
                    &mut net,
                    $m::SAMPLES,
                    $m::sample,
                    $m::LOSS,
                    EPOCHS,
                    LR,
                    &mut |epoch, loss| {
                        defmt::println!(
                            "byom {=str} epoch {=usize} loss {=f64}",
                            $m::FORMAT,
                            epoch,
                            loss
                        );
                        if epoch == 1 {
                            first = loss;
                        }
                        last = loss;
                    },
                );
                defmt::println!("digest byom/mlp/{=str} {=u64:x}", $m::FORMAT, d);
                // The self-check: on its own batch the loss falls by at least a quarter.
                last < 0.75 * first
            }
            Err(_) => {
                defmt::println!("byom {=str}: an activation this core lacks", $m::FORMAT);
                false
            }
        }
    }};
}

#[cortex_m_rt::entry]
fn main() -> ! {
    stack::paint();
    defmt::println!("gradscope byom {=str}", env!("CARGO_PKG_VERSION"));
    let f32_learned = train!(mlp_f32);
    let q_learned = train!(mlp_i16f16);
    defmt::println!(
        "stack peak {=usize} of {=usize} bytes",
        stack::peak(),
        stack::size()
    );
    let ok = f32_learned && q_learned;
    if !ok {
        defmt::println!(
            "self-check failed: f32 learned {=bool}, i16f16 learned {=bool}",
            f32_learned,
            q_learned
        );
    }
    exit(ok)
}
