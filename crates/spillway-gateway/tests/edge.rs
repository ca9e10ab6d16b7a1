//! The edge, end to end on both data paths: IP allow/deny lists on listeners and routes
//! (behind a trusted proxy too), request limits (413, 414, 431) and CORS (a preflight from an
//! allowed and from a refused origin, a cross-origin request decorated).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{HeaderMap, Method, Request, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Lean,
    Hyper,
}

struct Gw {
    gw: Option<spillway_gateway::Gateway>,
    lean: SocketAddr,
    h2: SocketAddr,
    backend: Arc<BackendState>,
}

impl Gw {
    async fn start(listener_extra: &str, top: &str, routes: &str) -> Gw {
        let (b, backend) = backend("app").await;
        let yaml = format!(
            r#"
workers: 1
listeners:
  - {{ name: lean, address: "127.0.0.1:0", protocol: http1{listener_extra} }}
  - {{ name: h2, address: "127.0.0.1:0", protocol: h2c{listener_extra} }}
clusters:
  - name: app
    endpoints: [{{ address: "{b}" }}]
routes:
{routes}
{top}
"#
        );
        let gw = gateway(&yaml);
        Gw {
            lean: gw.listener_address("lean").unwrap(),
            h2: gw.listener_address("h2").unwrap(),
            gw: Some(gw),
            backend,
        }
    }

