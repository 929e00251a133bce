//! Picks the memory layout by target and feature: the M4F (QEMU mps2-an386), the M0 (QEMU micro:bit), or the
//! nRF52840-DK board (`board` feature).

use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let layout = if env::var_os("CARGO_FEATURE_BOARD").is_some() {
        "memory/nrf52840.x"
    } else if target.starts_with("thumbv6m") {
        "memory/microbit.x"
    } else {
        "memory/mps2-an386.x"
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy(layout, out.join("memory.x")).expect("copy memory layout");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed={layout}");
    println!("cargo::rerun-if-changed=build.rs");
}
