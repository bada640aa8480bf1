# Sourced by scripts/w1-path.sh: a scratch folder, starting a
# server and waiting for its ready line, and stopping what they started. The sourcing script
# defines `die MESSAGE`.

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

# start NAME PREFIX COMMAND...: starts COMMAND in the background with stdout on a FIFO in
# $work and waits (30 s at most) for its first line, which must start with PREFIX; sets
# $started_pid and $started_addr (the rest of that line) and adds the pid to $started.
start() {
  local name=$1 prefix=$2 fd line
  shift 2
  mkfifo "$work/$name.out"
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  started_pid=$!
  started+=("$started_pid")
  exec {fd}<"$work/$name.out"
  if ! read -r -t 30 -u "$fd" line || [ "${line#"$prefix"}" = "$line" ]; then
    cat "$work/$name.err" >&2
    die "$name printed no ready line within 30s (got: ${line:-nothing})"
  fi
  started_addr=${line#"$prefix"}
  # The read end stays open ($fd) so that the server never writes into a closed pipe.
}
