//! Retry layer: backoff with jitter, a retry budget, and server retry hints honoured.
