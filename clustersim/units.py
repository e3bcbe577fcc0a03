"""Parse and print physical quantities: "900 GB/s", "400 Gb/s", "1.5 us", "80 GiB".

Conventions (DESIGN.md): SI prefixes are decimal (GB = 1e9 B), binary prefixes are binary
(GiB = 2**30 B); ``b`` is a bit and ``B`` a byte. Every value is returned in base units:
bytes, bytes/s, seconds, FLOP, FLOP/s, watts, joules, joules per bit.

A small hand-written parser on purpose: pint reads "400 Gb/s" as gilbert per second and costs
about half a second at import.

>>> parse("400 Gb/s", "bandwidth")
50000000000.0
>>> parse("80 GiB", "size") == 80 * 2**30
True
>>> format_quantity(450e9, "bandwidth")
'450 GB/s'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["KINDS", "UnitError", "parse", "format_quantity"]


class UnitError(ValueError):
    """A quantity could not be read as the kind that was expected."""


_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
       "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}


@dataclass(frozen=True)
class _Kind:
    name: str
    base: str                      # how the base unit is printed
    units: dict[str, float]        # unit symbol without prefix -> factor to base
    prefixes: tuple[str, ...]      # which prefix families are allowed
    example: str


def _kind_table() -> dict[str, _Kind]:
    bit = 1 / 8
    return {
        "size": _Kind("size", "B", {"B": 1.0, "b": bit, "bit": bit, "byte": 1.0, "bytes": 1.0},
                      ("si", "binary"), "80 GiB"),
        "bandwidth": _Kind("bandwidth", "B/s",
                           {"B/s": 1.0, "b/s": bit, "bps": bit, "bit/s": bit, "Bps": 1.0},
                           ("si", "binary"), "900 GB/s"),
        "time": _Kind("time", "s", {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0},
                      ("si_small",), "1.5 us"),
        "flops": _Kind("flops", "FLOP", {"FLOP": 1.0, "FLOPs": 1.0, "OP": 1.0}, ("si",),
                       "3.1 PFLOP"),
        "flop_rate": _Kind("flop_rate", "FLOP/s",
                           {"FLOP/s": 1.0, "FLOPS": 1.0, "flop/s": 1.0, "OP/s": 1.0, "OPS": 1.0},
                           ("si",), "989 TFLOP/s"),
        "power": _Kind("power", "W", {"W": 1.0}, ("si",), "700 W"),
        "energy": _Kind("energy", "J", {"J": 1.0, "Wh": 3600.0}, ("si",), "12 kJ"),
        "energy_per_bit": _Kind("energy_per_bit", "J/bit",
                                {"J/bit": 1.0, "J/b": 1.0, "J/B": bit}, ("si",), "0.5 pJ/bit"),
        "frequency": _Kind("frequency", "Hz", {"Hz": 1.0}, ("si",), "1.98 GHz"),
    }


KINDS: dict[str, _Kind] = _kind_table()

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([^\d\s].*?)?\s*$")


def _lookup(symbol: str) -> list[tuple[str, float]]:
    """Every (kind, factor) a unit symbol could mean, prefixes included."""
    found = []
    for kind in KINDS.values():
        for unit, factor in kind.units.items():
            if symbol == unit:
                found.append((kind.name, factor))
                continue
            if not symbol.endswith(unit):
                continue
            prefix = symbol[: -len(unit)]
            if "binary" in kind.prefixes and prefix in _BINARY:
                found.append((kind.name, factor * _BINARY[prefix]))
            elif prefix in _SI and prefix and ("si" in kind.prefixes or (
                    "si_small" in kind.prefixes and _SI[prefix] < 1)):
                found.append((kind.name, factor * _SI[prefix]))
    return found


def parse(value: str | float | int, kind: str) -> float:
    """Read ``value`` as a quantity of ``kind`` and return it in base units.

    Bare numbers are taken as already in base units. A unit of the wrong kind is an error
    naming the kind that was expected.

    >>> parse("1.5 us", "time")
    1.5e-06
    >>> parse(1e9, "bandwidth")
    1000000000.0
    """
    if kind not in KINDS:
        raise ValueError(f"unknown quantity kind {kind!r}; known: {', '.join(KINDS)}")
    spec = KINDS[kind]
    if isinstance(value, bool):
        raise UnitError(f"expected a {kind} such as {spec.example!r}, got {value!r}")
    if isinstance(value, (int, float)):
        number, factor = float(value), 1.0
    else:
        match = _QUANTITY.match(str(value))
        if not match:
            raise UnitError(f"cannot read {value!r} as a {kind}; write a number and a unit, "
                            f"e.g. {spec.example!r}")
        number, symbol = float(match.group(1)), (match.group(2) or "").strip()
        if not symbol:
            factor = 1.0
        else:
            meanings = _lookup(symbol.replace(" ", ""))
            mine = [f for k, f in meanings if k == kind]
            if not mine:
                others = sorted({k for k, _ in meanings})
                if others:
                    raise UnitError(f"{value!r} is a {others[0]}, but a {kind} was expected "
                                    f"(e.g. {spec.example!r})")
                raise UnitError(f"{value!r}: unknown unit {symbol!r}; a {kind} was expected "
                                f"(e.g. {spec.example!r})")
            factor = mine[0]
    result = number * factor
    if not math.isfinite(result):
        raise UnitError(f"{value!r} is not a finite {kind}")
    return result


_PRINT = {
    "size": (("B", 1.0), ("KiB", 2.0**10), ("MiB", 2.0**20), ("GiB", 2.0**30), ("TiB", 2.0**40)),
    "bandwidth": (("B/s", 1.0), ("kB/s", 1e3), ("MB/s", 1e6), ("GB/s", 1e9), ("TB/s", 1e12),
                  ("PB/s", 1e15)),
    "time": (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)),
    "flops": (("FLOP", 1.0), ("GFLOP", 1e9), ("TFLOP", 1e12), ("PFLOP", 1e15), ("EFLOP", 1e18)),
    "flop_rate": (("FLOP/s", 1.0), ("GFLOP/s", 1e9), ("TFLOP/s", 1e12), ("PFLOP/s", 1e15),
                  ("EFLOP/s", 1e18)),
    "power": (("mW", 1e-3), ("W", 1.0), ("kW", 1e3), ("MW", 1e6)),
    "energy": (("pJ", 1e-12), ("nJ", 1e-9), ("uJ", 1e-6), ("mJ", 1e-3), ("J", 1.0), ("kJ", 1e3),
               ("MJ", 1e6), ("GJ", 1e9)),
    "energy_per_bit": (("pJ/bit", 1e-12),),  # the unit every datasheet uses
    "frequency": (("Hz", 1.0), ("MHz", 1e6), ("GHz", 1e9)),
}


def format_quantity(value: float, kind: str, digits: int = 3) -> str:
    """Print a base-unit value with the largest unit that keeps it >= 1.

    >>> format_quantity(80 * 2**30, "size")
    '80 GiB'
    >>> format_quantity(1.5e-6, "time")
    '1.5 us'
    """
    units = _PRINT[kind]
    magnitude = abs(value)
    chosen = units[0]
    for unit in units:
        if magnitude >= unit[1] * (1 - 1e-12):
            chosen = unit
    number = value / chosen[1]
    text = f"{number:.{digits}g}"
    if "e" in text:  # never print "1e+03 GB/s": widen instead
        text = f"{number:.0f}"
    return f"{text} {chosen[0]}"
