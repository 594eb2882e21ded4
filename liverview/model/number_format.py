"""Numbers in reports, model cards and release notes: the one way a metric is printed."""
from __future__ import annotations

from typing import Any


def format_number(value: Any, digits: int = 3) -> str:
    """`value` with `digits` decimals if it is a float, "n/a" if it is missing, else as it prints."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


__all__ = ["format_number"]
