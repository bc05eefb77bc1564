# Shared by the bench scripts (sourced): a deployment of hub, agent and kiosk as separate
# `kioskd` processes on 127.0.0.1, with synthetic camera and microphone.
# shellcheck shell=bash

# bench_certs BIN DIR: a CA and certificates for hub.bench, agent-1 and branch-1/kiosk-1.
bench_certs() {
    "$1" certs init --dir "$2" >/dev/null
    "$1" certs issue --dir "$2" --role hub --id hub.bench --dns localhost --ip 127.0.0.1 >/dev/null
    "$1" certs issue --dir "$2" --role agent --id agent-1 >/dev/null
    "$1" certs issue --dir "$2" --role kiosk --id branch-1/kiosk-1 >/dev/null
}

# bench_configs PKI RUN PORT MEDIA HUB_EXTRA KIOSK_EXTRA: RUN/{hub,agent,kiosk}.toml. MEDIA is
# the [camera] and [audio] sections of agent and kiosk; the extras end the hub's and kiosk's.
bench_configs() {
    local pki=$1 run=$2 port=$3 media=$4 hub_extra=$5 kiosk_extra=$6
    cat >"$run/hub.toml" <<TOML
listen = "127.0.0.1:$port"
event_log = "$run/events.jsonl"
[tls]
ca = "$pki/ca.pem"
cert = "$pki/hub.bench.pem"
key = "$pki/hub.bench.key"
$hub_extra
TOML
    local link="[hub]
address = \"127.0.0.1:$port\"
server_name = \"localhost\""
    cat >"$run/agent.toml" <<TOML
$link
[tls]
ca = "$pki/ca.pem"
cert = "$pki/agent-1.pem"
key = "$pki/agent-1.key"
$media
TOML
    cat >"$run/kiosk.toml" <<TOML
$link
[tls]
ca = "$pki/ca.pem"
cert = "$pki/branch-1_kiosk-1.pem"
key = "$pki/branch-1_kiosk-1.key"
[buttons]
backend = "simulated"
input = "$run/buttons.sock"
$kiosk_extra
$media
TOML
}

# wait_for FILE PATTERN WHAT: returns once FILE has a line matching PATTERN; fails after 15 s.
wait_for() {
    for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "bench: $3 did not happen; see $1" >&2
    cat "$1" >&2
    exit 1
}

# press_call SOCKET: the customer presses CALL on the kiosk's simulated button panel.
press_call() {
    python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'c\n'); s.close()" "$1"
}
