//! Distributed-compilation scenarios: every node runs the real transport, membership,
//! election, coordinator allocation, worker and dispatch client; only the compiler is fake
//! (durations and crashes drawn from the seed). After each scenario the invariants hold:
//!
//! - every job completed exactly once, with its own output, from a compile that really
//!   finished on the worker credited with it;
//! - no node ever ran more compiles at once than its slots;
//! - no slot outlived its lease: 3 s after the last job (or after its client died), every
//!   worker's slots are free;
//! - no node's coordinator epoch ever went back;
//! - once converged, one coordinator for all running nodes;
//! - no local fallback while a worker was reachable (each scenario keeps one reachable).
//!
//! `MESHCC_SIM_SEED=N` replays one seed; `MESHCC_SIM_SEEDS=K` sweeps seeds 1..=K.

use std::time::Duration;

use meshcc::mesh::election::{MemberState, NodeClass};
use meshcc::mesh::membership::core::Settings;
use meshcc::mesh::transport::TransportConfig;
use meshcc::remote::dispatch::Policy;
use meshcc_netsim::jobs::{Build, BuildReport, Epochs, FakeCompile, TOOLCHAIN};
use meshcc_netsim::{seeds, Link, Sim};
use tokio::time::Instant;

/// Seeds each named scenario runs in CI (the churn scenario runs [`CHURN_SEEDS`]); sweep more
/// by hand with `MESHCC_SIM_SEEDS` (see `docs/benchmarks.md` for the sweeps run).
const SEEDS: u64 = 5;
/// Seeds of the churn scenario in CI (the whole netsim suite stays near 2 minutes on 2 cores).
const CHURN_SEEDS: u64 = 40;
/// Worker slots of every worker.
const SLOTS: u32 = 2;

fn sim(seed: u64, compile: FakeCompile) -> Sim {
    let sim = Sim::with_jobs(
        seed,
        TransportConfig::default(),
        Settings::default(),
        compile,
        Policy::default(),
    );
    sim.net().set_tracing(false);
    sim
}

/// A client (a laptop with no slots: every job goes remote, and it never coordinates while a
/// server lives) and `workers` servers; returns their indices once every node sees every
/// other alive, with its toolchain, and all follow one coordinator.
async fn mesh(sim: &mut Sim, workers: usize) -> (usize, Vec<usize>) {
    let client = sim.add_node_with(Sim::ip_for(0), NodeClass::Laptop, 0);
    let ws: Vec<usize> = (1..=workers)
        .map(|k| sim.add_node_with(Sim::ip_for(k), NodeClass::Server, SLOTS))
        .collect();
    converged(sim, client, &ws).await;
    (client, ws)
}

/// Waits until `client` sees every one of `workers` alive and offering the toolchain, and all
/// running nodes follow one coordinator.
async fn converged(sim: &Sim, client: usize, workers: &[usize]) {
    sim.eventually("the mesh converges", Duration::from_secs(60), || {
        let view = sim.view(client);
        let offered = workers.iter().all(|&w| {
            view.member(&sim.id(w)).is_some_and(|m| {
                m.state == MemberState::Alive
                    && m.advert
                        .as_ref()
                        .is_some_and(|a| a.toolchains.contains(&TOOLCHAIN))
            })
        });
        offered && sim.one_coordinator(&sim.live()).is_some()
    })
    .await;
}

