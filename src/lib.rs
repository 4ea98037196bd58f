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

/// Spawns a task that keeps the caller's tracing span, so that a node's background tasks
/// log under its span (the job's, or in a simulation of many nodes, the node's).
pub(crate) fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(task.in_current_span())
}
