//! Deadlines: a request's remaining time budget, parsed from and formatted to `grpc-timeout` and `x-request-timeout`.
