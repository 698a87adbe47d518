# Flavour: dracut with its iscsi and network-legacy modules, logging in from the iBFT.
# dracut's default network module here is systemd-networkd (which needs dbus installed for
# dracut's post-install to succeed). With it the network comes up, but the iscsi module's
# "online" initqueue job never runs and the login never happens; network-legacy (ifup with
# dhclient) runs the online hooks, as the iBFT path expects.
# gawk: dracut's ibft_to_cmdline uses awk's and(), which Debian's default mawk lacks
# ("awk: line 2: function and never defined"), and the iBFT network config is then lost.
# zstd: compresses the initramfs (without it dracut used gzip -9).
flavour_packages="dracut dracut-network open-iscsi dbus isc-dhcp-client gawk zstd"
flavour_generator=/usr/bin/dracut

# The same kernel drivers as the initramfs-tools flavour's list (see there), with sd_mod: every
# NIC model a scenario may offer, the iSCSI initiator and the iBFT, the disk and ext4.
netboot_drivers="e1000 e1000e 8139cp 8139too virtio_pci virtio_net pcnet32 ne2k-pci 8390 e100
iscsi_tcp libiscsi libiscsi_tcp scsi_transport_iscsi iscsi_ibft sd_mod ext4 crc32c_generic"

flavour_configure() {
  local conf=$root/etc/dracut.conf.d/90-netboot-harness.conf
  # In a chroot dracut cannot see the machine it will boot on, and hostonly="no" alone takes
  # every dracut module and driver it has (52 MB): name the dracut modules and the drivers.
  # `drivers` alone is not enough: the network and iscsi modules still add every NIC and iSCSI
  # HBA driver, so every kernel module outside the list and its dependencies is omitted.
  local kver wanted
  kver=$(ls "$root/lib/modules" | sort -V | tail -n1)
  # shellcheck disable=SC2086
  wanted=$(chroot "$root" modprobe -S "$kver" --show-depends -a $netboot_drivers ${NBH_PARAM_MODULES:-} |
    awk '$1 == "insmod" { print $2 }' | sed 's|.*/||; s/\.ko.*//' | tr - _ | sort -u)
  cat > "$conf" <<CONF
hostonly="no"
dracutmodules=" bash systemd systemd-initrd dracut-systemd kernel-modules udev-rules base fs-lib rootfs-block iscsi network network-legacy shutdown "
omit_dracutmodules+=" systemd-networkd network-manager "
drivers=" $(echo $netboot_drivers) ${NBH_PARAM_MODULES:-} "
omit_drivers+=" $(find "$root/lib/modules/$kver/kernel" -name '*.ko*' | sed 's|.*/||; s/\.ko.*//' | tr - _ | sort -u | comm -23 - <(echo "$wanted") | tr '\n' ' ') "
# Measured on 42 MB of initramfs: -9 gives 15.5 MB in 1 s, dracut's -15 15.3 MB in 8 s;
# the kernel unpacks zstd in 0.6 s under TCG, gzip in 1.2 s, xz in 5.8 s.
compress="zstd -9 -q -T0"
CONF
  if [[ ${NBH_PARAM_ISCSID_FIX:-yes} == yes ]]; then
    # Debian's iscsid.service starts with ExecStartPre=/lib/open-iscsi/startup-checks.sh, which
    # dracut's iscsi module does not copy: iscsid then fails with 203/EXEC in the initramfs and
    # the root never appears (dracutdevs/dracut#2498). Ship the script and what it reads.
    cat >> "$conf" <<'CONF'
install_items+=" /lib/open-iscsi/startup-checks.sh /etc/iscsi/iscsid.conf /etc/iscsi/initiatorname.iscsi /sbin/iscsi-iname grep "
CONF
  fi
  for m in ${NBH_PARAM_OMIT_MODULES:-}; do echo "omit_dracutmodules+=\" $m \"" >> "$conf"; done
}

flavour_kernel_args() {
  echo "rd.iscsi.firmware=1 rd.iscsi.ibft=1 ip=ibft rd.neednet=1"
}

flavour_initramfs() {
  chroot "$root" dracut --force --kver "$1" "/boot/initrd.img-$1" >&2
}
