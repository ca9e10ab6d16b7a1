//! Spillway's load tools: an open-loop HTTP load generator with HDR percentiles, a capacity (knee) finder, and a traffic recorder and replayer.
