//! A blocking TLS client for the bench that trusts exactly one certificate, as loopsy's own
//! clients do (pinning by the SHA-256 of the DER certificate; the handshake signature is still
//! verified against that certificate's key).

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use sha2::{Digest, Sha256};

/// A TLS stream to the daemon.
pub type Stream = StreamOwned<ClientConnection, TcpStream>;

/// A client configuration that accepts only the certificate in `cert_pem` (PEM file).
pub fn pinned(cert_pem: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let cert = CertificateDer::from_pem_file(cert_pem).with_context(|| format!("reading {}", cert_pem.display()))?;
    let provider = Arc::new(ring::default_provider());
    let verifier = Pinned { pin: Sha256::digest(cert.as_ref()).to_vec(), provider: provider.clone() };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `addr` (ip:port) and completes the handshake.
pub fn connect(config: &Arc<ClientConfig>, addr: &str) -> anyhow::Result<Stream> {
    let ip = addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr);
    let name = ServerName::try_from(ip.to_string())?;
    let mut conn = ClientConnection::new(config.clone(), name)?;
    // Large writes become few large records and one writev per call, not one per 16 KiB.
    conn.set_buffer_limit(Some(4 << 20));
    let mut socket = TcpStream::connect(addr)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)?;
    }
    Ok(StreamOwned::new(conn, socket))
}

#[derive(Debug)]
struct Pinned {
    pin: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.pin.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
