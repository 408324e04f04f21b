"""What a heartbeat says about the Pi itself: disk, memory, load, CPU temperature."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

THERMAL = Path("/sys/class/thermal")


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def memory() -> dict:
    fields = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                fields[key] = int(value.split()[0]) * 1024
    except OSError:
        return {}
    return {"total_bytes": fields.get("MemTotal"), "available_bytes": fields.get("MemAvailable")}


def cpu_temperature_c() -> float | None:
    """The SoC temperature on a Pi (thermal_zone0); None where the host has no sensor."""
    for zone in sorted(THERMAL.glob("thermal_zone*")):
        try:
            return int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return None


def rss_bytes(pid: int | None = None) -> int | None:
    try:
        for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def system_snapshot(state_dir: Path) -> dict:
    return {
        "disk_free_bytes": disk_free_bytes(state_dir),
        "memory": memory(),
        "load": list(os.getloadavg()),
        "cpu_temperature_c": cpu_temperature_c(),
        "agent_rss_bytes": rss_bytes(),
    }
