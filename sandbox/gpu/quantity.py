"""Kubernetes resource quantities: `500m`, `2`, `16Gi`, `1.5G` to integers and back.

CPU is counted in millicores, memory in bytes, GPUs and pods as plain counts,
so comparisons are exact, as the API server's are.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")

CPU = "cpu"
MEMORY = "memory"
GPU = "nvidia.com/gpu"
PODS = "pods"


def parse(value: str | int | float, resource: str) -> int:
    """A quantity in the resource's base unit: millicores for cpu, bytes for memory, counts otherwise."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity for {resource} (e.g. 500m, 2, 16Gi)")
    try:
        amount = Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2) or ""])
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if resource == CPU:
        amount *= 1000
    if amount != amount.to_integral_value() and resource != CPU:
        raise ValueError(f"{value!r} must be a whole number of {resource}")
    return int(amount.to_integral_value())


def format_quantity(amount: int, resource: str) -> str:
    """The shortest exact Kubernetes spelling, as `kubectl describe` shows it."""
    if resource == CPU:
        return f"{amount // 1000}" if amount % 1000 == 0 else f"{amount}m"
    if resource == MEMORY:
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            if amount and amount % _SUFFIX[suffix] == 0:
                return f"{amount // _SUFFIX[suffix]}{suffix}"
    return str(amount)
