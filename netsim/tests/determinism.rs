//! The same seed gives the same packet trace; another seed gives another.

use std::time::Duration;

use meshcc::mesh::proto;
use meshcc_netsim::{seeds, Link, Sim, Trace};

/// A run exercising every random part of the network: jitter, loss, duplication, reordering,
/// three nodes dialing each other, pings (random nonces) and bulk data both ways.
async fn noisy_run(seed: u64) -> Trace {
    let mut sim = Sim::new(seed);
    sim.net().set_default_link(Link {
        latency: Duration::from_millis(1),
        jitter: Duration::from_millis(3),
        loss: 0.03,
        duplicate: 0.02,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(8),
    });
    let n: Vec<usize> = (0..3).map(|_| sim.add_node()).collect();
    let mut data = vec![0u8; 300_000];
    proto::pattern(seed, 0, &mut data);
    for &i in &n {
        let j = (i + 1) % n.len();
        let conn = sim.mesh(i).connect(sim.id(j), sim.addr(j)).await.unwrap();
        for _ in 0..3 {
            sim.mesh(i).ping(&conn).await.unwrap();
        }
        let up = sim.mesh(i).upload(&conn, &data).await.unwrap();
        assert_eq!(&up, blake3::hash(&data).as_bytes());
        let down = sim.mesh(i).download(&conn, 100_000, seed).await.unwrap();
        assert_eq!(down.len(), 32);
    }
    sim.shutdown().await;
    sim.net().trace()
}

#[test]
fn same_seed_same_trace() {
    for seed in seeds::seeds(3) {
        let first = seeds::run_one("same_seed_same_trace", seed, noisy_run);
        let again = seeds::run_one("same_seed_same_trace", seed, noisy_run);
        assert!(first.0.len() > 1000, "a real run: {} events", first.0.len());
        if let Some(i) = first.first_difference(&again) {
            panic!(
                "seed {seed}: traces differ at event {i} of {}/{}\nfirst run:\n{}second run:\n{}",
                first.0.len(),
                again.0.len(),
                first.around(i, 3),
                again.around(i, 3)
            );
        }
        let other = seeds::run_one("same_seed_same_trace", seed + 1000, noisy_run);
        assert_ne!(first, other, "seed {seed} and {} ran alike", seed + 1000);
    }
}
