"""Schedules as arrays indexed by optimizer step (dinov2 style).

``lr_schedule[s]`` is the learning rate used by optimizer step ``s``
(0-based): linear warmup from ~0 to ``lr`` over ``warmup_steps``, then a
cosine from ``lr`` down to ``min_lr`` at the last step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unimodal_free.config import OptimConfig


def lr_schedule(optim: OptimConfig, max_steps: int) -> np.ndarray:
    """Learning rate of every optimizer step, shape (max_steps,)."""
    steps = np.arange(max_steps, dtype=np.float64)
    warmup = max(0, min(optim.warmup_steps, max_steps))
    lr = np.empty(max_steps, dtype=np.float64)
    # Warmup: step 0 already gets lr/warmup so the first update is not wasted.
    lr[:warmup] = optim.lr * (steps[:warmup] + 1) / max(1, warmup)
    decay = max(1, max_steps - 1 - warmup)
    progress = (steps[warmup:] - warmup) / decay  # in [0, 1]: the last step uses min_lr
    lr[warmup:] = optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + np.cos(math.pi * progress))
    return lr


def lambda_lr(optimizer: torch.optim.Optimizer, schedule: np.ndarray) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR that replays ``schedule`` (its state_dict is just the step count)."""
    base = float(optimizer.param_groups[0]["lr"])
    last = len(schedule) - 1

    def factor(step: int) -> float:
        return float(schedule[min(step, last)]) / base

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
