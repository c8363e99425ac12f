"""Numbers as operators read them next to a limit: never rounded onto the limit or past it.

``f"{1099.6:.4g}"`` prints ``1100``: beside "limit 1100" a breach of a minimum reads as compliant. The
functions here keep the usual four significant digits and add digits until the printed value lies on the
same side of the printed limit as the value itself (equal only when the value equals the limit).
"""

from __future__ import annotations

import math

__all__ = ["beside_limit", "number"]

MIN_DIGITS = 4  # significant digits shown when nothing is near a limit


def _digits(v: float) -> int:
    """At least MIN_DIGITS significant digits, and every digit of the integer part (no exponent form)."""
    whole = int(math.log10(abs(v))) + 1 if abs(v) >= 1 else 1
    return max(MIN_DIGITS, whole)


def number(v: float | None) -> str:
    """A value without a limit beside it: four significant digits, the whole integer part."""
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{_digits(v)}g}"


def beside_limit(value: float | None, limit: float | None) -> tuple[str, str]:
    """``(value, limit)`` as text, with as many digits as it takes for the printed value to compare with the
    printed limit as the value compares with the limit: 1099.6 beside 1100 is ``1099.6``, never ``1100``."""
    if value is None or limit is None or not (math.isfinite(value) and math.isfinite(limit)):
        return number(value), number(limit)
    p = max(_digits(value), _digits(limit))
    side = (value > limit) - (value < limit)
    while p < 17:
        v_txt, l_txt = f"{value:.{p}g}", f"{limit:.{p}g}"
        shown = (float(v_txt) > float(l_txt)) - (float(v_txt) < float(l_txt))
        if shown == side:
            return v_txt, l_txt
        p += 1
    return repr(value), repr(limit)
