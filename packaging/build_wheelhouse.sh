#!/usr/bin/env bash
# Build the offline wheelhouse the Ansible roles install from (see packaging/README.md).
#
#   packaging/build_wheelhouse.sh OUT_DIR [--platform native|linux_aarch64] [--python 3.11]
#                                 [--only agent|coordinator] [--check] [--dry-run]
#                                 [--interpreter auto|tflite-runtime|ai-edge-litert]
#
# OUT_DIR/agent/*.whl         fed-agent, fedapp (the ClientApp runs in the agent's venv),
#                             fed-common and every dependency (NO TensorFlow), pinned by
#                             packaging/constraints-agent.txt, and ONE TFLite interpreter:
#                             --interpreter auto (default) takes tflite-runtime for CPython
#                             <= 3.11 (its last wheels, 2.14, exist for x86_64 and aarch64 up
#                             to 3.11) and ai-edge-litert for newer Pythons
# OUT_DIR/coordinator/*.whl   fed-coordinator, fedapp, fed-common and every dependency, pinned
#                             by packaging/constraints-coordinator.txt
# OUT_DIR/fedapp-app.tar.gz   the Flower App folder (fedapp/pyproject.toml + fedapp/fedapp/*.py)
#                             that the coordinator's campaign.app_dir points at once unpacked
#
# Each folder is rebuilt from scratch (pip's cache makes a rebuild cheap), so no stale
# version is ever left next to a new one. Install from it with
#   pip install --no-index --find-links OUT_DIR/agent fed-agent
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
PLATFORM=native
PYVER=3.11
ONLY=
CHECK=0
DRY_RUN=0
OUT=
INTERPRETER=auto

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "build_wheelhouse: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --platform) PLATFORM="${2:?--platform needs a value}"; shift 2 ;;
    --python) PYVER="${2:?--python needs a value}"; shift 2 ;;
    --only) ONLY="${2:?--only needs agent or coordinator}"; shift 2 ;;
    --interpreter) INTERPRETER="${2:?--interpreter needs a value}"; shift 2 ;;
    --check) CHECK=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$OUT" ] || die "one OUT_DIR only (got '$OUT' and '$1')"; OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || usage 2
case "$PLATFORM" in
  native|linux_x86_64|linux_aarch64) ;;
  *) die "--platform must be native, linux_x86_64 or linux_aarch64 (got '$PLATFORM')" ;;
esac
case "$ONLY" in ""|agent|coordinator) ;; *) die "--only must be agent or coordinator" ;; esac
# Which TFLite interpreter the agent folder gets (packaging/README.md, "Which TFLite
# interpreter"): the pip extra of fed-agent/fedapp that brings it, and the module it imports.
if [ "$INTERPRETER" = auto ]; then
  if [ "${PYVER#3.}" -le 11 ] 2>/dev/null; then INTERPRETER=tflite-runtime; else INTERPRETER=ai-edge-litert; fi
fi
case "$INTERPRETER" in
  tflite-runtime) EXTRA=tflite-runtime; INTERPRETER_MODULE=tflite_runtime.interpreter ;;
  ai-edge-litert) EXTRA=litert; INTERPRETER_MODULE=ai_edge_litert.interpreter ;;
  *) die "--interpreter must be auto, tflite-runtime or ai-edge-litert (got '$INTERPRETER')" ;;
esac
# Measured (tests/test_arm64_agent.py, a strict xfail): ai-edge-litert 1.4.0's aarch64 wheel
# runs inference but its head trainer's train signature segfaults (under qemu-user 7.2), so a
# Pi fleet on it could not train. Refused until that test passes.
if [ "$INTERPRETER" = ai-edge-litert ] && [ "$PLATFORM" = linux_aarch64 ] && [ "${FED_ALLOW_LITERT_AARCH64:-0}" != 1 ]; then
  die "--platform linux_aarch64 with ai-edge-litert: its 1.4.0 aarch64 wheel crashes in on-device training" \
      "(tests/test_arm64_agent.py); use --interpreter tflite-runtime (CPython <= 3.11), or set" \
      "FED_ALLOW_LITERT_AARCH64=1 for inference-only tests"
fi
[ -x "$PYTHON" ] || die "no Python at $PYTHON (run 'make venv' or set PYTHON=)"
PY_HAVE="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
MACHINE="$(uname -m)"
[ "$PLATFORM" = linux_x86_64 ] && [ "$MACHINE" = x86_64 ] && PLATFORM=native
[ "$PLATFORM" = linux_aarch64 ] && [ "$MACHINE" = aarch64 ] && PLATFORM=native
[ "$PLATFORM" = native ] || [ "$PLATFORM" = linux_aarch64 ] \
  || die "--platform $PLATFORM: build on such a machine (cross-downloads exist for linux_aarch64 only)"
