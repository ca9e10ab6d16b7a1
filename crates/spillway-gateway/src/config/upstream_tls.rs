//! A cluster's `tls:` block checked: the CA bundle, client certificate and key read and parsed,
//! the server name (SNI) settled, and the rustls client built — all while the config is
//! validated, so an unreadable file, a certificate without its key or a bad server name is an
//! error at its key and line, and a reload with a bad file keeps the running config.
//!
//! The rustls client is built here (ring provider, as the listeners; ALPN `h2` for http2,
//! `http/1.1` for http1; the client certificate when given) because building is what can
//! fail; `upstream::tls` wraps it in a connector and speaks it, keeping imports one-way
//! (`upstream` imports `config`).

use super::locate::Seg;
use super::raw::RawUpstreamTls;
use super::validate::{at, key, Checker};
use super::UpstreamProtocol;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A cluster's upstream TLS, checked.
#[derive(Clone, Serialize)]
pub struct UpstreamTlsConfig {
    /// The CA bundle the upstream's certificate must chain to (`ca`, or the system's).
    pub ca: PathBuf,
    /// The server name sent (SNI) and verified against the certificate; an IP address is
    /// verified against the certificate's IP addresses and sends no SNI.
    pub sni: String,
    /// The client certificate chain presented when the upstream asks for one.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
    /// The rustls client built from the files (ALPN set for the cluster's protocol).
    #[serde(skip)]
    pub client_config: Arc<rustls::ClientConfig>,
    /// `sni`, parsed.
    #[serde(skip)]
    pub server_name: ServerName<'static>,
    /// The files' contents as read, to tell whether a reload changed anything.
    #[serde(skip)]
    contents: Arc<[Vec<u8>; 3]>,
}

impl std::fmt::Debug for UpstreamTlsConfig {
    /// Paths and name only: the contents hold a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsConfig")
            .field("ca", &self.ca)
            .field("sni", &self.sni)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl UpstreamTlsConfig {
    /// Whether `other` would build the same client: same name, same files, same contents.
    pub fn same_as(&self, other: &UpstreamTlsConfig) -> bool {
        self.sni == other.sni
            && self.ca == other.ca
            && self.cert == other.cert
            && self.key == other.key
            && self.contents == other.contents
    }
}

/// Checks a cluster's `tls:` at `p` (the `tls` key). Relative paths resolve against `base`;
/// `sni` defaults to `dns_name`, the host name endpoints are discovered from, if any (the
/// endpoints themselves are IP addresses). Reports every problem it finds; `None` if any.
pub(super) fn check(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: RawUpstreamTls,
    base: &Path,
    protocol: UpstreamProtocol,
    dns_name: Option<&str>,
) -> Option<UpstreamTlsConfig> {
    let before = c.problem_count();
    // Without `ca`, the system's bundle: its certificates that cannot be trust anchors are
    // skipped, as every TLS client does with it; a bundle given by name must be all usable.
    let system = raw.ca.is_none();
    let ca = match raw.ca {
        Some(file) => Some(base.join(file)),
        None => system_bundle(std::env::var_os("SSL_CERT_FILE"), SYSTEM_BUNDLES)
            .map_err(|e| c.error(p, e))
            .ok(),
    };
    let ca_path = if system { p.to_vec() } else { at(p, &[key("ca")]) };
    let ca_pem = ca.as_ref().and_then(|ca| read(c, &ca_path, ca));
    let roots = match (&ca, &ca_pem) {
        (Some(ca), Some(pem)) => certificates(c, &ca_path, ca, pem),
        _ => None,
    };

    let (cert, key_path) = (raw.cert.map(|f| base.join(f)), raw.key.map(|f| base.join(f)));
    let mut identity = None;
    let mut cert_pem = Vec::new();
    let mut key_pem = Vec::new();
    match (&cert, &key_path) {
        (Some(cert), Some(key_file)) => {
            let chain = read(c, &at(p, &[key("cert")]), cert).and_then(|pem| {
                let chain = certificates(c, &at(p, &[key("cert")]), cert, &pem);
                cert_pem = pem;
                chain
            });
            let private = read(c, &at(p, &[key("key")]), key_file).and_then(|pem| {
                let private = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| {
                        c.error(
                            &at(p, &[key("key")]),
                            format!("{}: no usable private key: {e}", key_file.display()),
                        )
                    })
                    .ok();
                key_pem = pem;
                private
            });
            if let (Some(chain), Some(key)) = (chain, private) {
                identity = Some(ClientIdentity { chain, key });
            }
        }
        (Some(_), None) => {
            c.error(&at(p, &[key("cert")]), "a client certificate needs its private key: add `key`")
        }
        (None, Some(_)) => {
            c.error(&at(p, &[key("key")]), "a private key needs its client certificate: add `cert`")
        }
        (None, None) => {}
    }

