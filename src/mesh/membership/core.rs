//! The membership core: foca (SWIM), the election and the advert table under one sans-IO
//! state machine.
//!
//! Inputs are datagrams from authenticated peers, address suggestions (seeds, mDNS), this
//! node's advert and the current time (milliseconds on the shell's clock: tokio time in the
//! daemon, virtual time in a simulation). Outputs are datagrams to send ([`Outgoing`]), the
//! next deadline, and the [`Snapshot`] of the view. No socket, clock or task in here, and all
//! randomness comes from the seed in [`Settings`], so a run is reproducible.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Codec, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use tracing::{debug, info};

use super::codec::{
    decode_control, encode_control, encode_item, encode_state, fit_advert, Control, Handler, Item,
    SharedTable, VersionedAdvert, TAG_CONTROL, TAG_SWIM,
};
use super::identity::Ident;
use crate::mesh::election::{self, Action, Election, MemberState};
use crate::mesh::identity::NodeId;
use crate::mesh::view::{Advert, Coordinator, Member, Snapshot};

/// Tuning of membership; [`Settings::default`] follows `research/membership.md` §6.
#[derive(Debug, Clone)]
pub struct Settings {
    /// SWIM probe period.
    pub probe_period: Duration,
    /// Wait for a direct probe's ack before asking others.
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly (SWIM and coordinator verification).
    pub indirect_probes: usize,
    /// Suspect → Down.
    pub suspect_to_down: Duration,
    /// Gossip period (to 3 members).
    pub gossip_period: Duration,
    /// Period of announcing to one member (views re-merge).
    pub announce_period: Duration,
    /// Period of announcing to down members (a healed partition re-merges).
    pub announce_down_period: Duration,
    /// Down members are forgotten after this.
    pub remove_down_after: Duration,
    /// Largest foca packet (must fit a QUIC datagram with the tag byte).
    pub max_packet: usize,
    /// Election timing.
    pub election: election::Config,
    /// Least time between two broadcasts of this node's advert (changes are coalesced).
    pub advert_interval: Duration,
    /// This node's advert is broadcast again this often even if unchanged.
    pub advert_refresh: Duration,
    /// Deadline of a coordinator verification (direct and indirect probes).
    pub verify_timeout: Duration,
    /// While alone, suggestions are announced to again this often.
    pub rejoin_interval: Duration,
    /// Running this much later than the core's deadline means this node itself stalled
    /// (SIGSTOP, suspend, starved): its own silence measurements are then void.
    pub stall: Duration,
    /// Seed of foca's random choices and of probe nonces.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(100),
            indirect_probes: 3,
            suspect_to_down: Duration::from_millis(2000),
            gossip_period: Duration::from_millis(100),
            announce_period: Duration::from_secs(30),
            announce_down_period: Duration::from_secs(10),
            remove_down_after: Duration::from_secs(4 * 3600),
            max_packet: 1100,
            election: election::Config::default(),
            advert_interval: Duration::from_millis(200),
            advert_refresh: Duration::from_secs(10),
            verify_timeout: Duration::from_millis(300),
            rejoin_interval: Duration::from_secs(2),
            stall: Duration::from_secs(1),
            seed: 0,
        }
    }
}

impl Settings {
    fn foca(&self) -> foca::Config {
        let nz = |n: usize| NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN);
        let mut c = foca::Config::new_lan(NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN));
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.num_indirect_probes = nz(self.indirect_probes);
        c.suspect_to_down_after = self.suspect_to_down;
        c.remove_down_after = Some(self.remove_down_after);
        c.max_packet_size = nz(self.max_packet);
        c.max_transmissions = NonZeroU8::new(8).unwrap_or(NonZeroU8::MIN);
        c.notify_down_members = true;
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_period,
            num_members: nz(3),
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.announce_period,
            num_members: nz(1),
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_down_period,
            num_members: nz(2),
        });
        c
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The member.
    pub to: NodeId,
    /// Where to dial it if there is no connection (none: only over an existing connection).
    pub addr: Option<SocketAddr>,
    /// The datagram, tag included.
    pub data: Vec<u8>,
}

/// Counters of what the core dropped or did (`dropped` is the transport's, left 0 here).
pub type Counters = crate::mesh::proto::MembershipCounters;

/// foca's runtime: collects what foca asks for, for the core to act on.
#[derive(Default)]
struct Outbox {
    sends: Vec<(Ident, Vec<u8>)>,
    timers: Vec<(Duration, Timer<Ident>)>,
    notes: Vec<OwnedNotification<Ident>>,
}

impl foca::Runtime<Ident> for Outbox {
    fn notify(&mut self, n: foca::Notification<'_, Ident>) {
        self.notes.push(n.to_owned());
    }
    fn send_to(&mut self, to: Ident, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, t: Timer<Ident>, after: Duration) {
        self.timers.push((after, t));
    }
}

/// A check of a member in progress (direct and indirect probes): a coordinator verification,
/// or this node's confirmation of a suspicion it heard of.
#[derive(Debug, Clone, Copy)]
struct Check {
    node: NodeId,
    nonce: u64,
    deadline: u64,
}

type Swim = Foca<Ident, PostcardCodec, Pcg64Mcg, Handler>;

