//! Coordinator election: a pure, per-node state machine (sans-IO).
//!
//! Membership changes, received claims, probe results and the current time go in; actions come
//! out. Time is a `u64` of milliseconds on the shell's monotonic clock (virtual time in
//! simulations); nothing here reads a clock, touches a socket or spawns a task.
//!
//! The rule is the incumbent-sticky succession with epochs of `research/membership.md` §3.2–3.4:
//!
//! - **Rank** ([`Rank`]): lower is better; node class (server, desktop, laptop), then membership
//!   age (the smaller `joined`, the older), then NodeId. Total and the same on every node.
//! - **R1, incumbency.** The node named by the highest known [`Claim`] is the coordinator while it
//!   is Alive or Suspect in this node's view (or unknown to it: a claim is evidence of life). A
//!   live coordinator is never challenged, however well a newcomer ranks; a Suspect one is not
//!   replaced either, so a stalled (SIGSTOP'd) coordinator does not cause flapping.
//! - **R2, succession.** When the claimed node is Down (or there is no claim), the best-ranked
//!   Alive member claims `epoch + 1` at once; the member at position `k` of the succession order
//!   waits `k × succession_step` first and claims only if the vacancy persists.
//! - **R3, conflict.** A claim replaces the current one only if its epoch is higher, or equal with
//!   a better rank ([`Claim::beats`]). A coordinator that sees a winning claim steps down and
//!   relays the winner to everyone; a node that receives a losing claim answers its claimant with
//!   the winner, so a stale coordinator (woken from sleep, restarted, healed partition) learns it
//!   in one round trip. Epochs therefore never go back.
//! - **Fast path** (§3.3). The coordinator sends its claim as a lease every `lease_interval` to
//!   the two best-ranked live members (its successors). A successor that hears nothing for
//!   `silence` (+ `succession_step` for the second) asks the shell to [`Action::Verify`] the
//!   coordinator with direct and indirect probes; a failed verification counts as Down in this
//!   node's view and succession follows.
//! - **Graceful leave.** A leaving coordinator broadcasts `epoch + 1` naming its best-ranked Alive
//!   successor: handover in one hop.
//! - **Partitions.** Each side elects its own coordinator once the other side is Down. The
//!   coordinator sends its claim directly to every member that comes (back) to Alive, so on heal
//!   the claims meet and R3 leaves exactly one.
//!
//! Deviations from the research note, and why:
//!
//! - No 60 s "lost the role recently" hysteresis (§3.4 iii): it would make succession depend on
//!   each node's own history, so views could disagree on the successor. R1 and rank by age cover
//!   the cases it targets, provided the shell gives a rejoining node a fresh (younger) `joined`.
//! - The claim carries the claimant's rank, so R3 needs no view of the claimant and every node
//!   resolves a conflict the same way.
//! - A node that has never seen a claim waits `startup_wait` before claiming, so that a newcomer
//!   learns the incumbent's claim (sent to it on joining, and broadcast every
//!   `announce_interval`) instead of challenging it with a bootstrap claim.
//! - A newly adopted claim counts as evidence of life for `silence`, even if its node is Down
//!   in this view (a healed partition's claim may arrive before the view catches up).
//! - The "opted out" class is not modelled: a node that must never coordinate is simply not
//!   given an election.
//! - Pending grants are not carried in the handover message; the shell forwards them to the
//!   successor named by [`Action::Coordinator`].

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::id::NodeId;

/// What kind of machine a node is; servers coordinate before desktops, desktops before laptops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeClass {
    /// A dedicated or pinned machine.
    Server,
    /// A desktop on mains power.
    Desktop,
    /// A laptop, or a spot or autoscaled worker.
    Laptop,
}

/// A node's place in the succession order: lower is better (class, then `joined`, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// The node's class.
    pub class: NodeClass,
    /// When the node joined the membership (join incarnation or time): smaller is older, better.
    pub joined: u64,
    /// The node.
    pub id: NodeId,
}

/// A member's state in the membership view (as SWIM reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed probes, not yet declared down.
    Suspect,
    /// Declared down, or left gracefully.
    Down,
}

/// "This node coordinates at this epoch": announced, relayed and sent as the lease heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The fencing epoch; it never goes back.
    pub epoch: u64,
    /// The coordinator's rank when the claim was made (its id names the coordinator).
    pub rank: Rank,
}

impl Claim {
    /// The coordinator this claim names.
    pub fn node(&self) -> NodeId {
        self.rank.id
    }

    /// Whether this claim wins over `other`: higher epoch, or equal epoch and better rank.
    pub fn beats(&self, other: &Claim) -> bool {
        self.cmp(other) == Ordering::Greater
    }
}

/// Claims are ordered by strength: the greater claim wins (epoch, then the better rank).
impl Ord for Claim {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| other.rank.cmp(&self.rank))
    }
}

