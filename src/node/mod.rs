//! The node daemon: the local socket server, the job pipeline, and statistics.

pub mod ipc;
pub mod pipeline;
pub mod server;
pub mod stats;
