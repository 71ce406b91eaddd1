"""Tunable fields: a YAML value is either fixed or a distribution.

    lr: 0.003                                  # fixed
    lr: {low: 1e-4, high: 1e-2, log: true}     # float range, log-uniform
    depth: {low: 1, high: 4}                   # int range (the field's type decides)
    width_mult: {low: 0.25, high: 1.0, step: 0.25}
    optimizer: {choice: [adamw, sgd]}

``tunable(kind, ...)`` returns an annotated type whose validator turns the raw YAML value
into a plain value, a :class:`FloatRange`/:class:`IntRange` or a :class:`Choice`, and raises
``ValueError`` with a message that says what was expected. Bounds (``ge``/``gt``/``le``) and
allowed values are checked on the fixed value, on both ends of a range and on every choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator

_RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def describe(self) -> str:
        extra = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"float [{self.low:g}, {self.high:g}]{extra}"


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False
    step: int = 1

    def describe(self) -> str:
        extra = " log" if self.log else (f" step {self.step}" if self.step != 1 else "")
        return f"int [{self.low}, {self.high}]{extra}"


@dataclass(frozen=True)
class Choice:
    choice: tuple

    def describe(self) -> str:
        return "choice {" + ", ".join(str(c) for c in self.choice) + "}"


Distribution = FloatRange | IntRange | Choice


def is_distribution(value: Any) -> bool:
    return isinstance(value, (FloatRange, IntRange, Choice))


def _as_float(value: Any) -> float:
    # PyYAML reads `1e-3` (no dot) as a string: accept it as users write it.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {value!r}")


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {value!r}")


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "float": _as_float,
    "int": _as_int,
    "bool": _as_bool,
    "str": _as_str,
}


def _check_bounds(v: float, ge: float | None, gt: float | None, le: float | None, lt: float | None) -> None:
    if ge is not None and v < ge:
        raise ValueError(f"must be >= {ge:g}, got {v:g}")
    if gt is not None and v <= gt:
        raise ValueError(f"must be > {gt:g}, got {v:g}")
    if le is not None and v > le:
        raise ValueError(f"must be <= {le:g}, got {v:g}")
    if lt is not None and v >= lt:
        raise ValueError(f"must be < {lt:g}, got {v:g}")


def parse_tunable(
    raw: Any,
    kind: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Callable[[], Iterable[str]] | Iterable[str] | None = None,
    searchable: bool = True,
    optional: bool = False,
) -> Any:
    """Turn one raw YAML value into a fixed value or a distribution (see module doc).
    With ``optional``, ``null`` (None) is a fixed value too: the field's "off"."""
    if optional and raw is None:
        return None

    def fixed(v: Any) -> Any:
        return None if optional and v is None else _fixed(v, kind, (ge, gt, le, lt), choices)

    if is_distribution(raw):
        return raw
    if not isinstance(raw, dict):
        return fixed(raw)
    if not searchable:
        raise ValueError(f"must be a fixed value here, not a distribution: {raw!r}")
    if "choice" in raw:
        return _choice(raw, fixed)
    return _range(raw, kind, fixed)


def _fixed(v: Any, kind: str, bounds: tuple, choices: Callable[[], Iterable[str]] | Iterable[str] | None) -> Any:
    """One fixed value of a field: converted to its kind, inside its bounds and choices."""
    out = _CONVERT[kind](v)
    if kind in ("float", "int"):
        if isinstance(out, float) and not math.isfinite(out):
            raise ValueError(f"must be finite, got {out!r}")
        _check_bounds(out, *bounds)
    if choices is not None:
        allowed = list(choices() if callable(choices) else choices)
        if out not in allowed:
            raise ValueError(f"unknown value {out!r}; valid: {', '.join(map(str, allowed))}")
    return out


def _choice(raw: dict, fixed: Callable[[Any], Any]) -> Choice:
    if set(raw) != {"choice"}:
        extra = sorted(set(raw) - {"choice"})
        raise ValueError(f"a choice takes only the key 'choice', got also {extra}")
    values = raw["choice"]
    if not isinstance(values, list) or not values:
        raise ValueError(f"choice must be a non-empty list, got {values!r}")
    return Choice(tuple(fixed(v) for v in values))


def _range(raw: dict, kind: str, fixed: Callable[[Any], Any]) -> FloatRange | IntRange:
    unknown = set(raw) - _RANGE_KEYS
    if unknown or "low" not in raw or "high" not in raw:
        raise ValueError(f"expected a fixed value, {{low, high[, log, step]}} or {{choice: [...]}}, got {raw!r}")
    if kind not in ("float", "int"):
        raise ValueError(f"a {kind} field takes a fixed value or {{choice: [...]}}, not a range")
    low, high = fixed(raw["low"]), fixed(raw["high"])
    log = _as_bool(raw.get("log", False))
    step = raw.get("step")
    if low > high:
        raise ValueError(f"low ({low:g}) is greater than high ({high:g})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0, got low={low:g}")
    if log and step is not None:
        raise ValueError("log and step cannot be used together")
    if kind == "int":
        step_i = 1 if step is None else _as_int(step)
        if step_i < 1:
            raise ValueError(f"step must be >= 1, got {step_i}")
        return IntRange(low, high, log, step_i)
    step_f = None if step is None else _as_float(step)
    if step_f is not None and step_f <= 0:
        raise ValueError(f"step must be > 0, got {step_f:g}")
    if step_f is not None and step_f > high - low and high > low:
        raise ValueError(f"step ({step_f:g}) is larger than the range high - low ({high - low:g}): only low could be sampled")
    return FloatRange(low, high, log, step_f)


def tunable(kind: str, **kwargs: Any) -> Any:
    """An annotated pydantic type for a field that may be fixed or searched
    (``optional=True``: or null)."""
    base = {"float": float, "int": int, "bool": bool, "str": str}[kind]
    if kwargs.get("optional"):
        base = base | None
    return Annotated[
        base | FloatRange | IntRange | Choice,
        BeforeValidator(lambda raw: parse_tunable(raw, kind, **kwargs)),
    ]


def fixed_only(kind: str, **kwargs: Any) -> Any:
    """Like :func:`tunable`, but a distribution is an error (e.g. a teacher's architecture)."""
    base = {"float": float, "int": int, "bool": bool, "str": str}[kind]
    return Annotated[base, BeforeValidator(lambda raw: parse_tunable(raw, kind, searchable=False, **kwargs))]
