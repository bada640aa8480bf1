#!/usr/bin/env bash
# `make bench`: the kit (rpc-server + rpc-client's kit driver) against the raw reference
# (rpc-raw-reference + rpc-client --raw), same engine, same run, same machine.
#
# Servers are pinned to one CPU and load clients to another; every wait on a process is a wait
# on its ready line, never a fixed sleep. Workloads (durations from BENCH_SECS, default 3, and
# BENCH_WARMUP, default 1; BENCH_IDLE_CONNS, default 5000):
#   W1 latency      1 connection, depth 1, uppercase "hello"
#   W2 multiplexed  1 connection, depth 32
#   W3 fan-in       64 connections, depth 1
#   W4 bulk         echo 65536 bytes, 4 connections
#   W5 churn        connect, one call, close; 8 loops. The kit's first call rides with the
#                   handshake (rpc-client bench --pipeline-first-call); W5 is also run with
#                   the client's default (the call waits for the server's proof), for the table
#   W6 memory       BENCH_IDLE_CONNS idle connections: server VmRSS growth per connection
# plus this machine's SHA-256 speed, which W4's target accounts for (see the table footnotes).
#
# W1-W5 run in BENCH_ROUNDS rounds (default 5): each round runs W1..W5, each as a kit run and a
# reference run back to back, kit first in odd rounds and reference first in even rounds. The
# machine's speed drifts on a scale of seconds, so a kit run and a reference run taken far apart
# can differ for reasons that have nothing to do with the code; a ratio of two runs taken
# seconds apart (paired, per round) does not, and alternating the order cancels any bias of
# going first. The table shows medians over rounds and the median of the per-round ratios.
# W6 and SHA-256 run once.
#
# BENCH_WORKLOADS (default "1 2 3 4 5 6") picks the workloads to run, e.g. BENCH_WORKLOADS=1
# BENCH_SECS=0.5 BENCH_WARMUP=0.2 BENCH_ROUNDS=40 for many short paired W1 rounds, which pin
# W1's ratio down far more tightly than five 3-second rounds (see docs/PERFORMANCE.md).
#
# Prints the table; writes it as markdown to target/bench/latest.md and every raw result to
# target/bench/*.json. Exits 0 once everything ran (BENCH_STRICT=1: exit 1 if a target fails).
# Everything it starts is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

BENCH_SECS=${BENCH_SECS:-3}
BENCH_WARMUP=${BENCH_WARMUP:-1}
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
BENCH_IDLE_CONNS=${BENCH_IDLE_CONNS:-5000}
BENCH_STRICT=${BENCH_STRICT:-0}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-1 2 3 4 5 6}
server_cpu=${BENCH_SERVER_CPU:-0}
client_cpu=${BENCH_CLIENT_CPU:-1}
want_fds=65536
# Every process here (kit and reference alike) runs on async-std and is pinned to one CPU:
# one executor thread per process, so tasks do not hand off between threads on one core.
export ASYNC_STD_THREAD_COUNT=${ASYNC_STD_THREAD_COUNT:-1}

if [ -n "${MAKELEVEL:-}" ]; then invoked="make bench"; else invoked="scripts/bench.sh"; fi
selection=""
if [ "$BENCH_WORKLOADS" != "1 2 3 4 5 6" ]; then selection="BENCH_WORKLOADS=\"$BENCH_WORKLOADS\" "; fi
command_line="${selection}BENCH_SECS=$BENCH_SECS BENCH_WARMUP=$BENCH_WARMUP BENCH_ROUNDS=$BENCH_ROUNDS BENCH_IDLE_CONNS=$BENCH_IDLE_CONNS ASYNC_STD_THREAD_COUNT=$ASYNC_STD_THREAD_COUNT $invoked"

die() { echo "bench: $*" >&2; exit 1; }
# Strictly decimal digits: a leading zero would make bash arithmetic read it as octal.
[[ $BENCH_ROUNDS =~ ^[1-9][0-9]*$ ]] \
  || die "BENCH_ROUNDS must be an integer >= 1, no leading zero (got: $BENCH_ROUNDS)"
[[ $BENCH_WORKLOADS =~ ^[[:space:]]*[1-6]([[:space:]]+[1-6])*[[:space:]]*$ ]] \
  || die "BENCH_WORKLOADS must list workload numbers 1-6, e.g. \"1 3\" (got: $BENCH_WORKLOADS)"
