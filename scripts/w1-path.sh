#!/usr/bin/env bash
# W1's round trip taken apart: where a call with one in flight spends its time on each side,
# the kit against the raw reference. Not part of `make bench`; needs root (or
# kernel.perf_event_paranoid <= -1) for `perf record` on the system-call tracepoints.
#
# Both servers run pinned to CPU 0 and the load client (`rpc-client bench --conns 1 --depth 1`,
# uppercase "hello", with `--raw` for the reference) to CPU 1, as in `make bench`. `perf record
# -a` takes the entry and exit of `sendto`, `recvfrom` and `epoll_pwait` on both CPUs, and for
# each side the script averages, per call:
#   E  epoll_pwait returned -> recvfrom returned the message (reactor, executor, task wake-up)
#   U  recvfrom returned -> sendto entered (user space: everything between reading a message
#      and sending the answer or the next call; this is where the kit's own work sits)
#   K  the sendto system call (on loopback it also runs the peer's TCP receive and wakes it)
#   W  the peer's sendto entered -> our epoll_pwait returned (K plus the wake-up of this CPU)
# Runs PATH_PAIRS (default 4) pairs, kit and reference back to back, the order alternating;
# each run lasts PATH_SECS (default 2) seconds after 0.2 s of warm-up. Tracing makes every
# system call slower, so compare kit with reference, not with `make bench`'s absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

PATH_PAIRS=${PATH_PAIRS:-4}
PATH_SECS=${PATH_SECS:-2}
server_cpu=0
client_cpu=1
export ASYNC_STD_THREAD_COUNT=${ASYNC_STD_THREAD_COUNT:-1}

die() { echo "w1-path: $*" >&2; exit 1; }
[[ $PATH_PAIRS =~ ^[1-9][0-9]*$ ]] || die "PATH_PAIRS must be an integer >= 1 (got: $PATH_PAIRS)"
for tool in perf taskset python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs"

cargo build --release --bins --quiet
bin=$root/target/release
# shellcheck source=scripts/processes.sh
. "$root/scripts/processes.sh"
start_work w1-path

perf record -q -e raw_syscalls:sys_enter -o "$work/probe.data" -- true 2>"$work/probe.err" \
  || { cat "$work/probe.err" >&2; die "perf cannot record system-call tracepoints here (run as root)"; }

env -u RPC_KEY -u RPC_KEY_ID "$bin/rpc-server" keygen --keyring "$work/keyring" >/dev/null

start kit-server "rpc-server listening on " taskset -c "$server_cpu" "$bin/rpc-server" \
  --listen 127.0.0.1:0 --keyring "$work/keyring" --log-level warn
kit_pid=$started_pid kit_addr=$started_addr
start raw-server "rpc-raw-reference listening on " taskset -c "$server_cpu" \
  "$bin/rpc-raw-reference" --listen 127.0.0.1:0
ref_pid=$started_pid ref_addr=$started_addr

# trace NAME kit|ref: one traced W1 run; its events go to NAME.txt, its report to NAME.json.
trace() {
  local name=$1 side=$2 addr pid extra=()
  if [ "$side" = kit ]; then addr=$kit_addr pid=$kit_pid; else addr=$ref_addr pid=$ref_pid extra=(--raw); fi
  echo "w1-path: $name" >&2
  timeout --kill-after=5 60 perf record -q -a \
    -e raw_syscalls:sys_enter --filter 'id == 44 || id == 281' \
    -e raw_syscalls:sys_exit --filter 'id == 44 || id == 45 || id == 281' \
    -o "$work/$name.data" -- \
    taskset -c "$client_cpu" "$bin/rpc-client" --keyring "$work/keyring" --addr "$addr" bench \
    --conns 1 --depth 1 --method uppercase --payload 5 --duration "$PATH_SECS" --warmup 0.2 \
    --json "${extra[@]}" >"$work/$name.json" 2>"$work/$name.err" \
    || { cat "$work/$name.err" >&2; die "$name failed"; }
  perf script -i "$work/$name.data" --ns -F pid,cpu,time,event,trace 2>/dev/null \
    | awk -v srv="$pid" '{ print ($1 == srv ? "srv" : "cli"), $0 }' >"$work/$name.txt"
  rm -f "$work/$name.data"
}

