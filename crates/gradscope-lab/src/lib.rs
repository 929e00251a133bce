//! The std side of gradscope: experiments that run the core's kernels and turn their events into data, and
//! renderers that turn data into tables. The binary `gradscope` is a thin command-line front end.
#![deny(missing_docs)]

pub mod accuracy;
pub mod cnn;
pub mod data;
pub mod depth;
pub mod dump;
pub mod effects;
pub mod flow;
pub mod formats;
pub mod inspect;
pub mod loss_cause;
pub mod markup;
pub mod options;
pub mod output;
pub mod par;
pub mod parity;
pub mod plot;
pub mod record;
pub mod report;
pub mod rnn;
pub mod table;
pub mod train;

/// The top-level README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
