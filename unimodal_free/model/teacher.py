"""EMA teacher (dinov2 style): a no-grad fp32 copy updated with foreach ops.

The decay schedule is an array indexed by step: linear from ``ema_start`` to
``ema_end`` over ``ema_anneal_steps`` updates, then constant (data2vec).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, ContextManager, Optional

import numpy as np
import torch
import torch.nn as nn


def ema_schedule(objective_cfg) -> np.ndarray:
    """decay[step] for step in [0, ema_anneal_steps]; later steps use the last value."""
    steps = max(int(objective_cfg.ema_anneal_steps), 0)
    return np.linspace(objective_cfg.ema_start, objective_cfg.ema_end, steps + 1, dtype=np.float64)


class EMATeacher:
    """Holds ``.module``: a deepcopy of the student, fp32, ``requires_grad=False``, eval mode.

    ``update(student, step)`` is called by the trainer only after an applied
    optimizer step. Under ZeRO-3 the student's parameters are partitioned: the
    trainer passes ``gather`` (a context manager over a list of parameters), and
    the update walks the parameters in chunks of at most ``chunk_numel``
    elements, so only one chunk is ever gathered at a time, not the whole
    model. ``objective_cfg``: the ``objective`` config section (its ``ema_*``).
    """

    def __init__(self, student: nn.Module, objective_cfg):
        self.module = copy.deepcopy(student).float().eval().requires_grad_(False)
        self.schedule = ema_schedule(objective_cfg)
        self._params = list(self.module.parameters())
        self._numels = [p.numel() for p in self._params]

    def decay(self, step: int) -> float:
        return float(self.schedule[min(max(int(step), 0), len(self.schedule) - 1)])

    @torch.no_grad()
    def update(
        self,
        student: nn.Module,
        step: int,
        gather: Optional[Callable[[list[nn.Parameter]], ContextManager]] = None,
        chunk_numel: Optional[int] = None,
    ) -> float:
        """teacher <- d * teacher + (1 - d) * student, with d = decay(step); returns d.

        ``chunk_numel`` None: one pass over all parameters.
        """
        d = self.decay(step)
        student_params = list(student.parameters())
        if len(student_params) != len(self._params):
            raise ValueError(
                f"EMATeacher.update: student has {len(student_params)} parameters, teacher {len(self._params)}"
            )
        budget = sum(self._numels) if chunk_numel is None else chunk_numel
        for lo, hi in _chunks(self._numels, budget):
            with gather(student_params[lo:hi]) if gather else contextlib.nullcontext():
                torch._foreach_mul_(self._params[lo:hi], d)
                torch._foreach_add_(self._params[lo:hi], [p.detach().float() for p in student_params[lo:hi]],
                                    alpha=1.0 - d)
        for tb, sb in zip(self.module.buffers(), student.buffers()):
            tb.copy_(sb)
        return d

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


def _chunks(sizes: list[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) index ranges whose sizes sum to at most ``budget`` (a larger item alone)."""
    out, lo, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > lo and total + n > budget:
            out.append((lo, i))
            lo, total = i, 0
        total += n
    if lo < len(sizes):
        out.append((lo, len(sizes)))
    return out
