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

use super::id::NodeId;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
