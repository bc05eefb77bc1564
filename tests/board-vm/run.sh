#!/usr/bin/env bash
# The emulated-board test: kioskd's real V4L2, ALSA and GPIO backends against real kernel
# drivers, in a virtual machine.
#
# On a Debian 12 x86_64 host this boots Debian's own kernel under qemu (software emulation,
# no KVM needed) with a small initramfs, loads vivid (a V4L2 test camera), snd-aloop (an ALSA
# loopback sound card) and gpio-sim (simulated GPIO lines; Debian does not build it, so it is
# built here out of tree from Debian's kernel source packages), and runs tests/board-vm/guest.sh
# in the guest: a hub, an auto-answering agent and `kioskd run` on those devices. The host's
# /usr is shared read-only into the guest over 9p, so the host-built kioskd and the usual tools
# (bash, python3, alsa-utils, v4l2-ctl) run there unchanged. Results come back through a second
# 9p share and are checked by tests/board-vm/check.py, which prints one summary line.
#
# Usage: tests/board-vm/run.sh            (builds target/release/kioskd first)
#   KIOSKD_BIN=path     use this kioskd binary instead of building one
#   KIOSKD_BOARD_VM_KEEP=1   keep the run directory (logs, recordings) and print its path
#   KIOSKD_BOARD_VM_GUEST=script   run this script in the guest instead of guest.sh (to explore
#                       the devices by hand; its output is in out/console.log)
#
# Downloads (the kernel packages, about 225 MB) and the built gpio-sim module are cached in
# ${XDG_CACHE_HOME:-$HOME/.cache}/kioskd-board-vm, keyed by the kernel package version.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kioskd-board-vm
started=$(date +%s)
# The guest test's own limit; qemu gets a little more.
guest_timeout_s=420

say() { printf 'board-vm: %s\n' "$*" >&2; }
elapsed() { echo $(($(date +%s) - started)); }
fail() {
    echo "board-vm: FAIL ($*) in $(elapsed) s"
    exit 1
}

# --- Host packages ---------------------------------------------------------------------------
packages=(
    qemu-system-x86 # the virtual machine (TCG: no KVM needed)
    busybox-static  # the initramfs's shell and mount
    cpio            # to pack the initramfs
    kmod            # depmod/modprobe for the module subset
    make gcc-12     # gpio-sim, built against Debian's kernel headers (built with gcc-12)
    libelf1 libssl3 # the kernel's kbuild tools (modpost, sign-file)
    xz-utils        # the kernel source tarball
    alsa-utils      # guest: aplay (a tone into the loopback), arecord (the kiosk's playback)
    v4l-utils       # guest: v4l2-ctl (unplugging the camera)
    python3         # guest: none; host: check.py
)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${db:Status-Status}\n' "$pkg" 2>/dev/null | grep -qx installed; then
        missing+=("$pkg")
    fi
