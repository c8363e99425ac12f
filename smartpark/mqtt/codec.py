"""The MQTT packet codec of every smartpark client: MQTT 5 and 3.1.1, the packets a subscriber and a
publisher need (CONNECT/CONNACK with properties, PUBLISH, PUBACK, SUBSCRIBE/SUBACK, UNSUBSCRIBE, PINGREQ,
DISCONNECT).

Encoding builds whole packets as ``bytes``; decoding works in place on a connection's receive buffer
(:func:`read` decodes the PUBLISHes of a read and finds the other packets, the ``parse_*`` functions read one
of those), so a 64 KiB read of many PUBLISHes costs no copy beyond each payload.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MqttError

MQTT5 = 5
MQTT311 = 4

# fixed header types (the high nibble of the first byte)
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBACK = 0x90
UNSUBACK = 0xB0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # reason 0 (normal): the broker discards the will

# MQTT 5 property identifiers -> value type (the numeric ones are read; strings and pairs are skipped)
_PROP_BYTE = frozenset((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A))
_PROP_TWO = frozenset((0x13, 0x21, 0x22, 0x23))
_PROP_FOUR = frozenset((0x02, 0x11, 0x18, 0x27))
SESSION_EXPIRY = 0x11
RECEIVE_MAXIMUM = 0x21
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


def protocol_name(version: int) -> str:
    return "5" if version == MQTT5 else "3.1.1"


# ---------------------------------------------------------------------------------------------- encoding

def varint(n: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def string(s: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string (or binary data)."""
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


def connect_packet(client_id: str, version: int, *, keepalive: int, clean_start: bool,
                   session_expiry: int = 0, receive_maximum: int | None = None, will: Will | None = None,
                   username: str | None = None, password: str | None = None) -> bytes:
    """CONNECT; with MQTT 5 it carries the session expiry and, when given, our receive maximum."""
    flags = 0x02 if clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    var = string("MQTT") + bytes((version, flags)) + keepalive.to_bytes(2, "big")
    if version == MQTT5:
        props = bytes((SESSION_EXPIRY,)) + session_expiry.to_bytes(4, "big")
        if receive_maximum is not None:
            props += bytes((RECEIVE_MAXIMUM,)) + receive_maximum.to_bytes(2, "big")
        var += varint(len(props)) + props
    payload = string(client_id)
    if will is not None:
        payload += (b"\x00" if version == MQTT5 else b"") + string(will.topic) + string(will.payload)
    if username is not None:
        payload += string(username)
    if password is not None:
        payload += string(password)
    return packet(0x10, var + payload)


def publish_packet(topic: str | bytes, payload: bytes, version: int, *, qos: int = 0, retain: bool = False,
                   mid: int = 1) -> bytes:
    """PUBLISH; ``topic`` may be given already encoded by :func:`string` as bytes (a publisher caches it)."""
    t = topic if isinstance(topic, bytes) else string(topic)
    head = t + (mid.to_bytes(2, "big") if qos else b"") + (b"\x00" if version == MQTT5 else b"")
    return bytes((0x30 | (qos << 1) | (1 if retain else 0),)) + varint(len(head) + len(payload)) + head + payload


def puback_packets(mids: list[int]) -> bytes:
    """The PUBACKs (reason 0, success) of many messages in one buffer, for one ``write``."""
    return b"".join([b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids])


def subscribe_packet(topic: str, version: int, *, qos: int = 1, no_local: bool = False, mid: int = 1) -> bytes:
    """SUBSCRIBE to one filter; ``no_local`` (MQTT 5 only) keeps our own publishes from coming back."""
    options = qos | (0x04 if no_local and version == MQTT5 else 0)
    return packet(0x82, mid.to_bytes(2, "big") + (b"\x00" if version == MQTT5 else b"") + string(topic)
                  + bytes((options,)))


def unsubscribe_packet(topic: str, version: int, *, mid: int = 1) -> bytes:
    return packet(0xA2, mid.to_bytes(2, "big") + (b"\x00" if version == MQTT5 else b"") + string(topic))


# ---------------------------------------------------------------------------------------------- decoding

