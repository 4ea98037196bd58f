//! The mesh: node identity, pinned TLS, cluster membership, framing and the QUIC transport.
//!
//! See `docs/architecture.md` (section "Mesh transport") and `../shared/research/quic-p2p.md`.
//! A node with no cluster secret opens no network port at all ([`start`] returns `None`).

pub mod alloc;
pub mod cluster;
pub mod commands;
pub mod discovery;
pub mod election;
pub mod identity;
pub mod membership;
pub mod proto;
pub mod tls;
pub mod transport;
pub mod view;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::{ensure_private_dir, Config};
use cluster::ClusterSecret;
use identity::{NodeId, NodeKey};
use membership::Membership;
use transport::{Mesh, TransportConfig, DEFAULT_PORT};
use view::ViewHandles;

/// The `[mesh]` section of `config.toml`, all fields optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMesh {
    listen: Option<String>,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    discovery: Option<String>,
    discovery_interfaces: Option<Vec<String>>,
}

/// The effective mesh settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// UDP address of the endpoint (`MESHCC_LISTEN`, `[mesh] listen`; default `0.0.0.0:7471`).
    pub listen: SocketAddr,
    /// If set, only these nodes may take part (`[mesh] allow`).
    pub allow: Option<HashSet<NodeId>>,
    /// Nodes always refused (`[mesh] deny`).
    pub deny: HashSet<NodeId>,
    /// mDNS discovery on (`MESHCC_DISCOVERY`, `[mesh] discovery`: `on` or `off`; default on).
    pub discovery: bool,
    /// Only these interfaces for mDNS (`MESHCC_DISCOVERY_INTERFACES=eth0,wlan0`,
    /// `[mesh] discovery_interfaces`); default: all but loopback and container/VM bridges.
    pub discovery_interfaces: Option<Vec<String>>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            allow: None,
            deny: HashSet::new(),
            discovery: true,
            discovery_interfaces: None,
        }
    }
}

