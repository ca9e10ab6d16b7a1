//! `spillway top`: the live dashboard in a terminal, for an operator on an SSH session —
//! per-route rates and latency quantiles, breakers, pools, BBR, retries, hot keys, failback
//! depths and plans, redrawn at every snapshot of the gateway's `GET /admin/stream`.
//!
//! `stream` is the HTTP client and event reader, `snapshot` the JSON it reads, `render` the
//! pure frame (two snapshots in, lines out); this file holds the arguments and the redraw loop.

pub mod render;
pub mod snapshot;
pub mod stream;

use render::{render, FrameOptions};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use stream::{AdminAddress, SnapshotStream, TopError};

/// The environment variable read when `--token` is not given.
const TOKEN_VARIABLE: &str = "SPILLWAY_ADMIN_TOKEN";

/// Arguments of `spillway top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The gateway's admin listener: http://HOST:PORT or HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:9901")]
    pub admin: String,
    /// The admin token (`admin.token`), sent as `Authorization: Bearer`
    /// [default: the SPILLWAY_ADMIN_TOKEN environment variable].
    #[arg(long)]
    pub token: Option<String>,
    /// Print one frame (after two snapshots, so rates exist) without terminal codes, and exit.
    #[arg(long)]
    pub once: bool,
    /// Most routes listed, the busiest first.
    #[arg(long, default_value_t = 20)]
    pub routes: usize,
    /// How long to wait for the admin listener to answer, and then for each snapshot.
    #[arg(long, default_value = "10s", value_parser = spillway_gateway::config::duration::parse_duration)]
    pub timeout: Duration,
}

/// Runs `spillway top`.
pub fn main(args: TopArgs) -> anyhow::Result<ExitCode> {
    let admin = AdminAddress::parse(&args.admin)?;
    let token = args.token.or_else(|| std::env::var(TOKEN_VARIABLE).ok()).filter(|t| !t.is_empty());
    let options = FrameOptions { admin: admin.authority(), max_routes: args.routes.max(1) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        if args.once {
            once(&admin, token.as_deref(), &options, args.timeout).await
        } else {
            live(&admin, token.as_deref(), &options, args.timeout).await
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Prints one plain frame from the next two snapshots.
async fn once(
    admin: &AdminAddress,
    token: Option<&str>,
    options: &FrameOptions,
    patience: Duration,
) -> Result<(), TopError> {
    let mut stream = SnapshotStream::open(admin, token, patience).await?;
    let first = stream.next().await?;
    let second = stream.next().await?;
    let mut out = std::io::stdout().lock();
    for line in render(&first, &second, options) {
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

/// Terminal codes: the alternate screen and a hidden cursor while running, restored at exit.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

/// Redraws at every snapshot until Ctrl-C or SIGTERM. A first connection that fails ends it
/// with the error; a stream lost later is reopened every second (the gateway may be
/// restarting), with the last frame kept on screen under a note.
async fn live(
    admin: &AdminAddress,
    token: Option<&str>,
    options: &FrameOptions,
    patience: Duration,
) -> Result<(), TopError> {
    let stream = SnapshotStream::open(admin, token, patience).await?;
    let mut screen = Screen { out: std::io::stdout(), last: Vec::new() };
    screen.write(ENTER);
    let outcome = tokio::select! {
        outcome = redraw(stream, admin, token, options, patience, &mut screen) => outcome,
        () = stop_signal() => Ok(()),
    };
    screen.write(LEAVE);
    outcome
}

async fn redraw(
    mut stream: SnapshotStream,
    admin: &AdminAddress,
    token: Option<&str>,
    options: &FrameOptions,
    patience: Duration,
    screen: &mut Screen,
) -> Result<(), TopError> {
    let mut previous = None;
    loop {
        match stream.next().await {
            Ok(current) => {
                match &previous {
                    Some(previous) => screen.frame(render(previous, &current, options)),
                    None => screen.frame(vec![format!(
                        "spillway top  {}  connected; rates start with the next snapshot",
                        stream.address()
                    )]),
                }
                previous = Some(current);
            }
            Err(lost) => {
                screen.note(&format!(
                    "{}; reconnecting every second (Ctrl-C quits)",
                    with_causes(&lost)
                ));
                stream = loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match SnapshotStream::open(admin, token, patience).await {
                        Ok(stream) => break stream,
                        Err(e @ (TopError::TokenNeeded(_) | TopError::TokenRefused(_))) => {
                            return Err(e)
                        }
                        Err(e) => {
                            screen.note(&format!("{}; reconnecting every second", with_causes(&e)))
                        }
                    }
                };
                // Counters may have restarted with the gateway: rates start over.
                previous = None;
            }
        }
    }
}

/// The error and its causes, `: `-separated (as `spillway` prints a fatal error).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The terminal: each frame overwrites the previous one in place.
struct Screen {
    out: std::io::Stdout,
    last: Vec<String>,
}

impl Screen {
    fn write(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Draws `lines` from the top-left corner, clearing what is left of the previous frame.
    fn frame(&mut self, lines: Vec<String>) {
        self.draw(&lines, 0);
        self.last = lines;
    }

    /// Draws `lines` fitted to the terminal's size now (read at every frame, so a resized
    /// terminal gets fitted frames), keeping the last `keep` lines when rows run short.
    fn draw(&mut self, lines: &[String], keep: usize) {
        let fitted = match terminal_size::terminal_size_of(&self.out) {
            Some((terminal_size::Width(cols), terminal_size::Height(rows))) => {
                render::fit(lines.to_vec(), usize::from(rows), usize::from(cols), keep)
            }
            None => lines.to_vec(),
        };
        let mut text = String::from("\x1b[H");
        for line in &fitted {
            text.push_str(line);
            text.push_str("\x1b[K\n");
        }
        text.push_str("\x1b[J");
        self.write(&text);
    }

    /// The last frame again, with `note` under it.
    fn note(&mut self, note: &str) {
        let mut lines = self.last.clone();
        lines.push(String::new());
        lines.push(format!("!! {note}"));
        self.draw(&lines, 2);
    }
}
