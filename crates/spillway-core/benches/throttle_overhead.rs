//! Benchmark placeholder (filled in by the core rate / overload work).
fn main() {}
