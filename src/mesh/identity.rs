//! Node identity: an ed25519 key made on first start and kept, a self-signed certificate made
//! from it, and the [`NodeId`], the SHA-256 of the key's SubjectPublicKeyInfo.
//!
//! A peer is known by its NodeId and nothing else; addresses are only hints (DESIGN.md,
//! principle 2). The key lives in `Paths::data_dir/node.key` (PKCS#8 DER, mode 0600).

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the node key under `Paths::data_dir`.
pub const NODE_KEY_FILE: &str = "node.key";

/// Largest node key file read (a PKCS#8 ed25519 key is 83 bytes).
const MAX_KEY_FILE: u64 = 16 << 10;

/// DER of the ed25519 algorithm identifier (OID 1.3.101.112) inside an SPKI.
const ED25519_ALG_ID: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// Lowercase RFC 4648 base32 without padding.
fn base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
    // The specification is a constant and valid; `BASE32_NOPAD` is the fallback that cannot fail.
    spec.encoding()
        .unwrap_or_else(|_| data_encoding::BASE32_NOPAD.clone())
}

/// Encodes bytes as lowercase base32 without padding (NodeIds, cluster secrets in tokens).
pub fn b32_encode(bytes: &[u8]) -> String {
    base32().encode(bytes)
}

/// Decodes lowercase (or uppercase) base32 without padding.
pub fn b32_decode(text: &str) -> Option<Vec<u8>> {
    base32().decode(text.as_bytes()).ok()
}

/// The identity of a node: SHA-256 of its public key's SubjectPublicKeyInfo (DER).
///
/// Displayed as 52 characters of lowercase base32 without padding, which fits one DNS label.
///
/// Serialized as 32 bytes in binary formats (postcard) and as its text in readable ones (JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(Self(<[u8; 32]>::deserialize(d)?))
        }
    }
}

impl NodeId {
    /// The NodeId of a SubjectPublicKeyInfo (DER).
    pub fn from_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// The NodeId of the key in an X.509 certificate (DER). Fails on a malformed certificate.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        Ok(Self::from_spki(&cert_spki(cert)?))
    }

    /// The first 8 characters, for logs.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b32_encode(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a NodeId.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a node id: expected 52 characters of base32 (a-z, 2-7), as printed by `meshcc id`")]
pub struct ParseNodeIdError {
    /// The text that failed to parse (cut to 80 characters).
    pub input: String,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNodeIdError {
            input: s.chars().take(80).collect(),
        };
        if s.len() != 52 {
            return Err(err());
        }
        let bytes = b32_decode(s).ok_or_else(err)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| err())?;
        Ok(Self(arr))
    }
}

/// Errors about the node key or a peer's certificate.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file cannot be read or written.
    #[error("node key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is readable by others.
    #[error("node key {path} has mode {mode:o}: it must be private; run `chmod 600 {path}`")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The key file does not hold an ed25519 PKCS#8 key.
    #[error("node key {path} is not a valid ed25519 key ({reason}); move it away to make a new identity (peers will see a new node id)")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot make the node certificate: {0}")]
    Generate(String),
    /// A peer's certificate is not parseable X.509.
    #[error("malformed certificate: {0}")]
    BadCertificate(String),
}

/// The SubjectPublicKeyInfo (DER) of an X.509 certificate.
pub fn cert_spki(cert: &CertificateDer<'_>) -> Result<Vec<u8>, IdentityError> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| IdentityError::BadCertificate(format!("{e:?}")))?;
    Ok(ee.subject_public_key_info().as_ref().to_vec())
}

/// Whether a SubjectPublicKeyInfo holds an ed25519 key.
pub fn spki_is_ed25519(spki: &[u8]) -> bool {
    // SEQUENCE(len) { AlgorithmIdentifier(ed25519), BIT STRING(33) } = 44 bytes.
    spki.len() == 44 && spki.get(2..2 + ED25519_ALG_ID.len()) == Some(ED25519_ALG_ID)
}

/// This node's key pair and certificate.
pub struct NodeKey {
    key_der: Vec<u8>,
    cert: CertificateDer<'static>,
    id: NodeId,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey").field("id", &self.id).finish()
    }
}

