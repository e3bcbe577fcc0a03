"""Pydantic field types for physical quantities: accept "900 GB/s" or a base-unit number.

>>> from pydantic import TypeAdapter
>>> TypeAdapter(Bandwidth).validate_python("400 Gb/s")
50000000000.0
>>> try:
...     TypeAdapter(Bandwidth).validate_python("-1 GB/s")
... except ValueError as e:
...     print(e.errors()[0]["msg"])
Value error, must be positive, got -1 GB/s
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from clustersim.units import format_quantity, parse

__all__ = ["Bandwidth", "Size", "FlopRate", "Power", "Energy", "EnergyPerBit",
           "NonNegativeTime", "NonNegativePower", "Whole", "Count"]


def _not_a_boolean(value):
    """YAML's ``true`` is not a count: pydantic's lax mode would read ``tp: true`` as 1."""
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got the boolean {str(value).lower()} "
                         f"(write the number itself, e.g. 1)")
    return value


# Whole numbers the user writes (parallel degrees, counts, indices); Count is positive.
Whole = Annotated[int, BeforeValidator(_not_a_boolean)]
Count = Annotated[int, BeforeValidator(_not_a_boolean), Field(gt=0)]


def _quantity(kind: str, allow_zero: bool = False):
    def reader(value):
        return parse(value, kind)

    def check(value: float) -> float:
        if value < 0 or (value == 0 and not allow_zero):
            bound = "non-negative" if allow_zero else "positive"
            raise ValueError(f"must be {bound}, got {format_quantity(value, kind)}")
        if kind == "size" and value != int(value):   # memory holds whole bytes
            raise ValueError(f"must be a whole number of bytes, got {value:g} B")
        return value

    return Annotated[float, BeforeValidator(reader), AfterValidator(check)]


Bandwidth = _quantity("bandwidth")
Size = _quantity("size")
NonNegativeTime = _quantity("time", allow_zero=True)
FlopRate = _quantity("flop_rate")
Power = _quantity("power")
NonNegativePower = _quantity("power", allow_zero=True)
Energy = _quantity("energy", allow_zero=True)
EnergyPerBit = _quantity("energy_per_bit")