done
apt_lists_fresh() {
    # Package lists less than a day old.
    [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit 2>/dev/null) ]]
}
if ((${#missing[@]} > 0)); then
    [[ $(id -u) -eq 0 ]] || fail "missing packages ${missing[*]}: run as root or install them"
    say "installing ${missing[*]}"
    apt_lists_fresh || DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- The current Debian kernel -----------------------------------------------------------------
kernel_abi() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -n 1
}
abi=""
if apt_lists_fresh; then
    abi=$(kernel_abi)
fi
if [[ -z $abi ]]; then
    say "updating the package lists to find the current kernel"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || say "apt-get update failed; trying the lists there are"
    abi=$(kernel_abi)
fi
[[ -n $abi ]] || fail "cannot find Debian's linux-image-amd64 kernel package"
version=$(apt-cache show --no-all-versions "linux-image-$abi" | sed -n 's/^Version: //p' | head -n 1)
series=${abi%%.0-*}                    # 6.1
common=${abi%-amd64}-common            # 6.1.0-56-common
debs=("linux-image-$abi" "linux-headers-$abi" "linux-headers-$common" "linux-kbuild-$series" "linux-source-$series")
key="$abi-$version"
kdir="$cache/kernel/$key"
say "kernel $abi ($version)"

# --- Downloads and the gpio-sim module (cached) --------------------------------------------------
# Guest modules: 9p for the shares, virtio-rng for entropy, the three device drivers.
guest_modules=(virtio_pci 9pnet_virtio 9p virtio-rng vivid snd-aloop configfs gpio-sim)
if [[ ! -f $kdir/ready ]]; then
    mkdir -p "$cache/debs"
    need=()
    for p in "${debs[@]}"; do
        compgen -G "$cache/debs/${p}_${version}_*.deb" >/dev/null || need+=("$p=$version")
    done
    if ((${#need[@]} > 0)); then
        say "downloading ${need[*]}"
        (cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "${need[@]}" >/dev/null)
    fi
    deb() { compgen -G "$cache/debs/${1}_${version}_*.deb" | head -n 1; }
    rm -rf "$kdir.tmp"
    mkdir -p "$kdir.tmp/x" "$kdir.tmp/build"
    x=$kdir.tmp/x
    for p in "linux-image-$abi" "linux-headers-$abi" "linux-headers-$common" "linux-kbuild-$series"; do
        dpkg-deb -x "$(deb "$p")" "$x"
    done
    # gpio-sim: three files from the source tarball; irq_sim (not built by Debian either)
    # is linked into the module, calling the exported generic_handle_irq() instead of the
    # unexported irq_to_desc().
    say "building gpio-sim.ko for $abi"
    src=linux-source-$series
    dpkg-deb --fsys-tarfile "$(deb "$src")" | tar -xO "./usr/src/$src.tar.xz" |
        tar -xJ -C "$x" "$src/drivers/gpio/gpio-sim.c" "$src/drivers/gpio/gpiolib.h" "$src/kernel/irq/irq_sim.c"
    b=$kdir.tmp/build
    cp "$x/$src/drivers/gpio/gpio-sim.c" "$b/gpio-sim-main.c"
    cp "$x/$src/drivers/gpio/gpiolib.h" "$b/"
    sed 's/handle_simple_irq(irq_to_desc(irqnum))/generic_handle_irq(irqnum)/' \
        "$x/$src/kernel/irq/irq_sim.c" >"$b/irq_sim.c"
    grep -q 'generic_handle_irq(irqnum)' "$b/irq_sim.c" || fail "irq_sim.c changed: cannot patch it"
    printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' >"$b/Kbuild"
    headers=$x/usr/src/linux-headers-$abi
    # The headers' Makefile includes the common headers by absolute path.
    sed -i "s#include /usr/src/#include $x/usr/src/#" "$headers/Makefile"
    make -s -C "$headers" M="$b" modules >"$b/make.log" 2>&1 || {
        cat "$b/make.log" >&2
        fail "gpio-sim did not build"
    }
    # The guest's module tree: only what it loads, with its dependencies.
    mods=$kdir.tmp/modroot/lib/modules/$abi
    mkdir -p "$mods/extra"
    cp "$b/gpio-sim.ko" "$x/lib/modules/$abi/extra/" 2>/dev/null ||
        { mkdir -p "$x/lib/modules/$abi/extra" && cp "$b/gpio-sim.ko" "$x/lib/modules/$abi/extra/"; }
    depmod -b "$x" "$abi"
    for m in "${guest_modules[@]}"; do
        modprobe -d "$x" -S "$abi" --show-depends "$m" | sed -n 's/^insmod \([^ ]*\).*/\1/p'
    done | sort -u | while read -r ko; do
        rel=${ko#"$x/lib/modules/$abi/"}
        mkdir -p "$mods/$(dirname "$rel")"
        cp "$ko" "$mods/$rel"
    done
    cp "$x/lib/modules/$abi"/modules.{builtin,builtin.modinfo,order} "$mods/"
    depmod -b "$kdir.tmp/modroot" "$abi"
    # The 9p chain the initramfs loads before anything else, in dependency order.
    for m in virtio_pci 9pnet_virtio 9p virtio-rng; do
        modprobe -d "$x" -S "$abi" --show-depends "$m" | sed -n "s#^insmod $x/lib/modules/$abi/\([^ ]*\).*#\1#p"
    done | awk '!seen[$0]++' >"$kdir.tmp/boot-modules"
    cp "$x/boot/vmlinuz-$abi" "$kdir.tmp/vmlinuz"
    rm -rf "$x" "$b"
    touch "$kdir.tmp/ready"
    rm -rf "$kdir"
    mv "$kdir.tmp" "$kdir"
    # Older kernels' downloads and builds are no longer needed.
    for f in "$cache"/debs/*.deb; do
        [[ $f == *"_${version}_"* ]] || rm -f "$f"
    done
    for d in "$cache"/kernel/*; do
        [[ $d == "$kdir" ]] || rm -rf "$d"
    done
fi

# --- kioskd ----------------------------------------------------------------------------------
if [[ -z ${KIOSKD_BIN:-} ]]; then
    if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    # Release: emulated, a debug build saturates the guest's two CPUs during a call, and the
    # kiosk's rate control then cuts video to a frame or two a second.
    say "cargo build --release"
    (cd "$repo" && cargo build --release -q) || fail "cargo build --release failed"
    KIOSKD_BIN=$repo/target/release/kioskd
fi
[[ -x $KIOSKD_BIN ]] || fail "no kioskd binary at $KIOSKD_BIN"

# --- The run directory (shared with the guest) --------------------------------------------------
run=$(mktemp -d "${TMPDIR:-/tmp}/kioskd-board-vm.XXXXXX")
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [[ -n ${KIOSKD_BOARD_VM_KEEP:-} ]]; then
        say "run directory kept: $run"
    else
        rm -rf "$run"
    fi
}
trap cleanup EXIT
mkdir -p "$run/out" "$run/pki"
# A copy: a concurrent cargo build must not swap the binary under the guest.
cp "$KIOSKD_BIN" "$run/kioskd"
cp "${KIOSKD_BOARD_VM_GUEST:-$here/guest.sh}" "$run/guest.sh"
"$run/kioskd" certs init --dir "$run/pki" >/dev/null
"$run/kioskd" certs issue --dir "$run/pki" --role hub --id hub --dns localhost --ip 127.0.0.1 >/dev/null
"$run/kioskd" certs issue --dir "$run/pki" --role agent --id agent-1 >/dev/null
"$run/kioskd" certs issue --dir "$run/pki" --role kiosk --id branch-1/kiosk-1 >/dev/null

# --- The initramfs -----------------------------------------------------------------------------
# busybox, the module subset and /init; /usr comes from the host over 9p. /lib holds the
# modules and points the host's libraries' directory into /usr, /lib64 the dynamic loader.
initrd=$run/initramfs
mkdir -p "$initrd"/{bin,dev,etc,proc,sys,tmp,run,usr,mnt/run,lib}
cp /bin/busybox "$initrd/bin/busybox"
cp -r "$kdir/modroot/lib/modules" "$initrd/lib/"
cp "$kdir/boot-modules" "$initrd/etc/boot-modules"
ln -s ../usr/lib/x86_64-linux-gnu "$initrd/lib/x86_64-linux-gnu"
ln -s usr/lib64 "$initrd/lib64"
ln -s usr/sbin "$initrd/sbin"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$initrd/etc/passwd"
printf 'root:x:0:\naudio:x:29:\nvideo:x:44:\n' >"$initrd/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$initrd/etc/hosts"
cat >"$initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ln -s /proc/self/fd /dev/fd
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
while read -r ko; do insmod "/lib/modules/$(uname -r)/$ko"; done </etc/boot-modules
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 usr /usr
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 run /mnt/run
ip link set lo up
echo "guest: up in $(cut -d' ' -f1 /proc/uptime) s"
/usr/bin/bash /mnt/run/guest.sh /mnt/run
echo $? >/mnt/run/out/guest.rc
sync
umount /mnt/run
poweroff -f
EOF
chmod +x "$initrd/init"
(cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$run/initramfs.cpio.gz"

# --- The virtual machine -----------------------------------------------------------------------
say "booting the guest (qemu, TCG)"
vm_started=$(date +%s)
# The guest's CPU has no AVX2/FMA: TCG emulates them far slower than the SSE paths the codecs
# and the audio processing then take (with AVX2 the echo canceller alone took more than real
# time and the microphone overran). The boards themselves are aarch64 (NEON), natively.
set +e
timeout $((guest_timeout_s + 60)) qemu-system-x86_64 \
    -accel tcg -cpu max,avx2=off,fma=off,avx512f=off -smp 2 -m 2048 \
    -nodefaults -display none -no-reboot -serial stdio -monitor none \
    -kernel "$kdir/vmlinuz" -initrd "$run/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 tsc=reliable cryptomgr.notests" \
    -device virtio-rng-pci \
    -virtfs local,path=/usr,mount_tag=usr,security_model=none,readonly=on \
    -virtfs local,path="$run",mount_tag=run,security_model=none \
    </dev/null >"$run/out/console.log" 2>&1
qemu_rc=$?
set -e
vm_s=$(($(date +%s) - vm_started))
if [[ ! -f $run/out/guest.rc ]]; then
    tail -n 40 "$run/out/console.log" >&2
    fail "the guest did not finish (qemu exit $qemu_rc after $vm_s s)"
fi

# --- Verdict -----------------------------------------------------------------------------------
if PYTHONDONTWRITEBYTECODE=1 python3 "$here/check.py" "$run/out" "$(elapsed)" "$vm_s"; then
    exit 0
fi
if [[ -z ${KIOSKD_BOARD_VM_KEEP:-} ]]; then
    say "guest console (last 60 lines):"
    tail -n 60 "$run/out/console.log" >&2
fi
exit 1
