//! `spillway grpc`: the gRPC benchmark tools — `echo`, an h2c gRPC echo server to put behind a
//! proxy, and `stream`, a load of bidirectional calls kept open through it — handed to
//! `spillway_load::grpc` (bench/grpc.sh uses both).

use spillway_load::grpc::{run_stream_load, serve_echo, EchoServerKind, StreamLoadConfig};
use spillway_load::units::parse_duration;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `spillway grpc`.
#[derive(Debug, clap::Args)]
pub struct GrpcArgs {
    #[command(subcommand)]
    pub tool: GrpcTool,
}

/// The gRPC tools.
#[derive(Debug, clap::Subcommand)]
pub enum GrpcTool {
    /// An h2c gRPC server answering every call (unary or streaming, any method) by echoing each
    /// whole message as it arrives, then grpc-status 0 when the client ends its stream.
    Echo(EchoArgs),
    /// Keep CONNECTIONS × STREAMS bidirectional calls open through an h2c target, one message in
    /// flight per call (send, wait for the echo, send the next), for DURATION; prints messages/s
    /// and the message round-trip latency as JSON. Fails when a call fails.
    Stream(StreamArgs),
}

/// Arguments of `spillway grpc echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Listen on a non-loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Exit after this long [default: run until SIGINT/SIGTERM].
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Server threads (1: a single event loop).
    #[arg(long, default_value = "1")]
    pub threads: NonZeroUsize,
    /// The HTTP/2 server: `lean` (spillway's codec, about 1 µs of CPU per unary call, so that a
    /// benchmark measures the proxy in front) or `hyper` (what tonic runs on, several times
    /// that: an upstream of a real service's weight).
    #[arg(long, value_enum, default_value = "lean")]
    pub server: EchoServer,
}

/// `--server` of `spillway grpc echo`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EchoServer {
    /// spillway's own HTTP/2 codec, one task per connection.
    Lean,
    /// hyper's HTTP/2 server, a task per stream.
    Hyper,
}

/// Arguments of `spillway grpc stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// The h2c target (a proxy or the echo server), e.g. 127.0.0.1:18290.
    #[arg(long)]
    pub target: SocketAddr,
    /// The calls' path.
    #[arg(long, default_value = "/bench.Echo/Chat")]
    pub path: String,
    /// HTTP/2 connections.
    #[arg(short, long, default_value = "16")]
    pub connections: NonZeroUsize,
    /// Calls kept open on each connection.
    #[arg(short = 'm', long, default_value = "16")]
    pub streams: NonZeroUsize,
    /// How long messages are sent, e.g. 8s.
    #[arg(short, long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Bytes of the string field in each message.
    #[arg(long, default_value = "64")]
    pub message_size: usize,
}

/// Runs `spillway grpc`.
pub fn main(args: GrpcArgs) -> anyhow::Result<ExitCode> {
    match args.tool {
        GrpcTool::Echo(a) => {
            let kind = match a.server {
                EchoServer::Lean => EchoServerKind::Lean,
                EchoServer::Hyper => EchoServerKind::Hyper,
            };
            serve_echo(a.listen, a.allow_remote, kind, a.duration, a.threads)?;
        }
        GrpcTool::Stream(a) => {
            run_stream_load(StreamLoadConfig {
                target: a.target,
                path: a.path,
                connections: a.connections.get(),
                streams: a.streams.get(),
                duration: a.duration,
                message_size: a.message_size,
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