impl MeshSettings {
    /// Combines `MESHCC_LISTEN` and the file's `[mesh]` section; the error names the setting.
    pub fn resolve(get: &dyn Fn(&str) -> Option<String>, file: FileMesh) -> Result<Self, String> {
        let listen = match get("MESHCC_LISTEN")
            .map(|v| ("MESHCC_LISTEN", v))
            .or(file.listen.map(|v| ("mesh.listen", v)))
        {
            Some((setting, v)) => v.parse().map_err(|_| {
                format!("{setting} = {v:?}: expected IP:PORT, e.g. 0.0.0.0:{DEFAULT_PORT} or [::]:{DEFAULT_PORT}")
            })?,
            None => Self::default().listen,
        };
        let ids = |setting: &str, list: Vec<String>| -> Result<HashSet<NodeId>, String> {
            list.iter()
                .map(|s| s.parse().map_err(|e| format!("{setting}: {e}")))
                .collect()
        };
        let discovery = match get("MESHCC_DISCOVERY")
            .map(|v| ("MESHCC_DISCOVERY", v))
            .or(file.discovery.map(|v| ("mesh.discovery", v)))
        {
            None => true,
            Some((_, v)) if matches!(v.as_str(), "on" | "1" | "true" | "yes") => true,
            Some((_, v)) if matches!(v.as_str(), "off" | "0" | "false" | "no") => false,
            Some((setting, v)) => {
                return Err(format!(
                    "{setting} = {v:?}: expected on or off (off: seeds only, no mDNS)"
                ))
            }
        };
        let discovery_interfaces = get("MESHCC_DISCOVERY_INTERFACES")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .or(file.discovery_interfaces);
        Ok(Self {
            discovery,
            discovery_interfaces,
            listen,
            allow: file.allow.map(|l| ids("mesh.allow", l)).transpose()?,
            deny: file
                .deny
                .map(|l| ids("mesh.deny", l))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// The transport configuration for these settings (timeouts at their defaults).
    pub fn transport(&self) -> TransportConfig {
        TransportConfig {
            listen: self.listen,
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            ..TransportConfig::default()
        }
    }
}

/// Loads (or makes, on first use) this node's key from `data_dir/node.key`.
pub fn load_node_key(config: &Config) -> anyhow::Result<NodeKey> {
    let uid = nix::unistd::getuid().as_raw();
    ensure_private_dir(&config.paths.data_dir, uid)?;
    Ok(NodeKey::load_or_create(
        &config.paths.data_dir.join(identity::NODE_KEY_FILE),
    )?)
}

/// Loads the cluster secret, if this node belongs to a cluster.
pub fn load_secret(config: &Config) -> anyhow::Result<Option<ClusterSecret>> {
    Ok(ClusterSecret::load(
        &config.paths.data_dir.join(cluster::SECRET_FILE),
    )?)
}

/// The file holding this node's start counter (see [`membership::identity::Ident`]).
pub const BOOT_FILE: &str = "boot";

/// Reads, bumps and stores the start counter in `data_dir/boot`; an unreadable file counts as
/// 0, so the worst case is a counter that starts again at 1.
fn next_boot(config: &Config) -> u64 {
    let path = config.paths.data_dir.join(BOOT_FILE);
    let last: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let boot = last.saturating_add(1);
    if let Err(e) = std::fs::write(&path, format!("{boot}\n")) {
        tracing::warn!("cannot store the start counter in {}: {e}", path.display());
    }
    boot
}

/// A node's running mesh: the endpoint and the membership layer on it.
#[derive(Debug)]
pub struct Started {
    /// The QUIC endpoint and peer table.
    pub mesh: Arc<Mesh>,
    /// Gossip membership, election and the view.
    pub membership: Membership,
    /// mDNS, while it runs.
    _discovery: Option<discovery::Discovery>,
}

impl Started {
    /// This node's status: the members of `views` (with their adverts and whether a connection
    /// is live) and the coordinator.
    pub fn status(&self, views: &ViewHandles) -> proto::StatusInfo {
        let view = views.view.borrow().clone();
        let members = view
            .members
            .iter()
            .map(|m| proto::MemberInfo {
                node_id: m.id,
                addrs: m.addrs.iter().map(|a| a.to_string()).collect(),
                state: match m.state {
                    election::MemberState::Alive => "alive",
                    election::MemberState::Suspect => "suspect",
                    election::MemberState::Down => "down",
                }
                .into(),
                connected: self.mesh.connection(&m.id).is_some(),
                slots_total: m.advert.as_ref().map(|a| a.slots_total),
                slots_busy: m.advert.as_ref().map(|a| a.slots_busy),
                class: m.advert.as_ref().map(|a| a.class),
            })
            .collect();
        proto::StatusInfo {
            node_id: self.mesh.id(),
            listen: self.mesh.local_addr().map(|a| a.to_string()),
            members,
            coordinator: view.coordinator.map(|c| proto::CoordinatorInfo {
                node_id: c.id,
                epoch: c.epoch,
            }),
        }
    }

    /// Graceful stop: leave the membership (a coordinator hands over), then close the endpoint.
    pub async fn close(&self) {
        self.membership.leave().await;
        self.mesh.close().await;
    }
}

/// Starts the daemon's mesh endpoint and membership when a cluster secret is configured:
/// membership publishes into `views`, and the seeds are announced to. `Ok(None)`: no cluster,
/// no port opened.
pub async fn start(config: &Config, views: &ViewHandles) -> anyhow::Result<Option<Started>> {
    let Some(secret) = load_secret(config)? else {
        tracing::info!(
            "no cluster configured (`meshcc init` or `meshcc join`): no network port opened"
        );
        return Ok(None);
    };
    let key = Arc::new(load_node_key(config)?);
    let secret_id = secret.cluster_id();
    let mesh = Mesh::bind(config.mesh.transport(), key, secret)?;
    let boot = next_boot(config);
    let joined = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let settings = membership::core::Settings {
        seed: u64::from_le_bytes(mesh.id().0[..8].try_into().unwrap_or_default()) ^ boot,
        ..Default::default()
    };
    let (suggest, suggestions) = tokio::sync::mpsc::channel(256);
    let membership = Membership::start(
        mesh.clone(),
        views.clone(),
        settings,
        membership::Start { boot, joined },
        suggestions,
    );
    let seeds = cluster::load_seeds(&config.paths.data_dir.join(cluster::SEEDS_FILE));
    let me = mesh.id();
    let discovery = if config.mesh.discovery {
        let port = mesh.local_addr().map_or(DEFAULT_PORT, |a| a.port());
        discovery::Discovery::start(
            me,
            port,
            secret_id,
            config.mesh.discovery_interfaces.as_deref(),
            suggest.clone(),
        )
        .map_err(|e| tracing::warn!("mDNS discovery cannot start, seeds only: {e}"))
        .ok()
    } else {
        tracing::info!("mDNS discovery off (MESHCC_DISCOVERY=off): seeds only");
        None
    };
    tokio::spawn(async move {
        for seed in seeds.into_iter().filter(|s| s.node_id != me) {
            let resolved = tokio::task::spawn_blocking({
                let seed = seed.clone();
                move || seed.resolve()
            })
            .await;
            let Ok(Ok(addrs)) = resolved else {
                tracing::warn!("cannot resolve seed {seed}");
                continue;
            };
            for addr in addrs {
                let s = membership::Suggestion {
                    id: seed.node_id,
                    addr,
                };
                if suggest.send(s).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Some(Started {
        mesh,
        membership,
        _discovery: discovery,
    }))
}
