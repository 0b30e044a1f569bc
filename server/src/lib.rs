//! peerd server (placeholder).
