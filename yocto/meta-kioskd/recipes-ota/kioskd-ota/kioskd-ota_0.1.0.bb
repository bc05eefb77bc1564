# nooelint: oelint.var.bbclassextend - units and a script for the target image only
SUMMARY = "kioskd's side of RAUC A/B updates: health gate, roll-back, idle reboot"
DESCRIPTION = "kioskd-health.service holds boot-complete.target until kioskd is healthy, \
               kioskd-mark-good.service then marks the RAUC slot good, and \
               kioskd-fallback.timer rolls a newly installed slot back when it never gets there. \
               kioskd-ota reboot-when-idle reboots into an installed update between calls."
HOMEPAGE = "https://kioskd.example.invalid/"
BUGTRACKER = "https://kioskd.example.invalid/issues"
SECTION = "admin"
LICENSE = "Apache-2.0"
# The files are part of this layer, which has no licence file of its own: oe-core's copy of the
# licence text stands for it.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"
CVE_PRODUCT = "kioskd"

SRC_URI = "file://kioskd-ota \
           file://kioskd-ota.tmpfiles \
           file://kioskd-health.service \
           file://kioskd-mark-good.service \
           file://kioskd-fallback.service \
           file://kioskd-fallback.timer \
           "

S = "${UNPACKDIR}"

# Not allarch: it depends on kioskd, which is machine-specific (its board profile).
inherit systemd

do_install() {
    install -d ${D}${libexecdir}/kioskd
    install -m 0755 ${S}/kioskd-ota ${D}${libexecdir}/kioskd/kioskd-ota

    install -d ${D}${systemd_system_unitdir}
    for unit in kioskd-health.service kioskd-mark-good.service kioskd-fallback.service kioskd-fallback.timer; do
        install -m 0644 ${S}/$unit ${D}${systemd_system_unitdir}/
    done

    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/kioskd-ota.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/kioskd-ota.conf

    # The kiosk's identity lives on the data partition, which updates keep; the configuration
    # in the image refers to it through /etc/kioskd.
    install -d ${D}${sysconfdir}/kioskd
    for f in ca.pem kiosk.pem kiosk.key; do
        ln -sf /data/kioskd/$f ${D}${sysconfdir}/kioskd/$f
    done
}

SYSTEMD_SERVICE:${PN} = "kioskd-health.service kioskd-mark-good.service kioskd-fallback.timer"

# kioskd-fallback.service is started by its timer, not enabled: the systemd class does not
# package it by itself.
FILES:${PN} += "${nonarch_libdir}/tmpfiles.d ${systemd_system_unitdir}/kioskd-fallback.service"

RDEPENDS:${PN} += "kioskd rauc"
