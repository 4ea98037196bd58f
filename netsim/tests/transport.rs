//! The transport scenarios of issue 3 (identity and QUIC) under netsim: the real `Mesh` on the
//! simulated network, virtual time, one seed per run (`MESHCC_SIM_SEED` replays one).

use std::net::IpAddr;
use std::time::Duration;

use meshcc::mesh::proto;
use meshcc::mesh::transport::MeshError;
use meshcc_netsim::seeds;
use meshcc_netsim::{Fate, Link, Sim};

/// Seeds each transport scenario runs in CI (seeds 1..=N); `MESHCC_SIM_SEEDS` runs more.
const SEEDS: u64 = 50;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    proto::pattern(seed, 0, &mut v);
    v
}

/// A dies, C comes up at A's address and port: a dial expecting A fails with an identity
/// mismatch naming both ids, a dial expecting C succeeds, and B's table only holds C.
#[test]
fn address_reuse_is_an_identity_mismatch() {
    seeds::run(
        "address_reuse_is_an_identity_mismatch",
        SEEDS,
        |seed| async move {
            let mut sim = Sim::new(seed);
            let (a, b) = (sim.add_node(), sim.add_node());
            let (a_id, x) = (sim.id(a), sim.addr(a));
            let conn_a = sim.mesh(b).connect(a_id, x).await.unwrap();
            let data = pattern(seed, 4096);
            let digest = sim.mesh(b).upload(&conn_a, &data).await.unwrap();
            assert_eq!(&digest, blake3::hash(&data).as_bytes());

            sim.kill(a);
            let mb = sim.mesh(b).clone();
            sim.eventually(
                "B drops its connection to the dead A",
                Duration::from_secs(30),
                || mb.connection(&a_id).is_none(),
            )
            .await;

            let c = sim.add_node_at(x.ip());
            assert_eq!(sim.addr(c), x);
            let err = mb.connect(a_id, x).await.unwrap_err();
            match &err {
                MeshError::IdentityMismatch(m) => {
                    assert_eq!(m.expected, a_id);
                    assert_eq!(m.actual, sim.id(c));
                }
                other => panic!("expected an identity mismatch, got {other}"),
            }
            let text = err.to_string();
            assert!(text.contains(&a_id.to_string()) && text.contains(&sim.id(c).to_string()));
            assert!(mb.connection(&a_id).is_none());

            let conn_c = mb.connect(sim.id(c), x).await.unwrap();
            assert_ne!(conn_c.stable_id(), conn_a.stable_id());
            assert_eq!(
                mb.upload(&conn_c, &data).await.unwrap(),
                *blake3::hash(&data).as_bytes()
            );
            let ids: Vec<_> = mb.status().members.iter().map(|m| m.node_id).collect();
            assert_eq!(ids, vec![sim.id(c)]);
            sim.shutdown().await;
        },
    );
}

/// The client moves to a new address in the middle of an upload: the upload completes on the
/// same connection with the right digest, and the server sees the new address.
#[test]
fn client_migration_mid_transfer() {
    seeds::run("client_migration_mid_transfer", SEEDS, |seed| async move {
        let mut sim = Sim::new(seed);
        let (server, client) = (sim.add_node(), sim.add_node());
        sim.net()
            .set_default_link(Link::with_latency(Duration::from_millis(5)));
        let conn = sim
            .mesh(client)
            .connect(sim.id(server), sim.addr(server))
            .await
            .unwrap();
        let data = pattern(seed, 8 << 20);
        let upload = {
            let (m, conn, data) = (sim.mesh(client).clone(), conn.clone(), data.clone());
            tokio::spawn(async move { m.upload(&conn, &data).await })
        };
        // Move once some of the data is on its way.
        let before = conn.stats().udp_tx.bytes;
        sim.eventually("the upload is under way", Duration::from_secs(10), || {
            conn.stats().udp_tx.bytes > before + (1 << 20)
        })
        .await;
        let new_ip: IpAddr = "10.9.9.9".parse().unwrap();
        sim.move_to(client, new_ip);
        let digest = upload.await.unwrap().unwrap();
        assert_eq!(&digest, blake3::hash(&data).as_bytes());
        assert_eq!(
            sim.mesh(client)
                .connection(&sim.id(server))
                .unwrap()
                .stable_id(),
            conn.stable_id(),
            "the transfer stayed on one connection"
        );
        let at_server = sim.mesh(server).connection(&sim.id(client)).unwrap();
        assert_eq!(at_server.remote_address().ip(), new_ip);
        sim.shutdown().await;
    });
}

/// 5% loss both ways (with jitter): bulk uploads and downloads arrive intact.
#[test]
fn bulk_transfer_under_five_percent_loss() {
    seeds::run(
        "bulk_transfer_under_five_percent_loss",
        SEEDS,
        |seed| async move {
            let mut sim = Sim::new(seed);
            sim.net().set_default_link(Link {
                latency: Duration::from_millis(2),
                jitter: Duration::from_millis(1),
                ..Link::default().lossy(0.05)
            });
            let (a, b) = (sim.add_node(), sim.add_node());
            let conn = sim.mesh(b).connect(sim.id(a), sim.addr(a)).await.unwrap();
            let data = pattern(seed, 2 << 20);
            let up = sim.mesh(b).upload(&conn, &data).await.unwrap();
            assert_eq!(&up, blake3::hash(&data).as_bytes());
            let down = sim.mesh(b).download(&conn, 2 << 20, seed).await.unwrap();
            assert_eq!(&down, blake3::hash(&data).as_bytes());
            let trace = sim.net().trace();
            let lost = trace.count(|f| *f == Fate::Lost);
            let sent = trace.count(|f| matches!(f, Fate::InFlight(_))) + lost;
            assert!(lost > 0 && lost * 100 < sent * 10, "lost {lost} of {sent}");
            sim.shutdown().await;
        },
    );
}

