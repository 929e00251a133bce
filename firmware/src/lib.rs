//! Shared firmware plumbing: the defmt transport, the panic and fault handlers, and `exit`.
#![no_std]

#[cfg(feature = "board")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

#[cfg(feature = "qemu")]
use cortex_m_semihosting::debug;

/// Log one epoch of a parity training run (`accuracy` is NaN for XOR, which measures none) and say whether it
/// passes the self-check: XOR's final loss below 0.1 and the digits' final held-out accuracy at least 80%
/// (`judged` false: every epoch passes).
pub fn log_epoch(
    task: &str,
    format: &str,
    epoch: usize,
    loss: f64,
    accuracy: f64,
    judged: bool,
) -> bool {
    use gradscope_core::parity::{DIGITS_EPOCHS, XOR_EPOCHS};
    if accuracy.is_nan() {
        defmt::println!(
            "train {=str} {=str} epoch {=usize} loss {=f64}",
            task,
            format,
            epoch,
            loss
        );
        !judged || epoch != XOR_EPOCHS || loss < 0.1
    } else {
        defmt::println!(
            "train {=str} {=str} epoch {=usize} loss {=f64} held-out accuracy {=f64}",
            task,
            format,
            epoch,
            loss,
            accuracy
        );
        !judged || epoch != DIGITS_EPOCHS || accuracy >= 0.8
    }
}

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

// The HardFault handler touches no stack: after a stack overflow (which flip-link turns into a fault at the
// RAM boundary) SP points below RAM, and a handler that pushes would lock the core up. Under QEMU it ends the run
// through semihosting SYS_EXIT (0x18) with ADP_Stopped_RunTimeErrorUnknown (0x20023): exit status 1. On a
// board without a debugger semihosting would fault again, so the board build parks the core (probe-rs shows the
// fault).
#[cfg(feature = "qemu")]
core::arch::global_asm!(
    ".section .HardFault.user, \"ax\"",
    ".global HardFault",
    ".type HardFault,%function",
    ".thumb_func",
    "HardFault:",
    "movs r0, #0x18",
    "ldr r1, =0x20023",
    "bkpt 0xab",
    "b HardFault",
    ".ltorg",
);

#[cfg(not(feature = "qemu"))]
core::arch::global_asm!(
    ".section .HardFault.user, \"ax\"",
    ".global HardFault",
    ".type HardFault,%function",
    ".thumb_func",
    "HardFault:",
    "b HardFault",
);

/// Stack use, measured by painting: the free stack is filled with a pattern at start-up, and the deepest
/// word no longer holding it marks the peak. With flip-link the stack occupies `[_stack_end, _stack_start)` at
/// the bottom of RAM, below the statics.
///
/// On the Cortex-M4F the lowest [`stack::GUARD`] bytes of the stack are an MPU no-access region: an overflow
/// faults there whatever lies below RAM. It has to be the MPU: QEMU's mps2-an386 maps a reserved region below
/// RAM that ignores writes and reads as zero, so without the guard an overflow runs on into it and faults only
/// by accident, when a return address reads back as zero. The M0 (nRF51, no MPU) needs none: below its RAM a
/// write is a bus error.
pub mod stack {
    use core::ptr::{addr_of, read_volatile, write_volatile};

    const PAINT: u32 = 0x5AA5_F00D;
    // Words just below the current stack pointer left unpainted: the painting loop's own frame lives there.
    const MARGIN: usize = 128;

    unsafe extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }

    /// Bytes of the MPU guard region at the bottom of the stack (0 without an MPU).
    #[cfg(target_abi = "eabihf")]
    pub const GUARD: usize = 32;
    /// Bytes of the MPU guard region at the bottom of the stack (0 without an MPU).
    #[cfg(not(target_abi = "eabihf"))]
    pub const GUARD: usize = 0;

    /// The guard's alignment: PMSAv7 regions are aligned to their size.
    #[cfg(target_abi = "eabihf")]
    const ALIGN: usize = GUARD;
    #[cfg(not(target_abi = "eabihf"))]
    const ALIGN: usize = 4;

    /// The guard's base: the stack's bottom rounded up to the region size (PMSAv7 regions are size-aligned).
    fn guard_base() -> usize {
        // Only the address of the linker symbol is taken, never its contents.
        (addr_of!(_stack_end) as usize).next_multiple_of(ALIGN)
    }

    /// The usable stack, above the guard.
    fn bounds() -> (usize, usize) {
        (guard_base() + GUARD, addr_of!(_stack_start) as usize)
    }

    /// Turn the guard on: region 0 covers `GUARD` bytes at the stack's bottom with no access and no execution;
    /// PRIVDEFENA keeps the default map everywhere else.
    #[cfg(target_abi = "eabihf")]
    fn guard() {
        const XN: u32 = 1 << 28;
        const SIZE_32: u32 = 4 << 1; // 2^(SIZE + 1) bytes
        const ENABLE: u32 = 1;
        const PRIVDEFENA: u32 = 1 << 2;
        // SAFETY: the MPU is configured once, before anything relies on it, and the region only forbids access
        // to stack memory that [`bounds`] excludes from every other use.
        unsafe {
            let mpu = &*cortex_m::peripheral::MPU::PTR;
            mpu.rnr.write(0);
            mpu.rbar.write(guard_base() as u32);
            mpu.rasr.write(XN | SIZE_32 | ENABLE);
            mpu.ctrl.write(ENABLE | PRIVDEFENA);
        }
        cortex_m::asm::dsb();
        cortex_m::asm::isb();
    }

    /// Bytes reserved for the stack.
    pub fn size() -> usize {
        let (bottom, top) = bounds();
        top - bottom
    }

    /// Fill the unused stack with the pattern and, on the M4F, turn the guard on. Call once, first thing in
    /// `main`.
    #[inline(never)]
    pub fn paint() {
        let (bottom, _) = bounds();
        let sp = cortex_m::register::msp::read() as usize;
        let mut a = bottom;
        while a + 4 <= sp.saturating_sub(MARGIN) {
            // SAFETY: [bottom, sp − MARGIN) is stack memory below every live frame, word-aligned (the linker
            // aligns `_stack_end`), and nothing else owns it.
            unsafe { write_volatile(a as *mut u32, PAINT) };
            a += 4;
        }
        #[cfg(target_abi = "eabihf")]
        guard();
    }

    /// The deepest the stack has reached since [`paint`], in bytes.
    pub fn peak() -> usize {
        let (bottom, top) = bounds();
        let mut a = bottom;
        // SAFETY: reads of word-aligned stack memory inside the reserved region.
        while a < top && unsafe { read_volatile(a as *const u32) } == PAINT {
            a += 4;
        }
        top - a
    }
}

