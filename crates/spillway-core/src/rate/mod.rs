//! Rate limiters: token bucket, leaky bucket, fixed and sliding windows, GCRA, warm-up, and keyed limiters over millions of keys.
