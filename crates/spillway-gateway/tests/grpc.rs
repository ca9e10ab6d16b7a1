//! gRPC end to end through the gateway: a tonic client, an h2c listener, an HTTP/2 cluster and
//! a tonic server. Message types are written by hand (prost derive), so no protoc is needed.
//! Unary calls and statuses, retries, and the three streaming kinds (server, client and
//! bidirectional), paced by the test so that each message must cross the gateway while the
//! call is still open (a gateway that buffered a whole stream would hang them).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(string, tag = "1")]
    message: String,
}

struct Say;

impl tonic::server::UnaryService<EchoRequest> for Say {
    type Response = EchoReply;
    type Future = std::future::Ready<Result<tonic::Response<EchoReply>, tonic::Status>>;
    fn call(&mut self, req: tonic::Request<EchoRequest>) -> Self::Future {
        let message = req.into_inner().message;
        if message == "fail" {
            return std::future::ready(Err(tonic::Status::not_found("no such thing")));
        }
        std::future::ready(Ok(tonic::Response::new(EchoReply {
            message: format!("echo: {message}"),
        })))
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (status: 1 SERVING, 2 NOT_SERVING).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The standard health service: SERVING unless `not_serving`, recording what it is asked.
struct Health(Arc<Gates>);

impl tonic::server::UnaryService<HealthCheckRequest> for Health {
    type Response = HealthCheckResponse;
    type Future = std::future::Ready<Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;
    fn call(&mut self, req: tonic::Request<HealthCheckRequest>) -> Self::Future {
        self.0.health_asked.lock().unwrap().push(req.into_inner().service);
        let down = self.0.not_serving.load(std::sync::atomic::Ordering::Relaxed);
        let status = if down { 2 } else { 1 };
        std::future::ready(Ok(tonic::Response::new(HealthCheckResponse { status })))
    }
}

/// Lets a test pace the streaming services and see what reached them.
struct Gates {
    /// `Count` sends each of its messages only after taking a permit here.
    count_next: tokio::sync::Semaphore,
    /// The messages `Join` has read so far, in order.
    joined: std::sync::Mutex<Vec<String>>,
    /// Every call is answered UNAVAILABLE, trailers-only (a server shedding load).
    unavailable: std::sync::atomic::AtomicBool,
    /// The health service answers NOT_SERVING.
    not_serving: std::sync::atomic::AtomicBool,
    /// The services asked about by health checks, and the HTTP version of each `/healthz` GET.
    health_asked: std::sync::Mutex<Vec<String>>,
    healthz_versions: std::sync::Mutex<Vec<http::Version>>,
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            count_next: tokio::sync::Semaphore::new(0),
            joined: Default::default(),
            unavailable: Default::default(),
            not_serving: Default::default(),
            health_asked: Default::default(),
            healthz_versions: Default::default(),
        }
    }
}

type ReplyStream = ReceiverStream<Result<EchoReply, tonic::Status>>;

/// Server streaming: `"N"` answers `"1"` … `"N"` then OK; `"N then fail"` answers the same
/// messages then the status RESOURCE_EXHAUSTED. Each message waits for a `count_next` permit.
struct Count(Arc<Gates>);

impl tower::Service<tonic::Request<EchoRequest>> for Count {
    type Response = tonic::Response<ReplyStream>;
    type Error = tonic::Status;
    type Future = std::future::Ready<Result<Self::Response, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<EchoRequest>) -> Self::Future {
        let text = req.into_inner().message;
        let (count, fail) = match text.strip_suffix(" then fail") {
            Some(count) => (count.to_string(), true),
            None => (text, false),
        };
        let Ok(count) = count.parse::<u32>() else {
            return std::future::ready(Err(tonic::Status::invalid_argument("not a count")));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let gates = self.0.clone();
        tokio::spawn(async move {
            for i in 1..=count {
                gates.count_next.acquire().await.unwrap().forget();
                if tx.send(Ok(EchoReply { message: i.to_string() })).await.is_err() {
                    return;
                }
            }
            if fail {
                let status = tonic::Status::resource_exhausted(format!("quota gone after {count}"));
                let _ = tx.send(Err(status)).await;
            }
        });
        std::future::ready(Ok(tonic::Response::new(ReceiverStream::new(rx))))
    }
}

/// Client streaming: records each message in `joined` as it arrives, answers them joined
/// with `+` once the client ends its stream.
struct Join(Arc<Gates>);

