//! Max-min fair sharing of a capacity among clients by their wants (Doorman style), used by global quota leasing.
