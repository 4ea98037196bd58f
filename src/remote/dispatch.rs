//! The dispatch decision for one job: a pure state machine, fed what happened, answering what to
//! do next. The async client ([`super::client`]) carries the actions out.
//!
//! Rules (`research/membership.md` §4.4, issue 6):
//!
//! 1. An idle local slot is taken first ([`Dispatch::start`]).
//! 2. Otherwise ask for ranked candidates (the coordinator, or the same allocator run on the
//!    gossip view), excluding the workers that failed this job.
//! 3. Candidates are tried in order; one that is busy, unreachable or without the toolchain →
//!    the next one; the list spent → ask again, excluding the failed ones. Busy is no failure: a
//!    busy worker is not excluded from the next round. A worker that refuses a grant because it
//!    follows a newer coordinator epoch counts as busy here (the client then skips the stale
//!    coordinator and allocates from its own view).
//! 4. Every worker busy (nothing free anywhere, or a whole round of Busy) → wait and ask again;
//!    a local slot freeing meanwhile is taken (that is no fallback either).
//! 5. A worker lost mid-job (connection lost, timed out, member down) → the job runs again
//!    elsewhere with attempt + 1, within the retry budget (`MESHCC_RETRY_LIMIT`).
//! 6. A result is accepted only from the current attempt; a late one is discarded.
//! 7. Every live worker failed this job already (it died and came back, its compiler
//!    crashed, a dial failed once) → the failures are forgiven, at most [`FORGIVE_LIMIT`] times
//!    per job, and the job asks again: a worker that failed once is still better than a local
//!    compile. (Lost workers still spend the retry budget.)
//! 8. No worker can take the job (none alive, none with the toolchain, all excluded once the
//!    forgiveness is spent, the arguments refused, the retry budget spent) → the local fallback
//!    under the policy (`MESHCC_FALLBACK=allow|warn|fail`), always with its reason.

use std::collections::{BTreeSet, VecDeque};

use crate::mesh::identity::NodeId;

/// How many times one job forgives the workers that failed it, when only they are left.
pub const FORGIVE_LIMIT: u32 = 2;

/// What to do when no worker can take a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackPolicy {
    /// Compile locally (counted, logged at debug level).
    Allow,
    /// Compile locally and print a warning on the build's stderr.
    Warn,
    /// Fail the compile with the reason.
    Fail,
}

impl std::str::FromStr for FallbackPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Self::Allow),
            "warn" => Ok(Self::Warn),
            "fail" => Ok(Self::Fail),
            other => Err(format!(
                "MESHCC_FALLBACK = {other:?}: expected allow, warn or fail"
            )),
        }
    }
}

/// How many times a lost job is sent again; `None` is no limit (`inf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryLimit(pub Option<u32>);

impl std::str::FromStr for RetryLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "inf" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|n| Self(Some(n)))
            .map_err(|_| format!("MESHCC_RETRY_LIMIT = {s:?}: expected a number of retries or inf"))
    }
}

/// The client's dispatch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Retries after lost workers.
    pub retry_limit: RetryLimit,
    /// What to do when no worker can take a job.
    pub fallback: FallbackPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            retry_limit: RetryLimit(Some(3)),
            fallback: FallbackPolicy::Allow,
        }
    }
}

/// Why a job compiles locally for lack of a worker; the key is its statistics name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// No worker is alive in the view.
    NoWorker,
    /// No live worker has the job's toolchain.
    NoToolchain,
    /// Every worker with the toolchain failed this job already.
    AllFailed,
    /// Every remaining worker follows a newer coordinator than the one asked.
    Fenced,
    /// A worker refused the job's arguments (they would be refused anywhere).
    Refused,
    /// The retry budget is spent.
    RetryLimit,
}

impl FallbackReason {
    /// The statistics key.
    pub fn key(self) -> &'static str {
        match self {
            Self::NoWorker => "no_worker",
            Self::NoToolchain => "no_toolchain",
            Self::AllFailed => "all_workers_failed",
            Self::Fenced => "fenced",
            Self::Refused => "refused_by_worker",
            Self::RetryLimit => "retry_limit",
        }
    }
}

