//! Transport tests on real UDP sockets, loopback only (127.0.0.1).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::cluster::ClusterSecret;
use super::identity::{NodeId, NodeKey};
use super::proto::{self, Hello, Limit, PROTOCOL_VERSION};
use super::transport::{close_code, Mesh, MeshError, TransportConfig};

fn cfg() -> TransportConfig {
    TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        handshake_timeout: Duration::from_millis(1500),
        idle_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(20),
        duplicate_drain: Duration::from_millis(200),
        ..TransportConfig::default()
    }
}

fn node(secret: &ClusterSecret, config: TransportConfig) -> Arc<Mesh> {
    let key = Arc::new(NodeKey::generate().unwrap());
    Mesh::bind(config, key, secret.clone()).unwrap()
}

fn addr(m: &Mesh) -> SocketAddr {
    m.local_addr().unwrap()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

/// The peer closed `conn` with an application code.
async fn closed_with(conn: &quinn::Connection) -> Option<u32> {
    match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
            u32::try_from(c.error_code.into_inner()).ok()
        }
        _ => None,
    }
}

#[tokio::test]
async fn ping_status_and_membership() {
    let k = ClusterSecret::generate().unwrap();
    let a = node(&k, cfg());
    let b = node(&k, cfg());
    let conn = b.connect(a.id(), addr(&a)).await.unwrap();
    assert!(b.ping(&conn).await.is_ok());
    eventually("A lists B", || {
        a.status().members.iter().any(|m| m.node_id == b.id())
    })
    .await;
    let s = b.status();
    assert_eq!(s.members.len(), 1);
    assert_eq!(s.members[0].node_id, a.id());
    assert_eq!(s.members[0].state, "connected");
    assert_eq!(s.members[0].addrs, vec![addr(&a).to_string()]);
    // A can use the same connection the other way.
    let back = a.connection(&b.id()).unwrap();
    assert!(a.ping(&back).await.is_ok());
    // Remote status over the mesh.
    match a.request(&back, &proto::Request::Status).await.unwrap() {
        proto::Reply::Status(s) => assert_eq!(s.node_id, b.id()),
        other => panic!("{other:?}"),
    }
    a.close().await;
    b.close().await;
}

