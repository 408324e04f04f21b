"""A Raspberry Pi's health sources for tests: a fake `vcgencmd` on PATH and a thermal folder.

The fake prints what the real tool prints (`throttled=0x50005`), read from a file the test
rewrites, so one process (a real fed-agent, its ClientApp) sees the readings change. The
thermal folder has the kernel's layout (thermal_zone0/temp in millidegrees); the agent reads
it through its `health.thermal_dir` setting.
"""

from __future__ import annotations

import os
from pathlib import Path

UNDER_VOLTAGE_AND_THROTTLED = 0x50005  # under-voltage and throttled now, and both since boot
HEALTHY = 0x0
SOFT_TEMPERATURE_LIMIT = 0x80008  # soft temperature limit now and since boot


class FakeVcgencmd:
    def __init__(self, folder: Path, throttled: int = HEALTHY, hang: bool = False) -> None:
        self.bin_dir = Path(folder) / "bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.output = Path(folder) / "vcgencmd-output"
        self.set(throttled)
        body = "sleep 30\n" if hang else f'cat "{self.output}"\n'
        script = self.bin_dir / "vcgencmd"
        script.write_text('#!/bin/sh\n[ "$1" = get_throttled ] || { echo "bad command: $1" >&2; exit 2; }\n'
                          + body)
        script.chmod(0o755)

    def set(self, throttled: int) -> None:
        self.output.write_text(f"throttled={throttled:#x}\n")

    def path_env(self) -> str:
        """PATH with the fake first."""
        return f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def thermal_dir(folder: Path, celsius: float) -> Path:
    """A /sys/class/thermal stand-in reading `celsius`; call again to change it."""
    zone = Path(folder) / "thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "temp").write_text(f"{round(celsius * 1000)}\n")
    return Path(folder)
