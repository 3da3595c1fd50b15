//! TLS: the node's certificate, its fingerprint, the rustls configurations and the handshakes
//! (`connect` for clients, [`Acceptor`] for the listener).
//!
//! The only module that knows rustls and futures-rustls. Trust is by pinning, not by certificate
//! authorities: a client that knows a peer's fingerprint accepts exactly that certificate (the
//! handshake signature is still verified against its key) and nothing else.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::durable::{self, Mode};
use crate::paths::Paths;

/// How long a generated certificate is valid.
const VALIDITY_DAYS: u64 = 3 * 365;

/// A certificate fingerprint: SHA-256 of the DER certificate, 64 lowercase hex characters
/// (the 1.0.21 format; equal to `openssl x509 -outform der | sha256sum`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(crate::random::to_hex(&Sha256::digest(der)))
    }

    /// Parses a fingerprint, accepting upper case and `:` separators as `openssl` prints them.
    pub fn parse(text: &str) -> Option<Fingerprint> {
        let hex: String = text.trim().chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
        (hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit())).then_some(Fingerprint(hex))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// This node's certificate and private key.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pub fingerprint: Fingerprint,
}

/// Serialises the making of a pair within this process (the daemon's start and a pairing may
/// both find none); across processes only the running daemon makes one.
static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Identity {
    /// Loads `tls/cert.pem` and `tls/key.pem`, creating them on first use.
    pub fn load_or_create(paths: &Paths, hostname: &str) -> anyhow::Result<Identity> {
        let (cert_path, key_path) = (paths.tls_dir().join("cert.pem"), paths.tls_dir().join("key.pem"));
        let _creating = CREATING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !cert_path.exists() || !key_path.exists() {
            create(paths, hostname)?;
        }
        Identity::load(&cert_path, &key_path)
    }

    fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Identity> {
        let cert =
            CertificateDer::from_pem_file(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
        let key = PrivateKeyDer::from_pem_file(key_path).with_context(|| format!("reading {}", key_path.display()))?;
        // A key that is not the certificate's would make every TLS handshake fail, after peers
        // pinned the certificate: refuse it here, saying so, rather than at the first connection.
        let signing = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .with_context(|| format!("{} is not a usable private key", key_path.display()))?;
        if rustls::sign::CertifiedKey::new(vec![cert.clone()], signing).keys_match().is_err() {
            anyhow::bail!(
                "{} is not the private key of {}: put back the matching pair, or move both aside to make a new one \
                 (paired peers then have to pair again)",
                key_path.display(),
                cert_path.display()
            );
        }
        Ok(Identity { fingerprint: Fingerprint::of_der(&cert), cert, key })
    }
}

/// The fingerprint of the certificate in `paths`, if there is one.
pub fn local_fingerprint(paths: &Paths) -> Option<Fingerprint> {
    let cert = CertificateDer::from_pem_file(paths.tls_dir().join("cert.pem")).ok()?;
    Some(Fingerprint::of_der(&cert))
}

/// Generates a self-signed EC P-256 leaf certificate: SAN hostname, `localhost` and the node's
/// addresses; not a CA; written 0600 in a 0700 directory.
fn create(paths: &Paths, hostname: &str) -> anyhow::Result<()> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut names = vec![hostname.to_string(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(crate::netif::local_addresses().iter().map(|ip| ip.to_string()));
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names).context("certificate names")?;
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Loopsy");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let today = crate::clock::now_ms() / 86_400_000;
    let (year, month, date) = civil_day(today.saturating_sub(1));
    params.not_before = rcgen::date_time_ymd(year, month, date);
    let (year, month, date) = civil_day(today + VALIDITY_DAYS);
    params.not_after = rcgen::date_time_ymd(year, month, date);
    let cert = params.self_signed(&key)?;
    let dir = paths.tls_dir();
    durable::create_private_dir(&dir)?;
    write_pair(&dir, key.serialize_pem().as_bytes(), cert.pem().as_bytes())
}

/// Writes a key and its certificate so that a crash at any point leaves either no certificate
/// (the next start makes a new pair) or the complete new pair, never a certificate beside a key
/// that is not its own. A lone file left by an earlier crash or by hand is set aside first, not
/// deleted; then the key is written, then the certificate, each atomically and durably.
fn write_pair(dir: &Path, key_pem: &[u8], cert_pem: &[u8]) -> anyhow::Result<()> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let aside = format!("orphan-{}", crate::clock::now_ms());
    for lone in [&cert_path, &key_path] {
        if lone.exists() {
            let moved = lone.with_extension(format!("pem.{aside}"));
            std::fs::rename(lone, &moved).with_context(|| format!("setting {} aside", lone.display()))?;
            log::warn!("{} had no partner; moved to {}", lone.display(), moved.display());
        }
    }
    durable::sync_dir(dir);
    durable::write(&key_path, key_pem, Mode::Secret)?;
    durable::write(&cert_path, cert_pem, Mode::Secret)?;
    Ok(())
}

