//! The gradscope demo on the target. Today: the parity workloads (initializers, and backpropagation through
//! a dense stack), whose digests must equal the host's
//! (`gradscope firmware-digests`).
#![no_std]
#![no_main]

use cortex_m as _;
use gradscope_firmware::exit;

#[cortex_m_rt::entry]
fn main() -> ! {
    defmt::println!("gradscope firmware {=str}", env!("CARGO_PKG_VERSION"));
    let mut lines = 0u32;
    gradscope_core::parity::init_digests(&mut |name, format, d| {
        defmt::println!("digest init/{=str}/{=str} {=u64:x}", name, format, d);
        lines += 1;
    });
    gradscope_core::parity::backprop_digests(&mut |name, format, d| {
        defmt::println!("digest backprop/{=str}/{=str} {=u64:x}", name, format, d);
        lines += 1;
    });
    #[cfg(feature = "panic-never-control")]
    {
        lines += gradscope_firmware::out_of_bounds(lines as usize);
    }
    defmt::println!("parity workloads: {=u32}", lines);
    exit(lines > 0)
}
