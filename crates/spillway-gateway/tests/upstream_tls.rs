//! Upstream TLS end to end: real TLS upstreams (tokio-rustls + hyper, HTTP/1.1 and HTTP/2 by
//! ALPN) on loopback behind a real gateway, reached from both data paths. Pins that the
//! configured SNI and ALPN reach the upstream, that a certificate from another CA or for
//! another name is refused before any request is sent (502), that the client certificate is
//! presented only when configured, that health checks, WebSocket tunnels and failback
//! deliveries speak TLS, that pooled TLS and plain connections never mix, that a reload keeps
//! an unchanged connector, and that a `tls:` block with a bad file, a certificate without its
//! key or a bad server name is an error at its key and line (a reload with one is refused).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use spillway_gateway::Config;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a TLS upstream saw of one accepted handshake.
#[derive(Debug, Clone)]
struct Handshake {
    sni: Option<String>,
    alpn: Option<String>,
    client_cert: bool,
}

/// What a TLS upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    /// The request's scheme as the upstream received it (HTTP/2's `:scheme`).
    scheme: Option<String>,
    path: String,
    user_agent: String,
}

/// A TLS upstream on loopback and what it saw.
struct TlsUpstream {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    refused_handshakes: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<Seen>>>,
}

impl TlsUpstream {
    /// Serves HTTP/1.1 and HTTP/2 (chosen by ALPN) with `cert`; requires a client certificate
    /// from `client_ca` when given.
    async fn start(
        cert: &rcgen::Certificate,
        key: &rcgen::KeyPair,
        client_ca: Option<&rcgen::Certificate>,
    ) -> TlsUpstream {
        TlsUpstream::start_on("127.0.0.1:0".parse().unwrap(), cert, key, client_ca).await
    }

    /// [`TlsUpstream::start`] on `addr`.
    async fn start_on(
        addr: SocketAddr,
        cert: &rcgen::Certificate,
        key: &rcgen::KeyPair,
        client_ca: Option<&rcgen::Certificate>,
    ) -> TlsUpstream {
        TlsUpstream::serve(addr, cert, key, client_ca, &[b"h2", b"http/1.1"]).await
    }

