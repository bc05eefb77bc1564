#!/usr/bin/env bash
# Offers per second of a deployment of several hubs sharing one PostgreSQL: starts a private
# PostgreSQL (Debian's server, initdb in a temporary folder, a free port of 127.0.0.1, as the
# `postgres` user when run as root; fsync on, as a bank's would be), issues the certificates,
# starts the hubs (release build), and runs `kioskd bench --offers` against them: one JSON
# line. Everything it started is stopped and removed at the end.
#
#   ./scripts/bench-cluster.sh [--hubs 2] [--kiosks 24] [--agents 8] [--duration 20] [--no-database]
#
# Each hub allows its kiosks 100000 call requests a minute (the default 10 would be the limit
# measured); everything else is the hub's default configuration.
#
# --no-database runs one hub without PostgreSQL (the embedded default), for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

hubs=2 kiosks=24 agents=8 duration=20 database=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --hubs) hubs=$2; shift 2 ;;
        --kiosks) kiosks=$2; shift 2 ;;
        --agents) agents=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --no-database) database=0; hubs=1; shift ;;
        *) echo "usage: $0 [--hubs N] [--kiosks N] [--agents N] [--duration S] [--no-database]" >&2; exit 2 ;;
    esac
done
[[ $hubs =~ ^[1-9]$ && $kiosks =~ ^[0-9]+$ && $agents =~ ^[0-9]+$ ]] || {
    echo "bench-cluster.sh: --hubs 1..9, --kiosks and --agents numbers" >&2
    exit 2
}

./scripts/deps.sh >&2
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
# KIOSKD=path uses a kioskd already built (a debug build measures the debug build).
if [[ -n ${KIOSKD:-} ]]; then
    kioskd=$KIOSKD
else
    cargo build --release --bin kioskd >&2
    kioskd=$PWD/target/release/kioskd
fi

work=$(mktemp -d /tmp/kioskd-cluster-XXXXXX)
chmod 755 "$work"
pids=()
pg_bin=""
as_pg=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n $pg_bin && -d $work/pg ]]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [[ -n ${KEEP:-} ]]; then echo "bench-cluster: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_'"$1"'); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "bench-cluster: certificates for $hubs hub(s), $kiosks kiosks and $agents advisors …" >&2
certs=$work/certs
"$kioskd" certs init --dir "$certs" >/dev/null
for h in $(seq 1 "$hubs"); do
    "$kioskd" certs issue --dir "$certs" --role hub --id "hub-$h" --dns localhost --ip 127.0.0.1 >/dev/null
done
for j in $(seq 1 "$agents"); do "$kioskd" certs issue --dir "$certs" --role agent --id "agent-$j" >/dev/null; done
for i in $(seq 1 "$kiosks"); do "$kioskd" certs issue --dir "$certs" --role kiosk --id "branch-1/kiosk-$i" >/dev/null; done

url=""
if [[ $database == 1 ]]; then
    pg_bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n 1)
    [[ -x $pg_bin/initdb ]] || { echo "bench-cluster.sh: no PostgreSQL server under /usr/lib/postgresql" >&2; exit 1; }
    if [[ $(id -u) == 0 ]]; then
        chown postgres: "$work"
        as_pg=(runuser -u postgres --)
    fi
    pg_port=$(free_port STREAM)
    echo "bench-cluster: PostgreSQL on 127.0.0.1:$pg_port …" >&2
    (cd "$work" && "${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U kioskd --auth=trust -E UTF8 --no-instructions >/dev/null)
    (cd "$work" && "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
        -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1" start >/dev/null)
    (cd "$work" && "${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U kioskd kioskd)
    url="postgresql://kioskd@127.0.0.1:$pg_port/kioskd"
fi

hub_args=()
for h in $(seq 1 "$hubs"); do
    port=$(free_port DGRAM)
    cfg=$work/hub-$h.toml
    {
        echo "listen = \"127.0.0.1:$port\""
        echo "event_log = \"$work/hub-$h-events.jsonl\""
        echo "[tls]"
        echo "ca = \"$certs/ca.pem\""
        echo "cert = \"$certs/hub-$h.pem\""
        echo "key = \"$certs/hub-$h.key\""
        echo "[limits]"
        echo "call_requests_per_minute = 100000"
        if [[ -n $url ]]; then
            echo "[database]"
            echo "url = \"$url\""
        fi
    } >"$cfg"
    RUST_LOG=info "$kioskd" hub --config "$cfg" 2>"$work/hub-$h.log" &
    pids+=($!)
    hub_args+=(--hub "127.0.0.1:$port")
done
# Each hub at its log level of production (info), up once it says it listens.
for h in $(seq 1 "$hubs"); do
    for _ in $(seq 1 600); do
        if grep -q "hub listening" "$work/hub-$h.log" 2>/dev/null || ! kill -0 "${pids[$((h - 1))]}" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    kill -0 "${pids[$((h - 1))]}" 2>/dev/null || { echo "hub-$h did not start:" >&2; cat "$work/hub-$h.log" >&2; exit 1; }
done
if [[ -n $url ]]; then
    # Every hub holds its lease before the run (no offers are made without it).
    for _ in $(seq 1 600); do
        held=$("${as_pg[@]}" psql "$url" -XAtc "SELECT count(*) FROM hubs WHERE lease_until > now()" 2>/dev/null || echo 0)
        [[ $held == "$hubs" ]] && break
        sleep 0.1
    done
fi

db_args=()
[[ -n $url ]] && db_args=(--database "$url")
"$kioskd" bench --offers "${hub_args[@]}" --certs "$certs" --kiosks "$kiosks" --agents "$agents" \
    --duration "$duration" "${db_args[@]}"
