"""smartpark's shared core: the park model and the contract in code (topics, payloads, line protocol,
configuration), used by ``collector``, ``alerts``, ``dashboards`` and ``simulators``."""

from .config import Settings
from .decode import Decoded, Decoder, Reading, Rejected
from .errors import (
    ConfigError,
    DecodeError,
    NotifyError,
    PartialWriteError,
    SmartparkError,
    UsageError,
    WriteError,
)
from .park import Park, Sensor, SensorRef, load_park, parse_park
from .points import PointEncoder

__all__ = [
    "ConfigError",
    "DecodeError",
    "Decoded",
    "Decoder",
    "NotifyError",
    "Park",
    "PartialWriteError",
    "PointEncoder",
    "Reading",
    "Rejected",
    "Sensor",
    "SensorRef",
    "Settings",
    "SmartparkError",
    "UsageError",
    "WriteError",
    "load_park",
    "parse_park",
]