# selected N: whether workload WN is to run.
selected() {
  [[ " $BENCH_WORKLOADS " =~ [[:space:]]$1[[:space:]] ]]
}
rounds_of=()
for w in 1 2 3 4 5; do
  if selected "$w"; then rounds_of+=("$w"); fi
done
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

# shellcheck source=scripts/processes.sh
. "$root/scripts/processes.sh"
start_work bench

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

# serve NAME PREFIX COMMAND...: `start` (scripts/processes.sh) with the command recorded and
# the environment cleaned.
serve() {
  local name=$1 prefix=$2
  shift 2
  record "$@"
  start "$name" "$prefix" "${clean_env[@]}" "$@"
}

serve kit-server "rpc-server listening on " \
  taskset -c "$server_cpu" "$bin/rpc-server" --listen 127.0.0.1:0 \
  --keyring "$work/keyring" --log-level warn --max-connections 20000 \
  --max-unauthenticated 1000 --max-in-flight 1024
kit_pid=$started_pid kit_addr=$started_addr
serve raw-server "rpc-raw-reference listening on " \
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
if selected 6; then
  idle w6-kit kit "$kit_pid"
  idle w6-ref ref "$ref_pid"
fi

# workload_args N: sets $wargs to the rpc-client bench arguments of workload WN.
workload_args() {
  wargs=(--duration "$BENCH_SECS" --warmup "$BENCH_WARMUP")
  case $1 in
    1) wargs+=(--conns 1 --depth 1 --method uppercase --payload 5) ;;
    2) wargs+=(--conns 1 --depth 32 --method uppercase --payload 5) ;;
    3) wargs+=(--conns 64 --depth 1 --method uppercase --payload 5) ;;
    4) wargs+=(--conns 4 --depth 1 --method echo --payload 65536) ;;
    5) wargs+=(--conns 8 --churn --method uppercase --payload 5) ;;
    *) die "no workload W$1" ;;
  esac
}

