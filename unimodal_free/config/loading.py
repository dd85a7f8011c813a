"""From JSON (a file, a dict, dotted ``--set`` overrides) to a validated :class:`Config`, and back."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

from unimodal_free.bounded_read import BoundedReadError, read_text_bounded
from unimodal_free.config.rules import ConfigError
from unimodal_free.config.sections import Config, Source
from unimodal_free.config.validation import validate

# The shipped configs (joint.json, joint-base.json, tiny.json): package data, so an installed wheel has
# them; in a checkout the top-level configs/ is a symlink to this folder (one copy of each file).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# A config file is a few KB of JSON; a FIFO, a device or gigabytes named by --config are refused unread.
MAX_CONFIG_FILE_BYTES = 4 << 20


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if tp is Source and isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected an object for {tp.__name__}, got {value!r}", key=path)
        return _build(tp, value, path)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if errors else ConfigError(f"{path}: bad value {value!r}", key=path)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, dict)) and dataclasses.is_dataclass(item_tp):
            value = [value]  # a single source may be given bare
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}", key=path)
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected an object, got {value!r}", key=path)
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}", key=path)
    if not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}", key=path)
    return value


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {path + '.' if path else ''}{close[0]}?" if close else \
                f"known: {', '.join(sorted(names))}"
            raise ConfigError(f"{where}: unknown key ({hint})", key=where)
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        kwargs[key] = _convert(value, hints[key], where)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], value); value parsed as JSON if it can be."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value", key="--set")
    dotted, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return dotted.strip().split("."), value


def _blamed_override(exc: ConfigError, overrides: list[str]) -> Optional[str]:
    """The ``--set`` text whose key ``exc`` is about (the last one in effect), or None if the key is not overridden.

    An override of ``a.b`` is to blame for an error at ``a.b``, below it (``a.b[0].weight``) or at an unknown
    ``a`` above it."""
    if exc.key in (None, "--set"):  # no one key, or the --set itself is malformed (its message names it)
        return None
    for text in reversed(overrides):
        dotted = ".".join(parse_override(text)[0])
        if exc.key == dotted or exc.key.startswith((dotted + ".", dotted + "[")) or dotted.startswith(exc.key + "."):
            return text
    return None


def config_from_dict(data: dict[str, Any], overrides: list[str] = (), source: Optional[str] = None) -> Config:
    """Build and validate a :class:`Config` from a JSON-like dict plus dotted overrides.

    ``source``: the config file ``data`` came from, named in front of an error about one of its keys; an error
    about a key an override set names that ``--set section.key=value`` instead, so a typo on the command line
    is not blamed on the file. (Without a file an error names the dotted key alone: nothing else could be meant.)
    """
    try:
        return _config_from_dict(data, list(overrides))
    except ConfigError as exc:
        if source is None:
            raise
        text = _blamed_override(exc, list(overrides))
        if text is not None:
            message = str(exc)
            if ".".join(parse_override(text)[0]) == exc.key:  # the --set already shows the key
                message = message.removeprefix(f"{exc.key}: ")
            raise ConfigError(f"--set {text}: {message}", key=exc.key) from None
        if exc.key == "--set":  # a malformed --set: its message names it, and it is not the file's
            raise
        raise ConfigError(f"{source}: {exc}", key=exc.key) from None


def _config_from_dict(data: dict[str, Any], overrides: list[str]) -> Config:
    data = json.loads(json.dumps(data))  # deep copy
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {'.'.join(keys[: i + 1])} is not a section", key="--set")
            node = child
        node[keys[-1]] = value
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def load_config(path: Union[str, Path, None], overrides: list[str] = ()) -> Config:
    """Read a JSON config file (or defaults if ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = json.loads(read_text_bounded(path, MAX_CONFIG_FILE_BYTES, "config files"))
        except BoundedReadError as exc:
            raise ConfigError(f"{path}: config file not found" if exc.reason == "missing file" else str(exc)) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise ConfigError(f"{path}: invalid JSON (nested too deeply)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a JSON object")
    return config_from_dict(data, overrides, None if path is None else str(path))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_json(cfg: Config) -> str:
    """The resolved config as the JSON text of a run's ``config.json``."""
    return json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n"


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the resolved config as JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(config_json(cfg))
    tmp.replace(path)
