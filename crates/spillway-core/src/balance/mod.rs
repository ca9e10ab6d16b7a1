//! Load-balancing choosers over endpoint statistics: round robin, smooth weighted round robin, least-request, P2C with peak-EWMA, consistent hashing.
