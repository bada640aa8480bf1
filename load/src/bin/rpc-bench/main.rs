//! `rpc-bench`: runs `make bench`.
fn main() {}
