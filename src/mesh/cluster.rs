//! Cluster membership: a 256-bit shared secret, proven by both ends of every connection with an
//! HMAC over the TLS exporter (quic-p2p.md §3.3, option A), and the join token that carries it.
//!
//! The proof is bound to the TLS session: `E = export_keying_material(32,
//! "EXPORTER-meshcc-cluster-auth", "")` is unique per connection, so a tag cannot be replayed
//! or relayed into another connection. Each side sends
//! `HMAC-SHA256(K, "meshcc-auth-v1" ‖ role ‖ E ‖ own id ‖ peer id)` in its [`Hello`].
//!
//! Files under `Paths::data_dir` (mode 0600): `cluster.secret` (32 raw bytes) and `seeds`
//! (one `NODEID@HOST:PORT` per line). With no secret a node opens no port.
//!
//! [`Hello`]: super::proto::Hello

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::identity::{
    b32_decode, b32_encode, read_private_file, write_private_new, NodeId, PrivateReadError,
};

/// File name of the cluster secret under `Paths::data_dir`.
pub const SECRET_FILE: &str = "cluster.secret";
/// File name of the seed list under `Paths::data_dir`.
pub const SEEDS_FILE: &str = "seeds";
/// TLS exporter label for the membership proof.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-meshcc-cluster-auth";
/// Domain separation for the tag.
const TAG_DOMAIN: &[u8] = b"meshcc-auth-v1";
/// Prefix of join tokens (and their version).
const TOKEN_PREFIX: &str = "meshcc1";

/// Which end of the connection computes a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that dialed.
    Dialer,
    /// The node that accepted.
    Acceptor,
}

/// Errors about the cluster secret, the seed list or a join token.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret file is not private or not 32 bytes.
    #[error("cluster secret {path} is unusable: {reason}")]
    BadSecret {
        /// The file.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// `init`/`join` would replace a different secret.
    #[error("this node already belongs to a cluster ({path}); pass --force to replace its secret")]
    AlreadyMember {
        /// The existing secret file.
        path: PathBuf,
    },
    /// A join token does not parse.
    #[error("invalid join token: {0}; copy the whole token printed by `meshcc init`")]
    BadToken(String),
    /// A seed address does not parse.
    #[error("invalid peer address {0:?}: expected NODEID@HOST:PORT")]
    BadSeed(String),
    /// The random generator failed.
    #[error("cannot generate a secret: {0}")]
    Random(String),
}

/// The 256-bit cluster secret. Its `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A fresh random secret (ring's system random generator).
    pub fn generate() -> Result<Self, ClusterError> {
        let mut k = [0u8; 32];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut k)
            .map_err(|e| ClusterError::Random(format!("{e:?}")))?;
        Ok(Self(k))
    }

    /// A secret from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A public name for the cluster (mDNS TXT `c`): 16 hex digits of a keyed hash of the
    /// secret. It tells nodes of one cluster apart from others and reveals nothing of the secret.
    pub fn cluster_id(&self) -> String {
        let h = blake3::derive_key("meshcc 1 cluster id", &self.0);
        h[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Loads the secret; `Ok(None)` when there is none (the node then opens no port).
    pub fn load(path: &Path) -> Result<Option<Self>, ClusterError> {
        let bad = |reason: String| ClusterError::BadSecret {
            path: path.to_path_buf(),
            reason,
        };
        match read_private_file(path, 64) {
            Ok(bytes) => {
                let k: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                    bad(format!(
                        "{} bytes instead of 32; run `meshcc join TOKEN --force` again",
                        b.len()
                    ))
                })?;
                Ok(Some(Self(k)))
            }
            Err(PrivateReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(PrivateReadError::Io(source)) => Err(ClusterError::Io {
                path: path.to_path_buf(),
                source,
            }),
            Err(PrivateReadError::Mode(m)) => Err(bad(format!(
                "mode {m:o}: it must be private; run `chmod 600 {}`",
                path.display()
            ))),
            Err(PrivateReadError::TooLarge) => Err(bad(
                "too large; run `meshcc join TOKEN --force` again".into(),
            )),
        }
    }

    /// Stores the secret (mode 0600). An existing different secret is replaced only with
    /// `force`; storing the same secret again is a no-op.
    pub fn store(&self, path: &Path, force: bool) -> Result<(), ClusterError> {
        let io = |source| ClusterError::Io {
            path: path.to_path_buf(),
            source,
        };
        match Self::load(path) {
            Ok(Some(old)) if old == *self => return Ok(()),
            Ok(None) => {}
            Ok(Some(_)) | Err(_) if !force => {
                return Err(ClusterError::AlreadyMember {
                    path: path.to_path_buf(),
                })
            }
            _ => std::fs::remove_file(path).map_err(io)?,
        }
        write_private_new(path, &self.0).map_err(io)
    }

    /// The membership tag this node sends (`role` is its own role on the connection).
    pub fn tag(&self, role: Role, exporter: &[u8; 32], own: &NodeId, peer: &NodeId) -> [u8; 32] {
        match self.mac(role, exporter, own, peer) {
            Some(mac) => mac.finalize().into_bytes().into(),
            // Cannot happen (HMAC takes any key length); a random tag never verifies.
            None => {
                let mut t = [0u8; 32];
                let _ = rustls::crypto::ring::default_provider()
                    .secure_random
                    .fill(&mut t);
                t
            }
        }
    }

    /// Checks, in constant time, the tag a peer sent (`role` is the peer's role).
    pub fn verify(
        &self,
        role: Role,
        exporter: &[u8; 32],
        peer: &NodeId,
        own: &NodeId,
        tag: &[u8; 32],
    ) -> bool {
        self.mac(role, exporter, peer, own)
            .is_some_and(|mac| mac.verify_slice(tag).is_ok())
    }

    fn mac(
        &self,
        role: Role,
        exporter: &[u8; 32],
        sender: &NodeId,
        receiver: &NodeId,
    ) -> Option<Hmac<Sha256>> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()?;
        mac.update(TAG_DOMAIN);
        mac.update(match role {
            Role::Dialer => b"D",
            Role::Acceptor => b"A",
        });
        mac.update(exporter);
        mac.update(&sender.0);
        mac.update(&receiver.0);
        Some(mac)
    }
}

