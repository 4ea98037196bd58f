//! What membership puts in datagrams, and the gossip items foca spreads for it.
//!
//! A datagram is one tag byte and a body: [`TAG_SWIM`] and a foca packet, or [`TAG_CONTROL`]
//! and a postcard [`Control`] (claims sent directly, adverts sent to a newcomer, verification
//! probes). Gossip items ([`Item`]: adverts and coordinator claims) ride inside foca packets as
//! custom broadcasts; [`Handler`] decides which are news and stores them in the [`Table`] the
//! membership core reads. Everything here decodes untrusted bytes: failures are errors, never
//! panics, and sizes are bounded by the datagram size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::identity::Ident;
use crate::mesh::election::{Claim, NodeClass, Rank};
use crate::mesh::identity::NodeId;
use crate::mesh::view::Advert;

/// Datagram tag: a foca packet follows.
pub const TAG_SWIM: u8 = 0;
/// Datagram tag: a postcard [`Control`] follows.
pub const TAG_CONTROL: u8 = 1;

/// Largest encoded gossip item; an advert with more toolchains than fit is cut to fit.
pub const MAX_ITEM: usize = 640;

/// A coordinator claim on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireClaim {
    /// Fencing epoch.
    pub epoch: u64,
    /// Claimant's class.
    pub class: NodeClass,
    /// Claimant's membership age.
    pub joined: u64,
    /// Claimant.
    pub id: NodeId,
}

impl From<Claim> for WireClaim {
    fn from(c: Claim) -> Self {
        WireClaim {
            epoch: c.epoch,
            class: c.rank.class,
            joined: c.rank.joined,
            id: c.rank.id,
        }
    }
}

impl From<WireClaim> for Claim {
    fn from(w: WireClaim) -> Self {
        Claim {
            epoch: w.epoch,
            rank: Rank {
                class: w.class,
                joined: w.joined,
                id: w.id,
            },
        }
    }
}

/// A member's advert with its version: `(boot, sequence)`, so a restart never goes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedAdvert {
    /// Whose advert.
    pub origin: NodeId,
    /// Newer replaces older.
    pub version: (u64, u64),
    /// The highest coordinator epoch the origin had seen when it sent this.
    pub fence: u64,
    /// The advert.
    pub advert: Advert,
}

/// A gossip item (foca custom broadcast).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// A member's advert.
    Advert(VersionedAdvert),
    /// A coordinator claim.
    Claim(WireClaim),
}

/// A control message, sent directly to one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A coordinator claim: lease heartbeat, welcome, correction or announcement.
    Claim(WireClaim),
    /// "I am here, and this is what I offer": sent to each member the sender sees come alive
    /// (a newcomer to it, or every member to a newcomer). The receiver learns the sender's
    /// advert at once, and the sender itself if SWIM's gossip of its join has not reached it
    /// yet (gossip is probabilistic: one node in a large mesh may miss it for seconds).
    Welcome {
        /// The sender's membership identity (accepted only from the sender itself).
        ident: Ident,
        /// The sender's advert.
        advert: VersionedAdvert,
    },
    /// "Are you alive?" `relay`: the member that asked the sender to probe on its behalf.
    Probe {
        /// Echoed in the [`Control::Ack`].
        nonce: u64,
        /// Where the ack goes next, for an indirect probe.
        relay: Option<NodeId>,
    },
    /// Answer to a probe.
    Ack {
        /// The probe's nonce.
        nonce: u64,
        /// Forward to this member (indirect probe), or `None`: for the receiver itself.
        relay: Option<NodeId>,
    },
    /// "Probe `target` for me."
    ProbeFor {
        /// Echoed back.
        nonce: u64,
        /// The member to probe.
        target: NodeId,
    },
    /// "Send me your membership": a node that just joined asks one member for the whole view
    /// (foca's join reply holds only what fits one packet).
    StateRequest,
    /// Part of the sender's membership (its Alive members), in answer to a
    /// [`Control::StateRequest`]: as many as fit one datagram; a large mesh sends several.
    State(Vec<foca::Member<Ident>>),
}