# Round-major and paired: the kit and reference runs of one workload in one round are back to
# back, so the machine's speed drift (seconds) hits both alike; their ratio is the measurement.
# The side that goes first alternates between rounds to cancel any bias of going first.
for round in $(seq "$BENCH_ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then sides=(kit ref); else sides=(ref kit); fi
  echo "bench: round $round of $BENCH_ROUNDS (${sides[0]} first)" >&2
  for w in ${rounds_of[@]+"${rounds_of[@]}"}; do
    workload_args "$w"
    for side in "${sides[@]}"; do
      extra=()
      if [ "$w" = 5 ] && [ "$side" = kit ]; then extra=(--pipeline-first-call); fi
      bench "w$w-$side-r$round" "$side" "${wargs[@]}" ${extra[@]+"${extra[@]}"}
    done
    # The kit's churn with the client's default: the first call waits for the server's proof.
    if [ "$w" = 5 ]; then bench "w5d-kit-r$round" kit "${wargs[@]}"; fi
  done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit (uncommitted changes)"; fi

BENCH_OUT=$out BENCH_COMMAND=$command_line BENCH_NPROC=$(nproc) BENCH_CPU=${cpu_model:-unknown} \
BENCH_KERNEL="$(uname -sr)" BENCH_COMMIT=$commit BENCH_RUSTC="$(rustc --version)" \
BENCH_LOAD="$load_before -> $load_after" BENCH_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
BENCH_SERVER_CPU=$server_cpu BENCH_CLIENT_CPU=$client_cpu BENCH_SECS=$BENCH_SECS \
BENCH_WARMUP=$BENCH_WARMUP BENCH_ROUNDS=$BENCH_ROUNDS BENCH_IDLE_CONNS=$BENCH_IDLE_CONNS \
BENCH_STRICT=$BENCH_STRICT BENCH_WORKLOADS=$BENCH_WORKLOADS \
python3 - <<'PY'
import json, os, statistics, sys

env = os.environ
out = env["BENCH_OUT"]
R = int(env["BENCH_ROUNDS"])
rounds = range(1, R + 1)
nan = float("nan")
n_rounds = f"{R} round" if R == 1 else f"{R} rounds"

def load(name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)

def median(xs):
    # NaNs (a ratio whose reference was 0, a run without calls) are left out; n/a if all are.
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else nan

sha = load("sha256")["sha256_bytes_per_sec"] / 1e6  # MB/s
# The workloads that ran (BENCH_WORKLOADS).
ran = sorted({int(w) for w in env["BENCH_WORKLOADS"].split()})
# r["w3-kit"][k] is the report of round k + 1, r["w3-kit-cpu"][k] its CPU use.
r = {f"w{i}-{s}{x}": [load(f"w{i}-{s}-r{k}{x}") for k in rounds]
     for i in ran if i <= 5 for s in ("kit", "ref") for x in ("", "-cpu")}
if 5 in ran:
    r["w5d-kit"] = [load(f"w5d-kit-r{k}") for k in rounds]
    r["w5d-ref"] = r["w5-ref"]
if 6 in ran:
    for s in ("kit", "ref"):
        r[f"w6-{s}"] = load(f"w6-{s}")
        r[f"w6-{s}-rss"] = load(f"w6-{s}-rss")

def errors(name):
    # Summed over all rounds (W6 ran once).
    rep = r[name]
    return sum(x["errors"] for x in rep) if isinstance(rep, list) else rep["errors"]

def kib_per_conn(s):
    rss, rep = r[f"w6-{s}-rss"], r[f"w6-{s}"]
    held = rep["connections_held"] or 0
    return (rss["rss_held_kib"] - rss["rss_before_kib"]) / held if held else nan

def adjusted(ref):
    return 1 / (1 / ref + 2 / sha) if ref > 0 and sha > 0 else 0.0

def per_round(name, get):
    # Empty for a workload that did not run (its rows are left out below).
    return [get(rep) for rep in r.get(name, [])]

# The W4 hash-adjusted reference, per round from that round's reference MB/s.
ref4 = per_round("w4-ref", lambda x: x["mb_per_sec"])
adj4 = [adjusted(v) for v in ref4]

p50 = lambda x: x["latency_us"]["p50"]
p99 = lambda x: x["latency_us"]["p99"]
cps = lambda x: x["calls_per_sec"]
mbs = lambda x: x["mb_per_sec"]
conns = lambda x: x["connections_per_sec"] or 0.0

# (workload, unit, kit per round, ref per round, better, target factor or None, runs whose
# errors count); W6 has one measurement, a list of one. Rows of workloads that did not run
# are left out.
rows = [
    ("W1 latency p50 (1 conn, depth 1)", "us", per_round("w1-kit", p50),
     per_round("w1-ref", p50), "lower", None, "w1"),
    ("W1 latency p99", "us", per_round("w1-kit", p99), per_round("w1-ref", p99),
     "lower", 1.2, "w1"),
    ("W1 calls/s", "calls/s", per_round("w1-kit", cps), per_round("w1-ref", cps),
     "higher", 0.92, "w1"),
    ("W2 multiplexed (1 conn, depth 32)", "calls/s", per_round("w2-kit", cps),
     per_round("w2-ref", cps), "higher", 0.80, "w2"),
    ("W3 fan-in (64 conns, depth 1)", "calls/s", per_round("w3-kit", cps),
     per_round("w3-ref", cps), "higher", 0.90, "w3"),
    ("W4 bulk (echo 64 KiB, 4 conns), raw ref", "MB/s", per_round("w4-kit", mbs), ref4,
     "higher", None, "w4"),
    ("W4 bulk vs hash-adjusted ref [a]", "MB/s", per_round("w4-kit", mbs), adj4,
     "higher", 0.85, "w4"),
    ("W5 churn (8 loops) [c]", "conns/s", per_round("w5-kit", conns),
     per_round("w5-ref", conns), "higher", 0.80, "w5"),
    ("W5 churn, client default [c]", "conns/s", per_round("w5d-kit", conns),
     per_round("w5-ref", conns), "higher", None, "w5d"),
    (f"W6 memory ({env['BENCH_IDLE_CONNS']} idle conns) [b]", "KiB/conn",
     [kib_per_conn("kit")] if 6 in ran else [], [kib_per_conn("ref")] if 6 in ran else [],
     "lower", "8 KiB", "w6"),
]
rows = [row for row in rows if int(row[6][1]) in ran]

def fmt(v):
    if v != v:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"

def shown_ratio(ratio, factor):
    """The table's kit ÷ ref: three decimals below 10, more while rounding would print a
    ratio just off its target (0.9197 against 0.92, say) as equal to it."""
    if ratio != ratio:
        return "n/a"
    if abs(ratio) >= 10:
        return fmt(ratio)
    digits = 3
    while (isinstance(factor, (int, float)) and ratio != factor and digits < 6
           and float(f"{ratio:.{digits}f}") == factor):
        digits += 1
    return f"{ratio:.{digits}f}"

def fmt_ratio(v):
    return "n/a" if v != v else f"{v:.2f}"

def fmt_rounds(rs):
    # Every ratio, in round order, for a few rounds; for many, their middle half.
    if len(rs) <= 9:
        return " ".join(fmt_ratio(x) for x in rs)
    xs = [x for x in rs if x == x]
    if len(xs) < 4:
        return "n/a"
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return f"IQR {fmt_ratio(q1)}–{fmt_ratio(q3)}"

table = []
ratios = []  # per row: the per-round ratios, or None for a single measurement
failed = []
for name, unit, kits, refs, better, factor, run in rows:
    # Paired: round k's kit value over round k's reference value.
    rs = [k / f if f else nan for k, f in zip(kits, refs)]
    kit, ref, ratio = median(kits), median(refs), median(rs)
    single = run == "w6"
    ratios.append(None if single else rs)
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
    shown = shown_ratio(ratio, factor)
    table.append([name, f"{fmt(kit)} {unit}", f"{fmt(ref)} {unit}", f"{shown}×",
                  "—" if single else fmt_rounds(rs), target, verdict, errs])
table.append(["SHA-256, one core, 64 KiB buffers", f"{fmt(sha)} MB/s", "", "", "—", "—", "—",
              ""])
ratios.append(None)

head = ["workload", "kit", "reference", "kit ÷ ref", "per round", "target", "result",
        "errors kit/ref"]
widths = [max(len(row[i]) for row in table + [head]) for i in range(len(head))]
def line(cells):
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
lines = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
lines += [line(row) for row in table]

# Where the time went: CPU used by each process during each run, as a share of one core;
# each quantity computed per round, then the median over rounds.
def cpu_round(c, rep):
    wall = c["wall_secs"] or nan
    calls = rep["calls"] or nan
    per_call = lambda cpu: cpu / wall * rep["duration_secs"] / calls * 1e6
    return (c["server_cpu_secs"] / wall * 100, c["client_cpu_secs"] / wall * 100,
            per_call(c["server_cpu_secs"]), per_call(c["client_cpu_secs"]))

def pct(v):
    return "n/a" if v != v else f"{v:.0f} %"

cpu_rows = []
for i, label in [(1, "W1 latency"), (2, "W2 multiplexed"), (3, "W3 fan-in"), (4, "W4 bulk"),
                 (5, "W5 churn")]:
    if i not in ran:
        continue
    cells = [label]
    for s in ("kit", "ref"):
        per = [cpu_round(c, rep) for c, rep in zip(r[f"w{i}-{s}-cpu"], r[f"w{i}-{s}"])]
        srv, cli, us_srv, us_cli = (median(q) for q in zip(*per))
        cells += [pct(srv), pct(cli), f"{fmt(us_srv)} / {fmt(us_cli)}"]
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
            "us/call ≈ CPU per second of run × window ÷ calls counted (W5: per connection). "
            + ("" if R == 1 else
               f"Each figure is the median over the {R} rounds of that figure per round."))

