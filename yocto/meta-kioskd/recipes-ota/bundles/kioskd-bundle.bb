# nooelint: oelint.file.underscores, oelint.var.mandatoryvar.SRC_URI, oelint.var.bbclassextend
# (A bundle recipe is named after what it bundles, its version is RAUC_BUNDLE_VERSION, and the
# bundle class takes its input from the image named in RAUC_SLOT_rootfs, not from SRC_URI.)
SUMMARY = "RAUC update bundle of the kiosk image (rootfs slot)"
DESCRIPTION = "A signed RAUC bundle that installs kioskd-image into the inactive rootfs slot \
               (A or B) of a kiosk. Install on the kiosk with `rauc install`, then \
               `/usr/libexec/kioskd/kioskd-ota reboot-when-idle`."
HOMEPAGE = "https://kioskd.example.invalid/"
BUGTRACKER = "https://kioskd.example.invalid/issues"
SECTION = "admin"
LICENSE = "MIT"
CVE_PRODUCT = "kioskd"

inherit bundle

# Must equal `compatible` in /etc/rauc/system.conf (recipes-ota/rauc/files/system.conf).
RAUC_BUNDLE_COMPATIBLE = "kioskd-${MACHINE}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "kioskd kiosk image for ${MACHINE}"
RAUC_BUNDLE_FORMAT = "verity"

RAUC_BUNDLE_SLOTS = "rootfs"
# RAUC_SLOT_<slot class> is named after the slot (meta-rauc's bundle class reads it).
# nooelint: oelint.vars.mispell.unknown
RAUC_SLOT_rootfs = "kioskd-image"
# nooelint: oelint.vars.mispell.unknown
RAUC_SLOT_rootfs[fstype] = "ext4"

# The signing key and certificate stay outside the repository: set both in local.conf or the
# distro configuration, e.g. RAUC_KEY_FILE = "/secure/rauc/kiosk-signing.key.pem" (or a PKCS#11
# URI). The certificate must chain to the CA in the kiosks' keyring (rauc-conf).
RAUC_KEY_FILE ??= ""
RAUC_CERT_FILE ??= ""
