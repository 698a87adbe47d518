# Flavour: Debian initramfs-tools with open-iscsi logging in from the iBFT (ISCSI_AUTO=true).
# zstd: the initramfs's compressor (initramfs-tools' default, absent from minbase: it fell back
# to gzip).
flavour_packages="initramfs-tools busybox open-iscsi zstd"
flavour_generator=/usr/sbin/update-initramfs

# The kernel drivers a netboot from these scenarios needs, and nothing else: every NIC model a
# scenario may offer (e1000, e1000e, rtl8139 -> 8139cp/8139too, virtio-net, pcnet, ne2k-pci,
# eepro100 -> e100), the iSCSI initiator and the iBFT, and the root's ext4. MODULES=netboot
# takes every NIC and filesystem driver of the kernel (27 MB, read through iPXE's INT13 at a
# few MB/s under emulation). sd_mod is not here on purpose: the `modules` parameter adds it,
# so an image built without it reproduces the missing-disk failure.
netboot_modules="e1000 e1000e 8139cp 8139too virtio_pci virtio_net pcnet32 ne2k-pci 8390 e100
iscsi_tcp libiscsi libiscsi_tcp scsi_transport_iscsi iscsi_ibft ext4 crc32c_generic"

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
  local conf=$root/etc/initramfs-tools/initramfs.conf
  sed -i "s/^MODULES=.*/MODULES=list/" "$conf"
  # zstd -9: under TCG the kernel unpacks zstd twice as fast as gzip and ten times as fast as
  # xz, whose smaller file saves less INT13 reading than its unpacking costs (measured on the
  # dracut initramfs; see the dracut flavour).
  sed -i "s/^COMPRESS=.*/COMPRESS=zstd/" "$conf"
  sed -i "/^COMPRESSLEVEL=/d" "$conf"
  echo "COMPRESSLEVEL=9" >> "$conf"
  if grep -q '^DEVICE=' "$conf"; then
    sed -i "s/^DEVICE=.*/DEVICE=${NBH_PARAM_DEVICE:-}/" "$conf"
  else
    echo "DEVICE=${NBH_PARAM_DEVICE:-}" >> "$conf"
  fi
  install -D -m 0755 "$guest_lib/initramfs-tools-evidence" \
    "$root/etc/initramfs-tools/scripts/init-bottom/netboot-harness"
  for m in $netboot_modules ${NBH_PARAM_MODULES:-}; do echo "$m" >> "$root/etc/initramfs-tools/modules"; done
}

flavour_initramfs() {
  chroot "$root" update-initramfs -c -k "$1" >&2
}