impl PartialOrd for Claim {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Timing parameters, in milliseconds (defaults from `research/membership.md` §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long a node that has never seen a claim waits before claiming itself.
    pub startup_wait: u64,
    /// How often the coordinator sends its lease to its two successors.
    pub lease_interval: u64,
    /// How often the coordinator broadcasts its claim to every member.
    pub announce_interval: u64,
    /// Silence from the coordinator after which its first successor verifies it.
    pub silence: u64,
    /// Extra wait per position in the succession order (and for the second successor's check).
    pub succession_step: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            startup_wait: 2_000,
            lease_interval: 250,
            announce_interval: 1_000,
            silence: 1_000,
            succession_step: 500,
        }
    }
}

/// What the shell must do after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this claim to every member (gossip broadcast and direct datagrams).
    Broadcast(Claim),
    /// Send this claim to one member (lease heartbeat, welcome, or correction of a stale claim).
    Send {
        /// The recipient.
        to: NodeId,
        /// The claim.
        claim: Claim,
    },
    /// Probe this coordinator directly and through others; report with [`Election::verified`].
    Verify(NodeId),
    /// This node no longer coordinates (it held the role at this epoch): stop allocating, hand
    /// pending grants to the new coordinator, redirect clients.
    StepDown {
        /// The epoch this node coordinated at.
        epoch: u64,
    },
    /// The live coordinator as this node sees it changed (`None`: vacant, succession pending).
    Coordinator(Option<Claim>),
}

/// One node's election state machine.
#[derive(Debug, Clone)]
pub struct Election {
    me: Rank,
    config: Config,
    members: BTreeMap<NodeId, (Rank, MemberState)>,
    claim: Option<Claim>,
    started: u64,
    vacant_since: Option<u64>,
    last_heard: u64,
    verify_since: Option<u64>,
    next_lease: u64,
    next_announce: u64,
    reported: Option<Claim>,
    left: bool,
}

impl Election {
    /// A node with rank `me` starting at `now`, with no claim known yet.
    pub fn new(me: Rank, config: Config, now: u64) -> Self {
        Election {
            me,
            config,
            members: BTreeMap::new(),
            claim: None,
            started: now,
            vacant_since: Some(now),
            last_heard: now,
            verify_since: None,
            next_lease: now,
            next_announce: now,
            reported: None,
            left: false,
        }
    }

    /// The live coordinator as this node sees it, if any.
    pub fn coordinator(&self) -> Option<Claim> {
        self.claim.filter(|c| self.is_live(c.node()))
    }

    /// Whether this node is the coordinator.
    pub fn is_coordinator(&self) -> bool {
        !self.left && self.claim.is_some_and(|c| c.node() == self.me.id)
    }

    /// The highest epoch this node has seen (0: none). It never decreases.
    pub fn epoch(&self) -> u64 {
        self.claim.map_or(0, |c| c.epoch)
    }

    /// The highest claim known, even if its node is down.
    pub fn claim(&self) -> Option<Claim> {
        self.claim
    }

