"""Typed method options, and parsing of the CLI's `-o method.key=value` assignments."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from debiaskit.errors import DebiasKitError

OPTION_TYPES = (int, float, bool, str, tuple)
BOUNDED_TYPES = (int, float, tuple)  # a tuple's bounds hold for each of its ints
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Option:
    """One setting of a method. `type` is int, float, bool, str, or tuple (a comma-separated list of ints).

    `minimum` and `maximum` (inclusive) bound a number, or each item of a tuple; `coerce` enforces them."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise DebiasKitError(f"option {self.name!r} has type {self.type!r}; accepted: int, float, bool, str, tuple")
        if (self.minimum is not None or self.maximum is not None) and self.type not in BOUNDED_TYPES:
            raise DebiasKitError(f"option {self.name!r} has bounds but type {self.type.__name__}; "
                                 "bounds apply to int, float and tuple")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise DebiasKitError(f"option {self.name!r} has minimum {self.minimum} above maximum {self.maximum}")

    def describe_type(self) -> str:
        """The accepted values as `debiaskit methods` lists them: `float 0..1`, `int >= 1`, `contrast|seed`."""
        if self.choices:
            return "|".join(self.choices)
        name = {tuple: "int,int,...", bool: "true|false"}.get(self.type, self.type.__name__)
        bounds = self._bounds("{}..{}")
        if not bounds:
            return name
        return f"{name} each {bounds}" if self.type is tuple else f"{name} {bounds}"

    def as_typed(self, value: Any) -> str:
        """`value` as it would be written after `-o method.key=` (e.g. `0,21`, `true`)."""
        if self.type is tuple:
            return ",".join(str(item) for item in value)
        if self.type is bool:
            return "true" if value else "false"
        return str(value)

    def coerce(self, value: Any, owner: str) -> Any:
        """`value` (a CLI string or a Python value) as this option's type, or a DebiasKitError."""
        where = f"option {owner}.{self.name}"
        try:
            converted = self._convert(value)
        except (TypeError, ValueError):
            raise DebiasKitError(f"{where} got {value!r}; it takes {self.describe_type()}") from None
        if self.choices and converted not in self.choices:
            raise DebiasKitError(f"{where} got {value!r}; accepted: {', '.join(self.choices)}")
        if self.minimum is not None or self.maximum is not None:
            for number in converted if self.type is tuple else (converted,):
                if not self._within_bounds(number):
                    kind = {float: "a number", int: "an integer", tuple: "integers"}[self.type]
                    verb = "has" if self.type is tuple else "got"
                    raise DebiasKitError(f"{where} {verb} {number}; it takes {kind} {self._bounds('from {} to {}')}")
        return converted

    def _within_bounds(self, number: float) -> bool:
        return (self.minimum is None or number >= self.minimum) and (self.maximum is None or number <= self.maximum)

    def _bounds(self, closed_range: str) -> str:
        """The bounds: `closed_range` filled with both (e.g. `0..1`), else `>= 0` or `<= 1`; empty when there are
        none."""
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return closed_range.format(_bound(low), _bound(high))
        if low is not None:
            return f">= {_bound(low)}"
        return f"<= {_bound(high)}" if high is not None else ""

    def _convert(self, value: Any) -> Any:
        if self.type is bool:
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in TRUE_WORDS or word in FALSE_WORDS:
                return word in TRUE_WORDS
            raise ValueError(value)
        if self.type is tuple:
            parts = value if isinstance(value, (list, tuple)) else [p for p in str(value).split(",") if p.strip()]
            if not parts:
                raise ValueError(value)
            return tuple(int(p) for p in parts)
        if self.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if self.type is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(value)
            return number
        if not isinstance(value, str):
            raise TypeError(value)
        return value


def _bound(number: float) -> str:
    """`0`, not `0.0`, for a whole-number bound."""
    return str(int(number)) if float(number).is_integer() else str(number)


def resolve_settings(owner: str, options: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `given`, each value checked; an unknown key lists the accepted ones."""
    by_name = {option.name: option for option in options}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        accepted = ", ".join(by_name) or "(none: this method takes no options)"
        raise DebiasKitError(f"unknown option {owner}.{unknown[0]}; {owner} accepts: {accepted}")
    settings = {option.name: option.default for option in options}
    for key, value in given.items():
        settings[key] = by_name[key].coerce(value, owner)
    return settings


def parse_assignments(assignments: Iterable[str]) -> dict[str, dict[str, str]]:
    """`["sae.factor=0", "leace.layers=4,8"]` -> `{"sae": {"factor": "0"}, "leace": {"layers": "4,8"}}`."""
    parsed: dict[str, dict[str, str]] = {}
    for assignment in assignments:
        target, equals, value = assignment.partition("=")
        method, dot, key = target.strip().rpartition(".")
        if not equals or not dot or not method or not key:
            raise DebiasKitError(f"option {assignment!r} is not of the form method.key=value "
                                 "(e.g. sae-ablation.factor=0)")
        parsed.setdefault(method, {})[key] = value.strip()
    return parsed
