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
//!   waits `k × succession_step` first and claims only if the vacancy persists. **A node alone
//!   claims nothing**: one that knows other members but sees none of them Alive (its network
//!   gone, a laptop on the move, a one-node side of a partition) has nobody to coordinate, and a
//!   claim made there would win over the mesh's incumbent on its return (a higher epoch). Its own
//!   client allocates from its own view meanwhile; when company returns it waits `startup_wait`
//!   before the vacancy counts, like a newcomer. A node that has never met another member (a
//!   mesh of one) does claim.
//! - **R3, conflict.** A claim replaces the current one only if its epoch is higher, or equal with
//!   a better rank ([`Claim::beats`]). A coordinator that sees a winning claim steps down and
//!   relays the winner to everyone; a node that receives a losing claim answers its claimant with
//!   the winner, so a stale coordinator (woken from sleep, restarted, healed partition) learns it
//!   in one round trip. A node that receives a losing claim naming itself (its followers still
//!   probe it because its relay was lost) broadcasts the winner, at most once per
//!   `announce_interval`. Epochs therefore never go back.
//! - **Fast path** (§3.3). The coordinator sends its claim as a lease every `lease_interval` to
//!   the two best-ranked live members (its successors). A successor that hears nothing for
//!   `silence` (+ `succession_step` for the second) asks the shell to [`Action::Verify`] the
//!   coordinator with direct and indirect probes (and sends it the claim, so a coordinator that
//!   restarted and forgot its role takes it back). A failed verification counts as Down for the
//!   election until the coordinator is heard again or the view reports a change about it; then
//!   succession follows. SWIM suspicion alone never triggers succession.
//! - **Rejoin.** When a member joins, rejoins after Down, or shows a new incarnation (a new
//!   `joined`), the coordinator sends it its claim, and so does every node whose claim names it.
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
//! - Pending grants are not carried in the handover, and nothing forwards them: the successor
//!   allocates from the gossiped worker load, and the old coordinator's grants are redeemed at
//!   workers (which admit only with a free slot) or expire (§3.5: they need no recovery).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::identity::NodeId;

