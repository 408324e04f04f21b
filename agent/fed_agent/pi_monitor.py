"""The Pi's health as the agent reports it: firmware throttling bits, temperature, declines.

Why a cache: the STATUS= line is rebuilt every tick of the main loop (which feeds the
systemd watchdog) and the heartbeat thread builds its own snapshot; `vcgencmd` is a
subprocess with a bounded timeout (fed_common.pi_health), so it runs at most once per
`max_age` seconds, by whichever of the two asks first, never twice at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

from fed_common.node_config import LastTraining
from fed_common.pi_health import (Decline, PiHealth, cpu_temperature_c, read_throttled, readings_text,
                                  temperature_refusal)

from .health import disk_free_bytes


def decline_file(status_file: Path) -> Path:
    """Where the ClientApp records the last train message it declined (next to LastTraining)."""
    return Path(status_file).with_name("last_decline.json")


class PiMonitor:
    def __init__(self, cfg, status_file: Path, max_age: float = 10.0, clock=time.monotonic) -> None:
        self.thermal_dir, self.throttled_file = cfg.health.thermal_dir, cfg.health.throttled_file
        self.state_dir = Path(cfg.agent.state_dir)  # on the SD card
        self.max_temp_c = cfg.training.max_temp_c
        self.status_file, self.decline_file = Path(status_file), decline_file(status_file)
        self.max_age, self.clock = max_age, clock
        self._lock = threading.Lock()
        self._read_at: Optional[float] = None
        self._firmware = PiHealth()

    def health(self) -> PiHealth:
        """The firmware's bits (at most `max_age` old), the training limit and the last decline."""
        with self._lock:
            if self._read_at is None or self.clock() - self._read_at >= self.max_age:
                self._firmware, self._read_at = read_throttled(self.throttled_file), self.clock()
            firmware = self._firmware
        return firmware.model_copy(update={"max_temp_c": self.max_temp_c, "last_decline": self.current_decline()})

    def current_decline(self) -> Optional[Decline]:
        """The last decline, unless a training round finished after it (then it is history)."""
        declined = Decline.read(self.decline_file)
        trained = LastTraining.read(self.status_file)
        if declined is None or (trained is not None and trained.time > declined.time):
            return None
        return declined

    def temperature(self) -> Optional[float]:
        return cpu_temperature_c(self.thermal_dir)

    def status(self) -> tuple[list[str], Optional[str]]:
        """(problems for the front of the STATUS line, the readings for its end):
        `(["UNDER-VOLTAGE now (throttled=0x50001)", "84.0 °C >= training.max_temp_c 80.0"],
        "SD 12.3 GB free")`, `([], "51.2 °C, SD 12.3 GB free")`; a current decline is a problem too."""
        health, celsius = self.health(), self.temperature()
        hot = temperature_refusal(celsius, health.max_temp_c) is not None  # then it is a problem already
        return health.problems(celsius), readings_text(None if hot else celsius, disk_free_bytes(self.state_dir))
