"""What a heartbeat says about the Pi itself: disk, memory, load, CPU temperature.

Each reading is made to fit `fed_common.heartbeat.Heartbeat` here, at the source: a value
the host cannot give (no sensor, an unreadable /proc file) is None, and an absurd one (a
thermal driver reporting -273 °C or 1000 °C) is None too, rather than a heartbeat the
coordinator refuses.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from fed_common import pi_health
from fed_common.heartbeat import Memory

THERMAL = pi_health.THERMAL_DIR  # health.thermal_dir in the agent's config


def disk_free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def memory() -> Memory:
    fields = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                fields[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return Memory()
    return Memory(total_bytes=fields.get("MemTotal"), available_bytes=fields.get("MemAvailable"))


def cpu_temperature_c(thermal_dir: Path = THERMAL) -> float | None:
    """The SoC temperature on a Pi (thermal_zone0); None where the host has no sane sensor."""
    return pi_health.cpu_temperature_c(thermal_dir)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages; empty where the host has none."""
    try:
        return [round(max(0.0, value), 2) for value in os.getloadavg()]
    except OSError:
        return []


def rss_bytes(pid: int | None = None) -> int | None:
    try:
        for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def system_snapshot(state_dir: Path, thermal_dir: Path = THERMAL) -> dict[str, Any]:
    """The host fields of a Heartbeat, as keyword arguments for it."""
    return {
        "disk_free_bytes": disk_free_bytes(state_dir),
        "memory": memory(),
        "load": load_average(),
        "cpu_temperature_c": cpu_temperature_c(thermal_dir),
        "agent_rss_bytes": rss_bytes(),
    }