for pair in $(seq "$PATH_PAIRS"); do
  if [ $((pair % 2)) -eq 1 ]; then sides=(kit ref); else sides=(ref kit); fi
  for side in "${sides[@]}"; do trace "$side-$pair" "$side"; done
done

W1_PATH_DIR=$work W1_PATH_PAIRS=$PATH_PAIRS python3 - <<'PY'
import json, os, statistics

work, pairs = os.environ["W1_PATH_DIR"], int(os.environ["W1_PATH_PAIRS"])
SEND, RECV, EPOLL = "44", "45", "281"

def segments(name):
    """Mean E, U, K, W per side (microseconds) of one traced run."""
    acc = {s: {k: [] for k in "EUKW"} for s in ("srv", "cli")}
    last = {}
    with open(os.path.join(work, name + ".txt")) as f:
        for line in f:
            p = line.split()
            # side pid [cpu] time: raw_syscalls:sys_enter|exit: NR n ... (= ret)
            if len(p) < 7 or not p[2].startswith("["):
                continue
            side, other = p[0], ("cli" if p[0] == "srv" else "srv")
            if side == "cli" and p[2] != "[001]":
                continue  # not the load client (it is pinned to CPU 1)
            t = float(p[3].rstrip(":")) * 1e6
            exit_ = "sys_exit" in p[4]
            nr = p[6].rstrip(":")
            if exit_ and nr == RECV and p[-1].startswith("-"):
                continue  # a failed recv (EAGAIN)
            a = acc[side]
            if not exit_ and nr == SEND:
                if ("recv", side) in last:
                    a["U"].append(t - last.pop(("recv", side)))
                last[("send", side)] = t
            elif exit_ and nr == SEND and ("send", side) in last:
                a["K"].append(t - last[("send", side)])
            elif exit_ and nr == EPOLL and ("send", other) in last:
                a["W"].append(t - last.pop(("send", other)))
                last[("epoll", side)] = t
            elif exit_ and nr == RECV:
                if ("epoll", side) in last:
                    a["E"].append(t - last.pop(("epoll", side)))
                last[("recv", side)] = t
    return {s: {k: statistics.mean(v) if v else float("nan") for k, v in d.items()}
            for s, d in acc.items()}

runs = {side: [] for side in ("kit", "ref")}
for pair in range(1, pairs + 1):
    for side in ("kit", "ref"):
        name = f"{side}-{pair}"
        with open(os.path.join(work, name + ".json")) as f:
            rate = json.load(f)["calls_per_sec"]
        runs[side].append((rate, segments(name)))

def avg(side, s, k):
    return statistics.mean(seg[s][k] for _, seg in runs[side])

print(f"W1 under tracing, {pairs} pairs, means of per-run means (microseconds per call):")
print()
print("| segment | kit | reference | kit - reference |")
print("|---|---|---|---|")
for s, who in (("srv", "server"), ("cli", "client")):
    for k, what in (("E", "epoll returned -> message read"), ("U", "message read -> send (user space)"),
                    ("K", "send system call"), ("W", "peer's send -> our epoll returned")):
        a, b = avg("kit", s, k), avg("ref", s, k)
        print(f"| {who}: {what} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
rk = statistics.mean(r for r, _ in runs["kit"])
rr = statistics.mean(r for r, _ in runs["ref"])
ratios = [k[0] / r[0] for k, r in zip(runs["kit"], runs["ref"])]
print(f"| round trip (1 / calls per second) | {1e6 / rk:.1f} | {1e6 / rr:.1f} | {1e6 / rk - 1e6 / rr:+.1f} |")
print()
print("calls/s kit / reference per pair (traced): " + " ".join(f"{x:.3f}" for x in ratios))
PY