/// The cost of a piece of code: instructions under QEMU (SysTick with `-icount shift=0`, where each guest
/// instruction takes 1 ns of virtual time: deterministic, but not cycles, since QEMU models no pipeline or wait
/// states), cycles on a board (DWT CYCCNT; a Cortex-M0 has none, and there the cost reads 0).
pub struct Cost {
    _p: cortex_m::Peripherals,
}

/// What [`Cost::measure`] counts.
#[cfg(feature = "qemu")]
pub const COST_UNIT: &str = "instructions";
/// What [`Cost::measure`] counts.
#[cfg(not(feature = "qemu"))]
pub const COST_UNIT: &str = "cycles";

/// Virtual nanoseconds (= instructions under `-icount shift=0`) per SysTick tick, times two: QEMU clocks
/// SysTick at 25 MHz on mps2-an386 and 16 MHz on the micro:bit.
#[cfg(all(feature = "qemu", target_abi = "eabihf"))]
const NS_PER_TICK_X2: u64 = 80;
#[cfg(all(feature = "qemu", not(target_abi = "eabihf")))]
const NS_PER_TICK_X2: u64 = 125;

impl Cost {
    /// Start the counter.
    pub fn new(mut p: cortex_m::Peripherals) -> Cost {
        #[cfg(feature = "qemu")]
        {
            p.SYST
                .set_clock_source(cortex_m::peripheral::syst::SystClkSource::Core);
            p.SYST.set_reload(0x00FF_FFFF);
            p.SYST.clear_current();
            p.SYST.enable_counter();
        }
        #[cfg(all(not(feature = "qemu"), target_abi = "eabihf"))]
        {
            p.DCB.enable_trace();
            p.DWT.enable_cycle_counter();
        }
        #[cfg(all(not(feature = "qemu"), not(target_abi = "eabihf")))]
        let _ = &mut p;
        Cost { _p: p }
    }

    fn now(&self) -> u32 {
        #[cfg(feature = "qemu")]
        return cortex_m::peripheral::SYST::get_current();
        #[cfg(all(not(feature = "qemu"), target_abi = "eabihf"))]
        return cortex_m::peripheral::DWT::cycle_count();
        #[cfg(all(not(feature = "qemu"), not(target_abi = "eabihf")))]
        return 0;
    }

    fn elapsed(start: u32, end: u32) -> u64 {
        #[cfg(feature = "qemu")]
        {
            // SysTick counts down through 24 bits; one wrap is handled (measured runs are far shorter).
            let ticks = start.wrapping_sub(end) & 0x00FF_FFFF;
            ticks as u64 * NS_PER_TICK_X2 / 2
        }
        #[cfg(not(feature = "qemu"))]
        {
            end.wrapping_sub(start) as u64
        }
    }

    /// Mean cost of one call of `f` over `reps` calls, less the cost of an empty measurement.
    pub fn measure(&mut self, reps: u32, mut f: impl FnMut()) -> u64 {
        let reps = reps.max(1);
        let t0 = self.now();
        let t1 = self.now();
        let overhead = Cost::elapsed(t0, t1);
        let start = self.now();
        for _ in 0..reps {
            f();
        }
        let end = self.now();
        Cost::elapsed(start, end).saturating_sub(overhead) / reps as u64
    }
}

/// Recurse until the stack overflows (the `overflow-control` feature): with flip-link the run must fault and
/// exit non-zero instead of silently overwriting the statics.
#[cfg(feature = "overflow-control")]
#[inline(never)]
pub fn overflow(depth: u32) -> u32 {
    let buf = core::hint::black_box([depth; 64]);
    // The opaque result is combined with this frame's data after the call: no tail call and no accumulator
    // loop at any opt-level, so every level keeps its frame.
    core::hint::black_box(overflow(depth.wrapping_add(1))) ^ buf[depth as usize % 64]
}
