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
    def from_dict(cls, data: Any) -> "TrainerState":
        """The state a checkpoint stored; ValueError naming the first field that is not what the trainer writes
        (a handed-over checkpoint's file is data: it must not end in a traceback deep in the resume)."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        default = cls()
        values = {}
        for name in cls.__dataclass_fields__:
            if name not in data:
                continue
            value, want = data[name], type(getattr(default, name))
            ok = isinstance(value, want) and not isinstance(value, bool)
            if want is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise ValueError(f"{name}: expected {want.__name__}, got {type(value).__name__}")
            if name == "config" and not all(isinstance(s, dict) for s in value.values()):
                raise ValueError("config: every section must be a JSON object")
            if want is int and value < 0:
                raise ValueError(f"{name}: must be >= 0, got {value}")
            values[name] = value
        return cls(**values)
