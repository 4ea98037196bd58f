//! Everything about the real compiler: argument classification, response files, toolchain
//! identity, and coloured diagnostics.

pub mod args;
pub mod color;
pub mod rsp;
pub mod toolchain;
