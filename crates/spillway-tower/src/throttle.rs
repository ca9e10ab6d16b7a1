//! Google SRE adaptive client-side throttling layer, per upstream, with a response classifier.
