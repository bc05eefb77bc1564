# The kiosk's /etc/fstab on the Raspberry Pi: the boot partition (U-Boot's environment, which
# RAUC's fw_setenv writes) and the data partition (RAUC's status, the kiosk's identity) of
# files/wic/kioskd-sdimage-dual.wks. It is in the root file system itself, not written by wic
# into the first SD card only, so that a slot installed from a RAUC bundle mounts them as well.
# Above meta-rauc-raspberrypi (layer priority), whose fstab has another partition layout.
FILESEXTRAPATHS:prepend:rpi := "${THISDIR}/files:"

dirs755:append:rpi = " /data"
