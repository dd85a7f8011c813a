"""Value rules of config options and the ``option(...)`` declaration that carries them.

Every field is declared with ``option(default, rule, help=...)``: the rule says what values it
takes (the type annotation is checked first, while building). A rule maps the value to None when
it is fine, or to what is wrong ("must be > 0, got 0"); ``validate`` prefixes the dotted path. A
rule's ``text`` says what it accepts, for docs/CONFIG.md. ``fixed=True`` marks a key that cannot
change when a run resumes (the checkpoint's weights or data position depend on it); a callable
instead gives the part of the value that cannot change. Rules between fields live in
``validation.relations``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import field
from typing import Any, Callable, Optional, Union

from unimodal_free.modalities import MODALITIES


class ConfigError(ValueError):
    """A config value is wrong; the message names its dotted path.

    ``key``: that dotted path, where one key is to blame (config/loading.py names the ``--set`` it came from).
    """

    def __init__(self, message: str, key: Optional[str] = None):
        super().__init__(message)
        self.key = key


Rule = Callable[[Any], Optional[str]]


def _described(text: str) -> Callable[[Rule], Rule]:
    """Attach what a rule accepts (``rule.text``) for the config reference."""

    def attach(rule: Rule) -> Rule:
        rule.text = text
        return rule

    return attach


def _finite(value: Any) -> Optional[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    return None


def at_least(low: float) -> Rule:
    @_described(f">= {low}")
    def rule(value):
        return _finite(value) or (None if value >= low else f"must be >= {low}, got {value}")

    return rule


def in_range(low: float, high: float, high_open: bool = False, low_open: bool = False) -> Rule:
    shown = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    @_described(f"in {shown}")
    def rule(value):
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return _finite(value) or (None if above and below else f"must be in {shown}, got {value}")

    return rule


@_described("> 0")
def positive(value: Any) -> Optional[str]:
    return _finite(value) or (None if value > 0 else f"must be > 0, got {value}")


def count(low: int, high: int) -> Rule:
    """An integer in [low, high]: every integer key has an upper bound, so a hostile value (``10**23`` rows per
    micro-batch, ``10**4`` blocks) is refused here, before anything is built from it. Below ``low`` it says what
    ``positive`` / ``at_least`` say."""
    lower = positive if low == 1 else at_least(low)

    @_described(f"in [{low}, {high:_}]")
    def rule(value):
        return lower(value) or (None if value <= high else f"must be <= {high:_}, got {value}")

    return rule


def one_of(*choices: Any) -> Rule:
    @_described("one of " + ", ".join(json.dumps(c) for c in choices))
    def rule(value):
        return None if value in choices else f"{value!r} is not one of {list(choices)}"

    return rule


@_described("not empty")
def not_empty(value: Any) -> Optional[str]:
    return None if value else "must not be empty"


@_described("any")
def anything(value: Any) -> Optional[str]:
    """Any value of the annotated type (flags, free paths, ``deepspeed.extra``)."""
    return None


def each(rule: Rule, length: Optional[int] = None, increasing: bool = False) -> Rule:
    """A list whose items all pass ``rule`` (with an exact length, strictly increasing)."""
    shape = "".join([f", exactly {length}" if length is not None else "", ", strictly increasing" if increasing else ""])

    @_described(f"each {rule.text}{shape}")
    def check(values):
        if length is not None and len(values) != length:
            return f"must hold {length} values, got {len(values)}: {values}"
        for i, v in enumerate(values):
            if (err := rule(v)) is not None:
                return f"item {i}: {err}"
        if increasing and any(a >= b for a, b in zip(values, values[1:])):
            return f"must be strictly increasing, got {values}"
        return None

    return check


def per_modality(rule: Rule) -> Rule:
    """A dict from modality names (``MODALITIES``) to values that pass ``rule``."""

    @_described(f"keys in {', '.join(MODALITIES)}; values {rule.text}")
    def check(values):
        for name, v in values.items():
            if name not in MODALITIES:
                return f"{name!r} is not a modality (known: {', '.join(MODALITIES)})"
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"{name}: must be a number, got {v!r}"
            if (err := rule(v)) is not None:
                return f"{name}: {err}"
        return None

    return check


def option(default: Any = dataclasses.MISSING, rule: Optional[Rule] = None, *, factory: Any = dataclasses.MISSING,
           fixed: Union[bool, Callable[[Any], Any]] = False, help: str = "") -> Any:
    """A config field with its rule, whether it may change on resume, and what it does (``help``:
    docs/CONFIG.md is generated from it), next to its default."""
    if rule is None:
        raise TypeError("option(): every config field needs a rule (`anything` for any value of its type)")
    if not help.strip():
        raise TypeError("option(): every config field needs a help text (it becomes its line in docs/CONFIG.md)")
    meta = {"rule": rule, "fixed": fixed, "help": " ".join(help.split())}
    return field(default=default, default_factory=factory, metadata=meta)