def varint_at(buf: bytes | bytearray, i: int) -> tuple[int, int]:
    """The variable byte integer at ``i`` and the index after it."""
    n, mult = 0, 1
    while True:
        b = buf[i]
        i += 1
        n += (b & 0x7F) * mult
        mult <<= 7
        if not b & 0x80:
            return n, i


def properties(buf: bytes | bytearray, i: int, end: int) -> dict[int, int]:
    """The numeric MQTT 5 properties of a block starting at ``i`` (strings and pairs are skipped)."""
    n, i = varint_at(buf, i)
    stop = min(end, i + n)
    out: dict[int, int] = {}
    while i < stop:
        pid = buf[i]
        i += 1
        if pid in _PROP_BYTE:
            out[pid] = buf[i]
            i += 1
        elif pid in _PROP_TWO:
            out[pid] = (buf[i] << 8) | buf[i + 1]
            i += 2
        elif pid in _PROP_FOUR:
            out[pid] = int.from_bytes(buf[i:i + 4], "big")
            i += 4
        elif pid == 0x0B:  # subscription identifier: a varint
            while buf[i] & 0x80:
                i += 1
            i += 1
        elif pid == 0x26:  # user property: two strings
            for _ in range(2):
                i += 2 + ((buf[i] << 8) | buf[i + 1])
        else:  # strings and binary data: a 2-byte length
            i += 2 + ((buf[i] << 8) | buf[i + 1])
    return out


def skip_properties(buf: bytes | bytearray, i: int) -> int:
    """Index after an MQTT 5 property block starting at ``i``."""
    n, i = varint_at(buf, i)
    return i + n


@dataclass(slots=True)
class Message:
    """One PUBLISH received. ``gen`` is the connection it came on: an ack only means something there."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    gen: int
    received_ms: int


def read(buf: bytes | bytearray, v5: bool, gen: int, received_ms: int, publishes: list[Message],
         others: list[tuple[int, int, int]]) -> tuple[int, int]:
    """Decode the complete packets at the start of ``buf``: each PUBLISH as a :class:`Message` appended to
    ``publishes``, every other packet as ``(first byte, body start, end)`` appended to ``others`` for the
    ``parse_*`` functions. Returns the index after the last complete packet (the rest waits for more bytes) and
how many of the PUBLISHes were QoS 1 or 2 (each awaits an ack).

    One loop for the whole read, with the PUBLISH decoded inline: it is the subscriber's hot path."""
    n = len(buf)
    i = acks = 0
    while i + 2 <= n:
        first = buf[i]
        j = i + 1
        length = shift = 0
        while True:  # remaining length: a varint of at most 4 bytes
            if j >= n:
                return i, acks
            b = buf[j]
            j += 1
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MqttError("malformed remaining length")
        end = j + length
        if end > n:
            return i, acks
        if first & 0xF0 == PUBLISH:
            qos = (first >> 1) & 3
            k = j + 2 + ((buf[j] << 8) | buf[j + 1])
            topic = buf[j + 2:k].decode("utf-8", "replace")
            mid = 0
            if qos:
                mid = (buf[k] << 8) | buf[k + 1]
                k += 2
                acks += 1
            if v5:
                k = skip_properties(buf, k)
            publishes.append(Message(topic, bytes(buf[k:end]), mid, qos, gen, received_ms))
        else:
            others.append((first, j, end))
        i = end
    return i, acks


def parse_connack(buf: bytes | bytearray, j: int, end: int, v5: bool) -> tuple[bool, int, dict[int, int]]:
    """``(session present, return or reason code, numeric properties)`` of a CONNACK."""
    props = properties(buf, j + 2, end) if v5 and end - j > 2 else {}
    return bool(buf[j] & 1), buf[j + 1], props


def parse_suback(buf: bytes | bytearray, j: int, end: int, v5: bool) -> list[int]:
    """The return (reason) codes of a SUBACK or UNSUBACK (UNSUBACK 3.1.1 has none)."""
    k = j + 2
    if v5:
        k = skip_properties(buf, k)
    return list(buf[k:end])


def parse_puback(buf: bytes | bytearray, j: int, end: int) -> tuple[int, int]:
    """``(packet id, reason code)`` of a PUBACK (MQTT 5 may omit the code when it is 0, success)."""
    return (buf[j] << 8) | buf[j + 1], buf[j + 2] if end - j > 2 else 0
