//! Shared firmware plumbing: the defmt transport, the panic and fault handlers, and `exit`.
#![no_std]

#[cfg(feature = "board")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

#[cfg(feature = "qemu")]
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

#[cfg(not(feature = "panic-never"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::println!("panic: {}", defmt::Display2Format(info));
    exit(false)
}

/// In the `panic-never` build the defmt transports are left out (their reentrancy checks can panic, which is
/// theirs to prove, not ours) and frames are discarded by a logger that cannot panic.
#[cfg(feature = "panic-never")]
#[defmt::global_logger]
struct Discard;

#[cfg(feature = "panic-never")]
// SAFETY: the logger has no state; every method is a no-op, so acquire/release pairing cannot be violated.
unsafe impl defmt::Logger for Discard {
    fn acquire() {}
    unsafe fn flush() {}
    unsafe fn release() {}
    unsafe fn write(_bytes: &[u8]) {}
}

#[cfg(feature = "panic-never")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    unsafe extern "C" {
        // Deliberately undefined: any surviving panic path makes the link fail, naming this symbol.
        fn gradscope_panic_path_survived_optimization() -> !;
    }
    // SAFETY: never executed; the build links only when no call to it remains.
    unsafe { gradscope_panic_path_survived_optimization() }
}

/// A reachable out-of-bounds index (the `panic-never-control` feature): the negative control that must make a
/// `panic-never` build fail to link, so the proof cannot pass vacuously.
#[cfg(feature = "panic-never-control")]
#[inline(never)]
pub fn out_of_bounds(i: usize) -> u32 {
    let table = [1u32, 2, 3];
    table[i]
}

#[cortex_m_rt::exception]
unsafe fn HardFault(_frame: &cortex_m_rt::ExceptionFrame) -> ! {
    // Under QEMU a fault must fail the run, not hang it. On a board without a debugger semihosting would fault
    // again, so the board build parks the core (probe-rs shows the fault).
    #[cfg(feature = "qemu")]
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
