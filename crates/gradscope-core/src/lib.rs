#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]
// `unsafe` is denied everywhere but `dsp`, `asm!` blocks of one or two instructions for thumbv7em (see its docs).
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod activation;
pub mod clip;
#[cfg(any(gradscope_dsp, test))]
mod dsp;
pub mod fixed;
pub mod flags;
pub mod float16;
pub mod horizon;
pub mod init;
pub mod layer;
pub mod loss;
pub mod math;
pub mod matrix;
pub mod net;
pub mod optim;
pub mod parity;
pub mod probe;
mod qflag;
pub mod round;
pub mod scalar;
pub mod scale;
pub mod train;

#[cfg(feature = "defmt")]
mod defmt;

pub use activation::{Act, ActError, Activate, FastAct};
pub use clip::{
    Clip, ClipError, ClipReport, NormType, clip_agc, clip_grad_norm, clip_grad_norm_per_tensor,
    clip_grad_value,
};
pub use fixed::{Fixed, Fx, Fx16, I1F15, I8F24, I16F16, WideAcc};
pub use flags::Flags;
pub use float16::{Format16, Native, bf16, f16};
pub use init::{FanMode, Init, InitError, Nonlinearity, calculate_gain, init_matrix, init_slice};
pub use layer::{
    ActLayer, AvgPool2d, BatchNorm, BatchNorm2d, Batched, Conv1d, Conv2d, Dense, DenseStack,
    EventLog, Flatten, GlobalAvgPool, GradStats, Gru, LastStep, Layer, LayerScales, LayerStats,
    LoggedEvent, Lstm, MaxPool2d, NonFinite, Phase, Pooled, Probes, Residual, Rnn, Stack,
    StepNorms, Tensor, TileLayer,
};
pub use loss::{Loss, Objective};
pub use net::{ParamTensor, Params, param_count};
pub use optim::{Adam, AdamParams, NoState, Optimizer, Sgd, StepError};
pub use probe::{EventCounts, Probe};
pub use round::{AnyRounding, Floor, NearestEven, Rounding, Stochastic};
pub use scalar::{Coef, Float, FloatBound, Scalar};
pub use scale::{LossScaler, ScaleDecision, ScaleError};
pub use train::{StepCtx, StepReport, Verdict, step, step_tiled};
