//! Handshake failure tests (being written).