    /// When [`Election::tick`] must next be called, if anything is scheduled.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.left {
            return None;
        }
        if self.is_coordinator() {
            return Some(self.next_lease.min(self.next_announce));
        }
        match (self.claim_due(), self.verify_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The membership view changed: `rank.id` is now in `state` (a graceful leave is `Down`).
    pub fn member(&mut self, rank: Rank, state: MemberState, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.left || rank.id == self.me.id {
            return out;
        }
        let before = self.members.insert(rank.id, (rank, state)).map(|(_, s)| s);
        let came_alive = state == MemberState::Alive
            && !matches!(before, Some(MemberState::Alive | MemberState::Suspect));
        if came_alive && self.is_coordinator() {
            if let Some(claim) = self.claim {
                out.push(Action::Send { to: rank.id, claim });
            }
        }
        self.poll(now, &mut out);
        out
    }

    /// A claim arrived (announcement, relay, lease or correction).
    pub fn claim_received(&mut self, claim: Claim, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.left {
            return out;
        }
        match self.claim {
            Some(current) if current == claim => {
                self.last_heard = now;
                self.verify_since = None;
            }
            Some(current) if current.beats(&claim) => {
                if claim.node() != self.me.id {
                    out.push(Action::Send {
                        to: claim.node(),
                        claim: current,
                    });
                }
            }
            _ => self.adopt(claim, now, &mut out),
        }
        self.poll(now, &mut out);
        out
    }

    /// The shell's verification of `node` (asked for by [`Action::Verify`]) ended.
    pub fn verified(&mut self, node: NodeId, alive: bool, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.left || self.claim.map(|c| c.node()) != Some(node) || node == self.me.id {
            return out;
        }
        self.verify_since = None;
        if alive {
            self.last_heard = now;
        } else if let Some((_, state)) = self.members.get_mut(&node) {
            *state = MemberState::Down;
        } else if let Some(claim) = self.claim {
            self.members.insert(node, (claim.rank, MemberState::Down));
        }
        self.poll(now, &mut out);
        out
    }

    /// Time passed: send leases and announcements, verify a silent coordinator, take over.
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.left {
            self.poll(now, &mut out);
        }
        out
    }

    /// This node leaves gracefully; a coordinator hands over to its best-ranked Alive successor.
    /// Every later input is ignored.
    pub fn leave(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.left {
            return out;
        }
        if self.is_coordinator() {
            let successor = self
                .members
                .values()
                .filter(|(_, s)| *s == MemberState::Alive)
                .map(|(r, _)| *r)
                .min();
            if let (Some(rank), Some(current)) = (successor, self.claim) {
                let claim = Claim {
                    epoch: current.epoch.saturating_add(1),
                    rank,
                };
                self.claim = Some(claim);
                out.push(Action::Broadcast(claim));
            }
        }
        self.left = true;
        self.report(&mut out);
        out
    }

    fn is_live(&self, node: NodeId) -> bool {
        if node == self.me.id {
            return !self.left;
        }
        self.members
            .get(&node)
            .map_or(true, |(_, s)| *s != MemberState::Down)
    }

    /// My index among the Alive members (and me) ranked, the claimed node left out.
    fn position(&self) -> usize {
        let excluded = self.claim.map(|c| c.node());
        self.members
            .values()
            .filter(|(r, s)| *s == MemberState::Alive && Some(r.id) != excluded && *r < self.me)
            .count()
    }

    fn claim_due(&self) -> Option<u64> {
        let since = self.vacant_since?;
        let base = match self.claim {
            None => since.max(self.started.saturating_add(self.config.startup_wait)),
            Some(_) => since.max(self.last_heard.saturating_add(self.config.silence)),
        };
        let wait = (self.position() as u64).saturating_mul(self.config.succession_step);
        Some(base.saturating_add(wait))
    }

    fn verify_due(&self) -> Option<u64> {
        let claim = self.claim?;
        if claim.node() == self.me.id || self.vacant_since.is_some() {
            return None;
        }
        let pos = self.position() as u64;
        if pos >= 2 {
            return None;
        }
        Some(match self.verify_since {
            Some(t) => t.saturating_add(self.config.silence),
            None => self
                .last_heard
                .saturating_add(self.config.silence)
                .saturating_add(pos.saturating_mul(self.config.succession_step)),
        })
    }

    fn adopt(&mut self, claim: Claim, now: u64, out: &mut Vec<Action>) {
        let was_coordinator = self.is_coordinator();
        self.claim = Some(claim);
        self.last_heard = now;
        self.verify_since = None;
        if claim.node() == self.me.id {
            self.start_coordinating(claim, now, out);
        } else if was_coordinator {
            out.push(Action::Broadcast(claim));
        }
    }

    fn start_coordinating(&mut self, claim: Claim, now: u64, out: &mut Vec<Action>) {
        out.push(Action::Broadcast(claim));
        self.next_announce = now.saturating_add(self.config.announce_interval);
        self.next_lease = now;
    }

    /// The two best-ranked Alive members: the coordinator's successors.
    fn successors(&self) -> Vec<NodeId> {
        let mut alive: Vec<Rank> = self
            .members
            .values()
            .filter(|(_, s)| *s == MemberState::Alive)
            .map(|(r, _)| *r)
            .collect();
        alive.sort();
        alive.into_iter().take(2).map(|r| r.id).collect()
    }

    fn poll(&mut self, now: u64, out: &mut Vec<Action>) {
        self.update_vacancy(now);
        if self.claim_due().is_some_and(|due| due <= now) {
            let claim = Claim {
                epoch: self.epoch().saturating_add(1),
                rank: self.me,
            };
            self.adopt(claim, now, out);
            self.update_vacancy(now);
        }
        if let Some(claim) = self.claim.filter(|_| self.is_coordinator()) {
            if now >= self.next_announce {
                out.push(Action::Broadcast(claim));
                self.next_announce = now.saturating_add(self.config.announce_interval);
            }
            if now >= self.next_lease {
                for to in self.successors() {
                    out.push(Action::Send { to, claim });
                }
                self.next_lease = now.saturating_add(self.config.lease_interval);
            }
        } else if let Some(claim) = self.claim {
            if self.verify_due().is_some_and(|due| due <= now) {
                self.verify_since = Some(now);
                out.push(Action::Verify(claim.node()));
            }
        }
        self.report(out);
    }

    fn update_vacancy(&mut self, now: u64) {
        let live = self.claim.is_some_and(|c| self.is_live(c.node()));
        if live {
            self.vacant_since = None;
        } else if self.vacant_since.is_none() {
            self.vacant_since = Some(now);
        }
    }

    fn report(&mut self, out: &mut Vec<Action>) {
        let now_seen = self.coordinator();
        if now_seen == self.reported {
            return;
        }
        if let Some(old) = self.reported.filter(|c| c.node() == self.me.id) {
            if now_seen.map_or(true, |c| c.node() != self.me.id) {
                out.push(Action::StepDown { epoch: old.epoch });
            }
        }
        self.reported = now_seen;
        out.push(Action::Coordinator(now_seen));
    }
}
