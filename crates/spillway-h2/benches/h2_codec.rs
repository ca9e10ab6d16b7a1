//! Criterion benches of the HTTP/2 codec (placeholder until the connection exists).
fn main() {}
