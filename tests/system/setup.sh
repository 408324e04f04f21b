#!/usr/bin/env bash
# System-test prerequisites (run as root by CI before the tests; idempotent, safe to re-run).
#
# Why: tests/test_system_provision.py boots real systemd hosts with systemd-nspawn from a
# Debian rootfs built by mmdebstrap and provisions them with the project's Ansible playbook.
# This installs only the Debian packages that are missing (apt is slow even when idle) and
# a pinned ansible-core in its own venv (.venv-ansible), made with Debian's python3 so the
# controller matches the targets' Python 3.11. Prints how long each step took.
# tests/test_arm64_agent.py runs the Pis' arm64 agent under qemu-user: it needs
# qemu-user-static, binfmt-support (registers qemu-aarch64 with binfmt_misc, which this
# script mounts when the kernel has it unmounted) and arch-test (mmdebstrap refuses a
# foreign architecture without it).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
VENV=$REPO/.venv-ansible
REQS=$REPO/tests/system/requirements-ansible.txt
PY=${ANSIBLE_PYTHON:-/usr/bin/python3}

now() { date +%s%3N; }  # milliseconds
t0=$(now)
step() { local ms=$(( $(now) - $2 )); printf 'setup.sh: %-50s %4d.%01ds\n' "$1" $((ms / 1000)) $((ms % 1000 / 100)); }

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: must run as root (installs Debian packages)" >&2
  exit 1
fi

# binfmt_misc first: the qemu-user-static package registers its entries when it is mounted.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/status" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" || echo "setup.sh: cannot mount binfmt_misc (the arm64 test will skip)" >&2
fi

pkgs=(systemd-container mmdebstrap debootstrap openssh-client iproute2 python3-venv
      qemu-user-static binfmt-support arch-test)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
t=$(now)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
step "apt (${#missing[@]} missing)" "$t"

t=$(now)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# Reinstall only when the pins changed (the stamp holds a copy of the requirements).
if ! cmp -s "$REQS" "$VENV/.installed" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  cp "$REQS" "$VENV/.installed"
fi
step "ansible venv ($("$VENV/bin/ansible-playbook" --version 2>/dev/null | sed -n 1p))" "$t"

t=$(now)
if [ -e "$binfmt/status" ] && [ ! -e "$binfmt/qemu-aarch64" ]; then
  update-binfmts --enable qemu-aarch64 || echo "setup.sh: could not enable qemu-aarch64 (the arm64 test will skip)" >&2
fi
step "binfmt ($(sed -n 1p "$binfmt/qemu-aarch64" 2>/dev/null || echo 'no qemu-aarch64'))" "$t"
step "total" "$t0"