/// What kind of machine a node is; servers coordinate before desktops, desktops before laptops.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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
    /// This node no longer coordinates (it held the role at this epoch): stop allocating and
    /// redirect clients to the new coordinator.
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
    /// The Alive members of `members`, best first: succession order in O(log n) per change.
    alive: BTreeSet<Rank>,
    /// How many of `alive` rank better than this node.
    better_alive: usize,
    claim: Option<Claim>,
    started: u64,
    vacant_since: Option<u64>,
    last_heard: u64,
    adopted_at: u64,
    unreachable: bool,
    verify_since: Option<u64>,
    next_lease: u64,
    next_announce: u64,
    next_correction: u64,
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
            alive: BTreeSet::new(),
            better_alive: 0,
            claim: None,
            started: now,
            vacant_since: Some(now),
            last_heard: now,
            adopted_at: now,
            unreachable: false,
            verify_since: None,
            next_lease: now,
            next_announce: now,
            next_correction: now,
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
    /// A restarted node must come back with a new `joined` (or be reported Down first).
    pub fn member(&mut self, rank: Rank, state: MemberState, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.left || rank.id == self.me.id {
            return out;
        }
        let before = self.members.insert(rank.id, (rank, state));
        if let Some((old, MemberState::Alive)) = before {
            if self.alive.remove(&old) && old < self.me {
                self.better_alive -= 1;
            }
        }
        if state == MemberState::Alive && self.alive.insert(rank) && rank < self.me {
            self.better_alive += 1;
        }
        let names_it = self.claim.is_some_and(|c| c.node() == rank.id);
        if names_it && before != Some((rank, state)) {
            self.unreachable = false;
        }
        // A join, a rejoin after Down, or a new incarnation (a restart lost its state).
        let came_alive = state == MemberState::Alive
            && match before {
                Some((r, MemberState::Alive | MemberState::Suspect)) => r != rank,
                _ => true,
            };
        if came_alive && (names_it || self.is_coordinator()) {
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
                self.unreachable = false;
            }
            Some(current) if current.beats(&claim) => {
                if claim.node() != self.me.id {
                    out.push(Action::Send {
                        to: claim.node(),
                        claim: current,
                    });
                } else if now >= self.next_correction {
                    // Someone still follows me under a claim I lost (my relay of the winner was
                    // lost): a follower verifying me, or gossip. I cannot tell who, so all learn,
                    // at most once per announce interval (gossip may bring many copies).
                    out.push(Action::Broadcast(current));
                    self.next_correction = now.saturating_add(self.config.announce_interval);
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
        } else {
            self.unreachable = true;
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
            if let (Some(&rank), Some(current)) = (self.alive.first(), self.claim) {
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
        if self.unreachable && self.claim.is_some_and(|c| c.node() == node) {
            return false;
        }
        self.members
            .get(&node)
            .is_none_or(|(_, s)| *s != MemberState::Down)
    }

    /// My index among the Alive members (and me) ranked, the claimed node left out.
    fn position(&self) -> usize {
        let claimed_is_better = self
            .claim
            .and_then(|c| self.members.get(&c.node()))
            .is_some_and(|(r, s)| *s == MemberState::Alive && *r < self.me);
        self.better_alive
            .saturating_sub(usize::from(claimed_is_better))
    }

    /// True when other members are known but none of them is Alive (see R2).
    pub fn alone(&self) -> bool {
        !self.members.is_empty() && self.alive.is_empty()
    }

    fn claim_due(&self) -> Option<u64> {
        if self.alone() {
            return None;
        }
        let since = self.vacant_since?;
        let base = match self.claim {
            None => since.max(self.started.saturating_add(self.config.startup_wait)),
            Some(_) => since.max(self.adopted_at.saturating_add(self.config.silence)),
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
        self.adopted_at = now;
        self.unreachable = false;
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
        self.alive.iter().take(2).map(|r| r.id).collect()
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
                // The claim too: a coordinator that restarted and forgot it takes the role back.
                out.push(Action::Send {
                    to: claim.node(),
                    claim,
                });
                out.push(Action::Verify(claim.node()));
            }
        }
        self.report(out);
    }

    fn update_vacancy(&mut self, now: u64) {
        let live = self.claim.is_some_and(|c| self.is_live(c.node()));
        if live {
            self.vacant_since = None;
        } else if self.alone() {
            // Alone, the vacancy is nobody's to fill yet. Its clock starts `startup_wait` after
            // company returns, as for a newcomer: time to hear the incumbent's claim and see its
            // node Alive again, so that the node cut off longest does not claim first.
            self.vacant_since = Some(now.saturating_add(self.config.startup_wait));
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
            if now_seen.is_none_or(|c| c.node() != self.me.id) {
                out.push(Action::StepDown { epoch: old.epoch });
            }
        }
        self.reported = now_seen;
        out.push(Action::Coordinator(now_seen));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn rank(n: u8, class: NodeClass, joined: u64) -> Rank {
        Rank {
            class,
            joined,
            id: id(n),
        }
    }

    /// A desktop that joined at time `n`: lower `n` ranks better.
    fn desk(n: u8) -> Rank {
        rank(n, NodeClass::Desktop, u64::from(n))
    }

    fn claim(epoch: u64, rank: Rank) -> Claim {
        Claim { epoch, rank }
    }

    const C: Config = Config {
        startup_wait: 2_000,
        lease_interval: 250,
        announce_interval: 1_000,
        silence: 1_000,
        succession_step: 500,
    };

    /// `me` at time 0 with `alive` members, following `c` (heard at time 0).
    fn follower(me: Rank, alive: &[Rank], c: Claim) -> Election {
        let mut e = Election::new(me, C, 0);
        for r in alive {
            e.member(*r, MemberState::Alive, 0);
        }
        e.claim_received(c, 0);
        e
    }

    fn broadcasts(actions: &[Action]) -> Vec<Claim> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Broadcast(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rank_orders_by_class_then_age_then_id() {
        let server_young = rank(9, NodeClass::Server, 100);
        let desk_old = rank(1, NodeClass::Desktop, 1);
        let laptop_old = rank(0, NodeClass::Laptop, 0);
        assert!(server_young < desk_old && desk_old < laptop_old);
        assert!(rank(5, NodeClass::Desktop, 1) < rank(4, NodeClass::Desktop, 2));
        assert!(rank(4, NodeClass::Desktop, 1) < rank(5, NodeClass::Desktop, 1));
    }

    #[test]
    fn claims_order_by_epoch_then_rank() {
        let (a, b) = (desk(1), desk(2));
        assert!(claim(2, b).beats(&claim(1, a)));
        assert!(claim(1, a).beats(&claim(1, b)));
        assert!(!claim(1, a).beats(&claim(1, a)));
        assert_eq!(claim(3, a).node(), id(1));
    }

    #[test]
    fn alone_node_claims_epoch_one_after_startup_wait() {
        let mut e = Election::new(desk(1), C, 0);
        assert_eq!(e.next_deadline(), Some(2_000));
        assert!(e.tick(1_999).is_empty());
        let out = e.tick(2_000);
        let mine = claim(1, desk(1));
        assert_eq!(out[0], Action::Broadcast(mine));
        assert!(out.contains(&Action::Coordinator(Some(mine))));
        assert!(e.is_coordinator());
        assert_eq!(e.epoch(), 1);
    }

    #[test]
    fn a_node_cut_off_claims_nothing_and_takes_no_role_on_return() {
        // A laptop (worst rank) follows desk 1; its network goes: everyone Down in its view.
        let me = rank(9, NodeClass::Laptop, 9);
        let mut e = follower(me, &[desk(1), desk(2)], claim(1, desk(1)));
        e.member(desk(1), MemberState::Down, 1_000);
        e.member(desk(2), MemberState::Down, 1_000);
        assert!(e.alone());
        for t in (1_000..60_000).step_by(250) {
            assert!(broadcasts(&e.tick(t)).is_empty(), "claimed alone at {t}");
        }
        assert_eq!(e.claim(), Some(claim(1, desk(1))));
        assert!(!e.is_coordinator());
        // Back: desk 2 is Alive again, ranks better and takes over; the laptop follows.
        e.member(desk(2), MemberState::Alive, 60_000);
        assert!(broadcasts(&e.tick(60_000)).is_empty());
        let out = e.claim_received(claim(2, desk(2)), 60_100);
        assert!(broadcasts(&out).is_empty());
        assert_eq!(e.coordinator(), Some(claim(2, desk(2))));
    }

    #[test]
    fn newcomer_adopts_existing_claim_and_never_challenges() {
        // The newcomer is a server; the incumbent a laptop.
        let inc = rank(9, NodeClass::Laptop, 1);
        let me = rank(1, NodeClass::Server, 50);
        let mut e = Election::new(me, C, 0);
        e.member(inc, MemberState::Alive, 0);
        let out = e.claim_received(claim(4, inc), 300);
        assert_eq!(out, vec![Action::Coordinator(Some(claim(4, inc)))]);
        for t in (300..20_000).step_by(250) {
            let out = e.claim_received(claim(4, inc), t);
            assert!(out.is_empty(), "{out:?}");
            assert!(e.tick(t).is_empty());
        }
        assert_eq!(e.coordinator(), Some(claim(4, inc)));
        assert!(!e.is_coordinator());
    }

    #[test]
    fn better_ranked_member_joining_leaves_the_incumbent() {
        let inc = desk(5);
        let mut e = follower(desk(6), &[inc], claim(2, inc));
        assert!(e.member(desk(1), MemberState::Alive, 10).is_empty());
        assert_eq!(e.coordinator(), Some(claim(2, inc)));
    }

    #[test]
    fn coordinator_welcomes_members_that_come_alive() {
        let mut e = Election::new(desk(1), C, 0);
        e.tick(2_000);
        let mine = claim(1, desk(1));
        let out = e.member(desk(2), MemberState::Alive, 2_010);
        assert_eq!(
            out,
            vec![Action::Send {
                to: id(2),
                claim: mine
            }]
        );
        // Suspect → Alive is a refutation, not a join.
        e.member(desk(2), MemberState::Suspect, 2_020);
        assert!(e.member(desk(2), MemberState::Alive, 2_030).is_empty());
        // Down → Alive is a rejoin.
        e.member(desk(2), MemberState::Down, 2_040);
        let out = e.member(desk(2), MemberState::Alive, 2_050);
        assert_eq!(
            out,
            vec![Action::Send {
                to: id(2),
                claim: mine
            }]
        );
    }

    #[test]
    fn coordinator_leases_to_two_successors_and_announces() {
        let mut e = Election::new(desk(1), C, 0);
        for n in [4, 2, 3] {
            e.member(desk(n), MemberState::Alive, 0);
        }
        e.member(desk(5), MemberState::Suspect, 0);
        let out = e.tick(2_000);
        let mine = claim(1, desk(1));
        assert_eq!(
            out,
            vec![
                Action::Broadcast(mine),
                Action::Send {
                    to: id(2),
                    claim: mine
                },
                Action::Send {
                    to: id(3),
                    claim: mine
                },
                Action::Coordinator(Some(mine)),
            ]
        );
        assert_eq!(e.next_deadline(), Some(2_250));
        let out = e.tick(2_250);
        assert_eq!(out.len(), 2);
        assert!(broadcasts(&out).is_empty());
        e.tick(2_500);
        e.tick(2_750);
        let out = e.tick(3_000);
        assert_eq!(broadcasts(&out), vec![mine]);
    }

    #[test]
    fn suspect_coordinator_with_leases_is_not_replaced() {
        let coord = desk(1);
        let mut e = follower(desk(2), &[coord, desk(3)], claim(1, coord));
        e.member(coord, MemberState::Suspect, 100);
        for t in (250..30_000).step_by(250) {
            e.claim_received(claim(1, coord), t);
            assert!(e.tick(t).is_empty());
        }
        assert_eq!(e.coordinator(), Some(claim(1, coord)));
    }

    #[test]
    fn silent_coordinator_is_verified_and_replaced_only_on_failure() {
        let coord = desk(1);
        let mut e = follower(desk(2), &[coord, desk(3)], claim(1, coord));
        assert_eq!(e.next_deadline(), Some(1_000));
        assert!(e.tick(999).is_empty());
        let probe = vec![
            Action::Send {
                to: id(1),
                claim: claim(1, coord),
            },
            Action::Verify(id(1)),
        ];
        assert_eq!(e.tick(1_000), probe);
        // Verification pending: asked again only after another silence.
        assert!(e.tick(1_500).is_empty());
        // Alive (a stall shorter than the probes): nothing changes.
        assert!(e.verified(id(1), true, 1_100).is_empty());
        assert_eq!(e.next_deadline(), Some(2_100));
        assert_eq!(e.tick(2_100), probe);
        let out = e.verified(id(1), false, 2_250);
        let mine = claim(2, desk(2));
        // Still Alive to SWIM, the old coordinator gets leases too (and learns it is fenced).
        assert_eq!(
            out,
            vec![
                Action::Broadcast(mine),
                Action::Send {
                    to: id(1),
                    claim: mine
                },
                Action::Send {
                    to: id(3),
                    claim: mine
                },
                Action::Coordinator(Some(mine)),
            ]
        );
    }

    #[test]
    fn second_successor_verifies_later_and_others_never() {
        let coord = desk(1);
        let e2 = follower(desk(3), &[coord, desk(2), desk(4)], claim(1, coord));
        assert_eq!(e2.next_deadline(), Some(1_500));
        let e3 = follower(desk(4), &[coord, desk(2), desk(3)], claim(1, coord));
        assert_eq!(e3.next_deadline(), None);
    }

    #[test]
    fn restarted_coordinator_is_told_its_claim_on_rejoining() {
        let coord = desk(1);
        let mut e = follower(desk(2), &[coord], claim(3, coord));
        let again = rank(1, NodeClass::Desktop, 77);
        let out = e.member(again, MemberState::Alive, 10);
        assert_eq!(
            out,
            vec![Action::Send {
                to: id(1),
                claim: claim(3, coord)
            }]
        );
        // A refutation of a suspicion (same incarnation) is not a rejoin.
        e.member(again, MemberState::Suspect, 20);
        assert!(e.member(again, MemberState::Alive, 30).is_empty());
    }

    #[test]
    fn stale_verification_results_are_ignored() {
        let coord = desk(1);
        let mut e = follower(desk(2), &[coord], claim(1, coord));
        assert!(e.verified(id(7), false, 10).is_empty());
        assert_eq!(e.coordinator(), Some(claim(1, coord)));
    }

    #[test]
    fn down_coordinator_is_replaced_by_best_alive_with_next_epoch() {
        let coord = desk(1);
        let members = [coord, desk(2), desk(3), desk(4)];
        let mut first = follower(desk(2), &members, claim(7, coord));
        let mut second = follower(desk(3), &members, claim(7, coord));
        // Leases kept coming until 1_500; SWIM declares it down at 4_000.
        first.claim_received(claim(7, coord), 1_500);
        second.claim_received(claim(7, coord), 1_500);
        let out = first.member(coord, MemberState::Down, 4_000);
        let new = claim(8, desk(2));
        assert_eq!(broadcasts(&out), vec![new]);
        assert!(first.is_coordinator());
        // The second in line waits one step, then sees the claim and stands by.
        let out = second.member(coord, MemberState::Down, 4_000);
        assert_eq!(out, vec![Action::Coordinator(None)]);
        assert_eq!(second.next_deadline(), Some(4_500));
        second.claim_received(new, 4_001);
        assert!(second.tick(4_500).is_empty());
        assert_eq!(second.coordinator(), Some(new));
    }

    #[test]
    fn next_in_line_takes_over_when_the_successor_is_dead_too() {
        let coord = desk(1);
        let members = [coord, desk(2), desk(3)];
        let mut e = follower(desk(3), &members, claim(2, coord));
        e.member(coord, MemberState::Down, 5_000);
        assert!(!e.is_coordinator());
        let out = e.tick(5_500);
        assert_eq!(broadcasts(&out), vec![claim(3, desk(3))]);
    }

    #[test]
    fn suspect_better_member_does_not_block_succession() {
        let coord = desk(1);
        let mut e = follower(desk(3), &[coord, desk(2), desk(4)], claim(2, coord));
        e.member(desk(2), MemberState::Suspect, 4_000);
        let out = e.member(coord, MemberState::Down, 5_000);
        assert_eq!(broadcasts(&out), vec![claim(3, desk(3))]);
    }

    #[test]
    fn stale_epochs_are_fenced_and_corrected() {
        let coord = desk(5);
        let mut e = follower(desk(6), &[coord, desk(1)], claim(4, coord));
        let out = e.claim_received(claim(3, desk(1)), 10);
        assert_eq!(
            out,
            vec![Action::Send {
                to: id(1),
                claim: claim(4, coord)
            }]
        );
        assert_eq!(e.coordinator(), Some(claim(4, coord)));
        assert_eq!(e.epoch(), 4);
    }

    #[test]
    fn equal_epochs_resolve_by_rank_in_either_order() {
        let (a, b) = (desk(1), desk(2));
        let mut x = follower(desk(9), &[a, b], claim(3, a));
        x.claim_received(claim(3, b), 5);
        let mut y = follower(desk(9), &[a, b], claim(3, b));
        y.claim_received(claim(3, a), 5);
        assert_eq!(x.coordinator(), Some(claim(3, a)));
        assert_eq!(y.coordinator(), Some(claim(3, a)));
    }

    #[test]
    fn losing_coordinator_steps_down_and_relays_the_winner() {
        let mut e = Election::new(desk(2), C, 0);
        e.member(desk(1), MemberState::Alive, 0);
        e.member(desk(3), MemberState::Alive, 0);
        e.member(desk(1), MemberState::Down, 0);
        e.tick(2_000);
        assert!(e.is_coordinator());
        let winner = claim(2, desk(3));
        let out = e.claim_received(winner, 2_100);
        assert_eq!(
            out,
            vec![
                Action::Broadcast(winner),
                Action::StepDown { epoch: 1 },
                Action::Coordinator(Some(winner)),
            ]
        );
        assert!(!e.is_coordinator());
    }

    #[test]
    fn coordinator_answers_a_weaker_claim_with_its_own() {
        let mut e = Election::new(desk(3), C, 0);
        e.tick(2_000);
        e.claim_received(claim(5, desk(3)), 2_001);
        let out = e.claim_received(claim(5, desk(4)), 2_002);
        assert_eq!(
            out,
            vec![Action::Send {
                to: id(4),
                claim: claim(5, desk(3))
            }]
        );
        assert!(e.is_coordinator());
    }

    #[test]
    fn former_coordinator_corrects_followers_that_still_probe_it() {
        let mut e = Election::new(desk(3), C, 0);
        e.member(desk(4), MemberState::Alive, 0);
        e.tick(2_000);
        let winner = claim(1, desk(1));
        e.claim_received(winner, 2_100);
        assert!(!e.is_coordinator());
        // Its relay of the winner was lost: a follower verifying it still sends the old claim.
        let out = e.claim_received(claim(1, desk(3)), 2_500);
        assert_eq!(out, vec![Action::Broadcast(winner)]);
        assert_eq!(e.claim(), Some(winner));
        // More copies within an announce interval are not answered again; later ones are.
        assert!(broadcasts(&e.claim_received(claim(1, desk(3)), 3_499)).is_empty());
        let out = e.claim_received(claim(1, desk(3)), 3_500);
        assert_eq!(broadcasts(&out), vec![winner]);
    }

    #[test]
    fn graceful_leave_hands_over_in_one_message() {
        let mut c = Election::new(desk(1), C, 0);
        c.member(desk(2), MemberState::Alive, 0);
        c.member(desk(3), MemberState::Alive, 0);
        c.tick(2_000);
        let out = c.leave();
        let next = claim(2, desk(2));
        assert_eq!(
            out,
            vec![
                Action::Broadcast(next),
                Action::StepDown { epoch: 1 },
                Action::Coordinator(Some(next)),
            ]
        );
        assert!(c.leave().is_empty());
        assert!(c.tick(10_000).is_empty());
        assert!(c.claim_received(claim(9, desk(1)), 10_000).is_empty());
        assert_eq!(c.next_deadline(), None);
        // The successor takes the role on receipt; a follower switches at once.
        let mut s = follower(desk(2), &[desk(1), desk(3)], claim(1, desk(1)));
        let out = s.claim_received(next, 2_001);
        assert_eq!(broadcasts(&out), vec![next]);
        assert!(s.is_coordinator());
        let mut f = follower(desk(3), &[desk(1), desk(2)], claim(1, desk(1)));
        f.claim_received(next, 2_001);
        assert_eq!(f.coordinator(), Some(next));
    }

    #[test]
    fn leaving_alone_just_steps_down() {
        let mut c = Election::new(desk(1), C, 0);
        c.tick(2_000);
        assert_eq!(
            c.leave(),
            vec![Action::StepDown { epoch: 1 }, Action::Coordinator(None)]
        );
        assert!(!c.is_coordinator());
    }

    #[test]
    fn follower_leaving_emits_nothing() {
        let mut f = follower(desk(2), &[desk(1)], claim(1, desk(1)));
        assert!(f.leave().is_empty());
    }

    #[test]
    fn restarted_coordinator_recovers_its_epoch() {
        // The old incarnation's claim is still held by followers; the new one claims epoch 1.
        let old = claim(6, rank(1, NodeClass::Desktop, 1));
        let mut e = Election::new(rank(1, NodeClass::Desktop, 40), C, 0);
        e.member(desk(2), MemberState::Alive, 0);
        e.tick(2_500);
        assert_eq!(e.epoch(), 1);
        let out = e.claim_received(old, 2_501);
        assert_eq!(broadcasts(&out), vec![old]);
        assert!(e.is_coordinator());
        assert_eq!(e.epoch(), 6);
    }

    #[test]
    fn fresh_claim_is_evidence_of_life_for_one_silence() {
        let other = desk(1);
        let mut e = Election::new(desk(2), C, 0);
        e.member(desk(3), MemberState::Alive, 0);
        e.member(other, MemberState::Down, 0);
        e.claim_received(claim(3, other), 100);
        assert!(!e.is_coordinator());
        assert_eq!(e.next_deadline(), Some(1_100));
        e.member(other, MemberState::Alive, 600);
        assert!(e
            .tick(1_100)
            .iter()
            .all(|a| !matches!(a, Action::Broadcast(_))));
        assert_eq!(e.coordinator(), Some(claim(3, other)));
    }

    #[test]
    fn updates_about_myself_are_ignored() {
        let mut e = Election::new(desk(1), C, 0);
        e.tick(2_000);
        assert!(e.member(desk(1), MemberState::Down, 2_001).is_empty());
        assert!(e.is_coordinator());
        assert!(e.verified(id(1), false, 2_002).is_empty());
        assert!(e.is_coordinator());
    }

    #[test]
    fn epoch_saturates_instead_of_overflowing() {
        let mut e = follower(desk(2), &[desk(1), desk(3)], claim(u64::MAX, desk(1)));
        let out = e.member(desk(1), MemberState::Down, 5_000);
        assert_eq!(broadcasts(&out), vec![claim(u64::MAX, desk(2))]);
        assert_eq!(e.epoch(), u64::MAX);
        let mut t = Election::new(desk(3), C, u64::MAX - 1);
        t.tick(u64::MAX);
        assert!(t.is_coordinator());
        assert_eq!(t.next_deadline(), Some(u64::MAX));
    }
}

/// A simulated mesh of election cores under virtual time, driven by proptest.
#[cfg(test)]
mod sim {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;
    use crate::mesh::alloc::SplitMix64;

    const C: Config = Config {
        startup_wait: 2_000,
        lease_interval: 250,
        announce_interval: 1_000,
        silence: 1_000,
        succession_step: 500,
    };

    #[derive(Debug, Clone)]
    enum Op {
        Tick(u64),
        View(usize, usize, MemberState),
        Crash(usize),
        Restart(usize, NodeClass),
        Leave(usize),
        Partition(u16),
        Heal,
        Replay(usize, usize),
    }

    fn id(i: usize) -> NodeId {
        NodeId([i as u8 + 1; 32])
    }

    fn class() -> impl Strategy<Value = NodeClass> {
        prop_oneof![
            Just(NodeClass::Server),
            Just(NodeClass::Desktop),
            Just(NodeClass::Laptop)
        ]
    }

    fn state() -> impl Strategy<Value = MemberState> {
        prop_oneof![
            Just(MemberState::Alive),
            Just(MemberState::Suspect),
            Just(MemberState::Down)
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..600).prop_map(Op::Tick),
            4 => (0..12usize, 0..12usize, state()).prop_map(|(o, s, st)| Op::View(o, s, st)),
            1 => (0..12usize).prop_map(Op::Crash),
            1 => (0..12usize, class()).prop_map(|(j, c)| Op::Restart(j, c)),
            1 => (0..12usize).prop_map(Op::Leave),
            1 => any::<u16>().prop_map(Op::Partition),
            1 => Just(Op::Heal),
            1 => (any::<usize>(), 0..12usize).prop_map(|(m, t)| Op::Replay(m, t)),
        ]
    }

    struct Sim {
        n: usize,
        nodes: Vec<Option<Election>>,
        ranks: Vec<Rank>,
        views: Vec<Vec<Option<(Rank, MemberState)>>>,
        side: Vec<bool>,
        partitioned: bool,
        incarnation: u64,
        now: u64,
        drop_percent: u64,
        rng: SplitMix64,
        sent: Vec<Claim>,
        epochs: Vec<u64>,
        /// Replays stronger than this claim are not injected (see the incumbency property).
        replay_cap: Option<Claim>,
    }

    impl Sim {
        fn new(classes: &[NodeClass], seed: u64, drop_percent: u64) -> Sim {
            let n = classes.len();
            let ranks: Vec<Rank> = (0..n)
                .map(|i| Rank {
                    class: classes[i],
                    joined: i as u64,
                    id: id(i),
                })
                .collect();
            let mut sim = Sim {
                n,
                nodes: ranks
                    .iter()
                    .map(|r| Some(Election::new(*r, C, 0)))
                    .collect(),
                ranks,
                views: vec![vec![None; n]; n],
                side: vec![false; n],
                partitioned: false,
                incarnation: n as u64,
                now: 0,
                drop_percent,
                rng: SplitMix64::new(seed),
                sent: Vec::new(),
                epochs: vec![0; n],
                replay_cap: None,
            };
            for o in 0..n {
                for s in 0..n {
                    sim.set_view(o, s, MemberState::Alive);
                }
            }
            sim
        }

        fn index(&self, node: NodeId) -> Option<usize> {
            (0..self.n).find(|&i| id(i) == node)
        }

        fn up(&self, i: usize) -> bool {
            self.nodes[i].is_some()
        }

        fn connected(&self, a: usize, b: usize) -> bool {
            !self.partitioned || self.side[a] == self.side[b]
        }

        fn dropped(&mut self) -> bool {
            self.rng.next_u64() % 100 < self.drop_percent
        }

        fn run(&mut self, from: usize, actions: Vec<Action>) {
            let mut queue: VecDeque<(usize, Action)> =
                actions.into_iter().map(|a| (from, a)).collect();
            let mut steps = 0;
            while let Some((from, action)) = queue.pop_front() {
                steps += 1;
                assert!(steps < 100_000, "message storm");
                let (targets, claim) = match action {
                    Action::Broadcast(c) => ((0..self.n).collect::<Vec<_>>(), c),
                    Action::Send { to, claim } => match self.index(to) {
                        Some(k) => (vec![k], claim),
                        None => continue,
                    },
                    Action::Verify(node) => {
                        let Some(k) = self.index(node) else { continue };
                        let alive = self.up(k) && self.connected(from, k);
                        let now = self.now;
                        if let Some(e) = self.nodes[from].as_mut() {
                            let out = e.verified(node, alive, now);
                            queue.extend(out.into_iter().map(|a| (from, a)));
                        }
                        continue;
                    }
                    Action::StepDown { .. } | Action::Coordinator(_) => continue,
                };
                self.sent.push(claim);
                for k in targets {
                    if k == from || !self.up(k) || !self.connected(from, k) || self.dropped() {
                        continue;
                    }
                    let now = self.now;
                    if let Some(e) = self.nodes[k].as_mut() {
                        let out = e.claim_received(claim, now);
                        queue.extend(out.into_iter().map(|a| (k, a)));
                    }
                }
            }
            self.check_epochs();
        }

        fn check_epochs(&mut self) {
            for i in 0..self.n {
                if let Some(e) = &self.nodes[i] {
                    assert!(e.epoch() >= self.epochs[i], "epoch went back on {i}");
                    self.epochs[i] = e.epoch();
                }
            }
        }

        fn set_view(&mut self, o: usize, s: usize, state: MemberState) {
            if o == s || !self.up(o) {
                return;
            }
            let (rank, now) = (self.ranks[s], self.now);
            self.views[o][s] = Some((rank, state));
            if let Some(e) = self.nodes[o].as_mut() {
                let out = e.member(rank, state, now);
                self.run(o, out);
            }
        }

        fn advance(&mut self, dt: u64) {
            let target = self.now + dt;
            while self.now < target {
                self.now = (self.now + 50).min(target);
                for i in 0..self.n {
                    let now = self.now;
                    let Some(e) = self.nodes[i].as_mut() else {
                        continue;
                    };
                    if e.next_deadline().is_some_and(|d| d <= now) {
                        let out = e.tick(now);
                        self.run(i, out);
                    }
                }
            }
        }

        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Tick(dt) => self.advance(dt),
                Op::View(o, s, st) => self.set_view(o % self.n, s % self.n, st),
                Op::Crash(j) => self.nodes[j % self.n] = None,
                Op::Restart(j, class) => {
                    let j = j % self.n;
                    if self.up(j) {
                        return;
                    }
                    self.incarnation += 1;
                    self.ranks[j] = Rank {
                        class,
                        joined: self.incarnation,
                        id: id(j),
                    };
                    self.nodes[j] = Some(Election::new(self.ranks[j], C, self.now));
                    self.epochs[j] = 0;
                    self.views[j] = vec![None; self.n];
                    for s in 0..self.n {
                        if self.up(s) && self.connected(j, s) {
                            self.set_view(j, s, MemberState::Alive);
                        }
                    }
                }
                Op::Leave(j) => {
                    let j = j % self.n;
                    if let Some(e) = self.nodes[j].as_mut() {
                        let out = e.leave();
                        self.run(j, out);
                        self.nodes[j] = None;
                    }
                }
                Op::Partition(mask) => {
                    self.partitioned = true;
                    self.side = (0..self.n).map(|i| mask & (1 << i) != 0).collect();
                }
                Op::Heal => self.partitioned = false,
                Op::Replay(m, t) => {
                    if self.sent.is_empty() {
                        return;
                    }
                    let claim = self.sent[m % self.sent.len()];
                    if self.replay_cap.is_some_and(|cap| claim.beats(&cap)) {
                        return;
                    }
                    let (k, now) = (t % self.n, self.now);
                    if let Some(e) = self.nodes[k].as_mut() {
                        let out = e.claim_received(claim, now);
                        self.run(k, out);
                    }
                }
            }
        }

        /// Every view becomes the truth, nothing is lost any more, and time passes.
        fn stabilize(&mut self, heal: bool) {
            if heal {
                self.partitioned = false;
            }
            self.drop_percent = 0;
            for o in 0..self.n {
                for s in 0..self.n {
                    let truth = if self.up(s) && self.connected(o, s) {
                        MemberState::Alive
                    } else {
                        MemberState::Down
                    };
                    let known = self.views[o][s].is_some();
                    if self.up(o)
                        && (known || truth == MemberState::Alive)
                        && self.views[o][s] != Some((self.ranks[s], truth))
                    {
                        self.set_view(o, s, truth);
                    }
                }
            }
            self.advance(20_000);
        }

        /// In every connected component: one coordinator, known as such by all its members.
        fn agreed(&self) -> Vec<Claim> {
            let mut found = Vec::new();
            for side in [false, true] {
                let members: Vec<usize> = (0..self.n)
                    .filter(|&i| self.up(i) && (!self.partitioned || self.side[i] == side))
                    .collect();
                let Some(&first) = members.first() else {
                    continue;
                };
                // A node alone claims nothing (R2): a component of one that has met others
                // may follow no live coordinator.
                if members.len() == 1
                    && self.nodes[first]
                        .as_ref()
                        .is_some_and(|e| e.alone() && !e.is_coordinator())
                {
                    continue;
                }
                let view = |i: usize| self.nodes[i].as_ref().and_then(|e| e.coordinator());
                let c = view(first).expect("a coordinator");
                for &i in &members {
                    assert_eq!(view(i), Some(c), "node {i} disagrees");
                    let e = self.nodes[i].as_ref().expect("up");
                    assert_eq!(e.is_coordinator(), c.node() == id(i));
                }
                let k = self.index(c.node()).expect("a known node");
                assert!(members.contains(&k), "coordinator outside the component");
                found.push(c);
                if !self.partitioned {
                    break;
                }
            }
            found
        }
    }

    /// 300 cases, or `PROPTEST_CASES`.
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300)
    }

    fn setup() -> impl Strategy<Value = (Vec<NodeClass>, u64, u64, Vec<Op>)> {
        (
            prop::collection::vec(class(), 2..=12),
            any::<u64>(),
            0u64..40,
            prop::collection::vec(op(), 0..60),
        )
    }

    /// Any history, then every view made true and healed: one coordinator, known to all.
    fn stable_views_agree(classes: &[NodeClass], seed: u64, drop: u64, ops: &[Op]) {
        let mut sim = Sim::new(classes, seed, drop);
        for op in ops {
            sim.apply(op);
        }
        sim.stabilize(true);
        sim.agreed();
    }

    /// Any history, then the partition made lasting: one coordinator on each side; healed, one.
    fn each_side_agrees(classes: &[NodeClass], seed: u64, drop: u64, ops: &[Op]) {
        let mut sim = Sim::new(classes, seed, drop);
        for op in ops {
            sim.apply(op);
        }
        sim.stabilize(false);
        sim.agreed();
        // And once healed, exactly one survives.
        sim.stabilize(true);
        sim.agreed();
    }

    /// Any history and a settled coordinator `c`, then anything that leaves it alive and
    /// reachable: it is never challenged. Precisely, after every step:
    ///
    /// - its node still coordinates;
    /// - no node holds a claim that beats `c` (nobody claimed over it);
    /// - a node that has held `c` since it last started still follows `c`.
    ///
    /// Why "since it last started" and not "once it reached `c`'s epoch": a restarted node knows
    /// no claim, so the first one it hears is adopted, and that may be a stale claim of the same
    /// epoch from an old partition (delayed gossip, replayed here). It cannot tell that claim
    /// from a fresh one; the incumbent's next announcement corrects it (`c` beats it), and it
    /// never claims over `c` meanwhile (the second point).
    fn incumbent_stays(classes: &[NodeClass], seed: u64, drop: u64, ops: &[Op], later: &[Op]) {
        let mut sim = Sim::new(classes, seed, drop);
        for op in ops {
            sim.apply(op);
        }
        sim.stabilize(true);
        let Some(&c) = sim.agreed().first() else {
            return;
        };
        let k = sim.index(c.node()).expect("known");
        let mut held = vec![false; sim.n];
        sim.replay_cap = Some(c);
        for op in later {
            let harmful = match *op {
                Op::Crash(j) | Op::Leave(j) => j % sim.n == k,
                Op::View(_, s, st) => s % sim.n == k && st == MemberState::Down,
                Op::Partition(_) => true,
                _ => false,
            };
            if harmful {
                continue;
            }
            if let Op::Restart(j, _) | Op::Crash(j) | Op::Leave(j) = *op {
                held[j % sim.n] = false;
            }
            sim.apply(op);
            assert!(sim.nodes[k].as_ref().is_some_and(|e| e.is_coordinator()));
            for (i, e) in sim.nodes.iter().enumerate() {
                let Some(e) = e else { continue };
                let claim = e.claim();
                assert!(
                    claim.is_none_or(|x| !x.beats(&c)),
                    "node {i} claims over the incumbent"
                );
                held[i] |= claim == Some(c);
                if held[i] {
                    assert_eq!(e.coordinator(), Some(c), "node {i} switched");
                }
            }
        }
        sim.stabilize(true);
        assert_eq!(sim.agreed(), vec![c]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn stable_views_agree_on_one_coordinator((classes, seed, drop, ops) in setup()) {
            stable_views_agree(&classes, seed, drop, &ops);
        }

        #[test]
        fn each_side_of_a_lasting_partition_agrees((classes, seed, drop, ops) in setup()) {
            each_side_agrees(&classes, seed, drop, &ops);
        }

        #[test]
        fn a_live_incumbent_is_never_replaced(
            (classes, seed, drop, ops) in setup(),
            later in prop::collection::vec(op(), 0..60),
        ) {
            incumbent_stays(&classes, seed, drop, &ops, &later);
        }

        #[test]
        fn succession_order_is_kept_as_a_scan_would_find_it(
            me in (class(), 0u64..4),
            claimed in 0..8usize,
            updates in prop::collection::vec((0..8usize, class(), 0u64..4, state()), 0..40),
        ) {
            succession_order_matches_a_scan(me, claimed, &updates);
        }
    }

    /// The incremental succession order ([`Election::position`], [`Election::alone`],
    /// [`Election::successors`]) agrees with a scan of the members after any updates, restarts
    /// (a new rank for the same node) included.
    fn succession_order_matches_a_scan(
        (class, joined): (NodeClass, u64),
        claimed: usize,
        updates: &[(usize, NodeClass, u64, MemberState)],
    ) {
        let me = Rank {
            class,
            joined,
            id: id(8),
        };
        let mut e = Election::new(me, C, 0);
        e.claim = Some(Claim {
            epoch: 1,
            rank: Rank {
                class,
                joined,
                id: id(claimed),
            },
        });
        for &(i, class, joined, state) in updates {
            e.member(
                Rank {
                    class,
                    joined,
                    id: id(i),
                },
                state,
                0,
            );
            let mut alive: Vec<Rank> = e
                .members
                .values()
                .filter(|(_, s)| *s == MemberState::Alive)
                .map(|(r, _)| *r)
                .collect();
            alive.sort();
            let excluded = e.claim.map(|c| c.node());
            let position = alive
                .iter()
                .filter(|r| Some(r.id) != excluded && **r < me)
                .count();
            assert_eq!(e.position(), position);
            assert_eq!(e.alone(), !e.members.is_empty() && alive.is_empty());
            let best: Vec<NodeId> = alive.iter().take(2).map(|r| r.id).collect();
            assert_eq!(e.successors(), best);
        }
    }

    // Regression cases: shrunk failures of the properties above (issue 5), replayed as they were.

    /// Node 2 (8 % 6) restarts and first hears a replayed claim of the incumbent's epoch from the
    /// old partition: it follows that claim until the incumbent's next announcement, and never
    /// claims over the incumbent. It used to fail "node 2 switched" (seed 9).
    #[test]
    fn restarted_node_fed_a_stale_claim() {
        use MemberState::*;
        use NodeClass::*;
        use Op::*;
        incumbent_stays(
            &[Desktop, Server, Server, Server, Server, Server],
            16800409572839295200,
            0,
            &[
                Tick(293),
                Tick(87),
                Crash(8),
                Tick(266),
                Crash(7),
                Tick(582),
                Tick(504),
                Leave(9),
                Partition(5484),
                Leave(0),
                Tick(182),
                Tick(446),
                View(10, 8, Suspect),
                Tick(569),
                View(5, 1, Suspect),
                Restart(8, Server),
                Tick(421),
                Tick(507),
                Tick(170),
                Tick(30),
                View(0, 0, Alive),
                Tick(450),
            ],
            &[
                Tick(400),
                Tick(300),
                Crash(8),
                Tick(450),
                Tick(350),
                Tick(300),
                View(10, 2, Suspect),
                Tick(200),
                Tick(150),
                Tick(400),
                Restart(8, Server),
                Replay(1714409964306983293, 8),
            ],
        );
    }

    /// Node 3 restarts, then leaves and restarts again, and is fed a stale claim of the
    /// incumbent's epoch (seed 14, the same case as above after a graceful leave).
    #[test]
    fn node_back_from_leave_fed_a_stale_claim() {
        use NodeClass::*;
        use Op::*;
        incumbent_stays(
            &[
                Desktop, Desktop, Laptop, Server, Desktop, Server, Desktop, Desktop,
            ],
            5894321499255077727,
            0,
            &[
                Tick(486),
                Tick(548),
                Tick(369),
                Tick(542),
                Partition(58194),
                Leave(3),
                Tick(555),
                Partition(0),
                Tick(433),
                Tick(367),
                Partition(1458),
                Tick(440),
                Tick(377),
                Tick(1),
                Tick(382),
                Tick(400),
                Partition(7884),
                Tick(260),
                Tick(240),
                Tick(121),
                Tick(79),
                Tick(135),
                Tick(116),
                Tick(492),
                Tick(107),
                Tick(250),
                Restart(3, Server),
            ],
            &[
                Tick(9),
                Tick(410),
                Tick(172),
                Leave(11),
                Tick(209),
                Tick(500),
                Tick(273),
                Tick(227),
                Restart(11, Server),
                Replay(225176032200805709, 3),
            ],
        );
    }

    /// Partitioned, coordinator 3 (a restarted laptop) learns the other side's winning claim
    /// and steps down, but its relay is lost (27 % loss): its followers kept verifying it, it
    /// ignored their probes (the claim named itself), and the side never agreed again. Now it
    /// broadcasts the winner (seed 14, "node 3 disagrees").
    #[test]
    fn partition_after_restarts_with_loss() {
        use MemberState::*;
        use NodeClass::*;
        use Op::*;
        each_side_agrees(
            &[Server, Server, Server, Server],
            6844829595955138912,
            27,
            &[
                Crash(3),
                Leave(4),
                Restart(11, Laptop),
                Tick(89),
                View(3, 2, Suspect),
                Tick(448),
                View(3, 5, Suspect),
                Restart(0, Server),
                Tick(106),
                Tick(503),
                Partition(34625),
                Tick(411),
                Crash(9),
                Tick(93),
                Restart(9, Server),
                Tick(511),
                Tick(555),
                Tick(184),
                View(4, 1, Alive),
                Tick(137),
                Replay(3406139085183134182, 11),
            ],
        );
    }
}
