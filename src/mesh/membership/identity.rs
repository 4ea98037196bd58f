//! A member's identity in SWIM (foca): its NodeId plus an address hint and incarnation counters.
//!
//! foca keys members by [`foca::Identity::Addr`], here the NodeId, never an address: a node
//! that restarts or changes address keeps its key. When two identities of one node meet, the
//! newer wins by `(boot, bump)`: `boot` is a counter persisted by the node and bumped on every
//! daemon start, `bump` grows on each renewal (rejoin after being declared down, new address).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::mesh::election::{NodeClass, Rank};
use crate::mesh::identity::NodeId;

/// What foca knows a member by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ident {
    /// The node (the key; authenticated by the pinned TLS handshake).
    pub id: NodeId,
    /// Where the node says it can be dialled (a hint).
    pub addr: SocketAddr,
    /// The node's start counter (persisted, bumped on each daemon start).
    pub boot: u64,
    /// Renewals within this start.
    pub bump: u64,
    /// When this start of the node joined (Unix milliseconds): its membership age.
    pub joined: u64,
    /// Its class, for the coordinator succession order.
    pub class: NodeClass,
}

impl Ident {
    /// A placeholder for a node only known by a suggestion (seed, mDNS): it loses every
    /// conflict, so the node's real identity replaces it as soon as the node answers.
    pub fn suggested(id: NodeId, addr: SocketAddr) -> Self {
        Ident {
            id,
            addr,
            boot: 0,
            bump: 0,
            joined: u64::MAX,
            class: NodeClass::Laptop,
        }
    }

    /// The node's place in the coordinator succession order.
    pub fn rank(&self) -> Rank {
        Rank {
            class: self.class,
            joined: self.joined,
            id: self.id,
        }
    }

    /// The same node at a new address (a renewal, so it wins over the old identity).
    pub fn moved(&self, addr: SocketAddr) -> Self {
        Ident {
            addr,
            bump: self.bump + 1,
            ..*self
        }
    }
}

impl foca::Identity for Ident {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Ident {
            bump: self.bump + 1,
            ..*self
        })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        (self.boot, self.bump) > (other.boot, other.bump)
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn ident(boot: u64, bump: u64) -> Ident {
        Ident {
            id: NodeId([7; 32]),
            addr: "10.0.0.1:7471".parse().unwrap(),
            boot,
            bump,
            joined: 5,
            class: NodeClass::Desktop,
        }
    }

    #[test]
    fn newer_boot_wins_whatever_the_bumps() {
        assert!(ident(2, 0).win_addr_conflict(&ident(1, 9)));
        assert!(!ident(1, 9).win_addr_conflict(&ident(2, 0)));
    }

    #[test]
    fn renewal_and_move_win_over_the_old_identity() {
        let old = ident(3, 1);
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
        assert_eq!(renewed.addr(), old.addr());
        let moved = old.moved("10.0.0.2:7471".parse().unwrap());
        assert!(moved.win_addr_conflict(&old));
        assert_eq!(moved.rank(), old.rank());
    }

    #[test]
    fn a_suggestion_loses_to_any_real_identity() {
        let s = Ident::suggested(NodeId([7; 32]), "10.0.0.1:7471".parse().unwrap());
        assert!(ident(1, 0).win_addr_conflict(&s));
        assert!(!s.win_addr_conflict(&ident(1, 0)));
    }
}