impl NodeKey {
    /// Makes a fresh ed25519 key (not stored anywhere).
    pub fn generate() -> Result<Self, IdentityError> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Self::from_key_pair(kp)
    }

    /// Builds the identity from a PKCS#8 DER key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, IdentityError> {
        let kp =
            rcgen::KeyPair::try_from(der).map_err(|e| IdentityError::Generate(e.to_string()))?;
        if !kp.is_compatible(&rcgen::PKCS_ED25519) {
            return Err(IdentityError::Generate("the key is not ed25519".into()));
        }
        Self::from_key_pair(kp)
    }

    fn from_key_pair(kp: rcgen::KeyPair) -> Result<Self, IdentityError> {
        use rcgen::PublicKeyData;
        let id = NodeId::from_spki(&kp.subject_public_key_info());
        let params = rcgen::CertificateParams::new(vec![format!("{id}.meshcc.invalid")])
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let cert = params
            .self_signed(&kp)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Ok(Self {
            key_der: kp.serialize_der(),
            cert: cert.der().clone(),
            id,
        })
    }

    /// Loads the key at `path`, or makes and stores a new one (mode 0600, created atomically:
    /// two processes starting at once end up with the same key).
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        match read_private_file(path, MAX_KEY_FILE) {
            Ok(bytes) => {
                return Self::from_pkcs8(&bytes).map_err(|e| IdentityError::BadKey {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
            Err(PrivateReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(PrivateReadError::Io(e)) => return Err(io(e)),
            Err(PrivateReadError::Mode(mode)) => {
                return Err(IdentityError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                })
            }
            Err(PrivateReadError::TooLarge) => {
                return Err(IdentityError::BadKey {
                    path: path.to_path_buf(),
                    reason: "file too large".into(),
                })
            }
        }
        let key = Self::generate()?;
        match write_private_new(path, &key.key_der) {
            Ok(()) => Ok(key),
            // Someone else made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
            Err(e) => Err(io(e)),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The self-signed certificate (DER).
    pub fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// The private key, for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Why a private file could not be read.
#[derive(Debug)]
pub(crate) enum PrivateReadError {
    /// The file system said no.
    Io(std::io::Error),
    /// Group or others may access the file (its mode).
    Mode(u32),
    /// Larger than allowed.
    TooLarge,
}

/// Reads a file that must be private (no group/other permission bits), at most `max` bytes.
pub(crate) fn read_private_file(path: &Path, max: u64) -> Result<Vec<u8>, PrivateReadError> {
    let file = std::fs::File::open(path).map_err(PrivateReadError::Io)?;
    let meta = file.metadata().map_err(PrivateReadError::Io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PrivateReadError::Mode(mode));
    }
    if meta.len() > max {
        return Err(PrivateReadError::TooLarge);
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(PrivateReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(PrivateReadError::TooLarge);
    }
    Ok(bytes)
}

/// Writes `bytes` to a new file at `path` with mode 0600, atomically: the data goes to a
/// temporary file which is then hard-linked into place, so readers never see a partial file
/// and an existing file is never replaced (`AlreadyExists`).
pub(crate) fn write_private_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn node_id_text_round_trip_and_errors() {
        let id = NodeId([7; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 52);
        assert!(s
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<NodeId>().unwrap(), id);
        for bad in ["", "abc", &s[..51], &format!("{s}a"), &s.replace('a', "1")] {
            let e = bad.parse::<NodeId>().unwrap_err();
            assert!(e.to_string().contains("meshcc id"), "{e}");
        }
    }

    #[test]
    fn key_is_made_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join(NODE_KEY_FILE);
        let a = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let b = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(a.id(), b.id());
        // The id from the certificate is the id from the key.
        assert_eq!(NodeId::from_cert(&a.cert()).unwrap(), a.id());
        assert!(spki_is_ed25519(&cert_spki(&a.cert()).unwrap()));
        // No temporary files left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = NodeKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"garbage").unwrap();
        let e = NodeKey::load_or_create(&path).unwrap_err();
        assert!(matches!(e, IdentityError::BadKey { .. }), "{e}");
    }

    #[test]
    fn concurrent_creation_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_KEY_FILE);
        let ids: Vec<NodeId> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| NodeKey::load_or_create(&path).unwrap().id()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn serde_forms() {
        let id = NodeId([9; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin.len(), 32);
        assert_eq!(postcard::from_bytes::<NodeId>(&bin).unwrap(), id);
    }

    #[test]
    fn distinct_keys_have_distinct_ids() {
        assert_ne!(
            NodeKey::generate().unwrap().id(),
            NodeKey::generate().unwrap().id()
        );
    }
}
