//! An h2c (prior knowledge) test server on the sans-IO connection, for trying the crate with
//! curl, nghttp or h2load: `cargo run --release -p spillway-h2 --example h2c_server -- 127.0.0.1:8082`.
//! The application is the interop tests' one (`tests/driver/mod.rs`).

#[path = "../tests/driver/mod.rs"]
mod driver;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8082".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("h2c on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(driver::serve(socket));
    }
}
