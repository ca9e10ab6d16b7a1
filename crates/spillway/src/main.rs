//! The `spillway` binary: parses arguments and hands each subcommand to its library crate.
//!
//! Gateway commands (`run`, `check`, `demo`) live in `spillway-gateway`; tools (`load`,
//! `capacity`, `replay`, `backend`, `grpc`) in `spillway-load`. This file only dispatches.

#![forbid(unsafe_code)]

mod cmd;

/// mimalloc instead of the system allocator: see `Cargo.toml`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Spillway: an availability gateway and resilience toolkit for microservices.
#[derive(Debug, Parser)]
#[command(name = "spillway", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Run(cmd::run::RunArgs),
    /// Validate and inspect a config file.
    Check(cmd::check::CheckArgs),
    /// Start demo backends and a gateway in front of them, with an embedded config.
    Demo(cmd::demo::DemoArgs),
    /// Open-loop (or closed-loop) HTTP load test.
    Load(cmd::load::LoadArgs),
    /// Find the maximum rate a target sustains within a latency SLO.
    Capacity(cmd::capacity::CapacityArgs),
    /// Replay recorded traffic against a target.
    Replay(cmd::replay::ReplayArgs),
    /// A test backend with fixed capacity: N slots × a fixed service time, FIFO queue; failures,
    /// a slow tail and hard-down, switchable at run time with POST /control.
    Backend(cmd::backend::BackendArgs),
    /// gRPC benchmark tools: an h2c echo server (`echo`) and a load of open bidirectional calls
    /// counting messages per second (`stream`).
    Grpc(cmd::grpc::GrpcArgs),
    /// Register a service instance in etcd under a lease and keep it alive until SIGTERM (a
    /// sidecar for gateway clusters with `discovery: { etcd: ... }`).
    Register(cmd::register::RegisterArgs),
    /// The live dashboard in a terminal: per-route rates and latency, breakers, pools, BBR,
    /// retries, hot keys, failback and plans, from a gateway's admin `/admin/stream`.
    Top(cmd::top::TopArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd::run::main(args),
        Command::Check(args) => cmd::check::main(args),
        Command::Demo(args) => cmd::demo::main(args),
        Command::Load(args) => cmd::load::main(args),
        Command::Capacity(args) => cmd::capacity::main(args),
        Command::Replay(args) => cmd::replay::main(args),
        Command::Backend(args) => cmd::backend::main(args),
        Command::Grpc(args) => cmd::grpc::main(args),
        Command::Register(args) => cmd::register::main(args),
        Command::Top(args) => cmd::top::main(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("spillway: {error:#}");
            ExitCode::FAILURE
        }
    }
}
