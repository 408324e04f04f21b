"""The Pis' arm64 agent run under qemu-user in a Debian bookworm arm64 chroot (see rootfs.py)."""
