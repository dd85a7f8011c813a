"""Named points of a run where a caller can observe or intervene; production installs none.

The crash and failure tests install callbacks through their own launcher
(``tests/launch_with_callbacks.py``) to stop a rank at an exact point or to
poison a loss; nothing here reads the environment or knows about tests.
A callback overrides the points it needs; the defaults do nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

# ``trainer`` below is the running unimodal_free.train.trainer.Trainer (typed Any: that module imports this one).
RunningTrainer = Any


class TrainerCallback:
    def on_setup_end(self, trainer: RunningTrainer) -> None:
        """Engine, teacher, data and logger are built (and a resume restored); no step has run."""

    def on_loss(self, loss: torch.Tensor, step: int, rank: int) -> torch.Tensor:
        """A micro-batch loss of optimizer step ``step`` (1-based), before the non-finite check; returns the loss."""
        return loss

    def on_checkpoint_files_written(self, tag_dir: Path, step: int, rank: int) -> None:
        """This rank wrote its files of checkpoint ``tag_dir``; COMPLETE and ``latest`` are not written yet."""

    def on_step_end(self, trainer: RunningTrainer, step: int) -> None:
        """Step ``step`` is over: logged, evaluated and checkpointed as scheduled; the loop goes on or stops."""


class Callbacks(TrainerCallback):
    """Several callbacks called in order at each point."""

    def __init__(self, callbacks: Sequence[TrainerCallback] = ()):
        self.callbacks = list(callbacks)

    def on_setup_end(self, trainer: RunningTrainer) -> None:
        for c in self.callbacks:
            c.on_setup_end(trainer)

    def on_loss(self, loss: torch.Tensor, step: int, rank: int) -> torch.Tensor:
        for c in self.callbacks:
            loss = c.on_loss(loss, step, rank)
        return loss

    def on_checkpoint_files_written(self, tag_dir: Path, step: int, rank: int) -> None:
        for c in self.callbacks:
            c.on_checkpoint_files_written(tag_dir, step, rank)

    def on_step_end(self, trainer: RunningTrainer, step: int) -> None:
        for c in self.callbacks:
            c.on_step_end(trainer, step)
