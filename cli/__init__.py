"""The ``smartpark`` command, assembled from every part's ``register`` (see :mod:`cli.commands`)."""

from .commands import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
