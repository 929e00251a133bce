//! Picks the memory layout by target and feature: the M4F (QEMU mps2-an386), the M0 (QEMU micro:bit), or the
//! nRF52840-DK board (`board` feature).

use std::io::Read;
use std::{env, fs, path::PathBuf};

/// Samples of the digits subset kept in flash (the lab's `parity::SUBSET`).
const SUBSET: usize = 200;
const DIGITS: &str = "../crates/gradscope-lab/data/digits.csv.gz";

/// The first `SUBSET` digits as a Rust array of (pixels, label), from the lab's committed copy.
fn digits(out: &std::path::Path) {
    let gz = fs::read(DIGITS).expect("read the digits file");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .expect("decompress the digits file");
    let mut rs = format!("pub static DIGITS: [([u8; 64], u8); {SUBSET}] = [\n");
    for (n, line) in text.lines().take(SUBSET).enumerate() {
        let v: Vec<u8> = line
            .split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("digits line {}", n + 1))
            })
            .collect();
        assert_eq!(v.len(), 65, "digits line {}", n + 1);
        rs += &format!("    ({:?}, {}),\n", &v[..64], v[64]);
    }
    rs += "];\n";
    fs::write(out.join("digits.rs"), rs).expect("write digits.rs");
}

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
    digits(&out);
    // The micro:bit's 16 KiB of RAM: binaries leave out what does not fit (the `byom` LSTM).
    println!("cargo::rustc-check-cfg=cfg(small_ram)");
    if target.starts_with("thumbv6m") {
        println!("cargo::rustc-cfg=small_ram");
    }
    println!("cargo::rerun-if-changed={DIGITS}");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed={layout}");
    println!("cargo::rerun-if-changed=build.rs");
}
