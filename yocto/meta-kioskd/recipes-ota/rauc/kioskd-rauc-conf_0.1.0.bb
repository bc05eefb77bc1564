# nooelint: oelint.var.bbclassextend - configuration of the target only
SUMMARY = "RAUC system configuration of the kiosk image: rootfs A/B on the SD card"
DESCRIPTION = "/etc/rauc/system.conf (two rootfs slots on the SD card, U-Boot, RAUC's status on \
               /data) and the deployment's RAUC CA as /etc/rauc/ca.cert.pem. Replaces \
               meta-rauc's example rauc-conf: both provide virtual-rauc-conf."
HOMEPAGE = "https://kioskd.example.invalid/"
BUGTRACKER = "https://kioskd.example.invalid/issues"
SECTION = "admin"
LICENSE = "MIT"
# A configuration file of this layer: oe-core's copy of the licence text stands for it.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"
CVE_PRODUCT = "kioskd"

# The deployment's RAUC CA certificate (PEM), which bundles must be signed under. Kept out of the
# repository; set it in local.conf or the distro configuration, e.g.
#   KIOSKD_RAUC_KEYRING = "file:///secure/rauc/ca.cert.pem"
KIOSKD_RAUC_KEYRING ??= ""

SRC_URI = "file://system.conf \
           ${KIOSKD_RAUC_KEYRING} \
           "

S = "${UNPACKDIR}"

do_install() {
    install -d ${D}${sysconfdir}/rauc
    sed -e 's/@@MACHINE@@/${MACHINE}/g' ${S}/system.conf >${D}${sysconfdir}/rauc/system.conf
    chmod 0644 ${D}${sysconfdir}/rauc/system.conf

    keyring="${@os.path.basename(d.getVar('KIOSKD_RAUC_KEYRING'))}"
    if [ -z "$keyring" ]; then
        bbfatal "Set KIOSKD_RAUC_KEYRING to the deployment's RAUC CA certificate (see yocto/README.md)"
    fi
    keyfile=$(find ${UNPACKDIR} -name "$keyring" -type f | head -n 1)
    install -m 0644 "$keyfile" ${D}${sysconfdir}/rauc/ca.cert.pem
}

# system.conf names the machine (compatible=kioskd-${MACHINE}, which bundles must match).
PACKAGE_ARCH = "${MACHINE_ARCH}"

RPROVIDES:${PN} += "virtual-rauc-conf"
RCONFLICTS:${PN} += "rauc-conf"
