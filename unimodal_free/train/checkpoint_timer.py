"""``train.checkpoint_every_minutes``: checkpoints on a wall-clock cadence, for jobs with a time limit.

Each rank reads its own clock; the ranks agree at the next ``train.log_every``
step through the all-reduce that step already makes for the collapse guard
(:func:`unimodal_free.train.trainer.agreed_checks`), so the decision costs no
extra host synchronisation and every rank saves at the same step. The cadence
is therefore at most one log interval late.
"""

from __future__ import annotations

import time
from typing import Callable


class CheckpointTimer:
    """Due once ``minutes`` have passed since the run (session) started or last saved; 0: never due."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = minutes * 60.0
        self.clock = clock
        self.since = clock()

    def due(self) -> bool:
        return self.seconds > 0 and self.clock() - self.since >= self.seconds

    def restart(self) -> None:
        """After any checkpoint (step-based, timed, or the last): the next one is a full period away."""
        self.since = self.clock()
