"""Drivers: audio -> mouth parameters. `get_driver(name, fps)` picks one by name."""

from __future__ import annotations

from lipstream.errors import NotSupportedError
from lipstream.motion.drivers.base import Driver
from lipstream.motion.drivers.energy import EnergyDriver
from lipstream.motion.drivers.phoneme import PhonemeDriver
from lipstream.motion.drivers.viseme import VisemeDriver

_DRIVERS: dict[str, type[Driver]] = {cls.name: cls for cls in (EnergyDriver, VisemeDriver, PhonemeDriver)}
DRIVER_NAMES: tuple[str, ...] = tuple(_DRIVERS)
DEFAULT_DRIVER = "phoneme"  # the most accurate on real clips: docs/drivers.md


def get_driver(name: str, fps: float) -> Driver:
    """A driver by name for video at fps frames per second; NotSupportedError for unknown names."""
    try:
        cls = _DRIVERS[name]
    except KeyError:
        raise NotSupportedError(
            f"unknown driver {name!r}; choose one of: {', '.join(DRIVER_NAMES)}"
        ) from None
    return cls(fps)


__all__ = ["DEFAULT_DRIVER", "DRIVER_NAMES", "Driver", "get_driver"]
