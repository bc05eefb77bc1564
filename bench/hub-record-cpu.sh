#!/usr/bin/env bash
# What recording costs the hub: the CPU of a separate `kioskd hub` process relaying CALLS
# two-way calls at once, with recording off and on, over several rounds (which goes first
# alternates), and the CPU of the recording threads themselves.
#
# The calls come from `kioskd bench --load`: real clients (QUIC, mutual TLS, the control
# protocol) replaying H.264 (WIDTH×HEIGHT, 30 fps) and Opus encoded beforehand, so the parties
# need no codec CPU and every run offers the hub the same packets at the same pace. (With real
# kiosks and agents, whose encoders starved each other on the parties' core, identical
# relay-only runs differed by ±15 %.)
# Prints one JSON line per measurement and a summary line.
# Usage: bench/hub-record-cpu.sh [seconds] [rounds] [calls] [width] [height]
# HUB_BENCH_AA=1 runs recording off in both slots: the method's own spread (an A/A test).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
secs=${1:-20}
rounds=${2:-3}
calls=${3:-8}
width=${4:-640}
height=${5:-480}

cargo build --release --quiet --bin kioskd
bin=$PWD/target/release/kioskd
dir=$(mktemp -d)
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}
trap 'stop_all; rm -rf "$dir"' EXIT

bench_certs "$bin" "$dir" "$calls"

# The hub gets the last CPU to itself, the parties the others.
pin_hub=() pin_parties=()
if command -v taskset >/dev/null && (($(nproc) >= 2)); then
    pin_hub=(taskset -c "$(($(nproc) - 1))")
    pin_parties=(taskset -c "0-$(($(nproc) - 2))")
