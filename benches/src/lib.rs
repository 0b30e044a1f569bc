//! End-to-end benches (see benches/).
