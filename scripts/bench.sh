#!/usr/bin/env bash
# `make bench`: the kit (rpc-server + rpc-client's kit driver) against the raw reference
# (rpc-raw-reference + rpc-client --raw), same engine, same run, same machine.
#
# Servers are pinned to one CPU and load clients to another; every wait on a process is a wait
# on its ready line, never a fixed sleep. Workloads (durations from BENCH_SECS, default 5, and
# BENCH_WARMUP, default 1; BENCH_IDLE_CONNS, default 5000):
#   W1 latency      1 connection, depth 1, uppercase "hello"
#   W2 multiplexed  1 connection, depth 32
#   W3 fan-in       64 connections, depth 1
#   W4 bulk         echo 65536 bytes, 4 connections
#   W5 churn        connect, one call, close; 8 loops
#   W6 memory       BENCH_IDLE_CONNS idle connections: server VmRSS growth per connection
# plus this machine's SHA-256 speed, which W4's target accounts for (see the table footnotes).
#
# Prints the table; writes it as markdown to target/bench/latest.md and every raw result to
# target/bench/*.json. Exits 0 once everything ran (BENCH_STRICT=1: exit 1 if a target fails).
# Everything it starts is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

BENCH_SECS=${BENCH_SECS:-5}
BENCH_WARMUP=${BENCH_WARMUP:-1}
BENCH_IDLE_CONNS=${BENCH_IDLE_CONNS:-5000}
BENCH_STRICT=${BENCH_STRICT:-0}
server_cpu=${BENCH_SERVER_CPU:-0}
client_cpu=${BENCH_CLIENT_CPU:-1}
want_fds=65536
ready_timeout=30
# Every process here (kit and reference alike) runs on async-std and is pinned to one CPU:
# one executor thread per process, so tasks do not hand off between threads on one core.
export ASYNC_STD_THREAD_COUNT=${ASYNC_STD_THREAD_COUNT:-1}

if [ -n "${MAKELEVEL:-}" ]; then invoked="make bench"; else invoked="scripts/bench.sh"; fi
command_line="BENCH_SECS=$BENCH_SECS BENCH_WARMUP=$BENCH_WARMUP BENCH_IDLE_CONNS=$BENCH_IDLE_CONNS ASYNC_STD_THREAD_COUNT=$ASYNC_STD_THREAD_COUNT $invoked"

die() { echo "bench: $*" >&2; exit 1; }
command -v taskset >/dev/null || die "taskset (util-linux) is needed to pin processes to CPUs"
command -v python3 >/dev/null || die "python3 is needed to read the JSON results"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (servers on one, clients on another)"

