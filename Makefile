# rpckit: each target is a thin wrapper over cargo (or a script in scripts/).
CARGO ?= cargo

.PHONY: build run demo test lint fmt bench bench-suites soak fuzz clean

## build: debug build of every crate and binary
build:
	$(CARGO) build --workspace --bins

## run (or demo): build, create a dev key if missing (outside git), start rpc-server on
## 127.0.0.1:7878, show a real call; Ctrl-C stops the server
run demo:
	scripts/demo.sh

## test: format check, clippy with warnings as errors, then every test (unit, property,
## integration against the real binaries, a short soak and a bench smoke run)
test: lint
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

## lint: rustfmt check and clippy on all targets, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: release build; kit vs raw reference, pinned to CPUs, then the encrypting suite vs
## the integrity-only one (as bench-suites); prints both tables
## (knobs: BENCH_SECS, BENCH_WARMUP, BENCH_ROUNDS, BENCH_WORKLOADS, BENCH_IDLE_CONNS,
## BENCH_STRICT, RPC_SUITE; `cargo run --release -p rpckit-load --bin rpc-bench -- --help`)
bench:
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p rpckit-load --bin rpc-bench --; kit=$$?; \
	$(CARGO) run --release -p rpckit-load --bin rpc-bench -- suites; suites=$$?; \
	test $$kit -eq 0 && test $$suites -eq 0

## bench-suites: release build; only the suite table: the client's default encrypting suite
## (RPC_SUITE=aes-256-gcm,chacha20-poly1305 for both) vs hmac-sha256, same binaries, paired
## rounds; W1-W3 and W5 must reach 0.95 of hmac-sha256
bench-suites:
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p rpckit-load --bin rpc-bench -- suites

## soak: bounded soak (SOAK_SECS, default 60) of many clients with random faults
soak:
	$(CARGO) build --release --workspace --bins
	SOAK_SECS=$${SOAK_SECS:-60} $(CARGO) test --release -p rpckit-integration-tests --test soak -- --nocapture

## fuzz: cargo-fuzz on the frame and envelope decoders (needs the nightly toolchain)
fuzz:
	scripts/fuzz.sh

clean:
	$(CARGO) clean
