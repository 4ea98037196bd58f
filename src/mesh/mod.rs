//! The mesh: node identity, pinned TLS, cluster membership, framing and the QUIC transport.
//!
//! See `docs/architecture.md` (section "Mesh transport") and `../shared/research/quic-p2p.md`.
//! A node with no cluster secret opens no network port at all ([`start`] returns `None`).

pub mod alloc;
pub mod cluster;
pub mod commands;
pub mod election;
pub mod identity;
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
use transport::{Mesh, TransportConfig, DEFAULT_PORT};

/// The `[mesh]` section of `config.toml`, all fields optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMesh {
    listen: Option<String>,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
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
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            allow: None,
            deny: HashSet::new(),
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
        Ok(Self {
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

/// Starts the daemon's mesh endpoint when a cluster secret is configured, and dials the seeds
/// in the background. `Ok(None)`: no cluster, no port opened.
pub async fn start(config: &Config) -> anyhow::Result<Option<Arc<Mesh>>> {
    let Some(secret) = load_secret(config)? else {
        tracing::info!(
            "no cluster configured (`meshcc init` or `meshcc join`): no network port opened"
        );
        return Ok(None);
    };
    let key = Arc::new(load_node_key(config)?);
    let mesh = Mesh::bind(config.mesh.transport(), key, secret)?;
    let seeds = cluster::load_seeds(&config.paths.data_dir.join(cluster::SEEDS_FILE));
    for seed in seeds {
        if seed.node_id == mesh.id() {
            continue;
        }
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let addrs = match tokio::task::spawn_blocking({
                let seed = seed.clone();
                move || seed.resolve()
            })
            .await
            {
                Ok(Ok(a)) => a,
                _ => {
                    tracing::warn!("cannot resolve seed {seed}");
                    return;
                }
            };
            for addr in addrs {
                match mesh.connect(seed.node_id, addr).await {
                    Ok(_) => {
                        tracing::info!(peer = %seed.node_id.short(), %addr, "connected to seed");
                        return;
                    }
                    Err(e) => tracing::warn!("seed {seed}: {e}"),
                }
            }
        });
    }
    Ok(Some(mesh))
}
