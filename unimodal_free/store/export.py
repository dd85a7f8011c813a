"""The export file: one ``model.safetensors`` with a run's weights, config and tokenizer reference.

It holds ``student.<name>`` and ``teacher.<name>`` fp32 tensors plus metadata
``{"format": FORMAT, "config": json, "tokenizer": json, "step": int}`` (a model
folder's holds the teacher only, and its tokenizer path is relative to the
file: ``tokenizer.model`` beside it). Reading it needs no pickle. Its writer
(:func:`save_export`) and reader (:func:`read_export`) are both here; gathering a ZeRO-3 partitioned
model's weights for it needs the engine (``train/zero_gather.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from unimodal_free.bounded_read import open_bounded
from unimodal_free.config import Config, ConfigError, config_from_dict
from unimodal_free.run_dir import RunDir

EXPORT_NAME = "model.safetensors"
FORMAT = "unimodal_free/1"


@dataclass
class LoadedWeights:
    cfg: Config
    tokenizer_ref: dict
    student: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor]
    step: Optional[int] = None
    source: str = ""  # the file or checkpoint dir the weights came from



def _split(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    student = {k[len("student.") :]: v for k, v in tensors.items() if k.startswith("student.")}
    teacher = {k[len("teacher.") :]: v for k, v in tensors.items() if k.startswith("teacher.")}
    return student, teacher


def read_export(path: Path) -> LoadedWeights:
    """Weights, config and tokenizer reference of one safetensors file (no pickle anywhere)."""
    path = Path(path)
    open_bounded(path, None, "weights").close()  # a FIFO would block safetensors' own open forever
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"{path}: not a unimodal_free export (metadata format={meta.get('format')!r})")
    try:  # the stored config first: its bounds and budgets refuse a hostile one before a tensor is read
        cfg = config_from_dict(json.loads(meta["config"]))
    except (ConfigError, ValueError) as exc:
        raise ValueError(f"{path}: stored config: {exc}") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())})") from None
    student, teacher = _split(tensors)
    step = int(meta["step"]) if "step" in meta else None
    tokenizer_ref = json.loads(meta.get("tokenizer", "{}"))
    if tokenizer_ref.get("path") and not os.path.isabs(tokenizer_ref["path"]):
        tokenizer_ref["path"] = str(path.parent / tokenizer_ref["path"])  # a model folder's: beside the weights
    return LoadedWeights(cfg, tokenizer_ref, student, teacher, step, str(path))


def plain_tensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 (floats), CPU, contiguous, unshared copies: what safetensors requires."""
    out = {}
    for k, v in sd.items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.float()
        out[k] = v.contiguous().clone()
    return out


def save_export(
    path: str | Path,
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor],
    config: dict[str, Any],
    tokenizer_ref: dict,
    step: int,
    root: Optional[str | Path] = None,
) -> Path:
    """Write the consolidated file atomically and durably, never through a link (``RunDir``).

    ``config``: the run's whole config as a dict (``config_to_dict``), stored as the file's metadata.
    ``root``: the run directory ``path`` lies in (its folders are checked too); default ``path``'s folder.
    The file is created by this process (mode 0o666 less the umask, as every other file of the run)
    and safetensors fills it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"student.{k}": v for k, v in plain_tensors(student).items()}
    tensors.update({f"teacher.{k}": v for k, v in plain_tensors(teacher).items()})
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config, sort_keys=True),
        "tokenizer": json.dumps(tokenizer_ref, sort_keys=True),
        "step": str(step),
    }
    files = RunDir(path.parent if root is None else root)
    return files.save_atomic_by_name(path, lambda name: save_file(tensors, name, metadata=metadata))
