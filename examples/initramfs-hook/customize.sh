#!/bin/sh
# Runs as root in the guest root (chroot) after the overlay is copied in and before the
# initramfs is built; what it prints goes to the image's build log.
set -e
echo "customize: the overlay's hook: $(ls -l /etc/initramfs-tools/scripts/init-top/hello-example)"
# A mark the booted system can show (the scenario's last step checks it).
echo "customized by examples/initramfs-hook/customize.sh" > /etc/netboot-harness-customized
