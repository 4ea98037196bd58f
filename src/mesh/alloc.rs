//! Job allocation on the coordinator: a pure allocator (sans-IO).
//!
//! The coordinator keeps a table of workers (from gossip and worker replies) and answers each
//! allocation request with a ranked list of up to three distinct candidates, following
//! `research/membership.md` §4.4:
//!
//! - **Eligible** = alive, has the requested toolchain, not excluded by the request, not fenced
//!   (it has not seen a coordinator epoch newer than ours), and a free slot, where
//!   `free = total − busy (as last gossiped) − grants outstanding here`.
//! - **Selection**: power of two choices weighted by score: two distinct eligible workers are
//!   sampled with probability proportional to `speed × free / total`, the better-scoring one is
//!   taken (ties: smaller NodeId); repeated on the rest for the second and third places.
//! - **Grants are counted at once**: the first candidate's slot counts as busy from the moment it
//!   is granted until [`Allocator::release`] (or [`Allocator::release_client`]) or until its
//!   expiry time passes, so the next request already sees it and requests do not herd. The
//!   other two candidates are fallbacks and reserve nothing: the worker admits or answers Busy.
//! - **Nothing eligible** → [`Unavailable`], saying which filter emptied the set.
//!
//! Randomness comes from a [`SplitMix64`] the caller owns: the same seed, table and requests give
//! the same answers.
//!
//! Deviations from the research note: no locality or cache-affinity term in the score yet (no
//! such data exists); "installable" toolchains are not eligible (workers run only toolchains
//! they have); a grant may double-count a slot between the worker admitting the job and the
//! coordinator releasing the grant (gossiped `busy` already includes it): conservative, bounded by
//! the grant's expiry.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::identity::NodeId;
use crate::compiler::toolchain::ToolchainId;

/// A worker as the coordinator last heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Alive in the membership view.
    pub alive: bool,
    /// The toolchains it can run.
    pub toolchains: HashSet<ToolchainId>,
    /// Its slot limit.
    pub slots_total: u32,
    /// Slots in use, as last gossiped.
    pub slots_busy: u32,
    /// Relative speed score; higher is faster (0 counts as the slowest).
    pub speed: u32,
    /// The highest coordinator epoch the worker has seen; above ours, it refuses our grants.
    pub fence: u64,
}

/// One allocation request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The toolchain the job needs.
    pub toolchain: ToolchainId,
    /// Workers not to return (those that already failed this job).
    pub exclude: BTreeSet<NodeId>,
    /// The client asking (its grants are released together when it goes away).
    pub client: NodeId,
}

/// The handle of one granted slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantId(pub u64);

/// A successful allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Up to three distinct workers, best first; the client tries them in order.
    pub candidates: Vec<NodeId>,
    /// The slot granted on the first candidate.
    pub grant: GrantId,
}

/// Why no worker can be offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Unavailable {
    /// No worker is alive.
    NoWorker,
    /// No live worker has the toolchain.
    NoToolchain,
    /// Every live worker with the toolchain is excluded by the request.
    AllExcluded,
    /// Every remaining worker has seen a newer coordinator epoch: this coordinator is stale.
    Fenced,
    /// Every remaining worker is busy.
    AllBusy,
}

/// A small deterministic random generator (SplitMix64), owned and seeded by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 if `n` is 0).
    fn below(&mut self, n: u128) -> u128 {
        if n == 0 {
            return 0;
        }
        let wide = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        wide % n
    }
}

#[derive(Debug, Clone)]
struct Entry {
    worker: Worker,
    granted: u32,
}

impl Entry {
    fn free(&self) -> u32 {
        self.worker
            .slots_total
            .saturating_sub(self.worker.slots_busy)
            .saturating_sub(self.granted)
    }

    /// `speed × free / total` as a fraction (numerator, denominator).
    fn score(&self) -> (u128, u128) {
        let speed = u128::from(self.worker.speed.max(1));
        (
            speed * u128::from(self.free()),
            u128::from(self.worker.slots_total.max(1)),
        )
    }

