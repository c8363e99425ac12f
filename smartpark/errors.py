"""The few error types of smartpark. Each carries the data that decides what happens next."""

from __future__ import annotations


class SmartparkError(Exception):
    """Base of every smartpark error."""


class ConfigError(SmartparkError):
    """A configuration or model file is wrong; the CLI exits 2 with ``str(err)`` on one line.

    ``file``, ``line`` and ``key`` locate the mistake so that the operator can fix it without guessing.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        if self.key:
            where = f"{where}:{self.key}" if where else self.key
        return f"{where}: {self.message}" if where else self.message


class UsageError(SmartparkError):
    """A command was called wrongly (unknown alarm id, shelving without a reason); exit code 2."""


class DecodeError(SmartparkError):
    """A message or snapshot entry cannot become a reading. ``reason`` is a dead-letter reason of CONTRACT §3."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class WriteError(SmartparkError):
    """InfluxDB refused or could not take a write.

    ``retryable`` says whether the same batch may succeed later (429, 5xx, connection errors);
    ``retry_after`` is the server's hint in seconds, if it gave one; ``status`` the HTTP status (0: no answer).
    """

    def __init__(self, message: str, *, status: int = 0, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class PartialWriteError(WriteError):
    """InfluxDB accepted some lines of a batch and rejected others (HTTP 400 with ``partial write``).

    ``rejected`` maps the index of each rejected line in the batch to InfluxDB's reason.
    """

    def __init__(self, message: str, rejected: dict[int, str], *, status: int = 400) -> None:
        self.rejected = rejected
        super().__init__(message, status=status, retryable=False)


class NotifyError(SmartparkError):
    """A notifier failed. ``recoverable`` says whether a retry may succeed; ``retry_after`` (seconds) is how long
    the destination asked to wait (HTTP ``Retry-After``), if it did."""

    def __init__(self, message: str, *, recoverable: bool, retry_after: float | None = None) -> None:
        self.recoverable = recoverable
        self.retry_after = retry_after
        super().__init__(message)