/// Four nodes fully connected, split 2/2: connections across the cut die, those inside live;
/// after healing, dials across succeed again.
#[test]
fn partition_and_heal() {
    seeds::run("partition_and_heal", SEEDS, |seed| async move {
        let mut sim = Sim::new(seed);
        let n: Vec<usize> = (0..4).map(|_| sim.add_node()).collect();
        for &i in &n {
            for &j in &n {
                if i < j {
                    sim.mesh(i).connect(sim.id(j), sim.addr(j)).await.unwrap();
                }
            }
        }
        let hosts: Vec<_> = n.iter().map(|&i| sim.node(i).host).collect();
        sim.net().partition(&[&hosts[..2], &hosts[2..]]);
        let side = |i: usize| usize::from(i >= 2);
        sim.eventually(
            "connections across the cut close",
            Duration::from_secs(30),
            || {
                n.iter().all(|&i| {
                    n.iter().filter(|&&j| j != i).all(|&j| {
                        sim.mesh(i).connection(&sim.id(j)).is_some() == (side(i) == side(j))
                    })
                })
            },
        )
        .await;
        sim.net().heal();
        for (i, j) in [(0, 2), (3, 1)] {
            let conn = sim.mesh(i).connect(sim.id(j), sim.addr(j)).await.unwrap();
            let data = pattern(seed + i as u64, 10_000);
            let d = sim.mesh(i).upload(&conn, &data).await.unwrap();
            assert_eq!(&d, blake3::hash(&data).as_bytes());
        }
        sim.shutdown().await;
    });
}

/// A laptop sleeps: a short nap keeps its connection; a long sleep loses it on both sides, and
/// after waking it dials again and is served.
#[test]
fn laptop_sleeps_and_wakes() {
    seeds::run("laptop_sleeps_and_wakes", SEEDS, |seed| async move {
        let mut sim = Sim::new(seed);
        let (desk, laptop) = (sim.add_node(), sim.add_node());
        let (desk_id, laptop_id) = (sim.id(desk), sim.id(laptop));
        let conn = sim
            .mesh(laptop)
            .connect(desk_id, sim.addr(desk))
            .await
            .unwrap();
        let data = pattern(seed, 50_000);
        let digest = *blake3::hash(&data).as_bytes();
        let host = sim.node(laptop).host;
        let md = sim.mesh(desk).clone();
        sim.eventually("the desk lists the laptop", Duration::from_secs(10), || {
            md.connection(&laptop_id).is_some()
        })
        .await;
        let desk_side = md.connection(&laptop_id).map(|c| c.stable_id());

        // A nap shorter than the idle timeout: the same connection carries on.
        sim.net().freeze(host).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        sim.net().wake(host).unwrap();
        assert_eq!(sim.mesh(laptop).upload(&conn, &data).await.unwrap(), digest);
        assert_eq!(md.connection(&laptop_id).map(|c| c.stable_id()), desk_side);
        assert_eq!(
            conn_id(&sim, laptop, desk_id),
            Some(conn.stable_id()),
            "the laptop kept its connection through the nap"
        );

        // A night: the desk drops the laptop; on waking, the laptop's overdue timers close its
        // side, and a new dial works.
        sim.net().freeze(host).unwrap();
        sim.eventually(
            "the desk drops the sleeping laptop",
            Duration::from_secs(60),
            || md.connection(&laptop_id).is_none(),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        sim.net().wake(host).unwrap();
        let ml = sim.mesh(laptop).clone();
        sim.eventually(
            "the laptop notices on waking",
            Duration::from_secs(10),
            || ml.connection(&desk_id).is_none(),
        )
        .await;
        let again = ml.connect(desk_id, sim.addr(desk)).await.unwrap();
        assert_ne!(again.stable_id(), conn.stable_id());
        assert_eq!(ml.upload(&again, &data).await.unwrap(), digest);
        sim.eventually(
            "the desk has the laptop back",
            Duration::from_secs(10),
            || md.connection(&laptop_id).is_some(),
        )
        .await;
        sim.shutdown().await;
    });
}

fn conn_id(sim: &Sim, node: usize, peer: meshcc::mesh::identity::NodeId) -> Option<usize> {
    sim.mesh(node).connection(&peer).map(|c| c.stable_id())
}

/// A node killed and restarted with its key at its address is reached again by its id.
#[test]
fn restart_with_the_same_key() {
    seeds::run("restart_with_the_same_key", SEEDS, |seed| async move {
        let mut sim = Sim::new(seed);
        let (a, b) = (sim.add_node(), sim.add_node());
        let (a_id, x) = (sim.id(a), sim.addr(a));
        let first = sim.mesh(b).connect(a_id, x).await.unwrap();
        sim.kill(a);
        sim.restart(a);
        assert_eq!((sim.id(a), sim.addr(a)), (a_id, x));
        let mb = sim.mesh(b).clone();
        sim.eventually(
            "B drops the connection to the old A",
            Duration::from_secs(30),
            || mb.connection(&a_id).is_none(),
        )
        .await;
        let conn = mb.connect(a_id, x).await.unwrap();
        assert_ne!(conn.stable_id(), first.stable_id());
        let data = pattern(seed, 20_000);
        assert_eq!(
            mb.upload(&conn, &data).await.unwrap(),
            *blake3::hash(&data).as_bytes()
        );
        sim.shutdown().await;
    });
}
