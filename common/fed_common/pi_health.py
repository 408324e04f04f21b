"""Raspberry Pi health: the firmware's throttling bits, the SoC temperature, and declines.

Why here, in fed_common: the agent reports these readings in its heartbeat and STATUS= line,
and the ClientApp (a separate flwr-clientapp process on the same Pi) reads them again when a
train message arrives, to decline training on a Pi that is too hot or under-voltage now.
Both must read the same sources the same way, and the coordinator must parse the same bits.

Sources: `vcgencmd get_throttled` (prints `throttled=0x50005`) when it is on PATH, run with a
bounded timeout so a wedged firmware mailbox never stalls a caller; else the firmware's sysfs
file (Pi kernels: /sys/devices/platform/soc/soc:firmware/get_throttled, `50005` in hex; newer
kernels log a one-time deprecation warning when it is read, hence second). Bits 0-3 are what
holds now (under-voltage, arm frequency capped, throttled, soft temperature limit), bits
16-19 the same "has occurred since boot". The temperature is thermal_zone0 in millidegrees.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .files import atomic_write

THERMAL_DIR = Path("/sys/class/thermal")
THROTTLED_FILE = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
DEFAULT_MAX_TEMP_C = 80.0  # the firmware starts throttling the ARM cores between 80 and 85 °C
VCGENCMD_TIMEOUT = 2.0
TEMPERATURE_RANGE_C = (-100.0, 200.0)  # the heartbeat's bounds; outside them a sensor is broken
CONDITIONS = ("under-voltage", "arm frequency capped", "throttled", "soft temperature limit")
SINCE_BOOT_SHIFT = 16
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)
Reason = Annotated[str, StringConstraints(max_length=300)]


class PiHealth(BaseModel):
    """What the firmware says (None where there is no firmware interface, with `error` when
    one exists but failed), and the limit above which this Pi declines training."""

    model_config = _STRICT
    throttled: Optional[Annotated[int, Field(ge=0, le=2**32 - 1)]] = None
    source: Optional[Literal["vcgencmd", "sysfs"]] = None
    error: Optional[Reason] = None
    max_temp_c: Optional[Annotated[float, Field(ge=0, le=200)]] = None
    last_decline: Optional["Decline"] = None

    def _set(self, shift: int) -> list[str]:
        value = self.throttled or 0
        return [name for bit, name in enumerate(CONDITIONS) if value >> (bit + shift) & 1]

    @property
    def now(self) -> list[str]:
        """The conditions that hold now: `["under-voltage", "throttled"]`."""
        return self._set(0)

    @property
    def since_boot(self) -> list[str]:
        return self._set(SINCE_BOOT_SHIFT)

    @property
    def under_voltage_now(self) -> bool:
        return "under-voltage" in self.now

    @property
    def hex(self) -> str:
        return f"throttled={self.throttled:#x}" if self.throttled is not None else "throttled unknown"

    @property
    def words(self) -> list[str]:
        """`["under-voltage now", "throttled now", "under-voltage since boot", ...]`."""
        return [f"{name} now" for name in self.now] + [f"{name} since boot" for name in self.since_boot]

    def problems(self, cpu_temperature_c: Optional[float]) -> list[str]:
        """In words, worst first: `UNDER-VOLTAGE now, THROTTLED now (throttled=0x50005)`,
        `under-voltage since boot (throttled=0x10000)`, `82.3 °C >= training.max_temp_c 80.0`,
        and the last decline (`declined training (c-1 round 2): ...`) until a round trains."""
        found = [f"throttling unknown: {self.error}"] if self.error else []
        if self.now:
            found.append(", ".join(f"{name.upper()} now" for name in self.now) + f" ({self.hex})")
        elif "under-voltage" in self.since_boot:  # the SD card may have suffered: worth a look
            found.append(f"under-voltage since boot ({self.hex})")
        hot = temperature_refusal(cpu_temperature_c, self.max_temp_c)
        found += [hot] if hot else []
        return found + ([self.last_decline.text] if self.last_decline else [])


class Decline(BaseModel):
    """The last train message this Pi declined, and why (the ClientApp writes it, the agent's
    heartbeat carries it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    time: float = Field(ge=0, le=10**11)
    campaign: str = Field("", max_length=128)
    round: int = Field(0, ge=0, le=100_000)
    reason: Reason

    @property
    def text(self) -> str:
        return f"declined training ({self.campaign or 'campaign'} round {self.round}): {self.reason}"

    def write(self, path: str | Path) -> None:
        atomic_write(path, self.model_dump_json())

    @classmethod
    def read(cls, path: str | Path | None) -> Optional["Decline"]:
        """The record, or None: none yet, unreadable, or not this shape (never raises)."""
        if path is None:
            return None
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except (OSError, ValidationError, ValueError):
            return None


PiHealth.model_rebuild()


def parse_throttled(text: str) -> int:
    """`throttled=0x50005` (vcgencmd) or `50005` (sysfs) as an int; ValueError names the text."""
    value = text.strip().removeprefix("throttled=").strip()
    try:
        number = int(value, 16)
    except ValueError:
        raise ValueError(f"not a throttled value: {text.strip()[:80]!r}") from None
    if not 0 <= number < 2**32:
        raise ValueError(f"throttled value out of range: {text.strip()[:80]!r}")
    return number


def read_throttled(throttled_file: Path = THROTTLED_FILE, timeout: float = VCGENCMD_TIMEOUT,
                   vcgencmd: str = "vcgencmd") -> PiHealth:
    """The firmware's bits from `vcgencmd` on PATH, else from sysfs; neither: all None."""
    command = shutil.which(vcgencmd)
    if command:
        try:
            done = subprocess.run([command, "get_throttled"], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise ValueError(f"exit {done.returncode}: {done.stderr.strip()[:120]}")
            return PiHealth(throttled=parse_throttled(done.stdout), source="vcgencmd")
        except subprocess.TimeoutExpired:
            return PiHealth(source="vcgencmd", error=f"vcgencmd get_throttled timed out after {timeout:g} s")
        except (OSError, ValueError) as exc:
            return PiHealth(source="vcgencmd", error=f"vcgencmd get_throttled: {exc}"[:300])
    try:
        text = Path(throttled_file).read_text()
    except FileNotFoundError:
        return PiHealth()
    except OSError as exc:
        return PiHealth(source="sysfs", error=f"{throttled_file}: {exc.strerror}"[:300])
    try:
        return PiHealth(throttled=parse_throttled(text), source="sysfs")
    except ValueError as exc:
        return PiHealth(source="sysfs", error=f"{throttled_file}: {exc}"[:300])


def cpu_temperature_c(thermal_dir: Path = THERMAL_DIR) -> Optional[float]:
    """The SoC temperature (the first thermal zone); None where there is no sane sensor."""
    low, high = TEMPERATURE_RANGE_C
    for zone in sorted(Path(thermal_dir).glob("thermal_zone*")):
        try:
            celsius = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        return celsius if low <= celsius <= high else None
    return None


def readings_text(celsius: Optional[float], free_bytes: Optional[int]) -> Optional[str]:
    """`51.2 °C, SD 12.3 GB free` (either part alone when the other is unknown; None: neither)."""
    parts = [f"{celsius:.1f} °C"] if celsius is not None else []
    parts += [f"SD {free_bytes / 1e9:.1f} GB free"] if free_bytes is not None else []
    return ", ".join(parts) or None


def temperature_refusal(celsius: Optional[float], max_temp_c: Optional[float]) -> Optional[str]:
    """`84.0 °C >= training.max_temp_c 80.0`, or None (cool enough, or nothing to compare)."""
    if celsius is None or max_temp_c is None or celsius < max_temp_c:
        return None
    return f"{celsius:.1f} °C >= training.max_temp_c {max_temp_c:.1f}"


def training_refusal(health: PiHealth, celsius: Optional[float]) -> Optional[str]:
    """Why this Pi must not train now (under-voltage now, or at/above its limit), else None."""
    reasons = []
    if health.under_voltage_now:
        reasons.append(f"under-voltage now ({health.hex})")
    hot = temperature_refusal(celsius, health.max_temp_c)
    return "; ".join(reasons + ([hot] if hot else [])) or None


def decline(health: PiHealth, celsius: Optional[float], campaign: str, server_round: int) -> Optional[Decline]:
    """The Decline to answer a train message with, or None: train."""
    reason = training_refusal(health, celsius)
    return Decline(time=time.time(), campaign=campaign, round=server_round, reason=reason) if reason else None
