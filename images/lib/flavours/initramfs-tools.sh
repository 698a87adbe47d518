# Flavour: Debian initramfs-tools with open-iscsi logging in from the iBFT (ISCSI_AUTO=true).
flavour_packages="initramfs-tools busybox open-iscsi"

flavour_configure() {
  # The open-iscsi hook includes iSCSI in the initramfs when this file exists; ISCSI_AUTO makes
  # the initramfs take the network and the target from the iBFT iPXE published.
  # With iscsi_auto=false the file stays (the hook only needs it to exist) but empty: the target
  # then comes from iscsi_target_name=/iscsi_target_ip=/iscsi_initiator= on the kernel command
  # line, the classic configuration without the iBFT.
  if [[ ${NBH_PARAM_ISCSI_AUTO:-true} == true ]]; then
    echo "ISCSI_AUTO=true" > "$root/etc/iscsi/iscsi.initramfs"
  else
    : > "$root/etc/iscsi/iscsi.initramfs"
  fi
  sed -i "s/^MODULES=.*/MODULES=netboot/" "$root/etc/initramfs-tools/initramfs.conf"
  if grep -q '^DEVICE=' "$root/etc/initramfs-tools/initramfs.conf"; then
    sed -i "s/^DEVICE=.*/DEVICE=${NBH_PARAM_DEVICE:-}/" "$root/etc/initramfs-tools/initramfs.conf"
  else
    echo "DEVICE=${NBH_PARAM_DEVICE:-}" >> "$root/etc/initramfs-tools/initramfs.conf"
  fi
  install -D -m 0755 "$guest_lib/initramfs-tools-evidence" \
    "$root/etc/initramfs-tools/scripts/init-bottom/netboot-harness"
  # MODULES=netboot leaves out sd_mod: the login succeeds and then no disk appears.
  for m in ${NBH_PARAM_MODULES:-}; do echo "$m" >> "$root/etc/initramfs-tools/modules"; done
}

flavour_initramfs() {
  chroot "$root" update-initramfs -c -k "$1" >&2
}
