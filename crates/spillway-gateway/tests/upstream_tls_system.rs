//! A cluster's `tls:` without `ca` trusts the system's CA bundle: `SSL_CERT_FILE` when set (as
//! OpenSSL reads it), else the distribution's bundle. A binary of its own without the test
//! harness (`harness = false`): it runs itself again with `SSL_CERT_FILE` set for that whole
//! process (setting it in a running process is unsafe, which the workspace forbids).
//!
//! Pins that an upstream whose certificate chains to a CA of that bundle is reached over TLS,
//! that certificates of the bundle which cannot be trust anchors are skipped (a distribution's
//! bundle is taken as it is), and that an upstream from a CA outside it is refused (502).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;

/// An HTTP/1.1-over-TLS upstream on loopback answering `over tls` with `cert`.
async fn tls_upstream(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![cert];
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            "over tls",
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// Set in the environment of the second run: the PEM files of a certificate for
/// `users.internal` issued by the bundle's root, and of its key.
const LEAF: &str = "SPILLWAY_TEST_SYSTEM_LEAF";

fn main() {
    match std::env::var_os(LEAF) {
        None => {
            // First run: a bundle as a distribution ships it — a certificate rustls cannot take
            // as an anchor (malformed DER), then the trusted root — and the second run on it.
            let trusted = Pki::new("System Root");
            let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
            let bundle = write_temp("system-bundle.pem", &format!("{junk}{}", trusted.ca.pem()));
            let (cert, key) = trusted.issue("users.internal", &["users.internal"]);
            let cert = write_temp("system-leaf.pem", &cert.pem());
            let key = write_temp("system-leaf.key", &key.serialize_pem());
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .env("SSL_CERT_FILE", &bundle)
                .env(LEAF, format!("{cert}\n{key}"))
                .status()
                .unwrap();
            assert!(status.success(), "the run with SSL_CERT_FILE failed: {status}");
            println!("test a_cluster_without_ca_trusts_the_system_bundle ... ok");
        }
        Some(files) => {
            let files = files.into_string().unwrap();
            let (cert, key) = files.split_once('\n').unwrap();
            let cert = CertificateDer::from_pem_file(cert).unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            a_cluster_without_ca_trusts_the_system_bundle(cert, key);
        }
    }
}

fn a_cluster_without_ca_trusts_the_system_bundle(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) {
    let outsider = Pki::new("Unknown Root");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let good = tls_upstream(cert, key).await;
        let (cert, key) = outsider.issue("users.internal", &["users.internal"]);
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let bad = tls_upstream(cert.der().clone(), key).await;
        let cluster = |name: &str, addr: SocketAddr| {
            format!(
                "  - {{ name: {name}, endpoints: [{{ address: \"{addr}\" }}], \
                 timeouts: {{ connect: 2s, request: 5s }}, tls: {{ sni: users.internal }} }}\n"
            )
        };
        let yaml = format!(
            "workers: 1\nlisteners: [{{ name: lean, address: \"127.0.0.1:0\", protocol: http1 }}]\n\
             clusters:\n{}{}\
             routes:\n  - {{ name: good, match: {{ path_prefix: /good }}, cluster: good }}\n  \
             - {{ name: bad, match: {{ path_prefix: /bad }}, cluster: bad }}\n",
            cluster("good", good),
            cluster("bad", bad),
        );
        let gw = gateway(&yaml);
        let addr = gw.listener_address("lean").unwrap();
        let get = |path: &'static str| {
            let req = Request::get(path).header("host", "test.local").body(body("")).unwrap();
            h1(addr, req)
        };
        let (status, _, bytes) = get("/good").await;
        assert_eq!((status, &bytes[..]), (StatusCode::OK, &b"over tls"[..]));
        let (status, _, _) = get("/bad").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "a root outside the bundle is not trusted");
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    });
}
