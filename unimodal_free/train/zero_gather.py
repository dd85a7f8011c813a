"""A module's full weights on rank 0, gathered from ZeRO-3 partitions when needed: what an export holds.

The export file itself (its writer and reader) is ``unimodal_free/store/export.py``. The trainer
writes one at the end of a run and one inside every checkpoint, so
:func:`unimodal_free.store.weights.load_weights` reads a run directory or a checkpoint (any ZeRO
stage, a run still training or stopped mid-run) from safetensors alone: it never opens DeepSpeed's
pickle files.
"""

from __future__ import annotations

from typing import Any

import torch

from unimodal_free.store.export import plain_tensors


def gathered_state_dict(module: torch.nn.Module, zero3: bool, rank: int) -> dict[str, Any]:
    """Full state_dict of a (possibly ZeRO-3 partitioned) module on rank 0; collective under ZeRO-3.

    Parameters are gathered one top-level child at a time so peak memory is
    one child, not the whole model.
    """
    if not zero3:
        return plain_tensors(module.state_dict()) if rank == 0 else {}
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