fi
# CPU time of the hub in nanoseconds: the scheduler's own sum over its threads (schedstat),
# since utime/stime come in 10 ms ticks.
hz=1000000000
ticks() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%d\n", s}'; }
# CPU time of the hub's recording threads (named record-N).
record_ticks() {
    local sum=0 t
    for t in /proc/"$1"/task/*; do
        if grep -q '^record-' "$t/comm" 2>/dev/null; then
            sum=$((sum + $(awk '{print $1}' "$t/schedstat")))
        fi
    done
    echo "$sum"
}
# Threads that end within the measured window would take their time with them: count them.
threads() { ls /proc/"$1"/task | tr '\n' ' '; }

# $calls calls; prints "hub_ns record_ns elapsed_s recording_bytes" and, on the next line, the
# load's own JSON report.
one_run() { # record: true|false
    # It runs in a subshell (process substitution), which does not inherit the script's EXIT
    # trap: without its own, a failing step left the hub and the load running.
    trap stop_all EXIT
    local record=$1 port=$((20000 + RANDOM % 20000)) run=$dir/run-$RANDOM
    if [[ ${HUB_BENCH_AA:-} == 1 ]]; then record=false; fi
    mkdir -p "$run"
    bench_configs "$dir" "$run" "$port" "" "[recording]
enabled = $record
dir = \"$run/recordings\"" ""
    RUST_LOG=info "${pin_hub[@]}" "$bin" hub --config "$run/hub.toml" 2>"$run/hub.log" & local hub=$!; pids+=("$hub")
    wait_for "$run/hub.log" 'hub listening' "the hub starting"
    # The load runs 2 s to settle, the measured window, and 2 s more.
    "${pin_parties[@]}" "$bin" bench --load "$calls" --hub "127.0.0.1:$port" --certs "$dir" \
        --width "$width" --height "$height" --duration $((secs + 4)) >"$run/load.json" 2>"$run/load.log" &
    local load=$!; pids+=("$load")
    wait_count "$run/events.jsonl" '"event":"connected"' "$calls" "the calls connecting"
    if [[ $record == true ]]; then wait_count "$run/hub.log" 'recording started' "$calls" "the recordings starting"; fi
    sleep 2
    local t0 r0 s0 t1 r1 s1 th0 th1
    th0=$(threads "$hub"); t0=$(ticks "$hub"); r0=$(record_ticks "$hub"); s0=$(date +%s.%N)
    sleep "$secs"
    t1=$(ticks "$hub"); r1=$(record_ticks "$hub"); s1=$(date +%s.%N); th1=$(threads "$hub")
    for t in $th0; do
        [[ " $th1 " == *" $t "* ]] || echo "bench: hub thread $t ended during the measurement; its time is missing" >&2
    done
    if ! wait "$load"; then
        echo "bench: the load failed; see below" >&2
        cat "$run/load.log" "$run/load.json" >&2
        exit 1
    fi
    local bytes=0
    if [[ $record == true ]]; then bytes=$(du -b "$run"/recordings/*.mkv | awk '{s += $1} END {print s}'); fi
    stop_all
    echo "$((t1 - t0)) $((r1 - r0)) $(python3 -c "print($s1 - $s0)") $bytes"
    cat "$run/load.json"
}

results=()
for round in $(seq 1 "$rounds"); do
    # Alternate which goes first, so that an order effect does not pass for recording's cost.
    order=(false true)
    if ((round % 2 == 0)); then order=(true false); fi
    for record in "${order[@]}"; do
        { read -r hub_t rec_t elapsed bytes; read -r load; } < <(one_run "$record")
        python3 - "$round" "$record" "$hub_t" "$rec_t" "$elapsed" "$hz" "$bytes" "$calls" "$load" "${HUB_BENCH_AA:-}" <<'PY'
import json, sys
rnd, record, hub_t, rec_t, elapsed, hz, size, calls = sys.argv[1], sys.argv[2] == "true", int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
load = json.loads(sys.argv[9])
if load["recorded"] != (calls if record and sys.argv[10] != "1" else 0) or load["errors"]:
    sys.exit(f"bench: the load did not run as asked: {load}")
print(json.dumps({"bench": "hub_cpu", "round": int(rnd), "slot": "B" if record else "A", "recording": record and sys.argv[10] != "1", "calls": calls, "duration_s": round(elapsed, 2),
                  "hub_cpu_cores": round(hub_t / hz / elapsed, 4), "record_thread_cpu_cores": round(rec_t / hz / elapsed, 4),
                  "relayed_kbps_per_call": round(load["received"]["bytes"] * 8 / load["duration_s"] / calls / 1000),
                  "audio_delivered_pct": load["audio_delivered_pct"], "video_delivered_pct": load["video_delivered_pct"],
                  "recording_bytes": size}))
PY
        results+=("$record $hub_t $rec_t $elapsed")
    done
done
python3 - "$hz" "$((${#pin_hub[@]} > 0))" "$calls" "$width" "$height" "${results[@]}" <<'PY'
import json, os, statistics, sys
hz = int(sys.argv[1])
calls, width, height = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = [r.split() for r in sys.argv[6:]]
def cores(rec):
    return [int(h) / hz / float(e) for r, h, _, e in runs if r == rec]
def thread(rec):
    return [int(t) / hz / float(e) for r, _, t, e in runs if r == rec]
off, on = statistics.median(cores("false")), statistics.median(cores("true"))
# Each round runs relay-only and recording back to back (the order alternating): compare
# within rounds, since the machine's load drifts between rounds more than recording costs.
paired = [100 * (b - a) / a for a, b in zip(cores("false"), cores("true")) if a > 0]
print(json.dumps({"bench": "hub_record_cpu", "a_a": os.environ.get("HUB_BENCH_AA") == "1", "rounds": len(runs) // 2, "calls": calls, "video": f"{width}x{height}",
                  "hub_pinned": sys.argv[2] == "1",
                  "extra_pct_per_round": [round(p, 1) for p in paired],
                  "extra_pct_paired_median": round(statistics.median(paired), 1) if paired else None,
                  "hub_cpu_cores_relay_only": round(off, 4), "hub_cpu_cores_recording": round(on, 4),
                  "hub_cpu_cores_per_call_relay_only": round(off / calls, 4),
                  "extra_pct_of_relay": round(100 * (on - off) / off, 1) if off else None,
                  "record_thread_cpu_cores": round(statistics.median(thread("true")), 4),
                  "record_thread_pct_of_relay": round(100 * statistics.median(thread("true")) / off, 1) if off else None}))
PY
