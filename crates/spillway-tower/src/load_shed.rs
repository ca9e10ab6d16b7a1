//! BBR-style adaptive load shedding layer (CPU + inflight), fed by the CPU sampler.
