//! The mesh subcommands: `id`, `init`, `join`, `ping`, `status`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::cluster::{self, ClusterSecret, JoinToken, PeerAddr};
use super::proto::StatusInfo;
use super::transport::{Mesh, MeshError};
use super::{load_node_key, load_secret};
use crate::config::Config;
use crate::node::ipc::{Reply, Request};
use crate::wrapper::client;

/// `meshcc id`: prints this node's id.
pub fn id(config: &Config) -> anyhow::Result<ExitCode> {
    println!("{}", load_node_key(config)?.id());
    Ok(ExitCode::SUCCESS)
}

/// `meshcc init`: makes the cluster secret and prints the join token.
pub fn init(config: &Config, advertise: Option<String>, force: bool) -> anyhow::Result<ExitCode> {
    let key = load_node_key(config)?;
    let seed = advertise
        .map(|a| format!("{}@{a}", key.id()).parse::<PeerAddr>())
        .transpose()?;
    let secret = ClusterSecret::generate()?;
    secret.store(&config.paths.data_dir.join(cluster::SECRET_FILE), force)?;
    let token = JoinToken { secret, seed };
    println!("cluster created; this node is {}", key.id());
    println!("on every other machine run:\n\n  meshcc join {token}\n");
    println!("keep the token secret: it admits a node to the cluster.");
    println!("restart this node's daemon to open the mesh port: meshcc stop");
    Ok(ExitCode::SUCCESS)
}

/// `meshcc join TOKEN`: stores the secret (and the seed) from a join token.
pub fn join(config: &Config, token: &str, force: bool) -> anyhow::Result<ExitCode> {
    let token: JoinToken = token.parse()?;
    let key = load_node_key(config)?;
    token
        .secret
        .store(&config.paths.data_dir.join(cluster::SECRET_FILE), force)?;
    if let Some(seed) = &token.seed {
        if seed.node_id != key.id() {
            cluster::add_seed(&config.paths.data_dir.join(cluster::SEEDS_FILE), seed)?;
        }
    }
    println!("joined; this node is {}", key.id());
    println!("restart the daemon to connect: meshcc stop");
    Ok(ExitCode::SUCCESS)
}

/// `meshcc ping NODEID@HOST:PORT`: dials from a short-lived endpoint, pings, prints the RTT.
pub fn ping(config: &Config, peer: &str, count: u32) -> anyhow::Result<ExitCode> {
    let peer: PeerAddr = peer.parse()?;
    let Some(secret) = load_secret(config)? else {
        anyhow::bail!(
            "this node belongs to no cluster: run `meshcc init` or `meshcc join TOKEN` first"
        );
    };
    let key = Arc::new(load_node_key(config)?);
    let addrs = peer
        .resolve()
        .with_context(|| format!("cannot resolve {}", peer.addr))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mesh = Mesh::ephemeral(key, secret)?;
        let mut last = None;
        for addr in addrs {
            match mesh.connect(peer.node_id, addr).await {
                Ok(conn) => {
                    for _ in 0..count.max(1) {
                        let rtt = mesh.ping(&conn).await?;
                        println!(
                            "pong from {} at {addr}: time={:.3} ms",
                            peer.node_id,
                            rtt.as_secs_f64() * 1e3
                        );
                    }
                    conn.close(
                        quinn::VarInt::from_u32(super::transport::close_code::DONE),
                        b"done",
                    );
                    mesh.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e @ MeshError::IdentityMismatch(_)) => {
                    mesh.close().await;
                    return Err(e.into());
                }
                Err(e) => last = Some(e),
            }
        }
        mesh.close().await;
        match last {
            Some(e) => Err(e.into()),
            None => anyhow::bail!("{} resolves to no address", peer.addr),
        }
    })
}

/// `meshcc status [--json]`: the daemon's view of the mesh.
pub fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let (info, note) = match client::request(&config.paths, &Request::MeshStatus, false) {
        Ok(Reply::MeshStatus(Some(s))) => (*s, None),
        Ok(Reply::MeshStatus(None)) => (
            offline(config)?,
            Some("no cluster configured (meshcc init / meshcc join): mesh off"),
        ),
        Ok(other) => anyhow::bail!("unexpected reply from the daemon: {other:?}"),
        Err(client::ClientError::NotRunning) => {
            (offline(config)?, Some("the daemon is not running"))
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("node     {}", info.node_id);
    if let Some(l) = &info.listen {
        println!("listen   {l}");
    }
    if let Some(n) = note {
        println!("({n})");
    }
    match &info.coordinator {
        Some(c) => println!("coordinator  {}  epoch {}", c.node_id, c.epoch),
        None => println!("coordinator  (none yet)"),
    }
    println!("members  {}", info.members.len());
    for m in &info.members {
        let class = m
            .class
            .map_or("-".to_string(), |c| format!("{c:?}").to_lowercase());
        let slots = match (m.slots_busy, m.slots_total) {
            (Some(b), Some(t)) => format!("{b}/{t}"),
            _ => "-".into(),
        };
        println!(
            "  {}  {:<8} {:<8} slots {:<7} {}",
            m.node_id,
            m.state,
            class,
            slots,
            m.addrs.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn offline(config: &Config) -> anyhow::Result<StatusInfo> {
    Ok(StatusInfo {
        node_id: load_node_key(config)?.id(),
        listen: None,
        members: Vec::new(),
        coordinator: None,
    })
}
