"""The run's counters that a checkpoint carries (``trainer_state.json``) so a resumed run continues exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainerState:
    """What the trainer needs besides the engine to continue exactly."""

    step: int = 0  # optimizer steps taken (applied or skipped)
    micro_batches: int = 0  # micro-batches consumed per rank (data position)
    samples_seen: int = 0  # rows over all ranks
    rows_seen: dict[str, int] = field(default_factory=dict)  # the same rows per modality (the model card's)
    skipped_steps: int = 0
    skipped_samples: int = 0
    nonfinite_in_row: int = 0
    train_time_s: float = 0.0  # wall time in training steps (eval budget)
    eval_time_s: float = 0.0
    world_size: int = 1
    tokenizer: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainerState":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
