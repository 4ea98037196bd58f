//! The mesh: node identity, pinned TLS, cluster membership, framing and the QUIC transport.
//!
//! See `docs/architecture.md` (section "Mesh transport") and `../shared/research/quic-p2p.md`.

pub mod cluster;
pub mod identity;
pub mod proto;
pub mod tls;
pub mod transport;

#[cfg(test)]
mod tests;
