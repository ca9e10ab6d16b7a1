//! Keyed rate-limit layer: a key extractor plus a keyed limiter from `spillway-core`.
