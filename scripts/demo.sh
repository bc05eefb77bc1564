#!/usr/bin/env bash
# Builds kioskd (release) and runs the demo: a hub, agents and kiosks in one process on
# 127.0.0.1 over QUIC with mutual TLS. Arguments go to `kioskd demo`, for example
#   ./scripts/demo.sh --kiosks 20 --agents 4 --calls 40
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
cargo build --release
exec ./target/release/kioskd demo "$@"
