//! Criticality propagation: reads the class from the request header, stores it in extensions, forwards it downstream unchanged.
