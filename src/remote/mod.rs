//! Distributed compilation: the worker that runs compiles for peers, the coordinator's
//! allocation service, the client's dispatch of a job to workers, and the rules both sides
//! share (the remote allow-list).
//!
//! See `docs/architecture.md`, section "Distributed compilation".

pub mod allow;
pub mod dispatch;
pub mod worker;