/// Why the allocator offered nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCandidates {
    /// Nothing eligible: compile locally for this reason.
    Fallback(FallbackReason),
    /// Every eligible worker is busy: wait and ask again.
    AllBusy,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Ranked candidates arrived.
    Candidates(Vec<NodeId>),
    /// The allocator offered nothing.
    NoCandidates(NoCandidates),
    /// The worker had no free slot.
    Busy(NodeId),
    /// The worker could not be reached, or lacks the toolchain: it did not start the job.
    Unusable(NodeId),
    /// The worker refused the job's arguments.
    Refused(NodeId),
    /// The worker was lost while it had the job (attempt given).
    Lost(NodeId, u32),
    /// A result arrived from a worker for an attempt.
    Done(NodeId, u32),
    /// The wait after an all-busy round is over.
    Waited,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Compile here on an idle local slot (by choice, not a fallback).
    LocalSlot,
    /// Ask for candidates for this attempt, excluding these workers.
    Allocate {
        /// The attempt number.
        attempt: u32,
        /// Workers that failed this job.
        exclude: Vec<NodeId>,
    },
    /// Send the job to this worker.
    Send {
        /// The worker.
        worker: NodeId,
        /// The attempt number.
        attempt: u32,
    },
    /// Wait a moment (or for a local slot), then report [`Event::Waited`].
    Wait,
    /// The result is the job's result.
    Accept,
    /// A late result of an earlier attempt: drop it, keep waiting for the current one.
    Discard,
    /// Compile locally for lack of a worker; `warn` says whether to tell the user.
    Fallback {
        /// Why.
        reason: FallbackReason,
        /// Print a warning (policy `warn`).
        warn: bool,
    },
    /// Fail the compile (policy `fail`).
    Fail(FallbackReason),
}

/// The dispatch state of one job.
#[derive(Debug, Clone)]
pub struct Dispatch {
    policy: Policy,
    attempt: u32,
    retries: u32,
    failed: BTreeSet<NodeId>,
    forgiven: u32,
    queue: VecDeque<NodeId>,
    /// Whether every candidate of the current round answered Busy.
    round_all_busy: bool,
    done: bool,
}

impl Dispatch {
    /// A new job; with an idle local slot it runs here, otherwise it asks for candidates.
    pub fn start(policy: Policy, local_idle: bool) -> (Self, Action) {
        let d = Self {
            policy,
            attempt: 1,
            retries: 0,
            failed: BTreeSet::new(),
            forgiven: 0,
            queue: VecDeque::new(),
            round_all_busy: true,
            done: local_idle,
        };
        let action = if local_idle {
            Action::LocalSlot
        } else {
            d.allocate()
        };
        (d, action)
    }

