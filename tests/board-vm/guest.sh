#!/usr/bin/env bash
# The emulated-board test, inside the virtual machine that tests/board-vm/run.sh boots.
#
# Devices: vivid (a V4L2 camera: YUYV test pattern), snd-aloop (an ALSA loopback card: what is
# played into Loopback,0,N comes out of Loopback,1,N) and gpio-sim (simulated GPIO lines whose
# input level follows a "pull" written in sysfs). The kiosk runs with its real backends on them:
#
#   camera   /dev/video0 (vivid), YUYV 320x180 at 15 fps, the colour bars scrolling
#   mic      plughw:Loopback,1,0  <- aplay plays a 440 Hz tone into Loopback,0,0
#   speaker  plughw:Loopback,0,1  -> arecord records Loopback,1,1
#   buttons  gpio-sim lines 17 (CALL) and 27 (HANGUP), active low: a press pulls the line down,
#            with contact bounce on the way down and up
#   LEDs     gpio-sim lines 22 (CALL) and 23 (BUSY)
#
# With a hub and an auto-answering agent (synthetic 660 Hz microphone; it saves what it
# receives as Y4M and WAV), the test places two calls: one hung up with HANGUP, and one in
# which the camera is unplugged (vivid's "disconnect" control, which behaves like a USB
# camera pulled out) and the call must go on with sound. Evidence and key=value results go to
# $1/out; tests/board-vm/check.py judges them on the host.
set -uo pipefail

run=$1
out=$run/out
kioskd=$run/kioskd
pki=$run/pki
work=/tmp/kioskd
mkdir -p "$work" /run/kioskd
export RUST_LOG=info NO_COLOR=1

# Seconds to wait for an event under emulation (generous: TCG is 5-10 times slower, and the
# host may be busy with other work: under two other builds, 40 pictures took over 45 s).
WAIT=90
# The camera's picture: one of vivid's webcam sizes, modest as everything runs emulated (at
# 640x480 the guest's two CPUs saturate and the kiosk's rate control cuts the video).
WIDTH=320 HEIGHT=180
# Lines of the simulated GPIO bank.
CALL=17 HANGUP=27 LED_CALL=22 LED_BUSY=23

