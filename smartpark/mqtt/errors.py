"""The MQTT package's errors: each carries the data that decides what the caller does next."""

from __future__ import annotations

from ..errors import SmartparkError

# CONNACK return codes of MQTT 3.1.1 and the reason codes of MQTT 5 that may heal by themselves
_CONNACK_TEXT = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
                 4: "bad user name or password", 5: "not authorised", 0x84: "unsupported protocol version",
                 0x86: "bad user name or password", 0x87: "not authorized", 0x88: "server unavailable",
                 0x89: "server busy"}
_CONNACK_RETRYABLE = frozenset((3, 0x88, 0x89))


def reason(exc: object) -> str:
    """A log line's reason that is never empty (``str(TimeoutError())`` is)."""
    text = str(exc)
    return text if text else type(exc).__name__


class MqttError(SmartparkError):
    """The broker refused us (``reason_code``) or broke the protocol; ``fallback`` asks for MQTT 3.1.1."""

    def __init__(self, message: str, *, reason_code: int = 0, fallback: bool = False) -> None:
        self.reason_code = reason_code
        self.fallback = fallback
        super().__init__(message)


class MqttRefused(MqttError, ConnectionError):
    """The broker answered CONNACK with a refusal. ``code`` says why; ``retryable`` is True only for "server
    unavailable" or "busy" (bad credentials do not heal by themselves)."""

    def __init__(self, code: int, *, fallback: bool = False) -> None:
        self.code = code
        self.retryable = code in _CONNACK_RETRYABLE
        super().__init__(f"broker refused the connection: {_CONNACK_TEXT.get(code, 'reason code')} "
                         f"(0x{code:02x})", reason_code=code, fallback=fallback)
