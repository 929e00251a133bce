//! Links gradscope-core into a bare-metal artifact without a global allocator.
#![no_std]

#[cfg(feature = "negative-control")]
extern crate alloc;

use gradscope_core::{EventCounts, I1F15, I16F16, NearestEven, Scalar, matrix};

/// Runs a few kernels so they are instantiated and linked.
#[unsafe(no_mangle)]
pub extern "C" fn gradscope_no_alloc_check(seed: i32) -> i32 {
    let w = [[I16F16::from_bits(seed); 8]; 4];
    let x = [I16F16::from_bits(seed >> 3); 8];
    let mut y = [I16F16::ZERO; 4];
    let mut counts = EventCounts::default();
    matrix::matvec(&w, &x, &mut y, &mut NearestEven, &mut counts);
    let q = [I1F15::from_bits(seed as i16); 8];
    let n = matrix::l2_norm(&q, &mut ());
    let f = [seed as f32; 8];
    let d = matrix::dot(&f, &f, &mut NearestEven, &mut ());
    #[cfg(feature = "negative-control")]
    let d = d + alloc::vec![1.0f32].len() as f32;
    y[0].to_bits() ^ n.to_bits() as i32 ^ d.to_f64() as i32 ^ counts.underflow as i32
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
