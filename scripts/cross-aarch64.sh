#!/usr/bin/env bash
# Builds kioskd for aarch64 (Raspberry Pi 4/5, 64-bit) with Debian's cross toolchain and arm64
# libraries, then runs the binary under qemu-user: `kioskd --version` and a demo call.
# Installs what it needs when missing. Usage: scripts/cross-aarch64.sh [--release] [--demo]
# (--demo also runs a demo call under qemu-user; under emulation this is slow: minutes.)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
cargo_flags=()
demo=false
for arg in "$@"; do
    case $arg in
        --release) profile=release; cargo_flags=(--release) ;;
        --demo) demo=true ;;
        *) echo "usage: $0 [--release] [--demo]" >&2; exit 2 ;;
    esac
done
target=aarch64-unknown-linux-gnu
say() { printf 'cross-aarch64.sh: %s\n' "$*"; }

if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    say "adding the arm64 architecture to dpkg"
    "${SUDO[@]}" dpkg --add-architecture arm64
    "${SUDO[@]}" apt-get update -qq
fi
packages=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev:arm64 libasound2-dev:arm64 libopus-dev:arm64 qemu-user)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! rustup target list --installed | grep -qx "$target"; then
    say "adding the $target standard library"
    rustup target add "$target"
fi

export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_PATH=/usr/lib/aarch64-linux-gnu/pkgconfig
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
say "building for $target ($profile)"
cargo build --target "$target" "${cargo_flags[@]}"
bin=target/$target/$profile/kioskd
file "$bin" 2>/dev/null || true

run() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" "$@"; }
say "running under qemu-aarch64: kioskd --version"
run --version
if $demo; then
    say "running under qemu-aarch64: a demo call (signalling and text; media under emulation is too slow for a check)"
    report=$(run demo --media off --call-duration-ms 1000 --json | tail -n 1)
    echo "$report"
    if [[ $report != *'"calls_completed":1'* || $report != *'"errors":[]'* ]]; then
        say "the aarch64 demo did not complete its call"
        exit 1
    fi
fi
say "OK: the aarch64 build runs"