/// (year, month, day) of a day counted from the Unix epoch.
fn civil_day(days_since_epoch: u64) -> (i32, u8, u8) {
    let iso = crate::clock::iso8601(days_since_epoch * 86_400_000);
    (iso[0..4].parse().expect("a year"), iso[5..7].parse().expect("a month"), iso[8..10].parse().expect("a day"))
}

fn provider() -> Arc<CryptoProvider> {
    // Always explicit: never the process-wide default, which panics with two providers.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: this node's certificate, HTTP/1.1 over ALPN.
pub fn server_config(identity: &Identity) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side for a peer whose certificate must have exactly `pin`.
pub fn client_config(pin: &Fingerprint) -> Arc<ClientConfig> {
    client_with_pin(Some(pin.clone()))
}

/// The client side for pairing endpoints only: any certificate is accepted (its handshake
/// signature is still checked). Safe only because everything pairing sends is protected by
/// the SPAKE2 channel, not by TLS; never use it for anything else.
pub fn client_config_for_pairing() -> Arc<ClientConfig> {
    client_with_pin(None)
}

fn client_with_pin(pin: Option<Fingerprint>) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = PinnedVerifier { pin, provider: provider.clone() };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .expect("the default protocol versions are supported")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The client side of a TLS connection.
pub type ClientStream<S> = futures_rustls::client::TlsStream<S>;

/// The handshake of a client over `stream` to `host`, trusting as `config` says
/// ([`client_config`] or [`client_config_for_pairing`]).
pub async fn connect<S>(config: Arc<ClientConfig>, host: &str, stream: S) -> std::io::Result<ClientStream<S>>
where
    S: futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin,
{
    futures_rustls::TlsConnector::from(config).connect(server_name(host), stream).await
}

/// The server side of handshakes with this node's certificate (the listener holds one while
/// TLS is on).
pub type Acceptor = futures_rustls::TlsAcceptor;

/// An [`Acceptor`] for `identity`.
pub fn acceptor(identity: &Identity) -> anyhow::Result<Acceptor> {
    Ok(Acceptor::from(server_config(identity)?))
}

/// The validity of the certificate in `cert_pem` (a PEM file), for `loopsy doctor`.
pub fn certificate_validity(cert_pem: &Path) -> Result<crate::x509::Validity, String> {
    let der = CertificateDer::from_pem_file(cert_pem).map_err(|e| e.to_string())?;
    crate::x509::validity(&der)
}

/// The name to present in the handshake; the pinning verifier does not check it.
pub fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| ServerName::try_from("loopsy.invalid").expect("valid"))
}