/// The exporter keying material of a connection that binds the membership proof to it.
pub fn exporter(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .ok()?;
    Some(out)
}

/// A peer to dial: its expected NodeId and an address (`NODEID@HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The id the dial expects.
    pub node_id: NodeId,
    /// `HOST:PORT` (a name or an IP address; IPv6 in brackets).
    pub addr: String,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

impl FromStr for PeerAddr {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ClusterError::BadSeed(s.chars().take(200).collect());
        let (id, addr) = s.split_once('@').ok_or_else(bad)?;
        let node_id = id.parse().map_err(|_| bad())?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(Self {
            node_id,
            addr: addr.to_string(),
        })
    }
}

impl PeerAddr {
    /// Resolves the address (DNS names allowed) to socket addresses.
    pub fn resolve(&self) -> std::io::Result<Vec<std::net::SocketAddr>> {
        use std::net::ToSocketAddrs;
        Ok(self.addr.to_socket_addrs()?.collect())
    }
}

/// What `meshcc init` prints and `meshcc join` takes: `meshcc1:<secret>[:<NODEID@HOST:PORT>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// A node to dial first, if the token names one.
    pub seed: Option<PeerAddr>,
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}:{}", b32_encode(&self.secret.0))?;
        if let Some(seed) = &self.seed {
            write!(f, ":{seed}")?;
        }
        Ok(())
    }
}

impl FromStr for JoinToken {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut parts = s.splitn(3, ':');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(ClusterError::BadToken(format!(
                "it does not start with {TOKEN_PREFIX}:"
            )));
        }
        let secret = parts
            .next()
            .and_then(b32_decode)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| ClusterError::BadToken("the secret part is damaged".into()))?;
        let seed = parts.next().map(str::parse).transpose()?;
        Ok(Self {
            secret: ClusterSecret(secret),
            seed,
        })
    }
}

/// Reads the seed list (`NODEID@HOST:PORT` per line; `#` comments). Missing file: empty.
/// Bad lines are skipped with a warning.
pub fn load_seeds(path: &Path) -> Vec<PeerAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(1024)
        .filter_map(|l| match l.parse() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("{}: {e}", path.display());
                None
            }
        })
        .collect()
}

/// Adds a seed to the list (if not already there).
pub fn add_seed(path: &Path, seed: &PeerAddr) -> Result<(), ClusterError> {
    let mut seeds = load_seeds(path);
    if seeds.contains(seed) {
        return Ok(());
    }
    seeds.push(seed.clone());
    let text: String = seeds.iter().map(|s| format!("{s}\n")).collect();
    let io = |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    write_private_new(path, text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_verify_only_with_same_secret_session_and_direction() {
        let k = ClusterSecret::generate().unwrap();
        let other = ClusterSecret::generate().unwrap();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let e = [5u8; 32];
        let t = k.tag(Role::Dialer, &e, &a, &b);
        assert!(k.verify(Role::Dialer, &e, &a, &b, &t));
        assert!(!other.verify(Role::Dialer, &e, &a, &b, &t));
        assert!(!k.verify(Role::Acceptor, &e, &a, &b, &t));
        assert!(!k.verify(Role::Dialer, &[6; 32], &a, &b, &t));
        assert!(!k.verify(Role::Dialer, &e, &b, &a, &t));
    }

    #[test]
    fn tokens_round_trip() {
        let secret = ClusterSecret::generate().unwrap();
        let t = JoinToken {
            secret: secret.clone(),
            seed: None,
        };
        assert_eq!(t.to_string().parse::<JoinToken>().unwrap(), t);
        let seed: PeerAddr = format!("{}@127.0.0.1:7471", NodeId([4; 32]))
            .parse()
            .unwrap();
        let t = JoinToken {
            secret,
            seed: Some(seed),
        };
        assert_eq!(t.to_string().parse::<JoinToken>().unwrap(), t);
        let v6 = format!("{}@[::1]:7471", NodeId([4; 32]));
        assert!(v6.parse::<PeerAddr>().is_ok());
        for bad in ["", "meshcc1", "meshcc2:abc", "meshcc1:abc", "meshcc1:!!"] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad}");
        }
        assert!("x@1.2.3.4:5".parse::<PeerAddr>().is_err());
    }

    #[test]
    fn secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SECRET_FILE);
        assert!(ClusterSecret::load(&p).unwrap().is_none());
        let k = ClusterSecret::generate().unwrap();
        k.store(&p, false).unwrap();
        assert_eq!(ClusterSecret::load(&p).unwrap(), Some(k.clone()));
        k.store(&p, false).unwrap();
        let k2 = ClusterSecret::generate().unwrap();
        assert!(matches!(
            k2.store(&p, false),
            Err(ClusterError::AlreadyMember { .. })
        ));
        k2.store(&p, true).unwrap();
        assert_eq!(ClusterSecret::load(&p).unwrap(), Some(k2));

        let s = dir.path().join(SEEDS_FILE);
        let seed: PeerAddr = format!("{}@127.0.0.1:1", NodeId([4; 32])).parse().unwrap();
        add_seed(&s, &seed).unwrap();
        add_seed(&s, &seed).unwrap();
        assert_eq!(load_seeds(&s), vec![seed]);
    }
}
