#!/usr/bin/env bash
# What recording costs the hub: the CPU of a separate `kioskd hub` process relaying one
# two-way call (640×480 at 30 fps each way, ~1 Mbit/s each way) with recording off and on,
# over several rounds (which goes first alternates), and the CPU of the recording thread itself.
# Prints one JSON line per round and a summary line.
# Usage: bench/hub-record-cpu.sh [seconds per call] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
secs=${1:-20}
rounds=${2:-3}

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

bench_certs "$bin" "$dir"
media='[camera]
backend = "synthetic"
[audio]
capture = "synthetic"'

# The hub gets the last CPU to itself and the parties (whose encoders take most of the machine)
# the others: sharing cores with them made identical relay-only runs differ by ±15 %.
pin_hub=() pin_parties=()
if command -v taskset >/dev/null && (($(nproc) >= 2)); then
    pin_hub=(taskset -c "$(($(nproc) - 1))")
    pin_parties=(taskset -c "0-$(($(nproc) - 2))")
fi
# CPU time of the hub in nanoseconds: the scheduler's own sum over its threads (schedstat),
# since utime/stime come in 10 ms ticks — 3 % of what the hub uses in a 20 s call.
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

# One call of $secs seconds; prints "hub_ticks record_ticks elapsed_s".
one_call() { # record: true|false
    # It runs in a subshell (process substitution), which does not inherit the script's EXIT
    # trap: without its own, a failing step left the hub, kiosk and agent running.
    trap stop_all EXIT
    local record=$1 port=$((20000 + RANDOM % 20000)) run=$dir/run-$RANDOM
    mkdir -p "$run"
    bench_configs "$dir" "$run" "$port" "$media" "[recording]
enabled = $record
dir = \"$run/recordings\"" "[call]
recording_notice = true"
    RUST_LOG=info "${pin_hub[@]}" "$bin" hub --config "$run/hub.toml" 2>"$run/hub.log" & local hub=$!; pids+=("$hub")
    wait_for "$run/hub.log" 'hub listening' "the hub starting"
    "${pin_parties[@]}" "$bin" agent --config "$run/agent.toml" --auto-accept --answer-delay-ms 100 --call-duration-s 0 >"$run/agent.out" 2>&1 & pids+=($!)
    RUST_LOG=info "${pin_parties[@]}" "$bin" run --config "$run/kiosk.toml" 2>"$run/kiosk.log" & pids+=($!)
    wait_for "$run/kiosk.log" 'state="idle"' "the kiosk reaching idle"
    press_call "$run/buttons.sock"
    wait_for "$run/kiosk.log" 'state="connected"' "the call connecting"
    if [[ $record == true ]]; then wait_for "$run/hub.log" 'recording started' "the recording starting"; fi
    sleep 2 # the encoders settle
    local t0 r0 s0 t1 r1 s1
    local th0 th1
    th0=$(threads "$hub"); t0=$(ticks "$hub"); r0=$(record_ticks "$hub"); s0=$(date +%s.%N)
    sleep "$secs"
    t1=$(ticks "$hub"); r1=$(record_ticks "$hub"); s1=$(date +%s.%N); th1=$(threads "$hub")
    for t in $th0; do
        [[ " $th1 " == *" $t "* ]] || echo "bench: hub thread $t ended during the measurement; its time is missing" >&2
    done
    local bytes=0
    if [[ $record == true ]]; then bytes=$(du -b "$run"/recordings/*.mkv | awk '{s += $1} END {print s}'); fi
    stop_all
    echo "$((t1 - t0)) $((r1 - r0)) $(python3 -c "print($s1 - $s0)") $bytes"
}

results=()
for round in $(seq 1 "$rounds"); do
    # Alternate which goes first, so that an order effect does not pass for recording's cost.
    order=(false true)
    if ((round % 2 == 0)); then order=(true false); fi
    for record in "${order[@]}"; do
        read -r hub_t rec_t elapsed bytes < <(one_call "$record")
        python3 - "$round" "$record" "$hub_t" "$rec_t" "$elapsed" "$hz" "$bytes" <<'PY'
import json, sys
rnd, record, hub_t, rec_t, elapsed, hz, size = sys.argv[1], sys.argv[2] == "true", int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
print(json.dumps({"bench": "hub_cpu", "round": int(rnd), "recording": record, "duration_s": round(elapsed, 2),
                  "hub_cpu_cores": round(hub_t / hz / elapsed, 4), "record_thread_cpu_cores": round(rec_t / hz / elapsed, 4),
                  "recording_bytes": size}))
PY
        results+=("$record $hub_t $rec_t $elapsed")
    done
done
python3 - "$hz" "$((${#pin_hub[@]} > 0))" "${results[@]}" <<'PY'
import json, statistics, sys
hz = int(sys.argv[1])
runs = [r.split() for r in sys.argv[3:]]
def cores(rec):
    return [int(h) / hz / float(e) for r, h, _, e in runs if r == rec]
def thread(rec):
    return [int(t) / hz / float(e) for r, _, t, e in runs if r == rec]
off, on = statistics.median(cores("false")), statistics.median(cores("true"))
# Each round runs relay-only and recording back to back (the order alternating): compare
# within rounds, since the machine's load drifts between rounds more than recording costs.
paired = [100 * (b - a) / a for a, b in zip(cores("false"), cores("true")) if a > 0]
print(json.dumps({"bench": "hub_record_cpu", "rounds": len(runs) // 2, "hub_pinned": sys.argv[2] == "1",
                  "extra_pct_per_round": [round(p, 1) for p in paired],
                  "extra_pct_paired_median": round(statistics.median(paired), 1) if paired else None,
                  "hub_cpu_cores_relay_only": round(off, 4), "hub_cpu_cores_recording": round(on, 4),
                  "extra_pct_of_relay": round(100 * (on - off) / off, 1) if off else None,
                  "record_thread_cpu_cores": round(statistics.median(thread("true")), 4),
                  "record_thread_pct_of_relay": round(100 * statistics.median(thread("true")) / off, 1) if off else None}))
PY
