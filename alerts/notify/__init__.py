"""Notifications (CONTRACT §9): a chain of small stages after Alertmanager, assembled in :func:`build_pipeline`.

    events -> route (site, priority) -> flood gate (EEMUA 191, people only) -> repeat / escalation
           -> outbox (durable, one id per notification) -> one sender per destination: timeout, full-jitter
              backoff (at most 30 s, longer on Retry-After) until accepted or expired -> Notifier.notify
           -> final outcome -> the ``notification`` measurement

Nothing is lost: a notification is in the outbox (fsync'd) before its first attempt, ``kill -9`` or a
destination down for hours lose none, and after a crash one may arrive twice, always with the same id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from smartpark.schema import DELIVERED, EXPIRED

from .notifiers import NOTIFIERS, AppriseNotifier, Notification, Notifier, WebhookNotifier, make_notifier
from .outbox import PENDING, Outbox
from .routing import REASONS, Dispatcher, Route, build_routes, notification_id
from .sender import Sender


@dataclass
class Pipeline:
    """The dispatcher (synchronous, into the outbox) and one sender task per destination."""

    dispatcher: Dispatcher
    senders: list[Sender]
    outbox: Outbox

    def counts(self) -> dict[str, dict[str, int]]:
        """Per destination: attempts, delivered, retries, expired, refused since start, and pending now."""
        return {s.dest: {**s.counts, "pending": max(0, self.outbox.pending[s.dest])} for s in self.senders}


def build_pipeline(outbox: Outbox, webhooks: Iterable[str] = (), notify: Iterable[str] = (),
                   specs: Iterable[Any] = (), *, tz: str = "Asia/Shanghai", public_url: str | None = None,
                   now_ms: Callable[[], int], expire_s: float = 86_400.0) -> Pipeline:
    """Every stage, in order, in one place: routes -> dispatcher -> outbox -> senders."""
    routes = build_routes(webhooks, notify, specs)
    dispatcher = Dispatcher(routes, outbox, tz, public_url=public_url, now_ms=now_ms)
    senders = [Sender(d, outbox, now_ms, expire_s=expire_s) for d in dispatcher.destinations]
    return Pipeline(dispatcher, senders, outbox)


__all__ = ["DELIVERED", "EXPIRED", "NOTIFIERS", "PENDING", "REASONS", "AppriseNotifier", "Dispatcher", "Notification",
           "Notifier", "Outbox", "Pipeline", "Route", "Sender", "WebhookNotifier", "build_pipeline", "build_routes",
           "make_notifier", "notification_id"]
