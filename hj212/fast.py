"""The first step of the listener's fast path: a read that is one whole packet of the common shape, framed and
split at once.

:func:`common_packet` takes the bytes of one TCP read and gives ``(QN, ST, CN, PW, MN, Flag, CP items)`` when
they are exactly one packet whose length, CRC and CRLF are right (:func:`hj212.frame.single`), whose header
is the standard's own (:func:`hj212.packet.common_head`) and whose CP is plain, without empty groups
(:func:`hj212.packet.cp_items`); else None, and the reader and the general parser take the read as before.

It is ``hj212._speedups.common_packet`` (C, ``hj212/_speedups.c``) when the extension is built, else
:func:`common_packet_py`, the composition of the three Python functions, which stays the reference: the C
function answers only where the Python one gives the same answer (and returns None for anything outside
printable ASCII, which the Python path then decides). ``tests/test_hj212_fastpath.py`` compares the two on
generated packets of every fault kind; ``bench/bench_hj212.py`` measures both.
"""

from __future__ import annotations

from hj212.frame import single
from hj212.packet import common_head, cp_items

CommonPacket = tuple[str, str, str, str, str, int, dict[str, str]]


def common_packet_py(data: bytes) -> CommonPacket | None:
    """:func:`common_packet` in Python: ``single``, ``common_head``, ``cp_items``."""
    segment = single(data)
    if segment is None:
        return None
    try:
        head = common_head(segment.decode())
    except UnicodeDecodeError:
        return None
    if head is None:
        return None
    items = cp_items(head[6])
    if items is None:
        return None
    qn, st, cn, pw, mn, flag, _body = head
    return qn, st, cn, pw, mn, flag, items


try:
    from hj212._speedups import common_packet
    SPEEDUPS = True
except ImportError:  # not built (no C compiler where smartpark was installed): the same in Python
    common_packet = common_packet_py
    SPEEDUPS = False
