"""Consolidated weights: write one safetensors file, read weights from any run artefact.

``model.safetensors`` holds ``student.<name>`` and ``teacher.<name>`` fp32
tensors plus metadata ``{"config": json, "tokenizer": json, "step": int}``
(a model folder's holds the teacher only, and its tokenizer path is relative
to the file: ``tokenizer.model`` beside it);
reading it needs no pickle. The trainer writes one at the end of a run and
one inside every checkpoint, so :func:`load_weights` reads a run directory or
a checkpoint (any ZeRO stage, a run still training or stopped mid-run) from
safetensors alone: it never opens DeepSpeed's pickle files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from unimodal_free.config import Config, config_from_dict

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


def _plain(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
) -> Path:
    """Write the consolidated file atomically and durably (tmp + fsync + rename).

    ``config``: the run's whole config as a dict (``config_to_dict``), stored as the file's metadata.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"student.{k}": v for k, v in _plain(student).items()}
    tensors.update({f"teacher.{k}": v for k, v in _plain(teacher).items()})
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config, sort_keys=True),
        "tokenizer": json.dumps(tokenizer_ref, sort_keys=True),
        "step": str(step),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.chmod(tmp, file_mode())  # safetensors creates it 600, as a temp file
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def file_mode() -> int:
    """0o666 less the process umask: what ``open()`` gives any other file of the run (644 under umask 022)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """Read from /proc (Linux): setting it to read it back would let another thread (TensorBoard's writer)
    create a file under the wrong umask in between."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)  # elsewhere: briefly the strictest value, never a looser one
    os.umask(umask)
    return umask


def _split(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    student = {k[len("student.") :]: v for k, v in tensors.items() if k.startswith("student.")}
    teacher = {k[len("teacher.") :]: v for k, v in tensors.items() if k.startswith("teacher.")}
    return student, teacher


def read_export(path: Path) -> LoadedWeights:
    """Weights, config and tokenizer reference of one safetensors file (no pickle anywhere)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"{path}: not a unimodal_free export (metadata format={meta.get('format')!r})")
    student, teacher = _split(tensors)
    cfg = config_from_dict(json.loads(meta["config"]))
    step = int(meta["step"]) if "step" in meta else None
    tokenizer_ref = json.loads(meta.get("tokenizer", "{}"))
    if tokenizer_ref.get("path") and not os.path.isabs(tokenizer_ref["path"]):
        tokenizer_ref["path"] = str(path.parent / tokenizer_ref["path"])  # a model folder's: beside the weights
    return LoadedWeights(cfg, tokenizer_ref, student, teacher, step, str(path))


def _read_checkpoint(tag_dir: Path) -> LoadedWeights:
    """The consolidation inside a checkpoint, after checking its sha256 against COMPLETE."""
    from unimodal_free.train.checkpoint import CONSOLIDATED, verify

    if not (tag_dir / CONSOLIDATED).is_file():
        raise FileNotFoundError(
            f"{tag_dir}: holds no {CONSOLIDATED} (written by an older unimodal_free); eval and query read "
            f"safetensors only, never DeepSpeed's pickle files"
        )
    verify(tag_dir, only=[CONSOLIDATED])
    weights = read_export(tag_dir / CONSOLIDATED)
    weights.source = str(tag_dir)  # eval reports the checkpoint it evaluated
    return weights


def load_weights(path: str | Path) -> LoadedWeights:
    """Weights + config + tokenizer reference from an export file, a model folder, a run dir or a checkpoint dir.

    A run dir: its latest complete checkpoint's consolidation, else its final export.
    Reads safetensors only.
    """
    from unimodal_free.train.checkpoint import CheckpointManager, is_complete, step_of

    path = Path(path).expanduser()
    if path.is_file():
        return read_export(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such export file or run directory")
    from unimodal_free.train.model_folder import is_model_folder, read_model_folder

    if is_model_folder(path):
        return read_model_folder(path)
    if step_of(path.name) is not None:
        if not is_complete(path):
            raise ValueError(f"{path}: checkpoint is incomplete (no valid COMPLETE marker)")
        return _read_checkpoint(path)
    run_dir = path.parent if path.name == "checkpoints" else path
    tag = CheckpointManager(run_dir).latest_tag()
    if tag is not None:
        return _read_checkpoint(run_dir / "checkpoints" / tag)
    if (run_dir / EXPORT_NAME).is_file():
        return read_export(run_dir / EXPORT_NAME)
    raise FileNotFoundError(f"{path}: holds neither a complete checkpoint nor {EXPORT_NAME}")


def gathered_state_dict(module: torch.nn.Module, zero3: bool, rank: int) -> dict[str, Any]:
    """Full state_dict of a (possibly ZeRO-3 partitioned) module on rank 0; collective under ZeRO-3.

    Parameters are gathered one top-level child at a time so peak memory is
    one child, not the whole model.
    """
    if not zero3:
        return _plain(module.state_dict()) if rank == 0 else {}
    import deepspeed

    out: dict[str, Any] = {}
    groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):  # tied weights keep every name
        groups.setdefault(name.split(".", 1)[0], []).append((name, p))
    for items in groups.values():
        unique = list({id(p): p for _, p in items}.values())
        with deepspeed.zero.GatheredParameters(unique, modifier_rank=None):
            if rank == 0:
                out.update({n: p.detach().float().cpu().clone() for n, p in items})
    if rank == 0:
        params = {n for n, _ in module.named_parameters(remove_duplicate=False)}
        for name, t in module.state_dict().items():
            if name not in params:  # buffers are never partitioned
                out[name] = t.detach().cpu().clone()
        # keep state_dict order
        out = {k: out[k] for k in module.state_dict().keys() if k in out}
    return out
