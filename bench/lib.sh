# Shared by the bench scripts (sourced): a deployment of hub, agent and kiosk as separate
# `kioskd` processes on 127.0.0.1, with synthetic camera and microphone.
# shellcheck shell=bash

# bench_certs BIN DIR [N]: a CA and certificates for hub.bench, agent-1..N and
# branch-1/kiosk-1..N (N = 1 unless given).
bench_certs() {
    local i
    "$1" certs init --dir "$2" >/dev/null
    "$1" certs issue --dir "$2" --role hub --id hub.bench --dns localhost --ip 127.0.0.1 >/dev/null
    for i in $(seq 1 "${3:-1}"); do
        "$1" certs issue --dir "$2" --role agent --id "agent-$i" >/dev/null
        "$1" certs issue --dir "$2" --role kiosk --id "branch-1/kiosk-$i" >/dev/null
    done
}

# bench_configs PKI RUN PORT MEDIA HUB_EXTRA KIOSK_EXTRA [N]: RUN/hub.toml, and for each of
# the N pairs (1 unless given) RUN/agent-I.toml and RUN/kiosk-I.toml (whose simulated buttons
# listen on RUN/buttons-I.sock); pair 1's are also RUN/agent.toml and RUN/kiosk.toml with
# RUN/buttons.sock. MEDIA is the [camera] and [audio] sections of agents and kiosks; the
# extras end the hub's and the kiosks' files.
bench_configs() {
    local pki=$1 run=$2 port=$3 media=$4 hub_extra=$5 kiosk_extra=$6 n=${7:-1} i
    cat >"$run/hub.toml" <<TOML
listen = "127.0.0.1:$port"
event_log = "$run/events.jsonl"
$hub_extra
[tls]
ca = "$pki/ca.pem"
cert = "$pki/hub.bench.pem"
key = "$pki/hub.bench.key"
TOML
    local link="[hub]
address = \"127.0.0.1:$port\"
server_name = \"localhost\""
    for i in $(seq 1 "$n"); do
        cat >"$run/agent-$i.toml" <<TOML
$link
[tls]
ca = "$pki/ca.pem"
cert = "$pki/agent-$i.pem"
key = "$pki/agent-$i.key"
$media
TOML
        cat >"$run/kiosk-$i.toml" <<TOML
$link
[tls]
ca = "$pki/ca.pem"
cert = "$pki/branch-1_kiosk-$i.pem"
key = "$pki/branch-1_kiosk-$i.key"
[buttons]
backend = "simulated"
input = "$run/buttons-$i.sock"
$kiosk_extra
$media
TOML
    done
    sed "s|buttons-1.sock|buttons.sock|" "$run/kiosk-1.toml" >"$run/kiosk.toml"
    cp "$run/agent-1.toml" "$run/agent.toml"
}

# wait_for FILE PATTERN WHAT: returns once FILE has a line matching PATTERN; fails after 15 s.
wait_for() {
    for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "bench: $3 did not happen; see $1" >&2
    cat "$1" >&2
    exit 1
}

# wait_count FILE PATTERN N WHAT: returns once FILE has N lines matching PATTERN; fails after 15 s.
wait_count() {
    for _ in $(seq 1 300); do
        (($(grep -c "$2" "$1" 2>/dev/null || true) >= $3)) && return 0
        sleep 0.05
    done
    echo "bench: $4 did not happen; see $1" >&2
    cat "$1" >&2
    exit 1
}

# press_call SOCKET: the customer presses CALL on the kiosk's simulated button panel.
press_call() {
    python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'c\n'); s.close()" "$1"
}
