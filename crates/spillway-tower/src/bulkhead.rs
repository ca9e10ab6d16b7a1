//! Bulkhead layer: bounded concurrency plus a bounded, criticality-ordered queue with a maximum wait.
