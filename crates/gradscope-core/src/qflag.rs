//! The sticky saturation flag (Q) for kernels whose 16-bit saturations are deferred (`matrix::deferred`): on
//! thumbv7em the instructions of `dsp.rs`; elsewhere stand-ins, never called, since
//! [`Scalar::STICKY_SATURATION`](crate::Scalar::STICKY_SATURATION) is false there and nothing defers.

#[cfg(gradscope_dsp)]
pub(crate) use crate::dsp::{q_clear, q_raise, q_take, ssat16_shr};

/// `t >> s` saturated to a signed 16-bit value, as `SSAT #16, asr #s` computes it.
#[cfg(not(gradscope_dsp))]
#[inline(always)]
pub(crate) fn ssat16_shr(t: i32, s: u32) -> i32 {
    (t >> s.min(31)).clamp(i16::MIN as i32, i16::MAX as i32)
}

/// Without a Q flag, nothing to set.
#[cfg(not(gradscope_dsp))]
#[inline(always)]
pub(crate) fn q_raise() {}

/// Without a Q flag, nothing to clear.
#[cfg(not(gradscope_dsp))]
#[inline(always)]
pub(crate) fn q_clear() {}

/// Were it called, "set" would send the caller to its exact report.
#[cfg(not(gradscope_dsp))]
#[inline(always)]
pub(crate) fn q_take() -> bool {
    true
}
