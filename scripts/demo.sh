#!/usr/bin/env bash
# The README's first command (`make run`): builds the binaries, creates a development key
# outside the repository if there is none, starts rpc-server on 127.0.0.1:7878, shows a real
# call, and keeps the server running in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins --quiet
bin=target/release
listen=${RPC_LISTEN:-127.0.0.1:7878}

# The key lives in ~/.config/rpckit/keyring (or $RPC_KEYRING), mode 0600, never in git.
"$bin/rpc-server" keygen --if-missing

ready=$(mktemp)
trap 'rm -f "$ready"' EXIT
# Its own session, so Ctrl-C reaches only this script, which passes on exactly one SIGTERM
# (a second signal would make the server exit without draining).
# rpc-client offers hmac-sha256, which the server's default (encrypted) refuses.
setsid "$bin/rpc-server" --listen "$listen" >"$ready" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; status=$?; rm -f "$ready"; exit $status' INT TERM

# Wait (at most 30 s) for the ready line.
for _ in $(seq 300); do
  grep -q 'listening on' "$ready" && break
  kill -0 "$server" 2>/dev/null || { echo "rpc-server failed to start (is $listen in use?)" >&2; exit 1; }
  sleep 0.1
done
grep 'listening on' "$ready" || { echo "rpc-server did not become ready" >&2; kill "$server"; exit 1; }
addr=$(sed -n 's/^rpc-server listening on //p' "$ready")

echo
echo "\$ rpc-client call uppercase hello"
"$bin/rpc-client" --addr "$addr" call uppercase hello
echo
echo "The server keeps running. From another terminal, try:"
echo "  $bin/rpc-client call uppercase hello"
echo "  $bin/rpc-client call echo 'hi there'"
echo "  $bin/rpc-client --help"
echo "Press Ctrl-C to stop it (it drains and exits 0)."
wait "$server"
