//! Deadline / timeout layer: honours an incoming `grpc-timeout` or `x-request-timeout`, propagates the remaining budget, fails fast when too little is left.
