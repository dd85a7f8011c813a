"""The DeepSpeed config dict, built from the typed config (never hand-written JSON).

Batch arithmetic lives here so it is stated once:
``train_batch_size = micro_batch_size * grad_accum * world_size``.
"""

from __future__ import annotations

import copy
from typing import Any

from unimodal_free.config import ConfigError, DeepSpeedConfig, OptimConfig, TrainConfig

# Keys the typed config owns; setting them through deepspeed.extra would fork the truth.
_OWNED = {
    "train_batch_size": "train.micro_batch_size/train.grad_accum",
    "train_micro_batch_size_per_gpu": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "gradient_clipping": "optim.grad_clip",
    "optimizer": "optim.* (the trainer builds torch AdamW)",
    "scheduler": "optim.* (the trainer builds the warmup+cosine schedule)",
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``extra`` into ``base`` (extra wins)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_extra(extra: dict[str, Any]) -> None:
    """Refuse extras that contradict typed fields (one-line ConfigError)."""
    for key, owner in _OWNED.items():
        if key in extra:
            raise ConfigError(f"deepspeed.extra.{key}: set {owner} instead")
    if "stage" in (extra.get("zero_optimization") or {}):
        raise ConfigError("deepspeed.extra.zero_optimization.stage: set deepspeed.zero_stage instead")
    for key in ("bf16", "fp16"):
        if "enabled" in (extra.get(key) or {}):
            raise ConfigError(f"deepspeed.extra.{key}.enabled: set train.precision instead")


def build_ds_config(t: TrainConfig, optim: OptimConfig, deepspeed: DeepSpeedConfig, world_size: int,
                    load_universal: bool = False) -> dict[str, Any]:
    """DeepSpeed's dict for these config sections on ``world_size`` data-parallel ranks.

    ``load_universal``: the engine will load a universal checkpoint (a resume on another number of ranks, reshard.py)."""
    check_extra(deepspeed.extra)
    ds = {
        "train_batch_size": t.micro_batch_size * t.grad_accum * world_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": {"stage": deepspeed.zero_stage},
        # Torch AdamW is built by the trainer (DeepSpeed's fused CPU Adam would need compiling).
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": t.precision == "bf16"},
        "fp16": {"enabled": False},
        # Logging is ours (TensorBoard + progress bar); keep DeepSpeed's step prints off.
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if load_universal:
        ds["checkpoint"] = {"load_universal": True}
    return _merge(ds, deepspeed.extra)
