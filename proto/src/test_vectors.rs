//! Test vectors of docs/PROTOCOL.md (being written).