/// Node A stops, node C starts at the same address and port: a dial expecting A fails with an
/// identity mismatch naming both ids; a dial expecting C succeeds; nothing of A is reused.
#[tokio::test]
async fn address_reuse_is_an_identity_mismatch() {
    let k = ClusterSecret::generate().unwrap();
    let a = node(&k, cfg());
    let b = node(&k, cfg());
    let x = addr(&a);
    let a_id = a.id();
    let conn_a = b.connect(a_id, x).await.unwrap();
    b.ping(&conn_a).await.unwrap();
    a.close().await;
    drop(a);
    eventually("B notices A is gone", || b.connection(&a_id).is_none()).await;

    // C at the same address and port (the old socket may take a moment to be released).
    let mut c = None;
    for _ in 0..100 {
        let key = Arc::new(NodeKey::generate().unwrap());
        match Mesh::bind(TransportConfig { listen: x, ..cfg() }, key, k.clone()) {
            Ok(m) => {
                c = Some(m);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let c = c.expect("C could not bind A's old address");
    assert_eq!(addr(&c), x);

    let err = b.connect(a_id, x).await.unwrap_err();
    match &err {
        MeshError::IdentityMismatch(m) => {
            assert_eq!(m.expected, a_id);
            assert_eq!(m.actual, c.id());
        }
        other => panic!("expected an identity mismatch, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&a_id.to_string()) && text.contains(&c.id().to_string()),
        "{text}"
    );
    assert!(b.connection(&a_id).is_none());

    let conn_c = b.connect(c.id(), x).await.unwrap();
    assert_ne!(conn_c.stable_id(), conn_a.stable_id());
    b.ping(&conn_c).await.unwrap();
    let ids: Vec<NodeId> = b.status().members.iter().map(|m| m.node_id).collect();
    assert_eq!(ids, vec![c.id()]);
    c.close().await;
    b.close().await;
}

#[tokio::test]
async fn wrong_secret_and_unlisted_keys_are_refused_while_good_peers_are_served() {
    let k = ClusterSecret::generate().unwrap();
    let good = node(&k, cfg());
    let denied_key = Arc::new(NodeKey::generate().unwrap());
    let a = node(
        &k,
        TransportConfig {
            deny: HashSet::from([denied_key.id()]),
            ..cfg()
        },
    );
    let good_conn = good.connect(a.id(), addr(&a)).await.unwrap();

    // Wrong secret: the acceptor refuses, and the dialer hears why.
    let wrong = node(&ClusterSecret::generate().unwrap(), cfg());
    let e = wrong.connect(a.id(), addr(&a)).await.unwrap_err();
    assert!(e.to_string().contains("cluster"), "{e}");
    assert!(wrong.connection(&a.id()).is_none());

    // Denied key with the right secret.
    let denied = Mesh::bind(cfg(), denied_key, k.clone()).unwrap();
    let e = denied.connect(a.id(), addr(&a)).await.unwrap_err();
    assert!(e.to_string().contains("not allowed"), "{e}");

    // An allow list that does not name the dialer.
    let picky = node(
        &k,
        TransportConfig {
            allow: Some(HashSet::from([good.id()])),
            ..cfg()
        },
    );
    let e = a.connect(picky.id(), addr(&picky)).await.unwrap_err();
    assert!(e.to_string().contains("not allowed"), "{e}");
    assert!(good.connect(picky.id(), addr(&picky)).await.is_ok());

    // No secret at all: TLS completes, the Hello carries no valid proof.
    let raw = a.tls_dial(good.id(), addr(&good)).await.unwrap();
    let (mut send, mut recv) = raw.open_bi().await.unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        node_id: a.id(),
        listen_port: None,
        ephemeral: false,
        auth_tag: [0; 32],
    };
    proto::write_frame(&mut send, &hello, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        proto::read_frame::<Hello>(&mut recv, Limit::Hello, Duration::from_secs(5))
            .await
            .is_err()
    );
    assert_eq!(closed_with(&raw).await, Some(close_code::AUTH));

    // None of them made it into A's table; the good peer is still served.
    let members: Vec<NodeId> = a.status().members.iter().map(|m| m.node_id).collect();
    assert_eq!(members, vec![good.id()]);
    good.ping(&good_conn).await.unwrap();
    for m in [a, good, wrong, denied, picky] {
        m.close().await;
    }
}

#[tokio::test]
async fn garbage_and_stalled_control_streams_are_cut_off() {
    let k = ClusterSecret::generate().unwrap();
    let a = node(&k, cfg());
    let b = node(&k, cfg());

    let garbage = b.tls_dial(a.id(), addr(&a)).await.unwrap();
    let (mut send, _recv) = garbage.open_bi().await.unwrap();
    send.write_all(&[0xff; 64]).await.unwrap();
    assert_eq!(closed_with(&garbage).await, Some(close_code::PROTOCOL));

    // A length prefix promising more than arrives: the frame never completes.
    let partial = b.tls_dial(a.id(), addr(&a)).await.unwrap();
    let (mut send, _recv) = partial.open_bi().await.unwrap();
    send.write_all(&[100, 0, 0, 0, 1]).await.unwrap();
    assert!(matches!(
        closed_with(&partial).await,
        Some(close_code::TIMEOUT) | Some(close_code::PROTOCOL)
    ));

    // Connects and says nothing at all.
    let silent = b.tls_dial(a.id(), addr(&a)).await.unwrap();
    assert_eq!(closed_with(&silent).await, Some(close_code::TIMEOUT));

    assert!(a.status().members.is_empty());
    let ok = b.connect(a.id(), addr(&a)).await.unwrap();
    b.ping(&ok).await.unwrap();
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_100_mib_in_10_mib_payloads_and_500_requests_in_flight() {
    let k = ClusterSecret::generate().unwrap();
    let a = node(&k, cfg());
    let b = node(&k, cfg());
    let conn = b.connect(a.id(), addr(&a)).await.unwrap();
    let mut payload = vec![0u8; 10 << 20];
    for i in 0..10u64 {
        proto::pattern(i, 0, &mut payload);
        let digest = b.upload(&conn, &payload).await.unwrap();
        assert_eq!(&digest, blake3::hash(&payload).as_bytes(), "payload {i}");
    }
    let got = b.download(&conn, 10 << 20, 77).await.unwrap();
    proto::pattern(77, 0, &mut payload);
    assert_eq!(&got, blake3::hash(&payload).as_bytes());

    let mut set = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let (b, conn) = (b.clone(), conn.clone());
        set.spawn(async move { b.ping(&conn).await });
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
        n += 1;
    }
    assert_eq!(n, 500);
    // Still one connection.
    assert_eq!(b.connection(&a.id()).unwrap().stable_id(), conn.stable_id());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn simultaneous_dials_settle_on_one_connection() {
    let k = ClusterSecret::generate().unwrap();
    let a = node(&k, cfg());
    let b = node(&k, cfg());
    let (ra, rb) = tokio::join!(a.connect(b.id(), addr(&b)), b.connect(a.id(), addr(&a)));
    ra.unwrap();
    rb.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ca = a.connection(&b.id()).unwrap();
    let cb = b.connection(&a.id()).unwrap();
    a.ping(&ca).await.unwrap();
    b.ping(&cb).await.unwrap();
    assert_eq!(a.status().members.len(), 1);
    assert_eq!(b.status().members.len(), 1);
    // Both kept the same connection: its traffic shows up on the other end's kept one.
    let before = cb.stats().frame_rx.stream;
    a.ping(&ca).await.unwrap();
    assert!(cb.stats().frame_rx.stream > before);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn no_secret_no_port() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap().to_string();
    let get = |k: &str| match k {
        "MESHCC_HOME" => Some(home.clone()),
        "MESHCC_LISTEN" => Some("127.0.0.1:0".to_string()),
        "MESHCC_DISCOVERY" => Some("off".to_string()),
        _ => None,
    };
    let config = crate::config::Config::load_from(&get, nix::unistd::getuid().as_raw()).unwrap();
    let views = super::view::ViewHandles::new();
    assert!(super::start(&config, &views).await.unwrap().is_none());
    ClusterSecret::generate()
        .unwrap()
        .store(
            &config.paths.data_dir.join(super::cluster::SECRET_FILE),
            false,
        )
        .unwrap();
    let started = super::start(&config, &views)
        .await
        .unwrap()
        .expect("a mesh with a secret");
    assert!(started.mesh.local_addr().unwrap().ip().is_loopback());
    started.close().await;
    // Each start bumps the persisted start counter.
    let boot = std::fs::read_to_string(config.paths.data_dir.join(super::BOOT_FILE)).unwrap();
    assert_eq!(boot.trim(), "1");
}

#[test]
fn settings_from_env_and_file() {
    use super::{FileMesh, MeshSettings};
    let s = MeshSettings::resolve(&|_| None, FileMesh::default()).unwrap();
    assert_eq!(s.listen.port(), super::transport::DEFAULT_PORT);
    let e = MeshSettings::resolve(
        &|k| (k == "MESHCC_LISTEN").then(|| "nonsense".to_string()),
        FileMesh::default(),
    )
    .unwrap_err();
    assert!(e.contains("MESHCC_LISTEN"), "{e}");
    let id = NodeId([1; 32]);
    let file: FileMesh = toml::from_str(&format!(
        "listen = \"127.0.0.1:9\"\nallow = [\"{id}\"]\ndeny = []\n"
    ))
    .unwrap();
    let s = MeshSettings::resolve(&|_| None, file).unwrap();
    assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 9)));
    assert_eq!(s.allow, Some(HashSet::from([id])));
    assert!(s.discovery && s.discovery_interfaces.is_none());
    let env = |k: &str| match k {
        "MESHCC_DISCOVERY" => Some("off".to_string()),
        "MESHCC_DISCOVERY_INTERFACES" => Some("eth0, wlan0,".to_string()),
        _ => None,
    };
    let s = MeshSettings::resolve(&env, FileMesh::default()).unwrap();
    assert!(!s.discovery);
    assert_eq!(
        s.discovery_interfaces,
        Some(vec!["eth0".to_string(), "wlan0".to_string()])
    );
    let e = MeshSettings::resolve(
        &|k| (k == "MESHCC_DISCOVERY").then(|| "maybe".to_string()),
        FileMesh::default(),
    )
    .unwrap_err();
    assert!(e.contains("MESHCC_DISCOVERY"), "{e}");
    let file: FileMesh = toml::from_str("deny = [\"bad\"]").unwrap();
    assert!(MeshSettings::resolve(&|_| None, file)
        .unwrap_err()
        .contains("mesh.deny"));
}

/// Membership over real QUIC datagrams: three nodes joined through one seed see each other,
/// agree on a coordinator, learn an advert change, and see a graceful leave.
#[tokio::test]
async fn membership_over_quic_datagrams() {
    use super::membership::{core::Settings, Membership, Start, Suggestion};
    use super::view::{Advert, ViewHandles};
    let k = ClusterSecret::generate().unwrap();
    let nodes: Vec<_> = (0..3)
        .map(|i| {
            let mesh = node(&k, cfg());
            let views = ViewHandles::new();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let m = Membership::start(
                mesh.clone(),
                views.clone(),
                Settings {
                    seed: i,
                    ..Settings::default()
                },
                Start {
                    boot: 1,
                    joined: 100 + i,
                },
                rx,
            );
            (mesh, views, m, tx)
        })
        .collect();
    let seed = Suggestion {
        id: nodes[0].0.id(),
        addr: addr(&nodes[0].0),
    };
    for (_, _, _, tx) in &nodes[1..] {
        tx.send(seed).await.unwrap();
    }
    let all_see = |n: usize| {
        nodes.iter().all(|(_, v, _, _)| {
            let s = v.view.borrow();
            s.members
                .iter()
                .filter(|m| m.state == super::election::MemberState::Alive)
                .count()
                == n
        })
    };
    eventually("all three see two live members", || all_see(2)).await;
    let coordinator = || {
        nodes
            .iter()
            .map(|(_, v, _, _)| v.view.borrow().coordinator)
            .collect::<Vec<_>>()
    };
    for _ in 0..4 {
        if coordinator().iter().all(|c| c.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eventually("one coordinator", || {
        let c = coordinator();
        c[0].is_some() && c.iter().all(|x| *x == c[0])
    })
    .await;
    assert_eq!(coordinator()[0].unwrap().id, nodes[0].0.id(), "the oldest");
    // Every member is listed at the address it is bound to (its own idea of its address).
    let v = nodes[1].1.view.borrow().clone();
    assert_eq!(
        v.member(&nodes[0].0.id()).unwrap().addrs,
        vec![addr(&nodes[0].0)]
    );

    let advert = Advert {
        slots_total: 8,
        slots_busy: 2,
        ..Advert::default()
    };
    nodes[2].1.advert.send_replace(advert.clone());
    eventually("the advert reaches everyone", || {
        nodes[..2].iter().all(|(_, v, _, _)| {
            v.view
                .borrow()
                .member(&nodes[2].0.id())
                .and_then(|m| m.advert.clone())
                == Some(advert.clone())
        })
    })
    .await;

    let before = coordinator()[0].unwrap();
    nodes[0].2.leave().await;
    nodes[0].0.close().await;
    eventually("the others follow the successor", || {
        nodes[1..].iter().all(|(_, v, _, _)| {
            v.view
                .borrow()
                .coordinator
                .is_some_and(|c| c.id != before.id && c.epoch == before.epoch + 1)
        })
    })
    .await;
    for (mesh, _, m, _) in &nodes[1..] {
        m.leave().await;
        mesh.close().await;
    }
}

#[test]
fn held_connection_rule() {
    use super::transport::{held_rule, Held};
    let a: SocketAddr = "10.0.0.1:7471".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:7471".parse().unwrap();
    assert_eq!(held_rule(a, a), Held::Use);
    assert_eq!(
        held_rule(mapped, a),
        Held::Use,
        "mapped IPv4 is the same address"
    );
    assert_eq!(held_rule(a, mapped), Held::Use);
    assert_eq!(held_rule(a, "10.0.0.2:7471".parse().unwrap()), Held::Verify);
    assert_eq!(held_rule(a, "10.0.0.1:7472".parse().unwrap()), Held::Verify);
    assert_eq!(
        held_rule(a, "[fe80::1]:7471".parse().unwrap()),
        Held::Verify
    );
}

/// A UDP relay on loopback: forwards what the first sender sends to `to`, and the answers
/// back; aborting it kills the path, as when the node behind it moves away.
fn relay(to: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
    let at = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut client = None;
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let dest = if from == to {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                client = Some(from);
                to
            };
            let _ = sock.send_to(&buf[..n], dest).await;
        }
    });
    (at, task)
}