adj_note = ("" if R == 1 else
            f" Computed per round from that round's ref and paired with that round's kit run; "
            f"the figures here are medians over rounds.")
def w6_note():
    w6 = {s: r[f"w6-{s}-rss"] for s in ("kit", "ref")}
    held = {s: r[f"w6-{s}"]["connections_held"] for s in ("kit", "ref")}
    return (
        f"[b] (VmRSS of the server while holding − VmRSS before) ÷ connections held: kit "
        f"{w6['kit']['rss_before_kib']} → {w6['kit']['rss_held_kib']} KiB over {held['kit']} "
        f"connections, reference {w6['ref']['rss_before_kib']} → {w6['ref']['rss_held_kib']} "
        f"KiB over {held['ref']}. Measured once, first, on freshly started servers. Kernel "
        f"socket buffers are not in VmRSS.")

notes = [] if 4 not in ran else [
    f"[a] Adjusted reference = 1 / (1/ref + 2/sha) with ref = {fmt(median(ref4))} MB/s (the raw "
    f"reference's request+response payload throughput) and sha = {fmt(sha)} MB/s (SHA-256 on "
    f"one core): the kit tags and checks every frame, i.e. per call the request and the "
    f"response payload (2 × 64 KiB counted) are each hashed twice (tag by the sender, check by "
    f"the receiver) = 4 × 64 KiB hashed, 2 bytes hashed per counted byte, taken as if none of "
    f"it overlapped. Adjusted = {fmt(median(adj4))} MB/s; target kit ≥ 0.85 × adjusted."
    f"{adj_note}",
]
notes += [w6_note()] if 6 in ran else []
notes += [] if 5 not in ran else [
    "[c] W5: the kit's first call on each connection rides with the handshake's proof "
    "(rpc-client bench --pipeline-first-call, ClientConfig::pipeline_first_call): TCP connect, "
    "then two round trips (hello, proof + call), one more than the raw reference. \"client "
    "default\": the same with the call sent after the server's proof (three round trips), run "
    "right after each round's W5 pair and divided by that round's reference run.",
]
notes += [
    "Latency is per call as seen by the client (p50/p99 from an HDR histogram); calls/s and "
    "MB/s count only calls completed inside the measured window; MB/s is request + response "
    "payload, decimal megabytes. A target fails if either side counted errors in any round "
    "(errors are summed over rounds).",
    "Method: this machine's speed drifts between a fast and a slow state over seconds, so two "
    "runs taken far apart can differ by tens of per cent for reasons unrelated to the code. "
    "Each round therefore runs the kit and the reference of a workload back to back and takes "
    "their ratio (a paired ratio compares runs seconds apart); kit ÷ ref and the verdict use "
    "the median of those per-round ratios (shown under \"per round\": in round order, or "
    "their interquartile range beyond 9 rounds), which "
    "need not equal the kit median ÷ the reference median. Odd rounds run the kit first, even "
    "rounds the reference, to cancel any bias of going first.",
]