    /// The current attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Retries made so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    fn allocate(&self) -> Action {
        Action::Allocate {
            attempt: self.attempt,
            exclude: self.failed.iter().copied().collect(),
        }
    }

    fn fallback(&mut self, reason: FallbackReason) -> Action {
        self.done = true;
        match self.policy.fallback {
            FallbackPolicy::Allow => Action::Fallback {
                reason,
                warn: false,
            },
            FallbackPolicy::Warn => Action::Fallback { reason, warn: true },
            FallbackPolicy::Fail => Action::Fail(reason),
        }
    }

    /// Only workers that failed this job are left: forgive them and ask again (rule 7), or
    /// fall back once the forgiveness is spent.
    fn all_failed(&mut self) -> Action {
        if self.failed.is_empty() || self.forgiven >= FORGIVE_LIMIT {
            return self.fallback(FallbackReason::AllFailed);
        }
        self.forgiven += 1;
        self.failed.clear();
        self.queue.clear();
        self.allocate()
    }

    /// The next candidate of the round, or the end of the round.
    fn next(&mut self) -> Action {
        while let Some(w) = self.queue.pop_front() {
            if !self.failed.contains(&w) {
                return Action::Send {
                    worker: w,
                    attempt: self.attempt,
                };
            }
        }
        if self.round_all_busy {
            Action::Wait
        } else {
            self.allocate()
        }
    }

    /// Feeds one event; returns what to do.
    pub fn on(&mut self, event: Event) -> Action {
        if self.done {
            // A result after the job was settled (accepted, or gone local) is late.
            return Action::Discard;
        }
        match event {
            Event::Candidates(list) => {
                self.queue = list
                    .into_iter()
                    .filter(|w| !self.failed.contains(w))
                    .collect();
                if self.queue.is_empty() {
                    return self.all_failed();
                }
                self.round_all_busy = true;
                self.next()
            }
            Event::NoCandidates(NoCandidates::AllBusy) => Action::Wait,
            Event::NoCandidates(NoCandidates::Fallback(FallbackReason::AllFailed)) => {
                self.all_failed()
            }
            Event::NoCandidates(NoCandidates::Fallback(reason)) => self.fallback(reason),
            Event::Waited => self.allocate(),
            Event::Busy(_) => self.next(),
            Event::Unusable(w) => {
                self.failed.insert(w);
                self.round_all_busy = false;
                self.next()
            }
            Event::Refused(_) => self.fallback(FallbackReason::Refused),
            Event::Lost(w, attempt) => {
                if attempt != self.attempt {
                    return Action::Discard;
                }
                self.failed.insert(w);
                if self.policy.retry_limit.0.is_some_and(|n| self.retries >= n) {
                    return self.fallback(FallbackReason::RetryLimit);
                }
                self.retries += 1;
                self.attempt += 1;
                self.queue.clear();
                self.allocate()
            }
            Event::Done(_, attempt) if attempt == self.attempt => {
                self.done = true;
                Action::Accept
            }
            Event::Done(..) => Action::Discard,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    fn policy(limit: Option<u32>, fallback: FallbackPolicy) -> Policy {
        Policy {
            retry_limit: RetryLimit(limit),
            fallback,
        }
    }

    fn started() -> Dispatch {
        let (d, a) = Dispatch::start(Policy::default(), false);
        assert_eq!(
            a,
            Action::Allocate {
                attempt: 1,
                exclude: vec![]
            }
        );
        d
    }

    fn send(w: u8, attempt: u32) -> Action {
        Action::Send {
            worker: n(w),
            attempt,
        }
    }

    #[test]
    fn an_idle_local_slot_is_taken_first() {
        let (mut d, a) = Dispatch::start(Policy::default(), true);
        assert_eq!(a, Action::LocalSlot);
        assert_eq!(d.on(Event::Done(n(1), 1)), Action::Discard);
    }

    #[test]
    fn candidates_are_tried_in_order_then_asked_again_without_the_failed() {
        let mut d = started();
        assert_eq!(d.on(Event::Candidates(vec![n(1), n(2), n(3)])), send(1, 1));
        assert_eq!(d.on(Event::Unusable(n(1))), send(2, 1));
        assert_eq!(d.on(Event::Busy(n(2))), send(3, 1));
        assert_eq!(
            d.on(Event::Unusable(n(3))),
            Action::Allocate {
                attempt: 1,
                exclude: vec![n(1), n(3)]
            },
            "busy n2 is not excluded"
        );
        // A failed worker offered again is skipped.
        assert_eq!(d.on(Event::Candidates(vec![n(1), n(2)])), send(2, 1));
        assert_eq!(d.on(Event::Done(n(2), 1)), Action::Accept);
        assert_eq!(d.attempt(), 1);
        assert_eq!(d.retries(), 0);
    }

    #[test]
    fn a_round_of_busy_workers_waits_then_asks_again() {
        let mut d = started();
        assert_eq!(d.on(Event::Candidates(vec![n(1), n(2)])), send(1, 1));
        assert_eq!(d.on(Event::Busy(n(1))), send(2, 1));
        assert_eq!(d.on(Event::Busy(n(2))), Action::Wait);
        assert_eq!(
            d.on(Event::Waited),
            Action::Allocate {
                attempt: 1,
                exclude: vec![]
            }
        );
        assert_eq!(
            d.on(Event::NoCandidates(NoCandidates::AllBusy)),
            Action::Wait
        );
    }

    #[test]
    fn a_lost_worker_means_the_next_attempt_elsewhere() {
        let mut d = started();
        assert_eq!(d.on(Event::Candidates(vec![n(1), n(2)])), send(1, 1));
        assert_eq!(
            d.on(Event::Lost(n(1), 1)),
            Action::Allocate {
                attempt: 2,
                exclude: vec![n(1)]
            }
        );
        assert_eq!(d.on(Event::Candidates(vec![n(2)])), send(2, 2));
        // The late result of attempt 1 is discarded; attempt 2's is accepted.
        assert_eq!(d.on(Event::Done(n(1), 1)), Action::Discard);
        assert_eq!(d.on(Event::Lost(n(1), 1)), Action::Discard);
        assert_eq!(d.on(Event::Done(n(2), 2)), Action::Accept);
        assert_eq!(d.retries(), 1);
        assert_eq!(d.on(Event::Done(n(2), 2)), Action::Discard, "settled");
    }

    #[test]
    fn the_retry_budget_bounds_retries_and_inf_has_none() {
        let (mut d, _) = Dispatch::start(policy(Some(1), FallbackPolicy::Allow), false);
        d.on(Event::Candidates(vec![n(1)]));
        assert!(matches!(
            d.on(Event::Lost(n(1), 1)),
            Action::Allocate { attempt: 2, .. }
        ));
        d.on(Event::Candidates(vec![n(2)]));
        assert_eq!(
            d.on(Event::Lost(n(2), 2)),
            Action::Fallback {
                reason: FallbackReason::RetryLimit,
                warn: false
            }
        );

        let (mut d, _) = Dispatch::start(policy(Some(0), FallbackPolicy::Allow), false);
        d.on(Event::Candidates(vec![n(1)]));
        assert!(matches!(
            d.on(Event::Lost(n(1), 1)),
            Action::Fallback {
                reason: FallbackReason::RetryLimit,
                ..
            }
        ));

        let (mut d, _) = Dispatch::start(policy(None, FallbackPolicy::Allow), false);
        for i in 1..=200u32 {
            let w = n((i % 250) as u8 + 1);
            assert_eq!(
                d.on(Event::Candidates(vec![w])),
                Action::Send {
                    worker: w,
                    attempt: i
                }
            );
            assert!(matches!(d.on(Event::Lost(w, i)), Action::Allocate { .. }));
        }
        assert_eq!(d.retries(), 200);
    }

    #[test]
    fn a_restarted_worker_that_lost_the_job_gets_it_again() {
        // Lost on n1, which then restarts and is the only live worker (the allocator reports
        // every eligible worker excluded): the job asks again without exclusions.
        let mut d = started();
        d.on(Event::Candidates(vec![n(1)]));
        d.on(Event::Lost(n(1), 1));
        assert_eq!(
            d.on(Event::NoCandidates(NoCandidates::Fallback(
                FallbackReason::AllFailed
            ))),
            Action::Allocate {
                attempt: 2,
                exclude: vec![]
            }
        );
        assert_eq!(
            d.on(Event::Candidates(vec![n(1)])),
            Action::Send {
                worker: n(1),
                attempt: 2
            }
        );
    }

    #[test]
    fn nothing_eligible_falls_back_under_the_policy() {
        for reason in [
            FallbackReason::NoWorker,
            FallbackReason::NoToolchain,
            FallbackReason::AllFailed,
            FallbackReason::Fenced,
        ] {
            for (p, want) in [
                (
                    FallbackPolicy::Allow,
                    Action::Fallback {
                        reason,
                        warn: false,
                    },
                ),
                (
                    FallbackPolicy::Warn,
                    Action::Fallback { reason, warn: true },
                ),
                (FallbackPolicy::Fail, Action::Fail(reason)),
            ] {
                let (mut d, _) = Dispatch::start(policy(Some(3), p), false);
                assert_eq!(
                    d.on(Event::NoCandidates(NoCandidates::Fallback(reason))),
                    want
                );
                assert_eq!(d.on(Event::Done(n(1), 1)), Action::Discard);
            }
        }
    }

    #[test]
    fn only_failed_candidates_are_forgiven_twice_then_fall_back_and_a_refusal_is_final() {
        let mut d = started();
        for round in 0..FORGIVE_LIMIT {
            d.on(Event::Candidates(vec![n(1)]));
            d.on(Event::Unusable(n(1)));
            assert_eq!(
                d.on(Event::Candidates(vec![n(1)])),
                Action::Allocate {
                    attempt: 1,
                    exclude: vec![]
                },
                "forgiveness {round}"
            );
        }
        d.on(Event::Candidates(vec![n(1)]));
        d.on(Event::Unusable(n(1)));
        assert_eq!(
            d.on(Event::Candidates(vec![n(1)])),
            Action::Fallback {
                reason: FallbackReason::AllFailed,
                warn: false
            }
        );
        let mut d = started();
        d.on(Event::Candidates(vec![n(1), n(2)]));
        assert_eq!(
            d.on(Event::Refused(n(1))),
            Action::Fallback {
                reason: FallbackReason::Refused,
                warn: false
            }
        );
    }

    #[test]
    fn settings_parse_with_messages() {
        assert_eq!("inf".parse::<RetryLimit>(), Ok(RetryLimit(None)));
        assert_eq!("0".parse::<RetryLimit>(), Ok(RetryLimit(Some(0))));
        assert!("x"
            .parse::<RetryLimit>()
            .unwrap_err()
            .contains("MESHCC_RETRY_LIMIT"));
        assert_eq!("warn".parse::<FallbackPolicy>(), Ok(FallbackPolicy::Warn));
        assert!("no"
            .parse::<FallbackPolicy>()
            .unwrap_err()
            .contains("allow, warn or fail"));
    }

    proptest::proptest! {
        /// Whatever happens, a job never accepts a result of another attempt, never sends to a
        /// worker that failed it (unless every failure was forgiven, at most `FORGIVE_LIMIT`
        /// times), and the attempt grows by one per retry.
        #[test]
        fn invariants_hold_under_any_events(events in proptest::collection::vec((0u8..9, 1u8..5, 1u32..4), 0..60)) {
            let (mut d, _) = Dispatch::start(policy(Some(5), FallbackPolicy::Allow), false);
            let mut failed = BTreeSet::new();
            let mut forgiven = 0;
            for (kind, w, attempt) in events {
                let w = n(w);
                let before = d.attempt();
                let event = match kind {
                    0 => Event::Candidates(vec![w, n(w.0[0] % 4 + 1)]),
                    1 => Event::Busy(w),
                    2 => Event::Unusable(w),
                    3 => Event::Lost(w, attempt),
                    4 => Event::Done(w, attempt),
                    5 => Event::Waited,
                    6 => Event::NoCandidates(NoCandidates::AllBusy),
                    7 => Event::NoCandidates(NoCandidates::Fallback(FallbackReason::AllFailed)),
                    _ => Event::Busy(w),
                };
                let was_done = d.done;
                let action = d.on(event.clone());
                match (&event, &action) {
                    (Event::Unusable(w), _) if !was_done => { failed.insert(*w); }
                    (Event::Lost(w, a), _) if !was_done && *a == before => { failed.insert(*w); }
                    _ => {}
                }
                if let Action::Allocate { exclude, .. } = &action {
                    if exclude.is_empty() && !failed.is_empty() {
                        failed.clear();
                        forgiven += 1;
                    }
                    proptest::prop_assert!(forgiven <= FORGIVE_LIMIT);
                    proptest::prop_assert_eq!(exclude, &failed.iter().copied().collect::<Vec<_>>());
                }
                match action {
                    Action::Accept => proptest::prop_assert!(matches!(event, Event::Done(_, a) if a == before)),
                    Action::Send { worker, attempt } => {
                        proptest::prop_assert!(!failed.contains(&worker));
                        proptest::prop_assert_eq!(attempt, d.attempt());
                    }
                    _ => {}
                }
                proptest::prop_assert!(d.attempt() == before || d.attempt() == before + 1);
                proptest::prop_assert_eq!(d.attempt(), d.retries() + 1);
            }
        }
    }
}
