# nooelint: oelint.var.suggestedvar.CVE_PRODUCT, oelint.var.suggestedvar.SECTION - an image has neither
SUMMARY = "Raspberry Pi 4 video-call kiosk: systemd, kioskd, RAUC A/B updates"
DESCRIPTION = "The image of a bank-branch kiosk: kioskd with its board profile, systemd, RAUC \
               with two rootfs slots and a data partition, and the health gate that marks an \
               updated slot good only once kioskd has reached its hub."
HOMEPAGE = "https://kioskd.example.invalid/"
BUGTRACKER = "https://kioskd.example.invalid/issues"
LICENSE = "MIT"

inherit core-image features_check

REQUIRED_DISTRO_FEATURES = "systemd rauc"

COMPATIBLE_MACHINE = "^raspberrypi4(-64)?$"

IMAGE_INSTALL = "packagegroup-core-boot \
                 kioskd \
                 kioskd-ota \
                 rauc \
                 kioskd-rauc-conf \
                 kernel-module-uvcvideo \
                 kernel-module-snd-usb-audio \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
                 "
# USB cameras (uvcvideo) and USB speakerphones (snd-usb-audio) are modules in the Raspberry Pi
# kernel configuration.
# kioskd-rauc-conf (this layer) replaces meta-rauc's example rauc-conf; both provide
# virtual-rauc-conf, which rauc recommends. Set PREFERRED_RPROVIDER_virtual-rauc-conf =
# "kioskd-rauc-conf" in the distro or local.conf.
BAD_RECOMMENDATIONS += "rauc-conf"

# No SSH server and no debug tweaks: a kiosk in a bank branch is maintained through its updates
# and its hub. Add maintenance access deliberately (IMAGE_FEATURES, CORE_IMAGE_EXTRA_INSTALL).

# ext4 for the RAUC bundle (kioskd-bundle), wic for the first SD card.
IMAGE_FSTYPES = "ext4 wic.bz2 wic.bmap"
WKS_FILE = "kioskd-sdimage-dual.wks"
