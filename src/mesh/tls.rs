//! Pinned mutual TLS 1.3 for the mesh (quic-p2p.md §3.2).
//!
//! * ring is the only crypto provider, always passed explicitly (never the process default).
//! * Each node presents its self-signed ed25519 certificate ([`NodeKey`]).
//! * A dial names the [`NodeId`] it expects: [`PinnedServerVerifier`] fails the handshake on
//!   any other key and records which id it saw, so the caller can name both.
//! * The acceptor requires a client certificate and accepts any well-formed ed25519 one
//!   ([`AnyNodeClientVerifier`]); the dialer's NodeId is read after the handshake with
//!   [`peer_node_id`] and checked against the allow and deny lists and the cluster secret.
//! * Handshake signatures are verified with the provider's algorithms (ed25519 only).
//! * No session resumption and no 0-RTT: nothing learned about one node is ever used for
//!   another that later answers at the same address.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::identity::{cert_spki, spki_is_ed25519, NodeId, NodeKey};

/// ALPN of the mesh protocol; part of the contract between nodes.
pub const ALPN: &[u8] = b"meshcc/1";

/// Errors in building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// The single crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The logical TLS server name for a node: `<node id>.meshcc.invalid` (never sent: SNI is off).
pub fn server_name(id: &NodeId) -> String {
    format!("{id}.meshcc.invalid")
}

/// The id seen during a dial when it was not the expected one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("identity mismatch: expected node {expected}, but the peer is node {actual}")]
pub struct IdentityMismatch {
    /// The id the dial named.
    pub expected: NodeId,
    /// The id of the key the peer presented.
    pub actual: NodeId,
}

fn bad_cert(e: impl std::fmt::Display) -> rustls::Error {
    tracing::debug!("peer certificate refused: {e}");
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

/// Checks a single self-signed ed25519 certificate and returns its NodeId.
fn check_peer_cert(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<NodeId, rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
    }
    let spki = cert_spki(end_entity).map_err(bad_cert)?;
    if !spki_is_ed25519(&spki) {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ));
    }
    Ok(NodeId::from_spki(&spki))
}

/// Verifies a TLS 1.3 handshake signature: ed25519 only, with the provider's algorithms.
fn verify13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// The dialer's verifier: accepts exactly the expected NodeId.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    provider: Arc<CryptoProvider>,
    expected: NodeId,
    mismatch: Mutex<Option<IdentityMismatch>>,
}

impl PinnedServerVerifier {
    /// A verifier that accepts only `expected`.
    pub fn new(provider: Arc<CryptoProvider>, expected: NodeId) -> Self {
        Self {
            provider,
            expected,
            mismatch: Mutex::new(None),
        }
    }

    /// The mismatch seen, if the handshake failed because the peer was another node.
    pub fn mismatch(&self) -> Option<IdentityMismatch> {
        self.mismatch.lock().ok().and_then(|m| m.clone())
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is ours (we chose it in `dial`); it must name the expected id.
        let expected_name = server_name_for_check(&self.expected);
        if server_name.to_str() != expected_name {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        let actual = check_peer_cert(end_entity, intermediates)?;
        if actual != self.expected {
            let m = IdentityMismatch {
                expected: self.expected,
                actual,
            };
            tracing::debug!("{m}");
            if let Ok(mut slot) = self.mismatch.lock() {
                *slot = Some(m.clone());
            }
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(m)),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn server_name_for_check(id: &NodeId) -> String {
    server_name(id)
}

/// The acceptor's verifier: requires a client certificate and accepts any single, well-formed
/// ed25519 certificate. Who may talk is decided after the handshake, by NodeId
/// ([`peer_node_id`]), the allow/deny lists and the cluster-secret proof.
///
/// The certificate's own signature and dates are not checked: the pin is the key, and the
/// TLS CertificateVerify signature (checked here) proves the peer holds it.
#[derive(Debug)]
pub struct AnyNodeClientVerifier {
    provider: Arc<CryptoProvider>,
}

impl AnyNodeClientVerifier {
    /// The verifier, with the provider whose algorithms check signatures.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ClientCertVerifier for AnyNodeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_peer_cert(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The server side: TLS 1.3 only, client certificates required, no tickets, no 0-RTT.
pub fn server_config(key: &NodeKey) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let provider = provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyNodeClientVerifier::new(provider)))
        .with_single_cert(vec![key.cert()], key.private_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    quinn::crypto::rustls::QuicServerConfig::try_from(cfg)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

/// The client side for one dial expecting `expected`; also returns the verifier, which tells
/// after a failed handshake which id the peer had.
pub fn client_config(
    key: &NodeKey,
    expected: NodeId,
) -> Result<
    (
        quinn::crypto::rustls::QuicClientConfig,
        Arc<PinnedServerVerifier>,
    ),
    TlsError,
> {
    let provider = provider();
    let verifier = Arc::new(PinnedServerVerifier::new(provider.clone(), expected));
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(vec![key.cert()], key.private_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.enable_sni = false;
    cfg.enable_early_data = false;
    cfg.resumption = rustls::client::Resumption::disabled();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok((quic, verifier))
}

/// The NodeId of the peer of an established connection (from its certificate), and checks
/// that it spoke our ALPN. `None` if the peer presented no usable certificate.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let alpn_ok = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .is_some_and(|d| d.protocol.as_deref() == Some(ALPN));
    if !alpn_ok {
        return None;
    }
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    match certs.as_slice() {
        [one] => NodeId::from_cert(one).ok(),
        _ => None,
    }
}
