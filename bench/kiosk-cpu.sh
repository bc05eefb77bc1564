#!/usr/bin/env bash
# CPU used by the kiosk side of a two-way call (capture, encode, decode, transport), measured
# on a separate `kioskd run` process while a hub and an auto-answering agent run in others, and
# its resident memory (VmRSS: peak and average of samples during the call, and the kernel's
# high-water mark since start). Prints one JSON line.
# Usage: bench/kiosk-cpu.sh [seconds] [width] [height] [fps]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
secs=${1:-15}
width=${2:-640}
height=${3:-480}
fps=${4:-30}

cargo build --release --quiet
bin=$PWD/target/release/kioskd
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

bench_certs "$bin" "$dir"
port=$((20000 + RANDOM % 20000))
media="[camera]
backend = \"synthetic\"
width = $width
height = $height
fps = $fps
[audio]
capture = \"synthetic\""
bench_configs "$dir" "$dir" "$port" "$media" "" ""

"$bin" hub --config "$dir/hub.toml" 2>"$dir/hub.log" & pids+=($!)
"$bin" agent --config "$dir/agent.toml" --auto-accept --answer-delay-ms 100 --call-duration-s 0 >"$dir/agent.out" 2>&1 & pids+=($!)
RUST_LOG=info "$bin" run --config "$dir/kiosk.toml" 2>"$dir/kiosk.log" & kiosk=$!; pids+=("$kiosk")

wait_for "$dir/kiosk.log" 'state="idle"' "the kiosk reaching idle"
press_call "$dir/buttons.sock"
wait_for "$dir/kiosk.log" 'state="connected"' "the call connecting"

sleep 2   # let the encoders settle
# CPU from the process's user and system ticks over the window; resident memory (VmRSS) sampled
# every 100 ms over the same window, and the kernel's high-water mark (VmHWM) since start.
python3 - "$kiosk" "$secs" "$width" "$height" "$fps" <<'PY'
import json, os, sys, time
pid, secs = sys.argv[1], float(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")
def ticks():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
def status_kb(key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise SystemExit(f"bench: no {key} for the kiosk process")
t0, s0 = ticks(), time.monotonic()
rss = []
while time.monotonic() - s0 < secs:
    rss.append(status_kb("VmRSS"))
    time.sleep(0.1)
t1, s1 = ticks(), time.monotonic()
rss.append(status_kb("VmRSS"))
hwm = status_kb("VmHWM")
mb = lambda kb: round(kb / 1024, 1)
print(json.dumps({"bench": "kiosk_cpu", "video": f"{sys.argv[3]}x{sys.argv[4]}@{sys.argv[5]}",
                  "duration_s": round(s1 - s0, 2), "kiosk_cpu_cores": round((t1 - t0) / hz / (s1 - s0), 3),
                  "kiosk_rss_mb": mb(max(rss)), "kiosk_rss_avg_mb": mb(sum(rss) / len(rss)),
                  "kiosk_rss_hwm_mb": mb(hwm)}))
PY
