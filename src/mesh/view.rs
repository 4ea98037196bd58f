//! The membership view, as the rest of the node reads it.
//!
//! This is the contract between membership (gossip, discovery, election), which keeps the view
//! up to date, and the worker and dispatch, which read it and publish this node's own
//! [`Advert`]. Both sides hold a [`ViewHandles`]; each value is a `tokio::sync::watch` channel, so
//! readers take a cheap snapshot (`borrow()`) or wait for the next change (`changed()`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::election::{MemberState, NodeClass};
use super::identity::NodeId;
use crate::compiler::toolchain::ToolchainId;

/// What a node tells the mesh about itself through gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// Jobs it runs at once for the mesh (its worker slots).
    pub slots_total: u32,
    /// Slots in use now.
    pub slots_busy: u32,
    /// Toolchains it can run, by content identity.
    pub toolchains: Vec<ToolchainId>,
    /// Server, desktop or laptop: decides the succession order for coordinator.
    pub class: NodeClass,
    /// Relative speed; higher is faster.
    pub speed: u32,
    /// The meshcc version it runs.
    pub version: String,
}

impl Default for Advert {
    fn default() -> Self {
        Self {
            slots_total: 0,
            slots_busy: 0,
            toolchains: Vec::new(),
            class: NodeClass::Desktop,
            speed: 100,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// One member as the membership layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its identity.
    pub id: NodeId,
    /// Where it was last reached or announced, most recent first (hints, never identity).
    pub addrs: Vec<SocketAddr>,
    /// Alive, suspect or down.
    pub state: MemberState,
    /// Its last gossiped advert, if one arrived.
    pub advert: Option<Advert>,
    /// The highest coordinator epoch it has seen (fencing for stale coordinators).
    pub fence: u64,
}

/// The coordinator this node currently follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinator {
    /// The coordinating node.
    pub id: NodeId,
    /// Its fencing epoch.
    pub epoch: u64,
}

/// This node's view of the mesh at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every known member other than this node.
    pub members: Vec<Member>,
    /// The coordinator, once one is known.
    pub coordinator: Option<Coordinator>,
}

impl Snapshot {
    /// The member with this id, if known.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == *id)
    }
}

/// The two channels shared by membership and the job side of a node.
#[derive(Debug, Clone)]
pub struct ViewHandles {
    /// Written by membership; read by dispatch and the allocator.
    pub view: watch::Sender<Snapshot>,
    /// Written by the worker; read and gossiped by membership.
    pub advert: watch::Sender<Advert>,
}

impl ViewHandles {
    /// Empty view, default advert.
    pub fn new() -> Self {
        Self {
            view: watch::Sender::new(Snapshot::default()),
            advert: watch::Sender::new(Advert::default()),
        }
    }
}

impl Default for ViewHandles {
    fn default() -> Self {
        Self::new()
    }
}
