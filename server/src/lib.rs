//! rpckit server library (work in progress).