header = [
    f"command: {env['BENCH_COMMAND']}",
    f"date: {env['BENCH_DATE']}  commit: {env['BENCH_COMMIT']}",
    f"machine: {env['BENCH_NPROC']} CPUs ({env['BENCH_CPU']}), {env['BENCH_KERNEL']}, "
    f"{env['BENCH_RUSTC']}",
    f"pinning: servers on CPU {env['BENCH_SERVER_CPU']}, load clients on CPU "
    f"{env['BENCH_CLIENT_CPU']}; {env['BENCH_SECS']} s measured after {env['BENCH_WARMUP']} s "
    f"warmup per run; load average {env['BENCH_LOAD']}",
    f"rounds: {', '.join(f'W{w}' for w in ran if w <= 5) or 'none of W1-W5'} ran {n_rounds}, "
    f"kit and reference interleaved "
    f"(odd rounds kit first); table values are medians over rounds, ratios are medians of "
    f"per-round paired ratios ({'W6 and SHA-256' if 6 in ran else 'SHA-256'} ran once)",
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
    # Every round repeats the same W1-W5 commands: list each once (commands.txt has them all).
    commands = list(dict.fromkeys(c.strip() for c in f if c.strip()))
md = ["# rpckit benchmark: kit vs raw reference", ""]
md += [f"- {h}" for h in header]
md += ["", *lines, "", *[f"{n}\n" for n in notes], "Where the time went:", "", *cpu_lines, "",
       cpu_note, "", f"Commands run (`$TMP` is a temporary dir; W1-W5 once per round, {n_rounds}):",
       "", "```", *commands, "```", ""]
with open(os.path.join(out, "latest.md"), "w") as f:
    f.write("\n".join(md))

def num(v):
    # JSON has no NaN: null stands for "not available".
    return None if v != v else v

keys = ["workload", "kit", "reference", "ratio", "target", "result", "errors"]
summary = {
    "command": env["BENCH_COMMAND"], "date": env["BENCH_DATE"], "commit": env["BENCH_COMMIT"],
    "nproc": int(env["BENCH_NPROC"]), "cpu": env["BENCH_CPU"], "kernel": env["BENCH_KERNEL"],
    "rounds": R, "workloads": ran,
    "sha256_mb_per_sec": sha, "w4_adjusted_ref_mb_per_sec": num(median(adj4)),
    "w4_adjusted_ref_mb_per_sec_per_round": [num(v) for v in adj4],
    "rows": [{**dict(zip(keys, row[:4] + row[5:])),
              "per_round": None if rs is None else [num(v) for v in rs]}
             for row, rs in zip(table, ratios)],
    "failed": failed,
}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, ensure_ascii=False)

if failed:
    print("targets missed: " + "; ".join(failed), file=sys.stderr)
    if env["BENCH_STRICT"] == "1":
        sys.exit(1)
PY
