//! Adaptive overload protection: the BBR-style CPU + inflight shedder (kratos), CoDel queue admission and the adaptive-LIFO switch.