impl tower::Service<tonic::Request<tonic::Streaming<EchoRequest>>> for Join {
    type Response = tonic::Response<EchoReply>;
    type Error = tonic::Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, tonic::Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<tonic::Streaming<EchoRequest>>) -> Self::Future {
        let gates = self.0.clone();
        Box::pin(async move {
            let mut stream = req.into_inner();
            let mut all = Vec::new();
            while let Some(m) = stream.message().await? {
                gates.joined.lock().unwrap().push(m.message.clone());
                all.push(m.message);
            }
            Ok(tonic::Response::new(EchoReply { message: all.join("+") }))
        })
    }
}

/// Bidirectional: answers each message `m` with `"echo: m"` as it arrives; the message
/// `"fail"` ends the call with INVALID_ARGUMENT; the end of the client's stream ends it OK.
struct Chat;

impl tower::Service<tonic::Request<tonic::Streaming<EchoRequest>>> for Chat {
    type Response = tonic::Response<ReplyStream>;
    type Error = tonic::Status;
    type Future = std::future::Ready<Result<Self::Response, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<tonic::Streaming<EchoRequest>>) -> Self::Future {
        let mut incoming = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let reply = match incoming.message().await {
                    Ok(Some(m)) if m.message == "fail" => {
                        Err(tonic::Status::invalid_argument("cannot echo fail"))
                    }
                    Ok(Some(m)) => Ok(EchoReply { message: format!("echo: {}", m.message) }),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let last = reply.is_err();
                if tx.send(reply).await.is_err() || last {
                    return;
                }
            }
        });
        std::future::ready(Ok(tonic::Response::new(ReceiverStream::new(rx))))
    }
}

/// Serves `server` over h2c (hyper) on a fresh loopback port; its address.
async fn serve(server: EchoServer) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let svc = tower::ServiceExt::map_request(
                server.clone(),
                |r: http::Request<hyper::body::Incoming>| r.map(tonic::body::Body::new),
            );
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

/// The listener's HTTP/2 servers (`http2_server`): every streaming test runs against each.
const SERVERS: [&str; 2] = ["lean", "hyper"];

/// A gateway with an h2c listener served by `server` and an HTTP/2 cluster on `backend`, and a
/// tonic client connected to it.
async fn through_gateway(
    backend: std::net::SocketAddr,
    server: &str,
) -> (spillway_gateway::Gateway, tonic::client::Grpc<tonic::transport::Channel>) {
    through_gateway_with(backend, server, "lean", "max_body_bytes: 1048576", "10s").await
}

/// The cluster's HTTP/2 clients (`http2_client`).
const CLIENTS: [&str; 2] = ["lean", "hyper"];

/// As [`through_gateway`], with the cluster's `http2_client`, the listener's `limits` and the
/// cluster's request timeout.
async fn through_gateway_with(
    backend: std::net::SocketAddr,
    server: &str,
    client: &str,
    limits: &str,
    request_timeout: &str,
) -> (spillway_gateway::Gateway, tonic::client::Grpc<tonic::transport::Channel>) {
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: h2c, http2_server: {server}, limits: {{ {limits} }} }}]
clusters: [{{ name: echo, protocol: http2, http2_client: {client}, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: {request_timeout} }} }}]
routes: [{{ name: grpc, match: {{ path_prefix: /test.Echo/ }}, cluster: echo }}]
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    (gw, client_of(addr).await)
}

/// A tonic client connected (h2c) to the gateway listener at `addr`.
async fn client_of(addr: std::net::SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

fn codec() -> tonic_prost::ProstCodec<EchoRequest, EchoReply> {
    tonic_prost::ProstCodec::default()
}

fn request(message: &str) -> EchoRequest {
    EchoRequest { message: message.to_string() }
}

/// That `status` has `code` and `message`.
fn assert_status(status: &tonic::Status, code: tonic::Code, message: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), message, "{status:?}");
}

/// The next message of a response stream, within 5 s.
async fn next(stream: &mut tonic::Streaming<EchoReply>) -> Result<Option<String>, tonic::Status> {
    let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the next message or the end of the stream within 5 s")?;
    Ok(message.map(|m| m.message))
}

async fn stop(gw: spillway_gateway::Gateway) {
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// The test service: `Say` (unary), `Count` (server streaming), `Join` (client streaming) and
/// `Chat` (bidirectional), sharing the test's [`Gates`].
#[derive(Clone, Default)]
struct EchoServer(Arc<Gates>);

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "test.Echo";
}

