//! Picks the memory layout by target, so one crate serves the M4F (mps2-an386) and the M0 (micro:bit).

use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let layout = if target.starts_with("thumbv6m") {
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
