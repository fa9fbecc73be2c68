"""Numbers as people read them in a table: a few significant digits, powers of ten for small and large values.

The CLI's tables and the dashboard's Runs page both show numbers this way:
an lr of 0.06796311435460393 reads ``6.8e-02``, a loss of 2.302585 reads
``2.3``, an accuracy of 0.98148 reads ``0.981``, a step count stays whole.
Standard library only.
"""

from __future__ import annotations

import math
from typing import Any

# Significant digits shown by default: enough to tell runs of a sweep apart,
# few enough to scan a column.
DIGITS = 3
# Values in [SMALL, 10**digits) print positionally; others with an exponent.
SMALL = 0.1


def significant(value: Any, digits: int = DIGITS) -> str:
    """``value`` with ``digits`` significant digits; text and None as they are.

    Whole numbers print whole (``5000``, ``64``); ``nan`` and ``inf`` as such;
    a value below 1 that would round to 1 keeps the digits that tell it from 1.

    Example:
        >>> [significant(v) for v in (0.06796311435460393, 2.302585, 0.98148, 5000, 0.9999, 3e-4, 12345.6, None)]
        ['6.8e-02', '2.3', '0.981', '5000', '0.9999', '3e-04', '1.23e+04', '']
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if value.is_integer() and magnitude < 10 ** 15:
        return str(int(value)) if magnitude < 10 ** max(digits, 6) else _exponent(value, digits)
    if SMALL <= magnitude < 10 ** digits:
        text = f"{value:.{digits}g}"
        if magnitude < 1 and text.lstrip("-") == "1":  # 0.9999 must not read as 1
            while text.lstrip("-") == "1" and digits < 15:
                digits += 1
                text = f"{value:.{digits}g}"
        return text
    return _exponent(value, digits)


def _exponent(value: float, digits: int) -> str:
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"