/// Why a datagram or item was dropped.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Empty, or with an unknown tag.
    #[error("unknown datagram tag")]
    Tag,
    /// The body did not decode.
    #[error("malformed body: {0}")]
    Body(#[from] postcard::Error),
}

/// Encodes a control datagram.
pub fn encode_control(c: &Control) -> Vec<u8> {
    let mut out = vec![TAG_CONTROL];
    // Serializing our own small enums into a Vec cannot fail.
    if let Ok(body) = postcard::to_stdvec(c) {
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a control datagram body (after the tag).
pub fn decode_control(body: &[u8]) -> Result<Control, DecodeError> {
    Ok(postcard::from_bytes(body)?)
}

/// Encodes `members` as [`Control::State`] datagrams (tag included) of at most `max` bytes each.
pub fn encode_state<'a>(
    members: impl IntoIterator<Item = &'a foca::Member<Ident>>,
    max: usize,
) -> Vec<Vec<u8>> {
    // Tag, variant index and the list's length prefix: at most 1 + 1 + 3 bytes.
    const FRAME: usize = 5;
    let mut datagrams = Vec::new();
    let mut chunk: Vec<foca::Member<Ident>> = Vec::new();
    let mut size = FRAME;
    for m in members {
        let len = postcard::experimental::serialized_size(m).unwrap_or(usize::MAX);
        if len > max.saturating_sub(FRAME) {
            continue;
        }
        if size + len > max {
            datagrams.push(encode_control(&Control::State(std::mem::take(&mut chunk))));
            size = FRAME;
        }
        chunk.push(m.clone());
        size += len;
    }
    if !chunk.is_empty() {
        datagrams.push(encode_control(&Control::State(chunk)));
    }
    datagrams
}

/// Encodes an item, its advert cut to fit [`MAX_ITEM`] (see [`fit_advert`]).
pub fn encode_item(item: &Item) -> Vec<u8> {
    let item = match item {
        Item::Advert(a) => Item::Advert(fit_advert(a.clone())),
        Item::Claim(c) => Item::Claim(*c),
    };
    postcard::to_stdvec(&item).unwrap_or_default()
}

/// `advert` with its toolchain list cut until it encodes, as an item, in [`MAX_ITEM`] bytes.
pub fn fit_advert(mut advert: VersionedAdvert) -> VersionedAdvert {
    while !advert.advert.toolchains.is_empty()
        && postcard::experimental::serialized_size(&advert).unwrap_or(usize::MAX) >= MAX_ITEM
    {
        advert.advert.toolchains.pop();
    }
    advert
}

/// The identity of a gossip item for foca: a newer item of the same kind and origin replaces
/// (invalidates) an older one in the dissemination queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// An advert of `origin` at `version`.
    Advert {
        /// Whose.
        origin: NodeId,
        /// Which.
        version: (u64, u64),
    },
    /// A claim; only the strongest keeps spreading.
    Claim(Claim),
}

impl foca::Invalidates for Key {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Key::Advert { origin, version },
                Key::Advert {
                    origin: o,
                    version: v,
                },
            ) => origin == o && version >= v,
            (Key::Claim(a), Key::Claim(b)) => a >= b,
            _ => false,
        }
    }
}

/// What gossip has taught this node: adverts by member, claims not yet given to the election.
#[derive(Debug, Default)]
pub struct Table {
    /// Latest advert of each member (this node's own included).
    pub adverts: HashMap<NodeId, VersionedAdvert>,
    /// Claims received from others, in order, for the election.
    pub claims: Vec<Claim>,
    /// The strongest claim seen (only stronger ones are spread further).
    pub best_claim: Option<Claim>,
    /// Set when an advert changed; cleared by the reader.
    pub changed: bool,
}