/// The acceptor moved: the held connection goes to its old address and the path is dead
/// (idle timeout not reached yet); dialing the new address replaces it instead of returning it.
#[tokio::test]
async fn a_dead_connection_at_the_old_address_is_replaced_by_a_new_dial() {
    let k = ClusterSecret::generate().unwrap();
    let config = TransportConfig {
        idle_timeout: Duration::from_secs(30),
        verify_timeout: Duration::from_millis(300),
        ..cfg()
    };
    let a = node(&k, config.clone());
    let b = node(&k, config);
    let (old, path) = relay(addr(&b));
    let held = a.connect(b.id(), old).await.unwrap();
    a.ping(&held).await.unwrap();
    path.abort();
    let _ = path.await;
    let conn = a.connect(b.id(), addr(&b)).await.unwrap();
    assert_ne!(
        conn.stable_id(),
        held.stable_id(),
        "the stale one came back"
    );
    assert_eq!(conn.remote_address(), addr(&b));
    a.ping(&conn).await.unwrap();
    assert!(
        held.close_reason().is_some(),
        "the stale connection is closed"
    );
    let same = a.connect(b.id(), addr(&b)).await.unwrap();
    assert_eq!(same.stable_id(), conn.stable_id(), "the new one is kept");
}

/// A held connection that still answers is kept even when dialed at another of the peer's
/// addresses (a multi-homed peer): no needless second connection.
#[tokio::test]
async fn a_live_connection_at_another_address_is_kept() {
    let k = ClusterSecret::generate().unwrap();
    let a = node(&k, cfg());
    let b = node(
        &k,
        TransportConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            ..cfg()
        },
    );
    let port = addr(&b).port();
    let held = a
        .connect(b.id(), SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let again = a
        .connect(b.id(), SocketAddr::from(([127, 0, 0, 2], port)))
        .await
        .unwrap();
    assert_eq!(again.stable_id(), held.stable_id());
    assert!(held.close_reason().is_none());
}