log() { echo "guest: $*"; }
result() { echo "$1=$2" >>"$out/results.env"; }
pids=()
finish() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    cp "$work"/*.log "$work"/events.jsonl "$out/" 2>/dev/null
    dmesg >"$out/dmesg.txt"
}
die() {
    log "FAIL: $*"
    result failure "\"$*\""
    finish
    exit 1
}
elapsed() { cut -d' ' -f1 /proc/uptime; }

# lines FILE: how many lines FILE has now (to wait only for lines written after this point).
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

# wait_for FILE PATTERN WHAT [AFTER]: returns when a line of FILE after its first AFTER lines
# (default 0) matches PATTERN (grep -E); fails the test after $WAIT seconds.
wait_for() {
    local file=$1 pattern=$2 what=$3 after=${4:-0} found=0
    touch "$file"
    coproc TAIL { exec tail -n +$((after + 1)) -f "$file"; }
    timeout "$WAIT" grep -q -m 1 -E -- "$pattern" <&"${TAIL[0]}" && found=1
    kill "$TAIL_PID" 2>/dev/null
    wait "$TAIL_PID" 2>/dev/null
    if ((found)); then
        log "$what (at $(elapsed) s)"
    else
        die "no $what within $WAIT s (waiting for /$pattern/ in $(basename "$file"))"
    fi
}

# press LINE: a button press as contacts make it: the line bounces on the way down, stays down
# while the finger is on it, and bounces again on release. The shell toggles the line as fast
# as it can (each write takes a few milliseconds under emulation), at real-time priority so
# that a busy guest does not stretch the bounce beyond what contacts do.
press() {
    local pull=$sim/sim_gpio$1/pull
    bounce "$pull" pull-down pull-up
    sleep 0.3 # the finger on the button
    bounce "$pull" pull-up pull-down
}

# bounce PULL TO FROM: contacts settling on TO after three bounces back to FROM, toggled at
# real-time priority.
bounce() {
    chrt -f -p 50 $BASHPID
    for _ in 1 2 3; do
        echo "$2" >"$1"
        echo "$3" >"$1"
    done
    echo "$2" >"$1"
    chrt -o -p 0 $BASHPID
}

led() { cat "$sim/sim_gpio$1/value"; }

# frames: the pictures the agent has shown (decoded) in this call, over all of its Y4M files
# (a change of size mid-call starts agent-seen.1.y4m, and so on).
frames() {
    python3 - "$work" <<'PY'
import glob, os, sys
n = 0
for path in glob.glob(os.path.join(sys.argv[1], "agent-seen*.y4m")):
    with open(path, "rb") as f:
        header = f.readline()
    fields = dict((w[:1], w[1:]) for w in header.decode("ascii", "replace").split()[1:])
    try:
        frame = 6 + int(fields["W"]) * int(fields["H"]) * 3 // 2
    except (KeyError, ValueError):
        continue
    n += (os.path.getsize(path) - len(header)) // frame
print(n)
PY
}
bytes() { if [[ -f $1 ]]; then stat -c %s "$1"; else echo 0; fi; }
# Bytes of one second of the agent's WAV (48 kHz, mono, 16 bits).
SECOND=96000

# wait_media WHAT MIN_FRAMES WAV_BYTES: returns when the agent has shown MIN_FRAMES pictures in
# this call and its WAV holds WAV_BYTES; fails the test after $WAIT seconds. The call lasts as
# long as the machine needs to deliver that much, not a fixed time.
wait_media() {
    local what=$1 want_frames=$2 want_bytes=$3 deadline=$((SECONDS + WAIT)) f b
    while :; do
        f=$(frames) b=$(bytes "$work/agent-heard.wav")
        if ((f >= want_frames && b >= want_bytes)); then
            log "$what: $f pictures, $(((b - 44) / SECOND)) s of sound at the agent (at $(elapsed) s)"
            return
        fi
        ((SECONDS < deadline)) || die "$what: the agent had $f of $want_frames pictures and $b of $want_bytes WAV bytes after $WAIT s"
        sleep 0.2 # re-read the files' sizes
    done
}

# metrics LABEL: the hub's media counters (what it relayed), from its metrics endpoint.
metrics() {
    wget -q -O - http://127.0.0.1:9464/metrics | grep '^kioskd_hub_media' | sed "s/^/$1 /" >>"$out/metrics.txt"
}

log "kernel $(uname -r), $(nproc) CPUs"

# --- Devices -----------------------------------------------------------------------------------
modprobe vivid n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0 || die "modprobe vivid"
modprobe snd-aloop pcm_substreams=2 || die "modprobe snd-aloop"
modprobe gpio-sim || die "modprobe gpio-sim"
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config || die "mount configfs"
bank=/sys/kernel/config/gpio-sim/kiosk/bank0
mkdir -p "$bank" || die "gpio-sim configfs"
echo 32 >"$bank/num_lines"
echo kiosk-panel >"$bank/label"
for l in "$CALL:CALL" "$HANGUP:HANGUP" "$LED_CALL:LED_CALL" "$LED_BUSY:LED_BUSY"; do
    mkdir "$bank/line${l%%:*}" && echo "${l#*:}" >"$bank/line${l%%:*}/name"
done
echo 1 >/sys/kernel/config/gpio-sim/kiosk/live || die "gpio-sim chip did not go live"
chip=$(cat "$bank/chip_name")
sim=/sys/devices/platform/$(cat /sys/kernel/config/gpio-sim/kiosk/dev_name)/$chip
[[ -c /dev/video0 && -c /dev/$chip && -d $sim ]] || die "device nodes missing (video0, $chip)"
[[ -e /proc/asound/Loopback ]] || die "no Loopback sound card"
# vivid's colour bars scroll, like a scene with motion, without its text overlay (at 320x240 it
# would cover most of the bars).
v4l2-ctl -d /dev/video0 -c horizontal_movement=5 -c osd_text_mode=2 || die "vivid: cannot set its controls"
log "devices: /dev/video0 ($(cat /sys/class/video4linux/video0/name)), ALSA Loopback, /dev/$chip (gpio-sim)"
result gpio_chip "$chip"
result video "${WIDTH}x$HEIGHT"

# The tone the kiosk's microphone hears: one second of 440 Hz (a whole number of cycles),
# played over and over.
python3 -c '
import math, struct, sys
second = struct.pack("<48000h", *(round(8000 * math.sin(2 * math.pi * 440 * i / 48000)) for i in range(48000)))
while True:
    sys.stdout.buffer.write(second)
' | aplay -q -D plughw:Loopback,0,0 -f S16_LE -r 48000 -c 1 -t raw --buffer-time=1000000 2>"$work/tone.log" &
pids+=($!)

# --- Hub, agent, configurations ------------------------------------------------------------------
cat >"$work/hub.toml" <<EOF
listen = "127.0.0.1:4433"
event_log = "$work/events.jsonl"
metrics_listen = "127.0.0.1:9464"
[tls]
ca = "$pki/ca.pem"
cert = "$pki/hub.pem"
key = "$pki/hub.key"
EOF
cat >"$work/agent.toml" <<EOF
[hub]
address = "127.0.0.1:4433"
server_name = "localhost"
[tls]
ca = "$pki/ca.pem"
cert = "$pki/agent-1.pem"
key = "$pki/agent-1.key"
[audio]
capture = "synthetic"
tone_hz = 660.0
playback = "wav"
wav_path = "$work/agent-heard.wav"
[screen]
backend = "y4m"
path = "$work/agent-seen.y4m"
EOF
cat >"$work/kiosk.toml" <<EOF
health_file = "/run/kioskd/health.json"
[hub]
address = "127.0.0.1:4433"
server_name = "localhost"
[tls]
ca = "$pki/ca.pem"
cert = "$pki/branch-1_kiosk-1.pem"
key = "$pki/branch-1_kiosk-1.key"
[buttons]
backend = "gpio-cdev"
chip = "/dev/$chip"
call = $CALL
hangup = $HANGUP
active_low = true
bias = "pull-up"
debounce_ms = 50
[leds]
chip = "/dev/$chip"
call = $LED_CALL
busy = $LED_BUSY
[call]
ended_screen_s = 1
[camera]
backend = "v4l2"
device = "/dev/video0"
width = $WIDTH
height = $HEIGHT
fps = 15
format = "yuyv"
[audio]
capture = "alsa"
capture_device = "plughw:Loopback,1,0"
playback = "alsa"
playback_device = "plughw:Loopback,0,1"
# 50 ms periods (a 200 ms buffer): an emulated machine shared with other work stalls for
# longer than the 80 ms buffer of the default 20 ms periods.
period_ms = 50
EOF

"$kioskd" hub --config "$work/hub.toml" >"$work/hub.log" 2>&1 &
pids+=($!)
wait_for "$work/hub.log" "hub listening" "hub listening"
"$kioskd" agent --config "$work/agent.toml" --auto-accept --answer-delay-ms 200 --call-duration-s 0 \
    >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "$work/agent.log" '\[room\] IDLE' "agent idle"

# --- kioskd doctor -------------------------------------------------------------------------------
"$kioskd" doctor --config "$work/kiosk.toml" >"$out/doctor.txt" 2>&1
result doctor_rc $?
log "doctor: $(grep -c '^  ok ' "$out/doctor.txt") ok, $(grep -c '^  FAIL ' "$out/doctor.txt") failed"

# --- The kiosk -----------------------------------------------------------------------------------
"$kioskd" run --config "$work/kiosk.toml" >"$work/kiosk.log" 2>&1 &
kiosk_pid=$!
pids+=("$kiosk_pid")
wait_for "$work/kiosk.log" 'state="idle"' "kiosk idle"
"$kioskd" health --file /run/kioskd/health.json >"$out/health-idle.txt" 2>&1
result health_idle_rc $?
result led_idle "$(led $LED_CALL)$(led $LED_BUSY)"

# --- Call 1: video, sound both ways, HANGUP -------------------------------------------------------
arecord -D plughw:Loopback,1,1 -f S16_LE -r 48000 -c 1 -t raw --buffer-time=1000000 "$out/kiosk-played.raw" \
    2>"$work/arecord.log" &
arecord_pid=$!
pids+=("$arecord_pid")
k=$(lines "$work/kiosk.log")
press $CALL
wait_for "$work/kiosk.log" 'button pressed button="CALL" origin=Gpio' "CALL pressed (gpio-sim)" "$k"
wait_for "$work/kiosk.log" 'state="connected"' "call 1 connected" "$k"
wait_for "$work/agent.log" '\[call 1\] connected' "agent in call 1"
result led_call "$(led $LED_CALL)$(led $LED_BUSY)"
wait_media "call 1" 40 $((44 + 3 * SECOND)) # the call itself
metrics call1
k=$(lines "$work/kiosk.log")
press $HANGUP
wait_for "$work/kiosk.log" 'button pressed button="HANGUP" origin=Gpio' "HANGUP pressed (gpio-sim)" "$k"
wait_for "$work/kiosk.log" 'state="ended"' "call 1 ended at the kiosk" "$k"
wait_for "$work/agent.log" '\[call 1\] ended' "call 1 ended at the agent"
wait_for "$work/kiosk.log" 'call media stopped call_id=1' "call 1 media stopped" "$k"
kill -INT "$arecord_pid"
wait "$arecord_pid" 2>/dev/null
for f in "$work"/agent-seen*.y4m; do
    cp "$f" "$out/call1-seen${f#"$work"/agent-seen}"
done
cp "$work/agent-heard.wav" "$out/call1-heard.wav"
# Call 2 is measured on its own files (the agent creates them again when it opens its devices).
rm -f "$work"/agent-seen*.y4m "$work/agent-heard.wav"
wait_for "$work/kiosk.log" 'state="idle"' "kiosk idle again" "$k"

# --- Call 2: the camera is unplugged mid-call ------------------------------------------------------
k=$(lines "$work/kiosk.log")
press $CALL
wait_for "$work/kiosk.log" 'state="connected"' "call 2 connected" "$k"
wait_for "$work/agent.log" '\[call 2\] connected' "agent in call 2"
wait_media "call 2 before the unplug" 15 $((44 + 2 * SECOND)) # video and sound flow
result unplug_wav_bytes "$(stat -c %s "$work/agent-heard.wav")"
result unplug_y4m_bytes "$(stat -c %s "$work/agent-seen.y4m")"
k=$(lines "$work/kiosk.log")
v4l2-ctl -d /dev/video0 -c disconnect=1 >"$work/unplug.log" 2>&1 || die "vivid disconnect: $(cat "$work/unplug.log")"
log "camera unplugged (vivid disconnect) at $(elapsed) s"
wait_for "$work/kiosk.log" 'camera lost; the call goes on with audio' "kiosk reports the camera lost" "$k"
wait_media "call 2 after the unplug" 0 $(($(stat -c %s "$work/agent-heard.wav") + 3 * SECOND)) # sound only
result after_unplug_wav_bytes "$(stat -c %s "$work/agent-heard.wav")"
result after_unplug_y4m_bytes "$(stat -c %s "$work/agent-seen.y4m")"
cp /run/kioskd/health.json "$out/health-unplugged.json"
"$kioskd" health --file /run/kioskd/health.json >"$out/health-unplugged.txt" 2>&1
result health_unplugged_rc $?
k=$(lines "$work/kiosk.log")
press $HANGUP
wait_for "$work/agent.log" '\[call 2\] ended' "call 2 ended at the agent"
wait_for "$work/kiosk.log" 'call media stopped call_id=2' "call 2 media stopped" "$k"
cp "$work/agent-heard.wav" "$out/call2-heard.wav"

# --- Shutting down ------------------------------------------------------------------------------
kill -TERM "$kiosk_pid"
wait "$kiosk_pid"
result kiosk_exit $?
result presses_call "$(grep -c 'button pressed button="CALL"' "$work/kiosk.log")"
result presses_hangup "$(grep -c 'button pressed button="HANGUP"' "$work/kiosk.log")"
result guest_seconds "$(elapsed)"
finish
log "done at $(elapsed) s"