impl tower::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let gates = self.0.clone();
        Box::pin(async move {
            if gates.unavailable.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(tonic::Status::unavailable("shedding").into_http());
            }
            if req.uri().path() == "/healthz" {
                gates.healthz_versions.lock().unwrap().push(req.version());
                return Ok(http::Response::new(tonic::body::Body::empty()));
            }
            if req.uri().path() == "/grpc.health.v1.Health/Check" {
                let codec =
                    tonic_prost::ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default();
                return Ok(tonic::server::Grpc::new(codec).unary(Health(gates), req).await);
            }
            let codec = tonic_prost::ProstCodec::<EchoReply, EchoRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            let path = req.uri().path().to_string();
            let response = match path.as_str() {
                "/test.Echo/Count" => grpc.server_streaming(Count(gates), req).await,
                "/test.Echo/Join" => grpc.client_streaming(Join(gates), req).await,
                "/test.Echo/Chat" => grpc.streaming(Chat, req).await,
                _ => grpc.unary(Say, req).await,
            };
            Ok(response)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_calls_and_statuses_pass_through() {
    let backend = serve(EchoServer::default()).await;
    let yaml = format!(
        r#"
workers: 2
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: auto }}]
clusters: [{{ name: echo, protocol: http2, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: grpc, match: {{ path_prefix: /test.Echo/ }}, cluster: echo }}]
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let mut client = client_of(addr).await;
    for (message, expected) in [("hello", Ok("echo: hello")), ("fail", Err(tonic::Code::NotFound))]
    {
        client.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default();
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Say");
        let result = client
            .unary(tonic::Request::new(EchoRequest { message: message.to_string() }), path, codec)
            .await;
        match expected {
            Ok(reply) => assert_eq!(result.unwrap().into_inner().message, reply),
            Err(code) => assert_status(&result.unwrap_err(), code, "no such thing"),
        }
    }
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_retried_on_another_endpoint_when_one_refuses_connections() {
    // gRPC bodies have no declared length: the gateway reads the (small) message to keep it
    // for the retry.
    let backend = serve(EchoServer::default()).await;
    let refusing = refusing_address();
    let refused = refusing.address;
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: auto }}]
admin: {{ address: "127.0.0.1:0" }}
clusters:
  - name: echo
    protocol: http2
    balance: round_robin
    endpoints: [{{ address: "{refused}" }}, {{ address: "{backend}" }}]
    timeouts: {{ request: 5s }}
    outlier: {{ consecutive_failures: 0 }}
routes:
  - name: grpc
    match: {{ path_prefix: /test.Echo/ }}
    cluster: echo
    retries: {{ attempts: 2, budget: false, non_idempotent: true }}
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    let mut client = client_of(addr).await;
    for i in 0..4 {
        client.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default();
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Say");
        let request = tonic::Request::new(EchoRequest { message: format!("m{i}") });
        let reply = client.unary(request, path, codec).await.unwrap();
        assert_eq!(reply.into_inner().message, format!("echo: m{i}"));
    }
    let (_, _, metrics) = get(admin, "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("spillway_retries_total{route=\"grpc\",reason=\"connect_failure\"}"),
        "{metrics}"
    );
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

async fn server_streaming_messages_cross_one_by_one_and_a_status_ends_the_call_on(
    server: &'static str,
) {
    eprintln!("http2_server: {server}");
    let echo = EchoServer::default();
    let gates = echo.0.clone();
    let (gw, mut client) = through_gateway(serve(echo).await, server).await;
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Count");
    client.ready().await.unwrap();
    let mut stream = client
        .server_streaming(tonic::Request::new(request("3")), path.clone(), codec())
        .await
        .unwrap()
        .into_inner();
    // The server sends message n only after the test has read message n-1 through the
    // gateway: each one crosses while the call is open.
    for i in 1..=3 {
        gates.count_next.add_permits(1);
        assert_eq!(next(&mut stream).await.unwrap().as_deref(), Some(i.to_string().as_str()));
    }
    assert_eq!(next(&mut stream).await.unwrap(), None, "grpc-status 0 in the trailers ends it");

    // An error status after some messages: the messages, then the server's code and message.
    gates.count_next.add_permits(2);
    client.ready().await.unwrap();
    let mut stream = client
        .server_streaming(tonic::Request::new(request("2 then fail")), path, codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stream).await.unwrap().as_deref(), Some("1"));
    assert_eq!(next(&mut stream).await.unwrap().as_deref(), Some("2"));
    let status = next(&mut stream).await.unwrap_err();
    assert_status(&status, tonic::Code::ResourceExhausted, "quota gone after 2");
    stop(gw).await;
}