/// One node's membership state machine.
pub struct Core {
    me: Ident,
    settings: Settings,
    foca: Swim,
    outbox: Outbox,
    timers: BinaryHeap<Reverse<(u64, u64, Timer<Ident>)>>,
    timer_seq: u64,
    table: SharedTable,
    election: Election,
    members: BTreeMap<NodeId, (Ident, MemberState)>,
    /// foca's membership state as `members` was last built from, in foca's order: most inputs
    /// change nothing, and comparing with this tells so without rebuilding `members`.
    mirror: Vec<foca::Member<Ident>>,
    advert: Advert,
    advert_seq: u64,
    advert_due: Option<u64>,
    advert_floor: u64,
    advert_refresh_at: u64,
    advertised_epoch: u64,
    verify: Option<Check>,
    /// The member asked for its membership after joining, and until when its answer counts.
    state_from: Option<(NodeId, u64)>,
    /// Answers to membership requests: (start of the current second, answers in it).
    state_answers: (u64, u32),
    /// Suspicions heard from peers that this node is checking itself, by member.
    confirm: BTreeMap<NodeId, Check>,
    suggestions: HashMap<NodeId, SocketAddr>,
    next_rejoin: u64,
    rng: Pcg64Mcg,
    out: Vec<Outgoing>,
    dirty: bool,
    counters: Counters,
    expected_wake: Option<u64>,
}

/// Suggestions remembered for re-announcing while alone (bounded).
const MAX_SUGGESTIONS: usize = 256;

/// How long after asking a member for its membership its answer is accepted (ms).
const STATE_WINDOW: u64 = 2_000;

/// Membership requests answered per second at most (each answer is n/20 datagrams).
const STATE_ANSWERS_PER_SECOND: u32 = 8;

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("me", &self.me).finish()
    }
}

