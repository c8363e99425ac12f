"""The operator console (CONTRACT §8): static HTML, CSS and plain JavaScript served by the engine's aiohttp,
with sessions, roles and CSRF (:mod:`.auth`), live events over Server-Sent Events (:mod:`.hub`) and the
engine's view for the read routes (:mod:`.backend`). The routes themselves are declared in :mod:`alerts.api`.
"""

from .auth import LoginThrottle, Principal, Sessions
from .backend import ServiceBackend
from .hub import EventHub

__all__ = ["EventHub", "LoginThrottle", "Principal", "ServiceBackend", "Sessions"]
