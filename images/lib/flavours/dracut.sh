# Flavour: dracut with its iscsi and network-legacy modules, logging in from the iBFT.
# dracut's default network module here is systemd-networkd (which needs dbus installed for
# dracut's post-install to succeed). With it the network comes up, but the iscsi module's
# "online" initqueue job never runs and the login never happens; network-legacy (ifup with
# dhclient) runs the online hooks, as the iBFT path expects.
# gawk: dracut's ibft_to_cmdline uses awk's and(), which Debian's default mawk lacks
# ("awk: line 2: function and never defined"), and the iBFT network config is then lost.
flavour_packages="dracut dracut-network open-iscsi dbus isc-dhcp-client gawk"

flavour_configure() {
  local conf=$root/etc/dracut.conf.d/90-netboot-harness.conf
  # In a chroot dracut cannot see the machine it will boot on: build a generic initramfs, and
  # ask for iscsi explicitly (it is not picked without a host to inspect).
  cat > "$conf" <<CONF
hostonly="no"
add_dracutmodules+=" iscsi network-legacy "
omit_dracutmodules+=" systemd-networkd network-manager "
add_drivers+=" sd_mod ${NBH_PARAM_MODULES:-} "
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