impl Core {
    /// A node with identity `me` and initial advert, at time `now`.
    pub fn new(me: Ident, advert: Advert, settings: Settings, now: u64) -> Self {
        let table = SharedTable::default();
        let mut rng = Pcg64Mcg::seed_from_u64(settings.seed);
        let foca_rng = Pcg64Mcg::seed_from_u64(rng.random());
        let foca = Foca::with_custom_broadcast(
            me,
            settings.foca(),
            foca_rng,
            PostcardCodec,
            Handler::new(table.clone(), me.id),
        );
        let election = Election::new(me.rank(), settings.election, now);
        let mut core = Core {
            me,
            foca,
            outbox: Outbox::default(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            table,
            election,
            members: BTreeMap::new(),
            mirror: Vec::new(),
            advert,
            advert_seq: 0,
            advert_due: Some(now),
            advert_floor: now,
            advert_refresh_at: now,
            advertised_epoch: 0,
            verify: None,
            state_from: None,
            state_answers: (now, 0),
            confirm: BTreeMap::new(),
            suggestions: HashMap::new(),
            next_rejoin: now,
            rng,
            out: Vec::new(),
            dirty: true,
            counters: Counters::default(),
            expected_wake: None,
            settings,
        };
        core.poll(now);
        core
    }

    /// This node's current identity.
    pub fn identity(&self) -> Ident {
        self.me
    }

    /// What the core dropped or did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Datagrams to send, in order (taken).
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.out)
    }

    /// When [`Core::poll`] must next run.
    pub fn next_deadline(&self) -> Option<u64> {
        [
            self.timers.peek().map(|Reverse((t, _, _))| *t),
            self.election.next_deadline(),
            self.verify.map(|v| v.deadline),
            self.confirm.values().map(|c| c.deadline).min(),
            self.advert_due,
            Some(self.advert_refresh_at),
            (self.foca.num_members() == 0 && !self.suggestions.is_empty())
                .then_some(self.next_rejoin),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The view, if it changed since the last call.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        let mut t = self.table.lock();
        let changed = std::mem::take(&mut t.changed);
        drop(t);
        if !(self.dirty || changed) {
            return None;
        }
        self.dirty = false;
        Some(self.snapshot())
    }

    /// The view now.
    pub fn snapshot(&self) -> Snapshot {
        let t = self.table.lock();
        let members = self
            .members
            .values()
            .map(|(ident, state)| {
                let advert = t.adverts.get(&ident.id);
                Member {
                    id: ident.id,
                    addrs: vec![ident.addr],
                    state: *state,
                    advert: advert.map(|a| a.advert.clone()),
                    fence: advert.map_or(0, |a| a.fence),
                }
            })
            .collect();
        Snapshot {
            members,
            coordinator: self.election.coordinator().map(|c| Coordinator {
                id: c.node(),
                epoch: c.epoch,
            }),
        }
    }

    /// A datagram from `from` (authenticated by the connection it came on).
    pub fn datagram(&mut self, from: NodeId, data: &[u8], now: u64) {
        self.observe(now);
        match data.split_first() {
            Some((&TAG_SWIM, body)) if body.len() <= self.settings.max_packet => {
                // The packet must come from the node the connection authenticated.
                let sender =
                    Codec::<Ident>::decode_header(&mut PostcardCodec, body).map(|h| h.src.id);
                if sender.ok() != Some(from) {
                    self.counters.malformed += 1;
                    return;
                }
                if let Err(e) = self.foca.handle_data(body, &mut self.outbox) {
                    debug!(peer = %from.short(), "membership packet refused: {e}");
                    self.counters.refused += 1;
                }
                self.after_foca(now, Cause::Heard);
            }
            Some((&TAG_CONTROL, body)) => match decode_control(body) {
                Ok(c) => self.control(from, c, now),
                Err(_) => self.counters.malformed += 1,
            },
            _ => self.counters.malformed += 1,
        }
        self.poll(now);
    }

    /// A suggestion (seed or mDNS) that node `id` may be reached at `addr`.
    pub fn suggest(&mut self, id: NodeId, addr: SocketAddr, now: u64) {
        if id == self.me.id {
            return;
        }
        if self.suggestions.len() >= MAX_SUGGESTIONS && !self.suggestions.contains_key(&id) {
            return;
        }
        let known = self
            .members
            .get(&id)
            .is_some_and(|(_, s)| *s != MemberState::Down);
        let new = self.suggestions.insert(id, addr) != Some(addr);
        if !known && new {
            if let Err(e) = self
                .foca
                .announce(Ident::suggested(id, addr), &mut self.outbox)
            {
                debug!("cannot announce: {e}");
            }
            self.after_foca(now, Cause::Own);
        }
        self.poll(now);
    }

    /// This node's address is `addr`; if it changed (renumbered, or first learned), renews the
    /// identity. Returns true when the node moved from one known address to another.
    pub fn set_addr(&mut self, addr: SocketAddr, now: u64) -> bool {
        if addr == self.me.addr {
            return false;
        }
        let moved = !self.me.addr.ip().is_unspecified();
        info!(from = %self.me.addr, to = %addr, "this node's address changed");
        self.me = self.me.moved(addr);
        if let Err(e) = self.foca.change_identity(self.me, &mut self.outbox) {
            debug!("cannot change identity: {e}");
        }
        self.after_foca(now, Cause::Own);
        self.poll(now);
        moved
    }

    /// This node's advert changed (spread at most every `advert_interval`).
    pub fn set_advert(&mut self, advert: Advert, now: u64) {
        if advert == self.advert {
            return;
        }
        self.advert = advert;
        self.advert_soon(now);
        self.poll(now);
    }

    /// Graceful leave: a coordinator hands over, then foca says goodbye.
    pub fn leave(&mut self, now: u64) {
        let actions = self.election.leave();
        self.actions(actions, now);
        if let Err(e) = self.foca.leave_cluster(&mut self.outbox) {
            debug!("cannot leave: {e}");
        }
        self.drain_outbox(now);
    }

    /// Runs what is due at `now`: foca timers, election, verification deadline, adverts.
    pub fn poll(&mut self, now: u64) {
        self.observe(now);
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, timer))) = self.timers.pop() else {
                break;
            };
            if let Err(e) = self.foca.handle_timer(timer, &mut self.outbox) {
                debug!("membership timer failed: {e}");
            }
            self.after_foca(now, Cause::Own);
        }
        if let Some(v) = self.verify.filter(|v| v.deadline <= now) {
            self.verify = None;
            debug!(node = %v.node.short(), "coordinator verification failed");
            let actions = self.election.verified(v.node, false, now);
            self.actions(actions, now);
        }
        let failed: Vec<NodeId> = self
            .confirm
            .values()
            .filter(|c| c.deadline <= now)
            .map(|c| c.node)
            .collect();
        for node in failed {
            self.confirm.remove(&node);
            self.confirmed(node, now);
        }
        let actions = self.election.tick(now);
        self.actions(actions, now);
        if self.election.epoch() != self.advertised_epoch || now >= self.advert_refresh_at {
            self.advert_soon(now);
        }
        if self.advert_due.is_some_and(|d| d <= now) {
            self.spread_advert(now);
        }
        if self.foca.num_members() == 0 && now >= self.next_rejoin {
            self.next_rejoin = now + ms(self.settings.rejoin_interval);
            for (&id, &addr) in &self.suggestions {
                if let Err(e) = self
                    .foca
                    .announce(Ident::suggested(id, addr), &mut self.outbox)
                {
                    debug!("cannot announce: {e}");
                }
            }
            self.drain_outbox(now);
        }
        self.expected_wake = self.next_deadline();
    }

    /// Notices a stall of this node: it ran far later than its deadline, so the coordinator's
    /// silence it measured is its own. The coordinator gets a fresh silence window (Lifeguard's
    /// lesson: suspect yourself first) instead of a verification that fresh dials may lose.
    fn observe(&mut self, now: u64) {
        let Some(due) = self.expected_wake.take() else {
            return;
        };
        if now > due.saturating_add(ms(self.settings.stall)) {
            self.counters.stalls += 1;
            info!(
                late_ms = now - due,
                "this node stalled; the coordinator gets a fresh silence window"
            );
            self.verify = None;
            self.confirm.clear();
            if let Some(c) = self.election.claim() {
                let actions = self.election.claim_received(c, now);
                self.actions(actions, now);
            }
        }
    }

    fn spread_advert(&mut self, now: u64) {
        self.advert_seq += 1;
        self.advertised_epoch = self.election.epoch();
        let item = Item::Advert(VersionedAdvert {
            origin: self.me.id,
            version: (self.me.boot, self.advert_seq),
            fence: self.advertised_epoch,
            advert: self.advert.clone(),
        });
        if let Err(e) = self.foca.add_broadcast(&encode_item(&item)) {
            debug!("cannot queue the advert: {e}");
        }
        self.advert_due = None;
        self.advert_refresh_at = now + ms(self.settings.advert_refresh);
        self.advert_floor = now + ms(self.settings.advert_interval);
    }

    /// Schedules this node's advert: now, or when the throttle allows.
    fn advert_soon(&mut self, now: u64) {
        if self.advert_due.is_none() {
            self.advert_due = Some(now.max(self.advert_floor));
        }
    }

    fn control(&mut self, from: NodeId, c: Control, now: u64) {
        match c {
            Control::Claim(w) => {
                let actions = self.election.claim_received(w.into(), now);
                self.actions(actions, now);
            }
            Control::Welcome { ident, advert } => {
                if ident.id != from || advert.origin != from {
                    self.counters.refused += 1;
                    return;
                }
                self.table.lock().advert(advert);
                if !self.members.contains_key(&from) {
                    let alive = foca::Member::new(ident, 0, foca::State::Alive);
                    if let Err(e) =
                        self.foca
                            .apply_many(std::iter::once(alive), true, &mut self.outbox)
                    {
                        debug!(peer = %from.short(), "welcome refused: {e}");
                    }
                    self.after_foca(now, Cause::Heard);
                }
            }
            Control::Probe { nonce, relay } => {
                self.send(from, &Control::Ack { nonce, relay });
            }
            Control::Ack {
                nonce,
                relay: Some(to),
            } => {
                self.send(to, &Control::Ack { nonce, relay: None });
            }
            Control::Ack { nonce, relay: None } => {
                if let Some(v) = self.verify.filter(|v| v.nonce == nonce) {
                    self.verify = None;
                    let actions = self.election.verified(v.node, true, now);
                    self.actions(actions, now);
                }
                // A suspect that answers is left to refute the suspicion itself.
                self.confirm.retain(|_, c| c.nonce != nonce);
            }
            Control::StateRequest => self.answer_state(from, now),
            Control::State(members) => {
                if !self
                    .state_from
                    .is_some_and(|(peer, until)| peer == from && now <= until)
                {
                    self.counters.refused += 1;
                    return;
                }
                if let Err(e) = self
                    .foca
                    // Only Alive entries count (see `answer_state`).
                    .apply_many(
                        members
                            .into_iter()
                            .filter(|m| m.state() == foca::State::Alive),
                        false,
                        &mut self.outbox,
                    )
                {
                    debug!(peer = %from.short(), "membership state refused: {e}");
                    self.counters.refused += 1;
                }
                self.after_foca(now, Cause::Heard);
            }
            Control::ProbeFor { nonce, target } => {
                if target != self.me.id {
                    self.send(
                        target,
                        &Control::Probe {
                            nonce,
                            relay: Some(from),
                        },
                    );
                }
            }
        }
    }

    /// Sends a control message to a member (dialled at its known address if need be).
    fn send(&mut self, to: NodeId, c: &Control) {
        let addr = self.members.get(&to).map(|(i, _)| i.addr);
        self.out.push(Outgoing {
            to,
            addr,
            data: encode_control(c),
        });
    }

    /// Acts on foca's effects and refreshes the member table from foca's; `cause` tells whether
    /// the input was a peer's packet (a suspicion in it is one this node did not raise).
    fn after_foca(&mut self, now: u64, cause: Cause) {
        self.drain_outbox(now);
        if self.foca.iter_membership_state().eq(self.mirror.iter()) {
            return;
        }
        self.mirror.clear();
        self.mirror
            .extend(self.foca.iter_membership_state().cloned());
        let mut seen: BTreeMap<NodeId, (Ident, MemberState)> = BTreeMap::new();
        for m in &self.mirror {
            let state = match m.state() {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down => MemberState::Down,
            };
            seen.insert(m.id().id, (*m.id(), state));
        }
        if seen == self.members {
            return;
        }
        let mut changes = Vec::new();
        for (id, now_is) in &seen {
            let before = self.members.get(id);
            if before != Some(now_is) {
                changes.push((*now_is, before.is_none_or(|(_, s)| *s == MemberState::Down)));
            }
        }
        for (id, (ident, _)) in &self.members {
            if !seen.contains_key(id) {
                // Forgotten after remove_down_after: the election sees it Down.
                changes.push(((*ident, MemberState::Down), false));
            }
        }
        self.members = seen;
        self.dirty = true;
        for ((ident, state), was_absent) in changes {
            debug!(member = %ident.id.short(), addr = %ident.addr, ?state, "membership change");
            if state == MemberState::Suspect && cause == Cause::Heard {
                self.start_confirm(ident.id, now);
            }
            if state == MemberState::Alive && was_absent {
                // A newcomer learns this node and its advert at once (gossip items may be
                // spent, and gossip of a join may miss a node for seconds).
                let advert = fit_advert(VersionedAdvert {
                    origin: self.me.id,
                    version: (self.me.boot, self.advert_seq),
                    fence: self.election.epoch(),
                    advert: self.advert.clone(),
                });
                let welcome = Control::Welcome {
                    ident: self.me,
                    advert,
                };
                self.send(ident.id, &welcome);
            }
            let actions = self.election.member(ident.rank(), state, now);
            self.actions(actions, now);
        }
    }

    fn drain_outbox(&mut self, now: u64) {
        for (to, data) in self.outbox.sends.drain(..) {
            let mut d = Vec::with_capacity(data.len() + 1);
            d.push(TAG_SWIM);
            d.extend_from_slice(&data);
            self.out.push(Outgoing {
                to: to.id,
                addr: Some(to.addr),
                data: d,
            });
        }
        for (after, timer) in self.outbox.timers.drain(..) {
            self.timer_seq += 1;
            self.timers
                .push(Reverse((now + ms(after), self.timer_seq, timer)));
        }
        let mut joined = false;
        for n in self.outbox.notes.drain(..) {
            match n {
                OwnedNotification::Rejoin(id) => {
                    info!(bump = id.bump, "declared down by the mesh; rejoined");
                    self.me = id;
                }
                OwnedNotification::Defunct => info!("declared down by the mesh"),
                OwnedNotification::Active => {
                    debug!("membership active");
                    joined = true;
                }
                OwnedNotification::Idle => debug!("membership idle: no other member"),
                _ => {}
            }
        }
        if joined {
            self.request_state(now);
        }
        let claims = std::mem::take(&mut self.table.lock().claims);
        for c in claims {
            let actions = self.election.claim_received(c, now);
            self.actions(actions, now);
        }
    }

    fn actions(&mut self, actions: Vec<Action>, now: u64) {
        for a in actions {
            match a {
                Action::Broadcast(claim) => {
                    if let Err(e) = self
                        .foca
                        .add_broadcast(&encode_item(&Item::Claim(claim.into())))
                    {
                        debug!("cannot queue the claim: {e}");
                    }
                    let live: Vec<NodeId> = self
                        .members
                        .iter()
                        .filter(|(_, (_, s))| *s != MemberState::Down)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in live {
                        self.send(id, &Control::Claim(claim.into()));
                    }
                }
                Action::Send { to, claim } => self.send(to, &Control::Claim(claim.into())),
                Action::Verify(node) => self.start_verify(node, now),
                Action::StepDown { epoch } => {
                    info!(epoch, "no longer the coordinator");
                    self.dirty = true;
                }
                Action::Coordinator(c) => {
                    match c {
                        Some(c) => {
                            info!(coordinator = %c.node().short(), epoch = c.epoch, "coordinator")
                        }
                        None => info!("no live coordinator; succession pending"),
                    }
                    self.dirty = true;
                }
            }
        }
    }

    /// Just joined (or rejoined): asks one member for its whole membership, so that this node
    /// knows every member at once instead of as each happens to contact it (at 200 members,
    /// up to a probe round of 50 s).
    fn request_state(&mut self, now: u64) {
        let n = self.foca.num_members();
        if n == 0 {
            return;
        }
        let pick = self.rng.random_range(0..n);
        let Some(to) = self.foca.iter_members().nth(pick).map(|m| *m.id()) else {
            return;
        };
        debug!(member = %to.id.short(), "asking for the membership");
        self.state_from = Some((to.id, now + STATE_WINDOW));
        self.out.push(Outgoing {
            to: to.id,
            addr: Some(to.addr),
            data: encode_control(&Control::StateRequest),
        });
    }

    /// Sends `to` every Alive member but itself, in as many datagrams as it takes (at most
    /// [`STATE_ANSWERS_PER_SECOND`] answers a second: a request costs one datagram, an answer
    /// n/20). Suspects are left out: a suspicion applied from here would never be refuted (its
    /// subject is not told), so the requester hears of it by gossip, as everyone does.
    fn answer_state(&mut self, to: NodeId, now: u64) {
        if now >= self.state_answers.0 + 1_000 {
            self.state_answers = (now, 0);
        }
        if self.state_answers.1 >= STATE_ANSWERS_PER_SECOND {
            debug!(peer = %to.short(), "membership request not answered: too many this second");
            return;
        }
        self.state_answers.1 += 1;
        let live = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Alive && m.id().id != to);
        let addr = self.members.get(&to).map(|(i, _)| i.addr);
        for data in encode_state(live, self.settings.max_packet) {
            self.out.push(Outgoing { to, addr, data });
        }
    }

    /// Verifies the coordinator (see [`Core::check`]).
    fn start_verify(&mut self, node: NodeId, now: u64) {
        self.counters.verifications += 1;
        self.verify = Some(self.check(node, now));
    }

    /// Checks a member another node suspects (Lifeguard's independent confirmation): if it
    /// does not answer this node either, directly or through others, within `verify_timeout`,
    /// it is declared down at once instead of after the suspecter's `suspect_to_down`. A
    /// suspect that answers has the rest of that window to refute the suspicion.
    fn start_confirm(&mut self, node: NodeId, now: u64) {
        if !self.confirm.contains_key(&node) {
            let check = self.check(node, now);
            self.confirm.insert(node, check);
        }
    }

    /// A confirmation failed: `node`, if still suspect, goes down (and the news spreads).
    fn confirmed(&mut self, node: NodeId, now: u64) {
        let down = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().id == node && m.state() == foca::State::Suspect)
            .map(|m| foca::Member::new(*m.id(), m.incarnation(), foca::State::Down));
        let Some(down) = down else { return };
        info!(member = %node.short(), "suspect unreachable from here too: down");
        if let Err(e) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.outbox)
        {
            debug!("cannot declare the suspect down: {e}");
        }
        self.after_foca(now, Cause::Own);
    }

    /// Probes `node` directly and through up to `indirect_probes` other live members; the
    /// check succeeds when an `Ack` with its nonce comes back before its deadline.
    fn check(&mut self, node: NodeId, now: u64) -> Check {
        let nonce = self.rng.random();
        self.send(node, &Control::Probe { nonce, relay: None });
        let mut helpers: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, (_, s))| **id != node && *s == MemberState::Alive)
            .map(|(id, _)| *id)
            .collect();
        for _ in 0..self.settings.indirect_probes.min(helpers.len()) {
            let i = self.rng.random_range(0..helpers.len());
            let h = helpers.swap_remove(i);
            self.send(
                h,
                &Control::ProbeFor {
                    nonce,
                    target: node,
                },
            );
        }
        Check {
            node,
            nonce,
            deadline: now + ms(self.settings.verify_timeout),
        }
    }
}

