"""Test callbacks for real launches: stop a rank at an exact point, poison a loss.

The crash and failure tests launch ``tests/launch_with_callbacks.py`` (the
trainer's own entry point with these callbacks installed) instead of
``launch/train.py``; :func:`with_callbacks` turns a ``launch/train.py``
command into that one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from unimodal_free.train.callbacks import TrainerCallback

LAUNCHER = "tests/launch_with_callbacks.py"


def with_callbacks(cmd: list[str], *flags: str) -> list[str]:
    """``cmd`` (a ``launch/train.py`` command) with the test launcher and its ``flags`` in its place."""
    i = cmd.index("launch/train.py")
    return cmd[:i] + [LAUNCHER, *flags] + cmd[i + 1:]


class PauseAt(TrainerCallback):
    """When rank 0 reaches ``point`` at optimizer step ``step`` it writes ``<run_dir>/HOOK_<point>_<step>``
    and sleeps until the test's SIGKILL.

    Points: ``after_step`` (step over: logged, evaluated and checkpointed as scheduled) and ``in_save``
    (a checkpoint's files are written, its COMPLETE marker and ``latest`` are not).
    """

    POINTS = ("after_step", "in_save")

    def __init__(self, spec: str):
        self.point, _, step = spec.partition(":")
        if self.point not in self.POINTS or not step.isdigit():
            raise ValueError(f"--pause-at {spec!r}: want POINT:STEP with POINT one of {self.POINTS}")
        self.step = int(step)

    def on_step_end(self, trainer, step: int) -> None:
        if self.point == "after_step" and step == self.step and trainer.rank == 0:
            self._pause(trainer.run_dir)

    def on_checkpoint_files_written(self, tag_dir: Path, step: int, rank: int) -> None:
        if self.point == "in_save" and step == self.step and rank == 0:
            self._pause(tag_dir.parent.parent)  # <run_dir>/checkpoints/<tag>

    def _pause(self, run_dir: Path) -> None:
        (Path(run_dir) / f"HOOK_{self.point}_{self.step}").write_text(str(os.getpid()))
        while True:  # wait for the test's SIGKILL
            time.sleep(1)


class NanLoss(TrainerCallback):
    """``RANK:STEP,STEP...``: that rank's loss becomes NaN at those optimizer steps (1-based)."""

    def __init__(self, spec: str):
        rank, _, steps = spec.partition(":")
        self.rank = int(rank)
        self.steps = {int(s) for s in steps.split(",")}

    def on_loss(self, loss: torch.Tensor, step: int, rank: int) -> torch.Tensor:
        return loss * float("nan") if rank == self.rank and step in self.steps else loss


class DumpAtSetup(TrainerCallback):
    """``DIR``: once the run is set up (a resume: loaded), rank 0 writes the step and the EMA teacher to DIR."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_setup_end(self, trainer) -> None:
        if trainer.rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            teacher = {k: v.detach().cpu().clone() for k, v in trainer.teacher.module.state_dict().items()}
            torch.save({"step": trainer.state.step, "teacher": teacher}, self.folder / "setup.pt")
