//! Concurrency limits learned from latency: AIMD and Gradient2-style limiters.