    /// A TLS upstream on `addr` whose ALPN accepts only `alpn` (none: no ALPN; it then serves
    /// HTTP/1.1 or HTTP/2 by what the client sends).
    async fn serve(
        addr: SocketAddr,
        cert: &rcgen::Certificate,
        key: &rcgen::KeyPair,
        client_ca: Option<&rcgen::Certificate>,
        alpn: &[&[u8]],
    ) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let upstream = TlsUpstream {
            addr: listener.local_addr().unwrap(),
            handshakes: Arc::default(),
            refused_handshakes: Arc::default(),
            requests: Arc::default(),
        };
        let (handshakes, refused, requests) = (
            upstream.handshakes.clone(),
            upstream.refused_handshakes.clone(),
            upstream.requests.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, handshakes, refused, requests) =
                    (acceptor.clone(), handshakes.clone(), refused.clone(), requests.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            refused.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    let conn = tls.get_ref().1;
                    handshakes.lock().unwrap().push(Handshake {
                        sni: conn.server_name().map(str::to_string),
                        alpn: conn.alpn_protocol().map(|a| String::from_utf8_lossy(a).into_owned()),
                        client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                    });
                    let svc = hyper::service::service_fn(move |mut req: Request<_>| {
                        let requests = requests.clone();
                        async move {
                            let user_agent = req
                                .headers()
                                .get("user-agent")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            requests.lock().unwrap().push(Seen {
                                version: req.version(),
                                scheme: req.uri().scheme_str().map(str::to_string),
                                path: req.uri().path().to_string(),
                                user_agent,
                            });
                            if req.uri().path() == "/ws" {
                                return Ok(echo_upgrade(&mut req));
                            }
                            let body = format!("over tls, {:?}", req.version());
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        upstream
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

/// Answers a WebSocket upgrade with 101, then echoes the tunnel's bytes.
fn echo_upgrade(req: &mut Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A gateway with an HTTP/1.1 listener (the lean path) and an h2c one (hyper's path), one
/// route per `(path prefix, cluster)`, and `clusters` as YAML list items.
struct Gw {
    gw: Option<spillway_gateway::Gateway>,
    lean: SocketAddr,
    h2: SocketAddr,
}

const LISTENERS: &str = r#"
workers: 1
listeners:
  - { name: lean, address: "127.0.0.1:0", protocol: http1 }
  - { name: h2, address: "127.0.0.1:0", protocol: h2c }
"#;

fn routes_yaml(routes: &[(&str, &str)]) -> String {
    let mut out = String::from("routes:\n");
    for (prefix, cluster) in routes {
        out.push_str(&format!(
            "  - {{ name: {cluster}, match: {{ path_prefix: {prefix} }}, cluster: {cluster} }}\n"
        ));
    }
    out
}

impl Gw {
    fn start(clusters: &str, routes: &[(&str, &str)]) -> Gw {
        let yaml = format!("{LISTENERS}clusters:\n{clusters}{}", routes_yaml(routes));
        let gw = gateway(&yaml);
        Gw {
            lean: gw.listener_address("lean").unwrap(),
            h2: gw.listener_address("h2").unwrap(),
            gw: Some(gw),
        }
    }

    /// GET `path` through the lean listener (`lean`) or the h2c one; status and body.
    async fn get(&self, lean: bool, path: &str) -> (StatusCode, String) {
        let req = Request::get(path).header("host", "test.local").body(body("")).unwrap();
        let (status, _, bytes) =
            if lean { h1(self.lean, req).await } else { h2c(self.h2, req).await };
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn stop(mut self) {
        let gw = self.gw.take().unwrap();
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

/// A cluster list item reaching `addr` over TLS.
fn tls_cluster(name: &str, protocol: &str, addr: SocketAddr, tls: &str) -> String {
    format!(
        "  - {{ name: {name}, protocol: {protocol}, endpoints: [{{ address: \"{addr}\" }}], \
         timeouts: {{ connect: 2s, request: 5s }}, tls: {{ {tls} }} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_clusters_reach_a_tls_upstream_with_the_configured_sni_and_alpn() {
    let pki = Pki::new("upstream ca");
    let (cert, key) = pki.issue("upstream", &["localhost", "127.0.0.1", "payments.internal"]);
    let up = TlsUpstream::start(&cert, &key, None).await;
    let ca = pki.ca_file();
    let clusters =
        tls_cluster("one", "http1", up.addr, &format!("ca: \"{ca}\", sni: payments.internal"))
            + &tls_cluster("two", "http2", up.addr, &format!("ca: \"{ca}\", sni: localhost"));
    let gw = Gw::start(&clusters, &[("/one", "one"), ("/two", "two")]);

    for lean in [true, false] {
        let (status, body) = gw.get(lean, "/one").await;
        assert_eq!(status, StatusCode::OK, "lean={lean}: {body}");
        assert_eq!(body, "over tls, HTTP/1.1");
        let (status, body) = gw.get(lean, "/two").await;
        assert_eq!(status, StatusCode::OK, "lean={lean}: {body}");
        assert_eq!(body, "over tls, HTTP/2.0");
    }
    let requests = up.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for r in &requests {
        let expected = if r.path == "/one" { Version::HTTP_11 } else { Version::HTTP_2 };
        assert_eq!(r.version, expected, "{r:?}");
        if r.version == Version::HTTP_2 {
            assert_eq!(r.scheme.as_deref(), Some("https"), "HTTP/2 over TLS says so: {r:?}");
        }
    }
    let handshakes = up.handshakes();
    assert!(!handshakes.is_empty());
    for h in &handshakes {
        match h.alpn.as_deref() {
            Some("http/1.1") => assert_eq!(h.sni.as_deref(), Some("payments.internal"), "{h:?}"),
            Some("h2") => assert_eq!(h.sni.as_deref(), Some("localhost"), "{h:?}"),
            other => panic!("ALPN {other:?} was not offered by the gateway: {h:?}"),
        }
        assert!(!h.client_cert, "no client certificate configured: none presented");
    }
    // Both clusters connected over TLS; connections are pooled, so at most one per cluster
    // and worker would be needed, but a closed one may have been replaced.
    assert!(handshakes.iter().any(|h| h.alpn.as_deref() == Some("h2")));
    assert!(handshakes.iter().any(|h| h.alpn.as_deref() == Some("http/1.1")));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_tunnels_over_tls_to_the_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("upstream ca");
    let (cert, key) = pki.issue("upstream", &["localhost"]);
    let up = TlsUpstream::start(&cert, &key, None).await;
    let ca = pki.ca_file();
    let clusters = tls_cluster("ws", "http1", up.addr, &format!("ca: \"{ca}\", sni: localhost"));
    let gw = Gw::start(&clusters, &[("/", "ws")]);
    let mut s = tokio::net::TcpStream::connect(gw.lean).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    s.write_all(b"ping through tls").await.unwrap();
    let mut echoed = vec![0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"ping through tls");
    assert_eq!(up.handshakes().len(), 1, "the tunnel is the TLS connection");
    assert_eq!(up.handshakes()[0].alpn.as_deref(), Some("http/1.1"));
    drop(s);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_cluster_refuses_an_upstream_that_does_not_choose_h2_by_alpn() {
    let pki = Pki::new("upstream ca");
    let (cert, key) = pki.issue("upstream", &["localhost"]);
    let addr = "127.0.0.1:0".parse().unwrap();
    // No ALPN at all (an upstream offering only http/1.1 is refused by rustls itself).
    let up = TlsUpstream::serve(addr, &cert, &key, None, &[]).await;
    let ca = pki.ca_file();
    let tls = format!("ca: \"{ca}\", sni: localhost");
    let clusters = tls_cluster("two", "http2", up.addr, &tls);
    let gw = Gw::start(&clusters, &[("/", "two")]);
    for lean in [true, false] {
        let (status, body) = gw.get(lean, "/x").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "lean={lean}: {body}");
    }
    assert!(up.requests().is_empty(), "nothing was sent: {:?}", up.requests());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_cluster_never_reuses_a_tls_connection_to_the_same_endpoint() {
    let pki = Pki::new("upstream ca");
    let (cert, key) = pki.issue("upstream", &["localhost"]);
    let up = TlsUpstream::start(&cert, &key, None).await;
    let ca = pki.ca_file();
    let clusters =
        tls_cluster("secure", "http1", up.addr, &format!("ca: \"{ca}\", sni: localhost"))
            + &format!("  - {{ name: plain, endpoints: [{{ address: \"{}\" }}] }}\n", up.addr);
    let gw = Gw::start(&clusters, &[("/secure", "secure"), ("/plain", "plain")]);
    // One worker: the TLS connection made for `secure` sits idle in the pool the plain cluster
    // looks in. Plain HTTP to a TLS port fails; reusing the TLS connection would not.
    assert_eq!(gw.get(false, "/secure").await.0, StatusCode::OK);
    assert_eq!(gw.get(false, "/plain").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(gw.get(false, "/secure").await.0, StatusCode::OK);
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/secure", "/secure"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_from_another_ca_or_for_another_name_is_refused_with_502() {
    let trusted = Pki::new("trusted ca");
    let rogue = Pki::new("rogue ca");
    let (rogue_cert, rogue_key) = rogue.issue("upstream", &["localhost", "127.0.0.1"]);
    let impostor = TlsUpstream::start(&rogue_cert, &rogue_key, None).await;
    let (cert, key) = trusted.issue("upstream", &["localhost", "127.0.0.1"]);
    let genuine = TlsUpstream::start(&cert, &key, None).await;
    let ca = trusted.ca_file();
    let clusters =
        tls_cluster("rogue", "http1", impostor.addr, &format!("ca: \"{ca}\", sni: localhost"))
            + &tls_cluster(
                "rogue2",
                "http2",
                impostor.addr,
                &format!("ca: \"{ca}\", sni: localhost"),
            )
            + &tls_cluster(
                "misnamed",
                "http1",
                genuine.addr,
                &format!("ca: \"{ca}\", sni: other.internal"),
            )
            + &tls_cluster("good", "http1", genuine.addr, &format!("ca: \"{ca}\", sni: localhost"));
    let gw = Gw::start(
        &clusters,
        &[("/rogue2", "rogue2"), ("/rogue", "rogue"), ("/misnamed", "misnamed"), ("/good", "good")],
    );

    for lean in [true, false] {
        for path in ["/rogue", "/rogue2", "/misnamed"] {
            let (status, body) = gw.get(lean, path).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "lean={lean} {path}: {body}");
        }
        // The same upstream with the right name is served: the refusal was the name.
        assert_eq!(gw.get(lean, "/good").await.0, StatusCode::OK);
    }
    assert!(impostor.requests().is_empty(), "no request reached the impostor");
    assert!(impostor.handshakes().is_empty(), "the gateway aborted every handshake");
    assert!(!impostor.refused_handshakes.lock().unwrap().is_empty());
    let reached: Vec<String> = genuine.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(reached, vec!["/good", "/good"], "the misnamed cluster sent nothing");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_certificate_is_presented_when_configured_and_refused_without_it() {
    let servers = Pki::new("upstream ca");
    let (cert, key) = servers.issue("upstream", &["localhost"]);
    let clients = Pki::new("gateway clients ca");
    let (gateway_cert, gateway_key) = clients.issue("spillway", &["gateway.internal"]);
    let up = TlsUpstream::start(&cert, &key, Some(clients.ca.as_ref())).await;
    let ca = servers.ca_file();
    let cert_file = write_temp("gateway.pem", &gateway_cert.pem());
    let key_file = write_temp("gateway.key", &gateway_key.serialize_pem());
    let with = format!("ca: \"{ca}\", sni: localhost, cert: \"{cert_file}\", key: \"{key_file}\"");
    let clusters = tls_cluster("with", "http1", up.addr, &with)
        + &tls_cluster("with2", "http2", up.addr, &with)
        + &tls_cluster("without", "http1", up.addr, &format!("ca: \"{ca}\", sni: localhost"));
    let gw =
        Gw::start(&clusters, &[("/without", "without"), ("/with2", "with2"), ("/with", "with")]);

    for lean in [true, false] {
        let (status, body) = gw.get(lean, "/with").await;
        assert_eq!(status, StatusCode::OK, "lean={lean}: {body}");
        let (status, body) = gw.get(lean, "/with2").await;
        assert_eq!(status, StatusCode::OK, "lean={lean}: {body}");
        let (status, body) = gw.get(lean, "/without").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "lean={lean}: {body}");
    }
    let handshakes = up.handshakes();
    assert!(!handshakes.is_empty());
    assert!(handshakes.iter().all(|h| h.client_cert), "{handshakes:?}");
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert!(!paths.iter().any(|p| p == "/without"), "{paths:?}");
    assert_eq!(paths.len(), 4, "{paths:?}");
    assert!(!up.refused_handshakes.lock().unwrap().is_empty(), "the upstream refused the other");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_probe_tls_clusters_over_tls_with_their_protocol() {
    let pki = Pki::new("upstream ca");
    let (cert, key) = pki.issue("upstream", &["localhost"]);
    let up = TlsUpstream::start(&cert, &key, None).await;
    let ca = pki.ca_file();
    let check = "health_check: { path: /healthz, interval: 50ms, timeout: 1s }";
    let cluster = |name: &str, protocol: &str| {
        format!(
            "  - {{ name: {name}, protocol: {protocol}, endpoints: [{{ address: \"{}\" }}], \
             {check}, tls: {{ ca: \"{ca}\", sni: localhost }} }}\n",
            up.addr
        )
    };
    let gw = Gw::start(&(cluster("one", "http1") + &cluster("two", "http2")), &[("/", "one")]);
    let probes = |version: Version| {
        up.requests()
            .iter()
            .filter(|r| {
                r.path == "/healthz" && r.user_agent == "spillway-health" && r.version == version
            })
            .count()
    };
    eventually(Duration::from_secs(10), "HTTP/1.1 and HTTP/2 probes over TLS", || {
        probes(Version::HTTP_11) >= 2 && probes(Version::HTTP_2) >= 2
    })
    .await;
    assert!(up.handshakes().iter().all(|h| h.sni.as_deref() == Some("localhost")));
    // Healthy by the probes: requests are still served.
    assert_eq!(gw.get(true, "/x").await.0, StatusCode::OK);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_an_unchanged_tls_connector_and_refuse_an_unreadable_ca() {
    let pki = Pki::new("upstream ca");
    let (cert, key) = pki.issue("upstream", &["localhost"]);
    let up = TlsUpstream::start(&cert, &key, None).await;
    let ca = pki.ca_file();
    let path = temp_path("upstream-tls.yaml");
    let write = |ca: &str| {
        let clusters =
            tls_cluster("one", "http1", up.addr, &format!("ca: \"{ca}\", sni: localhost"));
        std::fs::write(
            &path,
            format!("{LISTENERS}clusters:\n{clusters}{}", routes_yaml(&[("/", "one")])),
        )
        .unwrap();
    };
    write(&ca);
    let gw = gateway_from_file(&path);
    let lean = gw.listener_address("lean").unwrap();
    assert_eq!(get(lean, "/a").await.0, StatusCode::OK);
    assert_eq!(up.handshakes().len(), 1);
    // Nothing changed: the connector and its pooled connection are kept (one worker).
    assert_eq!(gw.control().reload("test"), Ok(2));
    assert_eq!(get(lean, "/b").await.0, StatusCode::OK);
    assert_eq!(up.handshakes().len(), 1, "the pooled TLS connection served again");
    // An unreadable CA bundle: refused, and the running config keeps serving.
    write("/nonexistent/ca.pem");
    let err = gw.control().reload("test").unwrap_err();
    assert!(err.contains("clusters[0].tls.ca") && err.contains("cannot be read"), "{err}");
    assert_eq!(get(lean, "/c").await.0, StatusCode::OK, "the running config still serves");
    // Other settings (the bundle from another file): a new connector, a new connection.
    write(&pki.ca_file());
    assert_eq!(gw.control().reload("test"), Ok(3));
    assert_eq!(get(lean, "/d").await.0, StatusCode::OK);
    assert_eq!(up.handshakes().len(), 2);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_delivers_queued_requests_to_a_tls_cluster_over_tls() {
    let pki = Pki::new("upstream ca");
    let (cert, key) = pki.issue("upstream", &["localhost"]);
    let ca = pki.ca_file();
    // Nothing listens there yet: the request is queued, then delivered once the upstream is up.
    let reserved = refusing_address();
    let addr = reserved.address;
    let dir = temp_path("tls-failback");
    let yaml = format!(
        "{LISTENERS}clusters:\n{}routes:\n  - name: orders\n    cluster: orders\n    \
         failback: {{ dir: \"{}\", backoff: {{ base: 100ms, max: 200ms }} }}\n",
        tls_cluster("orders", "http1", addr, &format!("ca: \"{ca}\", sni: localhost")),
        dir.display()
    );
    let gw = gateway(&yaml);
    let lean = gw.listener_address("lean").unwrap();
    let req = Request::post("/orders").header("host", "test.local").body(body("{}")).unwrap();
    assert_eq!(h1(lean, req).await.0, StatusCode::ACCEPTED);
    drop(reserved);
    let up = TlsUpstream::start_on(addr, &cert, &key, None).await;
    eventually(Duration::from_secs(10), "the queued request delivered over TLS", || {
        up.requests().iter().any(|r| r.path == "/orders")
    })
    .await;
    assert!(up.handshakes().iter().all(|h| h.sni.as_deref() == Some("localhost")));
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// Problems of config text whose relative paths resolve against `base`.
fn problems(yaml: &str, base: &Path) -> Vec<spillway_gateway::Problem> {
    match Config::parse(yaml, "test.yaml", base) {
        Ok(_) => panic!("expected errors in:\n{yaml}"),
        Err(e) => e.problems().to_vec(),
    }
}

fn one_cluster(tls: &str, extra: &str) -> String {
    format!(
        "listeners: [{{ name: l, address: \"127.0.0.1:0\" }}]\n\
         clusters:\n\
         \x20 - name: c\n\
         \x20   endpoints: [{{ address: \"127.0.0.1:9\" }}]\n{extra}\
         \x20   tls:\n{tls}\
         routes: [{{ name: r, cluster: c }}]\n"
    )
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[test]
fn tls_config_errors_name_their_key_and_line() {
    let dir = temp_path("tls-config");
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new("ca");
    let (cert, key) = pki.issue("gw", &["gw.internal"]);
    let (_, other_key) = pki.issue("other", &["other.internal"]);
    std::fs::write(dir.join("ca.pem"), pki.ca.pem()).unwrap();
    std::fs::write(dir.join("gw.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("gw.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("other.key"), other_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();

    // Relative paths resolve against the config's directory: this one is valid.
    let good = one_cluster(
        "      ca: ca.pem\n      sni: payments.internal\n      cert: gw.pem\n      key: gw.key\n",
        "",
    );
    let config = Config::parse(&good, "test.yaml", &dir).unwrap_or_else(|e| panic!("{e}"));
    let tls = config.clusters[0].tls.as_ref().unwrap();
    assert_eq!(tls.ca, dir.join("ca.pem"));
    assert_eq!(tls.sni, "payments.internal");

    let cases: &[(&str, &str, &str, &str)] = &[
        // (tls block, key, line containing, reason containing)
        (
            "      ca: missing.pem\n      sni: a.internal\n",
            "clusters[0].tls.ca",
            "ca: missing",
            "cannot be read",
        ),
        (
            "      ca: empty.pem\n      sni: a.internal\n",
            "clusters[0].tls.ca",
            "ca: empty",
            "no PEM certificate",
        ),
        (
            "      ca: ca.pem\n      sni: a.internal\n      cert: gw.pem\n",
            "clusters[0].tls.cert",
            "cert: gw",
            "needs its private key",
        ),
        (
            "      ca: ca.pem\n      sni: a.internal\n      key: gw.key\n",
            "clusters[0].tls.key",
            "key: gw",
            "needs its client certificate",
        ),
        (
            "      ca: ca.pem\n      sni: \"bad name!\"\n",
            "clusters[0].tls.sni",
            "sni: \"bad",
            "not a server name",
        ),
        ("      ca: ca.pem\n", "clusters[0].tls", "tls:", "`sni` is required"),
        (
            "      ca: ca.pem\n      sni: a.internal\n      cert: gw.pem\n      key: other.key\n",
            "clusters[0].tls.key",
            "key: other",
            "cannot be used together",
        ),
        (
            "      ca: ca.pem\n      sni: a.internal\n      cert: gw.pem\n      key: gw.pem\n",
            "clusters[0].tls.key",
            "key: gw.pem",
            "no usable private key",
        ),
    ];
    for (block, key, line, reason) in cases {
        let yaml = one_cluster(block, "");
        let p = problems(&yaml, &dir);
        assert_eq!(p.len(), 1, "{block}: {p:?}");
        assert_eq!(p[0].key, *key, "{block}: {p:?}");
        assert_eq!(p[0].line, line_of(&yaml, line), "{block}: {p:?}");
        assert!(p[0].reason.contains(reason), "{block}: {p:?}");
    }

    // Without `ca`, the system's bundle (tests/upstream_tls_system.rs connects with one):
    // SSL_CERT_FILE when set, else Debian's (scripts/test installs ca-certificates).
    let config = Config::parse(&one_cluster("      sni: a.internal\n", ""), "test.yaml", &dir)
        .unwrap_or_else(|e| panic!("{e}"));
    let system = std::env::var_os("SSL_CERT_FILE")
        .filter(|f| !f.is_empty())
        .map_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into(), std::path::PathBuf::from);
    assert_eq!(config.clusters[0].tls.as_ref().unwrap().ca, system);

    // With DNS discovery the server name defaults to the discovered name.
    let dns = "    discovery: { dns: { name: payments.internal, port: 443 } }\n";
    let config = Config::parse(&one_cluster("      ca: ca.pem\n", dns), "test.yaml", &dir)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.clusters[0].tls.as_ref().unwrap().sni, "payments.internal");

    // An IP address is a server name too (verified against the certificate's IP addresses).
    let config = Config::parse(
        &one_cluster("      ca: ca.pem\n      sni: 10.0.0.7\n", ""),
        "test.yaml",
        &dir,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.clusters[0].tls.as_ref().unwrap().sni, "10.0.0.7");
}
