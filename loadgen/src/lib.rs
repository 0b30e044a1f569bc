//! peerd loadgen (placeholder).
