//! Bring your own model: a PyTorch network emitted by `gradscope inspect --emit-rust`, trained on the device.
//!
//! `firmware/models/mlp_f32.rs` and `mlp_i16f16.rs` hold `tests/data/inspect/mlp.safetensors` (5-12-7-3,
//! tanh, sigmoid, logits) and its 16-sample batch in f32 and I16F16; `lstm_f32.rs` holds
//! `tests/data/inspect/lstm.safetensors` (an LSTM of 3 inputs and 10 units over 20 steps, with a linear head
//! to 2) and its 12 sequences in f32 (the commands are in `firmware/models/README.md`; a lab test checks the
//! files are current). Each trains with full-batch SGD on its batch; the loss per epoch and a digest of every
//! loss and the final weights are printed, and the digests must equal the host's on the same files
//! (`crates/gradscope-lab/tests/firmware_parity.rs`).
#![no_std]
#![no_main]

use cortex_m as _;
use gradscope_core::parity::train_batch;
use gradscope_firmware::{exit, stack};

// Every emitted constant is public; a binary need not use them all.
#[allow(dead_code)]
mod mlp_f32 {
    include!("../../models/mlp_f32.rs");
}
#[allow(dead_code)]
mod mlp_i16f16 {
    include!("../../models/mlp_i16f16.rs");
}
// About 25 KB of stack (states, cells and gates of 20 steps, passed by value): more than the micro:bit's RAM.
#[cfg(not(small_ram))]
#[allow(dead_code)]
mod lstm_f32 {
    include!("../../models/lstm_f32.rs");
}

/// Full-batch SGD steps (shared with the host's check).
const EPOCHS: usize = gradscope_core::parity::BYOM_EPOCHS;

macro_rules! train {
    ($m:ident, $lr:expr) => {{
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
                    $lr,
                    &mut |epoch, loss| {
                        defmt::println!(
                            "byom {=str} epoch {=usize} loss {=f64}",
                            stringify!($m),
                            epoch,
                            loss
                        );
                        if epoch == 1 {
                            first = loss;
                        }
                        last = loss;
                    },
                );
                defmt::println!("digest byom/{=str} {=u64:x}", stringify!($m), d);
                // The self-check: on its own batch the loss falls by at least a quarter.
                last < 0.75 * first
            }
            Err(_) => {
                defmt::println!("byom {=str}: an activation this core lacks", stringify!($m));
                false
            }
        }
    }};
}

#[cortex_m_rt::entry]
fn main() -> ! {
    stack::paint();
    defmt::println!("gradscope byom {=str}", env!("CARGO_PKG_VERSION"));
    use gradscope_core::parity::BYOM_LR;
    let mlp_f32 = train!(mlp_f32, BYOM_LR);
    let mlp_q = train!(mlp_i16f16, BYOM_LR);
    #[cfg(not(small_ram))]
    let lstm = train!(lstm_f32, gradscope_core::parity::BYOM_LR_RECURRENT);
    #[cfg(small_ram)]
    let lstm = true;
    defmt::println!(
        "stack peak {=usize} of {=usize} bytes",
        stack::peak(),
        stack::size()
    );
    let ok = mlp_f32 && mlp_q && lstm;
    if !ok {
        defmt::println!(
            "self-check failed: learned: mlp f32 {=bool}, mlp i16f16 {=bool}, lstm f32 {=bool}",
            mlp_f32,
            mlp_q,
            lstm
        );
    }
    exit(ok)
}
