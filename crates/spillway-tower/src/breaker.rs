//! Classic circuit breaker layer (closed / open / half-open) with a response classifier.
