//! Independent references shared by the cross-crate tests and benchmarks: wide-integer oracles for the
//! fixed-point formats.
#![deny(missing_docs)]

pub mod oracle;
