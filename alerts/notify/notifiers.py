"""Destinations, registered by name in :data:`NOTIFIERS`: ``webhook`` (the CONTRACT §5 event as a JSON POST, plus
``reason``, ``level`` and ``notification_id``, with the header ``Idempotency-Key``) and ``apprise`` (dingtalk://,
wecombot://, feishu://, mailto://, json://, ... with a bilingual text whose last line is the notification id).

Every notifier implements one ``notify(n)`` that returns when the destination accepted ``n`` and raises
:class:`NotifyError` otherwise, saying whether a retry may succeed and how long the destination asked to wait.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from smartpark.errors import ConfigError, NotifyError

from ..events import AlarmEvent


@dataclass(slots=True)
class Notification:
    """What a notifier sends: an alarm event (reason ``event``/``repeat``/``escalation``) or a flood summary.

    ``id`` is stable for (alarm event, destination, reason, level); ``body`` already ends with it."""

    reason: str
    site: str
    priority: str
    title: str
    body: str
    event: AlarmEvent | None = None
    id: str = ""
    level: int = 0

    def to_json(self) -> dict[str, Any]:
        """The webhook body: the alarm event (CONTRACT §5) with ``reason``, ``level`` and ``notification_id``."""
        base: dict[str, Any] = self.event.to_dict() if self.event is not None else {
            "site": self.site, "priority": self.priority, "message": self.body}
        return {**base, "reason": self.reason, "level": self.level, "notification_id": self.id}


class Notifier(Protocol):
    """One destination. ``notify`` raises :class:`NotifyError` with ``recoverable`` to ask for a retry."""

    name: str  # stable and free of secrets: the ``route`` tag of the notification measurement
    structured: bool  # True: machines (every event, no flood summaries); False: people

    async def notify(self, n: Notification) -> None: ...

    async def close(self) -> None: ...


def retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


class WebhookNotifier:
    """POSTs :meth:`Notification.to_json` (flood summaries are for people, not sent here)."""

    structured = True

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"a webhook is an http(s) URL, got {url!r}", key="webhook")
        port = f":{parts.port}" if parts.port else ""
        self.name = f"webhook:{parts.scheme}://{parts.hostname}{port}{parts.path}"  # no user, password or query
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def notify(self, n: Notification) -> None:
        if n.event is None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self.url, json=n.to_json(),
                                          headers={"Idempotency-Key": n.id}) as resp:
                if resp.status >= 300:
                    raise NotifyError(f"{self.name} answered {resp.status}",
                                      recoverable=resp.status >= 500 or resp.status in (408, 425, 429),
                                      retry_after=retry_after(resp.headers.get("Retry-After")))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NotifyError(f"{self.name}: {exc!r}", recoverable=True) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AppriseNotifier:
    """Any apprise URL: DingTalk, WeCom bot, Feishu, e-mail, ... The message is in Chinese and English."""

    structured = False

    def __init__(self, url: str) -> None:
        import apprise

        self._ap = apprise.Apprise()
        if not self._ap.add(url):
            raise ConfigError(f"not an apprise URL apprise understands: {url.split('://')[0]}://...", key="notify")
        # the URL holds the bot's token: the name carries only its scheme and a short digest
        self.name = f"apprise:{url.split('://')[0]}:{hashlib.sha256(url.encode()).hexdigest()[:8]}"

    async def notify(self, n: Notification) -> None:
        ok = await self._ap.async_notify(body=n.body, title=n.title)
        if not ok:
            raise NotifyError(f"{self.name} did not deliver", recoverable=True)

    async def close(self) -> None:
        pass


NOTIFIERS: dict[str, Callable[[str], Notifier]] = {"webhook": WebhookNotifier, "apprise": AppriseNotifier}


def make_notifier(kind: str, url: str) -> Notifier:
    try:
        return NOTIFIERS[kind](url)
    except KeyError:
        raise ConfigError(f"unknown notifier {kind!r}; known: {', '.join(NOTIFIERS)}") from None
