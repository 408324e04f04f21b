#!/bin/bash
# What a system-test Pi (systemd-nspawn host from the cached rootfs) answers about its clock,
# the facts agent/fed_agent/clock.py relies on (issue 12, item 4). As root, after the system
# test has built its rootfs once (build/system/rootfs-*); the rootfs is booted read-only with a
# tmpfs overlay and powered off again (about 10 s). Prints:
#   - `timedatectl show -p NTPSynchronized -p NTP` as root, and in the fed-agent unit's own
#     sandbox (its [Service] hardening lines, a static user as in production);
#   - the kernel's adjtimex answer as root and in that sandbox (ProtectClock: EPERM);
#   - the Date header nginx sends when proxying to an upstream whose Date is a day off.
# Usage: bash benchmarks/clock_probe_nspawn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTFS=$(ls -d build/system/rootfs-*/ | head -1)
NAME=clockprobe
WORK=$(mktemp -d)
CGROUPS=(/sys/fs/cgroup/systemd/$NAME /sys/fs/cgroup/unified/$NAME)
cleanup() {
  for cg in "${CGROUPS[@]}"; do echo $$ > "$(dirname "$cg")/cgroup.procs" 2>/dev/null || true; done
  for cg in "${CGROUPS[@]}"; do [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

sed -n '/^NoNewPrivileges/,/^TasksMax/p' systemd/fed-agent.service | grep -v '^#\|^$\|UMask\|Memory\|TasksMax' \
  > "$WORK/props"
cat > "$WORK/adjtimex.py" <<'EOF'
import ctypes, ctypes.util, os
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
rc = libc.adjtimex(ctypes.create_string_buffer(512))
print("adjtimex returned", rc, os.strerror(ctypes.get_errno()) if rc < 0 else "(5: TIME_ERROR, 0: TIME_OK)")
EOF
cat > "$WORK/upstream.py" <<'EOF'
import email.utils, http.server, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response_only(200)
        self.send_header("Date", email.utils.formatdate(time.time() - 86400, usegmt=True))
        self.send_header("Content-Length", "0")
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", 8081), Handler).serve_forever()
EOF
printf 'events {}\nhttp { server { listen 127.0.0.1:8088; location / { proxy_pass http://127.0.0.1:8081; } } }\n' \
  > "$WORK/nginx.conf"

chmod -R a+rX "$WORK"  # the sandboxed probe runs as nobody
for cg in "${CGROUPS[@]}"; do mkdir -p "$cg"; echo $$ > "$cg/cgroup.procs"; done
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn -q -D "$ROOTFS" --volatile=overlay --boot --register=no \
  --keep-unit -M $NAME --private-network --bind-ro="$WORK:/opt/probe" --console=read-only >"$WORK/console" 2>&1 &
NSPAWN=$!
LEADER=
for _ in $(seq 100); do
  for status in $(grep -l "^PPid:	$NSPAWN$" /proc/[0-9]*/status 2>/dev/null || true); do
    awk '/^NSpid:/ { exit !(NF > 2 && $NF == 1) }' "$status" && LEADER=$(echo "$status" | cut -d/ -f3)
  done
  [ -n "$LEADER" ] && break; sleep 0.1
done
inside() { nsenter -t "$LEADER" -a "$@"; }
for _ in $(seq 100); do
  case "$(inside systemctl is-system-running 2>/dev/null || true)" in running|degraded|starting) break;; esac
  sleep 0.2
done
mapfile -t PROPS < "$WORK/props"
SANDBOX=(-p User=nobody); for p in "${PROPS[@]}"; do SANDBOX+=(-p "$p"); done

echo "== timedatectl as root:"; inside timedatectl show -p NTPSynchronized -p NTP -p CanNTP || true
echo "== timedatectl in the fed-agent unit's sandbox:"
inside systemd-run --quiet --wait --pipe "${SANDBOX[@]}" /usr/bin/timedatectl show -p NTPSynchronized -p NTP || true
echo "== adjtimex as root:"; inside python3 /opt/probe/adjtimex.py
echo "== adjtimex in the sandbox:"; inside systemd-run --quiet --wait --pipe "${SANDBOX[@]}" /usr/bin/python3 \
  /opt/probe/adjtimex.py || true
echo "== Date: the upstream's, then nginx's when proxying it, then the clock:"
inside sh -c 'python3 /opt/probe/upstream.py >/dev/null 2>&1 &'
sleep 1
inside curl -sI http://127.0.0.1:8081/ | grep -i '^date' || true
inside nginx -c /opt/probe/nginx.conf && sleep 0.5
inside curl -sI http://127.0.0.1:8088/ | grep -i '^date' || true
inside date -u

kill -s SIGRTMIN+4 "$LEADER"  # poweroff
for _ in $(seq 100); do kill -0 $NSPAWN 2>/dev/null || break; sleep 0.2; done
kill -0 $NSPAWN 2>/dev/null && kill -9 "$LEADER"
wait $NSPAWN || true
