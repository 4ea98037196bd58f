//! netsim: a simulated UDP network for quinn under tokio's paused (virtual) clock, and the
//! harness that runs many complete meshcc nodes on it in one process.
//!
//! - [`Net`]: hosts with addresses, sockets, per-link latency, jitter, loss, duplication and
//!   reordering ([`Link`]), partitions, address changes, kill/revive, freeze/wake, multicast,
//!   and a [`Trace`] of every packet decision.
//! - [`SimSocket`] implements quinn's `AsyncUdpSocket`; [`SimRuntime`] is quinn's `Runtime` on a
//!   simulated host.
//! - [`Sim`] builds meshcc nodes (the real [`meshcc::mesh::transport::Mesh`]) on a [`Net`].
//! - [`jobs`]: a fake compiler, a ledger of compiles, builds through a node's real dispatch,
//!   and the invariants checked after every scenario.
//! - [`seeds`]: every run is named by one seed; [`seeds::run`] runs a scenario for a set of
//!   seeds and prints the seed of a failure so `MESHCC_SIM_SEED=…` replays it.
//!
//! See `docs/architecture.md`, section "Testing with netsim".

pub mod harness;
pub mod jobs;
pub mod link;
pub mod net;
pub mod rng;
pub mod runtime;
pub mod seeds;
pub mod socket;
pub mod trace;

pub use harness::Sim;
pub use link::Link;
pub use net::{HostId, Net, NetError};
pub use rng::SimRng;
pub use runtime::SimRuntime;
pub use socket::SimSocket;
pub use trace::{Event, Fate, Trace};
