//! peerd client (placeholder).
