//! rpckit client library (work in progress).
