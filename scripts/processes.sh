# Sourced by the benchmark scripts (bench.sh, w1-path.sh): a scratch folder, and stopping
# what they started.

# stop_all PID...: SIGTERM to each process, up to 5 s each to exit (a server drains first),
# then SIGKILL; reaps them.
stop_all() {
  local pid
  for pid in "$@"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "$@"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# start_work NAME: makes the scratch folder $work (rpckit-NAME.* under $TMPDIR) and, on exit,
# stops every process whose pid the script added to $started and removes $work.
start_work() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/rpckit-$1.XXXXXX")
  started=()
  trap 'stop_all ${started[@]+"${started[@]}"}; rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM
}