async fn client_streaming_messages_reach_the_server_before_the_stream_ends_on(
    server: &'static str,
) {
    eprintln!("http2_server: {server}");
    let echo = EchoServer::default();
    let gates = echo.0.clone();
    let (gw, mut client) = through_gateway(serve(echo).await, server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    client.ready().await.unwrap();
    let call = tokio::spawn(async move {
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Join");
        client.client_streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec()).await
    });
    let mut sent = Vec::new();
    for word in ["alpha", "beta", "gamma"] {
        tx.send(request(word)).await.unwrap();
        sent.push(word.to_string());
        let gates = gates.clone();
        let expected = sent.clone();
        eventually(
            Duration::from_secs(5),
            &format!("the server has read {expected:?}"),
            move || *gates.joined.lock().unwrap() == expected,
        )
        .await;
    }
    drop(tx);
    let reply = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
    assert_eq!(reply.unwrap().into_inner().message, "alpha+beta+gamma");
    stop(gw).await;
}

async fn bidirectional_streaming_ping_pong_and_an_error_status_mid_call_on(server: &'static str) {
    eprintln!("http2_server: {server}");
    let (gw, mut client) = through_gateway(serve(EchoServer::default()).await, server).await;
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Chat");
    // Ping-pong: message n+1 is sent only after reply n came back through the gateway, so
    // neither direction can be buffered until the end of the call.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request("ping 0")).await.unwrap();
    client.ready().await.unwrap();
    let mut replies = client
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path.clone(), codec())
        .await
        .unwrap()
        .into_inner();
    for i in 0..20 {
        assert_eq!(next(&mut replies).await.unwrap(), Some(format!("echo: ping {i}")));
        if i < 19 {
            tx.send(request(&format!("ping {}", i + 1))).await.unwrap();
        }
    }
    drop(tx);
    assert_eq!(next(&mut replies).await.unwrap(), None, "ends OK when the client ends");

    // The server ends a call with an error while the client's stream is still open.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request("one")).await.unwrap();
    client.ready().await.unwrap();
    let mut replies = client
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut replies).await.unwrap().as_deref(), Some("echo: one"));
    tx.send(request("fail")).await.unwrap();
    let status = next(&mut replies).await.unwrap_err();
    assert_status(&status, tonic::Code::InvalidArgument, "cannot echo fail");
    drop(tx);

    // The connection keeps serving calls afterwards.
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Say");
    let reply = client.unary(tonic::Request::new(request("after")), path, codec()).await;
    assert_eq!(reply.unwrap().into_inner().message, "echo: after");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_messages_cross_one_by_one_and_a_status_ends_the_call() {
    for server in SERVERS {
        server_streaming_messages_cross_one_by_one_and_a_status_ends_the_call_on(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_messages_reach_the_server_before_the_stream_ends() {
    for server in SERVERS {
        client_streaming_messages_reach_the_server_before_the_stream_ends_on(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_streaming_ping_pong_and_an_error_status_mid_call() {
    for server in SERVERS {
        bidirectional_streaming_ping_pong_and_an_error_status_mid_call_on(server).await;
    }
}

/// `max_body_bytes` bounds each message of a gRPC call, not the stream: a long ping-pong whose
/// messages add up to far more passes, and the first larger message ends the call with
/// RESOURCE_EXHAUSTED — as trailers on a response already under way, as a trailers-only
/// answer when nothing was answered yet.
async fn the_body_limit_bounds_each_grpc_message_not_the_stream_on(server: &str, upstream: &str) {
    eprintln!("http2_server: {server}, http2_client: {upstream}");
    let backend = serve(EchoServer::default()).await;
    let (gw, mut client) =
        through_gateway_with(backend, server, upstream, "max_body_bytes: 64", "10s").await;
    let chat = http::uri::PathAndQuery::from_static("/test.Echo/Chat");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let word = |i: usize| format!("{i:02} {}", "x".repeat(40));
    tx.send(request(&word(0))).await.unwrap();
    client.ready().await.unwrap();
    let mut replies = client
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), chat, codec())
        .await
        .unwrap()
        .into_inner();
    // 30 messages of 45 bytes: ~1.4 KiB through a 64-byte limit.
    for i in 0..30 {
        assert_eq!(next(&mut replies).await.unwrap(), Some(format!("echo: {}", word(i))));
        if i < 29 {
            tx.send(request(&word(i + 1))).await.unwrap();
        }
    }
    tx.send(request(&"y".repeat(100))).await.unwrap();
    let status = next(&mut replies).await.unwrap_err();
    assert_status(
        &status,
        tonic::Code::ResourceExhausted,
        "request message larger than the gateway's limit",
    );
    drop(tx);

    // A unary call with a message over the limit: nothing was answered, so trailers-only.
    client.ready().await.unwrap();
    let say = http::uri::PathAndQuery::from_static("/test.Echo/Say");
    let status = client
        .unary(tonic::Request::new(request(&"z".repeat(100))), say.clone(), codec())
        .await
        .unwrap_err();
    assert_status(&status, tonic::Code::ResourceExhausted, "body_too_large");
    // And the connection goes on serving.
    client.ready().await.unwrap();
    let reply = client.unary(tonic::Request::new(request("small")), say, codec()).await;
    assert_eq!(reply.unwrap().into_inner().message, "echo: small");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_bounds_each_grpc_message_not_the_stream() {
    for server in SERVERS {
        for upstream in CLIENTS {
            the_body_limit_bounds_each_grpc_message_not_the_stream_on(server, upstream).await;
        }
    }
}

/// The gateway's own failures reach a gRPC caller as the status it acts on: the request's
/// time spent before an answer is DEADLINE_EXCEEDED (not the UNAVAILABLE an HTTP 504 would
/// read as), and so is the time spent while a response streams (trailers, not a reset); a
/// path no route takes is UNIMPLEMENTED.
async fn gateway_failures_reach_grpc_callers_as_grpc_statuses_on(server: &str, upstream: &str) {
    eprintln!("http2_server: {server}, http2_client: {upstream}");
    let echo = EchoServer::default();
    let gates = echo.0.clone();
    let backend = serve(echo).await;
    let limits = "max_body_bytes: 1048576";
    let (gw, mut client) = through_gateway_with(backend, server, upstream, limits, "300ms").await;

    // Client streaming whose client never ends its stream: no answer within the timeout.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request("waiting")).await.unwrap();
    client.ready().await.unwrap();
    let join = http::uri::PathAndQuery::from_static("/test.Echo/Join");
    let status = client
        .client_streaming(tonic::Request::new(ReceiverStream::new(rx)), join, codec())
        .await
        .unwrap_err();
    assert_status(&status, tonic::Code::DeadlineExceeded, "upstream_timeout");
    drop(tx);

    // Server streaming: one message, then the server waits past the timeout.
    gates.count_next.add_permits(1);
    client.ready().await.unwrap();
    let count = http::uri::PathAndQuery::from_static("/test.Echo/Count");
    let mut replies = client
        .server_streaming(tonic::Request::new(request("2")), count, codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut replies).await.unwrap().as_deref(), Some("1"));
    let status = next(&mut replies).await.unwrap_err();
    assert_status(&status, tonic::Code::DeadlineExceeded, "deadline exceeded at the gateway");

    // No route: UNIMPLEMENTED, named.
    client.ready().await.unwrap();
    let elsewhere = http::uri::PathAndQuery::from_static("/other.Service/Call");
    let status =
        client.unary(tonic::Request::new(request("hi")), elsewhere, codec()).await.unwrap_err();
    assert_status(&status, tonic::Code::Unimplemented, "no_route");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_failures_reach_grpc_callers_as_grpc_statuses() {
    for server in SERVERS {
        for upstream in CLIENTS {
            gateway_failures_reach_grpc_callers_as_grpc_statuses_on(server, upstream).await;
        }
    }
}

/// A call an upstream fails before any message is answered trailers-only: HTTP 200 with the
/// `grpc-status` in the head. The gateway counts it as what it is — UNAVAILABLE as a 503 — so a
/// route retrying 503s tries another endpoint, and the route's counters and the access log
/// show the failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailers_only_unavailable_counts_as_a_503_for_retries_and_metrics() {
    let up = serve(EchoServer::default()).await;
    let shedding = EchoServer::default();
    shedding.0.unavailable.store(true, std::sync::atomic::Ordering::Relaxed);
    let down = serve(shedding).await;
    let log = temp_path("grpc-access.log");
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: h2c }}]
admin: {{ address: "127.0.0.1:0" }}
access_log: {{ path: "{log}" }}
clusters:
  - name: both
    protocol: http2
    balance: round_robin
    endpoints: [{{ address: "{down}" }}, {{ address: "{up}" }}]
    timeouts: {{ request: 5s }}
    outlier: {{ consecutive_failures: 0 }}
  - {{ name: down, protocol: http2, endpoints: [{{ address: "{down}" }}], timeouts: {{ request: 5s }} }}
routes:
  - name: retried
    match: {{ path_prefix: /test.Echo/ }}
    cluster: both
    retries: {{ attempts: 2, budget: false, non_idempotent: true, on: [503] }}
  - {{ name: shed, match: {{ path_prefix: /test.Down/ }}, cluster: down }}
"#,
        log = log.display()
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    let mut client = client_of(addr).await;
    // Round robin sends every other first try to the shedding endpoint: each is retried.
    for i in 0..4 {
        client.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Say");
        let reply = client.unary(tonic::Request::new(request(&format!("m{i}"))), path, codec());
        assert_eq!(reply.await.unwrap().into_inner().message, format!("echo: m{i}"));
    }
    // Without retries the status reaches the caller as it came.
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Down/Say");
    let status = client.unary(tonic::Request::new(request("x")), path, codec()).await.unwrap_err();
    assert_status(&status, tonic::Code::Unavailable, "shedding");

    let (_, _, metrics) = get(admin, "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    let line = |prefix: &str| {
        metrics.lines().find(|l| l.starts_with(prefix)).map(|l| l.rsplit(' ').next().unwrap())
    };
    assert_eq!(
        line("spillway_requests_total{route=\"shed\",cluster=\"down\",code=\"503\"}"),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        line("spillway_requests_total{route=\"retried\",cluster=\"both\",code=\"200\"}"),
        Some("4"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("spillway_retries_total{route=\"retried\"") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(Duration::from_secs(5), "five access-log lines", || lines().lines().count() == 5)
        .await;
    let statuses: Vec<(String, u64)> = lines()
        .lines()
        .map(|l| {
            let entry: serde_json::Value = serde_json::from_str(l).unwrap();
            (entry["route"].as_str().unwrap().to_string(), entry["status"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(statuses.iter().filter(|(r, s)| r == "retried" && *s == 200).count(), 4);
    assert!(statuses.contains(&("shed".to_string(), 503)), "{statuses:?}");
    // The code itself too, where the head said it (trailers-only); a status that comes in
    // trailers is not known when the line is written.
    let codes: Vec<Option<u64>> = lines()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["grpc_status"].as_u64())
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == Some(14)).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 4, "{codes:?}");
    stop(gw).await;
}

/// gRPC-Web's `-text` bodies are base64 of the messages, so their length prefixes are not on
/// the wire: the whole body is held to `max_body_bytes` and never read as messages; a binary
/// gRPC-Web body is read per message as gRPC's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_text_bodies_are_not_read_as_messages() {
    let (backend, _) = backend("echo").await;
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: h2c, limits: {{ max_body_bytes: 64 }} }}]
clusters: [{{ name: echo, protocol: http2, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: all, cluster: echo }}]
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    // `/grpc` answers once it has the whole body (then the body, `grpc-status: 0` in trailers).
    let post = |content_type: &str, payload: Vec<u8>| {
        let req = http::Request::post("/grpc")
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(body(payload))
            .unwrap();
        h2c(addr, req)
    };
    // "hello" as one message, base64: read as framed bytes, 'A' 'A' 'A' 'A' would declare a
    // message of over a gigabyte.
    let text = b"AAAAAAVoZWxsbw==".to_vec();
    let (status, headers, echoed) = post("application/grpc-web-text", text.clone()).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(headers.get("grpc-status"), None, "{headers:?}");
    assert_eq!(echoed, text);
    // A binary gRPC-Web message over the limit is refused as gRPC's are.
    let mut framed = vec![0, 0, 0, 0, 100];
    framed.extend([b'x'; 100]);
    let (status, headers, _) = post("application/grpc-web+proto", framed).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(headers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"8"[..]), "{headers:?}");
    stop(gw).await;
}

