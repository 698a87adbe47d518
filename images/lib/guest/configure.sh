# Shared guest configuration, sourced by build-image with $root set to the image tree.
# Everything here serves the test: a serial console, a marker that reports the boot's facts,
# a root shell the harness can type into, and no background work that is not the boot chain.

in_root() { chroot "$root" "$@"; }
guest_lib=$(dirname "${BASH_SOURCE[0]}")

echo netboot-guest > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 netboot-guest\n' > "$root/etc/hosts"
# Root comes from the kernel command line (rw); nothing to check at boot.
echo "/dev/sda1 / ext4 defaults,_netdev 0 0" > "$root/etc/fstab"

install -m 0755 "$guest_lib/netboot-harness-marker" "$root/usr/local/sbin/netboot-harness-marker"
install -m 0644 "$guest_lib/netboot-harness-marker.service" "$root/etc/systemd/system/"
in_root systemctl enable netboot-harness-marker.service >/dev/null 2>&1

# A root shell on the serial console, started after the marker so its lines come first.
mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
cat > "$root/etc/systemd/system/serial-getty@ttyS0.service.d/netboot-harness.conf" <<'UNIT'
[Unit]
After=netboot-harness-marker.service
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I linux
UNIT
in_root systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1
cat >> "$root/root/.profile" <<'PROFILE'
# The harness waits for this line before it types commands.
if [ "$(tty)" = /dev/ttyS0 ]; then
  stty cols 200 rows 50 2>/dev/null
  echo "netboot-harness: shell ready"
fi
PROFILE

# Work that is not part of the boot chain under test. getty-static starts gettys on tty2-6
# when there is no logind (a VGA console nobody reads); the tmpfiles timer cleans /tmp.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
            fstrim.timer man-db.timer dpkg-db-backup.timer getty@tty1.service getty-static.service \
            systemd-tmpfiles-clean.timer \
            systemd-timesyncd.service console-setup.service keyboard-setup.service; do
  in_root systemctl mask "$unit" >/dev/null 2>&1 || true
done

# udev's coldplug loads a driver for every device QEMU emulates, competing for the one
# emulated CPU with the marker and iscsid while the scenarios time them: the floppy controller
#, the PC speaker and KVM (nested virtualization) have
# nothing to do with a netboot. Only udev's automatic loading is stopped (modprobe -b).
cat > "$root/etc/modprobe.d/netboot-harness.conf" <<'CONF'
blacklist floppy
blacklist pcspkr
blacklist kvm_amd
blacklist kvm_intel
blacklist kvm
CONF
