//! Retries: exponential backoff with jitter, retry budgets, and parsing of server retry hints (`Retry-After`).