if [ "$PLATFORM" = native ] && [ "$PY_HAVE" != "$PYVER" ]; then
  die "$PYTHON is Python $PY_HAVE but --python $PYVER was asked: set PYTHON= to a $PYVER interpreter"
fi
# The coordinator (TensorFlow) is a server: it is always built for this machine.
if [ "$PLATFORM" = linux_aarch64 ] && [ "$MACHINE" != aarch64 ] && [ -z "$ONLY" ]; then
  echo "build_wheelhouse: --platform linux_aarch64 builds the agent for aarch64 and the" \
       "coordinator for this machine ($MACHINE)" >&2
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
PIP=("$PYTHON" -m pip --disable-pip-version-check)
run() { echo "+ $*" >&2; [ "$DRY_RUN" = 1 ] || "$@"; }

# 1. This project's own wheels (pure Python).
echo "== project wheels" >&2
for pkg in common agent fedapp coordinator; do
  # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
  mkdir -p "$WORK/src"
  cp -r "$REPO/$pkg" "$WORK/src/$pkg"
  rm -rf "$WORK/src/$pkg/build" "$WORK/src/$pkg"/*.egg-info
  find "$WORK/src/$pkg" -name __pycache__ -prune -exec rm -rf {} +
  # Offline (PIP_NO_INDEX=1) build isolation cannot fetch setuptools: use the one installed.
  run "${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$WORK/local" "$WORK/src/$pkg" \
    || { echo "build_wheelhouse: retrying $pkg without build isolation" >&2;
         run "${PIP[@]}" wheel --quiet --no-deps --no-build-isolation --wheel-dir "$WORK/local" "$WORK/src/$pkg"; }
done
local_wheel() {
  [ "$DRY_RUN" = 1 ] && { echo "$WORK/local/$1-0-py3-none-any.whl"; return; }
  local found=("$WORK/local/$1"-*.whl)
  [ -f "${found[0]}" ] || die "no $1 wheel was built"
  echo "${found[0]}"
}
COMMON_WHL="$(local_wheel fed_common)"
AGENT_WHL="$(local_wheel fed_agent)"
FEDAPP_WHL="$(local_wheel fedapp)"
COORD_WHL="$(local_wheel fed_coordinator)"

# Native: `pip wheel` downloads binary wheels and builds the few sdists (e.g. sdnotify) into
# wheels, so the target never needs a compiler.
native_wheels() {  # DEST CONSTRAINTS WHEEL...
  local dest="$1" constraints="$2"; shift 2
  run "${PIP[@]}" wheel --quiet --prefer-binary --wheel-dir "$dest" -c "$constraints" "$@"
}

# aarch64 (Raspberry Pi OS bookworm 64-bit: glibc 2.36, CPython 3.11): binary wheels only.
# Packages published as sdists only are pure Python: their wheels come from a native build.
AARCH64_PLATFORMS=(manylinux2014_aarch64)
for minor in $(seq 17 36); do AARCH64_PLATFORMS+=("manylinux_2_${minor}_aarch64"); done
aarch64_wheels() {  # DEST CONSTRAINTS WHEEL...
  local dest="$1" constraints="$2"; shift 2
  local pure="$WORK/pure" platform_args=()
  for p in "${AARCH64_PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
  native_wheels "$WORK/native-agent" "$constraints" "$@"
  run mkdir -p "$pure"
  if [ "$DRY_RUN" = 0 ]; then
    find "$WORK/native-agent" -name '*-none-any.whl' -exec cp {} "$pure/" \;
  fi
  run "${PIP[@]}" download --quiet --dest "$dest" -c "$constraints" --find-links "$pure" \
      "${platform_args[@]}" --implementation cp --python-version "$PYVER" --abi "cp${PYVER/./}" \
      --only-binary=:all: "$@"
}

build_agent() {
  echo "== agent ($([ "$PLATFORM" = native ] && echo "$MACHINE" || echo "$PLATFORM"), CPython $PYVER, $INTERPRETER)" >&2
  local dest="$WORK/agent"
  local wheels=("$AGENT_WHL[$EXTRA]" "$FEDAPP_WHL[$EXTRA]" "$COMMON_WHL")
  if [ "$PLATFORM" = native ]; then
    native_wheels "$dest" "$REPO/packaging/constraints-agent.txt" "${wheels[@]}"
  else
    aarch64_wheels "$dest" "$REPO/packaging/constraints-agent.txt" "${wheels[@]}"
  fi
  [ "$DRY_RUN" = 1 ] && return
  # A Pi must never get TensorFlow (1.3 GB, and no wheel for 32-bit Pi OS at all).
  local tf
  tf="$(find "$dest" -iname 'tensorflow*' -o -iname 'tf_keras*' -o -iname 'tf-nightly*' | head -5)"
  [ -z "$tf" ] || die "TensorFlow ended up in the agent wheelhouse: $tf"
  # Exactly one interpreter: the Ansible role installs every wheel of the folder.
  local interpreters
  interpreters="$(find "$dest" -iname 'tflite_runtime-*.whl' -o -iname 'ai_edge_litert-*.whl' | wc -l)"
  [ "$interpreters" = 1 ] || die "the agent wheelhouse holds $interpreters TFLite interpreters, not 1"
  rm -rf "$OUT/agent"; mv "$dest" "$OUT/agent"
}

build_coordinator() {
  echo "== coordinator ($MACHINE, CPython $PY_HAVE)" >&2
  local dest="$WORK/coordinator"
  native_wheels "$dest" "$REPO/packaging/constraints-coordinator.txt" "$COORD_WHL" "$FEDAPP_WHL" "$COMMON_WHL"
  [ "$DRY_RUN" = 1 ] && return
  rm -rf "$OUT/coordinator"; mv "$dest" "$OUT/coordinator"
}

# The Flower App folder `flwr run` submits. Reproducible (fixed order, owner and mtime), so an
# unchanged app gives a byte-identical archive and Ansible's unarchive changes nothing.
build_app() {
  echo "== fedapp-app.tar.gz" >&2
  [ "$DRY_RUN" = 1 ] && return
  (cd "$REPO" && find fedapp/pyproject.toml fedapp/fedapp -maxdepth 1 \
      \( -name pyproject.toml -o -name '*.py' \) -print0 | LC_ALL=C sort -z \
    | tar --create --null --no-recursion --files-from=- --owner=0 --group=0 --numeric-owner \
        --mode='u=rwX,go=rX' --mtime='@0' --format=gnu) \
    | gzip -n -9 > "$WORK/fedapp-app.tar.gz"
  tar -tzf "$WORK/fedapp-app.tar.gz" | grep -qx 'fedapp/pyproject.toml' || die "app archive lacks fedapp/pyproject.toml"
  mv "$WORK/fedapp-app.tar.gz" "$OUT/fedapp-app.tar.gz"
}

# --check: install from the wheelhouse OFFLINE into a scratch venv made with /usr/bin/python3
# (Debian's CPython, what the Pis and the coordinator run), import what the services load
# and try the entry point.
check_install() {  # DIST FOLDER IMPORTS COMMAND...
  local dist="$1" folder="$2" imports="$3"; shift 3
  local venv="$WORK/check-${dist%%[*}"
  echo "== check: offline install of $dist from $folder" >&2
  /usr/bin/python3 -m venv "$venv" || die "/usr/bin/python3 -m venv failed (apt-get install python3-venv)"
  # No pip config, index or find-links from the environment: the wheelhouse and nothing else.
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$folder" "$dist" \
    || die "offline install of $dist from $folder failed"
  "$venv/bin/pip" check --disable-pip-version-check >&2 || die "pip check failed for $dist"
  "$venv/bin/python" -c "import $imports" || die "import $imports failed in the $dist venv"
  "$venv/bin/$1" "${@:2}" >/dev/null || die "$* failed in the scratch venv"
  if [ "${dist%%[*}" = fed-agent ] && "$venv/bin/python" -c 'import tensorflow' 2>/dev/null; then
    die "tensorflow is importable in the agent venv"
  fi
  rm -rf "$venv"
}

[ "$ONLY" = coordinator ] || build_agent
[ "$ONLY" = agent ] || build_coordinator
build_app
[ "$DRY_RUN" = 1 ] && exit 0

if [ "$CHECK" = 1 ]; then
  if [ "$PLATFORM" = native ]; then
    [ "$ONLY" = coordinator ] || check_install "fed-agent[$EXTRA]" "$OUT/agent" \
      "fed_common,fedapp.client_app,$INTERPRETER_MODULE" fed-agent print-default-config
    [ "$ONLY" = agent ] || check_install fed-coordinator "$OUT/coordinator" \
      fed_common,fedapp.server_app,fed_coordinator.service.coordinator fed-coordinator print-default-config
  else
    echo "build_wheelhouse: --check skipped (the agent wheels are for $PLATFORM, not this machine)" >&2
  fi
fi

echo "== wheelhouse $OUT"
for part in agent coordinator; do
  [ -d "$OUT/$part" ] && printf '%-22s %6s  %3d wheels\n' "$part/" "$(du -sh "$OUT/$part" | cut -f1)" \
    "$(find "$OUT/$part" -name '*.whl' | wc -l)"
done
printf '%-22s %6s\n' fedapp-app.tar.gz "$(du -sh "$OUT/fedapp-app.tar.gz" | cut -f1)"