    /// The sampling weight, at least 1 for an eligible worker.
    fn weight(&self) -> u128 {
        let (num, den) = self.score();
        ((num << 20) / den).max(1)
    }
}

#[derive(Debug, Clone, Copy)]
struct Grant {
    worker: NodeId,
    client: NodeId,
    expires: u64,
}

/// The coordinator's allocator for one epoch (raised, never lowered, on each new claim).
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    epoch: u64,
    workers: BTreeMap<NodeId, Entry>,
    grants: BTreeMap<GrantId, Grant>,
    next_grant: u64,
}

impl Allocator {
    /// An empty table for a coordinator at `epoch`.
    pub fn new(epoch: u64) -> Self {
        Allocator {
            epoch,
            ..Allocator::default()
        }
    }

    /// The coordinator epoch this allocator works for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This node claimed a new epoch; a lower one is ignored (epochs never go back).
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
    }

    /// Adds a worker or replaces what is known of it (its outstanding grants are kept).
    pub fn upsert(&mut self, id: NodeId, mut worker: Worker) {
        match self.workers.get_mut(&id) {
            Some(entry) => {
                worker.fence = worker.fence.max(entry.worker.fence);
                entry.worker = worker;
            }
            None => {
                self.workers.insert(id, Entry { worker, granted: 0 });
            }
        }
    }

    /// Marks a worker alive or not (as the membership view says); unknown workers are ignored.
    pub fn set_alive(&mut self, id: NodeId, alive: bool) {
        if let Some(entry) = self.workers.get_mut(&id) {
            entry.worker.alive = alive;
        }
    }

    /// A worker has seen coordinator epoch `epoch` (it answered "stale epoch"); never lowered.
    pub fn fence(&mut self, id: NodeId, epoch: u64) {
        if let Some(entry) = self.workers.get_mut(&id) {
            entry.worker.fence = entry.worker.fence.max(epoch);
        }
    }

    /// Forgets a worker and the grants on it.
    pub fn remove(&mut self, id: NodeId) {
        self.workers.remove(&id);
        self.grants.retain(|_, g| g.worker != id);
    }

    /// Every worker in the table.
    pub fn worker_ids(&self) -> Vec<NodeId> {
        self.workers.keys().copied().collect()
    }

    /// What is known of a worker.
    pub fn worker(&self, id: NodeId) -> Option<&Worker> {
        self.workers.get(&id).map(|e| &e.worker)
    }

    /// Slots granted here and not yet released or expired, on one worker.
    pub fn granted(&self, id: NodeId) -> u32 {
        self.workers.get(&id).map_or(0, |e| e.granted)
    }

    /// Free slots on a worker as this allocator counts them (total − busy − granted).
    pub fn free_slots(&self, id: NodeId) -> Option<u32> {
        self.workers.get(&id).map(Entry::free)
    }

    /// Releases one grant (the job was redeemed and reported, or abandoned). False if unknown.
    pub fn release(&mut self, grant: GrantId) -> bool {
        match self.grants.remove(&grant) {
            Some(g) => {
                self.uncount(g.worker);
                true
            }
            None => false,
        }
    }

    /// Releases one grant only if `client` holds it (a peer's release request). False otherwise.
    pub fn release_of(&mut self, grant: GrantId, client: NodeId) -> bool {
        if self.grants.get(&grant).is_some_and(|g| g.client == client) {
            self.release(grant)
        } else {
            false
        }
    }

    /// Releases every grant held by a client (it went down); returns how many.
    pub fn release_client(&mut self, client: NodeId) -> usize {
        let ids: Vec<GrantId> = self
            .grants
            .iter()
            .filter(|(_, g)| g.client == client)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.release(*id);
        }
        ids.len()
    }

    /// Drops grants whose expiry time is at or before `now`.
    pub fn expire(&mut self, now: u64) {
        let ids: Vec<GrantId> = self
            .grants
            .iter()
            .filter(|(_, g)| g.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.release(id);
        }
    }

    /// The earliest expiry among outstanding grants (when to call [`Allocator::expire`]).
    pub fn next_expiry(&self) -> Option<u64> {
        self.grants.values().map(|g| g.expires).min()
    }

    /// Chooses up to three ranked candidates for `request` and grants a slot on the first, valid
    /// until `expires` (expired grants are dropped first, as of `now`).
    pub fn allocate(
        &mut self,
        request: &Request,
        now: u64,
        expires: u64,
        rng: &mut SplitMix64,
    ) -> Result<Allocation, Unavailable> {
        self.expire(now);
        let mut pool: Vec<(&NodeId, &Entry)> = self
            .workers
            .iter()
            .filter(|(_, e)| e.worker.alive)
            .collect();
        let stages: [(Unavailable, Keep<'_>); 5] = [
            (Unavailable::NoWorker, &|_, _| true),
            (Unavailable::NoToolchain, &|_, e| {
                e.worker.toolchains.contains(&request.toolchain)
            }),
            (Unavailable::AllExcluded, &|id, _| {
                !request.exclude.contains(id)
            }),
            (Unavailable::Fenced, &|_, e| e.worker.fence <= self.epoch),
            (Unavailable::AllBusy, &|_, e| e.free() > 0),
        ];
        for (reason, keep) in stages {
            pool.retain(|(id, e)| keep(id, e));
            if pool.is_empty() {
                return Err(reason);
            }
        }
        let mut candidates = Vec::with_capacity(3);
        while candidates.len() < 3 {
            let Some(first) = take_weighted(&mut pool, rng) else {
                break;
            };
            let best = match take_weighted(&mut pool, rng) {
                None => first,
                Some(second) => {
                    let (keep, back) = if better(second, first) {
                        (second, first)
                    } else {
                        (first, second)
                    };
                    pool.push(back);
                    pool.sort_by_key(|(id, _)| **id);
                    keep
                }
            };
            candidates.push(*best.0);
        }
        let first = *candidates.first().ok_or(Unavailable::AllBusy)?;
        let grant = GrantId(self.next_grant);
        self.next_grant = self.next_grant.wrapping_add(1);
        self.grants.insert(
            grant,
            Grant {
                worker: first,
                client: request.client,
                expires,
            },
        );
        if let Some(entry) = self.workers.get_mut(&first) {
            entry.granted = entry.granted.saturating_add(1);
        }
        Ok(Allocation { candidates, grant })
    }

    fn uncount(&mut self, worker: NodeId) {
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.granted = entry.granted.saturating_sub(1);
        }
    }
}

