"""``smartpark hj212 simulate``: the park's data loggers, driven by the simulators, speaking HJ 212 to a platform.

Each logger of the park model sends one real-time packet (2011) per instant at which its sensors have a
simulated reading, with the scenario's incident in the values, asks for the 9014 acknowledgement (Flag bit
0) and, when the park gives it an SM4 key, speaks HJ 212-2025 with an encrypted CP. Converted codes carry
the value as both ``-Rtd`` and ``-ZsRtd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from simulators.io import Paced
from simulators.simulator import Message, Simulator
from smartpark.park import Park

from .crypto import encrypt_cp
from .decode import Logger, LoggerMap
from .frame import FrameReader, frame
from .packet import Packet, encode, encode_cp, parse

log = logging.getLogger(__name__)

V2017, V2025 = 4, 8


def realtime_packet(logger: Logger, ts_ms: int, values: dict[str, float], tz: ZoneInfo, *, ack: bool = True,
                    flags: dict[str, str] | None = None) -> bytes:
    """One framed 2011 packet of ``logger`` with ``values`` (pollutant code -> value) at ``ts_ms``."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz)
    groups: list[tuple[tuple[str, str], ...]] = [(("DataTime", dt.strftime("%Y%m%d%H%M%S")),)]
    for code, value in values.items():
        text = f"{value:.3f}"
        items = [(f"{code}-Rtd", text)]
        if logger.codes[code][1].value == "converted":
            items.append((f"{code}-ZsRtd", text))
        items.append((f"{code}-Flag", (flags or {}).get(code, "N")))
        groups.append(tuple(items))
    key = logger.config.sm4_key
    version = V2025 if key else V2017
    cp = tuple(groups)
    water = all(code.startswith("w") for code in values)
    p = Packet(st="32" if water else "31", cn="2011", pw=logger.config.pw or "123456", mn=logger.mn,
               qn=dt.strftime("%Y%m%d%H%M%S%f")[:17], flag=version | (1 if ack else 0),
               cp=() if key else cp, cp_text=encrypt_cp(encode_cp(cp), key) if key else None)
    return frame(encode(p))


def logger_messages(park: Park, sim: Simulator, duration_s: float | None = None,
                    loggers: LoggerMap | None = None) -> Iterator[Message]:
    """Time-ordered framed packets, ``topic`` = the logger's MN."""
    loggers = loggers or LoggerMap(park)
    tz = ZoneInfo(park.park.timezone)
    by_index: dict[int, list[tuple[Logger, str]]] = {}
    for logger in loggers.by_mn.values():
        for code, (ref, _how) in logger.codes.items():
            by_index.setdefault(ref.index, []).append((logger, code))
    for blocks in sim.blocks(duration_s):
        instants: dict[tuple[int, str], dict[str, float]] = {}
        for b in blocks:
            for logger, code in by_index.get(b.index, ()):
                for t, v in zip(b.ts.tolist(), b.values.tolist(), strict=True):
                    instants.setdefault((t, logger.mn), {})[code] = v
        for (t, mn), values in sorted(instants.items()):
            yield Message(t, mn, realtime_packet(loggers.by_mn[mn], t, values, tz))


@dataclass
class DriveResult:
    sent: int = 0
    acked: int = 0


async def drive(messages: Iterator[Message], host: str, port: int, *, speed: float = 1.0,
                stop: asyncio.Event | None = None, ack_timeout: float = 30.0) -> DriveResult:
    """Send each logger's packets on a connection of its own (reconnecting), paced by ``speed``; count 9014s."""
    result = DriveResult()
    conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    readers: list[asyncio.Task[None]] = []
    acked = asyncio.Event()  # set on every 9014

    async def read_acks(reader: asyncio.StreamReader) -> None:
        frames = FrameReader()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                for f in frames.feed(data):
                    if not isinstance(f, Exception) and parse(f.segment).cn == "9014":
                        result.acked += 1
                        acked.set()

    async def connection(mn: str) -> asyncio.StreamWriter:
        held = conns.get(mn)
        if held is not None and not held[1].is_closing():
            return held[1]
        reader, writer = await asyncio.open_connection(host, port)
        conns[mn] = (reader, writer)
        readers.append(asyncio.create_task(read_acks(reader)))
        return writer

    paced = Paced(messages, speed, time.monotonic, stop=stop)
    try:
        while not paced.done and not (stop is not None and stop.is_set()):
            for m in await paced.batch(500):
                try:
                    writer = await connection(m.topic)
                    writer.write(m.payload)
                    await writer.drain()
                    result.sent += 1
                except (ConnectionError, OSError) as exc:
                    log.warning("hj212 simulate: %s: %s (the packet is dropped, as a logger would retry later)",
                                m.topic, exc)
                    conns.pop(m.topic, None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ack_timeout):
                while result.acked < result.sent and not (stop is not None and stop.is_set()):
                    acked.clear()
                    await acked.wait()
    finally:
        for _reader, writer in conns.values():
            writer.close()
        for task in readers:
            task.cancel()
    return result
