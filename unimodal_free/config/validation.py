"""Checking a built config: every field's rule, the rules between fields, and what may change on resume."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator

from unimodal_free.config.budget import over_budget
from unimodal_free.config.rules import ConfigError, anything
from unimodal_free.config.sections import Config
from unimodal_free.modalities import HOP_SECONDS, N_FFT_SECONDS


def relations(cfg: Config) -> Iterator[tuple[str, bool, str]]:
    """Rules between fields: (dotted path, holds, what is wrong). Run after every field passed its own rule.

    Most relate keys of one section; ``objective.top_k`` against ``model.num_blocks`` is the one
    rule across sections (the sections themselves never refer to each other).
    """
    m, d, o = cfg.model, cfg.data, cfg.objective
    yield "model.num_heads", m.d_model % m.num_heads == 0, f"{m.num_heads} does not divide model.d_model={m.d_model}"
    yield ("model.cross_heads", m.d_model % m.cross_heads == 0,
           f"{m.cross_heads} does not divide model.d_model={m.d_model}")
    yield ("model.mlp_ratio", int(m.d_model * m.mlp_ratio) >= 1,
           f"{m.mlp_ratio} x model.d_model={m.d_model} leaves an MLP without hidden units")
    yield ("data.patch_size", d.patch_stride or d.image_size % d.patch_size == 0,
           f"{d.patch_size} does not divide data.image_size={d.image_size}")
    yield ("data.patch_stride", d.image_size % d.image_stride == 0,
           f"{d.patch_stride} does not divide data.image_size={d.image_size}")
    yield ("data.patch_stride", d.image_stride <= d.patch_size and (d.patch_size - d.image_stride) % 2 == 0,
           f"{d.patch_stride}: needs at most data.patch_size={d.patch_size} and an even difference (the window is "
           f"centred on its cell)")
    fft_bins = round(N_FFT_SECONDS * d.sample_rate) // 2 + 1
    yield ("data.n_mels", d.n_mels <= fft_bins,
           f"{d.n_mels} mel bands exceed the {fft_bins} FFT bins at data.sample_rate={d.sample_rate}")
    shortest = N_FFT_SECONDS + (d.frames_per_element - 1) * HOP_SECONDS
    yield ("data.max_speech_seconds", d.max_speech_seconds >= shortest,
           f"{d.max_speech_seconds} s holds no speech element of data.frames_per_element={d.frames_per_element} "
           f"frames (needs >= {shortest:.3f} s)")
    yield "objective.top_k", o.top_k <= m.num_blocks, f"{o.top_k} exceeds model.num_blocks={m.num_blocks}"
    yield "objective.ema_end", o.ema_start <= o.ema_end, f"{o.ema_end} is below objective.ema_start={o.ema_start}"
    yield "optim.min_lr", cfg.optim.min_lr <= cfg.optim.lr, f"{cfg.optim.min_lr} exceeds optim.lr={cfg.optim.lr}"


def iter_options(obj: Any, path: str) -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """(dotted path, value, field) of every option in ``obj``, nested sections and sources included."""
    for f in dataclasses.fields(obj):
        where = f"{path}.{f.name}" if path else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_options(value, where)
            continue
        yield where, value, f
        if isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    yield from iter_options(item, f"{where}[{i}]")


def validate(cfg: Config) -> None:
    """Every field's rule, the rules between fields, then the parameter and activation budgets (config/budget.py,
    vocabulary unknown); the first failure raises, naming its path."""
    for where, value, f in iter_options(cfg, ""):
        if (err := f.metadata.get("rule", anything)(value)) is not None:
            raise ConfigError(f"{where}: {err}", key=where)
    for where, holds, err in relations(cfg):
        if not holds:
            raise ConfigError(f"{where}: {err}", key=where)
    check_budget(cfg)


def check_budget(cfg: Config, vocab_size: int = 0) -> None:
    """ConfigError naming the section when ``cfg`` builds too many parameters or activations (``vocab_size``:
    the tokenizer's, once known)."""
    for where, err in over_budget(cfg, vocab_size):
        raise ConfigError(f"{where}: {err}")


SHOWN_CHARS = 200  # a stored value longer than this as JSON is cut in messages


def as_data(value: Any) -> str:
    """A value for a message or log line as JSON: quoted, every control and non-ASCII character escaped, cut
    at SHOWN_CHARS (a checkpoint's stored config may be anyone's; it must read as data, one line)."""
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def fixed_on_resume(before: dict[str, Any], cfg: Config) -> list[str]:
    """``path: old -> new`` for every option marked ``fixed`` that differs from ``before``
    (a checkpoint's stored config, as ``config_to_dict`` wrote it)."""
    out = []
    for where, value, f in iter_options(cfg, ""):
        fixed = f.metadata.get("fixed", False)
        if not fixed:
            continue
        node: Any = before
        for key in where.split("."):
            node = node.get(key, dataclasses.MISSING) if isinstance(node, dict) else dataclasses.MISSING
        if node is dataclasses.MISSING:
            continue  # a key newer than the checkpoint: nothing to compare with
        same = node == value if fixed is True else fixed(node) == fixed(value)
        if not same:
            out.append(f"{where}: {as_data(node)} -> {as_data(value)}")
    return out