    let sni = match (raw.sni, dns_name) {
        (Some(s), _) => Some((s, at(p, &[key("sni")]))),
        (None, Some(name)) => Some((name.to_string(), p.to_vec())),
        (None, None) => {
            c.error(
                p,
                "`sni` is required: the endpoints are IP addresses, so name the server the \
                 upstream's certificate is issued to (e.g. `sni: payments.internal`)",
            );
            None
        }
    };
    let server_name = sni.as_ref().and_then(|(name, path)| {
        ServerName::try_from(name.clone())
            .map_err(|_| {
                c.error(
                    path,
                    format!(
                        "`{name}` is not a server name: a DNS name such as payments.internal, or \
                         an IP address"
                    ),
                )
            })
            .ok()
    });

    if c.problem_count() != before {
        return None;
    }
    let (ca, roots, server_name, (sni, _)) = (ca?, roots?, server_name?, sni?);
    let client_config = match client_config(&roots, identity, protocol, system) {
        Ok(config) => config,
        Err(e) => {
            let which = match &e {
                TlsSetupError::Anchor { .. } | TlsSetupError::NoAnchor => ca_path,
                TlsSetupError::ClientCert(_) => at(p, &[key("key")]),
                TlsSetupError::Protocol(_) => p.to_vec(),
            };
            c.error(&which, e.to_string());
            return None;
        }
    };
    Some(UpstreamTlsConfig {
        ca,
        sni,
        cert,
        key: key_path,
        client_config: Arc::new(client_config),
        server_name,
        contents: Arc::new([ca_pem.unwrap_or_default(), cert_pem, key_pem]),
    })
}

/// The bytes of `file`, or an error at `path`.
fn read(c: &mut Checker<'_>, path: &[Seg], file: &Path) -> Option<Vec<u8>> {
    std::fs::read(file)
        .map_err(|e| c.error(path, format!("{} cannot be read: {e}", file.display())))
        .ok()
}

/// The PEM certificates in `pem` (read from `file`), or an error at `path` when there are none
/// or one is malformed.
fn certificates(
    c: &mut Checker<'_>,
    path: &[Seg],
    file: &Path,
    pem: &[u8],
) -> Option<Vec<CertificateDer<'static>>> {
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            c.error(
                path,
                format!("{}: no PEM certificate (`-----BEGIN CERTIFICATE-----`)", file.display()),
            );
            None
        }
        Err(e) => {
            c.error(path, format!("{}: {e}", file.display()));
            None
        }
    }
}

