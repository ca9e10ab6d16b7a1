//! gRPC end to end through the gateway: a tonic client, an h2c listener, an HTTP/2 cluster and
//! a tonic server. Message types are written by hand (prost derive), so no protoc is needed.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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

#[derive(Clone)]
struct EchoServer;

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
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<EchoReply, EchoRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.unary(Say, req).await)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_calls_and_statuses_pass_through() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    // The tonic service, served over h2c by hyper.
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let svc = tower::ServiceExt::map_request(
                EchoServer,
                |r: http::Request<hyper::body::Incoming>| r.map(tonic::body::Body::new),
            );
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
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
            Err(code) => {
                let status = result.unwrap_err();
                assert_eq!(status.code(), code);
                assert_eq!(status.message(), "no such thing");
            }
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let svc = tower::ServiceExt::map_request(
                EchoServer,
                |r: http::Request<hyper::body::Incoming>| r.map(tonic::body::Body::new),
            );
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
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