/// Waits for `build` to finish (observing epochs meanwhile), then checks every invariant
/// and returns the build's figures.
async fn finish(sim: &Sim, build: &Build, epochs: &mut Epochs) -> BuildReport {
    let end = Instant::now() + Duration::from_secs(600);
    while !build.finished() {
        epochs.observe(sim);
        assert!(
            Instant::now() < end,
            "the build did not finish within 600 s of virtual time ({} jobs done)",
            build.completed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger = sim.ledger().unwrap_or_else(|| unreachable!());
    let report = build.check(sim, ledger);
    ledger.check_capacity(|i| sim.node(i).slots);
    assert_eq!(
        build.fallbacks(),
        vec![],
        "local fallbacks or failures while a worker was reachable ({report:?})"
    );
    leases_end(sim, epochs).await;
    sim.eventually(
        "one coordinator for all running nodes",
        Duration::from_secs(30),
        || {
            epochs.observe(sim);
            sim.one_coordinator(&sim.live()).is_some()
        },
    )
    .await;
    report
}

/// Within 3 s every running worker's slots are free (no job holds one past its lease).
async fn leases_end(sim: &Sim, epochs: &mut Epochs) {
    sim.eventually(
        "every slot freed within 3 s",
        Duration::from_secs(3),
        || {
            epochs.observe(sim);
            sim.live().iter().all(|&i| sim.busy_slots(i) == 0)
        },
    )
    .await;
}

/// Runs until `f` holds, observing epochs (for scenario steps inside a build).
async fn until(sim: &Sim, epochs: &mut Epochs, what: &str, mut f: impl FnMut(&Sim) -> bool) {
    sim.eventually(what, Duration::from_secs(120), || {
        epochs.observe(sim);
        f(sim)
    })
    .await;
}

/// The worker running the most compiles now (and how many), among `workers`.
fn busiest(sim: &Sim, workers: &[usize]) -> (usize, u32) {
    workers
        .iter()
        .map(|&w| (w, sim.busy_slots(w)))
        .max_by_key(|&(w, n)| (n, std::cmp::Reverse(w)))
        .unwrap_or((0, 0))
}

/// The autoscaling story: 3 workers take the build; 2 are killed and a build starts at once,
/// before membership prunes them: it completes on the survivor without a fallback; 2 new
/// workers come up at the dead ones' addresses and get jobs.
#[test]
fn autoscaling_out_in_out() {
    seeds::run("autoscaling_out_in_out", SEEDS, |seed| async move {
        let mut sim = sim(seed, FakeCompile::default());
        let mut epochs = Epochs::default();
        let (client, ws) = mesh(&mut sim, 3).await;
        let out = finish(&sim, &sim.build(client, 24, 6), &mut epochs).await;
        assert_eq!(out.per_worker.len(), 3, "all three workers used: {out:?}");

        sim.kill(ws[0]);
        sim.kill(ws[1]);
        let inn = finish(&sim, &sim.build(client, 16, 6), &mut epochs).await;
        assert_eq!(
            inn.per_worker.keys().copied().collect::<Vec<_>>(),
            vec![ws[2]],
            "{inn:?}"
        );

        let fresh: Vec<usize> = (1..=2)
            .map(|k| sim.add_node_with(Sim::ip_for(k), NodeClass::Server, SLOTS))
            .collect();
        converged(&sim, client, &[fresh[0], fresh[1], ws[2]]).await;
        let again = finish(&sim, &sim.build(client, 24, 6), &mut epochs).await;
        for w in &fresh {
            assert!(
                again.per_worker.contains_key(w),
                "new worker {w} at a reused address got no job: {again:?}"
            );
        }
        sim.shutdown().await;
    });
}

/// The worker running the most jobs is killed mid-build: its jobs run again elsewhere.
#[test]
fn worker_dies_mid_job() {
    seeds::run("worker_dies_mid_job", SEEDS, |seed| async move {
        let compile = FakeCompile {
            min: Duration::from_secs(1),
            max: Duration::from_secs(3),
            ..FakeCompile::default()
        };
        let mut sim = sim(seed, compile);
        let mut epochs = Epochs::default();
        let (client, ws) = mesh(&mut sim, 3).await;
        let build = sim.build(client, 30, 6);
        until(&sim, &mut epochs, "a worker runs two jobs", |s| {
            busiest(s, &ws).1 >= 2
        })
        .await;
        let (victim, running) = busiest(&sim, &ws);
        sim.kill(victim);
        let report = finish(&sim, &build, &mut epochs).await;
        assert!(
            report.retried >= 1,
            "the {running} jobs running on the dead worker were not retried: {report:?}"
        );
        sim.shutdown().await;
    });
}

/// The coordinator (a worker) is killed mid-build: the build completes without a fallback,
/// and the survivors follow a new coordinator with a higher epoch.
#[test]
fn coordinator_dies_mid_build() {
    seeds::run("coordinator_dies_mid_build", SEEDS, |seed| async move {
        let mut sim = sim(seed, FakeCompile::default());
        let mut epochs = Epochs::default();
        let (client, _) = mesh(&mut sim, 4).await;
        let (old, epoch) = sim
            .one_coordinator(&sim.live())
            .unwrap_or_else(|| unreachable!());
        let build = sim.build(client, 40, 8);
        until(&sim, &mut epochs, "a quarter of the build done", |_| {
            build.completed() >= 10
        })
        .await;
        let victim = sim.index_of(&old).unwrap_or_else(|| unreachable!());
        assert_ne!(
            victim, client,
            "a server coordinates, not the laptop client"
        );
        sim.kill(victim);
        finish(&sim, &build, &mut epochs).await;
        let (new, new_epoch) = sim
            .one_coordinator(&sim.live())
            .unwrap_or_else(|| unreachable!());
        assert!(
            new != old && new_epoch > epoch,
            "{old}@{epoch} → {new}@{new_epoch}"
        );
        sim.shutdown().await;
    });
}

/// The network splits mid-build, the client with two of four workers: the jobs cut off run
/// again on the client's side; healed, the mesh ends with one coordinator.
#[test]
fn partition_mid_build_and_heal() {
    seeds::run("partition_mid_build_and_heal", SEEDS, |seed| async move {
        let mut sim = sim(seed, FakeCompile::default());
        let mut epochs = Epochs::default();
        let (client, ws) = mesh(&mut sim, 4).await;
        let build = sim.build(client, 40, 8);
        until(&sim, &mut epochs, "a quarter of the build done", |_| {
            build.completed() >= 10
        })
        .await;
        let host = |i: usize| sim.node(i).host;
        sim.net().partition(&[
            &[host(client), host(ws[0]), host(ws[1])],
            &[host(ws[2]), host(ws[3])],
        ]);
        let split = Instant::now();
        until(&sim, &mut epochs, "10 s of partition", |_| {
            split.elapsed() >= Duration::from_secs(10)
        })
        .await;
        sim.net().heal();
        finish(&sim, &build, &mut epochs).await;
        sim.shutdown().await;
    });
}

/// The client's address changes mid-build: its connections migrate, the build completes,
/// and no job is retried because of it.
#[test]
fn client_moves_mid_build() {
    seeds::run("client_moves_mid_build", SEEDS, |seed| async move {
        let mut sim = sim(seed, FakeCompile::default());
        let mut epochs = Epochs::default();
        let (client, _) = mesh(&mut sim, 3).await;
        let build = sim.build(client, 30, 6);
        until(&sim, &mut epochs, "a third of the build done", |_| {
            build.completed() >= 10
        })
        .await;
        sim.move_to(client, Sim::ip_for(200));
        let report = finish(&sim, &build, &mut epochs).await;
        assert_eq!(report.retried, 0, "{report:?}");
        sim.shutdown().await;
    });
}

/// Every link loses 5% of its packets: the build completes without a fallback.
#[test]
fn five_percent_loss() {
    seeds::run("five_percent_loss", SEEDS, |seed| async move {
        let mut sim = sim(seed, FakeCompile::default());
        sim.net().set_default_link(Link::default().lossy(0.05));
        let mut epochs = Epochs::default();
        let (client, _) = mesh(&mut sim, 3).await;
        finish(&sim, &sim.build(client, 30, 6), &mut epochs).await;
        sim.shutdown().await;
    });
}

/// A laptop worker sleeps for 10 s mid-build and wakes: its jobs run again elsewhere, the
/// build completes without a fallback, no epoch goes back, and the coordinator is the one from
/// before (no flapping: cut off, the laptop claimed nothing).
#[test]
fn laptop_worker_sleeps_mid_build() {
    seeds::run("laptop_worker_sleeps_mid_build", SEEDS, |seed| async move {
        let mut sim = sim(seed, FakeCompile::default());
        let mut epochs = Epochs::default();
        let client = sim.add_node_with(Sim::ip_for(0), NodeClass::Laptop, 0);
        let mut ws: Vec<usize> = (1..=2)
            .map(|k| sim.add_node_with(Sim::ip_for(k), NodeClass::Server, SLOTS))
            .collect();
        let laptop = sim.add_node_with(Sim::ip_for(3), NodeClass::Laptop, SLOTS);
        ws.push(laptop);
        converged(&sim, client, &ws).await;
        let before = sim.one_coordinator(&sim.live());
        let build = sim.build(client, 40, 6);
        until(&sim, &mut epochs, "the laptop runs a job", |s| {
            s.busy_slots(laptop) >= 1
        })
        .await;
        let host = sim.node(laptop).host;
        sim.net().freeze(host).unwrap_or_else(|e| panic!("{e}"));
        let slept = Instant::now();
        until(&sim, &mut epochs, "10 s of sleep", |_| {
            slept.elapsed() >= Duration::from_secs(10)
        })
        .await;
        sim.net().wake(host).unwrap_or_else(|e| panic!("{e}"));
        finish(&sim, &build, &mut epochs).await;
        assert_eq!(
            sim.one_coordinator(&sim.live()),
            before,
            "the incumbent stays: the laptop cut off claims nothing"
        );
        sim.shutdown().await;
    });
}

/// The client dies mid-build: every slot its jobs held is freed within 3 s.
#[test]
fn client_dies_slots_freed() {
    seeds::run("client_dies_slots_freed", SEEDS, |seed| async move {
        let compile = FakeCompile {
            min: Duration::from_secs(5),
            max: Duration::from_secs(10),
            ..FakeCompile::default()
        };
        let mut sim = sim(seed, compile);
        let mut epochs = Epochs::default();
        let (client, ws) = mesh(&mut sim, 2).await;
        let _build = sim.build(client, 8, 4);
        until(&sim, &mut epochs, "four jobs running", |s| {
            ws.iter().map(|&w| s.busy_slots(w)).sum::<u32>() >= 4
        })
        .await;
        sim.kill(client);
        leases_end(&sim, &mut epochs).await;
        sim.ledger()
            .unwrap_or_else(|| unreachable!())
            .check_capacity(|i| sim.node(i).slots);
        sim.shutdown().await;
    });
}

/// Churn: while a build runs, every few seconds a worker is killed, a dead one restarts, or a
/// new worker takes a dead one's address, and some compiles crash; one worker always lives.
/// Every invariant holds, with no local fallback.
#[test]
fn churn() {
    seeds::run("churn", CHURN_SEEDS, |seed| async move {
        let compile = FakeCompile {
            min: Duration::from_millis(300),
            max: Duration::from_millis(1500),
            crash_rate: 0.02,
        };
        let mut sim = sim(seed, compile);
        let mut epochs = Epochs::default();
        let (client, mut ws) = mesh(&mut sim, 4).await;
        let build = sim.build(client, 60, 8);
        let mut next = Instant::now();
        while !build.finished() {
            epochs.observe(&sim);
            if Instant::now() >= next {
                churn_step(&mut sim, &mut ws);
                next = Instant::now()
                    + Duration::from_secs(2)
                    + sim.net().with_rng(|r| r.up_to(Duration::from_secs(2)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        finish(&sim, &build, &mut epochs).await;
        sim.shutdown().await;
    });
}

/// One random change among the workers `ws` (indices of every worker slot, live or dead).
fn churn_step(sim: &mut Sim, ws: &mut [usize]) {
    let live: Vec<usize> = ws
        .iter()
        .copied()
        .filter(|&w| sim.node(w).mesh.is_some())
        .collect();
    let dead: Vec<usize> = ws
        .iter()
        .copied()
        .filter(|&w| sim.node(w).mesh.is_none())
        .collect();
    let pick = |sim: &Sim, from: &[usize]| {
        from[sim.net().with_rng(|r| r.next_u64()) as usize % from.len()]
    };
    let kill = dead.is_empty() || (live.len() > 1 && sim.net().with_rng(|r| r.chance(0.5)));
    if kill {
        sim.kill(pick(sim, &live));
    } else if sim.net().with_rng(|r| r.chance(0.5)) {
        sim.restart(pick(sim, &dead));
    } else {
        let old = pick(sim, &dead);
        let ip = sim.addr(old).ip();
        let new = sim.add_node_with(ip, NodeClass::Server, SLOTS);
        if let Some(slot) = ws.iter_mut().find(|w| **w == old) {
            *slot = new;
        }
    }
}
