//! The std side of gradscope: experiments that run the core's kernels and turn their events into data, and
//! renderers that turn data into tables. The binary `gradscope` is a thin command-line front end.
#![deny(missing_docs)]

pub mod accuracy;
pub mod depth;
pub mod formats;
pub mod parity;
pub mod table;