    async fn send(
        &self,
        via: Via,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        payload: &'static [u8],
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(path).header("host", "test.local");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body(payload)).unwrap();
        let (status, headers, body) = match via {
            Via::Lean => h1(self.lean, req).await,
            Via::Hyper => h2c(self.h2, req).await,
        };
        (status, headers, String::from_utf8_lossy(&body).into_owned())
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

const BOTH: [Via; 2] = [Via::Lean, Via::Hyper];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_network_behind_a_trusted_proxy_is_refused_on_both_paths() {
    let gw = Gw::start(
        "",
        "trusted_proxies: [127.0.0.0/8]",
        "  - name: open\n    match: { path_prefix: /open }\n    cluster: app\n  - name: api\n    cluster: app\n    ip: { deny: [203.0.113.0/24] }\n",
    )
    .await;
    for via in BOTH {
        let denied = [("x-forwarded-for", "203.0.113.9")];
        let (status, _, body) = gw.send(via, Method::GET, "/x", &denied, b"").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{via:?}");
        assert!(body.contains("ip_denied"), "{body}");
        let other = [("x-forwarded-for", "198.51.100.1")];
        assert_eq!(gw.send(via, Method::GET, "/x", &other, b"").await.0, StatusCode::OK);
        // Another route has no list: the same client passes.
        assert_eq!(gw.send(via, Method::GET, "/open", &denied, b"").await.0, StatusCode::OK);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_allow_list_keeps_out_every_other_client_before_routing() {
    // The test client is 127.0.0.1: an allow list without it refuses everything, even paths no
    // route matches; one with it lets it in.
    let gw =
        Gw::start(", ip: { allow: [10.0.0.0/8] }", "", "  - name: api\n    cluster: app\n").await;
    let hits = gw.backend.hits();
    for via in BOTH {
        let (status, _, body) = gw.send(via, Method::GET, "/x", &[], b"").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{via:?}: {body}");
    }
    assert_eq!(gw.backend.hits(), hits, "nothing reached the backend");
    gw.stop().await;
    let gw =
        Gw::start(", ip: { allow: [127.0.0.0/8] }", "", "  - name: api\n    cluster: app\n").await;
    for via in BOTH {
        assert_eq!(gw.send(via, Method::GET, "/x", &[], b"").await.0, StatusCode::OK, "{via:?}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_answer_413_414_and_431_on_both_paths() {
    let gw = Gw::start(
        "",
        "",
        "  - name: api\n    cluster: app\n    request_limits: { max_body: 1KB, max_uri: 40, max_headers: 12 }\n",
    )
    .await;
    let many: Vec<(String, String)> = (0..14).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let hits = gw.backend.hits();
    for via in BOTH {
        let big: &'static [u8] = &[b'x'; 2048];
        assert_eq!(
            gw.send(via, Method::POST, "/x", &[], big).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let long = format!("/{}", "a".repeat(60));
        assert_eq!(gw.send(via, Method::GET, &long, &[], b"").await.0, StatusCode::URI_TOO_LONG);
        let (status, _, body) = gw.send(via, Method::GET, "/x", &many, b"").await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{via:?}: {body}");
    }
    assert_eq!(gw.backend.hits(), hits, "no refused request reached the backend");
    for via in BOTH {
        let small: &'static [u8] = &[b'x'; 512];
        assert_eq!(gw.send(via, Method::POST, "/x", &[], small).await.0, StatusCode::OK, "{via:?}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_at_the_gateway_and_answers_decorated() {
    let gw = Gw::start(
        "",
        "",
        "  - name: api\n    cluster: app\n    cors: { origins: [\"https://app.example\"], methods: [GET, POST], headers: [content-type], credentials: true, max_age: 10m }\n",
    )
    .await;
    let hits = gw.backend.hits();
    for via in BOTH {
        let allowed = [
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ];
        let (status, h, _) = gw.send(via, Method::OPTIONS, "/x", &allowed, b"").await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{via:?}");
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(h["access-control-allow-headers"], "content-type");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "600");
        let refused =
            [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
        let (status, h, _) = gw.send(via, Method::OPTIONS, "/x", &refused, b"").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{via:?}");
        assert!(h.get("access-control-allow-origin").is_none());
        // An actual cross-origin request goes upstream and its answer is decorated.
        let (status, h, _) =
            gw.send(via, Method::GET, "/x", &[("origin", "https://app.example")], b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["access-control-allow-origin"], "https://app.example", "{via:?}");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(h.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("origin")));
        let (status, h, _) =
            gw.send(via, Method::GET, "/x", &[("origin", "https://evil.example")], b"").await;
        assert_eq!(status, StatusCode::OK, "CORS does not authorise: the request is served");
        assert!(h.get("access-control-allow-origin").is_none(), "{via:?}");
    }
    assert_eq!(gw.backend.hits() - hits, 4, "preflights never reach the backend");
    gw.stop().await;
}

/// One HTTP/1.1 GET of `/headers` over TLS, with `client` as the client certificate; the
/// echoed request headers, or the error (a refused handshake).
async fn tls_get(
    addr: SocketAddr,
    server_ca: &rcgen::Certificate,
    client: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
    extra: &[(&str, &str)],
) -> Result<String, String> {
    use http_body_util::BodyExt;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
            builder.with_client_auth_cert(vec![cert.der().clone()], key).unwrap()
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls =
        connector.connect("localhost".try_into().unwrap(), tcp).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::get("/headers").header("host", "localhost");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(body("")).unwrap()).await.map_err(|e| e.to_string())?;
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listeners_verify_client_certificates_and_forward_their_names() {
    let (b, _) = backend("b").await;
    let server_pki = Pki::new("server ca");
    let (server_cert, server_key) = server_pki.issue("localhost", &["localhost"]);
    let clients = Pki::new("clients ca");
    let (alice, alice_key) = clients.issue("alice", &["alice.clients.test"]);
    let strangers = Pki::new("strangers ca");
    let (mallory, mallory_key) = strangers.issue("mallory", &["mallory.test"]);
    let cert = write_temp("mtls-cert.pem", &server_cert.pem());
    let key = write_temp("mtls-key.pem", &server_key.serialize_pem());
    let ca = write_temp("mtls-clients.pem", &clients.ca.pem());
    let yaml = format!(
        r#"
workers: 1
listeners:
  - {{ name: required, address: "127.0.0.1:0", tls: {{ cert: "{cert}", key: "{key}", client_ca: "{ca}", client_auth: required, forward: {{ subject: x-client-subject, san: x-client-san }} }} }}
  - {{ name: optional, address: "127.0.0.1:0", tls: {{ cert: "{cert}", key: "{key}", client_ca: "{ca}" }} }}
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}] }}]
routes: [{{ name: all, cluster: app }}]
"#
    );
    let gw = gateway(&yaml);
    let required = gw.listener_address("required").unwrap();
    let optional = gw.listener_address("optional").unwrap();
    let server_ca = server_pki.ca.as_ref();

    let seen = tls_get(required, server_ca, Some((&alice, &alice_key)), &[]).await.unwrap();
    assert!(seen.contains("x-client-subject: CN=alice"), "{seen}");
    assert!(seen.contains("x-client-san: alice.clients.test"), "{seen}");
    assert!(tls_get(required, server_ca, None, &[]).await.is_err(), "no certificate: refused");
    let stranger = tls_get(required, server_ca, Some((&mallory, &mallory_key)), &[]).await;
    assert!(stranger.is_err(), "a certificate from another CA is refused: {stranger:?}");

    // Optional: served without a certificate, and a forged subject header never passes.
    let forged = [("x-client-cert-subject", "CN=admin")];
    let seen = tls_get(optional, server_ca, None, &forged).await.unwrap();
    assert!(!seen.contains("CN=admin"), "{seen}");
    let seen = tls_get(optional, server_ca, Some((&alice, &alice_key)), &forged).await.unwrap();
    assert!(seen.contains("x-client-cert-subject: CN=alice"), "{seen}");
    assert!(!seen.contains("CN=admin"), "{seen}");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// An HS256 JWK set holding `secrets` as `(kid, secret)`.
fn hmac_jwks(secrets: &[(&str, &[u8])]) -> String {
    use base64::Engine;
    let keys: Vec<serde_json::Value> = secrets
        .iter()
        .map(|(kid, secret)| {
            let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
            serde_json::json!({ "kty": "oct", "kid": kid, "alg": "HS256", "k": k })
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// An HS256 token signed with `secret` under `kid`, for `sub`, expiring `exp_in` seconds from
/// now (negative: already expired).
fn hs256(kid: &str, secret: &[u8], sub: &str, tier: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let claims = serde_json::json!({
        "sub": sub, "tier": tier, "iss": "https://id.test", "aud": "api",
        "exp": now.as_secs() as i64 + exp_in,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_string());
    let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_routes_forward_the_verified_identity_and_refuse_the_rest() {
    let jwks = temp_path("edge-jwks.json");
    let old_secret: &[u8] = b"0123456789abcdef0123456789abcdef";
    let new_secret: &[u8] = b"fedcba9876543210fedcba9876543210";
    std::fs::write(&jwks, hmac_jwks(&[("k1", old_secret)])).unwrap();
    let routes = format!(
        "  - name: api\n    cluster: app\n    auth:\n      jwt: {{ jwks_file: \"{}\", issuer: https://id.test, audience: api, algorithms: [HS256], forward: {{ sub: x-user-id }}, claim_headers: {{ tier: x-tier }} }}\n    limits:\n      - {{ key: header:x-user-id, algorithm: token_bucket, rate: 1/h, burst: 3 }}\n",
        jwks.display()
    );
    let gw = Gw::start("", "", &routes).await;
    let bearer = |t: &str| format!("Bearer {t}");
    let alice = bearer(&hs256("k1", old_secret, "alice", "gold", 300));
    let mut seen = String::new();
    for via in BOTH {
        // A spoofed identity header never reaches the backend.
        let headers = [("authorization", alice.as_str()), ("x-user-id", "root")];
        let (status, _, body) = gw.send(via, Method::GET, "/headers", &headers, b"").await;
        assert_eq!(status, StatusCode::OK, "{via:?}: {body}");
        assert!(body.contains("x-user-id: alice") && !body.contains("root"), "{body}");
        assert!(body.contains("x-tier: gold"), "{body}");
        seen = body;
    }
    assert!(seen.contains("authorization: Bearer"), "the token goes on upstream: {seen}");
    // The limit counts the verified identity: alice has used 2 of her 3; a forged
    // `x-user-id` cannot move her to another key.
    let headers = [("authorization", alice.as_str()), ("x-user-id", "someone-else")];
    assert_eq!(gw.send(Via::Lean, Method::GET, "/x", &headers, b"").await.0, StatusCode::OK);
    let (status, _, _) = gw.send(Via::Hyper, Method::GET, "/x", &headers, b"").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let expired = bearer(&hs256("k1", old_secret, "bob", "gold", -3600));
    // One signature character changed (well inside it: the last one carries padding bits).
    let mut tampered = hs256("k1", old_secret, "bob", "gold", 300).into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let rotated = bearer(&hs256("k2", new_secret, "carol", "silver", 300));
    // The right key, but an algorithm the route does not accept.
    let wrong_alg = {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let claims = serde_json::json!({
            "sub": "dave", "iss": "https://id.test", "aud": "api", "exp": now.as_secs() + 300,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384);
        header.kid = Some("k1".into());
        let key = jsonwebtoken::EncodingKey::from_secret(old_secret).unwrap();
        bearer(&jsonwebtoken::encode(&header, &claims, &key).unwrap())
    };
    // `alg: none`, unsigned.
    let unsigned = {
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = b64(serde_json::json!({ "alg": "none", "kid": "k1" }));
        let claims = b64(serde_json::json!({ "sub": "eve", "aud": "api", "exp": u32::MAX }));
        bearer(&format!("{header}.{claims}."))
    };
    for (why, value) in [
        ("no token", String::new()),
        ("expired", expired),
        ("tampered", bearer(&tampered)),
        ("unknown key", rotated.clone()),
        ("wrong algorithm", wrong_alg),
        ("alg none", unsigned),
    ] {
        let headers = [("authorization", value.as_str())];
        let headers = if value.is_empty() { &[][..] } else { &headers[..] };
        for via in BOTH {
            let (status, h, body) = gw.send(via, Method::GET, "/x", headers, b"").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{why} via {via:?}: {body}");
            let challenge = h["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{why}: {challenge}");
        }
    }
    // The JWK set is rotated: the new key's tokens pass (the file is looked at once a second).
    std::fs::write(&jwks, hmac_jwks(&[("k2", new_secret)])).unwrap();
    let headers = [("authorization", rotated.as_str())];
    let start = std::time::Instant::now();
    loop {
        let (status, _, body) = gw.send(Via::Hyper, Method::GET, "/headers", &headers, b"").await;
        if status == StatusCode::OK {
            assert!(body.contains("x-user-id: carol"), "{body}");
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "rotation not seen");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_basic_users_are_checked_and_named_upstream() {
    // sha256("mobile-secret")
    let hash = "07a75a970cad37a5589d001f907ac28a8743c409c5f02ad26932c51cf03b9e2d";
    let bcrypt_hash = bcrypt::hash("open sesame", 4).unwrap();
    let routes = format!(
        "  - name: keys\n    match: {{ path_prefix: /keys/ }}\n    rewrite: {{ path_prefix: / }}\n    cluster: app\n    auth: {{ api_keys: {{ header: x-api-key, keys: [ {{ id: mobile, sha256: \"{hash}\" }} ], forward: x-api-key-id }} }}\n  - name: basic\n    match: {{ path_prefix: /basic/ }}\n    rewrite: {{ path_prefix: / }}\n    cluster: app\n    auth: {{ basic: {{ users: {{ alice: \"{bcrypt_hash}\" }}, forward: x-user }} }}\n"
    );
    let gw = Gw::start("", "", &routes).await;
    for via in BOTH {
        let good = [("x-api-key", "mobile-secret"), ("x-api-key-id", "admin")];
        let (status, _, body) = gw.send(via, Method::GET, "/keys/headers", &good, b"").await;
        assert_eq!(status, StatusCode::OK, "{via:?}");
        assert!(body.contains("x-api-key-id: mobile") && !body.contains("admin"), "{body}");
        let bad = [("x-api-key", "guess")];
        let (status, h, _) = gw.send(via, Method::GET, "/keys/x", &bad, b"").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(h["www-authenticate"].to_str().unwrap().starts_with("ApiKey"));

        use base64::Engine;
        let basic = |pair: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        };
        let right = basic("alice:open sesame");
        let (status, _, body) =
            gw.send(via, Method::GET, "/basic/headers", &[("authorization", &right)], b"").await;
        assert_eq!(status, StatusCode::OK, "{via:?}");
        assert!(body.contains("x-user: alice"), "{body}");
        for wrong in [basic("alice:guess"), basic("mallory:open sesame")] {
            let (status, h, _) =
                gw.send(via, Method::GET, "/basic/x", &[("authorization", &wrong)], b"").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic realm="));
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_response_behind_auth_is_not_served_without_credentials() {
    // sha256("mobile-secret"). The lean paths once served direct responses without the
    // route's authentication (only proxied routes were handed to the path that checks it).
    let hash = "07a75a970cad37a5589d001f907ac28a8743c409c5f02ad26932c51cf03b9e2d";
    let routes = format!(
        "  - name: secret\n    match: {{ path_prefix: /secret }}\n    direct_response: {{ status: 200, body: classified }}\n    auth: {{ api_keys: {{ header: x-api-key, keys: [ {{ id: mobile, sha256: \"{hash}\" }} ] }} }}\n"
    );
    let gw = Gw::start("", "", &routes).await;
    for via in BOTH {
        let (status, _, body) = gw.send(via, Method::GET, "/secret", &[], b"").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{via:?}");
        assert!(!body.contains("classified"), "{via:?}: {body}");
        let key = [("x-api-key", "mobile-secret")];
        let (status, _, body) = gw.send(via, Method::GET, "/secret", &key, b"").await;
        assert_eq!(status, StatusCode::OK, "{via:?}");
        assert_eq!(body, "classified");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_routes_body_timeout_gets_408_on_both_paths() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (b, backend) = backend("app").await;
    let yaml = format!(
        r#"
workers: 1
listeners:
  - {{ name: lean, address: "127.0.0.1:0", protocol: http1 }}
  - {{ name: hyper, address: "127.0.0.1:0", protocol: auto }}
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}] }}]
routes:
  - name: upload
    cluster: app
    request_limits: {{ body_timeout: 300ms }}
"#
    );
    let gw = gateway(&yaml);
    for name in ["lean", "hyper"] {
        let addr = gw.listener_address(name).unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = "POST /grpc HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n0123456789";
        s.write_all(head.as_bytes()).await.unwrap();
        // The other 90 bytes never come (the backend reads the whole body before answering):
        // the gateway answers 408 within about the body timeout.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut chunk = [0u8; 1024];
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&chunk[..n]);
                        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
        })
        .await;
        assert!(read.is_ok(), "{name}: no answer");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{name}: {text}");
    }
    let hits = backend.hits();
    // A body sent in time passes.
    let lean = gw.listener_address("lean").unwrap();
    let req = Request::post("/up").header("host", "t").body(body(&b"x"[..])).unwrap();
    assert_eq!(h1(lean, req).await.0, StatusCode::OK);
    assert_eq!(backend.hits(), hits + 1);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_on_a_cors_route_is_readable_by_the_allowed_page() {
    let gw = Gw::start(
        "",
        "",
        "  - name: api\n    cluster: app\n    cors: { origins: [\"https://app.example\"] }\n    limits:\n      - { key: route, algorithm: token_bucket, rate: 1/h, burst: 1 }\n",
    )
    .await;
    let origin = [("origin", "https://app.example")];
    assert_eq!(gw.send(Via::Lean, Method::GET, "/x", &origin, b"").await.0, StatusCode::OK);
    for via in BOTH {
        let (status, h, _) = gw.send(via, Method::GET, "/x", &origin, b"").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{via:?}");
        assert_eq!(h["access-control-allow-origin"], "https://app.example", "{via:?}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_identity_sets_the_class_a_plan_sheds_by() {
    // sha256("gold-secret"), sha256("bronze-secret")
    let gold = "1ada8a8b1137fbec532fa0d1c86a850b9c2ab5fdcf7b9ee1512f578cae4f5af4";
    let bronze = "b1adfd58230a7bd095fc6e0cffcba4795621a6c6fa30d6fbdcb9755a6fd4f7c8";
    let routes = format!(
        "  - name: api\n    cluster: app\n    auth: {{ api_keys: {{ header: x-api-key, keys: [ {{ id: gold, sha256: \"{gold}\" }}, {{ id: bronze, sha256: \"{bronze}\" }} ], forward: x-api-key-id }} }}\n    criticality_by_header: {{ header: x-api-key-id, classes: {{ gold: CRITICAL_PLUS, bronze: SHEDDABLE }} }}\n"
    );
    let top = "admin: { address: \"127.0.0.1:0\" }\nplans:\n  - name: peak\n    actions:\n      - { shed_below: CRITICAL }";
    let gw = Gw::start("", top, &routes).await;
    let admin = gw.gw.as_ref().unwrap().admin_address().unwrap();
    let activate =
        Request::post("/admin/plans/peak/activate").header("host", "admin").body(body("")).unwrap();
    assert_eq!(h1(admin, activate).await.0, StatusCode::OK);
    for via in BOTH {
        let gold = [("x-api-key", "gold-secret")];
        assert_eq!(gw.send(via, Method::GET, "/x", &gold, b"").await.0, StatusCode::OK, "{via:?}");
        // Bronze is SHEDDABLE: shed by the plan, even when it claims more for itself.
        for claim in [None, Some("CRITICAL_PLUS")] {
            let mut headers = vec![("x-api-key", "bronze-secret")];
            headers.extend(claim.map(|c| ("x-spillway-criticality", c)));
            let (status, _, body) = gw.send(via, Method::GET, "/x", &headers, b"").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{via:?} {claim:?}: {body}");
        }
    }
    gw.stop().await;
}
