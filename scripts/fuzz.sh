#!/usr/bin/env bash
# `make fuzz`: runs the cargo-fuzz targets (frame decoder, envelope decoder) for FUZZ_SECS
# seconds each (default 60). cargo-fuzz needs nightly compiler features: it uses the nightly
# toolchain when one is installed, otherwise the stable compiler with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECS:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
for target in frame envelope; do
  echo "== fuzzing $target for ${secs}s"
  "${fuzz[@]}" run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