/// Health checks of an HTTP/2 cluster speak HTTP/2 (prior knowledge on plain TCP), and
/// `health_check: { grpc: ... }` speaks the gRPC health checking protocol: an endpoint whose
/// health service answers NOT_SERVING is taken out, and brought back once it is SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_speak_http2_and_the_grpc_health_protocol() {
    let echo = EchoServer::default();
    let gates = echo.0.clone();
    let backend = serve(echo).await;
    let check = "interval: 100ms, timeout: 1s, healthy: 1, unhealthy: 1";
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: h2c }}]
admin: {{ address: "127.0.0.1:0" }}
clusters:
  - {{ name: by-grpc, protocol: http2, endpoints: [{{ address: "{backend}" }}], health_check: {{ grpc: {{ service: test.Echo }}, {check} }} }}
  - {{ name: by-path, protocol: http2, endpoints: [{{ address: "{backend}" }}], health_check: {{ path: /healthz, {check} }} }}
routes:
  - {{ name: a, match: {{ path_prefix: /a }}, cluster: by-grpc }}
  - {{ name: b, match: {{ path_prefix: /b }}, cluster: by-path }}
"#
    );
    let gw = gateway(&yaml);
    let admin = gw.admin_address().unwrap();
    let healthy = move |cluster: &'static str| async move {
        let (_, _, metrics) = get(admin, "/metrics").await;
        let metrics = String::from_utf8(metrics.to_vec()).unwrap();
        let prefix = format!("spillway_upstream_healthy{{cluster=\"{cluster}\",");
        metrics.lines().find(|l| l.starts_with(&prefix)).map(|l| l.ends_with(" 1"))
    };
    let asked = gates.clone();
    eventually(Duration::from_secs(5), "three gRPC health checks", move || {
        asked.health_asked.lock().unwrap().len() >= 3
    })
    .await;
    assert!(gates.health_asked.lock().unwrap().iter().all(|s| s == "test.Echo"));
    let seen = gates.clone();
    eventually(Duration::from_secs(5), "three GET /healthz", move || {
        seen.healthz_versions.lock().unwrap().len() >= 3
    })
    .await;
    assert!(gates.healthz_versions.lock().unwrap().iter().all(|v| *v == http::Version::HTTP_2));
    assert_eq!(healthy("by-grpc").await, Some(true));
    assert_eq!(healthy("by-path").await, Some(true));

    gates.not_serving.store(true, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while healthy("by-grpc").await != Some(false) {
        assert!(std::time::Instant::now() < deadline, "NOT_SERVING never took the endpoint out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(healthy("by-path").await, Some(true), "the HTTP check is not the gRPC one");
    gates.not_serving.store(false, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while healthy("by-grpc").await != Some(true) {
        assert!(std::time::Instant::now() < deadline, "SERVING never brought it back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(gw).await;
}

async fn every_grpc_call_is_counted_by_the_status_it_ended_with_on(server: &str) {
    eprintln!("http2_server: {server}");
    let backend = serve(EchoServer::default()).await;
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: h2c, http2_server: {server} }}]
admin: {{ address: "127.0.0.1:0" }}
clusters: [{{ name: echo, protocol: http2, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: grpc, match: {{ path_prefix: /test.Echo/ }}, cluster: echo }}]
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    let mut client = client_of(addr).await;
    let say = http::uri::PathAndQuery::from_static("/test.Echo/Say");
    // OK in the trailers after the reply, twice; NOT_FOUND trailers-only (in the head).
    for message in ["a", "b", "fail"] {
        client.ready().await.unwrap();
        let _ = client.unary(tonic::Request::new(request(message)), say.clone(), codec()).await;
    }
    // INVALID_ARGUMENT in the trailers after a message: the status the head cannot tell.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request("one")).await.unwrap();
    client.ready().await.unwrap();
    let chat = http::uri::PathAndQuery::from_static("/test.Echo/Chat");
    let mut replies = client
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), chat, codec())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut replies).await.unwrap().as_deref(), Some("echo: one"));
    tx.send(request("fail")).await.unwrap();
    assert_eq!(next(&mut replies).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    // The gateway's own answer: UNIMPLEMENTED for a call no route takes.
    client.ready().await.unwrap();
    let nowhere = http::uri::PathAndQuery::from_static("/test.Nowhere/Say");
    let status = client.unary(tonic::Request::new(request("x")), nowhere, codec()).await;
    assert_eq!(status.unwrap_err().code(), tonic::Code::Unimplemented);

    // Counted when the call ends, which may be just after the caller saw it.
    let metrics = metrics_once_counted(admin, "grpc_code=\"3\"").await;
    let count = |route: &str, cluster: &str, code: u32| {
        let prefix = format!(
            "spillway_grpc_calls_total{{route=\"{route}\",cluster=\"{cluster}\",grpc_code=\"{code}\"}} "
        );
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::to_string)
    };
    assert_eq!(count("grpc", "echo", 0).as_deref(), Some("2"), "{metrics}");
    assert_eq!(count("grpc", "echo", 5).as_deref(), Some("1"), "{metrics}");
    assert_eq!(count("grpc", "echo", 3).as_deref(), Some("1"), "{metrics}");
    assert_eq!(count("", "", 12).as_deref(), Some("1"), "{metrics}");
    let counted = metrics.lines().filter(|l| l.starts_with("spillway_grpc_calls_total{")).count();
    assert_eq!(counted, 4, "no other status: {metrics}");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpc_call_is_counted_by_the_status_it_ended_with() {
    for server in SERVERS {
        every_grpc_call_is_counted_by_the_status_it_ended_with_on(server).await;
    }
}