type Slot<'a> = (&'a NodeId, &'a Entry);

/// One eligibility filter.
type Keep<'a> = &'a dyn Fn(&NodeId, &Entry) -> bool;

/// Removes and returns one worker sampled with probability proportional to its weight.
fn take_weighted<'a>(pool: &mut Vec<Slot<'a>>, rng: &mut SplitMix64) -> Option<Slot<'a>> {
    let total: u128 = pool.iter().map(|(_, e)| e.weight()).sum();
    let mut r = rng.below(total);
    let index = pool.iter().position(|(_, e)| {
        let w = e.weight();
        if r < w {
            true
        } else {
            r -= w;
            false
        }
    })?;
    Some(pool.remove(index))
}

/// Whether `a` scores strictly better than `b` (ties: the smaller NodeId is better).
fn better(a: Slot<'_>, b: Slot<'_>) -> bool {
    let ((an, ad), (bn, bd)) = (a.1.score(), b.1.score());
    match (an * bd).cmp(&(bn * ad)) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => a.0 < b.0,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn tc(n: u8) -> ToolchainId {
        ToolchainId([n; 32])
    }

    fn worker(total: u32, busy: u32, speed: u32, toolchains: &[u8]) -> Worker {
        Worker {
            alive: true,
            toolchains: toolchains.iter().map(|&t| tc(t)).collect(),
            slots_total: total,
            slots_busy: busy,
            speed,
            fence: 0,
        }
    }

    fn request(toolchain: u8, exclude: &[u8]) -> Request {
        Request {
            toolchain: tc(toolchain),
            exclude: exclude.iter().map(|&n| id(n)).collect(),
            client: id(200),
        }
    }

    fn table(n: u8) -> Allocator {
        let mut a = Allocator::new(1);
        for i in 1..=n {
            a.upsert(id(i), worker(2, 0, 100, &[1]));
        }
        a
    }

    #[test]
    fn returns_three_distinct_ranked_candidates_and_grants_the_first() {
        let mut a = table(5);
        let mut rng = SplitMix64::new(7);
        let got = a.allocate(&request(1, &[]), 0, 2_000, &mut rng).unwrap();
        assert_eq!(got.candidates.len(), 3);
        let set: BTreeSet<_> = got.candidates.iter().collect();
        assert_eq!(set.len(), 3);
        assert_eq!(a.granted(got.candidates[0]), 1);
        assert_eq!(a.granted(got.candidates[1]), 0);
        assert_eq!(a.free_slots(got.candidates[0]), Some(1));
    }

    #[test]
    fn fewer_workers_fewer_candidates() {
        let mut a = table(2);
        let got = a
            .allocate(&request(1, &[]), 0, 10, &mut SplitMix64::new(1))
            .unwrap();
        assert_eq!(got.candidates.len(), 2);
    }

    #[test]
    fn reasons_for_an_empty_answer() {
        let mut rng = SplitMix64::new(3);
        let mut a = Allocator::new(1);
        assert_eq!(
            a.allocate(&request(1, &[]), 0, 10, &mut rng),
            Err(Unavailable::NoWorker)
        );
        a.upsert(id(1), worker(2, 0, 1, &[1]));
        a.upsert(id(2), worker(2, 2, 1, &[1]));
        a.upsert(id(3), worker(2, 0, 1, &[2]));
        a.set_alive(id(3), false);
        assert_eq!(
            a.allocate(&request(2, &[]), 0, 10, &mut rng),
            Err(Unavailable::NoToolchain)
        );
        assert_eq!(
            a.allocate(&request(1, &[1, 2]), 0, 10, &mut rng),
            Err(Unavailable::AllExcluded)
        );
        assert_eq!(
            a.allocate(&request(1, &[1]), 0, 10, &mut rng),
            Err(Unavailable::AllBusy)
        );
        a.fence(id(2), 5);
        a.fence(id(1), 2);
        assert_eq!(
            a.allocate(&request(1, &[]), 0, 10, &mut rng),
            Err(Unavailable::Fenced)
        );
        // Claiming a newer epoch lifts the fence; a lower one never lowers the epoch.
        a.set_epoch(2);
        a.set_epoch(1);
        assert_eq!(a.epoch(), 2);
        let got = a.allocate(&request(1, &[]), 0, 10, &mut rng).unwrap();
        assert_eq!(got.candidates, vec![id(1)]);
    }

    #[test]
    fn grants_count_at_once_until_released_or_expired() {
        let mut a = Allocator::new(1);
        a.upsert(id(1), worker(2, 0, 1, &[1]));
        let mut rng = SplitMix64::new(9);
        let g1 = a.allocate(&request(1, &[]), 0, 1_000, &mut rng).unwrap();
        let g2 = a.allocate(&request(1, &[]), 0, 2_000, &mut rng).unwrap();
        assert_ne!(g1.grant, g2.grant);
        assert_eq!(
            a.allocate(&request(1, &[]), 0, 3_000, &mut rng),
            Err(Unavailable::AllBusy)
        );
        assert!(a.release(g2.grant));
        assert!(!a.release(g2.grant));
        a.allocate(&request(1, &[]), 0, 3_000, &mut rng).unwrap();
        assert_eq!(a.next_expiry(), Some(1_000));
        // At 1_000 the first grant expires and its slot is free again.
        a.allocate(&request(1, &[]), 1_000, 4_000, &mut rng)
            .unwrap();
        assert_eq!(a.granted(id(1)), 2);
        a.expire(10_000);
        assert_eq!(a.granted(id(1)), 0);
        assert_eq!(a.next_expiry(), None);
    }

    #[test]
    fn a_departed_client_releases_its_grants() {
        let mut a = table(3);
        let mut rng = SplitMix64::new(2);
        let mut other = request(1, &[]);
        other.client = id(201);
        a.allocate(&request(1, &[]), 0, 99, &mut rng).unwrap();
        a.allocate(&request(1, &[]), 0, 99, &mut rng).unwrap();
        a.allocate(&other, 0, 99, &mut rng).unwrap();
        assert_eq!(a.release_client(id(200)), 2);
        let total: u32 = (1..=3).map(|i| a.granted(id(i))).sum();
        assert_eq!(total, 1);
    }

    #[test]
    fn only_the_holder_releases_a_grant() {
        let mut a = table(1);
        let g = a
            .allocate(&request(1, &[]), 0, 99, &mut SplitMix64::new(3))
            .unwrap()
            .grant;
        assert!(
            !a.release_of(g, id(201)),
            "another client's release is ignored"
        );
        assert_eq!(a.granted(id(1)), 1);
        assert!(a.release_of(g, id(200)));
        assert_eq!(a.granted(id(1)), 0);
    }

    #[test]
    fn gossip_updates_keep_grants_and_fences() {
        let mut a = table(1);
        a.fence(id(1), 3);
        a.allocate(&request(1, &[]), 0, 99, &mut SplitMix64::new(0))
            .unwrap_err();
        a.set_epoch(3);
        a.allocate(&request(1, &[]), 0, 99, &mut SplitMix64::new(0))
            .unwrap();
        a.upsert(id(1), worker(4, 1, 100, &[1]));
        assert_eq!(a.granted(id(1)), 1);
        assert_eq!(a.free_slots(id(1)), Some(2));
        assert_eq!(a.worker(id(1)).map(|w| w.fence), Some(3));
        a.remove(id(1));
        assert_eq!(a.worker(id(1)), None);
        assert_eq!(a.free_slots(id(1)), None);
        assert_eq!(a.next_expiry(), None);
        // Unknown workers are ignored.
        a.set_alive(id(9), true);
        a.fence(id(9), 1);
        assert_eq!(a.granted(id(9)), 0);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let run = |seed| {
            let mut a = table(8);
            let mut rng = SplitMix64::new(seed);
            (0..10)
                .map(|_| a.allocate(&request(1, &[]), 0, 99, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
    }

    #[test]
    fn prefers_fast_and_free_workers() {
        let mut a = Allocator::new(1);
        a.upsert(id(1), worker(8, 0, 1_000, &[1]));
        a.upsert(id(2), worker(8, 0, 10, &[1]));
        a.upsert(id(3), worker(8, 7, 1_000, &[1]));
        let mut rng = SplitMix64::new(5);
        let mut firsts = BTreeMap::new();
        for _ in 0..200 {
            let got = a.allocate(&request(1, &[]), 0, 0, &mut rng).unwrap();
            *firsts.entry(got.candidates[0]).or_insert(0) += 1;
            a.expire(0);
        }
        assert!(firsts[&id(1)] > 150, "{firsts:?}");
    }

    #[test]
    fn zero_speed_and_zero_capacity_do_not_panic() {
        let mut a = Allocator::new(0);
        a.upsert(id(1), worker(0, 0, 0, &[1]));
        a.upsert(id(2), worker(1, 5, 0, &[1]));
        a.upsert(id(3), worker(u32::MAX, 0, u32::MAX, &[1]));
        let got = a
            .allocate(
                &request(1, &[]),
                u64::MAX,
                u64::MAX,
                &mut SplitMix64::new(0),
            )
            .unwrap();
        assert_eq!(got.candidates, vec![id(3)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc { toolchain: u8, exclude: Vec<u8> },
        Release(usize),
        Gossip { worker: u8, busy: u32 },
        Alive { worker: u8, alive: bool },
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, prop::collection::vec(0u8..8, 0..4))
                .prop_map(|(toolchain, exclude)| Op::Alloc { toolchain, exclude }),
            1 => any::<usize>().prop_map(Op::Release),
            1 => (0u8..8, 0u32..6).prop_map(|(worker, busy)| Op::Gossip { worker, busy }),
            1 => (0u8..8, any::<bool>()).prop_map(|(worker, alive)| Op::Alive { worker, alive }),
            1 => (0u64..3_000).prop_map(Op::Advance),
        ]
    }

    fn workers() -> impl Strategy<Value = Vec<Worker>> {
        prop::collection::vec(
            (
                0u32..5,
                0u32..5,
                0u32..1_000,
                prop::collection::vec(0u8..3, 0..3),
            ),
            0..8,
        )
        .prop_map(|ws| {
            ws.into_iter()
                .map(|(total, busy, speed, tcs)| worker(total, busy, speed, &tcs))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn allocation_invariants(
            table in workers(),
            ops in prop::collection::vec(op(), 0..80),
            seed in any::<u64>(),
        ) {
            let mut a = Allocator::new(1);
            for (i, w) in table.iter().enumerate() {
                a.upsert(id(i as u8), w.clone());
            }
            let mut rng = SplitMix64::new(seed);
            let mut now = 0u64;
            let mut live: Vec<(GrantId, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc { toolchain, exclude } => {
                        let req = request(toolchain, &exclude);
                        let before: BTreeMap<NodeId, u32> =
                            (0..8).map(|i| (id(i), a.granted(id(i)))).collect();
                        let expiry = now + 2_000;
                        match a.allocate(&req, now, expiry, &mut rng) {
                            Ok(got) => {
                                let set: BTreeSet<_> = got.candidates.iter().collect();
                                prop_assert_eq!(set.len(), got.candidates.len());
                                prop_assert!(!got.candidates.is_empty());
                                prop_assert!(got.candidates.len() <= 3);
                                for c in &got.candidates {
                                    let w = a.worker(*c).expect("known");
                                    prop_assert!(!req.exclude.contains(c));
                                    prop_assert!(w.alive);
                                    prop_assert!(w.toolchains.contains(&req.toolchain));
                                }
                                let first = got.candidates[0];
                                let w = a.worker(first).expect("known");
                                prop_assert!(w.slots_busy + a.granted(first) <= w.slots_total);
                                prop_assert!(a.granted(first) >= 1);
                                live.push((got.grant, expiry));
                            }
                            Err(_) => {
                                // Nothing eligible: no worker changed hands.
                                for i in 0..8 {
                                    prop_assert!(a.granted(id(i)) <= before[&id(i)]);
                                }
                            }
                        }
                    }
                    Op::Release(k) => {
                        if !live.is_empty() {
                            let (g, _) = live.remove(k % live.len());
                            a.release(g);
                        }
                    }
                    Op::Gossip { worker, busy } => {
                        if let Some(w) = a.worker(id(worker)).cloned() {
                            a.upsert(id(worker), Worker { slots_busy: busy, ..w });
                        }
                    }
                    Op::Alive { worker, alive } => a.set_alive(id(worker), alive),
                    Op::Advance(dt) => {
                        now += dt;
                        a.expire(now);
                        live.retain(|(_, e)| *e > now);
                    }
                }
                // Grants here are exactly the live, unexpired, unreleased ones.
                let total: u32 = (0..8).map(|i| a.granted(id(i))).sum();
                let outstanding = live.iter().filter(|(_, e)| *e > now).count() as u32;
                prop_assert!(total <= outstanding);
            }
            now += 2_001;
            a.expire(now);
            let total: u32 = (0..8).map(|i| a.granted(id(i))).sum();
            prop_assert_eq!(total, 0);
            prop_assert_eq!(a.next_expiry(), None);
        }
    }
}