/// Accepts exactly the pinned certificate (or, with no pin, any: pairing only); checks handshake
/// signatures against the presented key either way.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pin.as_ref().is_none_or(|pin| Fingerprint::of_der(end_entity) == *pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_parsed_in_every_common_spelling() {
        let hex = "7a4e1f298d0442a19d4f2f4414a08b5e2216ebe542a5f4a075930b6bef6e3bba";
        assert_eq!(Fingerprint::parse(hex).unwrap().as_str(), hex);
        let colons: Vec<String> = hex.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
        assert_eq!(Fingerprint::parse(&colons.join(":")).unwrap().as_str(), hex);
        assert!(Fingerprint::parse("abc").is_none());
    }

    #[test]
    fn a_generated_identity_is_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("loopsy-tls-{}", crate::random::hex(6)));
        let paths = Paths::from_dir(&dir).unwrap();
        let first = Identity::load_or_create(&paths, "alice-box").unwrap();
        let again = Identity::load_or_create(&paths, "alice-box").unwrap();
        assert_eq!(first.fingerprint, again.fingerprint, "the certificate is made once");
        assert_eq!(local_fingerprint(&paths), Some(first.fingerprint.clone()));
        assert_eq!(Fingerprint::of_der(&first.cert), first.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("tls/key.pem"), 0o600);
            assert_eq!(mode("tls"), 0o700);
        }
        server_config(&first).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    // See: #13 (the key and certificate were written one after the other: a crash between them
    // left a key that did not match the certificate).
    #[test]
    fn a_lone_key_or_certificate_is_set_aside_and_a_mismatched_pair_is_refused() {
        let dir = std::env::temp_dir().join(format!("loopsy-tls-pair-{}", crate::random::hex(6)));
        let paths = Paths::from_dir(&dir).unwrap();
        let tls = paths.tls_dir();
        let first = Identity::load_or_create(&paths, "box").unwrap();
        let first_key = std::fs::read(tls.join("key.pem")).unwrap();
        // The certificate alone (its key lost): a new pair, the old certificate kept aside.
        std::fs::remove_file(tls.join("key.pem")).unwrap();
        let second = Identity::load_or_create(&paths, "box").unwrap();
        assert_ne!(second.fingerprint, first.fingerprint);
        let names: Vec<String> =
            std::fs::read_dir(&tls).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().any(|n| n.starts_with("cert.pem.orphan-")), "{names:?}");
        // The key alone: the same.
        std::fs::remove_file(tls.join("cert.pem")).unwrap();
        let third = Identity::load_or_create(&paths, "box").unwrap();
        server_config(&third).unwrap();
        // Someone else's key beside our certificate: refused, nothing replaced.
        std::fs::write(tls.join("key.pem"), &first_key).unwrap();
        let error = Identity::load_or_create(&paths, "box").err().expect("a mismatched pair is refused").to_string();
        assert!(error.contains("is not the private key of"), "{error}");
        assert_eq!(std::fs::read(tls.join("key.pem")).unwrap(), first_key);
        assert_eq!(local_fingerprint(&paths), Some(third.fingerprint));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Every way a crash can cut `write_pair` short leaves no pair or the right one.
    #[test]
    fn a_crash_between_the_writes_never_leaves_a_mismatched_pair() {
        let dir = std::env::temp_dir().join(format!("loopsy-tls-crash-{}", crate::random::hex(6)));
        let paths = Paths::from_dir(&dir).unwrap();
        let tls = paths.tls_dir();
        let old = Identity::load_or_create(&paths, "box").unwrap();
        // The states write_pair passes through when replacing a lone certificate: moved aside,
        // then the new key written (the crash happens before the new certificate).
        std::fs::remove_file(tls.join("key.pem")).unwrap();
        std::fs::rename(tls.join("cert.pem"), tls.join("cert.pem.orphan-1")).unwrap();
        std::fs::write(tls.join("key.pem"), b"-----BEGIN PRIVATE KEY-----\nMC4=\n-----END PRIVATE KEY-----\n").unwrap();
        let after = Identity::load_or_create(&paths, "box").unwrap();
        assert_ne!(after.fingerprint, old.fingerprint);
        server_config(&after).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