/// The gateway's `/metrics` once they hold `marker` (calls are counted as they end, which may
/// be just after the caller saw the end), or after a second.
async fn metrics_once_counted(admin: std::net::SocketAddr, marker: &str) -> String {
    let mut metrics = String::new();
    for _ in 0..50 {
        let (_, _, body) = get(admin, "/metrics").await;
        metrics = String::from_utf8(body.to_vec()).unwrap();
        if metrics.contains(marker) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    metrics
}

/// One gRPC unary call sent as h2load and many non-Go clients send it — a `content-length`
/// declared — which the lean HTTP/2 server serves on the lean exchange (no `http` types) when
/// the cluster is on the lean HTTP/2 client. Returns the answer's status, head, body and
/// trailers (`None` for a trailers-only answer).
async fn declared_call(
    addr: std::net::SocketAddr,
    path: &str,
    message: &str,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes, Option<http::HeaderMap>) {
    use http_body_util::BodyExt;
    let proto = prost::Message::encode_to_vec(&request(message));
    let framed = spillway_gateway::proxy::grpc::framed(&proto);
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("content-length", framed.len().to_string())
        .body(body(framed))
        .unwrap();
    let mut sender = h2c_sender(addr).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let ended_with_head = http_body::Body::is_end_stream(&body);
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert!(!ended_with_head || trailers.is_none());
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn grpc_calls_with_a_declared_length_get_the_same_answers_and_counts_on_the_lean_exchange() {
    let backend = serve(EchoServer::default()).await;
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: h2c }}]
admin: {{ address: "127.0.0.1:0" }}
clusters: [{{ name: echo, protocol: http2, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: 5s }} }}]
routes:
  - {{ name: limited, match: {{ path_prefix: /test.Echo/Limited }}, cluster: echo, limits: [{{ algorithm: token_bucket, key: route, rate: 1/h, burst: 1 }}] }}
  - {{ name: grpc, match: {{ path_prefix: /test.Echo/ }}, cluster: echo }}
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();

    // OK: the reply, then the status in trailers.
    let (status, head, data, trailers) = declared_call(addr, "/test.Echo/Say", "hello").await;
    assert_eq!(status, 200);
    assert_eq!(head.get("content-type").unwrap(), "application/grpc");
    assert!(head.get("x-request-id").is_some(), "{head:?}");
    let reply: EchoReply = prost::Message::decode(&data[5..]).unwrap();
    assert_eq!(reply.message, "echo: hello");
    assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "0");

    // NOT_FOUND from the upstream stays trailers-only: the status in a head that ends the
    // stream.
    let (status, head, data, trailers) = declared_call(addr, "/test.Echo/Say", "fail").await;
    assert_eq!((status.as_u16(), head.get("grpc-status").unwrap().as_bytes()), (200, &b"5"[..]));
    assert!(data.is_empty() && trailers.is_none());

    // The gateway's own answers, trailers-only: no route is UNIMPLEMENTED; a refused call is
    // RESOURCE_EXHAUSTED with its retry hint for gRPC clients.
    let (status, head, data, trailers) = declared_call(addr, "/test.Nowhere/Say", "x").await;
    assert_eq!((status.as_u16(), head.get("grpc-status").unwrap().as_bytes()), (200, &b"12"[..]));
    assert_eq!(head.get("content-type").unwrap(), "application/grpc");
    assert!(data.is_empty() && trailers.is_none());
    let (_, head, _, _) = declared_call(addr, "/test.Echo/Limited", "first").await;
    assert!(head.get("grpc-status").is_none(), "the first call passes: {head:?}");
    let (status, head, data, trailers) = declared_call(addr, "/test.Echo/Limited", "again").await;
    assert_eq!((status.as_u16(), head.get("grpc-status").unwrap().as_bytes()), (200, &b"8"[..]));
    let pushback: u64 =
        head.get("grpc-retry-pushback-ms").unwrap().to_str().unwrap().parse().unwrap();
    assert!(pushback > 0 && pushback <= 3_600_000, "{pushback}");
    assert!(data.is_empty() && trailers.is_none());

    // Counted by the status each call ended with, and by what it counts as over HTTP.
    let metrics = metrics_once_counted(admin, "grpc_code=\"8\"").await;
    let count = |family: &str, labels: &str| {
        let prefix = format!("{family}{{{labels}}} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::to_string)
    };
    let calls = "spillway_grpc_calls_total";
    assert_eq!(count(calls, r#"route="grpc",cluster="echo",grpc_code="0""#).as_deref(), Some("1"));
    assert_eq!(count(calls, r#"route="grpc",cluster="echo",grpc_code="5""#).as_deref(), Some("1"));
    assert_eq!(count(calls, r#"route="",cluster="",grpc_code="12""#).as_deref(), Some("1"));
    assert_eq!(
        count(calls, r#"route="limited",cluster="echo",grpc_code="8""#).as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        count(calls, r#"route="limited",cluster="echo",grpc_code="0""#).as_deref(),
        Some("1"),
        "{metrics}"
    );
    stop(gw).await;
}