/// ALPN name of HTTP/2 (an http2 cluster's upstream must choose it: `upstream::tls`).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN name of HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Where the system's CA bundle is looked for, in order, when `SSL_CERT_FILE` is not set:
/// Debian and Ubuntu, Fedora and RHEL, openSUSE, Alpine.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's CA bundle: `ssl_cert_file` (the `SSL_CERT_FILE` environment variable, as
/// OpenSSL reads it) when set, else the first of `candidates` that exists.
fn system_bundle(ssl_cert_file: Option<OsString>, candidates: &[&str]) -> Result<PathBuf, String> {
    if let Some(file) = ssl_cert_file.filter(|f| !f.is_empty()) {
        return Ok(PathBuf::from(file));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "no `ca` given and no system CA bundle found (looked for {}; install the              ca-certificates package, set SSL_CERT_FILE, or name the bundle with `ca`)",
            candidates.join(", ")
        )
    })
}

/// Why a cluster's TLS client could not be built from its files' contents.
#[derive(Debug, thiserror::Error)]
enum TlsSetupError {
    /// A certificate of the CA bundle is not usable as a trust anchor.
    #[error("certificate {index} of the CA bundle is not a usable CA certificate: {source}")]
    Anchor {
        /// Its position in the bundle, from 1.
        index: usize,
        /// What rustls said.
        source: rustls::Error,
    },
    /// No certificate of the system's bundle is usable as a trust anchor.
    #[error("no certificate of the system CA bundle is usable as a trust anchor")]
    NoAnchor,
    /// The client certificate chain and key were refused (unsupported key, or a key that does
    /// not belong to the certificate).
    #[error("the client certificate and key cannot be used together: {0}")]
    ClientCert(rustls::Error),
    /// The crypto provider refused the default protocol versions (not expected with `ring`).
    #[error("{0}")]
    Protocol(rustls::Error),
}

/// The client certificate a cluster presents: its chain (leaf first) and private key.
struct ClientIdentity {
    /// Certificate chain, leaf first.
    chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    key: PrivateKeyDer<'static>,
}

/// Builds the rustls client configuration of one cluster: certificates verified against
/// `roots` only, ALPN for `protocol`, and `client` presented when the upstream asks for a
/// certificate. `system`: the roots are the system's bundle, whose unusable certificates are
/// skipped rather than refused.
fn client_config(
    roots: &[CertificateDer<'static>],
    client: Option<ClientIdentity>,
    protocol: UpstreamProtocol,
    system: bool,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut store = rustls::RootCertStore::empty();
    if system {
        store.add_parsable_certificates(roots.iter().cloned());
        if store.is_empty() {
            return Err(TlsSetupError::NoAnchor);
        }
    } else {
        for (i, cert) in roots.iter().enumerate() {
            store
                .add(cert.clone())
                .map_err(|source| TlsSetupError::Anchor { index: i + 1, source })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Protocol)?
        .with_root_certificates(store);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .map_err(TlsSetupError::ClientCert)?,
    };
    config.alpn_protocols = vec![alpn(protocol).to_vec()];
    Ok(config)
}

fn alpn(protocol: UpstreamProtocol) -> &'static [u8] {
    match protocol {
        UpstreamProtocol::Http1 => ALPN_HTTP1,
        UpstreamProtocol::Http2 => ALPN_H2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_bundle_is_ssl_cert_file_else_the_first_bundle_that_exists() {
        let named = system_bundle(Some("/etc/custom.pem".into()), &["/nonexistent"]);
        assert_eq!(named.unwrap(), PathBuf::from("/etc/custom.pem"));
        let here = std::env::temp_dir().join(format!("spillway-bundle-{}", std::process::id()));
        std::fs::write(&here, "").unwrap();
        let found = system_bundle(Some("".into()), &["/nonexistent", here.to_str().unwrap()]);
        assert_eq!(found.unwrap(), here, "an empty SSL_CERT_FILE counts as unset");
        let _ = std::fs::remove_file(&here);
        let missing = system_bundle(None, &["/nonexistent/a.pem", "/nonexistent/b.pem"]);
        let message = missing.unwrap_err();
        assert!(message.contains("/nonexistent/a.pem, /nonexistent/b.pem"), "{message}");
        assert!(message.contains("SSL_CERT_FILE"), "{message}");
    }
}
