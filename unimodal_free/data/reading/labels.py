"""A sample's labels: a flat ``{field: value}`` of short strings, for probes and zero-shot eval.

The shard writer takes a label as a layout finds it (a string, or an object of named fields) and
stores it in the sample's ``.json`` under ``"labels"``; the reader reads it back with the same rules,
so a hand-written shard is held to what the writer would have written. Training never looks at them.
"""

from __future__ import annotations

from typing import Any

LABELS_KEY = "labels"  # the .json key
DEFAULT_FIELD = "label"  # the field a plain string label is stored under
MAX_LABEL_FIELDS = 32
MAX_FIELD_CHARS = 64
MAX_VALUE_CHARS = 200


class BadLabel(ValueError):
    """A label that is not a short string or an object of short strings (the message says why)."""


def _value(field: str, value: Any) -> str:
    if isinstance(value, bool):  # before int: True is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise BadLabel(f'label "{field}" must be a string, an integer or a boolean, got {type(value).__name__}')
    if not value.strip():
        raise BadLabel(f'label "{field}" is empty')
    if len(value) > MAX_VALUE_CHARS:
        raise BadLabel(f'label "{field}" is {len(value)} characters (limit {MAX_VALUE_CHARS})')
    return value


def label_fields(label: Any) -> dict[str, str]:
    """A string (-> field "label") or an object of named fields -> {field: value} of strings; else BadLabel.

    Integers and booleans become strings ("7", "true"); None is no label ({}).
    """
    if label is None:
        return {}
    if not isinstance(label, dict):
        if not isinstance(label, (str, int)):  # bool is an int
            raise BadLabel(f"label must be a string or an object of named fields, got {type(label).__name__}")
        return {DEFAULT_FIELD: _value(DEFAULT_FIELD, label)}
    if len(label) > MAX_LABEL_FIELDS:
        raise BadLabel(f"label has {len(label)} fields (limit {MAX_LABEL_FIELDS})")
    out = {}
    for field, value in label.items():
        if not isinstance(field, str) or not field.strip() or len(field) > MAX_FIELD_CHARS:
            raise BadLabel(f"label field name {str(field)[:MAX_FIELD_CHARS]!r} must be 1-{MAX_FIELD_CHARS} characters")
        out[field] = _value(field, value)
    return out
