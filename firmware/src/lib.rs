//! Shared firmware plumbing: the defmt transport, the panic and fault handlers, and `exit`.
#![no_std]

#[cfg(feature = "board")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

use cortex_m_semihosting::debug;

/// End the program: under QEMU the status becomes the exit code of `cargo run`. On a board without a debugger
/// semihosting would fault, so the board build parks the core instead.
pub fn exit(success: bool) -> ! {
    // A final line we do not depend on: the last defmt frame before exit can be truncated (defmt issue 892).
    defmt::println!("exit {=bool}", success);
    #[cfg(feature = "qemu")]
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::println!("panic: {}", defmt::Display2Format(info));
    exit(false)
}

#[cortex_m_rt::exception]
unsafe fn HardFault(_frame: &cortex_m_rt::ExceptionFrame) -> ! {
    // A fault must fail the run, not hang QEMU.
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
