"""System-test harness: booted systemd hosts (nspawn), rootfs, wheelhouse, Ansible runs."""
