//! Circuit breakers: Google SRE adaptive client throttling and the classic closed / open / half-open state machine.
