//! Issue 3's transport acceptance across real hosts (network namespaces, `tests/common/netns.rs`):
//! an address taken over by another node, a dialer renumbered in the middle of a transfer, and
//! an acceptor renumbered under a dialer that still holds a connection to its old address.
//!
//! The dialers of the last two are probes: this test binary run again inside a lab host, using
//! the meshcc library (`Mesh`) so the test can see its connection's identity.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::netns::{cluster, probe, Lab, ProbeRun, MESH_PORT};
use common::*;
use meshcc::mesh::identity::NodeId;
use meshcc::mesh::proto::{self, Limit, Reply, Request};
use meshcc::mesh::transport::{Mesh, TransportConfig};

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The autoscaling story: A serves at X:7471 and stops; C starts at the same X:7471. From
/// another host, a ping expecting A fails naming both ids; a ping expecting C succeeds.
#[test]
fn an_address_taken_over_by_another_node_is_an_identity_mismatch() {
    let Some(lab) = Lab::new(2) else { return };
    let (a, b, c) = (Home::new(), Home::new(), Home::new());
    let ids = cluster(&[&a, &b, &c]);
    let (id_a, id_c) = (&ids[0], &ids[2]);
    let x = format!("{}:{MESH_PORT}", lab.host(1).addr());
    let ping = |id: &str| {
        output(
            lab.host(2)
                .enter(&mut b.meshcc(["ping", &format!("{id}@{x}")])),
        )
    };

    let daemon_a = lab.start_daemon(1, &a);
    let out = ping(id_a);
    assert!(
        out.status.success() && text(&out).contains("pong"),
        "A does not answer at {x}:\n{}\n--- A's log ---\n{}",
        text(&out),
        daemon_a.log()
    );
    a.stop();
    drop(daemon_a);

    let daemon_c = lab.start_daemon(1, &c);
    let out = ping(id_a);
    assert!(!out.status.success(), "a ping expecting A at {x} succeeded");
    assert!(
        text(&out).contains(id_a.as_str()) && text(&out).contains(id_c.as_str()),
        "the refusal does not name both A and C:\n{}",
        text(&out)
    );
    let out = ping(id_c);
    assert!(
        out.status.success() && text(&out).contains("pong"),
        "C does not answer at {x}:\n{}\n--- C's log ---\n{}",
        text(&out),
        daemon_c.log()
    );
}

/// Variables the probes read.
const PEER_ID: &str = "MESHCC_TEST_PEER_ID";
const PEER_ADDR: &str = "MESHCC_TEST_PEER_ADDR";
const NEW_ADDR: &str = "MESHCC_TEST_NEW_ADDR";

/// Bytes uploaded across the renumbering.
const UPLOAD: usize = 128 << 20;

/// The members of a daemon's `meshcc status --json`.
fn members(h: &Home) -> Vec<serde_json::Value> {
    let out = run(&mut h.meshcc(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["members"].as_array().cloned().unwrap_or_default()
}

/// The dialer's address moves in the middle of an upload: the upload completes on the same
/// connection (QUIC migration), the digest matches, and the acceptor sees the new address.
#[test]
fn the_dialer_moves_mid_transfer_and_keeps_its_connection() {
    let Some(lab) = Lab::new(2) else { return };
    let (a, b) = (Home::new(), Home::new());
    let ids = cluster(&[&b, &a]);
    let daemon_b = lab.start_daemon(2, &b);
    let new_addr = lab.net_addr(101);

    let mut cmd = probe("upload_probe");
    cmd.env("MESHCC_HOME", &a.home)
        .env(PEER_ID, &ids[0])
        .env(PEER_ADDR, format!("{}:{MESH_PORT}", lab.host(2).addr()));
    let mut p = ProbeRun::spawn(lab.host(1).enter(&mut cmd));
    let before = p.expect("HALF");
    lab.renumber(1, new_addr);
    p.say("go");
    let after = p.expect("DONE");
    assert_eq!(before, after, "the upload changed connections");
    let m = members(&b);
    p.say("bye");
    p.finish();
    let mine: Vec<_> = m
        .iter()
        .filter(|m| m["node_id"] == ids[1].as_str())
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "B should list A once: {m:?}\n{}",
        daemon_b.log()
    );
    assert!(
        mine[0]["addrs"][0]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("{new_addr}:"))),
        "B does not see A at its new address {new_addr}: {m:?}"
    );
}

