//! Helpers for tests that drive the real binaries.
