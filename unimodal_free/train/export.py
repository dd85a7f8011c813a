"""Consolidated weights: write one safetensors file (the format and its reader: ``unimodal_free/store/export.py``).

The trainer writes one at the end of a run and one inside every checkpoint,
so :func:`unimodal_free.store.weights.load_weights` reads a run directory or a
checkpoint (any ZeRO stage, a run still training or stopped mid-run) from
safetensors alone: it never opens DeepSpeed's pickle files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from unimodal_free.run_dir import RunDir
from unimodal_free.store.export import FORMAT


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
    tensors = {f"student.{k}": v for k, v in _plain(student).items()}
    tensors.update({f"teacher.{k}": v for k, v in _plain(teacher).items()})
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config, sort_keys=True),
        "tokenizer": json.dumps(tokenizer_ref, sort_keys=True),
        "step": str(step),
    }
    files = RunDir(path.parent if root is None else root)
    return files.save_atomic_by_name(path, lambda name: save_file(tensors, name, metadata=metadata))


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