/// What fed foca: a peer's packet, or this node's own doing (timers, suggestions, renewals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Heard,
    Own,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::election::NodeClass;

    /// Cores on a perfect in-memory network under virtual time (1 ms per hop).
    struct Sim {
        nodes: Vec<Core>,
        up: Vec<bool>,
        queue: Vec<(u64, usize, NodeId, Vec<u8>)>,
        now: u64,
    }

    fn node_id(i: usize) -> NodeId {
        NodeId([i as u8 + 1; 32])
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i as u8 + 1], 7471))
    }

    impl Sim {
        fn new(n: usize) -> Self {
            Self::with(n, Settings::default())
        }

        fn with(n: usize, settings: Settings) -> Self {
            let nodes = (0..n)
                .map(|i| {
                    let me = Ident {
                        id: node_id(i),
                        addr: addr(i),
                        boot: 1,
                        bump: 0,
                        joined: 1000 + i as u64,
                        class: NodeClass::Desktop,
                    };
                    let settings = Settings {
                        seed: i as u64,
                        ..settings.clone()
                    };
                    Core::new(me, Advert::default(), settings, 0)
                })
                .collect();
            Sim {
                nodes,
                up: vec![true; n],
                queue: Vec::new(),
                now: 0,
            }
        }

        fn index(&self, id: NodeId) -> Option<usize> {
            self.nodes.iter().position(|c| c.identity().id == id)
        }

        fn collect(&mut self) {
            for i in 0..self.nodes.len() {
                let from = self.nodes[i].identity().id;
                for o in self.nodes[i].take_outgoing() {
                    if let Some(j) = self.index(o.to) {
                        self.queue.push((self.now + 1, j, from, o.data));
                    }
                }
            }
        }

        /// Runs for `ms` of virtual time, in 1 ms steps.
        fn run(&mut self, ms: u64) {
            let end = self.now + ms;
            while self.now < end {
                self.now += 1;
                let now = self.now;
                let (due, rest): (Vec<_>, Vec<_>) =
                    self.queue.drain(..).partition(|(t, ..)| *t <= now);
                self.queue = rest;
                for (_, j, from, data) in due {
                    if self.up[j] {
                        self.nodes[j].datagram(from, &data, now);
                    }
                }
                for i in 0..self.nodes.len() {
                    if self.up[i] && self.nodes[i].next_deadline().is_some_and(|d| d <= now) {
                        self.nodes[i].poll(now);
                    }
                }
                self.collect();
                for i in 0..self.nodes.len() {
                    if !self.up[i] {
                        self.nodes[i].take_outgoing();
                    }
                }
            }
        }

        fn join_all_via(&mut self, seed: usize) {
            for i in 0..self.nodes.len() {
                if i != seed {
                    let now = self.now;
                    self.nodes[i].suggest(node_id(seed), addr(seed), now);
                }
            }
            self.collect();
        }

        fn coordinators(&self) -> Vec<Option<Coordinator>> {
            (0..self.nodes.len())
                .filter(|i| self.up[*i])
                .map(|i| self.nodes[i].snapshot().coordinator)
                .collect()
        }
    }

    #[test]
    fn nodes_joining_through_one_seed_see_each_other_and_agree_on_a_coordinator() {
        let mut sim = Sim::new(5);
        sim.join_all_via(0);
        sim.run(10_000);
        for (i, n) in sim.nodes.iter().enumerate() {
            let s = n.snapshot();
            assert_eq!(s.members.len(), 4, "node {i}: {:?}", s.members);
            for m in &s.members {
                assert_eq!(m.state, MemberState::Alive, "node {i} sees {m:?}");
                assert_eq!(m.addrs, vec![addr(sim.index(m.id).unwrap())]);
                assert!(m.advert.is_some(), "node {i} has no advert of {m:?}");
            }
        }
        let c = sim.coordinators();
        assert!(c[0].is_some());
        assert!(c.iter().all(|x| *x == c[0]), "{c:?}");
        // The oldest member (best rank) coordinates.
        assert_eq!(c[0].unwrap().id, node_id(0));
    }

    #[test]
    fn an_advert_change_reaches_every_member() {
        let mut sim = Sim::new(5);
        sim.join_all_via(0);
        sim.run(5_000);
        let advert = Advert {
            slots_total: 16,
            slots_busy: 3,
            ..Advert::default()
        };
        let now = sim.now;
        sim.nodes[3].set_advert(advert.clone(), now);
        sim.collect();
        sim.run(3_000);
        for (i, n) in sim.nodes.iter().enumerate().filter(|(i, _)| *i != 3) {
            let s = n.snapshot();
            let m = s.member(&node_id(3)).unwrap();
            assert_eq!(m.advert.as_ref(), Some(&advert), "node {i}");
        }
    }

    #[test]
    fn the_coordinator_dies_and_the_survivors_agree_on_a_successor() {
        let mut sim = Sim::new(5);
        sim.join_all_via(0);
        sim.run(8_000);
        let before = sim.coordinators()[0].unwrap();
        let dead = sim.index(before.id).unwrap();
        sim.up[dead] = false;
        sim.run(8_000);
        let after = sim.coordinators();
        let first = after[0].unwrap();
        assert_ne!(first.id, before.id);
        assert!(first.epoch > before.epoch);
        assert!(after.iter().all(|c| *c == Some(first)), "{after:?}");
        for (i, n) in sim.nodes.iter().enumerate().filter(|(i, _)| *i != dead) {
            let s = n.snapshot();
            assert_eq!(
                s.member(&before.id).unwrap().state,
                MemberState::Down,
                "node {i}"
            );
            assert_eq!(
                s.members
                    .iter()
                    .filter(|m| m.state == MemberState::Alive)
                    .count(),
                3
            );
        }
    }

    /// History of the coordinators every node named, one entry per change.
    fn watch(sim: &mut Sim, ms: u64, history: &mut [Vec<Coordinator>]) {
        for _ in 0..ms / 50 {
            sim.run(50);
            for (i, n) in sim.nodes.iter().enumerate() {
                if let Some(c) = n.snapshot().coordinator.filter(|_| sim.up[i]) {
                    if history[i].last() != Some(&c) {
                        history[i].push(c);
                    }
                }
            }
        }
    }

    #[test]
    fn sleeping_members_and_a_sleeping_coordinator_cause_no_flapping() {
        let mut sim = Sim::new(5);
        sim.join_all_via(0);
        sim.run(8_000);
        let first = sim.coordinators()[0].unwrap();
        let coord = sim.index(first.id).unwrap();
        let mut history = vec![Vec::new(); 5];
        // Each member in turn sleeps for 10 s (SIGSTOP: no timers, nothing received).
        for sleeper in (0..5).filter(|&i| i != coord) {
            sim.up[sleeper] = false;
            watch(&mut sim, 10_000, &mut history);
            sim.up[sleeper] = true;
            watch(&mut sim, 10_000, &mut history);
            assert!(sim.coordinators().iter().all(|c| *c == Some(first)));
        }
        assert!(sim.nodes.iter().all(|n| n.counters().stalls <= 1));
        // Then the coordinator: replaced once, and it follows its successor on waking.
        sim.up[coord] = false;
        watch(&mut sim, 10_000, &mut history);
        sim.up[coord] = true;
        watch(&mut sim, 10_000, &mut history);
        let c = sim.coordinators();
        assert!(c.iter().all(|x| *x == c[0]), "{c:?}");
        assert_eq!(c[0].unwrap().epoch, first.epoch + 1);
        for (i, h) in history.iter().enumerate() {
            assert!(h.len() <= 2, "node {i} flapped: {h:?}");
            assert!(
                h.windows(2).all(|w| w[1].epoch > w[0].epoch),
                "node {i}: {h:?}"
            );
        }
        assert!(sim.nodes[coord].counters().stalls >= 1);
    }

    /// Suspect→down far off, so only confirmations can bring a member down quickly.
    fn patient() -> Settings {
        Settings {
            suspect_to_down: Duration::from_secs(30),
            ..Settings::default()
        }
    }

    #[test]
    fn a_crash_is_confirmed_by_every_node_long_before_suspect_to_down() {
        let mut sim = Sim::with(6, patient());
        sim.join_all_via(0);
        sim.run(5_000);
        sim.up[4] = false;
        sim.run(3_000);
        for (i, n) in sim.nodes.iter().enumerate().filter(|(i, _)| *i != 4) {
            let s = n.snapshot();
            assert_eq!(
                s.member(&node_id(4)).unwrap().state,
                MemberState::Down,
                "node {i}"
            );
        }
    }

    #[test]
    fn a_graceful_leave_of_the_coordinator_hands_over() {
        let mut sim = Sim::new(4);
        sim.join_all_via(0);
        sim.run(8_000);
        let before = sim.coordinators()[0].unwrap();
        let leaving = sim.index(before.id).unwrap();
        let now = sim.now;
        sim.nodes[leaving].leave(now);
        sim.collect();
        sim.up[leaving] = false;
        sim.run(100);
        let after = sim.coordinators();
        assert!(
            after
                .iter()
                .all(|c| c.is_some_and(|c| c.id != before.id && c.epoch == before.epoch + 1)),
            "{after:?}"
        );
    }

    #[test]
    fn a_moved_node_is_seen_at_its_new_address_as_the_same_node() {
        let mut sim = Sim::new(3);
        sim.join_all_via(0);
        sim.run(5_000);
        let moved = SocketAddr::from(([10, 9, 9, 9], 7471));
        let now = sim.now;
        sim.nodes[2].set_addr(moved, now);
        sim.collect();
        sim.run(5_000);
        for i in 0..2 {
            let s = sim.nodes[i].snapshot();
            let m = s.member(&node_id(2)).unwrap();
            assert_eq!(m.addrs, vec![moved]);
            assert_eq!(m.state, MemberState::Alive);
            assert_eq!(s.members.len(), 2);
        }
    }

    #[test]
    fn forged_and_malformed_datagrams_are_dropped_and_counted() {
        let mut sim = Sim::new(2);
        sim.join_all_via(0);
        sim.run(3_000);
        let now = sim.now;
        // A SWIM packet from node 1, delivered as if node 0's connection carried it... from
        // a third node: the header's sender does not match the connection.
        sim.nodes[1].suggest(node_id(0), addr(0), now);
        let swim = sim.nodes[0]
            .take_outgoing()
            .into_iter()
            .chain(sim.nodes[1].take_outgoing())
            .find(|o| o.data[0] == TAG_SWIM);
        let before = sim.nodes[0].counters().malformed;
        if let Some(o) = swim {
            sim.nodes[0].datagram(node_id(7), &o.data, now);
        }
        sim.nodes[0].datagram(node_id(1), &[], now);
        sim.nodes[0].datagram(node_id(1), &[9, 1, 2], now);
        sim.nodes[0].datagram(node_id(1), &[TAG_CONTROL, 0xff, 0xff], now);
        sim.nodes[0].datagram(node_id(1), &vec![TAG_SWIM; 5000], now);
        assert!(sim.nodes[0].counters().malformed >= before + 4);
        assert_eq!(sim.nodes[0].snapshot().members.len(), 1);
    }

    /// How many members node `i` sees Alive.
    fn alive_seen(sim: &Sim, i: usize) -> usize {
        let s = sim.nodes[i].snapshot();
        s.members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count()
    }

    /// In a mesh larger than one join reply holds, a newcomer knows every member within a
    /// second (it asks one for its membership, and each member that hears of the join welcomes
    /// it), not only as each happens to probe it: 28 of 79 without either.
    #[test]
    fn a_newcomer_learns_every_member_at_once() {
        let n = 80;
        let newcomer = n - 1;
        let mut sim = Sim::new(n);
        for i in 1..newcomer {
            sim.nodes[i].suggest(node_id(0), addr(0), 0);
        }
        sim.collect();
        sim.run(30_000);
        assert!((0..newcomer).all(|i| alive_seen(&sim, i) == newcomer - 1));
        let now = sim.now;
        sim.nodes[newcomer].suggest(node_id(0), addr(0), now);
        sim.collect();
        sim.run(1_000);
        assert_eq!(alive_seen(&sim, newcomer), newcomer);
    }

    /// Nodes 0 and 1 members of each other; node 2 never joined.
    fn two_members_and_a_stranger() -> Sim {
        let mut sim = Sim::new(3);
        sim.nodes[1].suggest(node_id(0), addr(0), 0);
        sim.collect();
        sim.run(3_000);
        sim
    }

    /// A welcome adds its sender when this node did not know it (gossip of its join missed this
    /// node), and counts only when it names the node whose connection carried it.
    #[test]
    fn a_welcome_adds_its_sender_and_only_its_sender() {
        let mut sim = two_members_and_a_stranger();
        let ident = sim.nodes[2].identity();
        let advert = VersionedAdvert {
            origin: ident.id,
            version: (1, 1),
            fence: 0,
            advert: Advert::default(),
        };
        let from_2 = encode_control(&Control::Welcome { ident, advert });
        let now = sim.now;
        let refused = sim.nodes[0].counters().refused;
        sim.nodes[0].datagram(node_id(1), &from_2, now);
        assert_eq!(sim.nodes[0].counters().refused, refused + 1);
        assert!(sim.nodes[0].snapshot().member(&node_id(2)).is_none());
        sim.nodes[0].datagram(node_id(2), &from_2, now);
        let seen = sim.nodes[0].snapshot();
        let m = seen.member(&node_id(2));
        assert!(m.is_some_and(|m| m.state == MemberState::Alive && m.advert.is_some()));
    }

    /// Membership state nobody asked for is refused (the answer of the member asked is
    /// accepted: `a_newcomer_learns_every_member_at_once`).
    #[test]
    fn unasked_membership_state_is_refused() {
        let mut sim = two_members_and_a_stranger();
        let stranger = Ident {
            id: node_id(9),
            addr: addr(9),
            boot: 1,
            bump: 0,
            joined: 1,
            class: NodeClass::Server,
        };
        let member = foca::Member::new(stranger, 0, foca::State::Alive);
        let refused = sim.nodes[0].counters().refused;
        for data in encode_state([&member], 1100) {
            let now = sim.now;
            sim.nodes[0].datagram(node_id(1), &data, now);
        }
        assert_eq!(sim.nodes[0].counters().refused, refused + 1);
        assert!(sim.nodes[0].snapshot().member(&node_id(9)).is_none());
    }
}