impl Table {
    /// Applies an advert; `true` if it was news.
    pub fn advert(&mut self, a: VersionedAdvert) -> bool {
        if self
            .adverts
            .get(&a.origin)
            .is_some_and(|old| old.version >= a.version)
        {
            return false;
        }
        self.adverts.insert(a.origin, a);
        self.changed = true;
        true
    }

    /// Records a claim from another node; `true` if it is the strongest seen (worth spreading).
    pub fn claim(&mut self, c: Claim) -> bool {
        self.claims.push(c);
        if self.best_claim.is_some_and(|b| b >= c) {
            return false;
        }
        self.best_claim = Some(c);
        true
    }
}

/// The table, shared by the core and the broadcast handler foca owns.
#[derive(Debug, Clone, Default)]
pub struct SharedTable(Arc<Mutex<Table>>);

impl SharedTable {
    /// Locks the table (a poisoned lock still holds consistent data: every update is one insert).
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// foca's custom-broadcast handler: decodes items, keeps news, stops stale ones spreading.
#[derive(Debug)]
pub struct Handler {
    table: SharedTable,
    me: NodeId,
}

impl Handler {
    /// A handler writing into `table`, for node `me`.
    pub fn new(table: SharedTable, me: NodeId) -> Self {
        Handler { table, me }
    }
}

impl foca::BroadcastHandler<Ident> for Handler {
    type Key = Key;
    type Error = DecodeError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Ident>,
    ) -> Result<Option<Key>, DecodeError> {
        let item: Item = postcard::from_bytes(data)?;
        let mut t = self.table.lock();
        Ok(match item {
            Item::Advert(a) => {
                let key = Key::Advert {
                    origin: a.origin,
                    version: a.version,
                };
                // Nobody else may speak for this node.
                let forged = a.origin == self.me && sender.is_some();
                (!forged && t.advert(a)).then_some(key)
            }
            Item::Claim(w) => {
                let c = Claim::from(w);
                match sender {
                    // Our own claim, being queued: spread it, the election already knows it.
                    None => {
                        t.best_claim = t.best_claim.max(Some(c));
                        Some(Key::Claim(c))
                    }
                    Some(_) => t.claim(c).then_some(Key::Claim(c)),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use foca::{BroadcastHandler, Invalidates};

    use super::*;
    use crate::compiler::toolchain::ToolchainId;

    fn advert(origin: u8, version: (u64, u64), toolchains: usize) -> VersionedAdvert {
        VersionedAdvert {
            origin: NodeId([origin; 32]),
            version,
            fence: 1,
            advert: Advert {
                toolchains: (0..toolchains)
                    .map(|i| ToolchainId([i as u8; 32]))
                    .collect(),
                ..Advert::default()
            },
        }
    }

    fn claim(epoch: u64, id: u8) -> Claim {
        Claim {
            epoch,
            rank: Rank {
                class: NodeClass::Desktop,
                joined: 1,
                id: NodeId([id; 32]),
            },
        }
    }

    #[test]
    fn control_round_trips_and_garbage_is_an_error() {
        let c = Control::Probe {
            nonce: 42,
            relay: Some(NodeId([3; 32])),
        };
        let bytes = encode_control(&c);
        assert_eq!(bytes[0], TAG_CONTROL);
        assert_eq!(decode_control(&bytes[1..]).unwrap(), c);
        assert!(decode_control(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_control(&[]).is_err());
    }

    #[test]
    fn a_big_advert_is_cut_to_fit() {
        let big = Item::Advert(advert(1, (1, 1), 100));
        let bytes = encode_item(&big);
        assert!(bytes.len() <= MAX_ITEM, "{}", bytes.len());
        let Item::Advert(a) = postcard::from_bytes::<Item>(&bytes).unwrap() else {
            panic!("not an advert")
        };
        assert!(!a.advert.toolchains.is_empty() && a.advert.toolchains.len() < 100);
        let small = Item::Advert(advert(1, (1, 1), 3));
        assert_eq!(
            postcard::from_bytes::<Item>(&encode_item(&small)).unwrap(),
            small
        );
    }

    #[test]
    fn only_newer_adverts_are_news() {
        let table = SharedTable::default();
        let me = Ident::suggested(NodeId([9; 32]), "127.0.0.1:1".parse().unwrap());
        let mut h = Handler::new(table.clone(), me.id);
        let send = |h: &mut Handler, a: VersionedAdvert| {
            h.receive_item(&encode_item(&Item::Advert(a)), Some(&me))
                .unwrap()
        };
        assert!(send(&mut h, advert(1, (2, 5), 1)).is_some());
        assert!(send(&mut h, advert(1, (2, 5), 1)).is_none());
        assert!(send(&mut h, advert(1, (1, 9), 1)).is_none(), "older boot");
        assert!(send(&mut h, advert(1, (3, 0), 1)).is_some(), "restart");
        assert_eq!(table.lock().adverts[&NodeId([1; 32])].version, (3, 0));
        // Someone else's copy of our own advert is ignored.
        assert!(send(&mut h, advert(9, (9, 9), 1)).is_none());
        assert!(h.receive_item(&[0xff; 4], Some(&me)).is_err());
    }

    #[test]
    fn only_stronger_claims_keep_spreading_but_all_reach_the_election() {
        let table = SharedTable::default();
        let me = Ident::suggested(NodeId([9; 32]), "127.0.0.1:1".parse().unwrap());
        let mut h = Handler::new(table.clone(), me.id);
        let mut send = |c: Claim| {
            h.receive_item(&encode_item(&Item::Claim(c.into())), Some(&me))
                .unwrap()
        };
        assert!(send(claim(2, 5)).is_some());
        assert!(send(claim(1, 1)).is_none());
        assert!(send(claim(2, 1)).is_some(), "same epoch, better rank");
        assert_eq!(table.lock().claims.len(), 3);
    }

    #[test]
    fn keys_invalidate_older_items_of_the_same_origin_only() {
        let a = |o: u8, v| Key::Advert {
            origin: NodeId([o; 32]),
            version: (1, v),
        };
        assert!(a(1, 2).invalidates(&a(1, 1)));
        assert!(!a(1, 1).invalidates(&a(1, 2)));
        assert!(!a(1, 2).invalidates(&a(2, 1)));
        assert!(Key::Claim(claim(3, 1)).invalidates(&Key::Claim(claim(2, 1))));
        assert!(!Key::Claim(claim(2, 1)).invalidates(&Key::Claim(claim(3, 1))));
        assert!(!Key::Claim(claim(3, 1)).invalidates(&a(1, 1)));
    }

    /// A membership too large for one datagram is split into datagrams that each fit, and
    /// together decode to every member, in order.
    #[test]
    fn membership_state_is_split_into_datagrams_that_fit() {
        let members: Vec<foca::Member<Ident>> = (0..200u16)
            .map(|i| {
                let ident = Ident {
                    id: NodeId([i as u8; 32]),
                    addr: std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7471)),
                    boot: u64::from(i),
                    bump: 0,
                    joined: u64::MAX - u64::from(i),
                    class: NodeClass::Laptop,
                };
                foca::Member::new(ident, u16::MAX, foca::State::Suspect)
            })
            .collect();
        let datagrams = encode_state(&members, 1100);
        assert!(datagrams.len() > 1);
        let mut decoded = Vec::new();
        for d in &datagrams {
            assert!(d.len() <= 1100, "{} bytes", d.len());
            assert_eq!(d[0], TAG_CONTROL);
            match decode_control(&d[1..]) {
                Ok(Control::State(ms)) => decoded.extend(ms),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(decoded, members);
    }
}
