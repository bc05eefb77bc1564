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

# Built for the Raspberry Pi 4 (meta-raspberrypi, MACHINE raspberrypi4-64): the SD card layout,
# the RAUC slots in kioskd-rauc-conf and the U-Boot boot script are that board's. The image is not
# restricted to it: on another machine (qemuarm64 in the layer check) it builds the root file system
# the bundle takes, without the SD card image; such a board needs its own system.conf (a
# kioskd-rauc-conf bbappend), boot script and partition layout.

IMAGE_INSTALL = "packagegroup-core-boot \
                 kioskd \
                 kioskd-ota \
                 rauc \
                 kioskd-rauc-conf \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
                 "
# meta-rauc-raspberrypi's U-Boot script loads the kernel from the booted slot (boot/Image of
# rootfs A or B), not from the boot partition: the kernel is in the root file system, and a RAUC
# update brings a new kernel with it.
# USB cameras (uvcvideo) and USB speakerphones (snd-usb-audio) are modules in the Raspberry Pi
# kernel configuration.
IMAGE_INSTALL:append = " ${@kioskd_on_rpi(d, 'kernel-image kernel-module-uvcvideo kernel-module-snd-usb-audio')}"
# kioskd-rauc-conf (this layer) replaces meta-rauc's example rauc-conf; both provide
# virtual-rauc-conf, which rauc recommends. Set PREFERRED_RPROVIDER_virtual-rauc-conf =
# "kioskd-rauc-conf" in the distro or local.conf.
BAD_RECOMMENDATIONS += "rauc-conf"

# No SSH server and no debug tweaks: a kiosk in a bank branch is maintained through its updates
# and its hub. Add maintenance access deliberately (IMAGE_FEATURES, CORE_IMAGE_EXTRA_INSTALL).

# ext4 for the RAUC bundle (kioskd-bundle); on the Raspberry Pi also the first SD card (wic,
# files/wic/kioskd-sdimage-dual.wks).
IMAGE_FSTYPES = "ext4 ${@kioskd_on_rpi(d, 'wic.bz2 wic.bmap')}"
WKS_FILE = "kioskd-sdimage-dual.wks"

# `value` on a Raspberry Pi (meta-raspberrypi's machines carry the "rpi" override), else
# nothing. A function rather than ":rpi" overrides, so that the recipe reads the same to tools
# that do not know meta-raspberrypi's machines.
def kioskd_on_rpi(d, value):
    return value if 'rpi' in (d.getVar('MACHINEOVERRIDES') or '').split(':') else ''

