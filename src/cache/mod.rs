//! The compile cache: key derivation, the entry format, and the local store with its size bound.

pub mod entry;
pub mod key;
pub mod store;
