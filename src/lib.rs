//! meshcc: a compiler wrapper with an exact local cache, growing into a peer-to-peer compile mesh.
//!
//! See `docs/architecture.md` for how the parts fit together.

pub mod cache;
pub mod cli;
pub mod compiler;
pub mod config;
pub mod demo;
pub mod mesh;
pub mod node;
pub mod remote;
pub mod wrapper;
