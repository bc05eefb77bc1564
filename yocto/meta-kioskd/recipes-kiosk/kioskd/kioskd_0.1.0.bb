# nooelint: oelint.var.bbclassextend - a daemon for the target board: no native or nativesdk variant
SUMMARY = "Video-call kiosk daemon, hub and agent console for bank branches"
DESCRIPTION = "kioskd runs the kiosk of a bank branch (buttons, LEDs, camera, microphone, \
               speaker, screen, call state) and connects it over QUIC with mutual TLS to a hub \
               that queues callers and relays their calls to advisors. One binary: kioskd run, \
               hub, agent, certs, doctor, health."
HOMEPAGE = "https://kioskd.example.invalid/"
BUGTRACKER = "https://kioskd.example.invalid/issues"
SECTION = "net"
LICENSE = "Apache-2.0"
# The repository states its licence in Cargo.toml (`license = "Apache-2.0"`, line 7).
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=2507bd5f0713f05419cd2f22fa06fe62"
CVE_PRODUCT = "kioskd"

# clang-native: the v4l crate generates its V4L2 bindings with bindgen, which loads libclang.
# alsa-lib and libopus (meta-oe): linked through pkg-config by alsa-sys and audiopus_sys.
DEPENDS = "alsa-lib clang-native libopus"
# openh264's x86 assembly needs nasm; on ARM it builds its NEON assembly with the C compiler.
DEPENDS:append:x86 = " nasm-native"
DEPENDS:append:x86-64 = " nasm-native"

# The kioskd git repository (this layer lives in it, under yocto/). The integrator sets both in
# local.conf or the distro configuration, for example:
#   KIOSKD_GIT_URI = "git://git.bank.example/kioskd.git;protocol=https;branch=main"
#   KIOSKD_SRCREV = "<the commit this layer was checked out at>"
# Build the commit the layer comes from: kioskd-crates.inc below is generated from that
# commit's Cargo.lock, and cargo builds with --frozen.
KIOSKD_GIT_URI ??= "git://git.example.invalid/kioskd.git;protocol=https;branch=main"
KIOSKD_SRCREV ??= "0000000000000000000000000000000000000000"

SRC_URI = "${KIOSKD_GIT_URI}"
SRCREV = "${KIOSKD_SRCREV}"
# S is left at its default: wrynose's git fetcher unpacks to ${UNPACKDIR}/${BB_GIT_DEFAULT_DESTSUFFIX},
# which is where S points.

# Every crate of Cargo.lock as a crate:// URL with its sha256sum. Generated, never edited:
# scripts/yocto-crates.py (same text as `bitbake -c update_crates kioskd`).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "--sysroot=${STAGING_DIR_TARGET}"
export PKG_CONFIG_ALLOW_CROSS = "1"

# The board profile (/etc/kioskd/kiosk.toml) depends on the machine.
PACKAGE_ARCH = "${MACHINE_ARCH}"
# Which board/<name>/kiosk.toml: rpi4 and rpi5 for meta-raspberrypi's machines, generic
# otherwise; a distro or local.conf may set it.
KIOSKD_BOARD ??= "${@{'raspberrypi4': 'rpi4', 'raspberrypi4-64': 'rpi4', 'raspberrypi5': 'rpi5'}.get(d.getVar('MACHINE'), 'generic')}"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/kioskd.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/kiosk-hub.service ${D}${systemd_system_unitdir}/

    install -d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/kioskd.sysusers ${D}${nonarch_libdir}/sysusers.d/kioskd.conf
    install -m 0644 ${S}/systemd/kioskd.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/kioskd.conf

    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${S}/systemd/90-kioskd-gpio.rules ${D}${nonarch_base_libdir}/udev/rules.d/

    install -d ${D}${sysconfdir}/kioskd ${D}${sysconfdir}/alsa/conf.d
    install -m 0644 ${S}/board/${KIOSKD_BOARD}/kiosk.toml ${D}${sysconfdir}/kioskd/kiosk.toml
    install -m 0644 ${S}/board/asound.conf ${D}${sysconfdir}/alsa/conf.d/60-kioskd.conf
    install -m 0644 ${S}/docs/hub.example.toml ${D}${sysconfdir}/kioskd/hub.toml.example

    # The units' Documentation= (in the -doc package).
    install -d ${D}${docdir}/kioskd
    install -m 0644 ${S}/README.md ${D}${docdir}/kioskd/README.md
}

PACKAGES =+ "${PN}-hub"

SYSTEMD_PACKAGES = "${PN} ${PN}-hub"
SYSTEMD_SERVICE:${PN} = "kioskd.service"
SYSTEMD_SERVICE:${PN}-hub = "kiosk-hub.service"

FILES:${PN} += "${nonarch_libdir}/sysusers.d ${nonarch_libdir}/tmpfiles.d ${nonarch_base_libdir}/udev/rules.d"
FILES:${PN}-hub += "${systemd_system_unitdir}/kiosk-hub.service ${sysconfdir}/kioskd/hub.toml.example"
CONFFILES:${PN} = "${sysconfdir}/kioskd/kiosk.toml ${sysconfdir}/alsa/conf.d/60-kioskd.conf"

# The user is created at build time for the read-only parts of the image; kioskd.sysusers says
# the same for systemd-sysusers. video and audio come from base-passwd.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system gpio"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/kioskd --no-create-home --shell /sbin/nologin \
                       --user-group --groups gpio,video,audio kioskd"

# libasound and libopus are linked (found by the shared-library scan too); alsa-conf holds
# alsa-lib's own configuration, which reads /etc/alsa/conf.d.
RDEPENDS:${PN} += "alsa-conf libasound libopus"
RDEPENDS:${PN}-hub += "${PN}"
