#!/usr/bin/env bash
# Every check the project has: formatting, lints, all tests, and a small demo over real QUIC.
set -euo pipefail
cd "$(dirname "$0")/.."

step=""
trap 'echo; echo "test.sh: FAILED during: ${step}"' ERR
# Each step's wall time, so that CI's time budget (25 min on a clean clone) can be read per step.
run() {
    step="$*"
    printf '\n==> %s\n' "$*"
    local t0=$SECONDS
    "$@"
    printf '==> %s: %d s (%d s so far)\n' "$*" $((SECONDS - t0)) "$SECONDS"
}

run ./scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

run cargo fmt --check
run cargo clippy --all-targets -- -D warnings
run cargo test --all-targets
run cargo build

# Every fuzz target (fuzz/, libFuzzer) for a few seconds over its seeds and the inputs of the
# crashes found before; scripts/fuzz.sh --long is the 10-million-execution run (fuzz/README.md).
run ./scripts/fuzz.sh --short 4

step="demo smoke run"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
printf '\n==> %s\n' "target/debug/kioskd demo --kiosks 5 --agents 2 --calls 8 --json"
target/debug/kioskd demo --kiosks 5 --agents 2 --calls 8 --json | tee "$report"
last=$(tail -n 1 "$report")
if [[ $last != *'"calls_completed":8'* || $last != *'"errors":[]'* ]]; then
    echo "test.sh: the demo's last line is not the expected report: $last"
    false
fi

# Real V4L2, ALSA and GPIO drivers (vivid, snd-aloop, gpio-sim) under Debian's kernel in qemu:
# a call from a kiosk on those devices; one summary line. See tests/board-vm/run.sh.
run tests/board-vm/run.sh

# The aarch64 build (Raspberry Pi 4/5) runs a demo call with media under qemu-user; a clean
# release cross-build takes ~4-8 min on 2 cores (6-7 min of CPU), the call under emulation ~10 s.
run ./scripts/cross-aarch64.sh --demo

# The Yocto layer through the real bitbake of its release (skipped, with a line saying why,
# where the checker or the layer mirrors are missing). See yocto/README.md.
run ./scripts/yocto-check.sh

trap - ERR
echo
echo "test.sh: OK — formatting, clippy, all tests, the fuzz targets, the demo smoke run, the board test, the aarch64 demo and the Yocto layer check passed"
