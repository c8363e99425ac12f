"""``smartpark demo``: the whole park end to end on this machine (see :mod:`demo.demo`)."""

from .demo import register

__all__ = ["register"]