/// Run by [`the_dialer_moves_mid_transfer_and_keeps_its_connection`] in host 1: uploads
/// [`UPLOAD`] bytes to the peer; half-way prints `PROBE HALF <connection>` and waits for a
/// line on stdin (the test renumbers this host meanwhile), then sends the rest, checks the
/// digest, prints `PROBE DONE <connection>` and stays connected until the next line.
#[test]
#[ignore = "run inside a lab host by the_dialer_moves_mid_transfer_and_keeps_its_connection"]
fn upload_probe() {
    with_probe_mesh(|mesh, peer, addr| async move {
        let conn = mesh.connect(peer, addr).await.expect("dial the peer");
        let id = conn.stable_id();
        let mut data = vec![0u8; UPLOAD];
        proto::pattern(7, 0, &mut data);
        let want = *blake3::hash(&data).as_bytes();
        let t = Duration::from_secs(30);
        let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
        let len = UPLOAD as u64;
        proto::write_frame(&mut send, &Request::Upload { len }, t)
            .await
            .expect("send the request");
        proto::write_bulk(&mut send, &data[..UPLOAD / 2], t)
            .await
            .expect("send the first half");
        println!("PROBE HALF {id}");
        wait_for_test().await;
        proto::write_bulk(&mut send, &data[UPLOAD / 2..], t)
            .await
            .expect("send the second half after the move");
        send.finish().expect("finish the stream");
        match proto::read_frame(&mut recv, Limit::Reply, t).await {
            Ok(Reply::Digest(d)) => assert_eq!(d, want, "the peer got other bytes"),
            other => panic!("expected the digest, got {other:?}"),
        }
        let now = mesh.connection(&peer).expect("still connected");
        assert!(conn.close_reason().is_none(), "the connection closed");
        println!("PROBE DONE {}", now.stable_id());
        // Connected until the test has read the peer's view.
        wait_for_test().await;
    });
}

/// The acceptor's address moves while a dialer holds a connection to the old one (dead now,
/// its idle timeout not reached): dialing the node's id at the new address succeeds at once.
#[test]
fn the_acceptor_moves_and_a_dial_by_id_at_its_new_address_succeeds() {
    let Some(lab) = Lab::new(2) else { return };
    let (a, b) = (Home::new(), Home::new());
    let ids = cluster(&[&b, &a]);
    let daemon_b = lab.start_daemon(2, &b);
    let new_addr = lab.net_addr(102);

    let mut cmd = probe("redial_probe");
    cmd.env("MESHCC_HOME", &a.home)
        .env(PEER_ID, &ids[0])
        .env(PEER_ADDR, format!("{}:{MESH_PORT}", lab.host(2).addr()))
        .env(NEW_ADDR, format!("{new_addr}:{MESH_PORT}"));
    let mut p = ProbeRun::spawn(lab.host(1).enter(&mut cmd));
    p.expect("CONNECTED");
    lab.renumber(2, new_addr);
    p.say("go");
    p.expect("DONE");
    p.finish();
    drop(daemon_b);
}

/// Run by [`the_acceptor_moves_and_a_dial_by_id_at_its_new_address_succeeds`] in host 1.
#[test]
#[ignore = "run inside a lab host by the_acceptor_moves_and_a_dial_by_id_at_its_new_address_succeeds"]
fn redial_probe() {
    with_probe_mesh(|mesh, peer, addr| async move {
        let new: SocketAddr = std::env::var(NEW_ADDR)
            .expect("the new address")
            .parse()
            .expect("NEW_ADDR is IP:PORT");
        let old = mesh.connect(peer, addr).await.expect("dial the peer");
        mesh.ping(&old).await.expect("ping at the old address");
        println!("PROBE CONNECTED {}", old.stable_id());
        wait_for_test().await;
        assert!(
            old.close_reason().is_none(),
            "the old connection closed already; the test proves nothing"
        );
        let conn = mesh
            .connect(peer, new)
            .await
            .expect("dial the peer at its new address");
        assert_ne!(conn.stable_id(), old.stable_id(), "got the dead connection");
        assert_eq!(conn.remote_address(), new);
        mesh.ping(&conn).await.expect("ping at the new address");
        println!("PROBE DONE {}", conn.stable_id());
    });
}

/// Runs a probe: a mesh node from `MESHCC_HOME` on the wildcard address (so it can migrate),
/// and the peer named by the environment.
fn with_probe_mesh<F, Fut>(f: F)
where
    F: FnOnce(Arc<Mesh>, NodeId, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let peer: NodeId = std::env::var(PEER_ID)
        .expect("run by a lab test")
        .parse()
        .expect("PEER_ID is a node id");
    let addr: SocketAddr = std::env::var(PEER_ADDR)
        .expect("the peer's address")
        .parse()
        .expect("PEER_ADDR is IP:PORT");
    let config = meshcc::config::Config::load().expect("the probe's configuration");
    let key = Arc::new(meshcc::mesh::load_node_key(&config).expect("the probe's key"));
    let secret = meshcc::mesh::load_secret(&config)
        .expect("the probe's cluster secret")
        .expect("the probe joined the cluster");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listen = SocketAddr::from(([0, 0, 0, 0], 0));
        let mesh = Mesh::bind(
            TransportConfig {
                listen,
                ..TransportConfig::default()
            },
            key,
            secret,
        )
        .expect("bind the probe's endpoint");
        f(mesh.clone(), peer, addr).await;
        mesh.close().await;
    });
}

/// Waits for the test's line on stdin, without stalling the connections meanwhile.
async fn wait_for_test() {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .expect("read the test's go-ahead");
    })
    .await
    .expect("the stdin reader");
}
