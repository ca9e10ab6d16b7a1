//! TLS termination: rustls (ring provider) with ALPN offering `h2` and `http/1.1`, and client
//! certificates (mTLS) verified against a CA bundle when the listener asks for them — their
//! subject and first subject alternative name forwarded upstream in configured headers.

use crate::config::{ClientCertConfig, TlsConfig};
use crate::proxy::conn_info::ClientCertFields;
use http::{HeaderName, HeaderValue};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Builds an acceptor from PEM files.
pub fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs = certificates(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("{}: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(&client.ca)? {
                roots.add(cert).map_err(|e| format!("{}: {e}", client.ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier =
                if client.required { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|e| format!("{}: {e}", client.ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_single_cert(certs, key).map_err(|e| format!("{}: {e}", tls.cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What the upstream is told of the client's certificate on a listener with `client_ca`: the
/// configured headers are always cleared of what the client sent (no spoofing), then set from
/// the verified certificate when there is one.
pub fn client_cert_fields(
    client: &ClientCertConfig,
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> ClientCertFields {
    let name =
        |n: &Option<String>| n.as_deref().and_then(|n| HeaderName::from_bytes(n.as_bytes()).ok());
    let subject_header = name(&client.forward_subject);
    let san_header = name(&client.forward_san);
    let mut fields = ClientCertFields {
        names: subject_header.iter().chain(&san_header).cloned().collect(),
        values: Vec::new(),
    };
    let Some(leaf) = peer_certificates.and_then(|c| c.first()) else { return fields };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else { return fields };
    if let Some(header) = subject_header {
        if let Ok(v) = HeaderValue::from_str(&cert.subject().to_string()) {
            fields.values.push((header, v));
        }
    }
    if let Some(header) = san_header {
        let san = cert.subject_alternative_name().ok().flatten().and_then(|ext| {
            ext.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(s)
                | x509_parser::extensions::GeneralName::URI(s)
                | x509_parser::extensions::GeneralName::RFC822Name(s) => Some(s.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => {
                        <[u8; 4]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string())
                    }
                    16 => <[u8; 16]>::try_from(*ip)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => None,
                },
                _ => None,
            })
        });
        if let Some(v) = san.and_then(|s| HeaderValue::from_str(&s).ok()) {
            fields.values.push((header, v));
        }
    }
    fields
}
