"""One MQTT connection on an ``asyncio.Protocol``, shared by the subscriber and the publisher: it parses the
packets of every read with the codec and hands what a client needs to its :class:`Sink` in one call per read
(the PUBLISHes received, the PUBACKs of what it published), so the protocol object never touches a client's
state."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from .codec import (
    CONNACK,
    DISCONNECT,
    MQTT5,
    PUBACK,
    SUBACK,
    UNSUBACK,
    Message,
    parse_connack,
    parse_puback,
    parse_suback,
    read,
)
from .errors import MqttError

log = logging.getLogger(__name__)


def retrieve(fut: asyncio.Future[Any]) -> None:
    """A done callback: a future nobody awaited any more does not log "exception was never retrieved"."""
    if not fut.cancelled():
        fut.exception()


class Sink(Protocol):
    """Where a connection hands what it read."""

    def received(self, messages: list[Message]) -> bool:
        """Take the PUBLISHes of one read; True asks the connection to pause reading (the inbox is full)."""

    def acked(self, acks: list[tuple[int, int]]) -> None:
        """Take the ``(packet id, reason code)`` of the PUBACKs of one read."""

    def lost(self) -> None:
        """The connection closed."""


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: ``connack``, ``suback`` and ``closed`` are futures of the handshake and of
    the end; ``unacked`` counts the QoS 1 PUBLISHes received and not yet acked."""

    def __init__(self, version: int, gen: int, sink: Sink) -> None:
        self.version = version
        self.gen = gen
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[tuple[bool, int, dict[int, int]]] = loop.create_future()
        self.suback: asyncio.Future[list[int]] = loop.create_future()
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        for fut in (self.connack, self.suback):  # a handshake that never happened is not an unseen error
            fut.add_done_callback(retrieve)
        self.last_rx = time.monotonic()
        self.paused = False
        self.unacked = 0
        self._writable = asyncio.Event()  # cleared while the transport's write buffer is over its high-water mark
        self._writable.set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # create_connection gives a stream transport

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(exc or ConnectionResetError(
                    "the broker closed the connection" + (" before its CONNACK" if fut is self.connack else "")))
        if not self.closed.done():
            self.closed.set_result(exc)
        self.sink.lost()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        buf = self._buf
        buf += data
        packets: list[tuple[int, int, int]] = []
        got: list[Message] = []
        acks: list[tuple[int, int]] = []
        i = 0
        try:
            v5 = self.version == MQTT5
            i, to_ack = read(buf, v5, self.gen, time.time_ns() // 1_000_000, got, packets)
            self.unacked += to_ack
            for first, j, end in packets:
                kind = first & 0xF0
                if kind == PUBACK:
                    acks.append(parse_puback(buf, j, end))
                elif kind == CONNACK:
                    if not self.connack.done():
                        self.connack.set_result(parse_connack(buf, j, end, v5))
                elif kind == SUBACK or kind == UNSUBACK:
                    if not self.suback.done():
                        self.suback.set_result(parse_suback(buf, j, end, v5))
                elif kind == DISCONNECT:  # from the server (MQTT 5)
                    log.warning("MQTT: the broker disconnected us, reason code 0x%02x", buf[j] if end > j else 0)
                # PINGRESP and others need no action
        except (IndexError, MqttError) as exc:
            log.error("MQTT: malformed packet from the broker (%s); reconnecting", exc)
            self.drop(exc)
        finally:
            del buf[:i]
        if acks:
            self.sink.acked(acks)
        if got:
            if self.sink.received(got) and not self.paused and self.transport is not None \
                    and not self.transport.is_closing():
                self.paused = True
                self.transport.pause_reading()

    def drop(self, why: Exception) -> None:
        """Close the connection from our side: ``closed`` holds ``why`` at once (``connection_lost`` follows
        only on a later loop iteration and keeps it)."""
        if not self.closed.done():
            self.closed.set_result(why)
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the write buffer is full (the broker reads slower than we write), like
        ``StreamWriter.drain``; returns at once when the connection has closed."""
        if not self._writable.is_set():
            await self._writable.wait()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()
