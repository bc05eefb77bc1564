#!/usr/bin/env bash
# Installs what building and testing kioskd needs, and only what is missing:
# Debian packages (checked with dpkg -s), oelint-adv (pip, for the Yocto recipes), then the Rust
# toolchain's rustfmt and clippy.
set -euo pipefail

PACKAGES=(
    build-essential
    pkg-config
    libclang-dev
    libasound2-dev
    libopus-dev
    nasm
    # tests/fleet.rs: systemd-analyze (verify, security) for the units, python3 (3.11+, tomllib)
    # for scripts/yocto-crates.py.
    systemd
    python3
    # tests/recording.rs: an independent player (ffprobe, ffmpeg) opens the call recordings.
    ffmpeg
    # tests/postgres.rs: a real PostgreSQL server (initdb, pg_ctl, psql) that the tests start
    # in a temporary folder.
    postgresql
    # tests/browser_console.rs: the advisors' browser console in a real headless Chromium, and
    # an agent certificate in the browser's NSS store (openssl makes the PKCS#12, certutil and
    # pk12util put it in).
    chromium
    openssl
    libnss3-tools
)

say() { printf 'deps.sh: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------
if command -v dpkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    missing=()
    native=$(dpkg --print-architecture)
    for pkg in "${PACKAGES[@]}"; do
        # Installed for this machine's architecture (or for all): dpkg-query -W also answers
        # for another architecture's copy, such as the arm64 libasound2-dev of the aarch64
        # cross-build, which does not build for this machine.
        if ! dpkg-query -W -f='${Architecture} ${db:Status-Status}\n' "$pkg" 2>/dev/null |
            grep -qE "^($native|all) installed$"; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} > 0)); then
        if [[ $(id -u) -eq 0 ]]; then
            SUDO=()
        elif command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            say "missing packages: ${missing[*]}"
            say "run as root or install sudo, then run this script again"
            exit 1
        fi
        say "installing ${missing[*]}"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${missing[@]}"
    else
        say "Debian packages present"
    fi
else
    say "not a Debian system: make sure these (or their equivalents) are installed:"
    say "  ${PACKAGES[*]}"
fi

# --- oelint-adv -----------------------------------------------------------------------------
# Lints the recipes of yocto/meta-kioskd (tests/fleet.rs; skipped there when it is missing).
# pip --user puts it in ~/.local/bin, which may not be on PATH: the test looks there too.
if command -v oelint-adv >/dev/null 2>&1 || [[ -x "$HOME/.local/bin/oelint-adv" ]]; then
    say "oelint-adv present"
elif command -v python3 >/dev/null 2>&1; then
    say "installing oelint-adv (pip install --user)"
    python3 -m pip install --user --quiet oelint-adv ||
        python3 -m pip install --user --quiet --break-system-packages oelint-adv ||
        say "could not install oelint-adv: the recipe lint in tests/fleet.rs will be skipped"
else
    say "python3 not found: the recipe lint in tests/fleet.rs will be skipped"
fi

# --- Rust ------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found. Install the Rust toolchain with rustup:"
    say "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y"
    say "  . \"\$HOME/.cargo/env\""
    say "then run this script again (kioskd needs Rust $(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' \
        "$(dirname "$0")/../Cargo.toml") or newer)."
    exit 1
fi
for component in rustfmt clippy; do
    sub=$([[ $component == rustfmt ]] && echo fmt || echo clippy)
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            say "adding the $component component"
            rustup component add "$component"
        else
            say "cargo $sub is missing and rustup is not available to add $component"
            exit 1
        fi
    fi
done
say "$(cargo --version)"
