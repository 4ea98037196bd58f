//! Everything about the real compiler: argument classification, toolchain identity,
//! preprocessing and running it.

pub mod args;
pub mod rsp;