echo "bench: cargo build --release --bins" >&2
cargo build --release --bins
bin=$root/target/release
out=$root/target/bench
mkdir -p "$out"
rm -f "$out"/*.json "$out/latest.md"

# 5,000 idle connections need 5,000 descriptors in the client and as many in the server.
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want_fds" ]; then
  ulimit -Hn "$want_fds" 2>/dev/null || true
fi
ulimit -Sn "$want_fds" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((BENCH_IDLE_CONNS + 1024)) ] \
  || die "ulimit -n is $(ulimit -n), too low for $BENCH_IDLE_CONNS connections (run as root, or lower BENCH_IDLE_CONNS)"

work=$(mktemp -d "${TMPDIR:-/tmp}/rpckit-bench.XXXXXX")
started=()
cleanup() {
  local pid
  for pid in "${started[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${started[@]}"; do
    # Up to 5 s to drain, then for good.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Seconds allowed for one client run before `timeout` stops it (it stops by itself long before).
limit=$(python3 -c "import sys; print(int(float(sys.argv[1]) + float(sys.argv[2]) + 60))" \
  "$BENCH_SECS" "$BENCH_WARMUP")
idle_limit=$(python3 -c "import sys; print(int(float(sys.argv[1]) + 300))" "$BENCH_SECS")

env -u RPC_KEY -u RPC_KEY_ID "$bin/rpc-server" keygen --keyring "$work/keyring" >/dev/null
clean_env=(env -u RUST_LOG -u RPC_KEY -u RPC_KEY_ID -u RPC_ADDR -u RPC_LOG_LEVEL)

# record COMMAND...: appends the command line, with paths shortened, to commands.txt.
: >"$out/commands.txt"
record() {
  echo "$*" | sed "s|$root/||g; s|$work|\$TMP|g" >>"$out/commands.txt"
}

# start NAME PREFIX COMMAND...: starts COMMAND in the background with stdout on a FIFO and
# waits for its line starting with PREFIX; sets $started_pid and $started_addr.
start() {
  local name=$1 prefix=$2 fd line
  shift 2
  mkfifo "$work/$name.out"
  record "$@"
  "${clean_env[@]}" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  started_pid=$!
  started+=("$started_pid")
  exec {fd}<"$work/$name.out"
  if ! read -r -t "$ready_timeout" -u "$fd" line || [ "${line#"$prefix"}" = "$line" ]; then
    cat "$work/$name.err" >&2
    die "$name printed no ready line within ${ready_timeout}s (got: ${line:-nothing})"
  fi
  started_addr=${line#"$prefix"}
  # The read end stays open ($fd) so that the server never writes into a closed pipe.
}

start kit-server "rpc-server listening on " \
  taskset -c "$server_cpu" "$bin/rpc-server" --listen 127.0.0.1:0 \
  --keyring "$work/keyring" --log-level warn --max-connections 20000 \
  --max-unauthenticated 1000 --max-in-flight 1024
kit_pid=$started_pid kit_addr=$started_addr
start raw-server "rpc-raw-reference listening on " \
  taskset -c "$server_cpu" "$bin/rpc-raw-reference" --listen 127.0.0.1:0
ref_pid=$started_pid ref_addr=$started_addr
client=(taskset -c "$client_cpu" "$bin/rpc-client" --keyring "$work/keyring")

# check_alive NAME PID: dies with the server's exit status and log if it is gone.
check_alive() {
  local status=0
  kill -0 "$2" 2>/dev/null && return 0
  wait "$2" 2>/dev/null || status=$?
  echo "--- $1 log:" >&2
  tail -n 20 "$work/$1.err" >&2 || true
  if [ "$status" -gt 128 ]; then
    die "$1 (pid $2) is gone: killed by signal $((status - 128))"
  fi
  if [ "$status" -eq 0 ]; then
    die "$1 (pid $2) is gone: exit status 0, i.e. it got SIGTERM or SIGINT from outside this script"
  fi
  die "$1 (pid $2) is gone: exit status $status"
}

# rss_kib PID: the process's VmRSS in KiB.
rss_kib() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# cpu_secs PID: user + system CPU time of the process (all its threads) so far, in seconds.
clk_tck=$(getconf CLK_TCK)
cpu_secs() {
  sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$clk_tck" '{ printf "%.3f\n", ($12 + $13) / hz }'
}

# children_cpu_secs FILE: user + system CPU time of this shell's finished children, in seconds,
# from FILE written by `times` (which must run in this shell, not in a $(...) subshell).
children_cpu_secs() {
  awk 'NR == 2 { s = 0; for (i = 1; i <= NF; i++) { split($i, p, "m"); sub("s", "", p[2]);
    s += p[1] * 60 + p[2] } printf "%.3f\n", s }' "$1"
}

# bench NAME kit|ref ARGS...: one rpc-client bench run, JSON into target/bench/NAME.json, and
# the CPU time the server and the client used during it into NAME-cpu.json.
bench() {
  local name=$1 side=$2 addr pid s0 c0 t0
  shift 2
  if [ "$side" = kit ]; then addr=$kit_addr pid=$kit_pid; else addr=$ref_addr pid=$ref_pid; fi
  check_alive kit-server "$kit_pid"
  check_alive raw-server "$ref_pid"
  local cmd=("${client[@]}" --addr "$addr" bench)
  if [ "$side" = ref ]; then cmd+=(--raw); fi
  cmd+=("$@" --json)
  echo "bench: $name" >&2
  record "${cmd[@]}"
  times >"$work/times-before"
  s0=$(cpu_secs "$pid") c0=$(children_cpu_secs "$work/times-before") t0=$(date +%s.%N)
  if ! timeout --kill-after=5 "$limit" "${clean_env[@]}" "${cmd[@]}" >"$out/$name.json" \
    2>"$work/$name.err"; then
    cat "$work/$name.err" >&2
    check_alive kit-server "$kit_pid"
    check_alive raw-server "$ref_pid"
    die "$name failed"
  fi
  times >"$work/times-after"
  printf '{"wall_secs": %s, "server_cpu_secs": %s, "client_cpu_secs": %s}\n' \
    "$(echo "$(date +%s.%N) $t0" | awk '{ printf "%.3f", $1 - $2 }')" \
    "$(echo "$(cpu_secs "$pid") $s0" | awk '{ printf "%.3f", $1 - $2 }')" \
    "$(echo "$(children_cpu_secs "$work/times-after") $c0" | awk '{ printf "%.3f", $1 - $2 }')" >"$out/$name-cpu.json"
}

# idle NAME kit|ref SERVER_PID: W6, server RSS before and while holding the connections.
idle() {
  local name=$1 side=$2 pid=$3 addr fd line before held cpid
  if [ "$side" = kit ]; then addr=$kit_addr; else addr=$ref_addr; fi
  check_alive kit-server "$kit_pid"
  check_alive raw-server "$ref_pid"
  local cmd=("${client[@]}" --addr "$addr" bench --idle --conns "$BENCH_IDLE_CONNS"
    --duration "$BENCH_SECS" --json)
  if [ "$side" = ref ]; then cmd+=(--raw); fi
  echo "bench: $name ($BENCH_IDLE_CONNS idle connections)" >&2
  record "${cmd[@]}"
  before=$(rss_kib "$pid")
  mkfifo "$work/$name.out"
  timeout --kill-after=5 "$idle_limit" "${clean_env[@]}" "${cmd[@]}" >"$work/$name.out" \
    2>"$work/$name.err" &
  cpid=$!
  started+=("$cpid")
  exec {fd}<"$work/$name.out"
  if ! read -r -t "$idle_limit" -u "$fd" line || [ "${line#holding }" = "$line" ]; then
    cat "$work/$name.err" >&2
    die "$name: no 'holding N idle connections' line (got: ${line:-nothing})"
  fi
  held=$(rss_kib "$pid")
  cat <&"$fd" >"$out/$name.json"
  exec {fd}<&-
  wait "$cpid" || { cat "$work/$name.err" >&2; die "$name failed"; }
  printf '{"rss_before_kib": %s, "rss_held_kib": %s, "holding_line": "%s"}\n' \
    "$before" "$held" "$line" >"$out/$name-rss.json"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# SHA-256 speed on the server's CPU (both servers idle meanwhile).
echo "bench: sha256" >&2
sha_cmd=(taskset -c "$server_cpu" "$bin/rpc-client" bench --sha256 --json)
record "${sha_cmd[@]}"
"${sha_cmd[@]}" >"$out/sha256.json"

# W6 first, on fresh servers, so that the baseline is not inflated by earlier load.
idle w6-kit kit "$kit_pid"
idle w6-ref ref "$ref_pid"

t=(--duration "$BENCH_SECS" --warmup "$BENCH_WARMUP")
for side in kit ref; do bench "w1-$side" "$side" "${t[@]}" --conns 1 --depth 1 --method uppercase --payload 5; done
for side in kit ref; do bench "w2-$side" "$side" "${t[@]}" --conns 1 --depth 32 --method uppercase --payload 5; done
for side in kit ref; do bench "w3-$side" "$side" "${t[@]}" --conns 64 --depth 1 --method uppercase --payload 5; done
for side in kit ref; do bench "w4-$side" "$side" "${t[@]}" --conns 4 --depth 1 --method echo --payload 65536; done
for side in kit ref; do bench "w5-$side" "$side" "${t[@]}" --conns 8 --churn --method uppercase --payload 5; done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit (uncommitted changes)"; fi

BENCH_OUT=$out BENCH_COMMAND=$command_line BENCH_NPROC=$(nproc) BENCH_CPU=${cpu_model:-unknown} \
BENCH_KERNEL="$(uname -sr)" BENCH_COMMIT=$commit BENCH_RUSTC="$(rustc --version)" \
BENCH_LOAD="$load_before -> $load_after" BENCH_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
BENCH_SERVER_CPU=$server_cpu BENCH_CLIENT_CPU=$client_cpu BENCH_SECS=$BENCH_SECS \
BENCH_WARMUP=$BENCH_WARMUP BENCH_IDLE_CONNS=$BENCH_IDLE_CONNS BENCH_STRICT=$BENCH_STRICT \
python3 - <<'PY'
import json, os, sys

env = os.environ
out = env["BENCH_OUT"]

def load(name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)

sha = load("sha256")["sha256_bytes_per_sec"] / 1e6  # MB/s
r = {n: load(n) for n in [f"w{i}-{s}" for i in range(1, 6) for s in ("kit", "ref")]}
for s in ("kit", "ref"):
    r[f"w6-{s}"] = load(f"w6-{s}")
    r[f"w6-{s}-rss"] = load(f"w6-{s}-rss")

def errors(name):
    return r[name]["errors"]

def kib_per_conn(s):
    rss, rep = r[f"w6-{s}-rss"], r[f"w6-{s}"]
    held = rep["connections_held"] or 0
    return (rss["rss_held_kib"] - rss["rss_before_kib"]) / held if held else float("nan")

ref4 = r["w4-ref"]["mb_per_sec"]
adj4 = 1 / (1 / ref4 + 2 / sha) if ref4 > 0 and sha > 0 else 0.0

# (workload, unit, kit, ref, better, target factor or None, runs whose errors count)
rows = [
    ("W1 latency p50 (1 conn, depth 1)", "us", r["w1-kit"]["latency_us"]["p50"],
     r["w1-ref"]["latency_us"]["p50"], "lower", None, "w1"),
    ("W1 latency p99", "us", r["w1-kit"]["latency_us"]["p99"],
     r["w1-ref"]["latency_us"]["p99"], "lower", 1.2, "w1"),
    ("W1 calls/s", "calls/s", r["w1-kit"]["calls_per_sec"], r["w1-ref"]["calls_per_sec"],
     "higher", 0.92, "w1"),
    ("W2 multiplexed (1 conn, depth 32)", "calls/s", r["w2-kit"]["calls_per_sec"],
     r["w2-ref"]["calls_per_sec"], "higher", 0.80, "w2"),
    ("W3 fan-in (64 conns, depth 1)", "calls/s", r["w3-kit"]["calls_per_sec"],
     r["w3-ref"]["calls_per_sec"], "higher", 0.90, "w3"),
    ("W4 bulk (echo 64 KiB, 4 conns), raw ref", "MB/s", r["w4-kit"]["mb_per_sec"], ref4,
     "higher", None, "w4"),
    ("W4 bulk vs hash-adjusted ref [a]", "MB/s", r["w4-kit"]["mb_per_sec"], adj4,
     "higher", 0.85, "w4"),
    ("W5 churn (8 loops)", "conns/s", r["w5-kit"]["connections_per_sec"] or 0.0,
     r["w5-ref"]["connections_per_sec"] or 0.0, "higher", 0.80, "w5"),
    (f"W6 memory ({env['BENCH_IDLE_CONNS']} idle conns) [b]", "KiB/conn", kib_per_conn("kit"),
     kib_per_conn("ref"), "lower", "8 KiB", "w6"),
]

def fmt(v):
    if v != v:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"

table = []
failed = []
for name, unit, kit, ref, better, factor, run in rows:
    ratio = kit / ref if ref else float("nan")
    errs = f"{errors(run + '-kit')}/{errors(run + '-ref')}"
    if factor is None:
        target, verdict = "—", "—"
    elif isinstance(factor, str):
        # An absolute bound on the kit ("8 KiB" per connection), not a ratio.
        bound = float(factor.split()[0])
        target = f"≤ {factor}/conn"
        ok = kit <= bound and errors(run + "-kit") == 0
        verdict = "pass" if ok else "FAIL"
        if not ok:
            failed.append(name)
    else:
        target = f"≤ {factor}× ref" if better == "lower" else f"≥ {factor}× ref"
        ok = ratio <= factor if better == "lower" else ratio >= factor
        ok = ok and errors(run + "-kit") == 0 and errors(run + "-ref") == 0
        verdict = "pass" if ok else "FAIL"
        if not ok:
            failed.append(name)
    table.append([name, f"{fmt(kit)} {unit}", f"{fmt(ref)} {unit}",
                  f"{fmt(ratio)}×", target, verdict, errs])
table.append(["SHA-256, one core, 64 KiB buffers", f"{fmt(sha)} MB/s", "", "", "—", "—", ""])

head = ["workload", "kit", "reference", "kit ÷ ref", "target", "result", "errors kit/ref"]
widths = [max(len(row[i]) for row in table + [head]) for i in range(len(head))]
def line(cells):
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
lines = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
lines += [line(row) for row in table]

# Where the time went: CPU used by each process during each run, as a share of one core.
cpu_rows = []
for i, label in [(1, "W1 latency"), (2, "W2 multiplexed"), (3, "W3 fan-in"), (4, "W4 bulk"),
                 (5, "W5 churn")]:
    cells = [label]
    for s in ("kit", "ref"):
        c = load(f"w{i}-{s}-cpu")
        rep = r[f"w{i}-{s}"]
        wall = c["wall_secs"] or float("nan")
        calls = rep["calls"] or float("nan")
        per_call = lambda cpu: cpu / wall * rep["duration_secs"] / calls * 1e6
        cells += [f"{c['server_cpu_secs'] / wall * 100:.0f} %",
                  f"{c['client_cpu_secs'] / wall * 100:.0f} %",
                  f"{fmt(per_call(c['server_cpu_secs']))} / {fmt(per_call(c['client_cpu_secs']))}"]
    cpu_rows.append(cells)
cpu_head = ["run", "kit server CPU", "kit client CPU", "kit CPU us/call srv/cli",
            "ref server CPU", "ref client CPU", "ref CPU us/call srv/cli"]
cw = [max(len(row[i]) for row in cpu_rows + [cpu_head]) for i in range(len(cpu_head))]
def cline(cells):
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, cw)) + " |"
cpu_lines = [cline(cpu_head), "|" + "|".join("-" * (w + 2) for w in cw) + "|"]
cpu_lines += [cline(row) for row in cpu_rows]
cpu_note = ("CPU: user + system time of the server process (/proc/PID/stat) and of the load "
            "client over the whole client run (connect, warmup, window, close), as a share of "
            "one core (the server is pinned to one CPU, so 100 % means that core was saturated). "
            "us/call ≈ CPU per second of run × window ÷ calls counted (W5: per connection).")

w6 = {s: r[f"w6-{s}-rss"] for s in ("kit", "ref")}
held = {s: r[f"w6-{s}"]["connections_held"] for s in ("kit", "ref")}
notes = [
    f"[a] Adjusted reference = 1 / (1/ref + 2/sha) with ref = {fmt(ref4)} MB/s (the raw "
    f"reference's request+response payload throughput) and sha = {fmt(sha)} MB/s (SHA-256 on "
    f"one core): the kit tags and checks every frame, i.e. per call the request and the "
    f"response payload (2 × 64 KiB counted) are each hashed twice (tag by the sender, check by "
    f"the receiver) = 4 × 64 KiB hashed, 2 bytes hashed per counted byte, taken as if none of "
    f"it overlapped. Adjusted = {fmt(adj4)} MB/s; target kit ≥ 0.85 × adjusted.",
    f"[b] (VmRSS of the server while holding − VmRSS before) ÷ connections held: kit "
    f"{w6['kit']['rss_before_kib']} → {w6['kit']['rss_held_kib']} KiB over {held['kit']} "
    f"connections, reference {w6['ref']['rss_before_kib']} → {w6['ref']['rss_held_kib']} KiB "
    f"over {held['ref']}. Measured first, on freshly started servers. Kernel socket buffers "
    f"are not in VmRSS.",
    "Latency is per call as seen by the client (p50/p99 from an HDR histogram); calls/s and "
    "MB/s count only calls completed inside the measured window; MB/s is request + response "
    "payload, decimal megabytes. A target fails if either side counted errors.",
]

header = [
    f"command: {env['BENCH_COMMAND']}",
    f"date: {env['BENCH_DATE']}  commit: {env['BENCH_COMMIT']}",
    f"machine: {env['BENCH_NPROC']} CPUs ({env['BENCH_CPU']}), {env['BENCH_KERNEL']}, "
    f"{env['BENCH_RUSTC']}",
    f"pinning: servers on CPU {env['BENCH_SERVER_CPU']}, load clients on CPU "
    f"{env['BENCH_CLIENT_CPU']}; {env['BENCH_SECS']} s measured after {env['BENCH_WARMUP']} s "
    f"warmup per run; load average {env['BENCH_LOAD']}",
]

print()
print("\n".join(header))
print()
print("\n".join(lines))
print()
print("\n".join(notes))
print()
print("\n".join(cpu_lines))
print()
print(cpu_note)
print(f"\nresults: {out}/latest.md, {out}/*.json")

with open(os.path.join(out, "commands.txt")) as f:
    commands = [c.strip() for c in f if c.strip()]
md = ["# rpckit benchmark: kit vs raw reference", ""]
md += [f"- {h}" for h in header]
md += ["", *lines, "", *[f"{n}\n" for n in notes], "Where the time went:", "", *cpu_lines, "",
       cpu_note, "", "Commands run (`$TMP` is a temporary dir):",
       "", "```", *commands, "```", ""]
with open(os.path.join(out, "latest.md"), "w") as f:
    f.write("\n".join(md))

summary = {
    "command": env["BENCH_COMMAND"], "date": env["BENCH_DATE"], "commit": env["BENCH_COMMIT"],
    "nproc": int(env["BENCH_NPROC"]), "cpu": env["BENCH_CPU"], "kernel": env["BENCH_KERNEL"],
    "sha256_mb_per_sec": sha, "w4_adjusted_ref_mb_per_sec": adj4,
    "rows": [dict(zip(["workload", "kit", "reference", "ratio", "target", "result", "errors"], row))
             for row in table],
    "failed": failed,
}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, ensure_ascii=False)

if failed:
    print("targets missed: " + "; ".join(failed), file=sys.stderr)
    if env["BENCH_STRICT"] == "1":
        sys.exit(1)
PY
