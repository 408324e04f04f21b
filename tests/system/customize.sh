#!/bin/sh
# mmdebstrap customize hook for the system-test rootfs: `customize.sh ROOT PUBKEY`.
# Why each step: the hosts boot with systemd-nspawn --boot, reach the controller over a
# private bridge with static addresses (networkd), and Ansible logs in as root by key.
set -eu
root=$1
pubkey=$2
chroot "$root" systemctl enable systemd-networkd ssh
# No outbound network in the test hosts: apt timers would only fail and add noise.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer
# Empty machine-id: systemd derives a distinct one per boot/host (journal dirs differ).
: > "$root/etc/machine-id"
mkdir -p "$root/var/lib/dbus"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"
# Persistent journal, readable from outside with `journalctl -D MERGED/var/log/journal`.
mkdir -p "$root/var/log/journal"
install -d -m 700 "$root/root/.ssh"
install -m 600 "$pubkey" "$root/root/.ssh/authorized_keys"
